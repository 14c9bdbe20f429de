//! The coordinator's durable state in an embedded database (redb): sealed
//! batches with their witnesses and proofs, the job table, every answer given,
//! and the transaction-stream sequence applied up to. A batch, its job, its
//! answers and the new stream position are written in one transaction, so a
//! restart resumes exactly where the last sealed batch left off.

use crate::cid::Cid;
use medrollup_circuits::batch::{BatchWitness, PublicInputs};
use medrollup_circuits::field::{fr_from_le32, fr_to_le32};
use medrollup_circuits::state::{LEAF_WIDTH, Leaf, TreeId};
use medrollup_circuits::tx::SignedTx;
use medrollup_wire::{StageSeconds, TxAnswer};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::path::Path;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const BATCHES: TableDefinition<u64, &[u8]> = TableDefinition::new("batches");
const JOBS: TableDefinition<u64, &[u8]> = TableDefinition::new("jobs");
const ANSWERS: TableDefinition<&str, &[u8]> = TableDefinition::new("answers");
/// Poseidon message of every applied transaction (hex) → its batch: duplicates.
const APPLIED: TableDefinition<&str, u64> = TableDefinition::new("applied");
const WORKERS: TableDefinition<&str, &[u8]> = TableDefinition::new("workers");
/// Batch index → how it landed on L1.
const LANDINGS: TableDefinition<u64, &[u8]> = TableDefinition::new("landings");
/// Account → its published public keys (JSON), checked against its leaf.
const DIRECTORY: TableDefinition<u64, &[u8]> = TableDefinition::new("directory");
/// Decisions announced before their batch was sealed, by stream sequence.
const DECISIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("decisions");
/// Refused transactions by when their refusal was stored (Unix ms) and id,
/// and the other way round: refusals are forgotten after a while (anyone
/// can have junk refused; only acceptances must stay).
const REFUSALS: TableDefinition<(u64, &str), ()> = TableDefinition::new("refusals");
const REFUSED_AT: TableDefinition<&str, u64> = TableDefinition::new("refused_at");
/// The sealed state's non-empty leaves, (tree, index) → fields (32 bytes
/// each, little-endian): a restart rebuilds the state from them instead of
/// replaying every batch since genesis.
const LEAVES: TableDefinition<(u8, u64), &[u8]> = TableDefinition::new("leaves");
/// A batch's witness (what workers prove), kept until its proof is stored:
/// nothing needs it after that, and it is most of a batch's bytes.
const WITNESSES: TableDefinition<u64, &[u8]> = TableDefinition::new("witnesses");
/// Jobs not yet proven (queued or dead): what the job metrics, `/farm` and a
/// restart look at, however many batches were proven before.
const OPEN_JOBS: TableDefinition<u64, ()> = TableDefinition::new("open_jobs");
/// A batch's data CID → the batch.
const BATCH_CIDS: TableDefinition<&str, u64> = TableDefinition::new("batch_cids");

const APPLIED_SEQ: &str = "applied_seq";
const NEXT_SUBMIT: &str = "next_submit";
/// Set once the refusals stored before they were dated are dated.
const REFUSALS_DATED: &str = "refusals_dated";
/// Set once the duplicates stored before duplicates were dated are dated.
const DUPLICATES_DATED: &str = "duplicates_dated";
/// Set while [`LEAVES`] holds the state: then `LEAVES_THROUGH` is how many
/// batches it includes, and `AUDIT_COUNT` its audit entries.
const LEAVES_KEPT: &str = "leaves_kept";
const LEAVES_THROUGH: &str = "leaves_through";
const AUDIT_COUNT: &str = "audit_count";
/// Batch records rewritten per transaction when their witnesses are moved.
const SPLIT_PAGE: usize = 128;
/// Set once the witnesses an older version stored in the batch records are
/// moved to [`WITNESSES`] (those of proven batches dropped); until then,
/// `WITNESSES_SPLIT_FROM` is the first batch not yet moved.
const WITNESSES_SPLIT: &str = "witnesses_split";
const WITNESSES_SPLIT_FROM: &str = "witnesses_split_from";
/// Jobs queued and dead, kept with every job written (proven: the rest), so
/// that the job metrics read two numbers at every job event; set up from
/// the open jobs once (`JOB_COUNTS_KEPT`).
const JOBS_QUEUED: &str = "jobs_queued";
const JOBS_DEAD: &str = "jobs_dead";
const JOB_COUNTS_KEPT: &str = "job_counts_kept";
/// Set once [`OPEN_JOBS`] and [`BATCH_CIDS`] index what an older version stored.
const INDEXED: &str = "indexed_jobs_and_cids";

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database.
    #[error("database: {0}")]
    Db(#[from] redb::Error),
    /// A record that does not decode (a corrupted or foreign database).
    #[error("stored record {what} does not decode: {source}")]
    Decode {
        /// Which record.
        what: String,
        /// Why.
        source: serde_json::Error,
    },
    /// A stored record that is damaged or missing where an index names it.
    #[error("stored {what} is damaged: {why}")]
    Damaged {
        /// Which record.
        what: String,
        /// What is wrong.
        why: &'static str,
    },
}

macro_rules! db {
    ($e:expr) => {
        $e.map_err(|e| StoreError::Db(e.into()))
    };
}

/// A proof accepted for a batch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProofRecord {
    /// arkworks compressed, hex.
    pub proof: String,
    /// Who proved it.
    pub worker: String,
    /// With which backend.
    pub backend: String,
    /// Stage times the worker reported.
    pub stages: StageSeconds,
    /// When it was verified (Unix ms).
    pub verified_at_ms: u64,
}

/// How a batch landed on L1 (the latest landing, if a reorg made it land twice).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Landing {
    /// Transaction hash.
    pub tx_hash: String,
    /// Block number.
    pub block: u64,
    /// Gas used.
    pub gas_used: u64,
    /// Effective gas price (wei, decimal).
    pub gas_price_wei: String,
    /// From the first send to enough confirmations.
    pub latency_ms: u64,
    /// Versions sent (fee bumps and resends included).
    pub sends: u32,
    /// When (Unix ms).
    pub landed_at_ms: u64,
}

/// A sealed batch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchRecord {
    /// Index (0, 1, ...).
    pub batch: u64,
    /// Its public inputs, computed by the coordinator.
    pub public_inputs: PublicInputs,
    /// CID of its published data ([`medrollup_wire::BatchData`]).
    pub cid: Cid,
    /// Ids of its submitted transactions, in slot order (padding has none).
    pub tx_ids: Vec<String>,
    /// Its submitted transactions, in slot order: what a replay applies.
    /// (The witness is stored apart, until the batch is proven.)
    #[serde(default)]
    pub txs: Vec<SignedTx>,
    /// When it was sealed (Unix ms).
    pub sealed_at_ms: u64,
    /// The verified proof, once there is one.
    pub proof: Option<ProofRecord>,
    /// Whether it went to the L1 sink.
    pub submitted: bool,
}

/// Where a job stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum JobState {
    /// On the work queue.
    Queued,
    /// A verified proof came back.
    Proven,
    /// Given up after too many failed attempts.
    Dead {
        /// Why.
        reason: String,
    },
}

/// The proving job of a batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Batch index.
    pub batch: u64,
    /// Current attempt (1-based).
    pub attempt: u32,
    /// State.
    #[serde(flatten)]
    pub state: JobState,
    /// Workers whose proof for it was rejected, or who failed it, in this
    /// round of attempts.
    pub excluded: Vec<String>,
    /// What went wrong in earlier attempts.
    pub failures: Vec<String>,
    /// When the current attempt was queued (Unix ms).
    pub queued_at_ms: u64,
    /// The first attempt of the current round (a dead job queued again
    /// starts a new round of attempts).
    #[serde(default = "first_attempt")]
    pub round_start: u32,
    /// When it was parked dead (Unix ms; 0 while it is not).
    #[serde(default)]
    pub parked_at_ms: u64,
}

/// Failure notes kept per job.
pub const MAX_FAILURES: usize = 32;
/// Characters kept of one failure note.
pub const MAX_FAILURE_CHARS: usize = 500;

fn first_attempt() -> u32 {
    1
}

impl JobRecord {
    /// A new job's record: attempt 1, queued now.
    pub fn new(batch: u64, now_ms: u64) -> Self {
        Self {
            batch,
            attempt: 1,
            state: JobState::Queued,
            excluded: vec![],
            failures: vec![],
            queued_at_ms: now_ms,
            round_start: 1,
            parked_at_ms: 0,
        }
    }

    /// Attempts made in the current round, the current one included.
    pub fn round_attempts(&self) -> u32 {
        self.attempt.saturating_sub(self.round_start.max(1)) + 1
    }

    /// Notes what went wrong: at most [`MAX_FAILURE_CHARS`] characters of it,
    /// and only the last [`MAX_FAILURES`] notes are kept (workers choose the
    /// text; the record is rewritten on every result).
    pub fn note_failure(&mut self, text: &str) {
        let mut kept: String = text.chars().take(MAX_FAILURE_CHARS).collect();
        if kept.len() < text.len() {
            kept.push('…');
        }
        self.failures.push(kept);
        if self.failures.len() > MAX_FAILURES {
            let extra = self.failures.len() - MAX_FAILURES;
            self.failures.drain(..extra);
        }
    }

    /// Parks it dead for `reason` at `now_ms`.
    pub fn park(&mut self, reason: String, now_ms: u64) {
        self.state = JobState::Dead { reason };
        self.parked_at_ms = now_ms;
    }

    /// A dead job queued again at `now_ms`: the next attempt starts a new
    /// round, with no worker excluded. What went before stays in `failures`.
    pub fn revive(&mut self, now_ms: u64) {
        let parked_s = now_ms.saturating_sub(self.parked_at_ms) / 1000;
        self.note_failure(&format!("queued again after {parked_s} s parked dead"));
        self.state = JobState::Queued;
        self.attempt += 1;
        self.round_start = self.attempt;
        self.excluded.clear();
        self.queued_at_ms = now_ms;
        self.parked_at_ms = 0;
    }
}

/// What a worker has done, as the coordinator saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRecord {
    /// Proofs accepted.
    pub proofs_accepted: u64,
    /// Proofs rejected (did not verify).
    pub proofs_rejected: u64,
    /// Jobs it reported failing.
    pub jobs_failed: u64,
}

/// Everything written when a batch is sealed.
#[derive(Debug)]
pub struct Seal<'a> {
    /// The batch.
    pub batch: &'a BatchRecord,
    /// Its witness.
    pub witness: &'a BatchWitness,
    /// Its job.
    pub job: &'a JobRecord,
    /// Answers given since the previous seal.
    pub answers: &'a [TxAnswer],
    /// Messages (hex) of the transactions applied in it.
    pub applied: &'a [String],
    /// The stream sequence decided up to.
    pub applied_seq: u64,
    /// The leaves the batch wrote, with their fields after it (see
    /// [`medrollup_circuits::state::State::written_by`]).
    pub leaves: &'a [(TreeId, u64, Leaf)],
    /// Audit entries after the batch.
    pub audit_count: u64,
}

/// The sealed state as stored leaf by leaf.
#[derive(Debug)]
pub struct KeptLeaves {
    /// Batches it includes (0: the genesis state).
    pub through: u64,
    /// Its audit entries.
    pub audit_count: u64,
    /// Its non-empty leaves.
    pub leaves: Vec<(TreeId, u64, Leaf)>,
}

/// Jobs by state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JobCounts {
    /// Waiting for a proof.
    pub queued: u64,
    /// Proven.
    pub proven: u64,
    /// Parked after too many failed attempts.
    pub dead: u64,
}

/// A transaction's answer, recorded before it is announced, so that a
/// restart decides the open batch's transactions as announced: the same
/// outcome, applied at the same batch time, with no second look for content
/// (which may be unreachable by then, or the clock past an expiry).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The answer given.
    pub answer: TxAnswer,
    /// For an accepted transaction, its open batch's timestamp.
    pub timestamp: Option<u64>,
    /// For an accepted record transaction, its content's sha256 (kept from
    /// removal until the batch is sealed, also across a restart).
    #[serde(default)]
    pub content: Option<[u8; 32]>,
}

/// The database.
#[derive(Debug)]
pub struct Store {
    db: Database,
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("records serialise")
}

fn decode<T: DeserializeOwned>(what: impl FnOnce() -> String, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Decode { what: what(), source })
}

fn encode_leaf(leaf: &Leaf) -> Vec<u8> {
    leaf.iter().flat_map(fr_to_le32).collect()
}

fn decode_leaf(tree: u8, index: u64, bytes: &[u8]) -> Result<(TreeId, u64, Leaf), StoreError> {
    let what = || format!("leaf ({tree}, {index})");
    let tree = *TreeId::ALL
        .get(usize::from(tree))
        .ok_or_else(|| StoreError::Damaged { what: what(), why: "no such tree" })?;
    if bytes.len() != 32 * LEAF_WIDTH {
        return Err(StoreError::Damaged { what: what(), why: "not 7 fields of 32 bytes" });
    }
    let mut leaf = [Default::default(); LEAF_WIDTH];
    for (x, b) in leaf.iter_mut().zip(bytes.chunks_exact(32)) {
        *x = fr_from_le32(b.try_into().expect("32 bytes"))
            .ok_or_else(|| StoreError::Damaged { what: what(), why: "a field is not below the modulus" })?;
    }
    Ok((tree, index, leaf))
}

fn job_counts_in(r: &redb::ReadTransaction) -> Result<JobCounts, StoreError> {
    let meta = db!(r.open_table(META))?;
    let get = |k: &str| db!(meta.get(k)).map(|g| g.map_or(0, |g| g.value()));
    let (queued, dead) = (get(JOBS_QUEUED)?, get(JOBS_DEAD)?);
    let total = db!(db!(r.open_table(JOBS))?.len())?;
    Ok(JobCounts { queued, proven: total.saturating_sub(queued + dead), dead })
}

/// The first `limit` open jobs.
fn open_jobs_in(r: &redb::ReadTransaction, limit: usize) -> Result<Vec<JobRecord>, StoreError> {
    let open = db!(r.open_table(OPEN_JOBS))?;
    let jobs = db!(r.open_table(JOBS))?;
    let mut out = Vec::new();
    for row in db!(open.iter())?.take(limit) {
        let n = db!(row)?.0.value();
        let missing = || StoreError::Damaged { what: format!("job index entry {n}"), why: "no such job" };
        let v = db!(jobs.get(n))?.ok_or_else(missing)?;
        out.push(decode(|| format!("job {n}"), v.value())?);
    }
    Ok(out)
}

/// Writes a job and keeps [`OPEN_JOBS`] in step with its state; a proven
/// job's witness is let go.
fn write_job(w: &redb::WriteTransaction, job: &JobRecord) -> Result<(), StoreError> {
    let mut jobs = db!(w.open_table(JOBS))?;
    let was = match db!(jobs.get(job.batch))? {
        Some(g) => Some(decode::<JobRecord>(|| format!("job {}", job.batch), g.value())?.state),
        None => None,
    };
    db!(jobs.insert(job.batch, encode(job).as_slice()))?;
    let mut meta = db!(w.open_table(META))?;
    for (state, by) in [(was.as_ref(), -1i64), (Some(&job.state), 1)] {
        if let Some(key) = state.and_then(counted_as) {
            let n = db!(meta.get(key))?.map_or(0, |g| g.value());
            if n == 0 && by < 0 {
                // Only a version that kept no counters writing jobs in between.
                tracing::warn!(counter = key, batch = job.batch, "a job counter would go below 0: it is off");
            }
            db!(meta.insert(key, n.saturating_add_signed(by)))?;
        }
    }
    let mut open = db!(w.open_table(OPEN_JOBS))?;
    if job.state == JobState::Proven {
        db!(open.remove(job.batch))?;
        db!(db!(w.open_table(WITNESSES))?.remove(job.batch))?;
    } else {
        db!(open.insert(job.batch, ()))?;
    }
    Ok(())
}

/// The counter a job in `state` is counted in (proven ones are not).
fn counted_as(state: &JobState) -> Option<&'static str> {
    match state {
        JobState::Queued => Some(JOBS_QUEUED),
        JobState::Dead { .. } => Some(JOBS_DEAD),
        JobState::Proven => None,
    }
}

/// Counts the open jobs into the job counters, once (after the index).
fn count_jobs(w: &redb::WriteTransaction) -> Result<(), StoreError> {
    let mut meta = db!(w.open_table(META))?;
    if db!(meta.get(JOB_COUNTS_KEPT))?.is_some() {
        return Ok(());
    }
    let (mut queued, mut dead) = (0, 0);
    let open = db!(w.open_table(OPEN_JOBS))?;
    let jobs = db!(w.open_table(JOBS))?;
    for row in db!(open.iter())? {
        let n = db!(row)?.0.value();
        let Some(v) = db!(jobs.get(n))? else { continue };
        let job: JobRecord = decode(|| format!("job {n}"), v.value())?;
        match job.state {
            JobState::Queued => queued += 1,
            JobState::Dead { .. } => dead += 1,
            JobState::Proven => {}
        }
    }
    db!(meta.insert(JOBS_QUEUED, queued))?;
    db!(meta.insert(JOBS_DEAD, dead))?;
    db!(meta.insert(JOB_COUNTS_KEPT, 1))?;
    Ok(())
}

/// Indexes open jobs and batch CIDs stored by a version that kept no index
/// (once: the one pass over every batch there will be).
fn index_jobs_and_cids(w: &redb::WriteTransaction) -> Result<(), StoreError> {
    let mut meta = db!(w.open_table(META))?;
    if db!(meta.get(INDEXED))?.is_some() {
        return Ok(());
    }
    {
        let jobs = db!(w.open_table(JOBS))?;
        let mut open = db!(w.open_table(OPEN_JOBS))?;
        for row in db!(jobs.iter())? {
            let (k, v) = db!(row)?;
            let job: JobRecord = decode(|| format!("job {}", k.value()), v.value())?;
            if job.state != JobState::Proven {
                db!(open.insert(k.value(), ()))?;
            }
        }
    }
    {
        #[derive(Deserialize)]
        struct CidOf {
            cid: Cid,
        }
        let batches = db!(w.open_table(BATCHES))?;
        let mut cids = db!(w.open_table(BATCH_CIDS))?;
        for row in db!(batches.iter())? {
            let (k, v) = db!(row)?;
            let b: CidOf = decode(|| format!("batch {}", k.value()), v.value())?;
            db!(cids.insert(b.cid.to_string().as_str(), k.value()))?;
        }
    }
    db!(meta.insert(INDEXED, 1))?;
    Ok(())
}

impl Store {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = db!(Database::create(path))?;
        // Create every table, so readers never meet a missing one.
        let w = db!(db.begin_write())?;
        {
            db!(w.open_table(META))?;
            db!(w.open_table(BATCHES))?;
            db!(w.open_table(JOBS))?;
            db!(w.open_table(ANSWERS))?;
            db!(w.open_table(APPLIED))?;
            db!(w.open_table(WORKERS))?;
            db!(w.open_table(LANDINGS))?;
            db!(w.open_table(DIRECTORY))?;
            db!(w.open_table(DECISIONS))?;
            db!(w.open_table(REFUSALS))?;
            db!(w.open_table(REFUSED_AT))?;
            db!(w.open_table(LEAVES))?;
            db!(w.open_table(OPEN_JOBS))?;
            db!(w.open_table(BATCH_CIDS))?;
            db!(w.open_table(WITNESSES))?;
            date_old_refusals(&w, crate::service::now_ms())?;
            index_jobs_and_cids(&w)?;
            count_jobs(&w)?;
        }
        db!(w.commit())?;
        let store = Self { db };
        while !store.split_witnesses(SPLIT_PAGE)? {}
        Ok(store)
    }

    /// Moves the witnesses of up to `page` batch records of an older version
    /// out of them (one transaction); whether all are done.
    fn split_witnesses(&self, page: usize) -> Result<bool, StoreError> {
        #[derive(Deserialize)]
        struct WitnessOf {
            witness: Option<BatchWitness>,
        }
        let w = db!(self.db.begin_write())?;
        let done = {
            let mut meta = db!(w.open_table(META))?;
            if db!(meta.get(WITNESSES_SPLIT))?.is_some() {
                return Ok(true);
            }
            let from = db!(meta.get(WITNESSES_SPLIT_FROM))?.map_or(0, |g| g.value());
            let mut batches = db!(w.open_table(BATCHES))?;
            let rows: Vec<(u64, Vec<u8>)> = db!(batches.range(from..))?
                .take(page)
                .map(|row| row.map(|(k, v)| (k.value(), v.value().to_vec())))
                .collect::<Result<_, _>>()
                .map_err(|e| StoreError::Db(e.into()))?;
            let jobs = db!(w.open_table(JOBS))?;
            let mut witnesses = db!(w.open_table(WITNESSES))?;
            for (n, bytes) in &rows {
                let what = || format!("batch {n}");
                let Some(witness) = decode::<WitnessOf>(what, bytes)?.witness else { continue };
                let mut rec: BatchRecord = decode(what, bytes)?;
                rec.txs = witness.txs.iter().take(rec.tx_ids.len()).map(|t| t.tx.clone()).collect();
                db!(batches.insert(*n, encode(&rec).as_slice()))?;
                let job: Option<JobRecord> =
                    db!(jobs.get(*n))?.map(|g| decode(|| format!("job {n}"), g.value())).transpose()?;
                if job.is_none_or(|j| j.state != JobState::Proven) {
                    db!(witnesses.insert(*n, encode(&witness).as_slice()))?;
                }
            }
            match rows.last() {
                Some((last, _)) if rows.len() == page => {
                    db!(meta.insert(WITNESSES_SPLIT_FROM, last + 1))?;
                    false
                }
                _ => {
                    db!(meta.insert(WITNESSES_SPLIT, 1))?;
                    db!(meta.remove(WITNESSES_SPLIT_FROM))?;
                    true
                }
            }
        };
        db!(w.commit())?;
        Ok(done)
    }

    /// Batch `n`'s witness, while it is not proven.
    pub fn witness(&self, n: u64) -> Result<Option<BatchWitness>, StoreError> {
        let r = db!(self.db.begin_read())?;
        let t = db!(r.open_table(WITNESSES))?;
        db!(t.get(n))?.map(|g| decode(|| format!("witness of batch {n}"), g.value())).transpose()
    }

    fn meta(&self, key: &str) -> Result<u64, StoreError> {
        let r = db!(self.db.begin_read())?;
        let t = db!(r.open_table(META))?;
        Ok(db!(t.get(key))?.map(|g| g.value()).unwrap_or(0))
    }

    /// The transaction-stream sequence decided up to (0: none).
    pub fn applied_seq(&self) -> Result<u64, StoreError> {
        self.meta(APPLIED_SEQ)
    }

    /// The first batch not yet handed to the L1 sink.
    pub fn next_submit(&self) -> Result<u64, StoreError> {
        self.meta(NEXT_SUBMIT)
    }

    /// At most `limit` sealed batches from `first` on, in order (a page:
    /// there is no bound on how many batches there are).
    pub fn batches_from(&self, first: u64, limit: usize) -> Result<Vec<BatchRecord>, StoreError> {
        let r = db!(self.db.begin_read())?;
        let t = db!(r.open_table(BATCHES))?;
        let mut out = Vec::new();
        for row in db!(t.range(first..))?.take(limit) {
            let (k, v) = db!(row)?;
            out.push(decode(|| format!("batch {}", k.value()), v.value())?);
        }
        Ok(out)
    }

    /// The batch whose data has `cid`, if any.
    pub fn batch_with_cid(&self, cid: &Cid) -> Result<Option<u64>, StoreError> {
        let r = db!(self.db.begin_read())?;
        let t = db!(r.open_table(BATCH_CIDS))?;
        Ok(db!(t.get(cid.to_string().as_str()))?.map(|g| g.value()))
    }

    /// The sealed state's leaves, unless this database does not keep them
    /// (made by an older version, or out of step with its batches).
    pub fn kept_leaves(&self) -> Result<Option<KeptLeaves>, StoreError> {
        let r = db!(self.db.begin_read())?;
        let meta = db!(r.open_table(META))?;
        let get = |k: &str| db!(meta.get(k)).map(|g| g.map(|g| g.value()).unwrap_or(0));
        if get(LEAVES_KEPT)? == 0 {
            return Ok(None);
        }
        let (through, audit_count) = (get(LEAVES_THROUGH)?, get(AUDIT_COUNT)?);
        let t = db!(r.open_table(LEAVES))?;
        let mut leaves = Vec::new();
        for row in db!(t.iter())? {
            let (k, v) = db!(row)?;
            let (tree, index) = k.value();
            leaves.push(decode_leaf(tree, index, v.value())?);
        }
        Ok(Some(KeptLeaves { through, audit_count, leaves }))
    }

    /// Writes a leaf row as given, damaged or not.
    #[cfg(test)]
    pub(crate) fn put_raw_leaf(&self, key: (u8, u64), bytes: &[u8]) -> Result<(), StoreError> {
        let w = db!(self.db.begin_write())?;
        db!(db!(w.open_table(LEAVES))?.insert(key, bytes))?;
        db!(w.commit())
    }

    /// Stops keeping the leaves, as a database made by an older version.
    #[cfg(test)]
    pub(crate) fn forget_kept_leaves(&self) -> Result<(), StoreError> {
        let w = db!(self.db.begin_write())?;
        {
            db!(db!(w.open_table(LEAVES))?.retain(|_, _| false))?;
            let mut meta = db!(w.open_table(META))?;
            for k in [LEAVES_KEPT, LEAVES_THROUGH, AUDIT_COUNT] {
                db!(meta.remove(k))?;
            }
        }
        db!(w.commit())
    }

    /// Stores the whole state after `through` batches, leaf by leaf (what a
    /// database that kept no leaves gets once its batches are replayed).
    pub fn keep_leaves<'a>(
        &self,
        through: u64,
        audit_count: u64,
        leaves: impl IntoIterator<Item = (TreeId, u64, &'a Leaf)>,
    ) -> Result<(), StoreError> {
        let w = db!(self.db.begin_write())?;
        {
            let mut t = db!(w.open_table(LEAVES))?;
            db!(t.retain(|_, _| false))?;
            for (tree, index, leaf) in leaves {
                db!(t.insert((tree as u8, index), encode_leaf(leaf).as_slice()))?;
            }
            let mut meta = db!(w.open_table(META))?;
            db!(meta.insert(LEAVES_THROUGH, through))?;
            db!(meta.insert(AUDIT_COUNT, audit_count))?;
            db!(meta.insert(LEAVES_KEPT, 1))?;
        }
        db!(w.commit())
    }

    /// One batch.
    pub fn batch(&self, n: u64) -> Result<Option<BatchRecord>, StoreError> {
        let r = db!(self.db.begin_read())?;
        let t = db!(r.open_table(BATCHES))?;
        db!(t.get(n))?.map(|g| decode(|| format!("batch {n}"), g.value())).transpose()
    }

    /// Number of sealed batches.
    pub fn batch_count(&self) -> Result<u64, StoreError> {
        let r = db!(self.db.begin_read())?;
        let t = db!(r.open_table(BATCHES))?;
        Ok(db!(t.last())?.map(|(k, _)| k.value() + 1).unwrap_or(0))
    }

    /// Writes a sealed batch, its job, the answers and the stream position at once.
    pub fn seal(&self, s: Seal<'_>) -> Result<(), StoreError> {
        let w = db!(self.db.begin_write())?;
        {
            db!(db!(w.open_table(BATCHES))?.insert(s.batch.batch, encode(s.batch).as_slice()))?;
            db!(db!(w.open_table(WITNESSES))?.insert(s.batch.batch, encode(s.witness).as_slice()))?;
            db!(db!(w.open_table(BATCH_CIDS))?.insert(s.batch.cid.to_string().as_str(), s.batch.batch))?;
            write_job(&w, s.job)?;
            put_answers(&w, s.answers, s.batch.sealed_at_ms)?;
            keep_written_leaves(&w, &s)?;
            let mut applied = db!(w.open_table(APPLIED))?;
            for m in s.applied {
                db!(applied.insert(m.as_str(), s.batch.batch))?;
            }
            db!(db!(w.open_table(META))?.insert(APPLIED_SEQ, s.applied_seq))?;
            forget_decisions(&w, s.applied_seq)?;
        }
        db!(w.commit())
    }

    /// Records the answer to the transaction at stream sequence `seq` before
    /// it is announced (see [`Decision`]).
    pub fn record_decision(&self, seq: u64, d: &Decision) -> Result<(), StoreError> {
        let w = db!(self.db.begin_write())?;
        db!(db!(w.open_table(DECISIONS))?.insert(seq, encode(d).as_slice()))?;
        db!(w.commit())
    }

    /// The decisions recorded and not yet stored for good (the open batch's).
    pub fn decisions(&self) -> Result<Vec<(u64, Decision)>, StoreError> {
        let r = db!(self.db.begin_read())?;
        let t = db!(r.open_table(DECISIONS))?;
        let mut out = Vec::new();
        for row in db!(t.iter())? {
            let (k, v) = db!(row)?;
            out.push((k.value(), decode(|| format!("decision {}", k.value()), v.value())?));
        }
        Ok(out)
    }

    /// The decision recorded for stream sequence `seq`, if its batch has not
    /// been sealed since.
    pub fn decision(&self, seq: u64) -> Result<Option<Decision>, StoreError> {
        let r = db!(self.db.begin_read())?;
        let t = db!(r.open_table(DECISIONS))?;
        db!(t.get(seq))?.map(|g| decode(|| format!("decision {seq}"), g.value())).transpose()
    }

    /// Records answers and the stream position without a batch (a run of
    /// rejections, so they are not decided again after a restart), at
    /// `now_ms`.
    pub fn record_answers(
        &self,
        answers: &[TxAnswer],
        applied_seq: u64,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let w = db!(self.db.begin_write())?;
        {
            put_answers(&w, answers, now_ms)?;
            db!(db!(w.open_table(META))?.insert(APPLIED_SEQ, applied_seq))?;
            forget_decisions(&w, applied_seq)?;
        }
        db!(w.commit())
    }

    /// Forgets up to `limit` of the refusals stored before `before_ms` (their
    /// transactions' answers, unless accepted since), oldest first, in one
    /// write (a flood of junk is forgotten over several calls, none holding
    /// the database long); returns how many it looked at (`limit`: there
    /// may be more).
    pub fn forget_refusals(&self, before_ms: u64, limit: usize) -> Result<usize, StoreError> {
        let w = db!(self.db.begin_write())?;
        let seen;
        {
            let mut refusals = db!(w.open_table(REFUSALS))?;
            let mut at = db!(w.open_table(REFUSED_AT))?;
            let mut answers = db!(w.open_table(ANSWERS))?;
            let mut old: Vec<(u64, String)> = Vec::new();
            for row in db!(refusals.range(..(before_ms, "")))?.take(limit) {
                let (k, _) = db!(row)?;
                old.push((k.value().0, k.value().1.to_string()));
            }
            seen = old.len();
            for (t, id) in old {
                db!(refusals.remove((t, id.as_str())))?;
                db!(at.remove(id.as_str()))?;
                let refused = db!(answers.get(id.as_str()))?
                    .map(|g| decode::<TxAnswer>(|| format!("answer {id}"), g.value()))
                    .transpose()?
                    .is_some_and(|a| refusal(&a.status));
                if refused {
                    db!(answers.remove(id.as_str()))?;
                }
            }
        }
        db!(w.commit())?;
        Ok(seen)
    }

    /// The answer given to transaction `id`.
    pub fn answer(&self, id: &str) -> Result<Option<TxAnswer>, StoreError> {
        let r = db!(self.db.begin_read())?;
        let t = db!(r.open_table(ANSWERS))?;
        db!(t.get(id))?.map(|g| decode(|| format!("answer {id}"), g.value())).transpose()
    }

    /// The batch a transaction message (hex) was applied in.
    pub fn applied_in(&self, message_hex: &str) -> Result<Option<u64>, StoreError> {
        let r = db!(self.db.begin_read())?;
        let t = db!(r.open_table(APPLIED))?;
        Ok(db!(t.get(message_hex))?.map(|g| g.value()))
    }

    /// One job.
    pub fn job(&self, n: u64) -> Result<Option<JobRecord>, StoreError> {
        let r = db!(self.db.begin_read())?;
        let t = db!(r.open_table(JOBS))?;
        db!(t.get(n))?.map(|g| decode(|| format!("job {n}"), g.value())).transpose()
    }

    /// The jobs not yet proven (queued or dead), in batch order.
    pub fn open_jobs(&self) -> Result<Vec<JobRecord>, StoreError> {
        open_jobs_in(&db!(self.db.begin_read())?, usize::MAX)
    }

    /// How many jobs are in each state (one per sealed batch; read from
    /// counters kept with every job written).
    pub fn job_counts(&self) -> Result<JobCounts, StoreError> {
        let r = db!(self.db.begin_read())?;
        job_counts_in(&r)
    }

    /// The first `limit` open jobs (of [`Self::open_jobs`]) with
    /// [`Self::job_counts`], read together.
    pub fn open_jobs_and_counts(&self, limit: usize) -> Result<(Vec<JobRecord>, JobCounts), StoreError> {
        let r = db!(self.db.begin_read())?;
        Ok((open_jobs_in(&r, limit)?, job_counts_in(&r)?))
    }

    /// How many batches from `n` on are proven, in a row: those L1 can take
    /// now (a range read from `n`, however many jobs there were before).
    pub fn proven_in_a_row_from(&self, n: u64) -> Result<u64, StoreError> {
        let r = db!(self.db.begin_read())?;
        let t = db!(r.open_table(JOBS))?;
        let mut count = 0;
        for row in db!(t.range(n..))? {
            let (k, v) = db!(row)?;
            let job: JobRecord = decode(|| format!("job {}", k.value()), v.value())?;
            if k.value() != n + count || job.state != JobState::Proven {
                break;
            }
            count += 1;
        }
        Ok(count)
    }

    /// Writes a job (and, with it, a worker's record).
    pub fn put_job(&self, job: &JobRecord, worker: Option<(&str, &WorkerRecord)>) -> Result<(), StoreError> {
        let w = db!(self.db.begin_write())?;
        {
            write_job(&w, job)?;
            if let Some((name, rec)) = worker {
                db!(db!(w.open_table(WORKERS))?.insert(name, encode(rec).as_slice()))?;
            }
        }
        db!(w.commit())
    }

    /// Stores a verified proof with its job and the worker's record.
    pub fn prove(
        &self,
        batch: &BatchRecord,
        job: &JobRecord,
        worker: &str,
        rec: &WorkerRecord,
    ) -> Result<(), StoreError> {
        let w = db!(self.db.begin_write())?;
        {
            db!(db!(w.open_table(BATCHES))?.insert(batch.batch, encode(batch).as_slice()))?;
            write_job(&w, job)?;
            db!(db!(w.open_table(WORKERS))?.insert(worker, encode(rec).as_slice()))?;
        }
        db!(w.commit())
    }

    /// Marks batch `n` handed to the L1 sink and moves the submit cursor.
    pub fn mark_submitted(&self, batch: &BatchRecord) -> Result<(), StoreError> {
        let w = db!(self.db.begin_write())?;
        {
            db!(db!(w.open_table(BATCHES))?.insert(batch.batch, encode(batch).as_slice()))?;
            db!(db!(w.open_table(META))?.insert(NEXT_SUBMIT, batch.batch + 1))?;
        }
        db!(w.commit())
    }

    /// Records that batch `n` landed on L1 and moves the submit cursor past it.
    pub fn record_landing(&self, n: u64, landing: &Landing) -> Result<(), StoreError> {
        let w = db!(self.db.begin_write())?;
        {
            db!(db!(w.open_table(LANDINGS))?.insert(n, encode(landing).as_slice()))?;
            let mut meta = db!(w.open_table(META))?;
            let next = db!(meta.get(NEXT_SUBMIT))?.map(|g| g.value()).unwrap_or(0);
            db!(meta.insert(NEXT_SUBMIT, next.max(n + 1)))?;
        }
        db!(w.commit())
    }

    /// Forgets the landings of batches `n` and later (a reorg took them off
    /// the chain; they land again) and moves the submit cursor back to `n`.
    pub fn forget_landings_from(&self, n: u64) -> Result<(), StoreError> {
        let w = db!(self.db.begin_write())?;
        {
            let mut t = db!(w.open_table(LANDINGS))?;
            db!(t.retain_in(n.., |_, _| false))?;
            let mut meta = db!(w.open_table(META))?;
            let next = db!(meta.get(NEXT_SUBMIT))?.map(|g| g.value()).unwrap_or(0);
            db!(meta.insert(NEXT_SUBMIT, next.min(n)))?;
        }
        db!(w.commit())
    }

    /// How batch `n` landed on L1.
    pub fn landing(&self, n: u64) -> Result<Option<Landing>, StoreError> {
        let r = db!(self.db.begin_read())?;
        let t = db!(r.open_table(LANDINGS))?;
        db!(t.get(n))?.map(|g| decode(|| format!("landing {n}"), g.value())).transpose()
    }

    /// A worker's record.
    pub fn worker(&self, name: &str) -> Result<WorkerRecord, StoreError> {
        let r = db!(self.db.begin_read())?;
        let t = db!(r.open_table(WORKERS))?;
        Ok(db!(t.get(name))?
            .map(|g| decode(|| format!("worker {name}"), g.value()))
            .transpose()?
            .unwrap_or_default())
    }

    /// Every worker's record.
    pub fn workers(&self) -> Result<Vec<(String, WorkerRecord)>, StoreError> {
        let r = db!(self.db.begin_read())?;
        let t = db!(r.open_table(WORKERS))?;
        let mut out = Vec::new();
        for row in db!(t.iter())? {
            let (k, v) = db!(row)?;
            let name = k.value().to_string();
            let rec = decode(|| format!("worker {name}"), v.value())?;
            out.push((name, rec));
        }
        Ok(out)
    }

    /// Publishes an account's public keys (JSON), replacing earlier ones.
    pub fn put_directory(&self, account: u64, entry: &[u8]) -> Result<(), StoreError> {
        let w = db!(self.db.begin_write())?;
        {
            let mut t = db!(w.open_table(DIRECTORY))?;
            db!(t.insert(account, entry))?;
        }
        db!(w.commit())
    }

    /// An account's published public keys.
    pub fn directory(&self, account: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let r = db!(self.db.begin_read())?;
        let t = db!(r.open_table(DIRECTORY))?;
        Ok(db!(t.get(account))?.map(|g| g.value().to_vec()))
    }
}
/// Whether an answer is forgotten in time (see [`Store::forget_refusals`]): a
/// refusal, or a duplicate (a copy of an applied transaction, re-encoded to
/// get a new id: anyone can make endless such copies, and none changed
/// anything).
fn refusal(status: &medrollup_wire::TxStatus) -> bool {
    matches!(status, medrollup_wire::TxStatus::Rejected { .. } | medrollup_wire::TxStatus::Duplicate { .. })
}

/// Applies a sealed batch's written leaves to [`LEAVES`] when they hold the
/// state just before it; otherwise stops keeping them (the next start
/// replays the batches and keeps them again).
fn keep_written_leaves(w: &redb::WriteTransaction, s: &Seal<'_>) -> Result<(), StoreError> {
    let mut meta = db!(w.open_table(META))?;
    let kept = db!(meta.get(LEAVES_KEPT))?.is_some_and(|g| g.value() == 1);
    let through = db!(meta.get(LEAVES_THROUGH))?.map(|g| g.value());
    if !kept || through != Some(s.batch.batch) {
        db!(meta.insert(LEAVES_KEPT, 0))?;
        return Ok(());
    }
    let mut t = db!(w.open_table(LEAVES))?;
    for (tree, index, leaf) in s.leaves {
        let key = (*tree as u8, *index);
        if leaf[0] == Default::default() {
            db!(t.remove(key))?;
        } else {
            db!(t.insert(key, encode_leaf(leaf).as_slice()))?;
        }
    }
    db!(meta.insert(LEAVES_THROUGH, s.batch.batch + 1))?;
    db!(meta.insert(AUDIT_COUNT, s.audit_count))?;
    Ok(())
}

/// Stores answers by transaction id, a refusal or duplicate as of `now_ms` (see
/// [`Store::forget_refusals`]). An accepted transaction's answer is kept:
/// the same bytes sent again later are answered `duplicate`, which must not
/// hide where the first copy went.
fn put_answers(w: &redb::WriteTransaction, answers: &[TxAnswer], now_ms: u64) -> Result<(), StoreError> {
    let mut t = db!(w.open_table(ANSWERS))?;
    let mut refusals = db!(w.open_table(REFUSALS))?;
    let mut at = db!(w.open_table(REFUSED_AT))?;
    for a in answers {
        let kept = db!(t.get(a.id.as_str()))?
            .map(|g| decode::<TxAnswer>(|| format!("answer {}", a.id), g.value()))
            .transpose()?
            .is_some_and(|old| matches!(old.status, medrollup_wire::TxStatus::Accepted { .. }));
        if kept {
            continue;
        }
        db!(t.insert(a.id.as_str(), encode(a).as_slice()))?;
        // A refusal is dated by its latest copy.
        let before = db!(at.remove(a.id.as_str()))?.map(|g| g.value());
        if let Some(before) = before {
            db!(refusals.remove((before, a.id.as_str())))?;
        }
        if refusal(&a.status) {
            db!(refusals.insert((now_ms, a.id.as_str()), ()))?;
            db!(at.insert(a.id.as_str(), now_ms))?;
        }
    }
    Ok(())
}

/// Dates, once, the refusals and duplicates stored before they were dated
/// (a database from an older version) as of `now_ms`, so that they too are
/// forgotten.
fn date_old_refusals(w: &redb::WriteTransaction, now_ms: u64) -> Result<(), StoreError> {
    let mut meta = db!(w.open_table(META))?;
    // Refusals were dated from one version on, duplicates from a later one.
    let rejects_dated = db!(meta.get(REFUSALS_DATED))?.is_some();
    let duplicates_dated = db!(meta.get(DUPLICATES_DATED))?.is_some();
    if rejects_dated && duplicates_dated {
        return Ok(());
    }
    let answers = db!(w.open_table(ANSWERS))?;
    let mut refusals = db!(w.open_table(REFUSALS))?;
    let mut at = db!(w.open_table(REFUSED_AT))?;
    for row in db!(answers.iter())? {
        let (id, bytes) = db!(row)?;
        let a: TxAnswer = decode(|| format!("answer {}", id.value()), bytes.value())?;
        let undated = match a.status {
            medrollup_wire::TxStatus::Rejected { .. } => !rejects_dated,
            medrollup_wire::TxStatus::Duplicate { .. } => !duplicates_dated,
            medrollup_wire::TxStatus::Accepted { .. } => false,
        };
        if undated && db!(at.get(id.value()))?.is_none() {
            db!(refusals.insert((now_ms, id.value()), ()))?;
            db!(at.insert(id.value(), now_ms))?;
        }
    }
    db!(meta.insert(REFUSALS_DATED, 1))?;
    db!(meta.insert(DUPLICATES_DATED, 1))?;
    Ok(())
}

/// Drops the decisions up to `seq`: what they decided is stored for good.
fn forget_decisions(w: &redb::WriteTransaction, seq: u64) -> Result<(), StoreError> {
    db!(db!(w.open_table(DECISIONS))?.retain_in(..=seq, |_, _| false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use medrollup_wire::TxStatus;

    fn answer(id: &str, status: TxStatus) -> TxAnswer {
        TxAnswer { id: id.into(), status }
    }

    #[test]
    fn decisions_last_until_what_they_decided_is_stored_and_accepted_answers_stay() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb")).unwrap();
        let accepted = answer("a", TxStatus::Accepted { batch: 0, position: 0 });
        let refused = Decision {
            answer: answer(
                "b",
                TxStatus::Rejected { code: "bad_nonce".into(), reason: "nonce 3, not 2".into() },
            ),
            timestamp: None,
            content: None,
        };
        store
            .record_decision(
                7,
                &Decision {
                    answer: accepted.clone(),
                    timestamp: Some(1_800_000_000),
                    content: Some([3; 32]),
                },
            )
            .unwrap();
        store.record_decision(8, &refused).unwrap();
        store.record_decision(9, &refused).unwrap();
        assert_eq!(store.decision(7).unwrap().unwrap().timestamp, Some(1_800_000_000));
        assert_eq!(store.decisions().unwrap().iter().map(|(s, _)| *s).collect::<Vec<_>>(), [7, 8, 9]);
        assert_eq!(store.decisions().unwrap()[0].1.content, Some([3; 32]));
        assert_eq!(store.decision(8).unwrap(), Some(refused.clone()));
        // Stored up to 8 (with the same bytes of "a" answered duplicate
        // after it): 7 and 8 are forgotten, 9 is not; "a" stays accepted.
        let answers =
            [accepted.clone(), answer("a", TxStatus::Duplicate { batch: 0 }), refused.answer.clone()];
        store.record_answers(&answers, 8, 1_000).unwrap();
        assert_eq!((store.decision(7).unwrap(), store.decision(8).unwrap()), (None, None));
        assert_eq!(store.decision(9).unwrap(), Some(refused.clone()));
        assert_eq!(store.answer("a").unwrap(), Some(accepted.clone()));
        assert_eq!(store.answer("b").unwrap(), Some(refused.answer.clone()));
        // A refused transaction sent again and accepted: the new answer.
        let later = answer("b", TxStatus::Accepted { batch: 1, position: 0 });
        store.record_answers(std::slice::from_ref(&later), 9, 2_000).unwrap();
        assert_eq!(store.answer("b").unwrap(), Some(later));
        assert_eq!(store.decision(9).unwrap(), None);
        assert_eq!(store.applied_seq().unwrap(), 9);
    }

    #[test]
    fn open_jobs_and_counts_follow_every_job_and_an_older_database_is_indexed_when_it_opens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let store = Store::open(&path).unwrap();
        let mut jobs: Vec<JobRecord> = (0..5).map(|n| JobRecord::new(n, 0)).collect();
        for j in &jobs {
            store.put_job(j, None).unwrap();
        }
        jobs[1].state = JobState::Proven;
        jobs[4].state = JobState::Proven;
        jobs[3].park("no worker could prove it".into(), 5);
        for j in &jobs {
            store.put_job(j, None).unwrap();
        }
        let open = |s: &Store| s.open_jobs().unwrap().iter().map(|j| j.batch).collect::<Vec<_>>();
        assert_eq!(open(&store), [0, 2, 3]);
        assert_eq!(store.job_counts().unwrap(), JobCounts { queued: 2, proven: 2, dead: 1 });
        jobs[3].revive(9);
        store.put_job(&jobs[3], None).unwrap();
        assert_eq!(store.job_counts().unwrap(), JobCounts { queued: 3, proven: 2, dead: 0 });

        // A database of a version with no indices: jobs and one batch's data
        // CID stored, nothing indexed.
        let cid = Cid::of(b"batch 0 data");
        {
            let w = store.db.begin_write().unwrap();
            {
                let mut meta = w.open_table(META).unwrap();
                for k in [INDEXED, JOB_COUNTS_KEPT, JOBS_QUEUED, JOBS_DEAD] {
                    meta.remove(k).unwrap();
                }
                w.open_table(OPEN_JOBS).unwrap().retain(|_, _| false).unwrap();
                let rec = serde_json::to_vec(&serde_json::json!({ "batch": 0, "cid": cid })).unwrap();
                w.open_table(BATCHES).unwrap().insert(0, rec.as_slice()).unwrap();
            }
            w.commit().unwrap();
        }
        assert_eq!(open(&store), Vec::<u64>::new(), "nothing indexed");
        assert_eq!(
            store.job_counts().unwrap(),
            JobCounts { queued: 0, proven: 5, dead: 0 },
            "nothing counted"
        );
        assert_eq!(store.batch_with_cid(&cid).unwrap(), None);
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(open(&store), [0, 2, 3]);
        assert_eq!(store.job_counts().unwrap(), JobCounts { queued: 3, proven: 2, dead: 0 });
        assert_eq!(store.batch_with_cid(&cid).unwrap(), Some(0));
        assert_eq!(store.batch_with_cid(&Cid::of(b"other")).unwrap(), None);
        // The counters, counted afresh, keep following.
        let mut j = store.job(2).unwrap().unwrap();
        j.park("again".into(), 10);
        store.put_job(&j, None).unwrap();
        assert_eq!(store.job_counts().unwrap(), JobCounts { queued: 2, proven: 2, dead: 1 });
        let (listed, counts) = store.open_jobs_and_counts(2).unwrap();
        assert_eq!((listed.iter().map(|j| j.batch).collect::<Vec<_>>(), counts.dead), (vec![0, 2], 1));
    }

    #[test]
    fn witnesses_are_kept_until_the_proof_and_an_older_databases_are_moved_out_of_its_records() {
        use medrollup_circuits::{keys::CircuitShape, sample};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let store = Store::open(&path).unwrap();
        let witness = sample::batch(CircuitShape { batch_size: 4, levels: 5 });
        let txs: Vec<SignedTx> = witness.txs.iter().map(|t| t.tx.clone()).collect();
        // Records as an older version wrote them: the witness inside, no
        // transactions; five batches, 0 and 3 proven.
        {
            let w = store.db.begin_write().unwrap();
            {
                let mut batches = w.open_table(BATCHES).unwrap();
                for n in 0..5u64 {
                    let rec = serde_json::json!({
                        "batch": n,
                        "public_inputs": witness.public_inputs(),
                        "cid": Cid::of(&n.to_le_bytes()),
                        "tx_ids": ["a", "b", "c"],
                        "witness": witness,
                        "sealed_at_ms": 1,
                        "proof": null,
                        "submitted": false,
                    });
                    batches.insert(n, serde_json::to_vec(&rec).unwrap().as_slice()).unwrap();
                    let mut job = JobRecord::new(n, 0);
                    if n % 3 == 0 {
                        job.state = JobState::Proven;
                    }
                    write_job(&w, &job).unwrap();
                }
                let mut meta = w.open_table(META).unwrap();
                meta.remove(WITNESSES_SPLIT).unwrap();
            }
            w.commit().unwrap();
        }
        // Moved two records at a time (a page), as if stopped after the first.
        assert!(!store.split_witnesses(2).unwrap());
        assert_eq!(store.batch(0).unwrap().unwrap().txs, txs[..3], "the submitted ones");
        assert!(store.batch(2).unwrap().unwrap().txs.is_empty(), "not moved yet");
        drop(store);
        let store = Store::open(&path).unwrap();
        for n in 0..5 {
            let rec = store.batch(n).unwrap().unwrap();
            assert_eq!(rec.txs, txs[..3]);
            assert_eq!(rec.public_inputs, witness.public_inputs());
            let kept = store.witness(n).unwrap();
            assert_eq!(kept.is_some(), n % 3 != 0, "batch {n}: only unproven batches keep theirs");
            if let Some(k) = kept {
                assert_eq!(k, witness);
            }
        }
        // A proof stored: the witness goes.
        let mut job = store.job(1).unwrap().unwrap();
        job.state = JobState::Proven;
        store.put_job(&job, None).unwrap();
        assert_eq!(store.witness(1).unwrap(), None);
        assert!(store.witness(2).unwrap().is_some());
    }

    #[test]
    fn a_damaged_stored_leaf_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb")).unwrap();
        let leaf = [medrollup_circuits::Fr::from(3u64); LEAF_WIDTH];
        store.keep_leaves(0, 0, [(TreeId::Records, 9, &leaf)]).unwrap();
        let kept = store.kept_leaves().unwrap().unwrap();
        assert_eq!(kept.leaves, [(TreeId::Records, 9, leaf)]);
        for (key, bytes, why) in [
            ((1, 9), vec![0xff; 32 * LEAF_WIDTH], "not below the modulus"),
            ((1, 9), vec![0; 31], "not 7 fields"),
            ((7, 9), vec![0; 32 * LEAF_WIDTH], "no such tree"),
        ] {
            let w = store.db.begin_write().unwrap();
            w.open_table(LEAVES).unwrap().insert(key, bytes.as_slice()).unwrap();
            w.commit().unwrap();
            let e = store.kept_leaves().unwrap_err().to_string();
            assert!(e.contains(why) && e.contains(&format!("leaf ({}, 9)", key.0)), "{e}");
            let w = store.db.begin_write().unwrap();
            w.open_table(LEAVES).unwrap().remove(key).unwrap();
            w.commit().unwrap();
        }
    }

    #[test]
    fn landings_a_reorg_took_off_the_chain_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb")).unwrap();
        let landing = |block| Landing {
            tx_hash: format!("0x{block:02x}"),
            block,
            gas_used: 280_000,
            gas_price_wei: "1".into(),
            latency_ms: 900,
            sends: 1,
            landed_at_ms: 1_000,
        };
        for n in 0..4 {
            store.record_landing(n, &landing(10 + n)).unwrap();
        }
        assert_eq!(store.next_submit().unwrap(), 4);
        store.forget_landings_from(2).unwrap();
        assert_eq!(store.landing(1).unwrap(), Some(landing(11)));
        assert_eq!((store.landing(2).unwrap(), store.landing(3).unwrap()), (None, None));
        assert_eq!(store.next_submit().unwrap(), 2);
        // Landing again moves the cursor on.
        store.record_landing(2, &landing(20)).unwrap();
        assert_eq!((store.landing(2).unwrap(), store.next_submit().unwrap()), (Some(landing(20)), 3));
    }

    #[test]
    fn refusals_are_forgotten_after_their_time_and_acceptances_never() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb")).unwrap();
        let refused =
            |id: &str| answer(id, TxStatus::Rejected { code: "bad_signature".into(), reason: "junk".into() });
        let accepted = |id: &str| answer(id, TxStatus::Accepted { batch: 0, position: 0 });
        // At t=1000: junk "j1", "j2", a refusal "r" later accepted, an
        // accepted "a", and "d", a re-encoded copy of "a" (a duplicate). At
        // t=5000: "j2" refused again, and "j3".
        let copy = answer("d", TxStatus::Duplicate { batch: 0 });
        store
            .record_answers(&[refused("j1"), refused("j2"), refused("r"), accepted("a"), copy], 1, 1_000)
            .unwrap();
        store.record_answers(&[accepted("r")], 2, 2_000).unwrap();
        store.record_answers(&[refused("j2"), refused("j3")], 3, 5_000).unwrap();
        assert_eq!(store.forget_refusals(1_000, 100).unwrap(), 0, "nothing stored before t=1000");
        // Forgetting up to t=5000: only "j1" and "d" (at 1000); "j2" is
        // dated by its second copy, "r" is accepted since, "a" was never
        // refused.
        assert_eq!(store.forget_refusals(5_000, 100).unwrap(), 2);
        assert_eq!(store.answer("j1").unwrap(), None);
        assert_eq!(store.answer("d").unwrap(), None);
        assert_eq!(store.answer("j2").unwrap(), Some(refused("j2")));
        assert_eq!(store.answer("r").unwrap(), Some(accepted("r")));
        assert_eq!(store.answer("a").unwrap(), Some(accepted("a")));
        // In steps of one: "j2" first (the same time as "j3"; then by id).
        assert_eq!(store.forget_refusals(5_001, 1).unwrap(), 1);
        assert_eq!(store.answer("j2").unwrap(), None);
        assert_eq!(store.answer("j3").unwrap(), Some(refused("j3")));
        assert_eq!(store.forget_refusals(5_001, 1).unwrap(), 1);
        assert_eq!(store.answer("j3").unwrap(), None);
        assert_eq!(store.answer("r").unwrap(), Some(accepted("r")));
        assert_eq!(store.answer("a").unwrap(), Some(accepted("a")));
        assert_eq!(store.forget_refusals(u64::MAX, 100).unwrap(), 0, "nothing left to forget");
    }

    #[test]
    fn refusals_stored_by_an_older_version_are_dated_when_it_opens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        // A database as an older version left it: answers, no dates.
        {
            let db = Database::create(&path).unwrap();
            let w = db.begin_write().unwrap();
            {
                let mut t = w.open_table(ANSWERS).unwrap();
                let refused =
                    answer("old", TxStatus::Rejected { code: "bad_nonce".into(), reason: "x".into() });
                t.insert("old", encode(&refused).as_slice()).unwrap();
                let accepted = answer("kept", TxStatus::Accepted { batch: 0, position: 0 });
                t.insert("kept", encode(&accepted).as_slice()).unwrap();
                let copy = answer("copy", TxStatus::Duplicate { batch: 0 });
                t.insert("copy", encode(&copy).as_slice()).unwrap();
            }
            w.commit().unwrap();
        }
        let before = crate::service::now_ms();
        let store = Store::open(&path).unwrap();
        assert_eq!(store.forget_refusals(before, 100).unwrap(), 0, "dated as of the opening");
        assert_eq!(store.forget_refusals(u64::MAX, 100).unwrap(), 2);
        assert_eq!(store.answer("old").unwrap(), None);
        assert_eq!(store.answer("copy").unwrap(), None);
        assert!(store.answer("kept").unwrap().is_some());
        // Opened again: nothing more to date.
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.forget_refusals(u64::MAX, 100).unwrap(), 0);
    }

    #[test]
    fn failure_notes_are_bounded_and_a_revived_job_starts_a_new_round() {
        let mut job = JobRecord::new(4, 1_000);
        job.note_failure(&"x".repeat(10 * MAX_FAILURE_CHARS));
        assert_eq!(job.failures[0].chars().count(), MAX_FAILURE_CHARS + 1);
        assert!(job.failures[0].ends_with('…'));
        for i in 0..2 * MAX_FAILURES {
            job.note_failure(&format!("failure {i}"));
        }
        assert_eq!(job.failures.len(), MAX_FAILURES);
        assert_eq!(job.failures.last().unwrap(), &format!("failure {}", 2 * MAX_FAILURES - 1));
        job.note_failure("short");
        assert_eq!(job.failures.last().unwrap(), "short");
        // Three attempts, parked, queued again: attempt 4 is the first of a new round.
        job.attempt = 3;
        job.excluded = vec!["a".into(), "b".into()];
        assert_eq!(job.round_attempts(), 3);
        job.park("3 attempts failed".into(), 5_000);
        job.revive(65_000);
        assert_eq!((job.attempt, job.round_attempts(), job.state.clone()), (4, 1, JobState::Queued));
        assert!(job.excluded.is_empty() && job.parked_at_ms == 0);
        assert_eq!(job.failures.last().unwrap(), "queued again after 60 s parked dead");
        // A record stored before rounds existed reads as round one.
        let old = r#"{"batch":1,"attempt":2,"state":"queued","excluded":[],"failures":[],"queued_at_ms":5}"#;
        let old: JobRecord = serde_json::from_str(old).unwrap();
        assert_eq!((old.round_start, old.round_attempts(), old.parked_at_ms), (1, 2, 0));
    }
}
