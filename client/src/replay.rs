//! The rollup checked from outside: every batch on L1 replayed from the data
//! its `BatchSubmitted` event points to, with no coordinator involved.
//!
//! The proof binds a batch's transactions to L1 only through their
//! commitment; the CID in the event is the sequencer's word for where they
//! are. Replaying closes that gap: the data under each CID must decode, each
//! transaction must apply to the state (signatures, nonces, every rule), and
//! the batch must come out with exactly the roots, commitment and timestamp
//! that L1 holds. Anyone (a hospital, a regulator, a patient) can run it;
//! a sequencer that published other data than it proved, or none, is caught
//! at the first such batch, and the state it ends at is the chain's, rebuilt
//! without trusting the coordinator.

use alloy::primitives::{Address, B256};
use alloy::providers::DynProvider;
use medrollup_circuits::batch::OpenBatch;
use medrollup_circuits::state::{Genesis, State};
use medrollup_circuits::tx::TxBody;
use medrollup_l1::submitter::{self as l1, L1Error, root_word};
use medrollup_storage::cid::Cid;
use medrollup_storage::content::ContentStore;
use medrollup_wire::BatchData;

/// The most transactions one batch's data may hold (the largest circuit
/// this project sets up has 64 slots): more is refused before replaying.
pub const MAX_BATCH_TXS: usize = 4096;

/// What a replay found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    /// Batches replayed (all on chain when the events were read).
    pub batches: u64,
    /// Real transactions among them (padding not counted).
    pub transactions: u64,
    /// The root after the last one: L1's.
    pub root: B256,
}

/// Why the chain does not check out, or could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// L1 could not be read.
    #[error(transparent)]
    L1(#[from] L1Error),
    /// The genesis given is not the rollup's.
    #[error(
        "the genesis given has root {ours}, the rollup started from {chain}: replay with the rollup's genesis"
    )]
    Genesis {
        /// Its root.
        ours: B256,
        /// The contract's genesis root.
        chain: B256,
    },
    /// The events are not batches 0, 1, 2, ... (read across a reorg).
    #[error("L1's events skip from batch {expected} to {got}: the chain moved while it was read; run again")]
    Gap {
        /// The index expected next.
        expected: u64,
        /// The one found.
        got: u64,
    },
    /// A batch's data cannot be had: the sequencer withheld it, or the
    /// content store lost or cannot reach it.
    #[error("batch {index}: its data {cid} cannot be had: {why}")]
    Unavailable {
        /// Batch index.
        index: u64,
        /// The CID from L1.
        cid: String,
        /// What the content store said.
        why: String,
    },
    /// A batch's data is not a batch's, or not this one's.
    #[error("batch {index}: its data {cid} is not valid batch data: {why}")]
    Malformed {
        /// Batch index.
        index: u64,
        /// The CID from L1.
        cid: String,
        /// What is wrong.
        why: String,
    },
    /// A transaction in the data does not apply.
    #[error("batch {index}: transaction {position} of its data does not apply: {why}")]
    Invalid {
        /// Batch index.
        index: u64,
        /// Its position in the batch.
        position: usize,
        /// The rule it breaks.
        why: String,
    },
    /// The data replays to other values than L1 holds.
    #[error("batch {index}: its data replays to {field} {data}, but L1 holds {chain}")]
    Mismatch {
        /// Batch index.
        index: u64,
        /// Which public input.
        field: &'static str,
        /// What the replay gives.
        data: String,
        /// What the event says.
        chain: String,
    },
}

/// Replays every batch of `rollup` (read through `provider`) from
/// `genesis`, fetching the data from `store`; `progress` hears of each batch
/// replayed (its index and real transactions). Stops at the first batch that
/// does not check out, naming it and why.
pub async fn replay_chain(
    provider: &DynProvider,
    rollup: Address,
    store: &dyn ContentStore,
    genesis: &Genesis,
    mut progress: impl FnMut(u64, usize),
) -> Result<Replayed, ReplayError> {
    let mut state = State::genesis(genesis).map_err(|e| ReplayError::Malformed {
        index: 0,
        cid: "(genesis)".into(),
        why: format!("the genesis given does not build: {e}"),
    })?;
    let code = alloy::providers::Provider::get_code_at(provider, rollup)
        .await
        .map_err(|e| L1Error::Rpc(format!("reading the rollup's code: {e}")))?;
    if code.is_empty() {
        return Err(L1Error::Config(format!("no contract at {rollup}: is it the rollup's address?")).into());
    }
    let chain_genesis =
        l1::root_after(provider, rollup, 0).await?.expect("the root after no batch is the genesis root");
    let ours = root_word(&state.root());
    if ours != chain_genesis {
        return Err(ReplayError::Genesis { ours, chain: chain_genesis });
    }
    let events = l1::batch_records(provider, rollup).await?;
    let mut transactions = 0u64;
    for (expected, event) in (0u64..).zip(&events) {
        if event.index != expected {
            return Err(ReplayError::Gap { expected, got: event.index });
        }
        let real = replay_batch(&mut state, store, event).await?;
        transactions += real as u64;
        progress(event.index, real);
    }
    Ok(Replayed { batches: events.len() as u64, transactions, root: root_word(&state.root()) })
}

/// Applies one batch's published data to `state`; returns its real
/// transactions.
async fn replay_batch(
    state: &mut State,
    store: &dyn ContentStore,
    event: &l1::BatchEvent,
) -> Result<usize, ReplayError> {
    let index = event.index;
    let cid_text = format!("0x{}", hex::encode(&event.cid));
    let malformed = |cid: &str, why: String| ReplayError::Malformed { index, cid: cid.to_string(), why };
    let cid = Cid::from_bytes(&event.cid).map_err(|e| malformed(&cid_text, format!("the CID on L1: {e}")))?;
    let cid_text = cid.to_string();
    let bytes = store.cat(cid).await.map_err(|e| ReplayError::Unavailable {
        index,
        cid: cid_text.clone(),
        why: e.to_string(),
    })?;
    let data: BatchData = serde_json::from_slice(&bytes)
        .map_err(|e| malformed(&cid_text, format!("not batch data JSON: {e}")))?;
    if data.batch != index {
        return Err(malformed(&cid_text, format!("it is the data of batch {}", data.batch)));
    }
    if data.txs.is_empty() || data.txs.len() > MAX_BATCH_TXS {
        return Err(malformed(
            &cid_text,
            format!("{} transactions (a batch has 1 to {MAX_BATCH_TXS})", data.txs.len()),
        ));
    }
    // Replayed at L1's timestamp: it is what the proof was checked against.
    let mut open = OpenBatch::new(state, data.txs.len(), event.timestamp);
    let mut real = 0;
    for (position, tx) in data.txs.iter().enumerate() {
        // Padding is added by `finish`, after the real transactions; a
        // padding slot among them changes the commitment, caught below.
        if matches!(tx.tx.body, TxBody::Noop) {
            continue;
        }
        open.push(state, tx).map_err(|e| ReplayError::Invalid { index, position, why: e.to_string() })?;
        real += 1;
    }
    let got = open.finish(state).public_inputs();
    let checks = [
        ("old root", root_word(&got.old_root), event.old_root),
        ("new root", root_word(&got.new_root), event.new_root),
        ("transaction commitment", root_word(&got.tx_commitment), event.tx_commitment),
    ];
    for (field, data, chain) in checks {
        if data != chain {
            return Err(ReplayError::Mismatch {
                index,
                field,
                data: data.to_string(),
                chain: chain.to_string(),
            });
        }
    }
    Ok(real)
}
