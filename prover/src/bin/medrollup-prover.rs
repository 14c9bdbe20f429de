//! `medrollup-prover worker`: a hospital's prover in the farm.

use clap::{Parser, Subcommand};
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

#[derive(Debug, Subcommand)]
enum Command {
    /// Take proving jobs from the farm until Ctrl-C or SIGTERM.
    Worker {
        /// NATS server.
        #[arg(long, default_value = "nats://127.0.0.1:4222", env = "MEDROLLUP_NATS_URL")]
        nats_url: String,
        /// NATS user (the worker credential).
        #[arg(long, env = "MEDROLLUP_NATS_USER")]
        nats_user: Option<String>,
        /// NATS password.
        #[arg(long, env = "MEDROLLUP_NATS_PASSWORD", hide_env_values = true)]
        nats_password: Option<String>,
        /// This worker's name in the farm.
        #[arg(long)]
        name: String,
        /// Cache for proving keys.
        #[arg(long, default_value = "worker-cache")]
        cache_dir: PathBuf,
        /// Prometheus /metrics address.
        #[arg(long)]
        metrics: Option<SocketAddr>,
        /// Heartbeat period, milliseconds.
        #[arg(long, default_value_t = 2000)]
        heartbeat_ms: u64,
        /// Progress-ack period while proving, milliseconds (keep it well under
        /// the coordinator's job ack wait).
        #[arg(long, default_value_t = 5000)]
        progress_ms: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    medrollup_wire::service::init_logging();
    match Args::parse().command {
        Command::Worker {
            nats_url,
            nats_user,
            nats_password,
            name,
            cache_dir,
            metrics,
            heartbeat_ms,
            progress_ms,
        } => {
            let mut config = WorkerConfig::local(&name);
            config.nats_url = nats_url;
            config.credentials = match (nats_user, nats_password) {
                (Some(u), Some(p)) => Some((u, p)),
                (None, None) => None,
                _ => anyhow::bail!("give both --nats-user and MEDROLLUP_NATS_PASSWORD, or neither"),
            };
            config.cache_dir = cache_dir;
            config.metrics_addr = metrics;
            config.heartbeat = std::time::Duration::from_millis(heartbeat_ms);
            config.progress = std::time::Duration::from_millis(progress_ms);
            worker::run(config, medrollup_wire::service::shutdown_signal()).await?;
        }
    }
    Ok(())
}
