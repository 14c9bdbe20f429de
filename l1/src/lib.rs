//! The L1 side of medrollup: the rollup contract on Ethereum is the source of
//! truth for state roots.
//!
//! - [`verifier`] writes the Solidity Groth16 verifier for a verifying key and
//!   encodes proofs and public inputs as its calldata;
//! - [`contracts`] has the bindings and the checked-in compiled contracts;
//! - [`fixtures`] writes the forge tests' proof fixtures with the real prover;
//! - [`submitter`] deploys the contracts on a dev chain and lands proven
//!   batches on chain in order, through nonce trouble, stuck and dropped
//!   transactions, reorgs and node restarts.

pub mod contracts;
pub mod devnet;
pub mod fixtures;
pub mod submitter;
pub mod verifier;

use ark_bn254::Bn254;
use ark_groth16::VerifyingKey;
use ark_serialize::CanonicalSerialize;
use medrollup_circuits::keys::CircuitShape;

/// The keys the checked-in verifier (`contracts/src/BatchVerifier.sol`) is
/// generated from: `medrollup-circuits setup --seed 1` with the default shape.
/// A seeded setup is a development ceremony (whoever knows the seed can forge
/// proofs); production keys come from a multi-party ceremony, and then the
/// verifier is regenerated from them (`make contracts KEYS=dir`).
pub mod canonical {
    use super::CircuitShape;
    /// The circuit shape.
    pub const SHAPE: CircuitShape = CircuitShape { batch_size: 4, levels: 12 };
    /// The setup seed.
    pub const SEED: u64 = 1;
}

/// sha256 (hex) of a verifying key's file bytes, as the key manifest records
/// it and the verifier contract exposes it.
pub fn vk_sha256(vk: &VerifyingKey<Bn254>) -> String {
    let mut bytes = Vec::new();
    vk.serialize_uncompressed(&mut bytes).expect("serialising to memory");
    medrollup_circuits::keys::sha256_hex(&bytes)
}
