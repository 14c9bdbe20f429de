//! The messages medrollup's processes exchange, in one place, so that the
//! coordinator, the hospital workers and the clients agree on them.
//!
//! - Clients publish a [`SignedTx`](medrollup_circuits::tx::SignedTx) as JSON
//!   on [`subjects::TX_SUBMIT`] (the JetStream stream [`streams::TX`]), with
//!   the header `Nats-Msg-Id` set to [`tx_id`] of the payload, and read the
//!   coordinator's [`TxAnswer`] on [`subjects::answer`]`(id)` (subscribe first).
//! - The coordinator publishes a [`JobSpec`] per sealed batch on
//!   [`subjects::JOBS`] (a work queue); workers answer with a [`JobResult`] on
//!   [`subjects::result`]`(worker)` and heartbeat a [`WorkerInfo`].
//!
//! Everything is JSON: small, inspectable with the `nats` CLI, and the same
//! bodies serve the HTTP API.

use ark_bn254::Bn254;
use ark_groth16::Proof;
use ark_serialize::{CanonicalDeserialize, CanonicalSerialize};
use medrollup_circuits::batch::{BatchWitness, PublicInputs};
use medrollup_circuits::keys::CircuitShape;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What the service binaries share.
#[cfg(feature = "service")]
pub mod service {
    /// Logs to stderr: our crates at info, everything else at warn (arkworks'
    /// gadgets open info-level spans that record field elements, which would
    /// cost more than the proof itself); `RUST_LOG` overrides.
    pub fn init_logging() {
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn,medrollup_coordinator=info,medrollup_prover=info".into()),
            )
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }

    /// Completes on Ctrl-C or SIGTERM.
    pub async fn shutdown_signal() {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
}

pub mod natsconf;

/// NATS subjects.
pub mod subjects {
    /// Where clients publish transactions.
    pub const TX_SUBMIT: &str = "medrollup.tx.submit";
    /// Prefix of the answers to transactions.
    pub const ANSWER_PREFIX: &str = "medrollup.answer";
    /// Where the coordinator publishes proving jobs.
    pub const JOBS: &str = "medrollup.jobs";
    /// Prefix of the workers' results.
    pub const RESULT_PREFIX: &str = "medrollup.results";
    /// Prefix of the workers' heartbeats.
    pub const HEARTBEAT_PREFIX: &str = "medrollup.workers.heartbeat";

    /// The subject of the answer to the transaction with id `id` (see [`crate::tx_id`]).
    pub fn answer(id: &str) -> String {
        format!("{ANSWER_PREFIX}.{id}")
    }

    /// The subject a worker publishes its results on.
    pub fn result(worker: &str) -> String {
        format!("{RESULT_PREFIX}.{worker}")
    }

    /// The subject a worker heartbeats on.
    pub fn heartbeat(worker: &str) -> String {
        format!("{HEARTBEAT_PREFIX}.{worker}")
    }
}

/// JetStream streams, consumers and buckets.
pub mod streams {
    /// Every submitted transaction, kept (limits retention): the coordinator
    /// reads it from the sequence it has applied up to.
    pub const TX: &str = "MEDROLLUP_TX";
    /// Proving jobs (work-queue retention).
    pub const JOBS: &str = "MEDROLLUP_JOBS";
    /// The durable consumer all workers share on [`JOBS`].
    pub const JOBS_CONSUMER: &str = "provers";
    /// Workers' results.
    pub const RESULTS: &str = "MEDROLLUP_RESULTS";
    /// The coordinator's durable consumer on [`RESULTS`].
    pub const RESULTS_CONSUMER: &str = "coordinator";
    /// The server's advisories that a job ran out of deliveries, kept
    /// (work-queue retention) so that none is missed while the coordinator
    /// is away.
    pub const JOB_ADVISORIES: &str = "MEDROLLUP_JOB_ADVISORIES";
    /// The coordinator's durable consumer on [`JOB_ADVISORIES`].
    pub const JOB_ADVISORIES_CONSUMER: &str = "coordinator";
    /// Object store bucket of proving keys, each named by its sha256.
    pub const KEYS_BUCKET: &str = "medrollup-keys";
}

/// Largest transaction the coordinator takes (bytes of JSON); a signed
/// transaction is under 2 KiB.
pub const MAX_TX_BYTES: usize = 16 * 1024;

/// The id of a submitted payload: hex sha256 of its bytes. Clients compute it
/// for anything they send (even bytes that do not parse) to find the answer.
pub fn tx_id(payload: &[u8]) -> String {
    hex::encode(Sha256::digest(payload))
}

/// The coordinator's answer to a submitted transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxAnswer {
    /// [`tx_id`] of the payload.
    pub id: String,
    /// What happened to it.
    #[serde(flatten)]
    pub status: TxStatus,
}

/// What happened to a transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum TxStatus {
    /// Applied; it will be in batch `batch` at `position`.
    Accepted {
        /// Batch index.
        batch: u64,
        /// Slot within the batch.
        position: u32,
    },
    /// The same transaction was already applied (to batch `batch`).
    Duplicate {
        /// Batch it is in.
        batch: u64,
    },
    /// Refused; nothing changed.
    Rejected {
        /// A stable machine-readable code (`bad_nonce`, `malformed`, ...).
        code: String,
        /// What was wrong, for a person.
        reason: String,
    },
}

/// A proving job: one sealed batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Batch index.
    pub batch: u64,
    /// 1 for the first dispatch; higher after a rejected proof.
    pub attempt: u32,
    /// The circuit.
    pub shape: CircuitShape,
    /// sha256 of the proving key file, its name in [`streams::KEYS_BUCKET`].
    pub proving_key_sha256: String,
    /// Workers that must not take this job (their proof was rejected).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// The witness.
    pub witness: BatchWitness,
}

/// Time per proving stage, in seconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StageSeconds {
    /// Circuit synthesis (witness generation).
    pub synthesis: f64,
    /// Witness map and NTTs (with a GPU, the MSMs over the witness run
    /// meanwhile, and this includes waiting for a device busy with them).
    pub ntt: f64,
    /// All MSMs (their times on the backend, added: MSMs run side by side
    /// on several devices add up to more than the time they took).
    pub msm: f64,
    /// The whole proof, start to end (it can be less than the stages' sum,
    /// where they overlap).
    pub total: f64,
}

/// What a worker did with a job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum JobOutcome {
    /// A proof (arkworks compressed encoding, hex).
    Proved {
        /// The proof.
        proof: String,
        /// The backend that made it (`cpu`, `cuda:0`, ...).
        backend: String,
        /// Stage times.
        stages: StageSeconds,
    },
    /// The worker could not prove it.
    Failed {
        /// Why.
        reason: String,
    },
}

/// A worker's answer to a job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    /// Batch index.
    pub batch: u64,
    /// The job's attempt.
    pub attempt: u32,
    /// The worker's name.
    pub worker: String,
    /// What happened.
    #[serde(flatten)]
    pub outcome: JobOutcome,
}

/// A worker's heartbeat: who it is and what it can do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// Its name (unique in the farm).
    pub name: String,
    /// Backend (`cpu`, `cuda`, `opencl`).
    pub backend: String,
    /// Devices it proves on.
    pub devices: Vec<String>,
    /// CPU threads.
    pub threads: usize,
    /// Memory available, bytes.
    pub memory_bytes: u64,
    /// Jobs proved since it started.
    pub jobs_done: u64,
    /// Jobs it failed.
    pub jobs_failed: u64,
    /// Whether it is proving now.
    pub busy: bool,
}

/// A proof that does not decode.
#[derive(Debug, thiserror::Error)]
#[error("proof does not decode: {0}")]
pub struct ProofDecodeError(String);

/// A proof as hex of arkworks' compressed encoding.
pub fn encode_proof(proof: &Proof<Bn254>) -> String {
    let mut bytes = Vec::new();
    proof.serialize_compressed(&mut bytes).expect("writing to a Vec cannot fail");
    hex::encode(bytes)
}

/// The inverse of [`encode_proof`] (points are checked to be on the curve and
/// in the right subgroup; bytes past the proof are refused, so that a stored
/// proof is only ever one proof's encoding).
pub fn decode_proof(s: &str) -> Result<Proof<Bn254>, ProofDecodeError> {
    let bytes = hex::decode(s).map_err(|e| ProofDecodeError(format!("not hex: {e}")))?;
    let mut rest = bytes.as_slice();
    let proof = Proof::deserialize_compressed(&mut rest).map_err(|e| ProofDecodeError(e.to_string()))?;
    if !rest.is_empty() {
        return Err(ProofDecodeError(format!(
            "{} bytes follow the proof's {}",
            rest.len(),
            bytes.len() - rest.len()
        )));
    }
    Ok(proof)
}

/// A proof as stored by an earlier version, which kept the worker's hex as
/// sent: bytes after the proof (which that version let through) are
/// ignored, the proof having been verified when it was stored.
pub fn decode_stored_proof(s: &str) -> Result<Proof<Bn254>, ProofDecodeError> {
    let bytes = hex::decode(s).map_err(|e| ProofDecodeError(format!("not hex: {e}")))?;
    Proof::deserialize_compressed(bytes.as_slice()).map_err(|e| ProofDecodeError(e.to_string()))
}

/// A sealed batch as published for data availability (IPFS): anyone can
/// recompute its transaction commitment and check it against L1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchData {
    /// Batch index.
    pub batch: u64,
    /// Its public inputs.
    pub public_inputs: PublicInputs,
    /// Its transactions, padding included, in order.
    pub txs: Vec<medrollup_circuits::tx::SignedTx>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_have_a_flat_json_shape() {
        let a = TxAnswer { id: "ab".into(), status: TxStatus::Accepted { batch: 3, position: 1 } };
        let j = serde_json::to_value(&a).unwrap();
        assert_eq!(j, serde_json::json!({"id": "ab", "status": "accepted", "batch": 3, "position": 1}));
        let r: TxAnswer = serde_json::from_value(
            serde_json::json!({"id": "cd", "status": "rejected", "code": "bad_nonce", "reason": "x"}),
        )
        .unwrap();
        assert!(matches!(r.status, TxStatus::Rejected { ref code, .. } if code == "bad_nonce"));
    }

    #[test]
    fn tx_id_is_sha256_hex() {
        // sha256("") from FIPS 180-2's examples.
        assert_eq!(tx_id(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }

    #[test]
    fn garbage_proofs_are_refused() {
        assert!(decode_proof("zz").is_err());
        assert!(decode_proof("0102").is_err());
    }

    #[test]
    fn a_proof_with_bytes_after_it_is_refused() {
        use ark_ec::AffineRepr;
        let (g1, g2) = (ark_bn254::G1Affine::generator(), ark_bn254::G2Affine::generator());
        let proof = Proof::<Bn254> { a: g1, b: g2, c: (g1 + g1).into() };
        let hex = encode_proof(&proof);
        assert_eq!(decode_proof(&hex).unwrap(), proof);
        let e = decode_proof(&format!("{hex}00")).unwrap_err();
        assert!(e.to_string().contains("1 bytes follow the proof's 128"), "{e}");
        // One stored by an earlier version, which let them through, is read.
        assert_eq!(decode_stored_proof(&format!("{hex}00")).unwrap(), proof);
    }
}
