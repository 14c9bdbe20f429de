//! Groth16 keys, proofs and verification for the batch circuit (ark-groth16;
//! the prover engine replaces the prover).
//!
//! Keys are stored in files named by the sha256 of their bytes, listed in a
//! `keys.json` manifest; loading checks each hash before deserialising.

use crate::batch::{BatchBuilder, BatchWitness, PublicInputs};
use crate::circuit::BatchCircuit;
use crate::field::Fr;
use crate::snarkjs;
use crate::state::{Genesis, State};
use ark_bn254::Bn254;
use ark_groth16::{Groth16, PreparedVerifyingKey, Proof, ProvingKey, VerifyingKey};
use ark_serialize::{CanonicalDeserialize, CanonicalSerialize};
use ark_snark::SNARK;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Errors of key handling, proving and verification.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A key file's content does not have the hash its manifest names.
    #[error("{path} is corrupt or was replaced: its sha256 is {actual}, the manifest says {expected}")]
    HashMismatch {
        /// The file.
        path: PathBuf,
        /// From the manifest.
        expected: String,
        /// Of the file.
        actual: String,
    },
    /// A file is not what it should be.
    #[error("{path} is not a valid {what}: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What was expected.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// The witness does not fit the keys.
    #[error(
        "the batch has {got_batch} slots at tree height {got_levels}; the keys are for {batch_size} slots at height {levels}"
    )]
    ShapeMismatch {
        /// Keys' batch size.
        batch_size: usize,
        /// Keys' tree height.
        levels: usize,
        /// Witness's batch size.
        got_batch: usize,
        /// Witness's tree height.
        got_levels: usize,
    },
    /// Groth16 failed (an unsatisfiable witness shows up here).
    #[error("proving failed: {0}")]
    Synthesis(#[from] ark_relations::gr1cs::SynthesisError),
}

/// The circuit a key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CircuitShape {
    /// Transactions per batch.
    pub batch_size: usize,
    /// Height of every tree (4^levels leaves).
    pub levels: usize,
}

/// `keys.json`: which files hold the keys of which circuit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyManifest {
    /// The circuit.
    pub shape: CircuitShape,
    /// Proving key file (relative to the manifest).
    pub proving_key: String,
    /// Its sha256.
    pub proving_key_sha256: String,
    /// Verifying key file.
    pub verifying_key: String,
    /// Its sha256.
    pub verifying_key_sha256: String,
    /// The verifying key in snarkjs's JSON format.
    pub verifying_key_snarkjs: String,
    /// Constraints in the circuit.
    pub constraints: usize,
    /// Whether the keys came from a seeded (reproducible, insecure) setup.
    pub deterministic: bool,
}

/// A padding-only batch of the given shape: a witness for setup.
pub fn padding_witness(shape: CircuitShape) -> BatchWitness {
    let genesis = Genesis { instance: Fr::from(0u64), levels: shape.levels, hospitals: vec![] };
    let mut st = State::genesis(&genesis).expect("empty genesis");
    BatchBuilder::new(&mut st, shape.batch_size, 0).finish()
}

/// Number of constraints of the circuit of `shape`.
pub fn constraint_count(shape: CircuitShape) -> usize {
    use ark_relations::gr1cs::{ConstraintSynthesizer, ConstraintSystem};
    let cs = ConstraintSystem::<Fr>::new_ref();
    BatchCircuit::new(padding_witness(shape)).generate_constraints(cs.clone()).expect("synthesis");
    cs.num_constraints()
}

/// The warning printed with every setup.
pub const DEV_CEREMONY_WARNING: &str = "WARNING: this is a single-party development setup. Whoever ran it can forge proofs. Production keys need a multi-party ceremony (e.g. a Powers of Tau phase 1 plus a circuit-specific phase 2).";

/// Generates keys (a development ceremony). With a seed the keys are
/// reproducible, and so is the toxic waste: never use seeded keys in production.
pub fn setup(shape: CircuitShape, seed: Option<u64>) -> Result<ProvingKey<Bn254>, KeyError> {
    let mut rng = match seed {
        Some(s) => ChaCha20Rng::seed_from_u64(s),
        None => ChaCha20Rng::from_entropy(),
    };
    let (pk, _) =
        Groth16::<Bn254>::circuit_specific_setup(BatchCircuit::new(padding_witness(shape)), &mut rng)?;
    Ok(pk)
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    std::fs::write(path, bytes).map_err(|source| KeyError::Io { path: path.into(), source })
}

fn read(path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|source| KeyError::Io { path: path.into(), source })
}

/// Hex sha256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Writes the keys into `dir` under content-hash names, with the manifest
/// (`keys.json`) and the snarkjs verifying key; returns the manifest.
pub fn write_keys(
    dir: &Path,
    shape: CircuitShape,
    pk: &ProvingKey<Bn254>,
    deterministic: bool,
) -> Result<KeyManifest, KeyError> {
    std::fs::create_dir_all(dir).map_err(|source| KeyError::Io { path: dir.into(), source })?;
    let mut pk_bytes = Vec::new();
    pk.serialize_uncompressed(&mut pk_bytes).expect("serialising to memory");
    let mut vk_bytes = Vec::new();
    pk.vk.serialize_uncompressed(&mut vk_bytes).expect("serialising to memory");
    let (pk_hash, vk_hash) = (sha256_hex(&pk_bytes), sha256_hex(&vk_bytes));
    let pk_name = format!("pk-{}.bin", &pk_hash[..16]);
    let vk_name = format!("vk-{}.bin", &vk_hash[..16]);
    let vk_json = format!("vk-{}.json", &vk_hash[..16]);
    write(&dir.join(&pk_name), &pk_bytes)?;
    write(&dir.join(&vk_name), &vk_bytes)?;
    let snark = serde_json::to_vec_pretty(&snarkjs::verifying_key(&pk.vk)).expect("json");
    write(&dir.join(&vk_json), &snark)?;
    let manifest = KeyManifest {
        shape,
        proving_key: pk_name,
        proving_key_sha256: pk_hash,
        verifying_key: vk_name,
        verifying_key_sha256: vk_hash,
        verifying_key_snarkjs: vk_json,
        constraints: constraint_count(shape),
        deterministic,
    };
    write(&dir.join("keys.json"), &serde_json::to_vec_pretty(&manifest).expect("json"))?;
    Ok(manifest)
}

/// Reads `keys.json` from `dir`.
pub fn read_manifest(dir: &Path) -> Result<KeyManifest, KeyError> {
    let path = dir.join("keys.json");
    serde_json::from_slice(&read(&path)?).map_err(|e| KeyError::Malformed {
        path,
        what: "key manifest",
        reason: e.to_string(),
    })
}

fn read_checked(dir: &Path, name: &str, sha256: &str) -> Result<Vec<u8>, KeyError> {
    let path = dir.join(name);
    let bytes = read(&path)?;
    let actual = sha256_hex(&bytes);
    if actual != sha256 {
        return Err(KeyError::HashMismatch { path, expected: sha256.into(), actual });
    }
    Ok(bytes)
}

/// Loads the proving key named by the manifest in `dir`, checking its hash.
pub fn load_proving_key(dir: &Path) -> Result<(KeyManifest, ProvingKey<Bn254>), KeyError> {
    let m = read_manifest(dir)?;
    let bytes = read_checked(dir, &m.proving_key, &m.proving_key_sha256)?;
    let pk = decode_proving_key(&bytes, dir.join(&m.proving_key))?;
    Ok((m, pk))
}

/// A proving key from its file's bytes, after checking them against the
/// sha256 it is known by (a worker fetching a key from the farm).
pub fn proving_key_from_bytes(bytes: &[u8], sha256: &str) -> Result<ProvingKey<Bn254>, KeyError> {
    let origin = PathBuf::from(format!("proving key {sha256}"));
    let actual = sha256_hex(bytes);
    if actual != sha256 {
        return Err(KeyError::HashMismatch { path: origin, expected: sha256.into(), actual });
    }
    decode_proving_key(bytes, origin)
}

/// Decodes hash-checked proving key bytes. The hash is the integrity check;
/// skipping the curve checks of every point keeps loading fast.
fn decode_proving_key(bytes: &[u8], origin: PathBuf) -> Result<ProvingKey<Bn254>, KeyError> {
    ProvingKey::deserialize_uncompressed_unchecked(bytes).map_err(|e| KeyError::Malformed {
        path: origin,
        what: "proving key",
        reason: e.to_string(),
    })
}

/// Loads the verifying key named by the manifest in `dir`, checking its hash and its points.
pub fn load_verifying_key(dir: &Path) -> Result<(KeyManifest, VerifyingKey<Bn254>), KeyError> {
    let m = read_manifest(dir)?;
    let bytes = read_checked(dir, &m.verifying_key, &m.verifying_key_sha256)?;
    let vk = VerifyingKey::deserialize_uncompressed(&bytes[..]).map_err(|e| KeyError::Malformed {
        path: dir.join(&m.verifying_key),
        what: "verifying key",
        reason: e.to_string(),
    })?;
    Ok((m, vk))
}

/// Proves a batch.
pub fn prove(
    pk: &ProvingKey<Bn254>,
    shape: CircuitShape,
    witness: BatchWitness,
) -> Result<(Proof<Bn254>, PublicInputs), KeyError> {
    if witness.batch_size() != shape.batch_size || witness.levels != shape.levels {
        return Err(KeyError::ShapeMismatch {
            batch_size: shape.batch_size,
            levels: shape.levels,
            got_batch: witness.batch_size(),
            got_levels: witness.levels,
        });
    }
    let public = witness.public_inputs();
    let proof = Groth16::<Bn254>::prove(pk, BatchCircuit::new(witness), &mut ChaCha20Rng::from_entropy())?;
    Ok((proof, public))
}

/// Verifies a proof of a batch with the given public inputs.
pub fn verify(pvk: &PreparedVerifyingKey<Bn254>, public: &PublicInputs, proof: &Proof<Bn254>) -> bool {
    Groth16::<Bn254>::verify_with_processed_vk(pvk, &public.to_vec(), proof).unwrap_or(false)
}

/// Prepares a verifying key.
pub fn prepare(vk: &VerifyingKey<Bn254>) -> PreparedVerifyingKey<Bn254> {
    ark_groth16::prepare_verifying_key(vk)
}
