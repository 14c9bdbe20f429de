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
//! - [`session`]: the flows (register, add and update records, grant,
//!   revoke with re-keying, delete, read with the access logged, emergency
//!   access, consents and audit log) as library calls.
//!
//! - [`portal`]: the patients' and doctors' web page, served from the user's
//!   own machine over [`session`] (`medrollup-client portal`).
//!
//! - [`replay`]: the rollup checked from outside: every batch on L1 replayed
//!   from its published data (`medrollup-client verify-chain`).

pub mod envelope;
pub mod keystore;
pub mod light;
pub mod portal;
pub mod replay;
pub mod session;
