//! The Kubo RPC client and the embedded store against a real IPFS node:
//! js-ipfs 0.66.1 from npm (`scripts/ipfs` installs it into `storage/ipfs/`;
//! no Kubo binary is installable here), started offline by the test
//! ([`medrollup_storage::devnode`]).

use medrollup_storage::cid::Cid;
use medrollup_storage::content::{ContentError, ContentStore, EmbeddedStore, MAX_BLOCK, MAX_CONTENT};
use medrollup_storage::devnode::IpfsNode;
use medrollup_storage::kubo::KuboStore;
use std::time::{Duration, Instant};

fn start_node() -> IpfsNode {
    IpfsNode::start().unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_and_the_embedded_store_give_the_same_cids() {
    let node = start_node();
    let kubo = KuboStore::new(node.api());
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
    let node = start_node();
    let kubo = KuboStore::new(node.api()).with_fetch_timeout(Duration::from_secs(2));
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
    // What went wrong, down to the cause reqwest's message leaves out.
    assert!(e.to_string().contains("does not answer (cannot connect)"), "{e}");
    assert!(e.to_string().to_lowercase().contains("connection refused"), "{e}");
    let e = kubo.cat(cid).await.unwrap_err();
    assert!(e.to_string().contains("does not answer"), "{e}");
}
