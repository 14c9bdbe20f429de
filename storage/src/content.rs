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
    /// Not pinned on its own: a block of other content (or never added).
    #[error("{0} is not pinned: it is a block of other content, not content added on its own")]
    NotPinned(Cid),
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
/// chunk is stored as its UnixFS blocks. What was added (or pinned) is a
/// root, marked in `.roots/`; `unpin` takes a root's mark away and deletes
/// its blocks at once, except those another root still reaches (as an IPFS
/// node's garbage collection would keep them). A block of other content is
/// not unpinned on its own.
#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    dir: PathBuf,
    /// Adds, pins and unpins one at a time (an unpin's sweep must not race
    /// an add of a block it is deleting).
    writing: std::sync::Arc<std::sync::Mutex<()>>,
}

impl EmbeddedStore {
    /// A store in `dir` (created if missing). A store from before roots
    /// were marked gets its marks: every block no other block links to.
    pub fn open(dir: &Path) -> Result<Self, ContentError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ContentError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let store = Self { dir: dir.into(), writing: Default::default() };
        // Blocks a crash left half-written under their temporary names.
        for e in std::fs::read_dir(dir).map_err(io(dir))?.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.ends_with(".tmp") {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let roots = store.roots_dir();
        if !roots.exists() {
            let marking = dir.join(".roots.new");
            let _ = std::fs::remove_dir_all(&marking);
            std::fs::create_dir(&marking).map_err(io(&marking))?;
            let blocks = store.blocks()?;
            let mut linked = std::collections::HashSet::new();
            for &b in blocks.iter().filter(|b| b.codec() == crate::cid::DAG_PB) {
                linked.extend(crate::unixfs::links(&store.block(b)?)?);
            }
            for b in blocks.iter().filter(|b| !linked.contains(b)) {
                std::fs::write(marking.join(b.to_string()), b"").map_err(io(&marking))?;
            }
            std::fs::rename(&marking, &roots).map_err(io(&roots))?;
        }
        Ok(store)
    }

    fn path(&self, cid: &Cid) -> PathBuf {
        self.dir.join(cid.to_string())
    }

    fn roots_dir(&self) -> PathBuf {
        self.dir.join(".roots")
    }

    fn mark(&self, cid: &Cid) -> PathBuf {
        self.roots_dir().join(cid.to_string())
    }

    /// Marks `cid` a root, durably (the mark is what keeps it).
    fn set_mark(&self, cid: Cid) -> Result<(), ContentError> {
        let path = self.mark(&cid);
        std::fs::write(&path, b"").map_err(|source| ContentError::Io { path, source })?;
        sync_dir(&self.roots_dir())
    }

    /// The CIDs of the files in `dir` (blocks, or marks in `.roots`).
    fn cids_in(dir: &Path) -> Result<Vec<Cid>, ContentError> {
        let entries =
            std::fs::read_dir(dir).map_err(|source| ContentError::Io { path: dir.into(), source })?;
        let mut out = Vec::new();
        for e in entries {
            let e = e.map_err(|source| ContentError::Io { path: dir.into(), source })?;
            if let Some(cid) = e.file_name().to_str().and_then(|n| n.parse::<Cid>().ok()) {
                out.push(cid);
            }
        }
        Ok(out)
    }

    fn blocks(&self) -> Result<Vec<Cid>, ContentError> {
        Self::cids_in(&self.dir)
    }

    /// `cid` and every block below it that is here.
    fn dag(&self, cid: Cid, out: &mut std::collections::HashSet<Cid>) -> Result<(), ContentError> {
        if !out.insert(cid) || cid.codec() != crate::cid::DAG_PB {
            return Ok(());
        }
        match self.block(cid) {
            Ok(node) => {
                for child in crate::unixfs::links(&node)? {
                    self.dag(child, out)?;
                }
                Ok(())
            }
            // A damaged node's links cannot be read: it counts as a leaf
            // (its own blocks may go with its content; no other unpin stops).
            Err(ContentError::NotFound(_) | ContentError::Corrupted(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn unpin_sync(&self, cid: Cid) -> Result<(), ContentError> {
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let mark = self.mark(&cid);
        if !mark.exists() {
            return Err(if self.path(&cid).exists() {
                ContentError::NotPinned(cid)
            } else {
                ContentError::NotFound(cid)
            });
        }
        // What the other roots reach stays. The blocks go before the mark: a
        // crash between leaves the mark, and unpinning again finishes.
        let mut kept = std::collections::HashSet::new();
        for root in Self::cids_in(&self.roots_dir())?.into_iter().filter(|r| *r != cid) {
            self.dag(root, &mut kept)?;
        }
        let mut gone = std::collections::HashSet::new();
        self.dag(cid, &mut gone)?;
        for b in gone.difference(&kept) {
            let path = self.path(b);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(ContentError::Io { path, source }),
            }
        }
        std::fs::remove_file(&mark).map_err(|source| ContentError::Io { path: mark, source })
    }

    /// Stores a block unless an intact copy is there: one damaged on disk
    /// is written again.
    fn put_block(&self, cid: Cid, bytes: &[u8]) -> Result<(), ContentError> {
        match self.block(cid) {
            Ok(_) => return Ok(()),
            Err(ContentError::NotFound(_) | ContentError::Corrupted(_)) => {}
            Err(e) => return Err(e),
        }
        // Written in full and synced under a name of its own, then renamed:
        // a crash never leaves a partial block under its CID, and two
        // writers do not share a temporary file.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = self.dir.join(format!(".{cid}.{}.{n}.tmp", std::process::id()));
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ContentError::Io { path, source }
        };
        let written = (|| {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()
        })();
        if let Err(e) = written.map_err(io(&tmp)) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        let path = self.path(&cid);
        std::fs::rename(&tmp, &path).map_err(io(&path))
    }

    fn add_sync(&self, bytes: &[u8]) -> Result<Cid, ContentError> {
        if bytes.len() > MAX_CONTENT {
            return Err(ContentError::TooLarge(bytes.len()));
        }
        // Leaves before the nodes that name them, the root last; the
        // directory synced (the renames are durable), then the root's mark.
        let dag = crate::unixfs::import(bytes);
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        for b in &dag.blocks {
            self.put_block(b.cid, &b.bytes)?;
        }
        sync_dir(&self.dir)?;
        self.set_mark(dag.root())?;
        Ok(dag.root())
    }

    /// A block's bytes, checked against its CID: a block damaged on disk is
    /// never served as content.
    fn block(&self, cid: Cid) -> Result<Vec<u8>, ContentError> {
        let path = self.path(&cid);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ContentError::NotFound(cid)),
            Err(source) => return Err(ContentError::Io { path, source }),
        };
        if <sha2::Sha256 as sha2::Digest>::digest(&bytes)[..] != cid.digest() {
            return Err(ContentError::Corrupted(format!(
                "block {cid} ({}) is damaged: its bytes do not hash to its CID (adding the content again repairs it)",
                path.display()
            )));
        }
        Ok(bytes)
    }

    /// Pins `cid` once every block of it is here and intact (a root marked
    /// already is not marked again: no directory sync).
    fn pin_sync(&self, cid: Cid) -> Result<(), ContentError> {
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        self.cat_sync(cid)?;
        if self.mark(&cid).exists() {
            return Ok(());
        }
        self.set_mark(cid)
    }

    fn cat_sync(&self, cid: Cid) -> Result<Vec<u8>, ContentError> {
        crate::unixfs::export(cid, &mut |c| self.block(c))
    }
}

/// Makes the entries of `dir` (new files, renames) durable. A file system
/// that cannot sync a directory (some network and FUSE mounts refuse it)
/// gives what it gives.
fn sync_dir(dir: &Path) -> Result<(), ContentError> {
    match std::fs::File::open(dir).and_then(|d| d.sync_all()) {
        Err(e) if matches!(e.kind(), std::io::ErrorKind::InvalidInput | std::io::ErrorKind::Unsupported) => {
            Ok(())
        }
        r => r.map_err(|source| ContentError::Io { path: dir.into(), source }),
    }
}

impl EmbeddedStore {
    /// Runs `f` on a clone of the store off the async threads (disk reads
    /// and writes of up to [`MAX_CONTENT`], fsyncs, sweeps).
    fn blocking<T: Send + 'static>(
        &self,
        what: String,
        f: impl FnOnce(&EmbeddedStore) -> Result<T, ContentError> + Send + 'static,
    ) -> BoxFuture<'static, Result<T, ContentError>> {
        let store = self.clone();
        let dir = self.dir.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || f(&store)).await.map_err(|e| ContentError::Io {
                path: dir,
                source: std::io::Error::other(format!("{what}: the store's task failed: {e}")),
            })?
        })
    }
}

impl From<crate::unixfs::DecodeError> for ContentError {
    fn from(e: crate::unixfs::DecodeError) -> Self {
        ContentError::Corrupted(e.to_string())
    }
}

impl ContentStore for EmbeddedStore {
    fn add(&self, bytes: Vec<u8>) -> BoxFuture<'_, Result<Cid, ContentError>> {
        self.blocking(format!("adding {} bytes", bytes.len()), move |s| s.add_sync(&bytes))
    }

    fn cat(&self, cid: Cid) -> BoxFuture<'_, Result<Vec<u8>, ContentError>> {
        self.blocking(format!("reading {cid}"), move |s| s.cat_sync(cid))
    }

    fn has(&self, cid: Cid) -> BoxFuture<'_, Result<bool, ContentError>> {
        Box::pin(async move { Ok(self.path(&cid).exists()) })
    }

    fn pin(&self, cid: Cid) -> BoxFuture<'_, Result<(), ContentError>> {
        self.blocking(format!("pinning {cid}"), move |s| s.pin_sync(cid))
    }

    fn unpin(&self, cid: Cid) -> BoxFuture<'_, Result<(), ContentError>> {
        // A sweep over the store's roots.
        self.blocking(format!("unpinning {cid}"), move |s| s.unpin_sync(cid))
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
        assert_eq!(s.blocks().unwrap(), vec![cid], "its blocks are gone too");
        let e = s.add(vec![0u8; MAX_CONTENT + 1]).await.unwrap_err();
        assert!(e.to_string().contains("at most 67108864 bytes"), "{e}");
        // Adding again is idempotent.
        assert_eq!(s.add(b"record".to_vec()).await.unwrap(), cid);
        s.unpin(cid).await.unwrap();
        assert!(!s.has(cid).await.unwrap(), "unpinned content is gone");
        assert!(matches!(s.unpin(cid).await, Err(ContentError::NotFound(_))));
    }

    #[tokio::test]
    async fn only_what_was_added_is_unpinned_and_blocks_another_root_reaches_stay() {
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::open(dir.path()).unwrap();
        let big: Vec<u8> = (0..2 * MAX_BLOCK + 9).map(|i| (i * 13) as u8).collect();
        let root = s.add(big.clone()).await.unwrap();
        let chunk = Cid::of(&big[..MAX_BLOCK]);
        assert!(s.has(chunk).await.unwrap());
        // A block of the record is not anyone's to unpin on its own.
        let e = s.unpin(chunk).await.unwrap_err();
        assert!(matches!(e, ContentError::NotPinned(c) if c == chunk), "{e}");
        assert_eq!(s.cat(root).await.unwrap(), big);
        // Added again on its own (its bytes are public), then unpinned: the
        // record still holds it.
        assert_eq!(s.add(big[..MAX_BLOCK].to_vec()).await.unwrap(), chunk);
        s.unpin(chunk).await.unwrap();
        assert_eq!(s.cat(root).await.unwrap(), big, "the record is whole");
        // Pinned on its own, the chunk outlives the record.
        s.pin(chunk).await.unwrap();
        s.unpin(root).await.unwrap();
        assert_eq!(s.blocks().unwrap(), vec![chunk]);
        assert_eq!(s.cat(chunk).await.unwrap(), &big[..MAX_BLOCK]);
        s.unpin(chunk).await.unwrap();
        assert!(s.blocks().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_damaged_or_missing_block_is_never_served_and_adding_again_repairs_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::open(dir.path()).unwrap();
        let big: Vec<u8> = (0..2 * MAX_BLOCK + 3).map(|i| (i * 11) as u8).collect();
        let root = s.add(big.clone()).await.unwrap();
        let chunk = Cid::of(&big[MAX_BLOCK..2 * MAX_BLOCK]);
        // A power cut that kept the rename but not the data: a short block.
        std::fs::write(s.path(&chunk), &big[MAX_BLOCK..MAX_BLOCK + 10]).unwrap();
        let e = s.cat(root).await.unwrap_err();
        assert!(matches!(e, ContentError::Corrupted(_)), "{e}");
        assert!(
            e.to_string().contains(&format!("block {chunk}")) && e.to_string().contains("damaged"),
            "{e}"
        );
        assert!(matches!(s.pin(root).await, Err(ContentError::Corrupted(_))), "not pinned as whole");
        assert!(matches!(s.cat(chunk).await, Err(ContentError::Corrupted(_))));
        // The same bytes added again replace the damaged block.
        assert_eq!(s.add(big.clone()).await.unwrap(), root);
        assert_eq!(s.cat(root).await.unwrap(), big);
        s.pin(root).await.unwrap();
        // A damaged node of one content does not stop the unpin of another.
        let other = s.add(b"another record".to_vec()).await.unwrap();
        let node = std::fs::read(s.path(&root)).unwrap();
        std::fs::write(s.path(&root), &node[..node.len() / 2]).unwrap();
        s.unpin(other).await.unwrap();
        assert!(!s.has(other).await.unwrap());
        assert_eq!(s.add(big.clone()).await.unwrap(), root);
        // A block gone: the content is not whole, and is not pinned as such.
        std::fs::remove_file(s.path(&chunk)).unwrap();
        assert!(matches!(s.pin(root).await, Err(ContentError::NotFound(c)) if c == chunk));
        // No temporary file is left behind by the writes.
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
        // One a crash left behind goes when the store is opened.
        let left = dir.path().join(format!(".{chunk}.1.0.tmp"));
        std::fs::write(&left, b"half a blo").unwrap();
        drop(s);
        EmbeddedStore::open(dir.path()).unwrap();
        assert!(!left.exists());
    }

    #[tokio::test]
    async fn a_store_from_before_marks_gets_its_roots_marked() {
        let dir = tempfile::tempdir().unwrap();
        let big: Vec<u8> = (0..MAX_BLOCK + 1).map(|i| (i * 7) as u8).collect();
        let (small, root) = {
            let s = EmbeddedStore::open(dir.path()).unwrap();
            (s.add(b"small".to_vec()).await.unwrap(), s.add(big.clone()).await.unwrap())
        };
        std::fs::remove_dir_all(dir.path().join(".roots")).unwrap();
        let s = EmbeddedStore::open(dir.path()).unwrap();
        let mut marked = EmbeddedStore::cids_in(&s.roots_dir()).unwrap();
        marked.sort_by_key(|c| c.to_string());
        let mut expected = vec![small, root];
        expected.sort_by_key(|c| c.to_string());
        assert_eq!(marked, expected, "the roots, not the chunks");
        assert!(matches!(s.unpin(Cid::of(&big[..MAX_BLOCK])).await, Err(ContentError::NotPinned(_))));
        s.unpin(root).await.unwrap();
        assert_eq!(s.blocks().unwrap(), vec![small]);
    }
}
