//! Content-addressed storage of batch data and encrypted records: the trait
//! the coordinator uses, and the embedded store (the default) that gives the
//! same CIDs as an IPFS node and that the coordinator serves over HTTP as the
//! subset of the Kubo RPC API clients need.

use crate::cid::Cid;
use futures::future::BoxFuture;
use std::path::{Path, PathBuf};

/// One IPFS chunk (Kubo's default chunker, 256 KiB): within it the CID of the
/// content is the CID of its bytes as a raw leaf; beyond it the content is a
/// UnixFS DAG ([`crate::unixfs`]) whose root CID an IPFS node gives too.
pub const MAX_BLOCK: usize = crate::unixfs::CHUNK;

/// Largest content the stores take (an encrypted record, a batch's data).
pub const MAX_CONTENT: usize = 64 * 1024 * 1024;

/// What went wrong in a content store.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// The content is larger than the stores take.
    #[error("content is {0} bytes; at most {MAX_CONTENT} bytes per object")]
    TooLarge(usize),
    /// A stored block does not decode.
    #[error("{0}")]
    Corrupted(String),
    /// No such content.
    #[error("{0} is not in the store")]
    NotFound(Cid),
    /// The disk.
    #[error("storage I/O at {path}: {source}")]
    Io {
        /// Where.
        path: PathBuf,
        /// What.
        source: std::io::Error,
    },
    /// A remote store (an IPFS node) failed.
    #[error("remote store: {0}")]
    Remote(String),
}

/// A content-addressed store: put bytes, get them back by CID, pin them.
pub trait ContentStore: Send + Sync + std::fmt::Debug {
    /// Stores `bytes`, returns their CID.
    fn add(&self, bytes: Vec<u8>) -> BoxFuture<'_, Result<Cid, ContentError>>;
    /// The bytes of `cid`.
    fn cat(&self, cid: Cid) -> BoxFuture<'_, Result<Vec<u8>, ContentError>>;
    /// Whether `cid` can be fetched.
    fn has(&self, cid: Cid) -> BoxFuture<'_, Result<bool, ContentError>>;
    /// Keeps `cid` from garbage collection.
    fn pin(&self, cid: Cid) -> BoxFuture<'_, Result<(), ContentError>>;
    /// Lets `cid` go: a revoked record's old ciphertext, a deleted record.
    fn unpin(&self, cid: Cid) -> BoxFuture<'_, Result<(), ContentError>>;
}

/// Blocks as files named by CID in a directory; content larger than one
/// chunk is stored as its UnixFS blocks. Every object is pinned while it
/// exists (`pin` checks that it does); `unpin` deletes it at once.
#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    dir: PathBuf,
}

impl EmbeddedStore {
    /// A store in `dir` (created if missing).
    pub fn open(dir: &Path) -> Result<Self, ContentError> {
        std::fs::create_dir_all(dir).map_err(|source| ContentError::Io { path: dir.into(), source })?;
        Ok(Self { dir: dir.into() })
    }

    fn path(&self, cid: &Cid) -> PathBuf {
        self.dir.join(cid.to_string())
    }

    fn put_block(&self, cid: Cid, bytes: &[u8]) -> Result<(), ContentError> {
        let path = self.path(&cid);
        if !path.exists() {
            // Write then rename: a crash never leaves a partial block under its CID.
            let tmp = self.dir.join(format!(".{cid}.tmp"));
            std::fs::write(&tmp, bytes).map_err(|source| ContentError::Io { path: tmp.clone(), source })?;
            std::fs::rename(&tmp, &path).map_err(|source| ContentError::Io { path: path.clone(), source })?;
        }
        Ok(())
    }

    fn add_sync(&self, bytes: &[u8]) -> Result<Cid, ContentError> {
        if bytes.len() > MAX_CONTENT {
            return Err(ContentError::TooLarge(bytes.len()));
        }
        // Leaves before the nodes that name them, the root last.
        let dag = crate::unixfs::import(bytes);
        for b in &dag.blocks {
            self.put_block(b.cid, &b.bytes)?;
        }
        Ok(dag.root())
    }

    fn block(&self, cid: Cid) -> Result<Vec<u8>, ContentError> {
        let path = self.path(&cid);
        match std::fs::read(&path) {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ContentError::NotFound(cid)),
            Err(source) => Err(ContentError::Io { path, source }),
        }
    }

    fn cat_sync(&self, cid: Cid) -> Result<Vec<u8>, ContentError> {
        crate::unixfs::export(cid, &mut |c| self.block(c))
    }

    fn remove(&self, cid: Cid) -> Result<(), ContentError> {
        if cid.codec() == crate::cid::DAG_PB {
            for child in crate::unixfs::links(&self.block(cid)?)? {
                self.remove(child)?;
            }
        }
        let path = self.path(&cid);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            // A leaf that appears twice in this DAG (repeated content),
            // removed already. Leaves shared with other content would go
            // too: encrypted records never share any (fresh keys and nonces).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && cid.codec() == crate::cid::RAW => Ok(()),
            Err(source) => Err(ContentError::Io { path, source }),
        }
    }
}

impl From<crate::unixfs::DecodeError> for ContentError {
    fn from(e: crate::unixfs::DecodeError) -> Self {
        ContentError::Corrupted(e.to_string())
    }
}

impl ContentStore for EmbeddedStore {
    fn add(&self, bytes: Vec<u8>) -> BoxFuture<'_, Result<Cid, ContentError>> {
        Box::pin(async move { self.add_sync(&bytes) })
    }

    fn cat(&self, cid: Cid) -> BoxFuture<'_, Result<Vec<u8>, ContentError>> {
        Box::pin(async move { self.cat_sync(cid) })
    }

    fn has(&self, cid: Cid) -> BoxFuture<'_, Result<bool, ContentError>> {
        Box::pin(async move { Ok(self.path(&cid).exists()) })
    }

    fn pin(&self, cid: Cid) -> BoxFuture<'_, Result<(), ContentError>> {
        Box::pin(
            async move { if self.path(&cid).exists() { Ok(()) } else { Err(ContentError::NotFound(cid)) } },
        )
    }

    fn unpin(&self, cid: Cid) -> BoxFuture<'_, Result<(), ContentError>> {
        Box::pin(async move {
            if !self.path(&cid).exists() {
                return Err(ContentError::NotFound(cid));
            }
            self.remove(cid)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn add_cat_pin_round_trip_and_limits() {
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::open(dir.path()).unwrap();
        let cid = s.add(b"record".to_vec()).await.unwrap();
        assert_eq!(cid, Cid::of(b"record"));
        assert_eq!(s.cat(cid).await.unwrap(), b"record");
        assert!(s.has(cid).await.unwrap());
        s.pin(cid).await.unwrap();
        let missing = Cid::of(b"never added");
        assert!(!s.has(missing).await.unwrap());
        assert!(matches!(s.cat(missing).await, Err(ContentError::NotFound(_))));
        assert!(matches!(s.pin(missing).await, Err(ContentError::NotFound(_))));
        let big: Vec<u8> = (0..3 * MAX_BLOCK + 5).map(|i| (i * 7) as u8).collect();
        let big_cid = s.add(big.clone()).await.unwrap();
        assert_eq!(big_cid, crate::unixfs::import(&big).root());
        assert_eq!(s.cat(big_cid).await.unwrap(), big);
        s.unpin(big_cid).await.unwrap();
        assert!(matches!(s.cat(big_cid).await, Err(ContentError::NotFound(_))));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "its blocks are gone too");
        let e = s.add(vec![0u8; MAX_CONTENT + 1]).await.unwrap_err();
        assert!(e.to_string().contains("at most 67108864 bytes"), "{e}");
        // Adding again is idempotent.
        assert_eq!(s.add(b"record".to_vec()).await.unwrap(), cid);
        s.unpin(cid).await.unwrap();
        assert!(!s.has(cid).await.unwrap(), "unpinned content is gone");
        assert!(matches!(s.unpin(cid).await, Err(ContentError::NotFound(_))));
    }
}
