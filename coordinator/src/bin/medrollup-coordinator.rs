//! `medrollup-coordinator`: parses arguments, sets up logging, runs the
//! coordinator until Ctrl-C or SIGTERM.

use anyhow::Context;
use clap::Parser;
use medrollup_circuits::sample;
use medrollup_circuits::state::Genesis;
use medrollup_coordinator::Config;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The medrollup coordinator: intake, sequencer, prover farm, verification.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// NATS server.
    #[arg(long, default_value = "nats://127.0.0.1:4222", env = "MEDROLLUP_NATS_URL")]
    nats_url: String,
    /// NATS user (the coordinator's credential).
    #[arg(long, env = "MEDROLLUP_NATS_USER")]
    nats_user: Option<String>,
    /// NATS password (from the environment, so it stays out of process lists).
    #[arg(long, env = "MEDROLLUP_NATS_PASSWORD", hide_env_values = true)]
    nats_password: Option<String>,
    /// Database and content store.
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,
    /// Keys (`medrollup-circuits setup`).
    #[arg(long, default_value = "keys")]
    keys_dir: PathBuf,
    /// Genesis JSON; the sample genesis (two hospitals) at the keys' tree height if absent.
    #[arg(long)]
    genesis: Option<PathBuf>,
    /// HTTP API address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// Seal a batch that is not full this many milliseconds after its first transaction.
    #[arg(long, default_value_t = 2000)]
    seal_timeout_ms: u64,
    /// Proof attempts before a job is dead.
    #[arg(long, default_value_t = 3)]
    max_attempts: u32,
    /// Seconds a worker may go without acking progress before its job is redelivered.
    #[arg(long, default_value_t = 30)]
    job_ack_wait_s: u64,
    /// Deliveries of one job before it is dead.
    #[arg(long, default_value_t = 5)]
    job_max_deliver: i64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    medrollup_wire::service::init_logging();
    let args = Args::parse();
    let genesis: Genesis = match &args.genesis {
        Some(p) => {
            serde_json::from_slice(&std::fs::read(p).with_context(|| format!("reading {}", p.display()))?)
                .with_context(|| format!("{} is not a genesis JSON", p.display()))?
        }
        None => {
            let m = medrollup_circuits::keys::read_manifest(&args.keys_dir)?;
            sample::genesis(m.shape.levels)
        }
    };
    let mut config = Config::local(genesis);
    config.nats_url = args.nats_url;
    config.nats_credentials = match (args.nats_user, args.nats_password) {
        (Some(u), Some(p)) => Some((u, p)),
        (None, None) => None,
        _ => anyhow::bail!("give both --nats-user and MEDROLLUP_NATS_PASSWORD, or neither"),
    };
    config.data_dir = args.data_dir;
    config.keys_dir = args.keys_dir;
    config.http_addr = args.http;
    config.seal_timeout = Duration::from_millis(args.seal_timeout_ms);
    config.max_attempts = args.max_attempts;
    config.job_ack_wait = Duration::from_secs(args.job_ack_wait_s);
    config.job_max_deliver = args.job_max_deliver;
    medrollup_coordinator::run(config, medrollup_wire::service::shutdown_signal()).await?;
    Ok(())
}
