//! The submitter against a real anvil (npm `@foundry-rs/anvil-linux-amd64`,
//! installed by `scripts/contracts`): batches of the sample transactions,
//! proven by the engine with the canonical keys, land in order through stuck
//! and dropped transactions, a reorg and a node restart with reloaded state,
//! and stop only on a divergence from the chain that a second read confirms.

use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use alloy::sol_types::SolCall;
use ark_bn254::Fr;
use medrollup_circuits::keys;
use medrollup_l1::contracts::{MedRollup, verifier_artifact};
use medrollup_l1::devnet::{Anvil, DEV_KEY, DEV_OWNER, DEV_OWNER_KEY};
use medrollup_l1::fixtures::prove_batches;
use medrollup_l1::submitter::{
    self, BatchSource, DEFAULT_UPGRADE_DELAY_S, Governance, L1Batch, L1Config, L1Error, Landing, Observer,
    Submitter, root_word,
};
use medrollup_l1::{canonical, vk_sha256};
use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The four sample batches, proven once per test binary.
fn proven() -> &'static (Fr, Vec<L1Batch>, String) {
    static P: OnceLock<(Fr, Vec<L1Batch>, String)> = OnceLock::new();
    P.get_or_init(|| {
        let pk = keys::setup(canonical::SHAPE, Some(canonical::SEED)).unwrap();
        let vk_hash = vk_sha256(&pk.vk);
        let (root, batches) = prove_batches(pk, canonical::SHAPE, 4);
        (root, batches, vk_hash)
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start_anvil(port: u16, args: &[&str]) -> Anvil {
    Anvil::start(port, args).unwrap_or_else(|e| panic!("{e}"))
}

/// Batches whose proofs are handed over one by one, as the farm proves them.
#[derive(Default)]
struct Source {
    batches: Mutex<Vec<L1Batch>>,
    proven_upto: Mutex<usize>,
    /// Reads left that answer with a wrong old root (a coordinator that
    /// disagrees with the chain).
    wrong_reads: Mutex<u32>,
    /// Reads answered with a wrong old root so far.
    wrong_answers: Mutex<u32>,
    /// Batches whose landing was recorded (as the coordinator's database
    /// does when its observer is told).
    landed: Mutex<HashSet<u64>>,
    /// A batch answered with another new root (not the one on chain).
    other_new_root: Mutex<Option<u64>>,
}

impl Source {
    fn new() -> Arc<Self> {
        let s = Self::default();
        *s.batches.lock().unwrap() = proven().1.clone();
        Arc::new(s)
    }
    fn prove_upto(&self, n: usize) {
        *self.proven_upto.lock().unwrap() = n;
    }
    fn answer_wrong(&self, reads: u32) {
        *self.wrong_reads.lock().unwrap() = reads;
    }
}

impl BatchSource for Source {
    fn batch(&self, index: u64) -> Result<Option<L1Batch>, String> {
        let upto = *self.proven_upto.lock().unwrap();
        Ok(self.batches.lock().unwrap().get(index as usize).cloned().map(|mut b| {
            if index as usize >= upto {
                b.proof = None;
            }
            b.landed = self.landed.lock().unwrap().contains(&index);
            if *self.other_new_root.lock().unwrap() == Some(index) {
                b.public.new_root += Fr::from(1u64);
            }
            let mut wrong = self.wrong_reads.lock().unwrap();
            if *wrong > 0 {
                *wrong -= 1;
                *self.wrong_answers.lock().unwrap() += 1;
                b.public.old_root += Fr::from(1u64);
            }
            b
        }))
    }
}

#[derive(Default)]
struct Seen {
    /// Where landings are recorded.
    source: Option<Arc<Source>>,
    landed: Mutex<Vec<Landing>>,
    bumps: Mutex<u32>,
    resends: Mutex<u32>,
    reorgs: Mutex<Vec<(u64, u64)>>,
    failed: Mutex<Vec<String>>,
}

impl Observer for Seen {
    fn landed(&self, l: &Landing) {
        self.landed.lock().unwrap().push(l.clone());
        if let Some(s) = &self.source {
            s.landed.lock().unwrap().insert(l.index);
        }
    }
    fn fee_bumped(&self, _: u64) {
        *self.bumps.lock().unwrap() += 1;
    }
    fn resent(&self, _: u64) {
        *self.resends.lock().unwrap() += 1;
    }
    fn reorg(&self, from: u64, to: u64) {
        self.reorgs.lock().unwrap().push((from, to));
    }
    fn failed(&self, error: &L1Error) {
        self.failed.lock().unwrap().push(error.to_string());
    }
}

impl Seen {
    fn indices(&self) -> Vec<u64> {
        self.landed.lock().unwrap().iter().map(|l| l.index).collect()
    }
}

fn config(url: &str) -> L1Config {
    let mut c = L1Config::local(url, submitter::parse_key(DEV_KEY).unwrap());
    c.poll = Duration::from_millis(100);
    c.stuck_after = Duration::from_secs(1);
    c
}

fn dev_governance() -> Governance {
    Governance { owner: DEV_OWNER.parse().unwrap(), upgrade_delay_s: DEFAULT_UPGRADE_DELAY_S }
}

/// Deploys the canonical verifier and the rollup at the sample genesis,
/// owned by anvil's second account.
async fn deploy(url: &str) -> Address {
    let (root, _, _) = proven();
    submitter::deploy(&config(url), &verifier_artifact(), *root, dev_governance()).await.unwrap().rollup
}

/// A running submitter and the means to stop it.
struct Running {
    seen: Arc<Seen>,
    wake: tokio::sync::watch::Sender<u64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), L1Error>>,
}

impl Running {
    async fn start(c: L1Config, rollup: Address, source: Arc<Source>) -> Self {
        let (_, _, vk) = proven();
        let s = Submitter::connect(c, rollup, vk).await.unwrap();
        let seen = Arc::new(Seen { source: Some(source.clone()), ..Seen::default() });
        let (wake, wake_rx) = tokio::sync::watch::channel(0);
        let (stop, stop_rx) = tokio::sync::oneshot::channel();
        let obs = seen.clone();
        let task = tokio::spawn(async move {
            s.run(source.as_ref(), obs.as_ref(), wake_rx, async {
                let _ = stop_rx.await;
            })
            .await
        });
        Self { seen, wake, stop: Some(stop), task }
    }

    async fn wait_landed(&self, n: usize, within: Duration) {
        let t = Instant::now();
        while self.seen.landed.lock().unwrap().len() < n {
            assert!(!self.task.is_finished(), "the submitter stopped");
            assert!(t.elapsed() < within, "only {:?} landed within {within:?}", self.seen.indices());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn poke(&self) {
        self.wake.send_modify(|x| *x += 1);
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

/// The `BatchSubmitted` events of the canonical chain, as (index, new root).
async fn events(url: &str, rollup: Address) -> Vec<(u64, B256)> {
    submitter::batch_events(&submitter::connect(&config(url)).unwrap(), rollup).await.unwrap()
}

/// Every batch on chain exactly once, in order, with the farm's roots.
async fn assert_chain_holds(url: &str, rollup: Address, n: usize) {
    let (_, batches, _) = proven();
    let expect: Vec<(u64, B256)> =
        batches[..n].iter().map(|b| (b.index, root_word(&b.public.new_root))).collect();
    assert_eq!(events(url, rollup).await, expect, "BatchSubmitted events on the canonical chain");
    let p = submitter::connect(&config(url)).unwrap();
    let c = MedRollup::new(rollup, &p);
    assert_eq!(c.batchCount().call().await.unwrap(), n as u64);
    assert_eq!(c.currentRoot().call().await.unwrap(), expect.last().unwrap().1);
    for b in &batches[..n] {
        let r = MedRollup::BatchRecord {
            oldRoot: root_word(&b.public.old_root),
            newRoot: root_word(&b.public.new_root),
            txCommitment: root_word(&b.public.tx_commitment),
            timestamp: b.public.timestamp,
            cid: b.cid.clone().into(),
        };
        assert!(c.isBatchRecord(U256::from(b.index), r).call().await.unwrap(), "record of batch {}", b.index);
    }
    // The root after each number of batches, as light clients read it.
    let p = submitter::connect_read_only(url).unwrap();
    let genesis = MedRollup::new(rollup, &p).genesisRoot().call().await.unwrap();
    let root = |k: usize| if k == 0 { genesis } else { expect[k - 1].1 };
    for k in 0..=n {
        let got = submitter::root_after(&p, rollup, k as u64).await.unwrap();
        assert_eq!(got, Some(root(k)), "after {k} batches");
        for claimed in [root(k), B256::repeat_byte(9)] {
            let got = submitter::root_after_claimed(&p, rollup, k as u64, claimed).await.unwrap();
            assert_eq!(got, Some(root(k)), "after {k} batches, {claimed} claimed");
        }
    }
    assert_eq!(submitter::root_after(&p, rollup, n as u64 + 1).await.unwrap(), None);
    let claimed = submitter::root_after_claimed(&p, rollup, n as u64 + 1, B256::ZERO).await.unwrap();
    assert_eq!(claimed, None);
}

async fn rpc(url: &str, method: &'static str, params: serde_json::Value) -> serde_json::Value {
    let p = submitter::connect(&config(url)).unwrap();
    p.raw_request(method.into(), params).await.unwrap()
}

/// Whether the node's pool holds a pending transaction.
async fn pool_has_pending(url: &str) -> bool {
    let pool = rpc(url, "txpool_content", serde_json::json!([])).await;
    pool["pending"].as_object().is_some_and(|m| !m.is_empty())
}

/// Polls `done` until it holds; fails with `failure` after 30 s.
async fn wait_until<F: Future<Output = bool>>(failure: &str, mut done: impl FnMut() -> F) {
    let t = Instant::now();
    while !done().await {
        assert!(t.elapsed() < Duration::from_secs(30), "{failure}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Heavy set-up (proofs) once, then one anvil per test.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One test's set-up: its turn (the first makes the proofs), a fresh anvil
/// on `port` with `args`, the contracts deployed, and the sample batches,
/// none proven yet.
struct Setup {
    turn: tokio::sync::MutexGuard<'static, ()>,
    anvil: Anvil,
    url: String,
    rollup: Address,
    source: Arc<Source>,
}

async fn setup(port: u16, args: &[&str]) -> Setup {
    let turn = TURN.lock().await;
    tokio::task::block_in_place(proven);
    let anvil = start_anvil(port, args);
    let url = anvil.url();
    let rollup = deploy(&url).await;
    Setup { turn, anvil, url, rollup, source: Source::new() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_land_in_order_and_a_new_submitter_resumes_from_the_chain() {
    let Setup { turn: _turn, anvil: _anvil, url, rollup, source } = setup(free_port(), &[]).await;
    source.prove_upto(2);
    let run = Running::start(config(&url), rollup, source.clone()).await;
    run.wait_landed(2, Duration::from_secs(60)).await;
    assert_eq!(run.seen.indices(), vec![0, 1]);
    for l in run.seen.landed.lock().unwrap().iter() {
        println!("batch {} landed: gas {} in {:?}", l.index, l.gas_used, l.latency);
        assert!(l.gas_used < 300_000, "gas per batch {} is over the 300k target", l.gas_used);
    }
    run.stop().await;

    // A fresh submitter (a restarted coordinator) reads where the chain is.
    source.prove_upto(4);
    let run = Running::start(config(&url), rollup, source.clone()).await;
    run.wait_landed(2, Duration::from_secs(60)).await;
    assert_eq!(run.seen.indices(), vec![2, 3], "it resumes at the chain's batch count");
    run.stop().await;
    assert_chain_holds(&url, rollup, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verifier_for_other_keys_or_a_key_that_is_not_the_sequencer_is_refused() {
    let Setup { turn: _turn, anvil: _anvil, url, rollup, .. } = setup(free_port(), &[]).await;
    let other = "ab".repeat(32);
    let err = Submitter::connect(config(&url), rollup, &other).await.unwrap_err();
    assert!(matches!(err, L1Error::VkMismatch { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&other) && msg.contains(&proven().2), "{msg}");
    // A key that is not the sequencer's.
    let mut stranger = config(&url);
    stranger.key = alloy::signers::local::PrivateKeySigner::random();
    let err = Submitter::connect(stranger, rollup, &proven().2).await.unwrap_err();
    assert!(err.to_string().contains("is not the rollup's sequencer"), "{err}");
    // No contract there at all.
    let err = Submitter::connect(config(&url), Address::repeat_byte(7), &proven().2).await.unwrap_err();
    assert!(err.to_string().contains("no contract at"), "{err}");
    // The verifier's address given for the rollup's.
    let read = submitter::connect_read_only(&url).unwrap();
    let verifier = MedRollup::new(rollup, &read).verifier().call().await.unwrap();
    let err = Submitter::connect(config(&url), verifier, &proven().2).await.unwrap_err();
    assert!(err.to_string().contains("is not a MedRollup contract"), "{err}");
    assert!(err.to_string().contains("is it the verifier's address?"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_transaction_gets_higher_fees_and_a_dropped_one_is_sent_again() {
    let Setup { turn: _turn, anvil: _anvil, url, rollup, source } = setup(free_port(), &[]).await;
    rpc(&url, "evm_setAutomine", serde_json::json!([false])).await;
    source.prove_upto(1);
    let run = Running::start(config(&url), rollup, source.clone()).await;
    // Not mined: after `stuck_after` the fees go up (same nonce).
    wait_until("no fee bump", || async { *run.seen.bumps.lock().unwrap() > 0 }).await;
    // The node forgets every pending transaction: it is sent again.
    rpc(&url, "anvil_dropAllTransactions", serde_json::json!([])).await;
    wait_until("no resend after the drop", || async { *run.seen.resends.lock().unwrap() > 0 }).await;
    assert!(pool_has_pending(&url).await, "resent into the pool");
    rpc(&url, "evm_mine", serde_json::json!([])).await;
    run.wait_landed(1, Duration::from_secs(30)).await;
    let l = run.seen.landed.lock().unwrap()[0].clone();
    assert!(l.sends >= 3, "first send, a bump and a resend: {}", l.sends);
    run.stop().await;
    assert_chain_holds(&url, rollup, 1).await;
}

/// A submission never offers more than the fee cap: one sent at the cap
/// and stuck is left to wait (no raise), and lands once a block comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_transaction_at_the_fee_cap_waits_without_raises() {
    let Setup { turn: _turn, anvil: _anvil, url, rollup, source } = setup(free_port(), &[]).await;
    rpc(&url, "evm_setAutomine", serde_json::json!([false])).await;
    source.prove_upto(1);
    // Fresh fees here are at least 2 gwei (a 1 gwei tip over the base fee).
    let cap = 1_500_000_000u128;
    let mut c = config(&url);
    c.max_fee_cap = cap;
    let run = Running::start(c, rollup, source.clone()).await;
    wait_until("nothing sent", || pool_has_pending(&url)).await;
    // Four times `stuck_after`: no raise.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(*run.seen.bumps.lock().unwrap(), 0, "no raise past the cap");
    let pool = rpc(&url, "txpool_content", serde_json::json!([])).await;
    let tx = pool["pending"].as_object().unwrap().values().next().unwrap().as_object().unwrap().clone();
    let tx = tx.values().next().unwrap();
    let fee = |k: &str| u128::from_str_radix(tx[k].as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
    assert_eq!(fee("maxFeePerGas"), cap, "{tx}");
    assert!(fee("maxPriorityFeePerGas") <= cap, "{tx}");
    rpc(&url, "evm_mine", serde_json::json!([])).await;
    run.wait_landed(1, Duration::from_secs(30)).await;
    run.stop().await;
    assert_chain_holds(&url, rollup, 1).await;
}

/// A batch mined while the next one waits to be (here its fees at the cap,
/// below the base fee, so that the node does not even keep it) is reported
/// once it has its confirmations, not only when the next one is mined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_landing_is_reported_while_the_next_batch_waits_to_be_mined() {
    let Setup { turn: _turn, anvil: _anvil, url, rollup, source } = setup(free_port(), &[]).await;
    let gwei = 1_000_000_000u128;
    let mut c = config(&url);
    c.confirmations = 3;
    c.max_fee_cap = 3 * gwei / 2;
    source.prove_upto(1);
    let run = Running::start(c, rollup, source.clone()).await;
    wait_until("batch 0 was not mined", || async { events(&url, rollup).await.len() == 1 }).await;
    rpc(&url, "evm_setAutomine", serde_json::json!([false])).await;
    source.prove_upto(2);
    run.poke();
    wait_until("batch 1 was not sent", || pool_has_pending(&url)).await;
    // Two blocks whose base fee is over the cap: batch 1 stays out of them,
    // and they give batch 0 its confirmations.
    for _ in 0..2 {
        rpc(&url, "anvil_setNextBlockBaseFeePerGas", serde_json::json!([format!("{:#x}", 10 * gwei)])).await;
        rpc(&url, "evm_mine", serde_json::json!([])).await;
    }
    run.wait_landed(1, Duration::from_secs(20)).await;
    assert_eq!(run.seen.indices(), vec![0]);
    assert_eq!(events(&url, rollup).await.len(), 1, "batch 1 still waits");
    // Fees fall: batch 1 lands and counts too.
    rpc(&url, "anvil_setNextBlockBaseFeePerGas", serde_json::json!([format!("{:#x}", gwei / 2)])).await;
    rpc(&url, "evm_setAutomine", serde_json::json!([true])).await;
    rpc(&url, "evm_mine", serde_json::json!([])).await;
    wait_until("batch 1 was not mined", || async { events(&url, rollup).await.len() == 2 }).await;
    rpc(&url, "anvil_mine", serde_json::json!(["0x2"])).await;
    run.wait_landed(2, Duration::from_secs(30)).await;
    assert_eq!(run.seen.indices(), vec![0, 1]);
    run.stop().await;
    assert_chain_holds(&url, rollup, 2).await;
}

/// The hash of the one pending transaction in the node's pool.
async fn pending_hash(url: &str) -> Option<String> {
    let pool = rpc(url, "txpool_content", serde_json::json!([])).await;
    let by_sender = pool["pending"].as_object()?.values().next()?.as_object()?.clone();
    by_sender.values().next()?["hash"].as_str().map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submitter_restarted_while_its_raised_transaction_waits_offers_more() {
    let Setup { turn: _turn, anvil: _anvil, url, rollup, source } = setup(free_port(), &[]).await;
    rpc(&url, "evm_setAutomine", serde_json::json!([false])).await;
    source.prove_upto(1);
    let run = Running::start(config(&url), rollup, source.clone()).await;
    wait_until("no second fee bump", || async { *run.seen.bumps.lock().unwrap() >= 2 }).await;
    run.stop().await;
    // Its raised transaction waits; a new submitter (a restarted
    // coordinator) reads fresh fees, which are lower: it must offer more
    // than the waiting one, or the node refuses it as a replacement.
    let waiting = pending_hash(&url).await.expect("the raised transaction waits in the pool");
    // (Another gas limit, so that its first version is not the same bytes
    // as the first one before the restart.)
    let mut c = config(&url);
    c.gas_limit += 1;
    let run = Running::start(c, rollup, source.clone()).await;
    wait_until("the waiting transaction not replaced", || async {
        pending_hash(&url).await.is_some_and(|h| h != waiting)
    })
    .await;
    rpc(&url, "evm_mine", serde_json::json!([])).await;
    run.wait_landed(1, Duration::from_secs(30)).await;
    run.stop().await;
    assert_chain_holds(&url, rollup, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_reorg_the_lost_batches_land_again_once_in_order() {
    let Setup { turn: _turn, anvil: _anvil, url, rollup, source } = setup(free_port(), &[]).await;
    source.prove_upto(1);
    let run = Running::start(config(&url), rollup, source.clone()).await;
    run.wait_landed(1, Duration::from_secs(60)).await;
    let snapshot = rpc(&url, "evm_snapshot", serde_json::json!([])).await;
    source.prove_upto(3);
    run.poke();
    run.wait_landed(3, Duration::from_secs(60)).await;
    // Batches 1 and 2 leave the chain.
    let reverted = rpc(&url, "evm_revert", serde_json::json!([snapshot])).await;
    assert_eq!(reverted, serde_json::Value::Bool(true));
    assert_eq!(events(&url, rollup).await.len(), 1, "the reorg removed batches 1 and 2");
    source.prove_upto(4);
    run.poke();
    run.wait_landed(6, Duration::from_secs(60)).await;
    assert_eq!(run.seen.indices(), vec![0, 1, 2, 1, 2, 3]);
    assert!(run.seen.reorgs.lock().unwrap().contains(&(3, 1)), "{:?}", run.seen.reorgs.lock().unwrap());
    run.stop().await;
    assert_chain_holds(&url, rollup, 4).await;
}

/// Serves `app` (a node in front of anvil) on a free port; returns its URL.
async fn serve_node(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// A node in front of `upstream` whose next `lag` answers for the latest
/// block give block `old` instead (a backend behind a load balancer that
/// lags).
async fn lagging_node(upstream: String) -> (String, Arc<Mutex<(u32, u64)>>) {
    use axum::extract::State;
    type Lag = Arc<Mutex<(u32, u64)>>;
    async fn handle(
        State((upstream, lag)): State<(String, Lag)>,
        axum::Json(mut req): axum::Json<serde_json::Value>,
    ) -> axum::Json<serde_json::Value> {
        if req["method"] == "eth_getBlockByNumber" && req["params"][0] == "latest" {
            let mut l = lag.lock().unwrap();
            if l.0 > 0 {
                l.0 -= 1;
                req["params"][0] = format!("0x{:x}", l.1).into();
            }
        }
        let r = reqwest::Client::new().post(&upstream).json(&req).send().await.unwrap();
        axum::Json(r.json().await.unwrap())
    }
    let lag = Lag::default();
    let app = axum::Router::new().route("/", axum::routing::post(handle)).with_state((upstream, lag.clone()));
    (serve_node(app).await, lag)
}

/// One read from a lagging node shows fewer batches: read again, it is no
/// reorg (nothing is forgotten or sent again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_lagging_read_of_fewer_batches_is_no_reorg() {
    let Setup { turn: _turn, anvil: _anvil, url, rollup, source } = setup(free_port(), &[]).await;
    let (lagging, lag) = lagging_node(url.clone()).await;
    source.prove_upto(1);
    let run = Running::start(config(&lagging), rollup, source.clone()).await;
    run.wait_landed(1, Duration::from_secs(60)).await;
    let before = submitter::connect_read_only(&url).unwrap().get_block_number().await.unwrap();
    source.prove_upto(2);
    run.poke();
    run.wait_landed(2, Duration::from_secs(60)).await;
    // The next read of the latest block answers from before batch 1.
    *lag.lock().unwrap() = (1, before);
    run.poke();
    wait_until("the lagging answer read", || async { lag.lock().unwrap().0 == 0 }).await;
    source.prove_upto(3);
    run.poke();
    run.wait_landed(3, Duration::from_secs(60)).await;
    assert_eq!(run.seen.indices(), vec![0, 1, 2], "nothing sent again");
    assert!(run.seen.reorgs.lock().unwrap().is_empty(), "{:?}", run.seen.reorgs.lock().unwrap());
    run.stop().await;
    assert_chain_holds(&url, rollup, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anvil_restarted_with_its_state_reloaded_mid_run() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("anvil-state.json");
    let state_arg = state.to_str().unwrap();
    let port = free_port();
    let Setup { turn: _turn, anvil, url, rollup, source } = setup(port, &["--dump-state", state_arg]).await;
    source.prove_upto(2);
    let run = Running::start(config(&url), rollup, source.clone()).await;
    run.wait_landed(2, Duration::from_secs(60)).await;
    anvil.stop();
    assert!(state.exists(), "anvil dumped its state on SIGINT");
    // The farm goes on proving while the node is down.
    source.prove_upto(4);
    run.poke();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!run.task.is_finished(), "the submitter waits for the node");
    let anvil = start_anvil(port, &["--load-state", state_arg]);
    run.wait_landed(4, Duration::from_secs(60)).await;
    assert_eq!(run.seen.indices(), vec![0, 1, 2, 3]);
    run.stop().await;
    assert_chain_holds(&anvil.url(), rollup, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_disagreeing_read_is_read_again_and_a_lasting_divergence_stops_the_submitter() {
    let Setup { turn: _turn, anvil: _anvil, url, rollup, source } = setup(free_port(), &[]).await;
    source.prove_upto(2);
    // One read disagrees with the chain (as an inconsistent read of the
    // chain would): the submitter reads again instead of stopping.
    source.answer_wrong(1);
    let run = Running::start(config(&url), rollup, source.clone()).await;
    run.wait_landed(2, Duration::from_secs(60)).await;
    assert_eq!(run.seen.indices(), vec![0, 1]);
    assert_eq!(*source.wrong_answers.lock().unwrap(), 1, "the wrong answer was read");
    assert!(run.seen.failed.lock().unwrap().is_empty());
    run.stop().await;

    // A disagreement that lasts stops it, after a second read, with the
    // chain's root and the coordinator's in the error.
    source.prove_upto(4);
    source.answer_wrong(u32::MAX);
    *source.wrong_answers.lock().unwrap() = 0;
    let run = Running::start(config(&url), rollup, source.clone()).await;
    wait_until("the submitter goes on despite the divergence", || async { run.task.is_finished() }).await;
    let err = run.task.await.unwrap().unwrap_err();
    let (_, batches, _) = proven();
    let chain_root = root_word(&batches[1].public.new_root);
    let ours = root_word(&(batches[2].public.old_root + Fr::from(1u64)));
    match &err {
        L1Error::Diverged { index, chain, ours: theirs } => {
            assert_eq!(
                (*index, chain.as_str(), theirs.as_str()),
                (2, &*chain_root.to_string(), &*ours.to_string())
            );
        }
        other => panic!("expected a divergence, got {other}"),
    }
    assert!(err.to_string().contains("have diverged"), "{err}");
    assert_eq!(*run.seen.failed.lock().unwrap(), vec![err.to_string()], "the observer is told");
    assert!(*source.wrong_answers.lock().unwrap() >= 2, "read again before stopping");
    assert!(run.seen.indices().is_empty(), "nothing landed past the divergence");
    assert_chain_holds(&url, rollup, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_landing_sent_before_a_restart_is_recorded_from_the_chain() {
    let Setup { turn: _turn, anvil: _anvil, url, rollup, source } = setup(free_port(), &[]).await;
    rpc(&url, "evm_setAutomine", serde_json::json!([false])).await;
    source.prove_upto(1);
    // Batch 0 is sent; the submitter stops (a coordinator restart) before it
    // is mined.
    let run = Running::start(config(&url), rollup, source.clone()).await;
    wait_until("batch 0 was not sent", || pool_has_pending(&url)).await;
    run.stop().await;
    rpc(&url, "evm_mine", serde_json::json!([])).await;
    assert_eq!(events(&url, rollup).await.len(), 1, "batch 0 on chain");
    assert!(source.landed.lock().unwrap().is_empty(), "its landing was not seen");

    // The next submitter finds it on chain and records it, then goes on.
    rpc(&url, "evm_setAutomine", serde_json::json!([true])).await;
    let run = Running::start(config(&url), rollup, source.clone()).await;
    run.wait_landed(1, Duration::from_secs(30)).await;
    let found = run.seen.landed.lock().unwrap()[0].clone();
    assert_eq!((found.index, found.sends, found.latency), (0, 0, Duration::ZERO), "{found:?}");
    assert!(found.gas_used > 0 && found.block > 0, "{found:?}");
    let p = submitter::connect(&config(&url)).unwrap();
    let receipt = p.get_transaction_receipt(found.tx_hash).await.unwrap().expect("the landing's receipt");
    assert_eq!((receipt.block_number, receipt.gas_used), (Some(found.block), found.gas_used));
    source.prove_upto(2);
    run.poke();
    run.wait_landed(2, Duration::from_secs(60)).await;
    assert_eq!(run.seen.indices(), vec![0, 1], "each landing recorded once");
    assert!(run.seen.landed.lock().unwrap()[1].sends >= 1);
    run.stop().await;
    assert_chain_holds(&url, rollup, 2).await;

    // A batch on chain under our index but with another root is not
    // recorded as ours.
    source.landed.lock().unwrap().remove(&1);
    *source.other_new_root.lock().unwrap() = Some(1);
    let run = Running::start(config(&url), rollup, source.clone()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(run.seen.indices().is_empty(), "{:?}", run.seen.indices());
    // Once the roots agree, it is.
    *source.other_new_root.lock().unwrap() = None;
    run.wait_landed(1, Duration::from_secs(30)).await;
    let found = run.seen.landed.lock().unwrap()[0].clone();
    assert_eq!((found.index, found.sends), (1, 0), "{found:?}");
    run.stop().await;
}

/// `medrollup-l1 upgrade ...` with `owner_key`: (success, output).
fn upgrade_cli(url: &str, rollup: Address, owner_key: &str, action: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_medrollup-l1"))
        .args(["upgrade", "--rpc", url, "--rollup", &rollup.to_string()])
        .args(action)
        .env("MEDROLLUP_L1_OWNER_KEY", owner_key)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Installs at `at` a contract whose every call returns `word` (so its
/// `vkHash()` is `word`): a verifier for other keys, without a compiler.
async fn install_constant_contract(url: &str, at: Address, word: B256) {
    let mut code = vec![0x7f]; // PUSH32 word
    code.extend_from_slice(word.as_slice());
    code.extend_from_slice(&[0x60, 0x00, 0x52, 0x60, 0x20, 0x60, 0x00, 0xf3]); // MSTORE at 0, RETURN 32 bytes
    rpc(url, "anvil_setCode", serde_json::json!([at, format!("0x{}", hex::encode(code))])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_verifier_is_announced_and_installed_only_after_the_delay() {
    let Setup { turn: _turn, anvil: _anvil, url, rollup, source } = setup(free_port(), &[]).await;
    let p = submitter::connect_read_only(&url).unwrap();
    let (_, _, ours) = proven();
    let g = submitter::governance(&p, rollup).await.unwrap();
    assert_eq!(g.owner, DEV_OWNER.parse::<Address>().unwrap());
    assert_eq!(g.sequencer, config(&url).key.address());
    assert_eq!((g.upgrade_delay_s, &g.vk_sha256, &g.proposed), (DEFAULT_UPGRADE_DELAY_S, ours, &None));

    // The sequencer's key cannot own a rollup, nor propose on this one.
    let (root, _, _) = proven();
    let own = Governance { owner: config(&url).key.address(), ..dev_governance() };
    let err = submitter::deploy(&config(&url), &verifier_artifact(), *root, own).await.unwrap_err();
    assert!(err.to_string().contains("is the sequencer's own account"), "{err}");
    let foreign = Address::repeat_byte(0xf0);
    let foreign_vk = B256::repeat_byte(0xab);
    install_constant_contract(&url, foreign, foreign_vk).await;
    let (ok, out) = upgrade_cli(&url, rollup, DEV_KEY, &["propose", "--verifier", &foreign.to_string()]);
    assert!(!ok && out.contains("NotOwner"), "{out}");

    // The owner proposes; everyone can see it, and when it may be installed.
    let (ok, out) =
        upgrade_cli(&url, rollup, DEV_OWNER_KEY, &["propose", "--verifier", &foreign.to_string()]);
    assert!(ok, "{out}");
    let proposed_at = p.get_block_by_number(alloy::eips::BlockNumberOrTag::Latest).await.unwrap().unwrap();
    let activation = proposed_at.header.timestamp + DEFAULT_UPGRADE_DELAY_S;
    let g = submitter::governance(&p, rollup).await.unwrap();
    let code_hash = alloy::primitives::keccak256(p.get_code_at(foreign).await.unwrap());
    let want = submitter::ProposedVerifier {
        verifier: foreign,
        vk_sha256: hex::encode(foreign_vk),
        activation,
        code_hash,
    };
    assert_eq!(g.proposed.as_ref(), Some(&want));
    let c = MedRollup::new(rollup, &p);
    assert_eq!(
        c.pendingVerifierCodeHash().call().await.unwrap(),
        code_hash,
        "the code proposed, kept on chain"
    );
    // The contract bounds the delay as the deployment does.
    let bounds = (c.MIN_UPGRADE_DELAY().call().await.unwrap(), c.MAX_UPGRADE_DELAY().call().await.unwrap());
    assert_eq!(bounds, (submitter::MIN_UPGRADE_DELAY_S, submitter::MAX_UPGRADE_DELAY_S));
    assert_eq!(&g.vk_sha256, ours, "the installed verifier is unchanged");
    // What the farm's verifier runs is known without deploying it: the code
    // installed on this rollup, not the proposed one's.
    let installed = MedRollup::new(rollup, &p).verifier().call().await.unwrap();
    let farm_code = submitter::runtime_code_hash(&p, &verifier_artifact()).await.unwrap();
    assert_eq!(farm_code, alloy::primitives::keccak256(p.get_code_at(installed).await.unwrap()));
    assert_ne!(farm_code, code_hash);

    // Before the wait is over it cannot be installed, and batches proven
    // for the installed verifier still land.
    let (ok, out) = upgrade_cli(&url, rollup, DEV_OWNER_KEY, &["activate"]);
    assert!(!ok && out.contains("UpgradeNotDue"), "{out}");
    source.prove_upto(1);
    let run = Running::start(config(&url), rollup, source.clone()).await;
    run.wait_landed(1, Duration::from_secs(60)).await;
    run.stop().await;

    // After it, it can; then the farm's keys no longer match the chain's.
    rpc(&url, "evm_increaseTime", serde_json::json!([DEFAULT_UPGRADE_DELAY_S])).await;
    rpc(&url, "evm_mine", serde_json::json!([])).await;
    let (ok, out) = upgrade_cli(&url, rollup, DEV_OWNER_KEY, &["activate"]);
    assert!(ok && out.contains("no proposal pending"), "{out}");
    let g = submitter::governance(&p, rollup).await.unwrap();
    assert_eq!((g.vk_sha256, g.proposed), (hex::encode(foreign_vk), None));
    let err = Submitter::connect(config(&url), rollup, ours).await.unwrap_err();
    assert!(
        matches!(err, L1Error::VkMismatch { .. }) && err.to_string().contains("proposeVerifier"),
        "{err}"
    );
    let (ok, out) = upgrade_cli(&url, rollup, DEV_OWNER_KEY, &["cancel"]);
    assert!(!ok && out.contains("NoProposal"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_landing_still_unconfirmed_when_the_next_batch_lands_is_recorded_too() {
    // Blocks only when a transaction comes, and two needed per landing:
    // batch 0 is mined and batch 1 goes out at once; its block confirms
    // batch 0, and a block mined by hand confirms batch 1.
    let Setup { turn: _turn, anvil: _anvil, url, rollup, source } = setup(free_port(), &[]).await;
    let mut c = config(&url);
    c.confirmations = 2;
    source.prove_upto(2);
    let run = Running::start(c, rollup, source.clone()).await;
    wait_until("batch 1 was not sent", || async { events(&url, rollup).await.len() == 2 }).await;
    rpc(&url, "evm_mine", serde_json::json!([])).await;
    run.wait_landed(2, Duration::from_secs(60)).await;
    let mut seen = run.seen.indices();
    seen.sort();
    assert_eq!(seen, vec![0, 1], "both landings recorded, the overtaken one included");
    run.stop().await;
    assert_chain_holds(&url, rollup, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_batch_goes_out_once_one_is_mined_and_each_counts_once_confirmed() {
    // A block a second and four confirmations. Waiting for each batch's
    // confirmations before sending the next would put four blocks between
    // consecutive batches; sent once the one before is mined, they land in
    // consecutive blocks (two apart if a send misses a block).
    const CONFIRMATIONS: u64 = 4;
    let Setup { turn: _turn, anvil: _anvil, url, rollup, source } =
        setup(free_port(), &["--block-time", "1"]).await;
    let mut c = config(&url);
    c.confirmations = CONFIRMATIONS;
    source.prove_upto(4);
    let run = Running::start(c, rollup, source.clone()).await;
    wait_until("the four batches were not mined", || async { events(&url, rollup).await.len() == 4 }).await;
    assert!(!run.seen.indices().contains(&3), "batch 3 reported landed before its confirmations");
    // (Checked while the head was short of them: asserted below.)
    let head = submitter::connect_read_only(&url).unwrap().get_block_number().await.unwrap();
    run.wait_landed(4, Duration::from_secs(60)).await;
    assert_eq!(run.seen.indices(), vec![0, 1, 2, 3], "reported oldest first");
    let landings = run.seen.landed.lock().unwrap().clone();
    for pair in landings.windows(2) {
        let gap = pair[1].block - pair[0].block;
        assert!(
            (1..CONFIRMATIONS - 1).contains(&gap),
            "batch {} landed {gap} blocks after batch {}: {landings:?}",
            pair[1].index,
            pair[0].index
        );
    }
    for l in &landings {
        assert!(l.sends >= 1 && l.latency >= Duration::from_secs(CONFIRMATIONS - 2), "accounted: {l:?}");
    }
    assert!(landings[3].block + CONFIRMATIONS - 1 > head, "batch 3 was still unconfirmed at block {head}");
    run.stop().await;
    assert_chain_holds(&url, rollup, 4).await;
}

/// Log queries a [`bounded_logs_node`] saw: `(from, to, refused)`.
type Queries = Arc<Mutex<Vec<(u64, u64, bool)>>>;

/// A node in front of `upstream` that refuses log queries over more than
/// `max` blocks, in the words of a hosted node, and notes every one.
async fn bounded_logs_node(upstream: String, max: u64) -> (String, Queries) {
    use axum::extract::State;
    async fn handle(
        State((upstream, max, seen)): State<(String, u64, Queries)>,
        axum::Json(req): axum::Json<serde_json::Value>,
    ) -> axum::Json<serde_json::Value> {
        if req["method"] == "eth_getLogs" {
            let block = |k: &str| {
                let hex = req["params"][0][k].as_str().expect("a block number, not a tag");
                u64::from_str_radix(hex.trim_start_matches("0x"), 16).unwrap()
            };
            let (from, to) = (block("fromBlock"), block("toBlock"));
            let refused = to + 1 - from > max;
            seen.lock().unwrap().push((from, to, refused));
            if refused {
                return axum::Json(serde_json::json!({
                    "jsonrpc": "2.0",
                    "id": req["id"],
                    "error": { "code": -32600, "message": format!("eth_getLogs is limited to a {max} block range") },
                }));
            }
        }
        let r = reqwest::Client::new().post(&upstream).json(&req).send().await.unwrap();
        axum::Json(r.json().await.unwrap())
    }
    let seen = Queries::default();
    let app =
        axum::Router::new().route("/", axum::routing::post(handle)).with_state((upstream, max, seen.clone()));
    (serve_node(app).await, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_read_from_the_deployment_block_in_spans_a_node_takes() {
    let _turn = TURN.lock().await;
    tokio::task::block_in_place(proven);
    let anvil = start_anvil(free_port(), &[]);
    let url = anvil.url();
    // A chain with a past: the rollup is deployed after block 50.
    rpc(&url, "anvil_mine", serde_json::json!(["0x32"])).await;
    let rollup = deploy(&url).await;
    let direct = submitter::connect_read_only(&url).unwrap();
    let deployed = submitter::deployment_block(&direct, rollup).await.unwrap();
    let code_at = |n: u64| rpc(&url, "eth_getCode", serde_json::json!([rollup, format!("{n:#x}")]));
    assert_eq!(code_at(deployed - 1).await, "0x", "no code before block {deployed}");
    assert_ne!(code_at(deployed).await, "0x", "code in block {deployed}");
    assert!(deployed > 50);

    // Four batches, ten blocks apart, and three blocks after the last.
    let source = Source::new();
    let run = Running::start(config(&url), rollup, source.clone()).await;
    for n in 1..=4 {
        source.prove_upto(n);
        run.poke();
        run.wait_landed(n, Duration::from_secs(60)).await;
        let blocks = if n < 4 { "0xa" } else { "0x3" };
        rpc(&url, "anvil_mine", serde_json::json!([blocks])).await;
    }
    run.stop().await;

    // Through a node that takes at most 8 blocks a query: the same events
    // and roots as from anvil itself, asked only from the deployment block.
    let (bounded_url, queries) = bounded_logs_node(url.clone(), 8).await;
    let bounded = submitter::connect_read_only(&bounded_url).unwrap();
    let all = submitter::batch_records(&direct, rollup).await.unwrap();
    assert_eq!(all.iter().map(|e| e.index).collect::<Vec<_>>(), [0, 1, 2, 3]);
    assert_eq!(submitter::batch_records(&bounded, rollup).await.unwrap(), all);
    for k in 0..=4u64 {
        let want = submitter::root_after(&direct, rollup, k).await.unwrap();
        assert!(want.is_some());
        assert_eq!(submitter::root_after(&bounded, rollup, k).await.unwrap(), want, "after {k} batches");
    }
    assert_eq!(submitter::root_after(&bounded, rollup, 5).await.unwrap(), None);
    let q = queries.lock().unwrap().clone();
    assert!(q.iter().any(|&(.., refused)| refused), "the whole range was refused first: {q:?}");
    assert!(
        q.iter().all(|&(from, ..)| from >= deployed),
        "nothing asked from before block {deployed}: {q:?}"
    );
    assert!(q.iter().filter(|&&(.., refused)| !refused).all(|&(from, to, _)| to + 1 - from <= 8), "{q:?}");
    // The newest batch's event is found in the first span taken, at the
    // chain's head (a span is at least 5 blocks: 8 refused halves to no less),
    // not by a scan of every span since the deployment.
    queries.lock().unwrap().clear();
    assert!(submitter::root_after(&bounded, rollup, 4).await.unwrap().is_some());
    let taken = queries.lock().unwrap().iter().filter(|&&(.., refused)| !refused).count();
    assert_eq!(taken, 1, "spans read for the newest batch: {:?}", queries.lock().unwrap());

    // A node that takes no log query at all: a clear error, not an empty chain.
    let (closed_url, _) = bounded_logs_node(url.clone(), 0).await;
    let closed = submitter::connect_read_only(&closed_url).unwrap();
    let e = submitter::batch_records(&closed, rollup).await.unwrap_err().to_string();
    assert!(
        e.contains("reading BatchSubmitted events in block") && e.contains("limited to a 0 block range"),
        "{e}"
    );
}

/// A refusal that cannot pass by itself (here: the owner made another
/// account the sequencer, as after a leaked key) stops the submitter with
/// the reason, for the coordinator to show, instead of a retry every few
/// seconds for ever that only logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submitter_no_longer_the_sequencer_stops_and_says_why() {
    let Setup { turn: _turn, anvil: _anvil, url, rollup, source } = setup(free_port(), &[]).await;
    source.prove_upto(1);
    let run = Running::start(config(&url), rollup, source.clone()).await;
    run.wait_landed(1, Duration::from_secs(60)).await;
    // The owner (anvil's second account, unlocked there) rotates the sequencer.
    let next = Address::repeat_byte(0x5e);
    let call = MedRollup::setSequencerCall { next }.abi_encode();
    let tx =
        serde_json::json!([{ "from": DEV_OWNER, "to": rollup, "data": format!("0x{}", hex::encode(call)) }]);
    rpc(&url, "eth_sendTransaction", tx).await;
    source.prove_upto(2);
    run.poke();
    let stopped = tokio::time::timeout(Duration::from_secs(60), run.task).await.expect("the submitter stops");
    let e = stopped.unwrap().unwrap_err();
    assert!(matches!(e, L1Error::Refused { index: 1, transient: false, .. }), "{e}");
    assert!(e.to_string().contains("NotSequencer"), "{e}");
    let failed = run.seen.failed.lock().unwrap().clone();
    assert!(failed.len() == 1 && failed[0].contains("NotSequencer"), "{failed:?}");
}

/// A manifest for the checked-in verifier's keys (deploy reads only the
/// manifest before the chain), in `dir`.
fn canonical_manifest(dir: &std::path::Path) {
    let vk = verifier_artifact().vk_sha256.unwrap();
    let manifest = serde_json::json!({
        "shape": { "batch_size": 4, "levels": 12 },
        "proving_key": "pk.bin", "proving_key_sha256": "00",
        "verifying_key": "vk.bin", "verifying_key_sha256": vk,
        "verifying_key_snarkjs": "vk.json", "constraints": 1, "deterministic": true
    });
    std::fs::write(dir.join("keys.json"), manifest.to_string()).unwrap();
}

/// `medrollup-l1 deploy` on node `rpc` with the keys in `dir`, writing
/// `dir/deployment.json`, with `extra` arguments.
fn deploy_cli(rpc: &str, dir: &std::path::Path, extra: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_medrollup-l1"))
        .args(["deploy", "--rpc", rpc, "--owner", DEV_OWNER])
        .arg("--keys-dir")
        .arg(dir)
        .arg("--out")
        .arg(dir.join("deployment.json"))
        .args(extra)
        .env("MEDROLLUP_L1_KEY", DEV_KEY)
        .output()
        .unwrap()
}

/// The canonical keys' seed is public: on a chain that is not a development
/// one, a rollup verified with them is refused unless allowed knowingly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_keys_are_deployed_on_another_chain_only_when_allowed() {
    let _turn = TURN.lock().await;
    let anvil = start_anvil(free_port(), &["--chain-id", "11155111"]);
    let dir = tempfile::tempdir().unwrap();
    canonical_manifest(dir.path());
    let out = dir.path().join("deployment.json");
    let refused = deploy_cli(&anvil.url(), dir.path(), &[]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains("seeded development setup") && stderr.contains("on chain 11155111"), "{stderr}");
    assert!(!out.exists());
    let provider = alloy::providers::ProviderBuilder::new().connect_http(anvil.url().parse().unwrap());
    // anvil's first account, DEV_KEY's.
    let sequencer: Address = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266".parse().unwrap();
    assert_eq!(provider.get_transaction_count(sequencer).await.unwrap(), 0, "nothing deployed");
    let allowed = deploy_cli(&anvil.url(), dir.path(), &["--allow-seeded-keys"]);
    assert!(allowed.status.success(), "{}", String::from_utf8_lossy(&allowed.stderr));
    let d: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(d["chain_id"], 11155111, "{d}");
}

#[test]
fn a_genesis_of_another_tree_height_than_the_keys_is_refused_before_deploying() {
    // The canonical keys' manifest and a genesis of height 3.
    let dir = tempfile::tempdir().unwrap();
    canonical_manifest(dir.path());
    let genesis = dir.path().join("genesis.json");
    std::fs::write(&genesis, serde_json::to_vec(&medrollup_circuits::sample::genesis(3)).unwrap()).unwrap();
    let out = deploy_cli("http://127.0.0.1:1", dir.path(), &["--genesis", genesis.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("the genesis has trees of height 3") && stderr.contains("prove trees of height 12"),
        "{stderr}"
    );
    assert!(!dir.path().join("deployment.json").exists());
}
