//! Where proven batches go when no L1 is configured: [`RecordingSink`]
//! appends each batch, strictly in batch order, to a JSON-lines file. With L1
//! settings the submitter of [`crate::l1`] takes proven batches from the
//! database itself and lands them on the rollup contract.

use crate::store::BatchRecord;
use futures::future::BoxFuture;
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A sink failure (the batch stays queued and is offered again).
#[derive(Debug, thiserror::Error)]
#[error("proof sink: {0}")]
pub struct SinkError(pub String);

/// Takes proven batches in order.
pub trait ProofSink: Send + Sync + std::fmt::Debug {
    /// Hands over batch `batch` (all earlier ones were handed over before).
    fn submit<'a>(&'a self, batch: &'a BatchRecord) -> BoxFuture<'a, Result<(), SinkError>>;
}

/// One line of the recording sink.
#[derive(Debug, Serialize)]
pub struct SinkLine<'a> {
    /// Batch index.
    pub batch: u64,
    /// Public inputs.
    pub public_inputs: &'a medrollup_circuits::batch::PublicInputs,
    /// Batch data CID.
    pub cid: String,
    /// Proof (hex).
    pub proof: &'a str,
}

/// Appends every batch to a JSON-lines file.
#[derive(Debug)]
pub struct RecordingSink {
    path: PathBuf,
}

impl RecordingSink {
    /// Records into `path`.
    pub fn new(path: &Path) -> Self {
        Self { path: path.into() }
    }
}

impl ProofSink for RecordingSink {
    fn submit<'a>(&'a self, batch: &'a BatchRecord) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            // Idempotent: a batch already recorded (before a crash that came
            // before the coordinator noted it) is not written twice.
            if let Ok(existing) = std::fs::read_to_string(&self.path)
                && let Some(last) = existing.lines().last()
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(last)
                && v["batch"].as_u64().is_some_and(|b| b >= batch.batch)
            {
                return Ok(());
            }
            let proof = batch
                .proof
                .as_ref()
                .ok_or_else(|| SinkError(format!("batch {} has no proof", batch.batch)))?;
            let line = SinkLine {
                batch: batch.batch,
                public_inputs: &batch.public_inputs,
                cid: batch.cid.to_string(),
                proof: &proof.proof,
            };
            let mut text = serde_json::to_string(&line).expect("serialises");
            text.push('\n');
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(|e| SinkError(format!("{}: {e}", self.path.display())))?;
            f.write_all(text.as_bytes()).and_then(|_| f.sync_data()).map_err(|e| SinkError(e.to_string()))
        })
    }
}
