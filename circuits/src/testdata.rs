//! Test vectors produced by independent implementations, loaded by the tests.
//!
//! `circuits/testdata/circomlibjs_vectors.json` is written by
//! `circuits/js/gen-vectors.mjs` with circomlibjs 0.1.7 (npm), the reference
//! JavaScript implementation of circomlib's Poseidon, Baby Jubjub and EdDSA.

use serde::Deserialize;

/// One Poseidon case.
#[derive(Debug, Deserialize)]
pub struct PoseidonCase {
    pub inputs: Vec<String>,
    pub output: String,
}

/// One point addition.
#[derive(Debug, Deserialize)]
pub struct AddCase {
    pub p: [String; 2],
    pub q: [String; 2],
    pub r: [String; 2],
}

/// One scalar multiplication.
#[derive(Debug, Deserialize)]
pub struct MulCase {
    pub p: [String; 2],
    pub k: String,
    pub r: [String; 2],
}

/// Baby Jubjub vectors.
#[derive(Debug, Deserialize)]
pub struct BabyJub {
    pub base8: [String; 2],
    pub sub_order: String,
    pub add: Vec<AddCase>,
    pub mul: Vec<MulCase>,
}

/// One EdDSA-Poseidon signature made by circomlibjs.
#[derive(Debug, Deserialize)]
pub struct EddsaCase {
    pub prv: String,
    pub msg: String,
    pub r#pub: [String; 2],
    pub r8: [String; 2],
    pub s: String,
}

/// One BLAKE-512 digest (npm blake-hash, the hash circomlibjs derives keys with).
#[derive(Debug, Deserialize)]
pub struct BlakeCase {
    pub input_hex: String,
    pub output_hex: String,
}

/// A quaternary Poseidon Merkle root computed by circomlibjs's poseidon.
#[derive(Debug, Deserialize)]
pub struct MerkleCase {
    pub levels: usize,
    pub leaves: std::collections::BTreeMap<u64, String>,
    pub root: String,
}

/// The whole vectors file.
#[derive(Debug, Deserialize)]
pub struct CircomlibVectors {
    #[allow(dead_code)]
    pub source: String,
    pub poseidon: Vec<PoseidonCase>,
    pub babyjub: BabyJub,
    pub eddsa: Vec<EddsaCase>,
    pub blake512: Vec<BlakeCase>,
    pub merkle4: Vec<MerkleCase>,
}

impl CircomlibVectors {
    /// Loads the checked-in file.
    pub fn load() -> Self {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/circomlibjs_vectors.json");
        let text = std::fs::read_to_string(path).expect("circomlibjs_vectors.json is checked in");
        serde_json::from_str(&text).expect("circomlibjs_vectors.json parses")
    }
}
