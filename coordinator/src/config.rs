//! The coordinator's settings, with defaults that run on one machine.

use medrollup_circuits::state::Genesis;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything [`crate::run`] needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// NATS server URL.
    pub nats_url: String,
    /// NATS user and password (the coordinator's credential).
    pub nats_credentials: Option<(String, String)>,
    /// Where the database and the embedded content store live.
    pub data_dir: PathBuf,
    /// Directory with `keys.json` and the key files (`medrollup-circuits setup`).
    pub keys_dir: PathBuf,
    /// The initial state.
    pub genesis: Genesis,
    /// HTTP API address.
    pub http_addr: SocketAddr,
    /// A batch that is not full is sealed this long after its first transaction.
    pub seal_timeout: Duration,
    /// Proof attempts (rejected proofs and failures) before a job is dead.
    pub max_attempts: u32,
    /// A worker that neither acks progress nor finishes within this loses its job.
    pub job_ack_wait: Duration,
    /// Deliveries of one job message (worker deaths, timeouts) before it is dead.
    pub job_max_deliver: i64,
    /// A dead job is queued again (new attempts, no worker excluded) this
    /// long after it was parked: batches land in order, so one dead job
    /// would stop every later batch from reaching L1 for good.
    pub dead_job_retry: Duration,
    /// Refused transactions' answers are kept this long (`GET /tx/{id}`),
    /// then forgotten: anyone can send junk to be refused, and the database
    /// must not grow with it for good. Accepted answers stay.
    pub refusals_kept: Duration,
    /// A job gone from the queue this long with no result for its attempt
    /// is queued again as a failed attempt: a worker acked it without
    /// answering (a bug, or a hostile worker), and nothing else would ever
    /// bring it back. A worker publishes its result before it acks, so the
    /// wait only covers a result still on its way.
    pub job_lost_after: Duration,
    /// A worker silent for this long is shown as lost.
    pub worker_timeout: Duration,
    /// An IPFS node's RPC API (e.g. `http://127.0.0.1:5001`) to keep batch
    /// data and check records' content on; `None`: the embedded store in
    /// `<data>/content`.
    pub ipfs_api: Option<String>,
    /// L1: the rollup contract and the submitter; `None` records proven
    /// batches to `<data>/l1-sink.jsonl` instead.
    pub l1: Option<crate::l1::L1Settings>,
}

impl Config {
    /// Defaults for one machine: local NATS, `./data`, `./keys`, HTTP on 8080.
    pub fn local(genesis: Genesis) -> Self {
        Self {
            nats_url: "nats://127.0.0.1:4222".into(),
            nats_credentials: None,
            data_dir: "data".into(),
            keys_dir: "keys".into(),
            genesis,
            http_addr: ([127, 0, 0, 1], 8080).into(),
            seal_timeout: Duration::from_secs(2),
            max_attempts: 3,
            job_ack_wait: Duration::from_secs(30),
            job_max_deliver: 5,
            dead_job_retry: Duration::from_secs(300),
            refusals_kept: Duration::from_secs(7 * 86_400),
            job_lost_after: Duration::from_secs(30),
            worker_timeout: Duration::from_secs(15),
            ipfs_api: None,
            l1: None,
        }
    }
}
