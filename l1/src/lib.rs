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

/// Chains where keys from a seeded setup may be used without being asked:
/// anvil's and hardhat's (31337), geth's dev mode and ganache's (1337).
pub const DEV_CHAIN_IDS: [u64; 2] = [31337, 1337];

/// Refuses keys from a seeded setup (`seeded`: the manifest's
/// `deterministic`) on chain `chain_id` unless it is a development chain or
/// the operator `allowed` it (a test network, knowingly): anyone who knows
/// the seed (the canonical keys' is public) can make the setup again and
/// forge a proof of any state transition.
pub fn check_seeded_keys(seeded: bool, chain_id: u64, allowed: bool) -> Result<(), String> {
    if !seeded || allowed || DEV_CHAIN_IDS.contains(&chain_id) {
        return Ok(());
    }
    Err(format!(
        "the keys come from a seeded development setup: anyone who knows the seed can forge proofs, so \
         they are not used on chain {chain_id} (only on development chains {DEV_CHAIN_IDS:?}). Make \
         production keys in a multi-party ceremony and generate their verifier, or allow seeded keys \
         explicitly for a test network"
    ))
}

/// sha256 (hex) of a verifying key's file bytes, as the key manifest records
/// it and the verifier contract exposes it.
pub fn vk_sha256(vk: &VerifyingKey<Bn254>) -> String {
    let mut bytes = Vec::new();
    vk.serialize_uncompressed(&mut bytes).expect("serialising to memory");
    medrollup_circuits::keys::sha256_hex(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_keys_are_for_development_chains_only() {
        assert!(check_seeded_keys(true, 31337, false).is_ok());
        assert!(check_seeded_keys(true, 1337, false).is_ok());
        let e = check_seeded_keys(true, 1, false).unwrap_err();
        assert!(e.contains("on chain 1") && e.contains("forge proofs"), "{e}");
        assert!(check_seeded_keys(true, 11155111, true).is_ok(), "allowed knowingly");
        assert!(check_seeded_keys(false, 1, false).is_ok(), "a ceremony's keys");
    }
}
