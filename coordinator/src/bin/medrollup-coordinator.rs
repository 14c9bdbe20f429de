//! `medrollup-coordinator`: parses arguments, sets up logging, runs the
//! coordinator until Ctrl-C or SIGTERM.

use anyhow::Context;
use clap::Parser;
use medrollup_circuits::sample;
use medrollup_circuits::state::Genesis;
use medrollup_coordinator::Config;
use medrollup_coordinator::l1::L1Settings;
use medrollup_l1::submitter::{self, L1Config};
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
    /// Seconds a dead job stays parked before it is queued again (new
    /// attempts, no worker excluded): later batches wait for it to reach L1.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    dead_job_retry_s: u64,
    /// Seconds a job may be gone from the queue with no result before it is
    /// queued again as a failed attempt (a worker acked it without answering).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    job_lost_after_s: u64,
    /// An IPFS node's RPC API (e.g. http://127.0.0.1:5001): batch data and
    /// records' content live there. Without it, in the embedded store under
    /// --data-dir (same CIDs), served at /api/v0.
    #[arg(long, env = "MEDROLLUP_IPFS_API")]
    ipfs_api: Option<String>,
    /// Ethereum JSON-RPC URL: proven batches land on the rollup contract
    /// there (key: MEDROLLUP_L1_KEY). Without it they are recorded to
    /// <data>/l1-sink.jsonl.
    #[arg(long, env = "MEDROLLUP_L1_RPC")]
    l1_rpc: Option<String>,
    /// The sequencer's private key (hex; from the environment only).
    #[arg(long = "l1-key-from-env-only", env = "MEDROLLUP_L1_KEY", hide = true, hide_env_values = true)]
    l1_key: Option<String>,
    /// The rollup contract; absent: the one this coordinator deployed
    /// (<data>/l1-deployment.json), or a fresh deployment on a dev chain.
    #[arg(long)]
    l1_rollup: Option<alloy::primitives::Address>,
    /// Verifier artifact to deploy, for keys other than the canonical ones.
    #[arg(long)]
    l1_verifier_artifact: Option<PathBuf>,
    /// Blocks that must hold a batch before it counts as landed.
    #[arg(long, default_value_t = 1)]
    l1_confirmations: u64,
    /// Raise the fees of a submission not mined within this many milliseconds.
    #[arg(long, default_value_t = 12_000)]
    l1_stuck_after_ms: u64,
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
    config.dead_job_retry = Duration::from_secs(args.dead_job_retry_s);
    config.job_lost_after = Duration::from_secs(args.job_lost_after_s);
    config.ipfs_api = args.ipfs_api;
    if let Some(rpc) = &args.l1_rpc {
        let key = args.l1_key.as_deref().context("--l1-rpc needs the sequencer's key in MEDROLLUP_L1_KEY")?;
        let mut l1 = L1Config::local(rpc, submitter::parse_key(key)?);
        l1.confirmations = args.l1_confirmations.max(1);
        l1.stuck_after = Duration::from_millis(args.l1_stuck_after_ms);
        config.l1 = Some(L1Settings {
            config: l1,
            rollup: args.l1_rollup,
            verifier_artifact: args.l1_verifier_artifact,
        });
    } else if args.l1_rollup.is_some() {
        anyhow::bail!("--l1-rollup needs --l1-rpc");
    }
    medrollup_coordinator::run(config, medrollup_wire::service::shutdown_signal()).await?;
    Ok(())
}
