//! The Kubo RPC client and the embedded store against a real IPFS node:
//! js-ipfs 0.66.1 from npm (`scripts/ipfs` installs it into `storage/ipfs/`;
//! no Kubo binary is installable here), started offline by the test.

use medrollup_storage::cid::Cid;
use medrollup_storage::content::{ContentError, ContentStore, EmbeddedStore, MAX_BLOCK, MAX_CONTENT};
use medrollup_storage::kubo::KuboStore;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn jsipfs() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("ipfs/node_modules/.bin/jsipfs");
    assert!(p.exists(), "{} is missing: run scripts/ipfs (it installs js-ipfs from npm)", p.display());
    p
}

mod reqwest {
    /// Whether a POST to `url` answers 200 (a bare HTTP/1.0 exchange, no client needed).
    pub fn blocking_ok(url: &str) -> bool {
        use std::io::{Read, Write};
        let rest = url.trim_start_matches("http://");
        let (host, path) = rest.split_once('/').unwrap();
        let Ok(mut s) = std::net::TcpStream::connect(host) else { return false };
        let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(5)));
        if write!(s, "POST /{path} HTTP/1.0\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n").is_err() {
            return false;
        }
        let mut buf = String::new();
        let _ = s.read_to_string(&mut buf);
        buf.starts_with("HTTP/1.1 200") || buf.starts_with("HTTP/1.0 200")
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A js-ipfs daemon with its own repository, killed on drop.
struct IpfsNode {
    child: Child,
    api: String,
    _repo: tempfile::TempDir,
}

impl IpfsNode {
    fn start() -> Self {
        let repo = tempfile::tempdir().unwrap();
        let run = |args: &[&str]| {
            let out = Command::new(jsipfs()).args(args).env("IPFS_PATH", repo.path()).output().unwrap();
            assert!(out.status.success(), "jsipfs {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        run(&["init", "--profile", "test"]);
        let (api, swarm, gateway, rpc) = (free_port(), free_port(), free_port(), free_port());
        run(&["config", "Addresses.API", &format!("/ip4/127.0.0.1/tcp/{api}")]);
        run(&["config", "Addresses.Gateway", &format!("/ip4/127.0.0.1/tcp/{gateway}")]);
        run(&["config", "Addresses.RPC", &format!("/ip4/127.0.0.1/tcp/{rpc}")]);
        run(&["config", "--json", "Addresses.Swarm", &format!("[\"/ip4/127.0.0.1/tcp/{swarm}\"]")]);
        let log = std::fs::File::create(repo.path().join("daemon.log")).unwrap();
        let child = Command::new(jsipfs())
            .args(["daemon", "--offline"])
            .env("IPFS_PATH", repo.path())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let mut node = Self { child, api: format!("http://127.0.0.1:{api}"), _repo: repo };
        // Ready when the API answers (its port opens a little earlier).
        let t = Instant::now();
        let id = format!("{}/api/v0/id", node.api);
        while !reqwest::blocking_ok(&id) {
            if let Ok(Some(s)) = node.child.try_wait() {
                panic!("jsipfs daemon exited ({s}): {}", node.log());
            }
            assert!(t.elapsed() < Duration::from_secs(90), "jsipfs daemon not ready: {}", node.log());
            std::thread::sleep(Duration::from_millis(200));
        }
        node
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._repo.path().join("daemon.log")).unwrap_or_default()
    }
}

impl Drop for IpfsNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_and_the_embedded_store_give_the_same_cids() {
    let node = IpfsNode::start();
    let kubo = KuboStore::new(&node.api);
    let dir = tempfile::tempdir().unwrap();
    let embedded = EmbeddedStore::open(dir.path()).unwrap();

    // Kubo's CIDv1 of empty content (raw leaves): a published vector.
    let empty = kubo.add(Vec::new()).await.unwrap();
    assert_eq!(empty.to_string(), "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku");

    let mut seed = 0x2545f4914f6cdd1du64;
    // One chunk, just over, a full node of 174 chunks and a second level.
    let sizes =
        [1usize, 100, 10_000, MAX_BLOCK, MAX_BLOCK + 1, 1_000_000, 174 * MAX_BLOCK, 174 * MAX_BLOCK + 7];
    for len in sizes {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let from_node = kubo.add(bytes.clone()).await.unwrap();
        let from_embedded = embedded.add(bytes.clone()).await.unwrap();
        assert_eq!(from_node, from_embedded, "{len} bytes");
        assert_eq!(kubo.cat(from_node).await.unwrap(), bytes, "{len} bytes back");
        assert!(kubo.has(from_node).await.unwrap());
        kubo.pin(from_node).await.unwrap();
    }
    assert!(matches!(kubo.add(vec![0; MAX_CONTENT + 1]).await, Err(ContentError::TooLarge(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_content_unpinning_and_a_node_that_is_down() {
    let node = IpfsNode::start();
    let kubo = KuboStore::new(&node.api).with_fetch_timeout(Duration::from_secs(2));
    let cid = kubo.add(b"an encrypted record".to_vec()).await.unwrap();
    kubo.unpin(cid).await.unwrap();
    let e = kubo.unpin(cid).await.unwrap_err();
    assert!(matches!(e, ContentError::NotFound(_)), "unpinning twice: {e}");

    let unknown = Cid::of(b"never stored anywhere");
    assert!(!kubo.has(unknown).await.unwrap());
    let t = Instant::now();
    let e = kubo.cat(unknown).await.unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(30), "the fetch timeout bounds the wait");
    assert!(matches!(e, ContentError::NotFound(_)), "{e}");
    assert!(matches!(kubo.pin(unknown).await, Err(ContentError::NotFound(_))));

    drop(node);
    let e = kubo.add(b"x".to_vec()).await.unwrap_err();
    assert!(e.to_string().contains("does not answer"), "{e}");
    let e = kubo.cat(cid).await.unwrap_err();
    assert!(e.to_string().contains("does not answer"), "{e}");
}
