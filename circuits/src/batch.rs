//! Batches: the sequencer applies transactions to the state, pads to the
//! circuit's fixed size with no-ops, and keeps everything a prover needs (the
//! witness) and the four public inputs.

use crate::field::{Fr, serde_fr};
use crate::poseidon;
use crate::state::{State, TxError, TxTrace, state_root};
use crate::tx::SignedTx;
use ark_ff::Zero;
use serde::{Deserialize, Serialize};

/// The batch circuit's public inputs, in their order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicInputs {
    /// State root before the batch.
    #[serde(with = "serde_fr")]
    pub old_root: Fr,
    /// State root after the batch.
    #[serde(with = "serde_fr")]
    pub new_root: Fr,
    /// `c_B` where `c_0 = 0`, `c_i = Poseidon(c_{i-1}, message_i)` over the
    /// batch's transactions, padding included: anyone holding the batch data
    /// published on IPFS recomputes it and compares with L1.
    #[serde(with = "serde_fr")]
    pub tx_commitment: Fr,
    /// The batch time (Unix seconds), against which expiries are checked.
    pub timestamp: u64,
}

impl PublicInputs {
    /// As field elements, in circuit order.
    pub fn to_vec(&self) -> Vec<Fr> {
        vec![self.old_root, self.new_root, self.tx_commitment, Fr::from(self.timestamp)]
    }
}

/// Commitment to a batch's transactions.
pub fn tx_commitment<'a>(instance: Fr, txs: impl IntoIterator<Item = &'a SignedTx>) -> Fr {
    txs.into_iter().fold(Fr::zero(), |c, tx| poseidon::hash2(c, tx.tx.message(instance)))
}

/// Everything the batch circuit needs: the prover's witness.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchWitness {
    /// Tree height.
    pub levels: usize,
    /// Rollup instance id.
    #[serde(with = "serde_fr")]
    pub instance: Fr,
    /// Tree roots before.
    #[serde(with = "serde_fr::array")]
    pub old_roots: [Fr; 4],
    /// Audit entries before.
    pub old_audit_count: u64,
    /// Tree roots after.
    #[serde(with = "serde_fr::array")]
    pub new_roots: [Fr; 4],
    /// Audit entries after.
    pub new_audit_count: u64,
    /// Batch time.
    pub timestamp: u64,
    /// One trace per slot, padding included.
    pub txs: Vec<TxTrace>,
}

impl BatchWitness {
    /// The public inputs this witness proves.
    pub fn public_inputs(&self) -> PublicInputs {
        PublicInputs {
            old_root: state_root(self.instance, &self.old_roots, self.old_audit_count),
            new_root: state_root(self.instance, &self.new_roots, self.new_audit_count),
            tx_commitment: tx_commitment(self.instance, self.txs.iter().map(|t| &t.tx)),
            timestamp: self.timestamp,
        }
    }

    /// Slots in the batch.
    pub fn batch_size(&self) -> usize {
        self.txs.len()
    }
}

/// Why a transaction did not go into a batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The batch has no free slot.
    #[error("the batch is full ({0} transactions)")]
    Full(usize),
    /// The transaction breaks a rule.
    #[error(transparent)]
    Rejected(#[from] TxError),
}

/// A batch being filled, held apart from the state it applies to (so a
/// long-running sequencer can keep it between events): every call takes the
/// same state, which must not change in between by any other path.
#[derive(Debug, Clone)]
pub struct OpenBatch {
    batch_size: usize,
    timestamp: u64,
    old_roots: [Fr; 4],
    old_audit_count: u64,
    traces: Vec<TxTrace>,
}

impl OpenBatch {
    /// Opens a batch of `batch_size` slots at `timestamp` on `state`.
    pub fn new(state: &State, batch_size: usize, timestamp: u64) -> Self {
        Self {
            batch_size,
            timestamp,
            old_roots: state.roots(),
            old_audit_count: state.audit_count(),
            traces: Vec::new(),
        }
    }

    /// Checks and applies one transaction; a refused one leaves the state as it was.
    pub fn push(&mut self, state: &mut State, tx: &SignedTx) -> Result<(), PushError> {
        self.push_with(state, tx, true)
    }

    /// Applies a transaction without checking it, as a cheating sequencer
    /// would (for tests that show the circuit refuses the result).
    pub fn push_unchecked(&mut self, state: &mut State, tx: &SignedTx) -> Result<(), PushError> {
        self.push_with(state, tx, false)
    }

    fn push_with(&mut self, state: &mut State, tx: &SignedTx, checked: bool) -> Result<(), PushError> {
        if self.traces.len() == self.batch_size {
            return Err(PushError::Full(self.batch_size));
        }
        let trace =
            if checked { state.apply(tx, self.timestamp)? } else { state.execute(tx, self.timestamp)? };
        self.traces.push(trace);
        Ok(())
    }

    /// Transactions so far.
    pub fn len(&self) -> usize {
        self.traces.len()
    }

    /// Whether no transaction was added.
    pub fn is_empty(&self) -> bool {
        self.traces.is_empty()
    }

    /// Whether every slot is taken.
    pub fn is_full(&self) -> bool {
        self.traces.len() == self.batch_size
    }

    /// The batch time.
    pub fn timestamp(&self) -> u64 {
        self.timestamp
    }

    /// Pads with no-ops and returns the witness.
    pub fn finish(mut self, state: &mut State) -> BatchWitness {
        while self.traces.len() < self.batch_size {
            let t = state.execute(&SignedTx::noop(), self.timestamp).expect("no-op fits");
            self.traces.push(t);
        }
        BatchWitness {
            levels: state.levels(),
            instance: state.instance(),
            old_roots: self.old_roots,
            old_audit_count: self.old_audit_count,
            new_roots: state.roots(),
            new_audit_count: state.audit_count(),
            timestamp: self.timestamp,
            txs: self.traces,
        }
    }
}

/// Builds one batch on top of a state it borrows.
#[derive(Debug)]
pub struct BatchBuilder<'s> {
    state: &'s mut State,
    open: OpenBatch,
}

impl<'s> BatchBuilder<'s> {
    /// Starts a batch of `batch_size` slots at `timestamp`.
    pub fn new(state: &'s mut State, batch_size: usize, timestamp: u64) -> Self {
        let open = OpenBatch::new(state, batch_size, timestamp);
        Self { state, open }
    }

    /// Checks and applies one transaction; a refused one leaves the state as it was.
    pub fn push(&mut self, tx: &SignedTx) -> Result<(), PushError> {
        self.open.push(self.state, tx)
    }

    /// Applies a transaction without checking it, as a cheating sequencer
    /// would (for tests that show the circuit refuses the result).
    pub fn push_unchecked(&mut self, tx: &SignedTx) -> Result<(), PushError> {
        self.open.push_unchecked(self.state, tx)
    }

    /// Transactions so far.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// Whether no transaction was added.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Pads with no-ops and returns the witness.
    pub fn finish(self) -> BatchWitness {
        self.open.finish(self.state)
    }
}
