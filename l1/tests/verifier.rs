//! The checked-in verifier and compiled code belong to the canonical keys.

use medrollup_circuits::keys;
use medrollup_l1::contracts::verifier_artifact;
use medrollup_l1::{canonical, verifier, vk_sha256};

#[test]
fn the_checked_in_verifier_is_generated_from_the_canonical_keys() {
    let pk = keys::setup(canonical::SHAPE, Some(canonical::SEED)).unwrap();
    let hash = vk_sha256(&pk.vk);
    let generated = verifier::solidity(&pk.vk, &hash, "BatchVerifier").unwrap();
    let checked_in = include_str!("../../contracts/src/BatchVerifier.sol");
    assert!(
        generated == checked_in,
        "contracts/src/BatchVerifier.sol is not the verifier of the canonical keys: run scripts/contracts"
    );
    assert_eq!(verifier_artifact().vk_sha256.as_deref(), Some(hash.as_str()), "compiled verifier's key hash");
    let fixtures = include_str!("../../contracts/test/Fixtures.sol");
    assert!(fixtures.contains(&format!("VK_SHA256 = 0x{hash}")), "forge fixtures are for other keys");
}
