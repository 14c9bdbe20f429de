//! The medrollup coordinator: takes signed transactions from a NATS JetStream
//! stream, decides and sequences them into batches on a durable state, farms
//! each batch's Groth16 proof to hospital workers over a JetStream work queue,
//! verifies every proof against public inputs it computed itself, and hands
//! proven batches, strictly in order, to the L1 sink.
//!
//! - [`sequencer`]: the rules and the batches (no I/O).
//! - [`store`]: what survives a crash (redb), written atomically per batch.
//! - [`content`] and [`cid`] (from `medrollup-storage`): content-addressed
//!   storage with IPFS's CIDs.
//! - [`service`]: the NATS glue, the farm, verification and ordering: [`run`].
//! - [`http`]: the HTTP API (transactions, batches, roots, Merkle proofs,
//!   farm status, `/metrics`, and the Kubo RPC subset for content).
//! - [`l1`]: proven batches land, in order, on the rollup contract on
//!   Ethereum (the submitter of `medrollup-l1`); without L1 settings,
//!   [`sink`] records them to a file.

pub mod config;
pub mod http;
pub mod l1;
pub mod metrics;
pub mod sequencer;
pub mod service;
pub mod sink;
pub mod store;
pub mod workload;

pub use config::Config;
pub use medrollup_storage::{cid, content, kubo};
pub use service::{CoordinatorError, run};
