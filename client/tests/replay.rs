//! `replay_chain` against a real anvil: sample batches proven with the
//! canonical keys and landed on a rollup, their data in a content store.
//! Honest data replays to L1's state; withheld data, data that is not the
//! proven batch's (a transaction left out, a signature changed, another
//! batch's data) and a wrong genesis are each caught, naming the batch.

use alloy::primitives::{Address, B256};
use alloy::sol_types::SolCall;
use medrollup_circuits::batch::BatchWitness;
use medrollup_circuits::tx::{SignedTx, TxBody};
use medrollup_circuits::{keys, sample};
use medrollup_client::replay::{ReplayError, Replayed, replay_chain};
use medrollup_l1::contracts::verifier_artifact;
use medrollup_l1::devnet::{Anvil, DEV_KEY, DEV_OWNER};
use medrollup_l1::fixtures::{prove_batches, sample_batches};
use medrollup_l1::submitter::{self, Governance, L1Batch, L1Config};
use medrollup_l1::{canonical, vk_sha256};
use medrollup_storage::content::{ContentStore, EmbeddedStore};
use medrollup_wire::BatchData;

const BATCHES: usize = 3;

fn config(url: &str) -> L1Config {
    L1Config::local(url, submitter::parse_key(DEV_KEY).unwrap())
}

/// The batches' published data, as the coordinator writes it.
fn data(witnesses: &[BatchWitness]) -> Vec<BatchData> {
    witnesses
        .iter()
        .enumerate()
        .map(|(i, w)| BatchData {
            batch: i as u64,
            public_inputs: w.public_inputs(),
            txs: w.txs.iter().map(|t| t.tx.clone()).collect(),
        })
        .collect()
}

/// A fresh rollup with `batches` landed, batch i under the CID of `data[i]`
/// (added to `store`).
async fn rollup_with(url: &str, store: &EmbeddedStore, batches: &[L1Batch], data: &[BatchData]) -> Address {
    let (root, _) = sample_batches(canonical::SHAPE, 0);
    let gov = Governance { owner: DEV_OWNER.parse().unwrap(), upgrade_delay_s: 3600 };
    let rollup = submitter::deploy(&config(url), &verifier_artifact(), root, gov).await.unwrap().rollup;
    for (b, d) in batches.iter().zip(data) {
        let cid = store.add(serde_json::to_vec(d).unwrap()).await.unwrap();
        let call = submitter::submit_batch_call(&b.public, &cid.to_bytes(), b.proof.as_ref().unwrap());
        let r =
            submitter::send_and_wait(&config(url), Some(rollup), call.abi_encode().into(), 1_000_000).await;
        assert!(r.unwrap().status(), "batch {} landed", b.index);
    }
    rollup
}

async fn replay(url: &str, rollup: Address, store: &EmbeddedStore) -> Result<Replayed, ReplayError> {
    let p = submitter::connect_read_only(url).unwrap();
    let mut seen = Vec::new();
    let r =
        replay_chain(&p, rollup, store, &sample::genesis(canonical::SHAPE.levels), |i, n| seen.push((i, n)))
            .await;
    if let Ok(done) = &r {
        assert_eq!(seen.len() as u64, done.batches, "progress for every batch");
    }
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_published_data_replays_to_l1_and_every_kind_of_bad_data_is_named() {
    let pk = tokio::task::block_in_place(|| keys::setup(canonical::SHAPE, Some(canonical::SEED)).unwrap());
    assert_eq!(vk_sha256(&pk.vk), verifier_artifact().vk_sha256.unwrap(), "the canonical keys");
    let (_, batches) = tokio::task::block_in_place(|| prove_batches(pk, canonical::SHAPE, BATCHES));
    let (_, witnesses) = sample_batches(canonical::SHAPE, BATCHES);
    let honest = data(&witnesses);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let anvil = Anvil::start(port, &[]).unwrap();
    let url = anvil.url();
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();

    // Honest: every batch replays, and the state is L1's.
    let rollup = rollup_with(&url, &store, &batches, &honest).await;
    let done = replay(&url, rollup, &store).await.unwrap();
    let real: usize =
        honest.iter().map(|d| d.txs.iter().filter(|t| !matches!(t.tx.body, TxBody::Noop)).count()).sum();
    assert_eq!((done.batches, done.transactions), (BATCHES as u64, real as u64));
    let chain = submitter::chain_state(&submitter::connect_read_only(&url).unwrap(), rollup).await.unwrap();
    assert_eq!(done.root, chain.root, "the replayed root is L1's");
    assert_ne!(done.root, B256::ZERO);

    // The genesis of another rollup (other tree height).
    let p = submitter::connect_read_only(&url).unwrap();
    let e = replay_chain(&p, rollup, &store, &sample::genesis(canonical::SHAPE.levels - 1), |_, _| {})
        .await
        .unwrap_err();
    assert!(matches!(e, ReplayError::Genesis { .. }), "{e}");
    // Not the rollup's address.
    let e = replay(&url, Address::repeat_byte(7), &store).await.unwrap_err();
    assert!(e.to_string().contains("no contract at"), "{e}");

    // Withheld: batch 1's data is gone from every store.
    let cid1 = store.add(serde_json::to_vec(&honest[1]).unwrap()).await.unwrap();
    store.unpin(cid1).await.unwrap();
    let e = replay(&url, rollup, &store).await.unwrap_err();
    assert!(matches!(e, ReplayError::Unavailable { index: 1, .. }), "{e}");
    assert!(e.to_string().contains(&cid1.to_string()), "{e}");

    // A transaction left out of batch 0's data (padding in its place): the
    // data does not give the proven state.
    let mut dropped = honest.clone();
    let last_real = dropped[0].txs.iter().rposition(|t| !matches!(t.tx.body, TxBody::Noop)).unwrap();
    dropped[0].txs.remove(last_real);
    dropped[0].txs.push(SignedTx::noop());
    let rollup = rollup_with(&url, &store, &batches[..1], &dropped[..1]).await;
    let e = replay(&url, rollup, &store).await.unwrap_err();
    assert!(matches!(e, ReplayError::Mismatch { index: 0, field: "new root", .. }), "{e}");

    // A signature changed: that transaction does not apply.
    let mut forged = honest.clone();
    forged[0].txs[1].signature = forged[0].txs[0].signature;
    let rollup = rollup_with(&url, &store, &batches[..1], &forged[..1]).await;
    let e = replay(&url, rollup, &store).await.unwrap_err();
    assert!(matches!(e, ReplayError::Invalid { index: 0, position: 1, .. }), "{e}");

    // Batch 1's data under batch 0.
    let rollup = rollup_with(&url, &store, &batches[..1], &honest[1..2]).await;
    let e = replay(&url, rollup, &store).await.unwrap_err();
    assert!(matches!(e, ReplayError::Malformed { index: 0, .. }) && e.to_string().contains("batch 1"), "{e}");
}
