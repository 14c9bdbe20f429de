//! The sequencer: decides every submitted transaction against the current
//! state, applies the accepted ones in stream order to an open batch, and
//! seals batches (padding with no-ops). Synchronous and free of I/O: the
//! service feeds it and persists what it returns.

use crate::cid::{Cid, DAG_PB};
use crate::store::{BatchRecord, JobRecord, Seal};
use medrollup_circuits::batch::{BatchWitness, OpenBatch, PublicInputs, PushError};
use medrollup_circuits::field::{Fr, fr_to_le32};
use medrollup_circuits::keys::CircuitShape;
use medrollup_circuits::state::{Genesis, Leaf, State, TreeId, TxError};
use medrollup_circuits::tx::{SignedTx, TxBody, record_meta_hash};
use medrollup_wire::{MAX_TX_BYTES, TxAnswer, TxStatus};
use std::collections::HashMap;

/// Why the stored batches cannot be replayed onto the genesis state.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The genesis does not fit the circuit or is invalid.
    #[error("genesis: {0}")]
    Genesis(TxError),
    /// The genesis tree height differs from the circuit's.
    #[error(
        "genesis has trees of height {genesis}, the circuit {circuit}; use the keys made for this genesis"
    )]
    Levels {
        /// The genesis's.
        genesis: usize,
        /// The circuit's.
        circuit: usize,
    },
    /// The stored leaves do not give the state the batches say.
    #[error("the state stored leaf by leaf after {through} batches {why}")]
    Leaves {
        /// Batches the leaves include.
        through: u64,
        /// What differed.
        why: String,
    },
    /// A stored batch does not reproduce.
    #[error(
        "stored batch {batch} does not replay: {why} (the database belongs to another genesis or was altered)"
    )]
    Replay {
        /// Which.
        batch: u64,
        /// What differed.
        why: String,
    },
}

/// A transaction parsed and ready to decide.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// Its id (hash of the payload).
    pub id: String,
    /// The transaction.
    pub tx: SignedTx,
}

impl Parsed {
    /// The CIDs a record transaction's content may have (it must be
    /// fetchable under one of them): the one its metadata hash names first.
    pub fn record_cids(&self) -> Option<[Cid; 2]> {
        match &self.tx.tx.body {
            TxBody::AddRecord { cid_digest, meta_hash, .. }
            | TxBody::UpdateRecord { cid_digest, meta_hash, .. } => {
                let [raw, dag_pb] = Cid::candidates(*cid_digest);
                Some(if *meta_hash == record_meta_hash(DAG_PB) { [dag_pb, raw] } else { [raw, dag_pb] })
            }
            _ => None,
        }
    }
}

fn rejected(id: &str, code: &str, reason: impl Into<String>) -> TxAnswer {
    TxAnswer { id: id.into(), status: TxStatus::Rejected { code: code.into(), reason: reason.into() } }
}

/// Parses a submitted payload, or says what is wrong with it.
pub fn parse(payload: &[u8]) -> Result<Parsed, TxAnswer> {
    let id = medrollup_wire::tx_id(payload);
    if payload.len() > MAX_TX_BYTES {
        return Err(rejected(
            &id,
            "too_large",
            format!("{} bytes; a transaction is at most {MAX_TX_BYTES} bytes of JSON", payload.len()),
        ));
    }
    let tx: SignedTx = serde_json::from_slice(payload)
        .map_err(|e| rejected(&id, "malformed", format!("not a signed transaction in JSON: {e}")))?;
    if matches!(tx.tx.body, TxBody::Noop) {
        return Err(rejected(
            &id,
            "padding_only",
            "no-op transactions are batch padding; clients cannot submit them",
        ));
    }
    Ok(Parsed { id, tx })
}

/// The hex of a transaction's signed message: its identity for duplicates.
pub fn message_hex(tx: &SignedTx, instance: Fr) -> String {
    hex::encode(fr_to_le32(&tx.tx.message(instance)))
}

struct Open {
    batch: OpenBatch,
    ids: Vec<String>,
    txs: Vec<SignedTx>,
    messages: HashMap<String, u32>,
}

/// A sealed batch, ready to persist and publish.
#[derive(Debug, Clone)]
pub struct Sealed {
    /// Index.
    pub batch: u64,
    /// Witness.
    pub witness: BatchWitness,
    /// Ids of the submitted transactions, in order.
    pub tx_ids: Vec<String>,
    /// All transactions, padding included.
    pub txs: Vec<SignedTx>,
    /// Messages (hex) of the submitted transactions.
    pub messages: Vec<String>,
    /// The leaves it wrote, with their fields after it.
    pub leaves: Vec<(TreeId, u64, Leaf)>,
    /// Audit entries after it.
    pub audit_count: u64,
}

/// Brings `behind`, a copy of `ahead` from before a batch, up to it: the
/// paths of the leaves the batch wrote are copied (a clone of the whole
/// state would take time that grows with the state at every seal). Debug
/// builds compare the two whole while the state is small (as in the tests'
/// farms), where the comparison costs little.
pub fn follow(behind: &mut State, ahead: &State, written: &[(TreeId, u64, Leaf)]) {
    behind.copy_written_from(ahead, written.iter().map(|(t, i, _)| (*t, *i)));
    debug_assert!(ahead.leaf_count() > 4096 || behind == ahead, "a copy of the written leaves missed some");
}

/// Stored batches replayed onto the genesis state, one at a time.
#[derive(Debug)]
pub struct Replayer {
    state: State,
    shape: CircuitShape,
    next_batch: u64,
    last_timestamp: u64,
}

impl Replayer {
    /// Batches replayed so far.
    pub fn batches(&self) -> u64 {
        self.next_batch
    }

    /// Replays the next stored batch: it must give the public inputs it was
    /// sealed with.
    pub fn replay(&mut self, rec: &BatchRecord) -> Result<(), RestoreError> {
        let n = self.next_batch;
        if rec.batch != n {
            return Err(RestoreError::Replay {
                batch: n,
                why: format!("found batch {} in its place", rec.batch),
            });
        }
        if rec.txs.len() != rec.tx_ids.len() {
            let why = format!("{} transactions stored for {} ids", rec.txs.len(), rec.tx_ids.len());
            return Err(RestoreError::Replay { batch: n, why });
        }
        let timestamp = rec.public_inputs.timestamp;
        let mut open = OpenBatch::new(&self.state, self.shape.batch_size, timestamp);
        for tx in &rec.txs {
            open.push(&mut self.state, tx).map_err(|e| RestoreError::Replay {
                batch: n,
                why: format!("a transaction is refused: {e}"),
            })?;
        }
        let w = open.finish(&mut self.state);
        if w.public_inputs() != rec.public_inputs {
            return Err(RestoreError::Replay { batch: n, why: "public inputs differ".into() });
        }
        self.last_timestamp = timestamp;
        self.next_batch += 1;
        Ok(())
    }

    /// The sequencer after the batches replayed.
    pub fn done(self) -> Sequencer {
        Sequencer::at(self.state, self.shape, self.next_batch, self.last_timestamp)
    }
}

impl Sealed {
    /// Its stored record, with the CID of its published data.
    pub fn record(&self, cid: Cid, sealed_at_ms: u64) -> BatchRecord {
        BatchRecord {
            batch: self.batch,
            public_inputs: self.witness.public_inputs(),
            cid,
            tx_ids: self.tx_ids.clone(),
            txs: self.txs[..self.tx_ids.len()].to_vec(),
            sealed_at_ms,
            proof: None,
            submitted: false,
        }
    }

    /// Everything stored with it: `record`, its job, the `answers` given
    /// since the previous seal and the stream sequence decided up to.
    pub fn to_store<'a>(
        &'a self,
        record: &'a BatchRecord,
        job: &'a JobRecord,
        answers: &'a [TxAnswer],
        applied_seq: u64,
    ) -> Seal<'a> {
        Seal {
            batch: record,
            witness: &self.witness,
            job,
            answers,
            applied: &self.messages,
            applied_seq,
            leaves: &self.leaves,
            audit_count: self.audit_count,
        }
    }
}

/// The sequencer.
pub struct Sequencer {
    state: State,
    sealed_state: State,
    shape: CircuitShape,
    open: Option<Open>,
    next_batch: u64,
    last_timestamp: u64,
}

impl std::fmt::Debug for Sequencer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sequencer")
            .field("shape", &self.shape)
            .field("next_batch", &self.next_batch)
            .field("open", &self.open.as_ref().map(|o| o.ids.len()))
            .finish()
    }
}

impl Sequencer {
    /// Starts from the genesis state, to replay stored batches one by one.
    pub fn replayer(genesis: &Genesis, shape: CircuitShape) -> Result<Replayer, RestoreError> {
        if genesis.levels != shape.levels {
            return Err(RestoreError::Levels { genesis: genesis.levels, circuit: shape.levels });
        }
        let state = State::genesis(genesis).map_err(RestoreError::Genesis)?;
        Ok(Replayer { state, shape, next_batch: 0, last_timestamp: 0 })
    }

    fn at(state: State, shape: CircuitShape, next_batch: u64, last_timestamp: u64) -> Self {
        Self { sealed_state: state.clone(), state, shape, open: None, next_batch, last_timestamp }
    }

    /// The state after `through` batches rebuilt from its stored leaves, with
    /// no replay. `first` and `last` are the public inputs of the first and
    /// the last of those batches (`None` with no batch): the first must start
    /// from this genesis's root and the leaves give the last one's new root.
    pub fn resume(
        genesis: &Genesis,
        shape: CircuitShape,
        through: u64,
        leaves: impl IntoIterator<Item = (TreeId, u64, Leaf)>,
        audit_count: u64,
        first_and_last: Option<(&PublicInputs, &PublicInputs)>,
    ) -> Result<Self, RestoreError> {
        let genesis_root = Self::replayer(genesis, shape)?.state.root();
        let fail = |why: String| RestoreError::Leaves { through, why };
        let state = State::from_leaves(genesis.instance, genesis.levels, leaves, audit_count)
            .map_err(|e| fail(format!("do not make a state (altered?): {e}")))?;
        let (expected, last_timestamp) = match (through, first_and_last) {
            (0, None) => (genesis_root, 0),
            (n, Some((first, last))) if n > 0 => {
                if first.old_root != genesis_root {
                    return Err(fail(
                        "follow a first batch that does not start from the genesis state".into(),
                    ));
                }
                (last.new_root, last.timestamp)
            }
            (n, _) => {
                return Err(fail(format!(
                    "come with {} batches' public inputs",
                    if n == 0 { "some" } else { "no" }
                )));
            }
        };
        if state.root() != expected {
            return Err(fail("do not give the root the last batch sealed (altered, or kept wrong)".into()));
        }
        Ok(Self::at(state, shape, through, last_timestamp))
    }

    /// The state as of the last sealed batch (what proofs and L1 speak of).
    pub fn sealed_state(&self) -> &State {
        &self.sealed_state
    }

    /// The circuit's shape.
    pub fn shape(&self) -> CircuitShape {
        self.shape
    }

    /// Index the next sealed batch will have.
    pub fn next_batch(&self) -> u64 {
        self.next_batch
    }

    /// Transactions in the open batch.
    pub fn open_len(&self) -> usize {
        self.open.as_ref().map_or(0, |o| o.ids.len())
    }

    /// The open batch's timestamp, if a batch is open.
    pub fn open_timestamp(&self) -> Option<u64> {
        self.open.as_ref().map(|o| o.batch.timestamp())
    }

    /// Whether the open batch has no free slot.
    pub fn is_full(&self) -> bool {
        self.open.as_ref().is_some_and(|o| o.batch.is_full())
    }

    /// Decides a parsed transaction at time `now` (Unix seconds).
    /// `applied_in` says in which sealed batch a message was applied, if any;
    /// `content_ok` whether a record transaction's content can be fetched.
    pub fn admit(
        &mut self,
        p: &Parsed,
        now: u64,
        applied_in: impl FnOnce(&str) -> Option<u64>,
        content_ok: bool,
    ) -> TxAnswer {
        let found = |m: &str| Ok::<_, std::convert::Infallible>(applied_in(m));
        self.try_admit(p, now, found, content_ok).unwrap_or_else(|never| match never {})
    }

    /// [`Self::admit`] where finding whether the message was applied can
    /// fail: then nothing is decided (nor changed), and the error returned.
    /// (Taken for "not applied", a transaction applied before would be
    /// answered as refused for its nonce.)
    pub fn try_admit<E>(
        &mut self,
        p: &Parsed,
        now: u64,
        applied_in: impl FnOnce(&str) -> Result<Option<u64>, E>,
        content_ok: bool,
    ) -> Result<TxAnswer, E> {
        let message = message_hex(&p.tx, self.state.instance());
        if let Some(o) = &self.open
            && o.messages.contains_key(&message)
        {
            return Ok(TxAnswer { id: p.id.clone(), status: TxStatus::Duplicate { batch: self.next_batch } });
        }
        if let Some(batch) = applied_in(&message)? {
            return Ok(TxAnswer { id: p.id.clone(), status: TxStatus::Duplicate { batch } });
        }
        Ok(self.admit_new(p, now, message, content_ok))
    }

    /// Decides a transaction not seen before.
    fn admit_new(&mut self, p: &Parsed, now: u64, message: String, content_ok: bool) -> TxAnswer {
        if !content_ok {
            return rejected(
                &p.id,
                "record_content_missing",
                "the record's content (CIDv1, raw or dag-pb, sha256 = cid_digest) cannot be fetched from the content store; add it first (or the store is down: send the transaction again)",
            );
        }
        let open = self.open.get_or_insert_with(|| {
            let ts = now.max(self.last_timestamp);
            Open {
                batch: OpenBatch::new(&self.state, self.shape.batch_size, ts),
                ids: Vec::new(),
                txs: Vec::new(),
                messages: HashMap::new(),
            }
        });
        match open.batch.push(&mut self.state, &p.tx) {
            Ok(()) => {
                let position = open.ids.len() as u32;
                open.ids.push(p.id.clone());
                open.txs.push(p.tx.clone());
                open.messages.insert(message, position);
                TxAnswer { id: p.id.clone(), status: TxStatus::Accepted { batch: self.next_batch, position } }
            }
            Err(PushError::Rejected(e)) => {
                let answer = rejected(&p.id, e.code(), e.to_string());
                if open.ids.is_empty() {
                    self.open = None;
                }
                answer
            }
            Err(PushError::Full(_)) => unreachable!("a full batch is sealed before the next transaction"),
        }
    }

    /// Seals the open batch, if it holds any transaction.
    pub fn seal(&mut self) -> Option<Sealed> {
        let open = self.open.take()?;
        let witness = open.batch.finish(&mut self.state);
        self.last_timestamp = witness.timestamp;
        let batch = self.next_batch;
        self.next_batch += 1;
        let txs: Vec<SignedTx> = witness.txs.iter().map(|t| t.tx.clone()).collect();
        let leaves = self.state.written_by(&witness.txs);
        follow(&mut self.sealed_state, &self.state, &leaves);
        let mut messages: Vec<(String, u32)> = open.messages.into_iter().collect();
        messages.sort_by_key(|(_, pos)| *pos);
        Some(Sealed {
            batch,
            witness,
            tx_ids: open.ids,
            txs,
            messages: messages.into_iter().map(|(m, _)| m).collect(),
            leaves,
            audit_count: self.state.audit_count(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use medrollup_circuits::sample;

    fn seq() -> Sequencer {
        Sequencer::replayer(&sample::genesis(5), CircuitShape { batch_size: 4, levels: 5 }).unwrap().done()
    }

    fn payload(tx: &SignedTx) -> Vec<u8> {
        serde_json::to_vec(tx).unwrap()
    }

    #[test]
    fn accepts_in_order_seals_full_batches_and_answers_duplicates() {
        let mut s = seq();
        let txs = sample::transactions();
        for (i, tx) in txs.iter().take(4).enumerate() {
            let p = parse(&payload(tx)).unwrap();
            let a = s.admit(&p, sample::NOW, |_| None, true);
            assert_eq!(a.status, TxStatus::Accepted { batch: 0, position: i as u32 }, "{a:?}");
        }
        assert!(s.is_full());
        let sealed = s.seal().unwrap();
        assert_eq!(sealed.batch, 0);
        assert_eq!(sealed.tx_ids.len(), 4);
        assert_eq!(sealed.messages.len(), 4);
        assert_eq!(s.sealed_state().root(), sealed.witness.public_inputs().new_root);
        // The same transaction again: a duplicate (the store knows its batch).
        let p = parse(&payload(&txs[0])).unwrap();
        let m = message_hex(&txs[0], s.sealed_state().instance());
        let a = s.admit(&p, sample::NOW, |q| (q == m).then_some(0), true);
        assert_eq!(a.status, TxStatus::Duplicate { batch: 0 });
        // And a replay inside the open batch.
        let p5 = parse(&payload(&txs[4])).unwrap();
        assert!(matches!(
            s.admit(&p5, sample::NOW, |_| None, true).status,
            TxStatus::Accepted { batch: 1, .. }
        ));
        assert_eq!(s.admit(&p5, sample::NOW, |_| None, true).status, TxStatus::Duplicate { batch: 1 });
        assert_eq!(s.seal().unwrap().witness.txs.len(), 4, "padded to the batch size");
    }

    #[test]
    fn a_failed_look_for_an_earlier_batch_decides_and_changes_nothing() {
        let mut s = seq();
        let txs = sample::transactions();
        let p = parse(&payload(&txs[0])).unwrap();
        let e = s.try_admit(&p, sample::NOW, |_| Err("the database cannot be read"), true).unwrap_err();
        assert_eq!(e, "the database cannot be read");
        assert!(s.open_timestamp().is_none(), "no batch opened");
        // Looked up again, it is decided as if the failure never happened.
        let a = s.try_admit(&p, sample::NOW, |_| Ok::<_, &str>(None), true).unwrap();
        assert_eq!(a.status, TxStatus::Accepted { batch: 0, position: 0 });
    }

    #[test]
    fn bad_input_gets_a_reason_and_changes_nothing() {
        let mut s = seq();
        let root = s.sealed_state().root();
        let e = parse(b"\x00\xffgarbage").unwrap_err();
        assert!(matches!(&e.status, TxStatus::Rejected { code, .. } if code == "malformed"));
        let e = parse(&vec![b' '; MAX_TX_BYTES + 1]).unwrap_err();
        assert!(matches!(&e.status, TxStatus::Rejected { code, .. } if code == "too_large"));
        let e = parse(&payload(&SignedTx::noop())).unwrap_err();
        assert!(matches!(&e.status, TxStatus::Rejected { code, .. } if code == "padding_only"));
        // A wrong nonce: the second transaction of the sample first.
        let txs = sample::transactions();
        let p = parse(&payload(&txs[4])).unwrap();
        let a = s.admit(&p, sample::NOW, |_| None, true);
        assert!(matches!(&a.status, TxStatus::Rejected { code, .. } if code == "unknown_account"), "{a:?}");
        // A forged signature.
        let mut forged = txs[0].clone();
        forged.tx.nonce += 1;
        let a = s.admit(&parse(&payload(&forged)).unwrap(), sample::NOW, |_| None, true);
        assert!(matches!(&a.status, TxStatus::Rejected { .. }), "{a:?}");
        // Record content that the storage lacks.
        let a = s.admit(&parse(&payload(&txs[0])).unwrap(), sample::NOW, |_| None, false);
        assert!(matches!(&a.status, TxStatus::Rejected { code, .. } if code == "record_content_missing"));
        assert_eq!(s.open_len(), 0);
        assert!(s.seal().is_none(), "nothing accepted, nothing to seal");
        assert_eq!(s.sealed_state().root(), root);
    }
}
