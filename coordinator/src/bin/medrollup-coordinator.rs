//! `medrollup-coordinator`: parses arguments, sets up logging, runs the
//! coordinator until Ctrl-C or SIGTERM.

use anyhow::Context;
use clap::{Parser, Subcommand};
use medrollup_circuits::sample;
use medrollup_circuits::state::Genesis;
use medrollup_coordinator::Config;
use medrollup_coordinator::l1::L1Settings;
use medrollup_l1::submitter::{self, L1Config};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The medrollup coordinator: intake, sequencer, prover farm, verification.
#[derive(Debug, Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: Args,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write the farm's nats-server configuration, with a user per role.
    ///
    /// The coordinator, the clients and each named worker get a user
    /// allowed only what its role needs (a worker: the job queue, the key
    /// bucket, and its own result and heartbeat subjects). Passwords
    /// are generated into <OUT>/<user>.password (owner-only) and kept when
    /// run again, so workers can be added; a worker left out loses access.
    NatsConfig {
        /// Directory for nats.conf and the password files.
        #[arg(long)]
        out: PathBuf,
        /// A worker's name (repeat for each hospital's worker); its user is
        /// worker-<name>.
        #[arg(long = "worker", value_parser = parse_worker_name)]
        workers: Vec<String>,
        /// Address nats-server listens on.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Port nats-server listens on.
        #[arg(long, default_value_t = 4222)]
        port: u16,
        /// JetStream's store (default: <OUT>/jetstream).
        #[arg(long)]
        store: Option<PathBuf>,
    },
}

fn parse_worker_name(name: &str) -> Result<String, String> {
    medrollup_wire::natsconf::check_worker_name(name)?;
    Ok(name.to_string())
}

/// Running the coordinator.
#[derive(Debug, clap::Args)]
struct Args {
    /// NATS server.
    #[arg(long, default_value = "nats://127.0.0.1:4222", env = "MEDROLLUP_NATS_URL")]
    nats_url: String,
    /// NATS user (the coordinator's credential); its password comes from
    /// MEDROLLUP_NATS_PASSWORD only, so it stays out of process lists.
    #[arg(long, env = "MEDROLLUP_NATS_USER")]
    nats_user: Option<String>,
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
    /// Days a refused transaction's answer is kept (`GET /tx/{id}`) before
    /// it is forgotten; accepted answers are kept for good.
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u64).range(1..=3650))]
    refusals_kept_days: u64,
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
    /// The owner of a rollup this coordinator deploys: installs verifiers
    /// and replaces the sequencer. Another account than the sequencer's (in
    /// production a multisig); needed only when the coordinator deploys.
    #[arg(long)]
    l1_owner: Option<alloy::primitives::Address>,
    /// For a rollup this coordinator deploys: seconds a proposed verifier
    /// waits before its owner may install it.
    #[arg(long, default_value_t = submitter::DEFAULT_UPGRADE_DELAY_S)]
    l1_upgrade_delay_s: u64,
    /// Uses keys from a seeded setup on a chain other than a development
    /// one (a test network, knowingly: anyone who knows the seed can forge
    /// proofs).
    #[arg(long)]
    l1_allow_seeded_keys: bool,
    /// Blocks that must hold a batch before it counts as landed.
    #[arg(long, default_value_t = 1)]
    l1_confirmations: u64,
    /// Raise the fees of a submission not mined within this many milliseconds.
    #[arg(long, default_value_t = 12_000)]
    l1_stuck_after_ms: u64,
    /// The most a submission offers per gas, in gwei (max fee, the tip
    /// included), however long it waits: raises stop there.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..))]
    l1_max_fee_gwei: u64,
}

/// The password of `user` in `dir`: the one kept there, else a new one
/// (192 random bits, hex), written owner-only.
fn password(dir: &Path, user: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(format!("{user}.password"));
    match std::fs::read_to_string(&path) {
        Ok(kept) if kept.trim().is_empty() => {
            anyhow::bail!("{} is empty: delete it to have a new password made", path.display())
        }
        Ok(kept) => {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path)?.permissions().mode();
            if mode & 0o077 != 0 {
                eprintln!(
                    "warning: {} may be read by others (mode {:o}): chmod 600 it, or delete it to have a new \
                     password made",
                    path.display(),
                    mode & 0o777
                );
            }
            return Ok(kept.trim().to_string());
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let mut random = [0u8; 24];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut random)?;
    let made = hex::encode(random);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(f, "{made}")?;
    f.sync_all()?;
    Ok(made)
}

fn nats_config(
    out: &Path,
    workers: &[String],
    host: &str,
    port: u16,
    store: Option<PathBuf>,
) -> anyhow::Result<()> {
    use medrollup_wire::natsconf::{Role, User, server_config, worker_user};
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut users =
        vec![("coordinator".to_string(), Role::Coordinator), ("clients".to_string(), Role::Clients)];
    users.extend(workers.iter().map(|w| (worker_user(w), Role::Worker(Some(w.clone())))));
    let users = users
        .into_iter()
        .map(|(user, role)| Ok(User { password: password(out, &user)?, user, role }))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let store = store.unwrap_or_else(|| out.join("jetstream"));
    let store = std::path::absolute(&store)?;
    let text = server_config(host, port, &store, &users)?;
    let conf = out.join("nats.conf");
    let tmp = out.join(".nats.conf.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    std::io::Write::write_all(&mut f, text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &conf)?;
    println!("wrote {}: start the server with  nats-server -c {}", conf.display(), conf.display());
    println!("give each process its user, and its password from the file (as MEDROLLUP_NATS_PASSWORD):");
    for u in &users {
        let what = match &u.role {
            Role::Coordinator => "medrollup-coordinator --nats-user coordinator".to_string(),
            Role::Clients => "whatever submits transactions over NATS".to_string(),
            Role::Worker(name) => format!(
                "medrollup-prover worker --name {} --nats-user {}",
                name.as_deref().unwrap_or("*"),
                u.user
            ),
        };
        println!("  {:<24} {}  ({})", u.user, out.join(format!("{}.password", u.user)).display(), what);
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::NatsConfig { out, workers, host, port, store }) = cli.command {
        return nats_config(&out, &workers, &host, port, store);
    }
    medrollup_wire::service::init_logging();
    let args = cli.run;
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
    config.nats_credentials = match (args.nats_user, nats_password()) {
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
    config.refusals_kept = Duration::from_secs(args.refusals_kept_days * 86_400);
    config.job_lost_after = Duration::from_secs(args.job_lost_after_s);
    config.ipfs_api = args.ipfs_api;
    if let Some(rpc) = &args.l1_rpc {
        let key = args.l1_key.as_deref().context("--l1-rpc needs the sequencer's key in MEDROLLUP_L1_KEY")?;
        let mut l1 = L1Config::local(rpc, submitter::parse_key(key)?);
        l1.confirmations = args.l1_confirmations.max(1);
        l1.stuck_after = Duration::from_millis(args.l1_stuck_after_ms);
        l1.max_fee_cap = u128::from(args.l1_max_fee_gwei) * submitter::GWEI;
        config.l1 = Some(L1Settings {
            config: l1,
            rollup: args.l1_rollup,
            verifier_artifact: args.l1_verifier_artifact,
            owner: args.l1_owner,
            upgrade_delay_s: args.l1_upgrade_delay_s,
            allow_seeded_keys: args.l1_allow_seeded_keys,
        });
    } else if args.l1_rollup.is_some() {
        anyhow::bail!("--l1-rollup needs --l1-rpc");
    }
    medrollup_coordinator::run(config, medrollup_wire::service::shutdown_signal()).await?;
    Ok(())
}

/// The NATS password, from the environment only (a flag would show it in
/// process lists).
fn nats_password() -> Option<String> {
    std::env::var("MEDROLLUP_NATS_PASSWORD").ok()
}
