//! Where proven batches go when no L1 is configured: [`RecordingSink`]
//! appends each batch, strictly in batch order, to a JSON-lines file. With L1
//! settings the submitter of [`crate::l1`] takes proven batches from the
//! database itself and lands them on the rollup contract.

use crate::store::BatchRecord;
use futures::future::BoxFuture;
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

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
///
/// The file is read once, at the first batch: a last line cut short (a
/// crash mid-write) is cut off, so the next line starts clean, and the last
/// batch recorded is kept in memory from then on.
#[derive(Debug)]
pub struct RecordingSink {
    path: PathBuf,
    /// The last batch in the file, once read (`Some(None)`: none).
    last: Mutex<Option<Option<u64>>>,
}

impl RecordingSink {
    /// Records into `path`.
    pub fn new(path: &Path) -> Self {
        Self { path: path.into(), last: Mutex::new(None) }
    }

    /// Appends `line` unless its batch (or a later one) is recorded already.
    pub fn record(&self, line: &SinkLine<'_>) -> Result<(), SinkError> {
        let mut last = self.last.lock().expect("sink lock");
        let recorded = match *last {
            Some(l) => l,
            None => *last.insert(self.read_last()?),
        };
        // Idempotent: a batch already recorded (before a crash that came
        // before the coordinator noted it) is not written twice.
        if recorded.is_some_and(|b| b >= line.batch) {
            return Ok(());
        }
        let mut text = serde_json::to_string(line).expect("serialises");
        text.push('\n');
        let at = |e: std::io::Error| SinkError(format!("{}: {e}", self.path.display()));
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&self.path).map_err(at)?;
        if let Err(e) = f.write_all(text.as_bytes()).and_then(|_| f.sync_data()) {
            // What reached the file is unknown: read it again next time.
            *last = None;
            return Err(at(e));
        }
        *last = Some(Some(line.batch));
        Ok(())
    }

    /// The last batch the file holds; a torn last line is cut off first.
    fn read_last(&self) -> Result<Option<u64>, SinkError> {
        let at = |e: std::io::Error| SinkError(format!("{}: {e}", self.path.display()));
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(at(e)),
        };
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if complete < bytes.len() {
            tracing::warn!(
                path = %self.path.display(),
                bytes = bytes.len() - complete,
                "the sink's last line was cut short (a crash mid-write): cutting it off"
            );
            let f = std::fs::OpenOptions::new().write(true).open(&self.path).map_err(at)?;
            f.set_len(complete as u64).and_then(|_| f.sync_data()).map_err(at)?;
        }
        let Some(line) = bytes[..complete].split(|&b| b == b'\n').rev().find(|l| !l.is_empty()) else {
            return Ok(None);
        };
        serde_json::from_slice::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v["batch"].as_u64())
            .map(Some)
            .ok_or_else(|| {
                SinkError(format!(
                    "{}: its last line is not a batch record: {}",
                    self.path.display(),
                    String::from_utf8_lossy(line)
                ))
            })
    }
}

impl ProofSink for RecordingSink {
    fn submit<'a>(&'a self, batch: &'a BatchRecord) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let proof = batch
                .proof
                .as_ref()
                .ok_or_else(|| SinkError(format!("batch {} has no proof", batch.batch)))?;
            self.record(&SinkLine {
                batch: batch.batch,
                public_inputs: &batch.public_inputs,
                cid: batch.cid.to_string(),
                proof: &proof.proof,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ark_bn254::Fr;
    use medrollup_circuits::batch::PublicInputs;

    fn line(batch: u64, public: &PublicInputs) -> SinkLine<'_> {
        SinkLine { batch, public_inputs: public, cid: format!("cid-{batch}"), proof: "00" }
    }

    fn batches(path: &Path) -> Vec<u64> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["batch"].as_u64().unwrap())
            .collect()
    }

    #[test]
    fn a_line_torn_by_a_crash_is_cut_off_and_no_batch_is_written_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l1-sink.jsonl");
        let public = PublicInputs {
            old_root: Fr::from(1u64),
            new_root: Fr::from(2u64),
            tx_commitment: Fr::from(3u64),
            timestamp: 4,
        };
        let sink = RecordingSink::new(&path);
        sink.record(&line(0, &public)).unwrap();
        sink.record(&line(1, &public)).unwrap();
        // A crash in the middle of batch 2's line.
        let mut torn = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        torn.write_all(br#"{"batch":2,"public_in"#).unwrap();
        drop(torn);

        let sink = RecordingSink::new(&path); // the coordinator restarted
        sink.record(&line(1, &public)).unwrap(); // offered again: recorded already
        sink.record(&line(2, &public)).unwrap();
        sink.record(&line(2, &public)).unwrap();
        sink.record(&line(3, &public)).unwrap();
        assert_eq!(batches(&path), [0, 1, 2, 3], "every line whole, each batch once");

        // A last line that is whole but not a record is said, not overwritten.
        std::fs::write(&path, "not json\n").unwrap();
        let e = RecordingSink::new(&path).record(&line(0, &public)).unwrap_err();
        assert!(e.to_string().contains("its last line is not a batch record: not json"), "{e}");
    }
}
