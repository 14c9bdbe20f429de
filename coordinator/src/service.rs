//! The running coordinator: NATS JetStream intake, the sequencer loop, the
//! farm (jobs out, results in, every proof verified), in-order hand-over to
//! the L1 sink, and the HTTP API beside it.
//!
//! Durability: the transaction stream keeps every submission until it is
//! sealed or answered; the database records, with each sealed batch, the
//! stream sequence decided up to (the stream is trimmed below it). On start
//! the coordinator restores the sealed state (from its stored leaves, or by
//! replaying its sealed batches) and reads the stream from the next
//! sequence, so accepted transactions in a batch that was still open at a
//! crash are decided again, in the same order, and none is lost or applied
//! twice.

use crate::cid::Cid;
use crate::config::Config;
use crate::content::{ContentError, ContentStore, EmbeddedStore};
use crate::http;
use crate::metrics::Metrics;
use crate::sequencer::{self, RestoreError, Sequencer};
use crate::sink::{ProofSink, RecordingSink};
use crate::store::{BatchRecord, Decision, JobRecord, JobState, ProofRecord, Store, StoreError};
use ark_bn254::Bn254;
use ark_groth16::PreparedVerifyingKey;
use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use medrollup_circuits::batch::{BatchWitness, PublicInputs};
use medrollup_circuits::keys::{self, CircuitShape, KeyError, KeyManifest};
use medrollup_circuits::state::{Genesis, State};
use medrollup_wire::{
    BatchData, JobOutcome, JobResult, JobSpec, TxAnswer, TxStatus, WorkerInfo, streams, subjects,
};
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::{Instrument, debug, info, info_span, warn};

/// Why the coordinator stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// The keys.
    #[error("keys: {0}")]
    Keys(#[from] KeyError),
    /// The database.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The content store.
    #[error("content store: {0}")]
    Content(#[from] ContentError),
    /// The stored state does not replay.
    #[error(transparent)]
    Restore(#[from] RestoreError),
    /// NATS.
    #[error("NATS: {0}")]
    Nats(String),
    /// Files or sockets.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// L1 (node, contract, deployment).
    #[error("L1: {0}")]
    L1(#[from] crate::l1::L1SetupError),
}

macro_rules! nats_err {
    ($ctx:expr) => {
        |e| CoordinatorError::Nats(format!("{}: {e}", $ctx))
    };
}

/// How far past L1's clock a batch may be stamped (see
/// `Coordinator::batch_clock`).
const CLOCK_AHEAD_MAX: Duration = Duration::from_secs(300);

/// A batch's time when this machine's clock reads `local` and L1's latest
/// block read was stamped `chain.0`, L1's clock being about `chain.1` now
/// (see `Coordinator::batch_clock`).
fn batch_stamp(local: u64, chain: Option<(u64, u64)>) -> u64 {
    match chain {
        Some((read, now)) => local.min(now + CLOCK_AHEAD_MAX.as_secs()).max(read),
        None => local,
    }
}

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// What the HTTP API reads.
#[derive(Debug)]
pub struct View {
    /// The state as of the last sealed batch.
    pub sealed: State,
    /// Sealed batches.
    pub batches_sealed: u64,
    /// Answers not yet in the database (the open batch's).
    pub recent: HashMap<String, TxAnswer>,
    /// Content digests of the open batch's accepted record transactions
    /// (kept from removal like the sealed state's records).
    pub open_content: HashSet<[u8; 32]>,
}

/// A worker as last heard from.
#[derive(Debug, Clone)]
pub struct Heard {
    /// Its heartbeat.
    pub info: WorkerInfo,
    /// When.
    pub at: Instant,
}

/// Workers are forgotten once not heard from for this long (they are shown
/// as lost until then).
pub const FORGET_WORKER_AFTER: Duration = Duration::from_secs(24 * 3600);

/// At most this many workers are remembered: a bus without a user per
/// hospital lets anyone beat under made-up names, and each is kept until
/// [`FORGET_WORKER_AFTER`]. Past it, the one heard from longest ago goes.
pub const MAX_WORKERS_HEARD: usize = 1024;

/// The largest heartbeat read: a worker's name, backend, a line per device
/// and a few counters take well under it (the bus would take 8 MB, and
/// [`MAX_WORKERS_HEARD`] of those kept would exhaust memory).
pub const MAX_HEARTBEAT_BYTES: usize = 16 * 1024;

/// The worker a heartbeat on `subject` says it is from, if it counts: not
/// too large, and on that worker's own subject (which a farm with a NATS user
/// per hospital lets only it publish to).
fn read_heartbeat(subject: &str, payload: &[u8]) -> Option<WorkerInfo> {
    if payload.len() > MAX_HEARTBEAT_BYTES {
        warn!(subject, bytes = payload.len(), max = MAX_HEARTBEAT_BYTES, "a heartbeat too large: ignored");
        return None;
    }
    let info = serde_json::from_slice::<WorkerInfo>(payload).ok()?;
    (subject == subjects::heartbeat(&info.name)
        && info.name.len() <= medrollup_wire::natsconf::MAX_WORKER_NAME)
        .then_some(info)
}

/// Notes a heartbeat in `workers`, within [`MAX_WORKERS_HEARD`].
fn note_heartbeat(workers: &mut HashMap<String, Heard>, info: WorkerInfo, at: Instant) {
    if !workers.contains_key(&info.name)
        && workers.len() >= MAX_WORKERS_HEARD
        && let Some(oldest) = workers.iter().min_by_key(|(_, h)| h.at).map(|(n, _)| n.clone())
    {
        workers.remove(&oldest);
    }
    workers.insert(info.name.clone(), Heard { info, at });
}

/// Forgets the workers not heard from for [`FORGET_WORKER_AFTER`] by `now`;
/// returns how many of the rest are alive (heard within `timeout`).
fn prune_workers(workers: &mut HashMap<String, Heard>, now: Instant, timeout: Duration) -> usize {
    workers.retain(|_, h| now.saturating_duration_since(h.at) < FORGET_WORKER_AFTER);
    workers.values().filter(|h| now.saturating_duration_since(h.at) < timeout).count()
}

/// State shared by the loop and the HTTP API.
#[derive(Debug)]
pub struct Shared {
    /// The database.
    pub store: Arc<Store>,
    /// The content store.
    pub content: Arc<dyn ContentStore>,
    /// Metrics.
    pub metrics: Metrics,
    /// Read model.
    pub view: RwLock<View>,
    /// NATS.
    pub client: async_nats::Client,
    /// JetStream.
    pub js: jetstream::Context,
    /// Workers by name.
    pub workers: Mutex<HashMap<String, Heard>>,
    /// Held while content is judged: by a transaction's look for its
    /// record's content (until the digest is kept) and by `pin/rm` (from its
    /// check to the removal), so that neither decides on what the other is
    /// about to change.
    pub content_gate: tokio::sync::Mutex<()>,
    /// When a worker counts as lost.
    pub worker_timeout: Duration,
    /// How long refusals are kept (see [`Config::refusals_kept`]).
    pub refusals_kept: Duration,
    /// The circuit's key manifest.
    pub manifest: KeyManifest,
    /// The L1 submitter's status (`None`: no L1 configured).
    pub l1: Option<Arc<Mutex<crate::l1::L1Status>>>,
}

/// Connects to NATS with the configured credential.
async fn connect(config: &Config, name: &str) -> Result<async_nats::Client, CoordinatorError> {
    let opts = match &config.nats_credentials {
        Some((u, p)) => async_nats::ConnectOptions::with_user_and_password(u.clone(), p.clone()),
        None => async_nats::ConnectOptions::new(),
    };
    opts.name(name)
        .connection_timeout(Duration::from_secs(5))
        .connect(config.nats_url.as_str())
        .await
        .map_err(|e| {
            CoordinatorError::Nats(format!(
                "connecting to {}: {e}",
                medrollup_wire::natsconf::redacted(&config.nats_url)
            ))
        })
}

/// The streams and consumers the farm uses (created if missing).
struct Bus {
    tx: stream::Stream,
    jobs: stream::Stream,
    results: consumer::Consumer<consumer::pull::Config>,
    advisories: consumer::Consumer<consumer::pull::Config>,
}

/// The largest message the transaction stream stores: four times
/// [`medrollup_wire::MAX_TX_BYTES`].
const TX_STREAM_MAX_MESSAGE: i32 = 4 * medrollup_wire::MAX_TX_BYTES as i32;

/// The error for a decision stored before a restart whose message (at
/// `seq`, transaction `id`) the transaction stream no longer holds.
fn lost_message(seq: u64, id: &str) -> CoordinatorError {
    CoordinatorError::Nats(format!(
        "stream {} no longer holds its message at sequence {seq} (transaction {id}, decided before the \
         restart): NATS lost part of its data. Restore NATS's data; nothing is decided until then",
        streams::TX
    ))
}

/// The error for a message at `seq` that is transaction `found`, where
/// `decided` was decided before the restart.
fn replaced_message(seq: u64, found: &str, decided: &str) -> CoordinatorError {
    CoordinatorError::Nats(format!(
        "stream {}'s message at sequence {seq} is transaction {found}, but {decided} was decided there \
         before the restart: the stream was made afresh. Restore NATS's data",
        streams::TX
    ))
}

/// Batches read at a time when replaying.
const REPLAY_PAGE: usize = 64;

/// The sealed state: rebuilt from the leaves the store keeps, or, for a
/// database made before they were kept, by replaying its batches a page at a
/// time (then the leaves are kept from here on).
pub fn restore_state(
    store: &Store,
    genesis: &Genesis,
    shape: CircuitShape,
) -> Result<Sequencer, CoordinatorError> {
    let count = store.batch_count()?;
    // The leaves only spare a replay: leaves that cannot be read (damaged)
    // or that do not give the batches' roots are set aside, the batches
    // replayed, and the leaves kept anew.
    let kept = store.kept_leaves().unwrap_or_else(|e| {
        warn!(error = %e, "the stored state cannot be read: replaying every batch");
        None
    });
    match &kept {
        None => info!(batches = count, "no stored state to start from: replaying every batch once"),
        Some(k) if k.through != count => warn!(
            batches = count,
            through = k.through,
            "the stored state is of another batch than the last: replaying every batch"
        ),
        Some(_) => {}
    }
    if let Some(kept) = kept
        && kept.through == count
    {
        let inputs = |n: u64| -> Result<PublicInputs, CoordinatorError> {
            let b = store.batch(n)?.ok_or_else(|| {
                CoordinatorError::Restore(RestoreError::Replay { batch: n, why: "it is missing".into() })
            })?;
            Ok(b.public_inputs)
        };
        let ends = if count == 0 { None } else { Some((inputs(0)?, inputs(count - 1)?)) };
        match Sequencer::resume(
            genesis,
            shape,
            count,
            kept.leaves,
            kept.audit_count,
            ends.as_ref().map(|(a, b)| (a, b)),
        ) {
            Ok(seq) => return Ok(seq),
            // The batches are what was proven: replayed, they decide (and
            // say what is wrong if they do not replay either).
            Err(e) => warn!(error = %e, "the stored state is not used: replaying every batch"),
        }
    }
    let mut r = Sequencer::replayer(genesis, shape)?;
    loop {
        let page = store.batches_from(r.batches(), REPLAY_PAGE)?;
        if page.is_empty() {
            break;
        }
        for rec in &page {
            r.replay(rec)?;
        }
    }
    let seq = r.done();
    let state = seq.sealed_state();
    store.keep_leaves(seq.next_batch(), state.audit_count(), state.leaves())?;
    Ok(seq)
}

/// Checks, before anything is answered, that every decision stored past the
/// sealed batches (the open batch's) still has its message in the
/// transaction stream, the same transaction: else that batch could not be
/// replayed as it was answered.
async fn check_open_batch(
    tx: &stream::Stream,
    decisions: &[(u64, Decision)],
) -> Result<(), CoordinatorError> {
    for (seq, d) in decisions {
        let raw = match tx.get_raw_message(*seq).await {
            Ok(raw) => raw,
            Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => {
                return Err(lost_message(*seq, &d.answer.id));
            }
            Err(e) => {
                return Err(CoordinatorError::Nats(format!(
                    "stream {}: reading the message at sequence {seq}: {e}",
                    streams::TX
                )));
            }
        };
        let found = medrollup_wire::tx_id(&raw.payload);
        if found != d.answer.id {
            return Err(replaced_message(*seq, &found, &d.answer.id));
        }
    }
    Ok(())
}

/// Sets up the streams; `decided` is the last transaction sequence this
/// coordinator decided (0: none), `applied` the last one in a sealed batch.
/// A transaction stream that lacks what was decided (NATS lost its
/// JetStream data, or the stream was made afresh and numbers from 1 again),
/// or that no longer starts right after the sealed batches (messages not
/// yet sealed were removed, by limits or by hand: the coordinator itself
/// removes only what is sealed), is refused: read from `applied + 1`, its
/// new transactions would be skipped as applied, taken for the ones decided
/// there before, or decided without the open batch's. So is a stream
/// already trimmed under a coordinator that has decided nothing (its
/// database lost or made afresh): what was accepted before would be lost.
async fn setup_bus(
    js: &jetstream::Context,
    config: &Config,
    decided: u64,
    applied: u64,
) -> Result<Bus, CoordinatorError> {
    let tx_config = stream::Config {
        name: streams::TX.into(),
        subjects: vec![subjects::TX_SUBMIT.into()],
        duplicate_window: Duration::from_secs(120),
        storage: stream::StorageType::File,
        // Past this the server refuses the publish (any client credential
        // could otherwise store 8 MB messages); up to it, one over
        // MAX_TX_BYTES is answered `too_large`.
        max_message_size: TX_STREAM_MAX_MESSAGE,
        ..Default::default()
    };
    let lost = |what: String| {
        CoordinatorError::Nats(format!(
            "stream {} {what}, but this coordinator has decided transactions up to sequence {decided}: \
             NATS lost its JetStream data, or the stream was made afresh. Restore NATS's data (the open \
             batch's transactions are kept only there); nothing is decided until then",
            streams::TX
        ))
    };
    let mut tx = if decided == 0 {
        js.get_or_create_stream(tx_config.clone())
            .await
            .map_err(|e| CoordinatorError::Nats(format!("creating stream {}: {e}", streams::TX)))?
    } else {
        // Not made afresh: it would take submissions that are never decided.
        js.get_stream(streams::TX).await.map_err(|e| match e.kind() {
            jetstream::context::GetStreamErrorKind::JetStream(j)
                if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
            {
                lost("is missing".into())
            }
            _ => CoordinatorError::Nats(format!("stream {}: {e}", streams::TX)),
        })?
    };
    let info = tx.info().await.map_err(|e| CoordinatorError::Nats(format!("stream {}: {e}", streams::TX)))?;
    if info.state.last_sequence < decided {
        return Err(lost(format!("ends at sequence {}", info.state.last_sequence)));
    }
    if decided == 0 && info.state.first_sequence > 1 {
        return Err(CoordinatorError::Nats(format!(
            "stream {} starts at sequence {}: a coordinator decided and sealed its earlier transactions, \
             but this one's database has none. Start it on that coordinator's data directory; a new \
             farm needs a new transaction stream",
            streams::TX,
            info.state.first_sequence
        )));
    }
    if decided > 0 && info.state.first_sequence > applied + 1 {
        return Err(lost(format!(
            "has lost its messages from sequence {} to {}",
            applied + 1,
            info.state.first_sequence - 1
        )));
    }
    // A stream made by an earlier version has no bound yet.
    if info.config.max_message_size != TX_STREAM_MAX_MESSAGE {
        let updated = stream::Config { max_message_size: TX_STREAM_MAX_MESSAGE, ..info.config.clone() };
        js.update_stream(&updated).await.map_err(|e| {
            CoordinatorError::Nats(format!("bounding stream {}'s messages: {e}", streams::TX))
        })?;
        tx = js
            .get_stream(streams::TX)
            .await
            .map_err(|e| CoordinatorError::Nats(format!("stream {}: {e}", streams::TX)))?;
    }
    let jobs = js
        .get_or_create_stream(stream::Config {
            name: streams::JOBS.into(),
            subjects: vec![subjects::JOBS.into()],
            retention: stream::RetentionPolicy::WorkQueue,
            duplicate_window: Duration::from_secs(3600),
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| CoordinatorError::Nats(format!("creating stream {}: {e}", streams::JOBS)))?;
    let job_consumer = consumer::pull::Config {
        durable_name: Some(streams::JOBS_CONSUMER.into()),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: config.job_ack_wait,
        max_deliver: config.job_max_deliver,
        ..Default::default()
    };
    let mut existing: consumer::PullConsumer = jobs
        .get_or_create_consumer(streams::JOBS_CONSUMER, job_consumer.clone())
        .await
        .map_err(|e| CoordinatorError::Nats(format!("creating consumer {}: {e}", streams::JOBS_CONSUMER)))?;
    // One made by an earlier start keeps its settings unless told otherwise.
    let info = existing
        .info()
        .await
        .map_err(|e| CoordinatorError::Nats(format!("consumer {}: {e}", streams::JOBS_CONSUMER)))?;
    if info.config.ack_wait != config.job_ack_wait || info.config.max_deliver != config.job_max_deliver {
        info!(
            ack_wait = ?config.job_ack_wait,
            max_deliver = config.job_max_deliver,
            "the job queue's consumer takes the new settings"
        );
        jobs.update_consumer(consumer::Config {
            ack_wait: config.job_ack_wait,
            max_deliver: config.job_max_deliver,
            ..info.config.clone()
        })
        .await
        .map_err(|e| CoordinatorError::Nats(format!("updating consumer {}: {e}", streams::JOBS_CONSUMER)))?;
    }
    let results =
        work_queue(js, streams::RESULTS, format!("{}.*", subjects::RESULT_PREFIX), streams::RESULTS_CONSUMER)
            .await?;
    // The server says a job ran out of deliveries only once, as a plain
    // message: kept in a stream, it waits for a coordinator that was away.
    let advisory =
        format!("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.{}", streams::JOBS, streams::JOBS_CONSUMER);
    let advisories =
        work_queue(js, streams::JOB_ADVISORIES, advisory, streams::JOB_ADVISORIES_CONSUMER).await?;
    Ok(Bus { tx, jobs, results, advisories })
}

/// Work-queue stream `name` of the messages on `subject`, stored on file,
/// and this coordinator's durable consumer `durable` of it (acked
/// explicitly, within 60 s).
async fn work_queue(
    js: &jetstream::Context,
    name: &str,
    subject: String,
    durable: &str,
) -> Result<consumer::PullConsumer, CoordinatorError> {
    js.get_or_create_stream(stream::Config {
        name: name.into(),
        subjects: vec![subject],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| CoordinatorError::Nats(format!("creating stream {name}: {e}")))?
    .get_or_create_consumer(
        durable,
        consumer::pull::Config {
            durable_name: Some(durable.into()),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(60),
            ..Default::default()
        },
    )
    .await
    .map_err(|e| CoordinatorError::Nats(format!("creating consumer {durable} on {name}: {e}")))
}

/// Puts the proving key into the key bucket under its sha256 (once).
async fn publish_key(
    js: &jetstream::Context,
    config: &Config,
    m: &KeyManifest,
) -> Result<(), CoordinatorError> {
    let bucket = match js.get_object_store(streams::KEYS_BUCKET).await {
        Ok(b) => b,
        Err(_) => js
            .create_object_store(jetstream::object_store::Config {
                bucket: streams::KEYS_BUCKET.into(),
                description: Some("medrollup proving keys, named by sha256".into()),
                ..Default::default()
            })
            .await
            .map_err(|e| CoordinatorError::Nats(format!("creating bucket {}: {e}", streams::KEYS_BUCKET)))?,
    };
    if bucket.info(&m.proving_key_sha256).await.is_ok() {
        return Ok(());
    }
    let bytes = tokio::fs::read(config.keys_dir.join(&m.proving_key)).await?;
    let actual = keys::sha256_hex(&bytes);
    if actual != m.proving_key_sha256 {
        return Err(KeyError::HashMismatch {
            path: config.keys_dir.join(&m.proving_key),
            expected: m.proving_key_sha256.clone(),
            actual,
        }
        .into());
    }
    bucket
        .put(m.proving_key_sha256.as_str(), &mut bytes.as_slice())
        .await
        .map_err(|e| CoordinatorError::Nats(format!("uploading the proving key: {e}")))?;
    info!(sha256 = %m.proving_key_sha256, bytes = bytes.len(), "proving key published to the farm");
    Ok(())
}

/// The job messages in the queue, by `(batch, attempt)` (from their
/// message ids), with their sequences. Empty if the queue cannot be read:
/// every queued job is then published again.
async fn jobs_in_queue(jobs: &stream::Stream) -> HashMap<(u64, u32), u64> {
    let mut found = HashMap::new();
    let info = match jobs.get_info().await {
        Ok(i) => i,
        Err(e) => {
            warn!(error = %e, "could not read the job queue: queued jobs are published again");
            return found;
        }
    };
    // The next message from `seq` on, wherever the acked ones left gaps.
    let mut seq = info.state.first_sequence;
    for _ in 0..info.state.messages {
        let m = match jobs.raw_message_builder().sequence(seq).next_by_subject(subjects::JOBS).send().await {
            Ok(m) => m,
            // Taken and acked since the count was read.
            Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => break,
            Err(e) => {
                warn!(error = %e, "could not read the job queue: queued jobs are published again");
                return HashMap::new();
            }
        };
        seq = m.sequence + 1;
        let id = m.headers.get("Nats-Msg-Id").map(|v| v.as_str().to_string()).unwrap_or_default();
        let parsed = id.strip_prefix("job-").and_then(|rest| {
            let (batch, attempt) = rest.split_once('-')?;
            Some((batch.parse().ok()?, attempt.parse().ok()?))
        });
        if let Some(key) = parsed {
            found.insert(key, m.sequence);
        }
    }
    found
}

/// The coordinator's loop state.
struct Coordinator {
    shared: Arc<Shared>,
    seq: Sequencer,
    pvk: PreparedVerifyingKey<Bn254>,
    sink: Box<dyn ProofSink>,
    /// The L1 submitter, which reads proven batches itself (`sink` is unused then).
    l1: Option<crate::l1::L1Handle>,
    config: Config,
    /// Answers since the last write to the database.
    pending: Vec<TxAnswer>,
    /// Stream sequence decided up to.
    last_seq: u64,
    seal_deadline: Option<tokio::time::Instant>,
    /// Jobs whose publication failed; retried on the tick.
    unpublished: VecDeque<u64>,
    /// Failed tries to publish each of those (for the log).
    publish_failures: HashMap<u64, u32>,
    /// Jobs parked dead (batch numbers), to be queued again after the
    /// configured wait.
    parked: Vec<u64>,
    /// The last stream sequence decided before this start and not yet
    /// sealed: up to it, transactions are replayed as decided.
    replay_through: u64,
    /// The sequences of the decisions stored before this start not yet
    /// replayed, in order: each must come back from the stream.
    to_replay: VecDeque<u64>,
    /// The job stream, where the watchdog looks for queued jobs' messages.
    jobs: stream::Stream,
    /// The transaction stream, trimmed of what is sealed or answered.
    tx: stream::Stream,
    /// The first sequence the transaction stream was last trimmed to keep.
    tx_kept_from: u64,
    /// The message of each published job's current attempt, by batch.
    in_queue: HashMap<u64, QueuedMessage>,
    /// When the watchdog last looked.
    last_watch: Instant,
    /// When old refusals were last forgotten (see [`Config::refusals_kept`]).
    last_forget: Option<Instant>,
}

/// A published job's message, as the watchdog follows it.
#[derive(Clone, Copy, Debug)]
struct QueuedMessage {
    attempt: u32,
    /// Its sequence in the job stream.
    seq: u64,
    /// Since when it has been found gone (taken and acked) with no result.
    gone_since: Option<Instant>,
    /// Since when it has been found in the queue with nothing left to
    /// deliver (its deliveries ran out).
    stranded_since: Option<Instant>,
}

/// Runs the coordinator until `shutdown` completes; then it stops taking
/// transactions, seals what it accepted, and returns.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), CoordinatorError> {
    std::fs::create_dir_all(&config.data_dir)?;
    let (manifest, vk) = keys::load_verifying_key(&config.keys_dir)?;
    let pvk = keys::prepare(&vk);
    let store = Arc::new(Store::open(&config.data_dir.join("coordinator.redb"))?);
    let backing: Arc<dyn ContentStore> = match &config.ipfs_api {
        Some(api) => Arc::new(crate::kubo::KuboStore::new(api)),
        None => Arc::new(EmbeddedStore::open(&config.data_dir.join("content"))?),
    };
    let seq = tokio::task::block_in_place(|| restore_state(&store, &config.genesis, manifest.shape))?;
    let batches_sealed = seq.next_batch();
    info!(batches = batches_sealed, root = %seq.sealed_state().root(), "state restored");

    let client = connect(&config, "medrollup-coordinator").await?;
    let js = jetstream::new(client.clone());
    let applied = store.applied_seq()?;
    let decided = store.decisions()?.iter().map(|(seq, _)| *seq).max().unwrap_or(0).max(applied);
    let bus = setup_bus(&js, &config, decided, applied).await?;
    check_open_batch(&bus.tx, &store.decisions()?).await?;
    publish_key(&js, &config, &manifest).await?;

    let metrics = Metrics::new();
    let content: Arc<dyn ContentStore> =
        Arc::new(crate::metrics::MeteredStore::new(backing, metrics.clone()));
    let l1 = match &config.l1 {
        Some(settings) => {
            let genesis_root = State::genesis(&config.genesis).map_err(RestoreError::Genesis)?.root();
            let h = crate::l1::start(
                settings,
                &config.data_dir,
                &manifest,
                genesis_root,
                store.clone(),
                metrics.clone(),
            )
            .await?;
            Some(h)
        }
        None => None,
    };
    let shared = Arc::new(Shared {
        store: store.clone(),
        content,
        metrics,
        view: RwLock::new(View {
            sealed: seq.sealed_state().clone(),
            batches_sealed,
            recent: HashMap::new(),
            open_content: HashSet::new(),
        }),
        client: client.clone(),
        js: js.clone(),
        workers: Mutex::new(HashMap::new()),
        content_gate: tokio::sync::Mutex::new(()),
        worker_timeout: config.worker_timeout,
        refusals_kept: config.refusals_kept,
        manifest: manifest.clone(),
        l1: l1.as_ref().map(|h| h.status.clone()),
    });
    let last_seq = store.applied_seq()?;
    let mut c = Coordinator {
        shared: shared.clone(),
        seq,
        pvk,
        sink: Box::new(RecordingSink::new(&config.data_dir.join("l1-sink.jsonl"))),
        l1,
        config: config.clone(),
        pending: Vec::new(),
        last_seq,
        seal_deadline: None,
        unpublished: VecDeque::new(),
        publish_failures: HashMap::new(),
        parked: Vec::new(),
        replay_through: 0,
        to_replay: VecDeque::new(),
        jobs: bus.jobs.clone(),
        tx: bus.tx.clone(),
        tx_kept_from: 0,
        in_queue: HashMap::new(),
        last_watch: Instant::now(),
        last_forget: None,
    };
    c.refresh_job_metrics()?;
    // Jobs still queued at the last stop: one whose message is still in the
    // queue is followed there; the others go out again (the job stream
    // drops duplicates only within its window, and a job can wait longer;
    // a late duplicate result is ignored).
    let waiting = jobs_in_queue(&bus.jobs).await;
    for job in store.open_jobs()? {
        match job.state {
            JobState::Queued => match waiting.get(&(job.batch, job.attempt)) {
                Some(&seq) => {
                    let followed =
                        QueuedMessage { attempt: job.attempt, seq, gone_since: None, stranded_since: None };
                    c.in_queue.insert(job.batch, followed);
                }
                None => c.unpublished.push_back(job.batch),
            },
            JobState::Dead { .. } => c.parked.push(job.batch),
            JobState::Proven => {}
        }
    }
    c.trim_tx_stream(store.applied_seq()?).await;
    c.advance_sink().await?;

    // The HTTP API.
    let (stop_http, http_stopped) = tokio::sync::watch::channel(false);
    let listener = tokio::net::TcpListener::bind(config.http_addr).await?;
    info!(addr = %listener.local_addr()?, "HTTP API listening");
    // The open batch's record contents, kept before anyone may ask to remove
    // them (its transactions are replayed from the stream later).
    {
        let mut v = shared.view.write().expect("view lock");
        for (seq, d) in store.decisions()? {
            c.replay_through = seq;
            c.to_replay.push_back(seq);
            if let (TxStatus::Accepted { .. }, Some(digest)) = (&d.answer.status, d.content) {
                v.open_content.insert(digest);
            }
            // Announced before the restart: answered as then, before the
            // stream is read again.
            v.recent.insert(d.answer.id.clone(), d.answer);
        }
    }
    let http_task = tokio::spawn(http::serve(listener, shared.clone(), http_stopped));

    // Heartbeats.
    let mut heartbeats = client
        .subscribe(format!("{}.*", subjects::HEARTBEAT_PREFIX))
        .await
        .map_err(|e| CoordinatorError::Nats(format!("subscribing to heartbeats: {e}")))?;
    let hb_shared = shared.clone();
    let hb_task = tokio::spawn(async move {
        while let Some(m) = heartbeats.next().await {
            if let Some(info) = read_heartbeat(m.subject.as_str(), &m.payload) {
                let mut w = hb_shared.workers.lock().expect("workers lock");
                note_heartbeat(&mut w, info, Instant::now());
            }
        }
    });

    // Jobs that ran out of deliveries, also while this coordinator was away.
    let mut advisories =
        bus.advisories.messages().await.map_err(|e| {
            CoordinatorError::Nats(format!("reading stream {}: {e}", streams::JOB_ADVISORIES))
        })?;

    // The transaction stream from where the database left off.
    let tx_consumer = bus
        .tx
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::ByStartSequence { start_sequence: last_seq + 1 },
            ..Default::default()
        })
        .await
        .map_err(|e| CoordinatorError::Nats(format!("reading stream {}: {e}", streams::TX)))?;
    let mut txs = tx_consumer
        .messages()
        .await
        .map_err(|e| CoordinatorError::Nats(format!("reading stream {}: {e}", streams::TX)))?;
    let mut results = bus
        .results
        .messages()
        .await
        .map_err(|e| CoordinatorError::Nats(format!("reading stream {}: {e}", streams::RESULTS)))?;
    info!(from_sequence = last_seq + 1, "taking transactions");

    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tokio::pin!(shutdown);
    let outcome = loop {
        let deadline = c.seal_deadline;
        let step = tokio::select! {
            _ = &mut shutdown => break Ok(()),
            m = txs.next() => match m {
                Some(Ok(m)) => c.on_tx(m).await,
                Some(Err(e)) => { warn!(error = %e, "transaction stream"); Ok(()) }
                None => Err(CoordinatorError::Nats("the transaction stream ended".into())),
            },
            m = results.next() => match m {
                Some(Ok(m)) => c.on_result(m).await,
                Some(Err(e)) => { warn!(error = %e, "result stream"); Ok(()) }
                None => Err(CoordinatorError::Nats("the result stream ended".into())),
            },
            m = advisories.next() => match m {
                Some(Ok(m)) => match c.on_max_deliveries(&bus.jobs, &m.payload).await {
                    // Acked once acted on: a failure leaves it for the next
                    // start, and one NATS could not answer comes again.
                    Ok(true) => {
                        if let Err(e) = m.ack().await {
                            warn!(error = %e, "could not ack an advisory (it comes again; acting twice is harmless)");
                        }
                        Ok(())
                    }
                    Ok(false) => Ok(()),
                    Err(e) => Err(e),
                },
                Some(Err(e)) => { warn!(error = %e, "advisory stream"); Ok(()) }
                None => Err(CoordinatorError::Nats("the advisory stream ended".into())),
            },
            _ = async { tokio::time::sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => {
                c.seal().await
            }
            _ = tick.tick() => c.on_tick().await,
        };
        if let Err(e) = step {
            break Err(e);
        }
    };
    // Stop taking work; what was accepted goes into a sealed batch. Not
    // after a failure (the open batch may hold a transaction decided but
    // not recorded): a restart replays the recorded decisions instead.
    // Nor halfway through a replay: the next start replays it whole.
    let sealed = if outcome.is_ok() && !c.replaying() { c.seal().await } else { Ok(()) };
    let _ = stop_http.send(true);
    let _ = http_task.await;
    if let Some(l1) = c.l1.take() {
        l1.stop().await;
    }
    hb_task.abort();
    let _ = client.flush().await;
    info!("coordinator stopped");
    outcome.and(sealed)
}

/// The `backend` label of a worker's stage times: one of a fixed few (the
/// name comes from the worker, and a label's values must stay few).
fn backend_label(backend: &str) -> &'static str {
    match backend.split(':').next().unwrap_or_default() {
        "cpu" => "cpu",
        "cuda" => "cuda",
        "opencl" => "opencl",
        _ => "other",
    }
}

impl Coordinator {
    /// Whether a record's content is in the store under one of `cids`
    /// (tried in order), whole, and now pinned there: content a transaction
    /// is accepted with is kept (from garbage collection, from an uploader's
    /// unpin on the same node) before it is accepted. A store that fails
    /// counts as not having it (the transaction is refused and can be sent
    /// again).
    async fn content_present(&self, cids: [Cid; 2]) -> bool {
        // One call per candidate: a pin finds the content (or says it is
        // not there) as well as keeping it.
        for cid in cids {
            match self.shared.content.pin(cid).await {
                Ok(()) => return true,
                Err(ContentError::NotFound(_)) => {}
                Err(e) => {
                    warn!(%cid, error = %e, "a record's content cannot be pinned whole");
                    return false;
                }
            }
        }
        false
    }

    /// The time a batch opened now is stamped with: this machine's clock,
    /// or L1's latest block's if that is later. Consents' expiries are
    /// judged at the batch's time; a machine whose clock is behind would
    /// otherwise accept an access under a consent the chain has seen end.
    /// Nor more than [`CLOCK_AHEAD_MAX`] past L1's clock: the contract takes
    /// no batch stamped after its block, and stamps never go back, so a
    /// clock far ahead would hold every batch off L1 until the chain caught
    /// up.
    fn batch_clock(&self) -> u64 {
        let local = now_ms() / 1000;
        let chain = self.shared.l1.as_ref().and_then(|status| {
            let s = status.lock().expect("l1 status");
            Some((s.chain_time?, s.chain_now()?))
        });
        let stamp = batch_stamp(local, chain);
        if stamp < local {
            // Said once a minute at most.
            static SAID: AtomicU64 = AtomicU64::new(0);
            let minute = local / 60;
            if SAID.swap(minute, Ordering::Relaxed) != minute {
                warn!(
                    ahead_s = local - stamp,
                    "this machine's clock is ahead of L1's: batches are stamped by L1's"
                );
            }
        }
        stamp
    }

    /// Whether the open batch's time lags the clock by more than the seal
    /// timeout (in whole seconds, at least one).
    fn open_batch_is_stale(&self) -> bool {
        let bound = self.config.seal_timeout.as_secs_f64().ceil().max(1.0) as u64;
        self.seq.open_timestamp().is_some_and(|t| t.saturating_add(bound) < self.batch_clock())
    }

    /// Whether decisions made before a restart are still being replayed.
    fn replaying(&self) -> bool {
        self.last_seq < self.replay_through
    }

    async fn on_tx(&mut self, m: jetstream::Message) -> Result<(), CoordinatorError> {
        let seq = m.info().map_err(nats_err!("message info"))?.stream_sequence;
        if seq <= self.last_seq {
            // Applied already. The ordered consumer delivers from an earlier
            // sequence when it is recreated (NATS restarted, heartbeats
            // missed): from its last delivered message's, or from the
            // stream's start if it delivered none since this coordinator
            // started. Deciding such a message again could accept what was
            // refused, or refuse what was accepted.
            debug!(seq, applied = self.last_seq, "a transaction already applied, delivered again: skipped");
            return Ok(());
        }
        // Every decision stored before the restart comes back, in order: one
        // whose message the stream lost (deleted by hand, say) would be lost
        // silently, its answer given and its batch sealed without it.
        if let Some(&next) = self.to_replay.front() {
            if seq > next {
                let store = self.shared.store.clone();
                let d = tokio::task::block_in_place(|| store.decision(next))?;
                return Err(lost_message(next, &d.map_or_else(|| "?".into(), |d| d.answer.id)));
            }
            if seq == next {
                self.to_replay.pop_front();
            }
        }
        // A batch's transactions are judged at its time, set when it opened.
        // One open for longer than the seal timeout (opened before a
        // restart, its decisions replayed) is sealed before a fresh decision:
        // a consent that ended since would otherwise still be honoured.
        if seq > self.replay_through && self.open_batch_is_stale() {
            info!(seq, "the open batch is older than the seal timeout: sealed before deciding more");
            self.seal().await?;
        }
        // A record's content is kept from removal (`pin/rm`) from before it
        // is looked for until the transaction is refused or its batch sealed.
        let mut held = None;
        let store = self.shared.store.clone();
        // Decided before a restart (announced, its batch not sealed): the
        // same decision again.
        let before = if seq <= self.replay_through {
            tokio::task::block_in_place(|| store.decision(seq))?
        } else {
            None
        };
        if let Some(d) = &before {
            let id = medrollup_wire::tx_id(&m.payload);
            if d.answer.id != id {
                return Err(replaced_message(seq, &id, &d.answer.id));
            }
        }
        let shared = self.shared.clone();
        let gate = shared.content_gate.lock().await;
        let answer = match sequencer::parse(&m.payload) {
            Err(a) => a,
            Ok(p) => {
                let content = p.record_cids().map(|[cid, _]| cid.digest());
                if let Some(d) = content {
                    let fresh = self.shared.view.write().expect("view lock").open_content.insert(d);
                    held = fresh.then_some(d);
                }
                match before {
                    // Refused or a duplicate: that changed nothing.
                    Some(d) if !matches!(d.answer.status, TxStatus::Accepted { .. }) => d.answer,
                    // Accepted: applied again at its batch's time, its
                    // content taken as found then.
                    Some(d) => {
                        let now = d.timestamp.unwrap_or_else(|| now_ms() / 1000);
                        let again = tokio::task::block_in_place(|| {
                            self.seq.try_admit(&p, now, |msg| store.applied_in(msg), true)
                        })?;
                        // Deciding again is deterministic (the same state,
                        // time and content): a difference means the
                        // database and the stream disagree, and going on
                        // would break the answer given.
                        if again != d.answer {
                            return Err(CoordinatorError::Nats(format!(
                                "stream {}'s transaction at sequence {seq} was decided otherwise on replay \
                                 ({again:?}) than before the restart ({:?}), which answered it: the database \
                                 and the stream were restored from different moments (restore both from the \
                                 same one), or this version decides otherwise than the one that answered (run \
                                 that version until the open batch is sealed)",
                                streams::TX,
                                d.answer
                            )));
                        }
                        again
                    }
                    None => {
                        let content_ok = match p.record_cids() {
                            None => true,
                            Some(cids) => self.content_present(cids).await,
                        };
                        let now = self.batch_clock();
                        let answer = tokio::task::block_in_place(|| {
                            self.seq.try_admit(&p, now, |msg| store.applied_in(msg), content_ok)
                        })?;
                        // Stored before it is announced (see `Decision`).
                        let (timestamp, content) = match answer.status {
                            TxStatus::Accepted { .. } => (self.seq.open_timestamp(), content),
                            _ => (None, None),
                        };
                        let d = Decision { answer, timestamp, content };
                        tokio::task::block_in_place(|| store.record_decision(seq, &d))?;
                        d.answer
                    }
                }
            }
        };
        self.last_seq = seq;
        let metrics = &self.shared.metrics;
        match &answer.status {
            TxStatus::Accepted { batch, .. } => {
                metrics.tx_total.with_label_values(&["accepted"]).inc();
                metrics.note_intake(*batch);
            }
            TxStatus::Duplicate { .. } => metrics.tx_total.with_label_values(&["duplicate"]).inc(),
            TxStatus::Rejected { code, .. } => {
                metrics.tx_total.with_label_values(&["rejected"]).inc();
                metrics.tx_rejected_total.with_label_values(&[code.as_str()]).inc();
            }
        }
        // The same bytes again answer `duplicate`; what GET /tx/{id} says of
        // them stays `accepted` (stored, for a batch sealed before).
        let accepted_before = matches!(answer.status, TxStatus::Duplicate { .. })
            && tokio::task::block_in_place(|| store.answer(&answer.id))?
                .is_some_and(|a| matches!(a.status, TxStatus::Accepted { .. }));
        // Queryable before it is announced: a client that got the answer can
        // look it up at once.
        {
            let mut v = self.shared.view.write().expect("view lock");
            // (In the open batch: the acceptance is among the recent answers.)
            let keep = accepted_before
                || matches!(answer.status, TxStatus::Duplicate { .. })
                    && v.recent
                        .get(&answer.id)
                        .is_some_and(|a| matches!(a.status, TxStatus::Accepted { .. }));
            if !keep {
                v.recent.insert(answer.id.clone(), answer.clone());
            }
            if let (false, Some(d)) = (matches!(answer.status, TxStatus::Accepted { .. }), held) {
                v.open_content.remove(&d);
            }
        }
        drop(gate);
        let body = serde_json::to_vec(&answer).expect("answers serialise");
        if let Err(e) = self.shared.client.publish(subjects::answer(&answer.id), body.into()).await {
            warn!(error = %e, id = %answer.id, "could not publish an answer (it stays queryable over HTTP)");
        }
        self.pending.push(answer);
        // The seal timer runs once the decisions made before a restart are
        // all replayed: a batch sealed halfway through them would move the
        // rest to the next batch, away from the places they were announced.
        if self.seal_deadline.is_none() && self.seq.open_len() > 0 && !self.replaying() {
            self.seal_deadline = Some(tokio::time::Instant::now() + self.config.seal_timeout);
        }
        if self.seq.is_full() {
            self.seal().await?;
        } else if self.seq.open_len() == 0 {
            // Nothing open: record the answers and the position now.
            let store = self.shared.store.clone();
            tokio::task::block_in_place(|| store.record_answers(&self.pending, self.last_seq, now_ms()))?;
            self.pending.clear();
            self.shared.view.write().expect("view lock").recent.clear();
        }
        Ok(())
    }

    async fn seal(&mut self) -> Result<(), CoordinatorError> {
        self.seal_deadline = None;
        let Some(sealed) = tokio::task::block_in_place(|| self.seq.seal()) else { return Ok(()) };
        let span = info_span!("batch", batch = sealed.batch);
        self.persist_and_dispatch(sealed).instrument(span).await
    }

    /// Publishes a sealed batch's data, stores it with its job, dispatches the job.
    async fn persist_and_dispatch(&mut self, sealed: sequencer::Sealed) -> Result<(), CoordinatorError> {
        let public_inputs = sealed.witness.public_inputs();
        let data = BatchData { batch: sealed.batch, public_inputs, txs: sealed.txs.clone() };
        let bytes = serde_json::to_vec(&data).expect("serialises");
        // The sequencer has moved on: the batch must be stored. A content
        // store that fails (an IPFS node restarting, a timeout) is retried
        // for about three minutes before the coordinator gives up.
        let mut delay = Duration::from_millis(250);
        let mut attempt = 0;
        // Kept from `pin/rm` from its addition (the seal stores it).
        let shared = self.shared.clone();
        let gate = shared.content_gate.lock().await;
        let cid = loop {
            attempt += 1;
            match self.shared.content.add(bytes.clone()).await {
                Ok(cid) => break cid,
                Err(e) if attempt < 20 => {
                    warn!(error = %e, attempt, "the batch data could not be stored; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
                Err(e) => return Err(e.into()),
            }
        };
        self.shared.view.write().expect("view lock").open_content.insert(cid.digest());
        drop(gate);
        let record = sealed.record(cid, now_ms());
        let job = JobRecord::new(sealed.batch, now_ms());
        let store = self.shared.store.clone();
        tokio::task::block_in_place(|| {
            store.seal(sealed.to_store(&record, &job, &self.pending, self.last_seq))
        })?;
        self.pending.clear();
        self.trim_tx_stream(self.last_seq).await;
        {
            let mut v = self.shared.view.write().expect("view lock");
            if v.batches_sealed == sealed.batch {
                sequencer::follow(&mut v.sealed, self.seq.sealed_state(), &sealed.leaves);
            } else {
                v.sealed = self.seq.sealed_state().clone();
            }
            v.batches_sealed = sealed.batch + 1;
            v.recent.clear();
            v.open_content.clear();
        }
        let m = &self.shared.metrics;
        m.batches_sealed_total.inc();
        m.batch_transactions.with_label_values::<&str>(&[]).observe(record.tx_ids.len() as f64);
        info!(txs = record.tx_ids.len(), cid = %cid, new_root = %public_inputs.new_root, "batch sealed");
        self.dispatch(&record, &job, Some(sealed.witness)).await?;
        self.refresh_job_metrics()
    }

    /// Publishes a job, or leaves it to the tick to publish.
    /// Fails only when the store fails (a job whose witness is gone cannot
    /// be published, ever: stopping says so, where retrying would stall
    /// every later batch in silence).
    async fn dispatch(
        &mut self,
        record: &BatchRecord,
        job: &JobRecord,
        witness: Option<BatchWitness>,
    ) -> Result<(), CoordinatorError> {
        match self.publish_job(record, job, witness).await {
            Ok(()) => Ok(()),
            Err(e @ CoordinatorError::Store(_)) => Err(e),
            Err(e) => {
                warn!(batch = record.batch, error = %e, "job not published yet; retrying");
                self.unpublished.push_back(record.batch);
                Ok(())
            }
        }
    }

    /// Publishes a job's current attempt (once: the stream drops the same
    /// attempt again within its window) and follows its message. The
    /// witness is read from the store unless the caller holds it (a batch
    /// just sealed).
    async fn publish_job(
        &mut self,
        record: &BatchRecord,
        job: &JobRecord,
        witness: Option<BatchWitness>,
    ) -> Result<(), CoordinatorError> {
        let witness = match witness {
            Some(w) => w,
            None => {
                let store = self.shared.store.clone();
                tokio::task::block_in_place(|| store.witness(record.batch))?.ok_or_else(|| {
                    StoreError::Damaged {
                        what: format!("witness of batch {}", record.batch),
                        why: "missing while its job is not proven",
                    }
                })?
            }
        };
        let spec = JobSpec {
            batch: record.batch,
            attempt: job.attempt,
            shape: self.shared.manifest.shape,
            proving_key_sha256: self.shared.manifest.proving_key_sha256.clone(),
            exclude: job.excluded.clone(),
            witness,
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("job-{}-{}", record.batch, job.attempt).as_str());
        let body = serde_json::to_vec(&spec).expect("serialises");
        let ack = self
            .shared
            .js
            .publish_with_headers(subjects::JOBS, headers, body.into())
            .await
            .map_err(|e| CoordinatorError::Nats(format!("publishing job {}: {e}", record.batch)))?
            .await
            .map_err(|e| CoordinatorError::Nats(format!("publishing job {}: {e}", record.batch)))?;
        // A duplicate's ack names the first message's sequence.
        let followed =
            QueuedMessage { attempt: job.attempt, seq: ack.sequence, gone_since: None, stranded_since: None };
        self.in_queue.insert(record.batch, followed);
        Ok(())
    }

    async fn on_result(&mut self, m: jetstream::Message) -> Result<(), CoordinatorError> {
        let r = match serde_json::from_slice::<JobResult>(&m.payload) {
            Ok(r) if r.worker.is_empty() || r.worker.len() > medrollup_wire::natsconf::MAX_WORKER_NAME => {
                warn!(subject = %m.subject, "a result whose worker name is empty or too long; dropped");
                self.shared.metrics.results_dropped_total.inc();
                m.ack().await.map_err(nats_err!("ack"))?;
                return Ok(());
            }
            // A worker returns results on its own subject (which a farm that
            // gives each hospital its own NATS user lets only it publish to).
            Ok(r) if m.subject.as_str() != subjects::result(&r.worker) => {
                warn!(subject = %m.subject, worker = %r.worker, "a result in another worker's name; dropped");
                self.shared.metrics.results_dropped_total.inc();
                m.ack().await.map_err(nats_err!("ack"))?;
                return Ok(());
            }
            Ok(r) => r,
            Err(e) => {
                warn!(subject = %m.subject, error = %e, "a result that does not decode; dropped");
                self.shared.metrics.results_dropped_total.inc();
                m.ack().await.map_err(nats_err!("ack"))?;
                return Ok(());
            }
        };
        self.handle_result(r).await?;
        m.ack().await.map_err(nats_err!("ack"))
    }

    async fn handle_result(&mut self, r: JobResult) -> Result<(), CoordinatorError> {
        let span = info_span!("job", batch = r.batch, attempt = r.attempt, worker = %r.worker);
        self.judge_result(r).instrument(span).await
    }

    /// Verifies a result and moves its job on.
    async fn judge_result(&mut self, r: JobResult) -> Result<(), CoordinatorError> {
        let store = self.shared.store.clone();
        let Some(mut batch) = store.batch(r.batch)? else {
            warn!("a result for a batch that does not exist; dropped");
            return Ok(());
        };
        if batch.proof.is_some() {
            return Ok(()); // already proven: a late or duplicate result
        }
        let Some(mut job) = store.job(r.batch)? else { return Ok(()) };
        let mut worker = store.worker(&r.worker)?;
        let metrics = &self.shared.metrics;
        let failure = match &r.outcome {
            JobOutcome::Proved { proof, backend, stages } => {
                let verified = match medrollup_wire::decode_proof(proof) {
                    Ok(p) => {
                        tokio::task::block_in_place(|| keys::verify(&self.pvk, &batch.public_inputs, &p))
                            .then_some(p)
                            .ok_or_else(|| "it does not verify against the batch's public inputs".to_string())
                    }
                    Err(e) => Err(e.to_string()),
                };
                if let Ok(p) = verified {
                    metrics.proofs_verified_total.with_label_values(&["accepted"]).inc();
                    worker.proofs_accepted += 1;
                    batch.proof = Some(ProofRecord {
                        // Its canonical encoding, whatever was sent.
                        proof: medrollup_wire::encode_proof(&p),
                        worker: r.worker.clone(),
                        backend: backend.clone(),
                        stages: stages.clone(),
                        verified_at_ms: now_ms(),
                    });
                    job.state = JobState::Proven;
                    store.prove(&batch, &job, &r.worker, &worker)?;
                    metrics.batches_proven_total.inc();
                    metrics
                        .seal_to_proof_seconds
                        .with_label_values::<&str>(&[])
                        .observe(now_ms().saturating_sub(batch.sealed_at_ms) as f64 / 1000.0);
                    for (stage, v) in [
                        ("synthesis", stages.synthesis),
                        ("ntt", stages.ntt),
                        ("msm", stages.msm),
                        ("total", stages.total),
                    ] {
                        metrics
                            .prover_stage_seconds
                            .with_label_values(&[stage, backend_label(backend)])
                            .observe(v);
                    }
                    info!("proof verified");
                    self.refresh_job_metrics()?;
                    return self.advance_sink().await;
                }
                metrics.proofs_verified_total.with_label_values(&["rejected"]).inc();
                worker.proofs_rejected += 1;
                if !job.excluded.contains(&r.worker) {
                    job.excluded.push(r.worker.clone());
                }
                let why = verified.err().unwrap_or_default();
                warn!(reason = %why, "proof rejected");
                format!("attempt {}: the proof from {} is refused: {why}", r.attempt, r.worker)
            }
            JobOutcome::Failed { reason } => {
                worker.jobs_failed += 1;
                // Its failure may be its own (memory, a key it cannot load):
                // the next attempt goes to another worker while one is there
                // (else it tries again itself, rather than handing the job
                // back until its deliveries run out).
                let another = {
                    let w = self.shared.workers.lock().expect("workers lock");
                    w.iter().any(|(name, h)| {
                        *name != r.worker
                            && !job.excluded.contains(name)
                            && h.at.elapsed() < self.shared.worker_timeout
                    })
                };
                if another && !job.excluded.contains(&r.worker) {
                    job.excluded.push(r.worker.clone());
                }
                warn!(%reason, "worker failed the job");
                format!("attempt {}: {} failed: {reason}", r.attempt, r.worker)
            }
        };
        job.note_failure(&failure);
        metrics.job_attempts_failed_total.inc();
        // Only a result for the current attempt moves the job on.
        let requeue = r.attempt == job.attempt && job.state == JobState::Queued;
        if requeue {
            self.fail_attempt(&mut job, &failure);
        }
        store.put_job(&job, Some((&r.worker, &worker)))?;
        if requeue && job.state == JobState::Queued {
            self.dispatch(&batch, &job, None).await?;
        }
        self.refresh_job_metrics()
    }

    /// Moves a queued job past its failed current attempt (`failure`): on
    /// to the next attempt, or parked dead after its round's last.
    fn fail_attempt(&mut self, job: &mut JobRecord, failure: &str) {
        if job.round_attempts() >= self.config.max_attempts {
            job.park(format!("{} attempts failed; last: {failure}", job.round_attempts()), now_ms());
            self.parked.push(job.batch);
            warn!(batch = job.batch, retry_in = ?self.config.dead_job_retry, "job is dead");
        } else {
            job.attempt += 1;
            job.queued_at_ms = now_ms();
        }
    }

    /// The watchdog: a queued job whose message has been gone from the
    /// queue for [`Config::job_lost_after`] with no result for its attempt
    /// was taken and acked by a worker that never answered (workers publish
    /// their result before they ack). Nothing else would bring it back, and
    /// batches land in order: its attempt counts as failed and the next one
    /// is queued. A result that was only late still counts if it is a
    /// valid proof.
    async fn watch_queue(&mut self) -> Result<(), CoordinatorError> {
        let every =
            (self.config.job_lost_after / 2).clamp(Duration::from_millis(500), Duration::from_secs(5));
        if self.in_queue.is_empty() || self.last_watch.elapsed() < every {
            return Ok(());
        }
        self.last_watch = Instant::now();
        let store = self.shared.store.clone();
        let mut lost = Vec::new();
        let mut present = Vec::new();
        let followed: Vec<(u64, QueuedMessage)> = self.in_queue.iter().map(|(n, q)| (*n, *q)).collect();
        for (n, q) in followed {
            let current =
                store.job(n)?.is_some_and(|j| j.state == JobState::Queued && j.attempt == q.attempt);
            if !current {
                self.in_queue.remove(&n);
                continue;
            }
            let gone_since = match self.jobs.get_raw_message(q.seq).await {
                Ok(_) => {
                    present.push(n);
                    None
                }
                Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => {
                    Some(q.gone_since.unwrap_or_else(Instant::now))
                }
                Err(e) => {
                    // NATS in trouble: the next pass looks again.
                    warn!(batch = n, error = %e, "could not look for a job in the queue");
                    break;
                }
            };
            if gone_since.is_some_and(|t| t.elapsed() >= self.config.job_lost_after) {
                lost.push(n);
            }
            if let Some(q) = self.in_queue.get_mut(&n) {
                q.gone_since = gone_since;
            }
        }
        self.strand_check(&present).await?;
        for &n in &lost {
            self.in_queue.remove(&n);
            let (Some(batch), Some(mut job)) = (store.batch(n)?, store.job(n)?) else { continue };
            let failure = format!(
                "attempt {}: the job left the queue with no result (acked or terminated by a worker that did not \
                 answer, or its answer was dropped)",
                job.attempt
            );
            warn!(
                batch = n,
                attempt = job.attempt,
                "a job left the queue with no result; its next attempt is queued"
            );
            job.note_failure(&failure);
            self.fail_attempt(&mut job, &failure);
            store.put_job(&job, None)?;
            self.shared.metrics.jobs_lost_total.inc();
            if job.state == JobState::Queued {
                self.dispatch(&batch, &job, None).await?;
            }
        }
        if !lost.is_empty() {
            self.refresh_job_metrics()?;
        }
        Ok(())
    }

    /// Jobs in the queue that no worker will be given again: their
    /// deliveries ran out while the coordinator was not there to hear the
    /// server say so (its advisory is not stored). The consumer then has
    /// nothing pending and nothing awaiting an ack, yet messages are in the
    /// queue; found so twice, [`Config::job_lost_after`] apart, they are
    /// parked dead as the advisory would have.
    async fn strand_check(&mut self, present: &[u64]) -> Result<(), CoordinatorError> {
        if present.is_empty() {
            return Ok(());
        }
        let idle = match self.jobs.consumer_info(streams::JOBS_CONSUMER).await {
            Ok(info) => info.num_pending == 0 && info.num_ack_pending == 0,
            Err(e) => {
                warn!(error = %e, "could not read the job queue's consumer");
                return Ok(());
            }
        };
        let mut stranded = Vec::new();
        for n in present {
            let Some(q) = self.in_queue.get_mut(n) else { continue };
            q.stranded_since = if idle { Some(q.stranded_since.unwrap_or_else(Instant::now)) } else { None };
            if q.stranded_since.is_some_and(|t| t.elapsed() >= self.config.job_lost_after) {
                stranded.push(q.seq);
            }
        }
        let jobs = self.jobs.clone();
        for seq in stranded {
            let reason =
                "its deliveries ran out without a result (the workers that took it died or went silent)";
            self.park_undeliverable(&jobs, seq, reason.into()).await?;
        }
        Ok(())
    }

    async fn on_max_deliveries(
        &mut self,
        jobs: &stream::Stream,
        payload: &[u8],
    ) -> Result<bool, CoordinatorError> {
        let Ok(adv) = serde_json::from_slice::<serde_json::Value>(payload) else { return Ok(true) };
        let (Some(seq), deliveries) = (adv["stream_seq"].as_u64(), adv["deliveries"].as_u64().unwrap_or(0))
        else {
            return Ok(true);
        };
        let reason = format!(
            "delivered {deliveries} times without a result: the workers that took it died or went silent"
        );
        self.park_undeliverable(jobs, seq, reason).await
    }

    /// Parks dead the job whose message at `seq` no worker will be given
    /// again (if that message is its current attempt's), and removes the
    /// message from the queue. False when NATS could not say what the
    /// message is (nothing done: ask again later).
    async fn park_undeliverable(
        &mut self,
        jobs: &stream::Stream,
        seq: u64,
        reason: String,
    ) -> Result<bool, CoordinatorError> {
        let raw = match jobs.get_raw_message(seq).await {
            Ok(raw) => raw,
            // Gone already: removed after an earlier advisory, or proven.
            Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => return Ok(true),
            Err(e) => {
                warn!(seq, error = %e, "could not read a job that ran out of deliveries; asking again later");
                return Ok(false);
            }
        };
        let Ok(spec) = serde_json::from_slice::<JobSpec>(&raw.payload) else { return Ok(true) };
        let store = self.shared.store.clone();
        if let Some(mut job) = store.job(spec.batch)?
            && job.state == JobState::Queued
            && job.attempt == spec.attempt
        {
            warn!(batch = spec.batch, %reason, retry_in = ?self.config.dead_job_retry, "job is dead");
            job.note_failure(&reason);
            job.park(reason, now_ms());
            store.put_job(&job, None)?;
            self.parked.push(job.batch);
            self.refresh_job_metrics()?;
        }
        if let Err(e) = jobs.delete_message(seq).await {
            warn!(error = %e, "could not remove a dead job from the queue");
        }
        Ok(true)
    }

    async fn on_tick(&mut self) -> Result<(), CoordinatorError> {
        self.revive_parked()?;
        self.forget_old_refusals()?;
        self.watch_queue().await?;
        for _ in 0..self.unpublished.len() {
            let Some(n) = self.unpublished.pop_front() else { break };
            let store = self.shared.store.clone();
            let (Some(batch), Some(job)) = (store.batch(n)?, store.job(n)?) else { continue };
            if job.state != JobState::Queued {
                continue;
            }
            match self.publish_job(&batch, &job, None).await {
                Ok(()) => {
                    self.publish_failures.remove(&n);
                }
                Err(e @ CoordinatorError::Store(_)) => return Err(e),
                Err(e) => {
                    // Said at the 1st, 2nd, 4th, 8th... try, then hourly: a job that can
                    // never be published (too large for the bus, say) stalls
                    // every later batch's landing, and must not be silent.
                    let tries = self.publish_failures.entry(n).or_insert(0);
                    *tries += 1;
                    if tries.is_power_of_two() || tries.is_multiple_of(3600) {
                        warn!(batch = n, tries = *tries, error = %e, "a job still cannot be published; retrying");
                    }
                    self.unpublished.push_back(n);
                }
            }
        }
        let alive = {
            let mut w = self.shared.workers.lock().expect("workers lock");
            prune_workers(&mut w, Instant::now(), self.shared.worker_timeout)
        };
        self.shared.metrics.workers.set(alive as i64);
        self.advance_sink().await
    }

    /// Removes from the transaction stream every message up to `applied`,
    /// the sequence stored as sealed or answered: a start reads from past
    /// it, and the stream would otherwise keep every submission ever made,
    /// junk included. A failure costs only the space until the next seal.
    async fn trim_tx_stream(&mut self, applied: u64) {
        if applied < self.tx_kept_from {
            return;
        }
        match self.tx.purge().sequence(applied + 1).await {
            Ok(r) => {
                self.tx_kept_from = applied + 1;
                debug!(purged = r.purged, kept_from = applied + 1, "transaction stream trimmed");
            }
            Err(e) => {
                warn!(error = %e, "the transaction stream could not be trimmed; the next seal tries again")
            }
        }
    }

    /// Forgets the refusals older than [`Config::refusals_kept`]: once a
    /// minute, or at every tick while a backlog lasts, a bounded number at
    /// a time (the loop waits on it).
    fn forget_old_refusals(&mut self) -> Result<(), CoordinatorError> {
        const AT_ONCE: usize = 2_000;
        if self.last_forget.is_some_and(|t| t.elapsed() < Duration::from_secs(60)) {
            return Ok(());
        }
        let before = now_ms().saturating_sub(self.config.refusals_kept.as_millis() as u64);
        let store = self.shared.store.clone();
        let n = tokio::task::block_in_place(|| store.forget_refusals(before, AT_ONCE))?;
        // A full step may have left more: the next tick goes on.
        self.last_forget = (n < AT_ONCE).then(Instant::now);
        if n > 0 {
            info!(refusals = n, kept_for = ?self.config.refusals_kept, "old refusals forgotten");
        }
        Ok(())
    }

    /// Queues again the dead jobs that have waited long enough (see
    /// [`Config::dead_job_retry`]); they go out with the unpublished ones.
    fn revive_parked(&mut self) -> Result<(), CoordinatorError> {
        if self.parked.is_empty() {
            return Ok(());
        }
        let (now, wait) = (now_ms(), self.config.dead_job_retry.as_millis() as u64);
        let store = self.shared.store.clone();
        let mut revived = false;
        let mut still = Vec::new();
        for n in std::mem::take(&mut self.parked) {
            let Some(mut job) = store.job(n)? else { continue };
            if !matches!(job.state, JobState::Dead { .. }) {
                continue;
            }
            if now.saturating_sub(job.parked_at_ms) < wait {
                still.push(n);
                continue;
            }
            job.revive(now);
            store.put_job(&job, None)?;
            info!(batch = n, attempt = job.attempt, "dead job queued again");
            self.shared.metrics.jobs_revived_total.inc();
            self.unpublished.push_back(n);
            revived = true;
        }
        self.parked = still;
        if revived {
            self.refresh_job_metrics()?;
        }
        Ok(())
    }

    /// Hands proven batches to the sink, in order, from the cursor on.
    async fn advance_sink(&mut self) -> Result<(), CoordinatorError> {
        if let Some(l1) = &self.l1 {
            // The submitter follows the chain and the database itself.
            l1.poke();
            return Ok(());
        }
        let store = self.shared.store.clone();
        loop {
            let n = store.next_submit()?;
            let Some(mut batch) = store.batch(n)? else { return Ok(()) };
            if batch.proof.is_none() {
                return Ok(());
            }
            if let Err(e) = self.sink.submit(&batch).await {
                warn!(batch = n, error = %e, "sink refused the batch; retrying");
                return Ok(());
            }
            batch.submitted = true;
            store.mark_submitted(&batch)?;
            self.shared.metrics.note_landed(n);
            self.shared.metrics.refresh_awaiting_l1(&store)?;
            info!(batch = n, "batch handed to L1");
        }
    }

    fn refresh_job_metrics(&self) -> Result<(), CoordinatorError> {
        let c = self.shared.store.job_counts()?;
        let m = &self.shared.metrics;
        let (queued, proven, dead) = (c.queued as i64, c.proven as i64, c.dead as i64);
        m.jobs.with_label_values(&["queued"]).set(queued);
        m.jobs.with_label_values(&["proven"]).set(proven);
        m.jobs.with_label_values(&["dead"]).set(dead);
        // A dead job waits for a proof too (queued again after its wait):
        // a farm whose every attempt fails shows a queue, not an empty one.
        m.queue_depth.set(queued + dead);
        m.refresh_awaiting_l1(&self.shared.store)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload;
    use medrollup_circuits::sample;
    use medrollup_circuits::state::{Leaf, TreeId};

    const SHAPE: CircuitShape = CircuitShape { batch_size: 4, levels: 5 };

    /// Seals `seq`'s open batch into `store` as the coordinator does.
    fn seal_into(store: &Store, seq: &mut Sequencer) {
        let Some(sealed) = seq.seal() else { return };
        let n = sealed.batch;
        let record = sealed.record(Cid::of(format!("batch {n}").as_bytes()), 0);
        store.seal(sealed.to_store(&record, &JobRecord::new(n, 0), &[], n + 1)).unwrap();
    }

    /// A store holding `clinics` clinics' load sealed in batches (from a
    /// start on an empty store, as the coordinator's), and the sequencer.
    fn sealed_load(clinics: usize) -> (tempfile::TempDir, Store, Sequencer) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb")).unwrap();
        let mut seq = restore_state(&store, &sample::genesis(5), SHAPE).unwrap();
        let load = workload::generate(clinics, sample::NOW, "restore");
        for step in load.admin.iter().chain(load.clinics.iter().flatten()) {
            let p = sequencer::parse(&serde_json::to_vec(&step.tx).unwrap()).unwrap();
            seq.admit(&p, sample::NOW, |_| None, true);
            if seq.is_full() {
                seal_into(&store, &mut seq);
            }
        }
        seal_into(&store, &mut seq);
        (dir, store, seq)
    }

    fn same_state(a: &Sequencer, b: &Sequencer) {
        assert_eq!(a.next_batch(), b.next_batch());
        let (a, b) = (a.sealed_state(), b.sealed_state());
        assert_eq!(a.root(), b.root());
        assert_eq!(a.audit_count(), b.audit_count());
        for tree in TreeId::ALL {
            for i in [0, 1, 100, 200, 300, 400, 401, 1023] {
                assert_eq!(a.path(tree, i), b.path(tree, i), "{tree:?} {i}");
            }
        }
    }

    #[test]
    fn a_restart_rebuilds_the_state_from_its_stored_leaves_as_a_replay_would() {
        let (_dir, store, seq) = sealed_load(3);
        let kept = store.kept_leaves().unwrap().expect("kept from the first start on");
        assert_eq!(kept.through, 6, "24 transactions (21 accepted), 4 a batch");
        assert_eq!(seq.next_batch(), 6);
        assert_eq!(store.batch_with_cid(&Cid::of(b"batch 4")).unwrap(), Some(4));
        assert_eq!(store.job_counts().unwrap(), crate::store::JobCounts { queued: 6, proven: 0, dead: 0 });
        same_state(&restore_state(&store, &sample::genesis(5), SHAPE).unwrap(), &seq);
        // A database of a version that kept no leaves: replayed, then kept.
        store.forget_kept_leaves().unwrap();
        assert!(store.kept_leaves().unwrap().is_none());
        same_state(&restore_state(&store, &sample::genesis(5), SHAPE).unwrap(), &seq);
        let kept = store.kept_leaves().unwrap().expect("kept after the replay");
        assert_eq!(kept.through, 6);
        same_state(&restore_state(&store, &sample::genesis(5), SHAPE).unwrap(), &seq);
    }

    #[test]
    fn stored_leaves_that_do_not_give_the_sealed_root_are_refused_and_the_batches_replayed() {
        let (_dir, store, seq) = sealed_load(2);
        let st = seq.sealed_state();
        let mut leaves: Vec<_> = st.leaves().map(|(t, i, l)| (t, i, *l)).collect();
        leaves.sort_by_key(|(t, i, _)| (*t as u8, *i));
        let n = seq.next_batch();
        // One field of one leaf changed.
        let mut altered = leaves.clone();
        altered[3].2[4] += medrollup_circuits::Fr::from(1u64);
        let genesis = sample::genesis(5);
        let e = Sequencer::resume(&genesis, SHAPE, n, leaves.clone(), st.audit_count(), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("come with no batches' public inputs"), "{e}");
        let ends = (
            store.batch(0).unwrap().unwrap().public_inputs,
            store.batch(n - 1).unwrap().unwrap().public_inputs,
        );
        let resume = |leaves: &[(TreeId, u64, Leaf)], audit_count, g: &Genesis| {
            Sequencer::resume(g, SHAPE, n, leaves.to_vec(), audit_count, Some((&ends.0, &ends.1)))
                .map(|s| s.sealed_state().root())
        };
        let e = resume(&altered, st.audit_count(), &genesis).unwrap_err().to_string();
        assert!(e.contains("do not give the root the last batch sealed"), "{e}");
        assert!(resume(&leaves, st.audit_count() + 1, &genesis).is_err(), "a wrong audit count");
        let mut other = sample::genesis(5);
        other.hospitals.pop();
        let e = resume(&leaves, st.audit_count(), &other).unwrap_err().to_string();
        assert!(e.contains("does not start from the genesis state"), "{e}");
        assert_eq!(resume(&leaves, st.audit_count(), &genesis).unwrap(), st.root());

        // At a start, altered leaves are not used: the batches are replayed
        // and the leaves kept anew.
        store.keep_leaves(n, st.audit_count(), altered.iter().map(|(t, i, l)| (*t, *i, l))).unwrap();
        same_state(&restore_state(&store, &genesis, SHAPE).unwrap(), &seq);
        let mut again: Vec<_> = store.kept_leaves().unwrap().unwrap().leaves;
        again.sort_by_key(|(t, i, _)| (*t as u8, *i));
        assert_eq!(again, leaves);
        // A leaf that cannot be read at all: set aside the same way.
        store.put_raw_leaf((1, 7), &[0xff; 224]).unwrap();
        assert!(store.kept_leaves().is_err());
        same_state(&restore_state(&store, &genesis, SHAPE).unwrap(), &seq);
        assert_eq!(store.kept_leaves().unwrap().unwrap().leaves.len(), leaves.len());
        // Another genesis does not replay either.
        let e = restore_state(&store, &other, SHAPE).unwrap_err().to_string();
        assert!(e.contains("stored batch 0 does not replay"), "{e}");
    }

    #[test]
    fn leaves_out_of_step_with_the_batches_are_not_used_and_no_longer_kept() {
        let (_dir, store, seq) = sealed_load(2);
        let st = seq.sealed_state();
        // Leaves said to include one batch more than there is: replayed.
        store.keep_leaves(seq.next_batch() + 1, st.audit_count(), st.leaves()).unwrap();
        let mut again = restore_state(&store, &sample::genesis(5), SHAPE).unwrap();
        same_state(&again, &seq);
        assert_eq!(store.kept_leaves().unwrap().unwrap().through, seq.next_batch(), "kept anew");
        // A batch sealed onto leaves of another point stops the keeping.
        store.keep_leaves(seq.next_batch() - 1, st.audit_count(), st.leaves()).unwrap();
        let load = workload::generate(3, sample::NOW, "restore");
        let p = sequencer::parse(&serde_json::to_vec(&load.admin[2].tx).unwrap()).unwrap();
        assert!(matches!(again.admit(&p, sample::NOW, |_| None, true).status, TxStatus::Accepted { .. }));
        seal_into(&store, &mut again);
        assert!(store.kept_leaves().unwrap().is_none());
        same_state(&restore_state(&store, &sample::genesis(5), SHAPE).unwrap(), &again);
        assert_eq!(store.kept_leaves().unwrap().unwrap().through, again.next_batch());
    }

    #[test]
    fn batches_are_stamped_within_reach_of_l1s_clock() {
        let t = 1_800_000_000;
        assert_eq!(batch_stamp(t, None), t, "no L1: this machine's clock");
        assert_eq!(batch_stamp(t, Some((t - 5, t - 2))), t, "L1 a little behind");
        assert_eq!(batch_stamp(t, Some((t + 172_800, t + 172_801))), t + 172_800, "L1 ahead: not before it");
        // This machine a day ahead: no further than the bound past L1's clock.
        let ahead = t + 86_400;
        assert_eq!(batch_stamp(ahead, Some((t - 10, t))), t + CLOCK_AHEAD_MAX.as_secs());
    }

    fn beat(name: &str) -> WorkerInfo {
        WorkerInfo {
            name: name.into(),
            backend: "cpu".into(),
            devices: vec![],
            threads: 1,
            memory_bytes: 0,
            jobs_done: 0,
            jobs_failed: 0,
            busy: false,
        }
    }

    #[test]
    fn heartbeats_count_on_their_own_subject_and_within_their_size() {
        let json = |info: &WorkerInfo| serde_json::to_vec(info).unwrap();
        let a = beat("hospital-a");
        let own = subjects::heartbeat("hospital-a");
        assert_eq!(read_heartbeat(&own, &json(&a)).map(|i| i.name), Some("hospital-a".into()));
        assert!(read_heartbeat(&subjects::heartbeat("hospital-b"), &json(&a)).is_none(), "another's subject");
        assert!(read_heartbeat(&own, b"not json").is_none());
        // Padded past the bound with device lines: ignored, however valid.
        let mut big = beat("hospital-a");
        big.devices = vec!["d".repeat(1000); MAX_HEARTBEAT_BYTES / 1000 + 1];
        assert!(json(&big).len() > MAX_HEARTBEAT_BYTES);
        assert!(read_heartbeat(&own, &json(&big)).is_none());
        big.devices.truncate(4);
        assert!(read_heartbeat(&own, &json(&big)).is_some());
    }

    #[test]
    fn workers_heard_are_bounded_in_number_and_forgotten_after_a_day() {
        let start = Instant::now();
        let mut w = HashMap::new();
        for i in 0..MAX_WORKERS_HEARD {
            note_heartbeat(&mut w, beat(&format!("made-up-{i}")), start + Duration::from_millis(i as u64));
        }
        let later = start + Duration::from_secs(60);
        // A real worker beating again is kept; a new name pushes out the
        // one heard from longest ago, and only it.
        note_heartbeat(&mut w, beat("made-up-5"), later);
        note_heartbeat(&mut w, beat("hospital-a"), later);
        assert_eq!(w.len(), MAX_WORKERS_HEARD);
        assert!(w.contains_key("hospital-a") && w.contains_key("made-up-5") && w.contains_key("made-up-1"));
        assert!(!w.contains_key("made-up-0"));
        // Alive: the two heard at `later`, within a 30 s timeout.
        let timeout = Duration::from_secs(30);
        assert_eq!(prune_workers(&mut w, later + Duration::from_secs(1), timeout), 2);
        assert_eq!(w.len(), MAX_WORKERS_HEARD, "lost workers are shown until forgotten");
        // A day after the flood, only the two beaten since remain.
        let next_day = start + FORGET_WORKER_AFTER + Duration::from_secs(30);
        assert_eq!(prune_workers(&mut w, next_day, timeout), 0);
        let mut left: Vec<_> = w.keys().cloned().collect();
        left.sort();
        assert_eq!(left, ["hospital-a", "made-up-5"]);
    }
}
