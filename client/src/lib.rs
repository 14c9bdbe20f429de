//! The patients' and doctors' client library.
//!
//! - [`keystore`]: a user's Baby Jubjub and RSA-3072 keys, and the
//!   password-encrypted file that keeps them (Argon2id, AES-256-GCM);
//! - [`envelope`]: FHIR R4 record bundles, checked and encrypted with a fresh
//!   AES-256-GCM key per record, the key wrapped with RSA-OAEP-SHA256 for
//!   each reader.
//!
//! - [`light`]: the light client, which believes a coordinator's answer only
//!   when its Merkle proof leads to the state root on the L1 contract.
//!
//! Storage (`medrollup-storage`) and the consent flows build on these.

pub mod envelope;
pub mod keystore;
pub mod light;
