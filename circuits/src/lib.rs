//! The rollup core of medrollup.
//!
//! Everything else in the workspace proves, checks or submits what this crate
//! defines:
//! - primitives, each native and as an R1CS gadget: [`poseidon`] (circomlib's
//!   parameters), [`babyjub`] and [`eddsa`] (circomlib's EdDSA-Poseidon), and
//!   fixed-depth quaternary Poseidon Merkle trees ([`merkle`]);
//! - the healthcare state and its rules ([`state`], [`tx`]): accounts, records,
//!   consents and the audit log, where every violation is a typed error;
//! - the Groth16 batch circuit ([`circuit`]) that enforces the same rules, the
//!   batch witness builder ([`batch`]), and keys, proofs and their snarkjs
//!   export ([`keys`], [`snarkjs`]).

pub mod babyjub;
pub mod batch;
pub mod circuit;
pub mod cli;
pub mod eddsa;
pub mod field;
pub mod keys;
pub mod merkle;
pub mod poseidon;
pub mod sample;
pub mod snarkjs;
pub mod state;
pub mod tx;

#[cfg(test)]
mod testdata;

pub use field::Fr;
