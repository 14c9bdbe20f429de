//! The L1 submitter wired into the coordinator: it reads proven batches from
//! the database, and what lands on chain goes back into the database, the
//! metrics and `GET /l1`.
//!
//! The rollup contract is found in this order: the address given in the
//! settings; the deployment recorded in `<data>/l1-deployment.json` if the
//! chain still has it; otherwise (a dev chain) the coordinator deploys the
//! verifier and the rollup at its genesis root and records the deployment.

use crate::metrics::Metrics;
use crate::service::now_ms;
use crate::store::{Landing as LandingRecord, Store};
use alloy::primitives::Address;
use alloy::providers::Provider;
use medrollup_circuits::keys::KeyManifest;
use medrollup_l1::contracts::{Artifact, verifier_artifact};
use medrollup_l1::submitter::{
    self, BatchSource, Deployment, L1Batch, L1Config, L1Error, Landing, Observer, Submitter,
};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tracing::{info, warn};

/// How the coordinator reaches L1.
#[derive(Debug, Clone)]
pub struct L1Settings {
    /// Node, key, confirmations, fee policy.
    pub config: L1Config,
    /// The rollup contract; `None`: reuse the recorded deployment or deploy.
    pub rollup: Option<Address>,
    /// Verifier to deploy, for keys other than the canonical ones.
    pub verifier_artifact: Option<PathBuf>,
    /// The owner of a rollup the coordinator deploys (never the sequencer).
    pub owner: Option<Address>,
    /// A deployed rollup's wait between proposing and installing a verifier.
    pub upgrade_delay_s: u64,
    /// Keys from a seeded setup used on a chain other than a development
    /// one (see [`medrollup_l1::check_seeded_keys`]).
    pub allow_seeded_keys: bool,
}

/// What `GET /l1` shows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct L1Status {
    /// Rollup contract.
    pub rollup: String,
    /// Chain id.
    pub chain_id: u64,
    /// The sequencer's address.
    pub sequencer: String,
    /// Batches landed since start (this process).
    pub landed: u64,
    /// Index of the last landed batch (recorded before a restart included).
    pub last_landed: Option<u64>,
    /// Fee bumps, resends and reorgs seen.
    pub fee_bumps: u64,
    /// Transactions sent again after they vanished.
    pub resends: u64,
    /// Times the chain lost batches.
    pub reorgs: u64,
    /// Why the submitter stopped, if it did.
    pub error: Option<String>,
    /// The rollup's owner (who installs verifiers), once read.
    pub owner: Option<String>,
    /// Seconds between a verifier's proposal and its installation.
    pub upgrade_delay_s: Option<u64>,
    /// A verifier proposed on chain and not installed yet.
    pub verifier_upgrade: Option<VerifierUpgrade>,
    /// The time of the latest block the submitter read (Unix seconds): no
    /// batch is stamped earlier, however far this machine's clock is behind.
    pub chain_time: Option<u64>,
    /// When `chain_time` was read (L1's clock now is about it plus the
    /// time since).
    #[serde(skip)]
    pub chain_time_read: Option<std::time::Instant>,
}

impl L1Status {
    /// L1's clock now, as last read and run on since (Unix seconds).
    pub fn chain_now(&self) -> Option<u64> {
        Some(self.chain_time? + self.chain_time_read?.elapsed().as_secs())
    }
}

/// A verifier proposed to replace the one installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifierUpgrade {
    /// Its address.
    pub verifier: String,
    /// The verifying key it is for.
    pub vk_sha256: String,
    /// When its owner may install it (Unix seconds).
    pub activation: u64,
    /// The keccak-256 of its code.
    pub code_hash: String,
    /// Whether its code is the verifier this farm deploys for its keys
    /// (None: the farm has no verifier for its keys to compare with).
    pub code_is_ours: Option<bool>,
    /// Whether it is for this farm's keys: it says so, and its code is not
    /// another than this farm's verifier. If not, the farm's proofs are
    /// refused once it is installed, or it could accept forged ones.
    pub for_our_keys: bool,
}

/// The running submitter.
#[derive(Debug)]
pub struct L1Handle {
    /// Poked whenever a batch is proven.
    pub wake: tokio::sync::watch::Sender<u64>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    /// Shared with the HTTP API.
    pub status: Arc<Mutex<L1Status>>,
}

impl L1Handle {
    /// Tells the submitter a batch was proven.
    pub fn poke(&self) {
        self.wake.send_modify(|n| *n += 1);
    }

    /// Stops the submitter (a transaction in flight is finished by the next start).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// The coordinator's database as the submitter's batch source.
struct StoreSource(Arc<Store>);

impl BatchSource for StoreSource {
    fn batch(&self, index: u64) -> Result<Option<L1Batch>, String> {
        let Some(b) = self.0.batch(index).map_err(|e| e.to_string())? else { return Ok(None) };
        let proof = match &b.proof {
            Some(p) => Some(
                medrollup_wire::decode_stored_proof(&p.proof)
                    .map_err(|e| format!("batch {index}: stored proof does not decode: {e}"))?,
            ),
            None => None,
        };
        let landed = self.0.landing(index).map_err(|e| e.to_string())?.is_some();
        Ok(Some(L1Batch { index, public: b.public_inputs, cid: b.cid.to_bytes().to_vec(), proof, landed }))
    }
}

/// Records what the submitter does.
struct Recorder {
    store: Arc<Store>,
    metrics: Metrics,
    status: Arc<Mutex<L1Status>>,
}

impl Recorder {
    /// Proven batches awaiting L1, as the database has them now.
    fn refresh_awaiting(&self) {
        if let Err(e) = self.metrics.refresh_awaiting_l1(&self.store) {
            warn!(error = %e, "could not count the batches awaiting L1");
        }
    }
}

impl Observer for Recorder {
    fn landed(&self, l: &Landing) {
        let batch = self.store.batch(l.index).ok().flatten();
        let rec = LandingRecord {
            tx_hash: l.tx_hash.to_string(),
            block: l.block,
            gas_used: l.gas_used,
            gas_price_wei: l.gas_price.to_string(),
            latency_ms: l.latency.as_millis() as u64,
            sends: l.sends,
            landed_at_ms: now_ms(),
        };
        if let Err(e) = self.store.record_landing(l.index, &rec) {
            warn!(batch = l.index, error = %e, "could not record the landing (the chain has it)");
        }
        let m = &self.metrics;
        m.note_landed(l.index);
        self.refresh_awaiting();
        m.l1_last_landed_block.set(l.block as i64);
        m.l1_last_landed_timestamp_seconds.set((now_ms() / 1000) as i64);
        m.l1_gas_per_batch.with_label_values::<&str>(&[]).observe(l.gas_used as f64);
        // A landing found on chain (sends 0) has no latency of its own.
        if l.sends > 0 {
            m.l1_submit_seconds.with_label_values::<&str>(&[]).observe(l.latency.as_secs_f64());
        }
        if let Some(b) = batch {
            if !b.tx_ids.is_empty() {
                m.l1_gas_per_transaction
                    .with_label_values::<&str>(&[])
                    .observe(l.gas_used as f64 / b.tx_ids.len() as f64);
            }
            if l.sends > 0 {
                m.seal_to_l1_seconds
                    .with_label_values::<&str>(&[])
                    .observe(now_ms().saturating_sub(b.sealed_at_ms) as f64 / 1000.0);
            }
        }
        let mut s = self.status.lock().expect("l1 status");
        s.landed += 1;
        s.last_landed = Some(l.index);
        info!(batch = l.index, tx = %l.tx_hash, block = l.block, gas = l.gas_used, "batch landed on L1");
    }
    fn fee_bumped(&self, _: u64) {
        self.metrics.l1_events_total.with_label_values(&["fee_bump"]).inc();
        self.status.lock().expect("l1 status").fee_bumps += 1;
    }
    fn resent(&self, _: u64) {
        self.metrics.l1_events_total.with_label_values(&["resend"]).inc();
        self.status.lock().expect("l1 status").resends += 1;
    }
    fn reorg(&self, _: u64, count: u64) {
        self.metrics.l1_events_total.with_label_values(&["reorg"]).inc();
        // Batches from `count` on are off the chain until they land again:
        // the API does not show them landed meanwhile.
        if let Err(e) = self.store.forget_landings_from(count) {
            warn!(error = %e, "could not forget the landings the chain lost");
        }
        self.metrics.last_submitted_batch.set(count as i64 - 1);
        self.refresh_awaiting();
        let mut s = self.status.lock().expect("l1 status");
        s.reorgs += 1;
        s.last_landed = s.last_landed.min(count.checked_sub(1));
        // The chain lost batches (a reorg, a dev chain reset): its clock is
        // read afresh, not held at the lost chain's.
        s.chain_time = None;
        s.chain_time_read = None;
    }
    fn failed(&self, e: &L1Error) {
        self.metrics.l1_up.set(0);
        self.status.lock().expect("l1 status").error = Some(e.to_string());
    }
    fn chain_time(&self, time: u64) {
        let mut s = self.status.lock().expect("l1 status");
        // Noted when it moves: a head that stops (a node syncing, a chain
        // mining on demand) leaves L1's clock estimate running on from it.
        if s.chain_time.is_none_or(|t| time > t) {
            s.chain_time = Some(time);
            s.chain_time_read = Some(std::time::Instant::now());
        }
    }
}

/// Why L1 could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum L1SetupError {
    /// The submitter.
    #[error(transparent)]
    L1(#[from] L1Error),
    /// The verifier to deploy.
    #[error("{0}")]
    Verifier(String),
    /// The deployment file.
    #[error("{path}: {reason}")]
    File {
        /// Which.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

fn load_verifier(settings: &L1Settings, manifest: &KeyManifest) -> Result<Artifact, L1SetupError> {
    let artifact = match &settings.verifier_artifact {
        Some(p) => Artifact::parse(
            &std::fs::read_to_string(p)
                .map_err(|e| L1SetupError::File { path: p.clone(), reason: e.to_string() })?,
        )
        .map_err(|e| L1SetupError::File {
            path: p.clone(),
            reason: format!("not a verifier artifact: {e}"),
        })?,
        None => verifier_artifact(),
    };
    if artifact.vk_sha256.as_deref() != Some(manifest.verifying_key_sha256.as_str()) {
        return Err(L1SetupError::Verifier(format!(
            "the verifier to deploy is for verifying key {}, but the farm proves with {}: generate the \
             verifier for these keys (`KEYS=<keys dir> scripts/contracts`) and pass its artifact",
            artifact.vk_sha256.as_deref().unwrap_or("(unknown)"),
            manifest.verifying_key_sha256
        )));
    }
    Ok(artifact)
}

/// The rollup to use: given, recorded and still on chain, or freshly deployed.
async fn resolve(
    settings: &L1Settings,
    data_dir: &Path,
    manifest: &KeyManifest,
    genesis_root: ark_bn254::Fr,
) -> Result<Address, L1SetupError> {
    if let Some(a) = settings.rollup {
        return Ok(a);
    }
    let path = data_dir.join("l1-deployment.json");
    let provider = submitter::connect(&settings.config)?;
    let chain_id =
        provider.get_chain_id().await.map_err(|e| L1Error::Rpc(format!("reading the chain id: {e}")))?;
    if let Ok(text) = std::fs::read_to_string(&path) {
        let d: Deployment = serde_json::from_str(&text)
            .map_err(|e| L1SetupError::File { path: path.clone(), reason: e.to_string() })?;
        let code = provider
            .get_code_at(d.rollup)
            .await
            .map_err(|e| L1Error::Rpc(format!("reading the rollup's code: {e}")))?;
        if d.chain_id == chain_id && !code.is_empty() {
            return Ok(d.rollup);
        }
        warn!(rollup = %d.rollup, "the recorded rollup is not on this chain (a fresh dev chain?): deploying anew");
    }
    let Some(owner) = settings.owner else {
        return Err(L1SetupError::Verifier(
            "deploying the rollup needs its owner, who installs verifiers: pass --l1-owner ADDRESS (an account \
             other than the sequencer's; on anvil e.g. its second account)"
                .into(),
        ));
    };
    let gov = submitter::Governance { owner, upgrade_delay_s: settings.upgrade_delay_s };
    let d =
        submitter::deploy(&settings.config, &load_verifier(settings, manifest)?, genesis_root, gov).await?;
    std::fs::write(&path, serde_json::to_vec_pretty(&d).expect("json"))
        .map_err(|e| L1SetupError::File { path: path.clone(), reason: e.to_string() })?;
    info!(rollup = %d.rollup, verifier = %d.verifier, chain_id, "rollup deployed");
    Ok(d.rollup)
}

/// How long after it stopped on an error the submitter is started again.
const RESTART_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

/// The L1 watcher reads the rollup's governance every this many rounds
/// (2 s each).
const GOVERNANCE_EVERY: u64 = 5;

/// Shows the rollup's governance in `GET /l1` and the metrics, and warns
/// once per proposal of a verifier. `ours`: this farm's key hash; `our_code`:
/// the hash of the code of the verifier it deploys for them, if known.
fn note_governance(
    g: &submitter::GovernanceState,
    ours: &str,
    our_code: Option<alloy::primitives::B256>,
    metrics: &Metrics,
    status: &Mutex<L1Status>,
) {
    let upgrade = g.proposed.as_ref().map(|p| {
        let code_is_ours = our_code.map(|c| c == p.code_hash);
        VerifierUpgrade {
            verifier: p.verifier.to_string(),
            vk_sha256: p.vk_sha256.clone(),
            activation: p.activation,
            code_hash: p.code_hash.to_string(),
            code_is_ours,
            for_our_keys: p.vk_sha256 == ours && code_is_ours != Some(false),
        }
    });
    metrics.l1_verifier_upgrade_activation_seconds.set(upgrade.as_ref().map_or(0, |u| u.activation as i64));
    metrics.l1_verifier_upgrade_foreign.set(upgrade.as_ref().is_some_and(|u| !u.for_our_keys) as i64);
    let mut s = status.lock().expect("l1 status");
    if upgrade != s.verifier_upgrade
        && let Some(u) = &upgrade
    {
        if u.for_our_keys {
            info!(verifier = %u.verifier, activation = u.activation, "a verifier for this farm's keys is proposed");
        } else if u.vk_sha256 == ours {
            warn!(
                verifier = %u.verifier, code = %u.code_hash, activation = u.activation,
                "a verifier is proposed that reports this farm's keys but is not this farm's verifier code \
                 (a proxy, say): once installed it may accept forged proofs; check it"
            );
        } else {
            warn!(
                verifier = %u.verifier, vk = %u.vk_sha256, ours, activation = u.activation,
                "a verifier for OTHER keys is proposed: once installed, this farm's proofs are refused"
            );
        }
    }
    s.owner = Some(g.owner.to_string());
    s.upgrade_delay_s = Some(g.upgrade_delay_s);
    s.verifier_upgrade = upgrade;
}

/// Connects to L1 (deploying on a dev chain if needed) and starts the submitter.
pub async fn start(
    settings: &L1Settings,
    data_dir: &Path,
    manifest: &KeyManifest,
    genesis_root: ark_bn254::Fr,
    store: Arc<Store>,
    metrics: Metrics,
) -> Result<L1Handle, L1SetupError> {
    let provider = submitter::connect(&settings.config)?;
    let chain_id =
        provider.get_chain_id().await.map_err(|e| L1Error::Rpc(format!("reading the chain id: {e}")))?;
    medrollup_l1::check_seeded_keys(manifest.deterministic, chain_id, settings.allow_seeded_keys)
        .map_err(|e| L1SetupError::Verifier(format!("{e} (--l1-allow-seeded-keys)")))?;
    let rollup = resolve(settings, data_dir, manifest, genesis_root).await?;
    // What this farm's verifier runs, to tell a proposed verifier that only
    // reports the farm's keys from one that is its verifier: the code its
    // artifact deploys, or else (keys without one here) the installed
    // verifier's, which the submitter checks is for these keys.
    let from_artifact = match load_verifier(settings, manifest) {
        Ok(artifact) => submitter::runtime_code_hash(&provider, &artifact).await.ok(),
        Err(_) => None,
    };
    let our_code = match from_artifact {
        Some(h) => Some(h),
        None => match submitter::installed_verifier_code_hash(&provider, rollup).await {
            Ok(h) => Some(h),
            Err(e) => {
                warn!(error = %e, "could not read the farm's verifier code: proposals are checked by key hash only");
                None
            }
        },
    };
    let mut s = Submitter::connect(settings.config.clone(), rollup, &manifest.verifying_key_sha256).await?;
    let chain = s.chain_state().await?;
    info!(%rollup, batches_on_chain = chain.count, root = %chain.root, "L1 submitter resumes from the chain");
    // The count the chain had when this coordinator last saw a batch land:
    // one lower now (a reorg, or a node that lost its state, while it was
    // down) is read again, and once confirmed the landings the chain lost
    // are forgotten (they land again), as for a reorg seen while running.
    if let Ok(n) = store.next_submit()
        && n > 0
    {
        s.resume_from_count(n);
    }
    // The last landing recorded before this start (a restart).
    let last_landed = store.next_submit().ok().and_then(|n| n.checked_sub(1));
    if let Some(n) = last_landed {
        metrics.last_submitted_batch.set(n as i64);
    }
    let status = Arc::new(Mutex::new(L1Status {
        rollup: rollup.to_string(),
        chain_id: s.provider().get_chain_id().await.unwrap_or_default(),
        sequencer: s.address().to_string(),
        last_landed,
        chain_time: Some(chain.time),
        chain_time_read: Some(std::time::Instant::now()),
        ..Default::default()
    }));
    metrics.l1_enabled.set(1);
    metrics.l1_up.set(1);
    metrics.l1_confirmations.set(settings.config.confirmations as i64);
    let (wake, wake_rx) = tokio::sync::watch::channel(0u64);
    let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
    // The chain's head and the submitter's balance, for the dashboards and
    // the low-balance alert; every `GOVERNANCE_EVERY` rounds, the rollup's
    // governance, for the verifier-upgrade alerts.
    let watcher = {
        let provider = submitter::connect(&settings.config)?;
        let (metrics, me, mut stop) = (metrics.clone(), s.address(), stop_rx.clone());
        let (status, ours) = (status.clone(), manifest.verifying_key_sha256.to_ascii_lowercase());
        async move {
            for round in 0u64.. {
                if let Ok(head) = provider.get_block_number().await {
                    metrics.l1_head_block.set(head as i64);
                }
                if let Ok(wei) = provider.get_balance(me).await {
                    metrics.l1_submitter_balance_ether.set(f64::from(wei) / 1e18);
                }
                if round % GOVERNANCE_EVERY == 0 {
                    match submitter::governance(&provider, rollup).await {
                        Ok(g) => note_governance(&g, &ours, our_code, &metrics, &status),
                        Err(e) => warn!(error = %e, "could not read the rollup's governance"),
                    }
                }
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
                }
            }
        }
    };
    tokio::spawn(watcher);
    let recorder = Recorder { store: store.clone(), metrics: metrics.clone(), status: status.clone() };
    let (config, vk) = (settings.config.clone(), manifest.verifying_key_sha256.clone());
    let task = tokio::spawn(async move {
        let source = StoreSource(store);
        let mut submitter = Some(s);
        loop {
            if let Some(s) = submitter.take() {
                let mut stop = stop_rx.clone();
                let shutdown = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                if s.run(&source, &recorder, wake_rx.clone(), shutdown).await.is_ok() {
                    return; // stopped
                }
            }
            // Stopped on an error retrying could not fix (shown in GET /l1
            // and by medrollup_l1_up 0): the farm goes on proving, so the
            // submitter is started again a while later, in case what stopped
            // it was mended (the right verifier installed, a database read
            // that failed once).
            tokio::select! {
                _ = stop_rx.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(RESTART_AFTER) => {}
            }
            match Submitter::connect(config.clone(), rollup, &vk).await {
                Ok(mut s) => {
                    // As at the first start: a count the chain lost while
                    // the submitter was stopped is taken for a reorg.
                    if let Ok(n) = source.0.next_submit()
                        && n > 0
                    {
                        s.resume_from_count(n);
                    }
                    info!("L1 submitter started again");
                    metrics.l1_up.set(1);
                    recorder.status.lock().expect("l1 status").error = None;
                    submitter = Some(s);
                }
                Err(e) => {
                    warn!(error = %e, "the L1 submitter cannot start again yet");
                    recorder.failed(&e);
                }
            }
        }
    });
    Ok(L1Handle { wake, stop, task, status })
}
