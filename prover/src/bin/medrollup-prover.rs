//! `medrollup-prover worker`: a hospital's prover in the farm.

use clap::{Parser, Subcommand};
use medrollup_prover::gpu::{GpuBackend, GpuConfig, Runtimes, parse_device_memory};
use medrollup_prover::worker::{self, WorkerConfig};
use std::net::SocketAddr;
use std::path::PathBuf;

/// The medrollup prover.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

// Parsed once, at start: its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// List the devices a worker would prove on, and why others are not used.
    Devices {
        /// Which devices: auto, cuda, opencl or none.
        #[arg(long, default_value = "auto", env = "MEDROLLUP_DEVICES")]
        devices: Runtimes,
        /// Also OpenCL CPU devices (POCL).
        #[arg(long)]
        opencl_cpu: bool,
        /// Memory each device may use (as for `worker`).
        #[arg(long, env = "MEDROLLUP_DEVICE_MEMORY", value_parser = parse_device_memory)]
        device_memory: Option<u64>,
    },
    /// Take proving jobs from the farm until Ctrl-C or SIGTERM.
    Worker {
        /// NATS server.
        #[arg(long, default_value = "nats://127.0.0.1:4222", env = "MEDROLLUP_NATS_URL")]
        nats_url: String,
        /// NATS user (the worker credential); its password comes from
        /// MEDROLLUP_NATS_PASSWORD only, so it stays out of process lists.
        #[arg(long, env = "MEDROLLUP_NATS_USER")]
        nats_user: Option<String>,
        /// This worker's name in the farm (letters, digits, '-' and '_';
        /// at most 128 bytes: it names its NATS subjects).
        #[arg(long, value_parser = medrollup_prover::worker::parse_name)]
        name: String,
        /// Cache for proving keys.
        #[arg(long, default_value = "worker-cache")]
        cache_dir: PathBuf,
        /// Prometheus /metrics address.
        #[arg(long)]
        metrics: Option<SocketAddr>,
        /// Heartbeat period, milliseconds.
        #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
        heartbeat_ms: u64,
        /// Progress-ack period while proving, milliseconds (keep it well under
        /// the coordinator's job ack wait).
        #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
        progress_ms: u64,
        /// Devices to prove on: auto (CUDA GPUs, else OpenCL GPUs), cuda,
        /// opencl or none; the CPU proves when no device is usable.
        #[arg(long, default_value = "auto", env = "MEDROLLUP_DEVICES")]
        devices: Runtimes,
        /// Also use OpenCL CPU devices (POCL): slower than the CPU backend,
        /// for checking the kernels without a GPU.
        #[arg(long)]
        opencl_cpu: bool,
        /// Bases sets at least this long are kept on the devices with their
        /// multiples for every MSM window (faster MSMs; about 16 times the
        /// memory of the proving key's points).
        #[arg(long, default_value_t = 1 << 16)]
        precompute_min: usize,
        /// Memory each device may use, such as 8GiB (default: its memory
        /// less a tenth, and at least 512 MiB less). Bases that would leave
        /// too little for the MSMs over them stay on the host, and those MSMs
        /// run on the CPU.
        #[arg(long, env = "MEDROLLUP_DEVICE_MEMORY", value_parser = parse_device_memory)]
        device_memory: Option<u64>,
        /// Proving keys kept loaded at once (each holds its bases on every
        /// device); the least recently used is unloaded for a new one.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
        max_keys: u64,
        /// Seconds a proof (or a proving key's loading) may take before the
        /// prover is taken for stuck: the job is failed back to the farm and
        /// the worker exits (status 3) for its supervisor to start it again.
        /// Keep it well above the machine's slowest proof.
        #[arg(long, default_value = "1800", value_parser = worker::parse_timeout)]
        prove_timeout_s: std::time::Duration,
        /// Seconds devices out of service (after a fault) wait before they
        /// are opened afresh and tested again; doubled each time one comes
        /// back, up to six hours.
        #[arg(long, default_value = "600", value_parser = worker::parse_timeout)]
        readmit_after_s: std::time::Duration,
        /// Exit (status 4) when a device (of any runtime) is still out of
        /// service once opened afresh, for the supervisor to start the worker
        /// again: CUDA documents a relaunch as the only sure way back from a
        /// crashed kernel's lost context. The wait before the test doubles at
        /// each such relaunch (kept in the cache directory for a day), up to
        /// six hours. Without it, the worker goes on with its other devices,
        /// or the CPU.
        #[arg(long)]
        relaunch_when_device_lost: bool,
        /// Drill: the first device fails for good after this many kernel
        /// launches (does the supervisor start the worker again?), at every
        /// start: take it off after the drill. Never in production.
        #[arg(long, hide = true)]
        fault_drill: Option<usize>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    medrollup_wire::service::init_logging();
    match Args::parse().command {
        Command::Devices { devices, opencl_cpu, device_memory } => {
            let config = GpuConfig {
                runtimes: devices,
                opencl_cpu,
                memory_limit: device_memory,
                ..GpuConfig::default()
            };
            let report = tokio::task::spawn_blocking(move || GpuBackend::new(&config).report()).await?;
            for d in &report.devices {
                let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
                println!(
                    "device {} ({}, {:.1} GiB, {:.1} GiB of it for the prover, {} compute units): admitted",
                    d.label,
                    d.runtime,
                    gib(d.memory),
                    gib(d.memory_budget),
                    d.compute_units
                );
            }
            for r in &report.refused {
                println!("not used: {r}");
            }
            if report.devices.is_empty() {
                println!("no device: the worker proves on the CPU");
            }
        }
        Command::Worker {
            nats_url,
            nats_user,
            name,
            cache_dir,
            metrics,
            heartbeat_ms,
            progress_ms,
            devices,
            opencl_cpu,
            precompute_min,
            device_memory,
            max_keys,
            prove_timeout_s,
            readmit_after_s,
            relaunch_when_device_lost,
            fault_drill,
        } => {
            let mut config = WorkerConfig::local(&name);
            config.nats_url = nats_url;
            config.credentials = match (nats_user, std::env::var("MEDROLLUP_NATS_PASSWORD").ok()) {
                (Some(u), Some(p)) => Some((u, p)),
                (None, None) => None,
                _ => anyhow::bail!("give both --nats-user and MEDROLLUP_NATS_PASSWORD, or neither"),
            };
            config.cache_dir = cache_dir;
            config.metrics_addr = metrics;
            config.heartbeat = std::time::Duration::from_millis(heartbeat_ms);
            config.progress = std::time::Duration::from_millis(progress_ms);
            config.gpu.runtimes = devices;
            config.gpu.opencl_cpu = opencl_cpu;
            config.gpu.precompute_min = precompute_min;
            config.gpu.memory_limit = device_memory;
            config.max_keys = max_keys as usize;
            config.prove_timeout = prove_timeout_s;
            config.readmit_after = readmit_after_s;
            config.relaunch_when_device_lost = relaunch_when_device_lost;
            config.fault_drill = fault_drill;
            match worker::run(config, medrollup_wire::service::shutdown_signal()).await {
                Ok(()) => {}
                // Not a return from main: the runtime would wait for the
                // stuck prover thread for ever.
                Err(e @ worker::WorkerError::Stuck(_)) => {
                    eprintln!("Error: {e}");
                    std::process::exit(3);
                }
                Err(e @ worker::WorkerError::Relaunch(_)) => {
                    eprintln!("Error: {e}");
                    std::process::exit(4);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}
