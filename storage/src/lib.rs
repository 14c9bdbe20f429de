//! Content-addressed storage for batch data and encrypted records, with the
//! CIDs an IPFS node gives:
//!
//! - [`cid`]: CIDv1 (raw codec, sha2-256), printed in base32 as Kubo does,
//!   read from base32 or base58btc (what js-ipfs prints);
//! - [`content`]: the [`content::ContentStore`] trait and the embedded store
//!   (blocks as files named by CID; the default);
//! - [`unixfs`]: content beyond one chunk as the UnixFS DAG an IPFS node
//!   builds, so that its root CID is the node's;
//! - [`devnode`]: a js-ipfs daemon as a child process, for tests and benchmarks;
//! - [`kubo`]: a client of an IPFS node's RPC API (Kubo's `/api/v0`, which
//!   js-ipfs serves too).

pub mod cid;
pub mod content;
pub mod devnode;
pub mod kubo;
pub mod unixfs;
