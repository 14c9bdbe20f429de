//! Deploying the contracts on a dev chain, and landing proven batches on it
//! strictly in order.
//!
//! The chain is the source of truth: every round the submitter reads the
//! contract's batch count and root, and offers the batch with that index.
//! So a restart of the submitter, of the node (state reloaded) or a reorg
//! that removes landed batches all come down to the same thing: the chain is
//! at index `n`, batch `n` goes next. The contract refuses a batch whose old
//! root is not the current root, so no batch can land twice or out of order.
//!
//! One transaction waits to be mined at a time. Its nonce is the account's
//! confirmed transaction count; a transaction not mined within
//! `stuck_after` has its fees raised (same nonce, so one of the versions
//! lands); one the node no longer knows (dropped) is sent again. Once it is
//! mined the next batch goes out, without waiting for confirmations: so
//! batches land one a block, not one per `confirmations` blocks. A landed
//! batch counts (is reported to the observer) once `confirmations` blocks
//! hold it and it is still in the canonical chain; each round reports those
//! that got there, oldest first.

use crate::contracts::{Artifact, BatchVerifier, MedRollup};
use crate::verifier::{fr_u256, input_words, proof_words};
use alloy::consensus::TxEnvelope;
use alloy::eips::eip2718::Encodable2718;
use alloy::eips::{BlockId, BlockNumberOrTag};
use alloy::network::{Ethereum, EthereumWallet, NetworkTransactionBuilder, TransactionBuilder};
use alloy::primitives::{Address, B256, Bytes, TxHash};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::{TransactionReceipt, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{SolCall, SolConstructor, SolInterface};
use ark_bn254::{Bn254, Fr};
use ark_groth16::Proof;
use medrollup_circuits::batch::PublicInputs;
use std::future::Future;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// The submitter's settings.
#[derive(Clone)]
pub struct L1Config {
    /// JSON-RPC URL of the node.
    pub rpc_url: String,
    /// The sequencer's key (never logged: `Debug` shows its address only).
    pub key: PrivateKeySigner,
    /// Blocks on top of a batch's block before it counts as landed (1 = mined).
    pub confirmations: u64,
    /// How often the node is polled.
    pub poll: Duration,
    /// A transaction not mined after this has its fees raised.
    pub stuck_after: Duration,
    /// Fee raise per bump, in percent (nodes want at least 10).
    pub fee_bump_percent: u64,
    /// Gas limit of a submission.
    pub gas_limit: u64,
    /// The most a submission offers per gas (max fee; the tip is at most
    /// that), in wei, however long it waits: fee raises stop there, and a
    /// transaction at the cap waits for the network's fees to come down.
    pub max_fee_cap: u128,
}

/// [`L1Config::max_fee_cap`] by default: 500 gwei (about 0.14 ETH for a
/// 282k-gas submission at most).
pub const DEFAULT_MAX_FEE_CAP: u128 = 500 * GWEI;

/// Wei in a gwei.
pub const GWEI: u128 = 1_000_000_000;

impl std::fmt::Debug for L1Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("L1Config")
            .field("rpc_url", &self.rpc_url)
            .field("sequencer", &self.key.address())
            .field("confirmations", &self.confirmations)
            .field("poll", &self.poll)
            .field("stuck_after", &self.stuck_after)
            .field("fee_bump_percent", &self.fee_bump_percent)
            .field("max_fee_cap", &self.max_fee_cap)
            .finish_non_exhaustive()
    }
}

impl L1Config {
    /// Defaults for a local dev chain with `key`.
    pub fn local(rpc_url: &str, key: PrivateKeySigner) -> Self {
        Self {
            rpc_url: rpc_url.into(),
            key,
            confirmations: 1,
            poll: Duration::from_millis(250),
            stuck_after: Duration::from_secs(6),
            fee_bump_percent: 25,
            gas_limit: 1_000_000,
            max_fee_cap: DEFAULT_MAX_FEE_CAP,
        }
    }
}

/// Parses a hex private key (with or without 0x), saying what is wrong
/// without echoing it.
pub fn parse_key(text: &str) -> Result<PrivateKeySigner, L1Error> {
    text.trim()
        .parse::<PrivateKeySigner>()
        .map_err(|_| L1Error::Config("the L1 private key is not 32 bytes of hex".into()))
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum L1Error {
    /// The node could not be reached or answered with an error.
    #[error("L1 node: {0}")]
    Rpc(String),
    /// Bad settings.
    #[error("L1 settings: {0}")]
    Config(String),
    /// The verifier on chain is for other keys.
    #[error(
        "the verifier on chain is for verifying key sha256 {chain}, this farm proves with {ours}: \
         have the owner install the matching verifier (MedRollup.proposeVerifier, then activateVerifier \
         after the rollup's upgrade delay) or use the matching keys"
    )]
    VkMismatch {
        /// On chain.
        chain: String,
        /// Ours.
        ours: String,
    },
    /// The chain's root is not the one the farm expects.
    #[error(
        "the rollup on chain is at batch {index} with root {chain}, but this coordinator's batch {index} \
         starts from {ours}: the chain and the coordinator have diverged"
    )]
    Diverged {
        /// The chain's batch count.
        index: u64,
        /// Root on chain.
        chain: String,
        /// The coordinator's old root for that batch.
        ours: String,
    },
    /// The contract refused the batch.
    #[error("the rollup contract refuses batch {index}: {reason}")]
    Refused {
        /// Batch index.
        index: u64,
        /// Decoded revert.
        reason: String,
        /// Whether the chain may take it later: the root moved on under it
        /// (its batch landing meanwhile), or its time is still ahead of the
        /// chain's. Other refusals (this account no longer the sequencer, a
        /// proof or CID the contract refuses, a time before the last
        /// batch's) stop the submitter, shown in `GET /l1` and the metrics.
        transient: bool,
    },
}

impl L1Error {
    /// Whether retrying later can help.
    pub fn is_transient(&self) -> bool {
        matches!(self, L1Error::Rpc(_) | L1Error::Refused { transient: true, .. })
    }
}

/// Whether the contract's refusal `data` may pass by itself (see
/// [`L1Error::Refused`]).
fn refusal_is_transient(data: &[u8]) -> bool {
    matches!(
        MedRollup::MedRollupErrors::abi_decode(data),
        Ok(MedRollup::MedRollupErrors::StaleOldRoot(_) | MedRollup::MedRollupErrors::TimestampInFuture(_))
    )
}

fn rpc<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> L1Error {
    move |e| L1Error::Rpc(format!("{what}: {e}"))
}

/// A batch as the contract takes it.
#[derive(Debug, Clone)]
pub struct L1Batch {
    /// Index.
    pub index: u64,
    /// Public inputs.
    pub public: PublicInputs,
    /// CID bytes of the batch data.
    pub cid: Vec<u8>,
    /// The proof, once there is one.
    pub proof: Option<Proof<Bn254>>,
    /// Whether its landing is recorded (what [`Observer::landed`] was told).
    pub landed: bool,
}

/// Where the submitter finds batches (the coordinator's database).
pub trait BatchSource: Send + Sync {
    /// Sealed batch `index`, if there is one.
    fn batch(&self, index: u64) -> Result<Option<L1Batch>, String>;
}

/// A batch landed on chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Landing {
    /// Batch index.
    pub index: u64,
    /// The transaction that landed it.
    pub tx_hash: TxHash,
    /// Its block.
    pub block: u64,
    /// Gas it used.
    pub gas_used: u64,
    /// Price paid per gas (wei).
    pub gas_price: u128,
    /// From the first send to enough confirmations; zero for a landing
    /// found on chain (`sends` 0).
    pub latency: Duration,
    /// Versions sent (1 + fee bumps + resends); 0 for a landing this
    /// submitter found on chain without having seen it sent (one sent
    /// before a restart).
    pub sends: u32,
}

/// What the submitter tells its owner (for metrics and the database).
pub trait Observer: Send + Sync {
    /// A batch landed with enough confirmations.
    fn landed(&self, landing: &Landing);
    /// A transaction's fees were raised.
    fn fee_bumped(&self, _index: u64) {}
    /// A transaction vanished (dropped, or removed by a reorg) and is sent again.
    fn resent(&self, _index: u64) {}
    /// The chain's batch count went down (a reorg).
    fn reorg(&self, _from: u64, _to: u64) {}
    /// The submitter stopped on an error that retrying cannot fix.
    fn failed(&self, _error: &L1Error) {}
    /// The chain's clock: the time of the latest block read (Unix seconds).
    fn chain_time(&self, _time: u64) {}
}

/// Connects to the node with the sequencer's key.
pub fn connect(config: &L1Config) -> Result<DynProvider, L1Error> {
    connect_read_only(&config.rpc_url)
}

/// Deployed contract addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Deployment {
    /// The rollup contract.
    pub rollup: Address,
    /// Its verifier.
    pub verifier: Address,
    /// The chain id.
    pub chain_id: u64,
    /// Block of the rollup's deployment.
    pub block: u64,
}

/// Fees for a fresh transaction: twice the next base fee plus a tip.
async fn fresh_fees(p: &DynProvider) -> Result<(u128, u128), L1Error> {
    let f = p.estimate_eip1559_fees().await.map_err(rpc("estimating fees"))?;
    let tip = f.max_priority_fee_per_gas.max(1_000_000_000);
    Ok((f.max_fee_per_gas.max(tip) + tip, tip))
}

/// Signs and sends `req` (nonce, gas and fees already set); returns its hash.
async fn send(p: &DynProvider, wallet: &EthereumWallet, req: TransactionRequest) -> Result<TxHash, L1Error> {
    let env: TxEnvelope = <TransactionRequest as NetworkTransactionBuilder<Ethereum>>::build(req, wallet)
        .await
        .map_err(|e| L1Error::Config(format!("signing: {e}")))?;
    let hash = *env.tx_hash();
    match p.send_raw_transaction(&env.encoded_2718()).await {
        Ok(_) => Ok(hash),
        // The node has it already (a resend of the very same bytes; geth
        // says "already known", anvil "already imported").
        Err(e) if ["already known", "already imported"].iter().any(|m| e.to_string().contains(m)) => Ok(hash),
        Err(e) => Err(L1Error::Rpc(format!("sending a transaction: {e}"))),
    }
}

/// Sends one transaction from the key's account (a call to `to`, or a
/// deployment when `to` is `None`) at current fees and waits for its receipt.
/// For deployments and tools; batches go through [`Submitter`].
pub async fn send_and_wait(
    config: &L1Config,
    to: Option<Address>,
    input: Bytes,
    gas_limit: u64,
) -> Result<TransactionReceipt, L1Error> {
    let p = connect(config)?;
    let wallet = EthereumWallet::from(config.key.clone());
    let from = config.key.address();
    let chain_id = p.get_chain_id().await.map_err(rpc("reading the chain id"))?;
    let nonce = p.get_transaction_count(from).pending().await.map_err(rpc("reading the nonce"))?;
    let (max_fee, tip) = fresh_fees(&p).await?;
    let req = TransactionRequest::default()
        .with_from(from)
        .with_nonce(nonce)
        .with_chain_id(chain_id)
        .with_gas_limit(gas_limit)
        .with_max_fee_per_gas(max_fee)
        .with_max_priority_fee_per_gas(tip);
    let req = match to {
        Some(to) => req.with_to(to).with_input(input),
        None => req.with_deploy_code(input),
    };
    let hash = send(&p, &wallet, req).await?;
    wait_receipt(&p, hash, Duration::from_secs(60), config.poll).await
}

/// Deploys `artifact` with ABI-encoded constructor `args`; returns its address.
pub async fn deploy_contract(
    config: &L1Config,
    artifact: &Artifact,
    args: &[u8],
) -> Result<(Address, u64), L1Error> {
    let mut code = artifact.bytecode.to_vec();
    code.extend_from_slice(args);
    let receipt = send_and_wait(config, None, code.into(), 5_000_000).await?;
    if !receipt.status() {
        return Err(L1Error::Rpc(format!("deploying {} reverted", artifact.contract)));
    }
    let addr = receipt.contract_address.ok_or_else(|| {
        L1Error::Rpc(format!("the {} deployment has no contract address", artifact.contract))
    })?;
    info!(%addr, contract = %artifact.contract, gas = receipt.gas_used, "deployed");
    Ok((addr, receipt.block_number.unwrap_or_default()))
}

/// Who governs a rollup being deployed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Governance {
    /// The owner: replaces the sequencer, proposes and installs verifiers.
    /// Not the sequencer's key (the contract refuses that).
    pub owner: Address,
    /// Seconds between proposing a verifier and installing it.
    pub upgrade_delay_s: u64,
}

/// [`Governance::upgrade_delay_s`] by default: two days for light clients
/// and operators to see a proposed verifier before it decides validity.
pub const DEFAULT_UPGRADE_DELAY_S: u64 = 2 * 24 * 3600;

/// The shortest upgrade delay a deployment takes: less leaves no time to
/// notice a proposed verifier (none is no timelock at all).
pub const MIN_UPGRADE_DELAY_S: u64 = 3600;

/// The longest: the contract adds the delay to the block's time in 64 bits,
/// and a delay of years would make every upgrade impossible in practice.
pub const MAX_UPGRADE_DELAY_S: u64 = 365 * 24 * 3600;

/// Deploys a verifier from `verifier` and the rollup contract with
/// `genesis_root`, the key's address as sequencer, governed by `gov`.
pub async fn deploy(
    config: &L1Config,
    verifier: &Artifact,
    genesis_root: Fr,
    gov: Governance,
) -> Result<Deployment, L1Error> {
    if gov.owner == config.key.address() {
        return Err(L1Error::Config(format!(
            "the rollup's owner {} is the sequencer's own account: the owner (who installs verifiers) must be \
             another key, one that is not online on the coordinator",
            gov.owner
        )));
    }
    if gov.owner == Address::ZERO {
        return Err(L1Error::Config("the rollup's owner is the zero address".into()));
    }
    if !(MIN_UPGRADE_DELAY_S..=MAX_UPGRADE_DELAY_S).contains(&gov.upgrade_delay_s) {
        return Err(L1Error::Config(format!(
            "an upgrade delay of {} s: a proposed verifier must wait between {MIN_UPGRADE_DELAY_S} s (time to \
             notice it) and {MAX_UPGRADE_DELAY_S} s before it can be installed",
            gov.upgrade_delay_s
        )));
    }
    let chain_id = connect(config)?.get_chain_id().await.map_err(rpc("reading the chain id"))?;
    let (verifier_addr, _) = deploy_contract(config, verifier, &[]).await?;
    let args = MedRollup::constructorCall {
        genesisRoot_: fr_u256(&genesis_root).into(),
        verifier_: verifier_addr,
        sequencer_: config.key.address(),
        owner_: gov.owner,
        upgradeDelay_: gov.upgrade_delay_s,
    }
    .abi_encode();
    let (rollup, block) = deploy_contract(config, &crate::contracts::rollup_artifact(), &args).await?;
    Ok(Deployment { rollup, verifier: verifier_addr, chain_id, block })
}

/// A verifier proposed and not yet installed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProposedVerifier {
    /// Its address.
    pub verifier: Address,
    /// The verifying key sha256 it reports (hex).
    pub vk_sha256: String,
    /// When the owner may install it (Unix seconds).
    pub activation: u64,
    /// The keccak-256 of its code: what it runs, whatever it reports (a
    /// proxy could report a farm's key hash, and change what it delegates
    /// to once installed).
    pub code_hash: B256,
}

/// The keccak-256 of the code `artifact` deploys (it takes no constructor
/// arguments, so the same on any chain): the node runs its creation code in
/// a call, which returns the code a deployment would leave.
pub async fn runtime_code_hash(provider: &DynProvider, artifact: &Artifact) -> Result<B256, L1Error> {
    let create = TransactionRequest::default().with_deploy_code(artifact.bytecode.clone());
    let code = provider.call(create).await.map_err(rpc("running the verifier's creation code"))?;
    Ok(alloy::primitives::keccak256(&code))
}

/// The keccak-256 of the code of the verifier installed on `rollup`.
pub async fn installed_verifier_code_hash(provider: &DynProvider, rollup: Address) -> Result<B256, L1Error> {
    let verifier = MedRollup::new(rollup, provider)
        .verifier()
        .call()
        .await
        .map_err(rpc("reading the verifier's address"))?;
    let code = provider.get_code_at(verifier).await.map_err(rpc("reading the verifier's code"))?;
    Ok(alloy::primitives::keccak256(&code))
}

/// Who governs a rollup, and what upgrade is pending.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GovernanceState {
    /// The owner.
    pub owner: Address,
    /// The sequencer.
    pub sequencer: Address,
    /// Seconds between a proposal and its installation.
    pub upgrade_delay_s: u64,
    /// The installed verifier's key hash (hex).
    pub vk_sha256: String,
    /// The proposed verifier, if any.
    pub proposed: Option<ProposedVerifier>,
}

/// Reads the rollup's governance (all at the node's latest block). Needs no
/// key: light clients and operators watch for proposed verifiers this way.
pub async fn governance(provider: &DynProvider, rollup: Address) -> Result<GovernanceState, L1Error> {
    let at = latest_block(provider).await?;
    let c = MedRollup::new(rollup, provider);
    let owner = c.owner().block(at).call().await.map_err(rpc("reading the owner"))?;
    let sequencer = c.sequencer().block(at).call().await.map_err(rpc("reading the sequencer"))?;
    let upgrade_delay_s =
        c.upgradeDelay().block(at).call().await.map_err(rpc("reading the upgrade delay"))?;
    let vk = c.vkHash().block(at).call().await.map_err(rpc("reading the verifier's key hash"))?;
    let pending = c.pendingVerifier().block(at).call().await.map_err(rpc("reading the pending verifier"))?;
    let proposed = if pending == Address::ZERO {
        None
    } else {
        let activation = c
            .pendingVerifierActivation()
            .block(at)
            .call()
            .await
            .map_err(rpc("reading the pending verifier's activation"))?;
        // A proposed verifier that cannot say its key is reported as such:
        // the owner can still install it.
        let vk_sha256 = match BatchVerifier::new(pending, provider).vkHash().block(at).call().await {
            Ok(h) => hex::encode(h),
            Err(e) => format!("(unreadable: {e})"),
        };
        // Code that cannot be read hashes to zero, no verifier's: the
        // proposal is shown, and taken for one that is not the farm's.
        let code_hash = match provider.get_code_at(pending).block_id(at).await {
            Ok(code) => alloy::primitives::keccak256(&code),
            Err(_) => B256::ZERO,
        };
        Some(ProposedVerifier { verifier: pending, vk_sha256, activation, code_hash })
    };
    Ok(GovernanceState { owner, sequencer, upgrade_delay_s, vk_sha256: hex::encode(vk), proposed })
}

async fn wait_receipt(
    p: &DynProvider,
    hash: TxHash,
    timeout: Duration,
    poll: Duration,
) -> Result<TransactionReceipt, L1Error> {
    let t = Instant::now();
    loop {
        if let Some(r) = p.get_transaction_receipt(hash).await.map_err(rpc("reading a receipt"))? {
            return Ok(r);
        }
        if t.elapsed() > timeout {
            return Err(L1Error::Rpc(format!("transaction {hash} not mined within {timeout:?}")));
        }
        tokio::time::sleep(poll).await;
    }
}

/// Reads a revert's reason from an error that carries revert data.
fn revert_reason(e: &alloy::contract::Error) -> String {
    if let Some(data) = e.as_revert_data() {
        if let Ok(err) = MedRollup::MedRollupErrors::abi_decode(&data) {
            return format!("{err:?}");
        }
        return format!("revert 0x{}", hex::encode(&data));
    }
    e.to_string()
}

/// What the chain says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainState {
    /// Batches on chain.
    pub count: u64,
    /// Current root.
    pub root: B256,
    /// The time of the block these were read at (Unix seconds).
    pub time: u64,
}

/// The rollup's batch count at the node's latest block (one call; see
/// [`chain_state`] for the count and root read together).
pub async fn batch_count(provider: &DynProvider, rollup: Address) -> Result<u64, L1Error> {
    MedRollup::new(rollup, provider).batchCount().call().await.map_err(rpc("reading the batch count"))
}

/// The node's latest block, to read several values at (one state).
async fn latest_block(provider: &DynProvider) -> Result<BlockId, L1Error> {
    Ok(BlockId::hash(latest_header(provider).await?.1))
}

/// The node's latest block number.
async fn latest_number(provider: &DynProvider) -> Result<u64, L1Error> {
    provider.get_block_number().await.map_err(rpc("reading the latest block number"))
}

/// The node's latest block: number and hash.
async fn latest_header(provider: &DynProvider) -> Result<(u64, B256), L1Error> {
    let (number, hash, _) = latest_stamped(provider).await?;
    Ok((number, hash))
}

/// The node's latest block: number, hash and time.
async fn latest_stamped(provider: &DynProvider) -> Result<(u64, B256, u64), L1Error> {
    let head = provider
        .get_block_by_number(BlockNumberOrTag::Latest)
        .await
        .map_err(rpc("reading the latest block"))?
        .ok_or_else(|| L1Error::Rpc("the node has no latest block".into()))?;
    Ok((head.header.number, head.header.hash, head.header.timestamp))
}

/// The time of the node's latest block (Unix seconds): the chain's clock,
/// which a batch's timestamp never passes. Clients take the later of it and
/// their own clock, so that a clock running behind does not keep a consent
/// alive that the chain has seen end.
pub async fn chain_time(provider: &DynProvider) -> Result<u64, L1Error> {
    Ok(latest_stamped(provider).await?.2)
}

/// The hash of the canonical block `number`, if the node has it.
async fn block_hash(provider: &DynProvider, number: u64) -> Result<Option<B256>, L1Error> {
    Ok(provider
        .get_block_by_number(BlockNumberOrTag::Number(number))
        .await
        .map_err(rpc("reading a block"))?
        .map(|b| b.header.hash))
}

/// The rollup's batch count and root, both read at the same (latest) block,
/// so that a reorg between the two reads cannot mix two chains. Needs no key:
/// light clients read the roots they trust this way.
pub async fn chain_state(provider: &DynProvider, rollup: Address) -> Result<ChainState, L1Error> {
    let (_, hash, time) = latest_stamped(provider).await?;
    let at = BlockId::hash(hash);
    let c = MedRollup::new(rollup, provider);
    let count = c.batchCount().block(at).call().await.map_err(rpc("reading the batch count"))?;
    let root = c.currentRoot().block(at).call().await.map_err(rpc("reading the current root"))?;
    Ok(ChainState { count, root, time })
}

/// A batch as its `BatchSubmitted` event records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchEvent {
    /// Batch index.
    pub index: u64,
    /// The root it started from.
    pub old_root: B256,
    /// The root it ended at.
    pub new_root: B256,
    /// Its transactions' commitment.
    pub tx_commitment: B256,
    /// Its timestamp (Unix seconds).
    pub timestamp: u64,
    /// The CID (bytes) of its published data.
    pub cid: Vec<u8>,
}

/// The `submitBatch` call for a batch with `public` inputs, its data under
/// `cid` (bytes), proven by `proof` (`.abi_encode()` gives its calldata).
pub fn submit_batch_call(
    public: &PublicInputs,
    cid: &[u8],
    proof: &Proof<Bn254>,
) -> MedRollup::submitBatchCall {
    let [old, new, commitment, _] = input_words(public);
    MedRollup::submitBatchCall {
        oldRoot: old.into(),
        newRoot: new.into(),
        txCommitment: commitment.into(),
        timestamp: public.timestamp,
        cid: cid.to_vec().into(),
        proof: proof_words(proof),
    }
}

/// The block `rollup` was deployed in (its events are in it or later).
pub async fn deployment_block(provider: &DynProvider, rollup: Address) -> Result<u64, L1Error> {
    MedRollup::new(rollup, provider)
        .deploymentBlock()
        .call()
        .await
        .map_err(rpc("reading the deployment block"))
}

/// Which end of a block range a log query starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// Oldest blocks first, to the end.
    Forward,
    /// Newest blocks first, until something is found (the event sought is
    /// most likely recent).
    UntilFound,
}

/// The logs matching `filter` in blocks `from..=to`, in log order. Asked for
/// the whole range first; a node that refuses (hosted nodes bound the block
/// range or the number of results of a log query, each in its own words) is
/// asked for halves, and so on, then for spans of the size it took.
/// [`Scan::UntilFound`] stops at the newest span that holds a log. Fails
/// only when a single block is refused.
async fn logs_within(
    provider: &DynProvider,
    filter: &alloy::rpc::types::Filter,
    (from, to): (u64, u64),
    scan: Scan,
    what: &'static str,
) -> Result<Vec<alloy::rpc::types::Log>, L1Error> {
    let mut found = Vec::new();
    if from > to {
        return Ok(found);
    }
    // `lo..=hi` is left to read.
    let (mut lo, mut hi) = (from, to);
    let mut span = to - from + 1;
    loop {
        let (a, b) = match scan {
            Scan::Forward => (lo, hi.min(lo.saturating_add(span - 1))),
            Scan::UntilFound => (lo.max(hi.saturating_sub(span - 1)), hi),
        };
        let q = filter.clone().from_block(a).to_block(b);
        match provider.get_logs(&q).await {
            Ok(logs) => match scan {
                Scan::Forward => {
                    found.extend(logs);
                    if b == hi {
                        return Ok(found);
                    }
                    lo = b + 1;
                }
                Scan::UntilFound => {
                    if !logs.is_empty() || a == lo {
                        return Ok(logs);
                    }
                    hi = a - 1;
                }
            },
            // Half of what was asked for (at the end of a range, less than
            // `span`).
            Err(e) if b > a && refused(&e) => span = (b - a + 1).div_ceil(2),
            Err(e) if a == b => return Err(L1Error::Rpc(format!("{what} in block {a}: {e}"))),
            Err(e) => return Err(L1Error::Rpc(format!("{what} in blocks {a}..={b}: {e}"))),
        }
    }
}

/// Whether the node answered a request with a refusal (an error object, or
/// a client-error HTTP status), as a node bounding log queries does; not a
/// connection that failed or timed out, a rate limit (429) or a server
/// error, which asking for less would not mend.
fn refused(e: &alloy::transports::TransportError) -> bool {
    use alloy::transports::{RpcError, TransportErrorKind};
    match e {
        RpcError::ErrorResp(_) => true,
        RpcError::Transport(TransportErrorKind::HttpError(h)) => {
            (400..500).contains(&h.status) && h.status != 429
        }
        _ => false,
    }
}

/// Every `BatchSubmitted` of `rollup` in the canonical chain, in log order:
/// what an auditor replays.
pub async fn batch_records(provider: &DynProvider, rollup: Address) -> Result<Vec<BatchEvent>, L1Error> {
    use alloy::rpc::types::Filter;
    use alloy::sol_types::SolEvent;
    let filter = Filter::new().address(rollup).event_signature(MedRollup::BatchSubmitted::SIGNATURE_HASH);
    let from = deployment_block(provider, rollup).await?;
    // Read in several queries, the logs are one chain's only if the last
    // block asked for is the same block after them (a reorg meanwhile could
    // drop or repeat a batch): else read again.
    let mut tries = 0;
    let logs = loop {
        let head = latest_header(provider).await?;
        let logs =
            logs_within(provider, &filter, (from, head.0), Scan::Forward, "reading BatchSubmitted events")
                .await?;
        if block_hash(provider, head.0).await? == Some(head.1) {
            break logs;
        }
        tries += 1;
        if tries == 3 {
            return Err(L1Error::Rpc(format!(
                "the chain reorganised under three reads of the BatchSubmitted events up to block {}",
                head.0
            )));
        }
    };
    logs.iter()
        .map(|l| {
            MedRollup::BatchSubmitted::decode_log_data(l.data())
                .map(|e| BatchEvent {
                    index: e.index.to::<u64>(),
                    old_root: e.oldRoot,
                    new_root: e.newRoot,
                    tx_commitment: e.txCommitment,
                    timestamp: e.timestamp,
                    cid: e.cid.to_vec(),
                })
                .map_err(|e| L1Error::Rpc(format!("a BatchSubmitted event does not decode: {e}")))
        })
        .collect()
}

/// `(index, new root)` of every `BatchSubmitted` of `rollup` in the
/// canonical chain, in log order: what a reorg leaves.
pub async fn batch_events(provider: &DynProvider, rollup: Address) -> Result<Vec<(u64, B256)>, L1Error> {
    Ok(batch_records(provider, rollup).await?.into_iter().map(|e| (e.index, e.new_root)).collect())
}

/// The rollup's state root after its first `batches` batches, from the
/// canonical chain: the genesis root for 0, else the `newRoot` of the
/// `BatchSubmitted` event of batch `batches - 1`; `None` while that batch is
/// not on chain. Unlike `currentRoot`, this answers for one batch count
/// however far the chain has moved on, so a light client can check an
/// answer about an older state.
pub async fn root_after(
    provider: &DynProvider,
    rollup: Address,
    batches: u64,
) -> Result<Option<B256>, L1Error> {
    if batches == 0 {
        let c = MedRollup::new(rollup, provider);
        return Ok(Some(c.genesisRoot().call().await.map_err(rpc("reading the genesis root"))?));
    }
    Ok(batch_event(provider, rollup, batches - 1).await?.and_then(|l| l.topics().get(2).copied()))
}

/// [`root_after`] for an answer that claims `claimed`: the usual question,
/// about the chain's latest state, is answered from its batch count and
/// root, read at one block, with no log query (hosted nodes bound those);
/// any other case, a mismatch included (one read can mix two states, see
/// the submitter's disagreement handling), from the batch's event.
pub async fn root_after_claimed(
    provider: &DynProvider,
    rollup: Address,
    batches: u64,
    claimed: B256,
) -> Result<Option<B256>, L1Error> {
    if batches > 0 {
        let now = chain_state(provider, rollup).await?;
        if now.count == batches && now.root == claimed {
            return Ok(Some(now.root));
        }
        if now.count < batches {
            return Ok(None);
        }
    }
    root_after(provider, rollup, batches).await
}

/// The `BatchSubmitted` event of batch `index` in the canonical chain, if
/// it is there (the last, should a node keep more than one).
async fn batch_event(
    provider: &DynProvider,
    rollup: Address,
    index: u64,
) -> Result<Option<alloy::rpc::types::Log>, L1Error> {
    use alloy::primitives::U256;
    use alloy::rpc::types::Filter;
    use alloy::sol_types::SolEvent;
    let filter = Filter::new()
        .address(rollup)
        .event_signature(MedRollup::BatchSubmitted::SIGNATURE_HASH)
        .topic1(B256::from(U256::from(index)));
    let blocks = (deployment_block(provider, rollup).await?, latest_number(provider).await?);
    let logs =
        logs_within(provider, &filter, blocks, Scan::UntilFound, "reading a BatchSubmitted event").await?;
    Ok(logs.into_iter().last())
}

/// How long one L1 RPC request may take before it counts as failed (a node
/// that accepts the connection and never answers must not stall the
/// submitter or a light client for good).
pub const RPC_TIMEOUT: Duration = Duration::from_secs(20);

/// A connection to a node that signs nothing: the callers sign (the
/// submitter) or only read (light clients, tools). Each request times out
/// after [`RPC_TIMEOUT`].
pub fn connect_read_only(rpc_url: &str) -> Result<DynProvider, L1Error> {
    connect_read_only_within(rpc_url, RPC_TIMEOUT)
}

/// [`connect_read_only`] with another request timeout.
pub fn connect_read_only_within(rpc_url: &str, timeout: Duration) -> Result<DynProvider, L1Error> {
    let url = rpc_url.parse().map_err(|e| L1Error::Config(format!("RPC URL {rpc_url:?}: {e}")))?;
    Ok(ProviderBuilder::new()
        .disable_recommended_fillers()
        .with_reqwest(url, |b| b.timeout(timeout).build().expect("an HTTP client"))
        .erased())
}

/// Lands batches on one rollup contract.
#[derive(Debug)]
pub struct Submitter {
    config: L1Config,
    provider: DynProvider,
    wallet: EthereumWallet,
    rollup: Address,
    vk_sha256: String,
    chain_id: u64,
    /// The chain's count as last seen (to notice reorgs).
    last_count: Option<u64>,
    /// A count below it read once (read again before it is taken for a
    /// reorg).
    lower_count: Option<u64>,
    /// The chain state at which the chain and the coordinator first
    /// disagreed, and when: a disagreement stops the submitter only when
    /// read again unchanged (see [`Submitter::disagreement`]).
    suspect: Option<(ChainState, Instant)>,
    /// The submissions sent and not yet reported landed, by batch (at most
    /// [`MAX_RECOVERED`], the newest): to find their landings by receipt
    /// and account them (see [`Submitter::recover_landing`]).
    sent: std::collections::BTreeMap<u64, Sent>,
    /// A batch count below which every landing was found recorded.
    recorded_at: Option<u64>,
    /// The highest fees sent at a nonce: (nonce, max fee, tip). A round
    /// that starts again at that nonce (after an RPC error) offers more, or
    /// the node refuses it as an underpriced replacement.
    last_fees: Option<(u64, u128, u128)>,
}

/// Fees that replace a transaction sent at `old` (a node takes a
/// replacement only with both its max fee and its tip `percent` higher), and
/// no lower than `fresh`; the tip never above the max fee.
pub fn raise_over(fresh: (u128, u128), old: (u128, u128), percent: u64) -> (u128, u128) {
    let bump = |x: u128| x + x * u128::from(percent) / 100 + 1;
    let max_fee = fresh.0.max(bump(old.0));
    (max_fee, fresh.1.max(bump(old.1)).min(max_fee))
}

/// `(max fee, tip)` within `cap` wei per gas (the tip never above the max fee).
pub fn capped((max_fee, tip): (u128, u128), cap: u128) -> (u128, u128) {
    let max_fee = max_fee.min(cap);
    (max_fee, tip.min(max_fee))
}

/// What replaces a transaction sent at `current`: `raised` within `cap`,
/// if a node would take it as a replacement (both fields at least 10%
/// higher, geth's and anvil's minimum); `None` once the cap leaves no such
/// raise (the transaction waits as it is).
pub fn replacement(current: (u128, u128), raised: (u128, u128), cap: u128) -> Option<(u128, u128)> {
    let next = capped(raised, cap);
    let enough = |new: u128, old: u128| new > old + old / 10;
    (enough(next.0, current.0) && enough(next.1, current.1)).then_some(next)
}

/// Whether a send failed because the node holds a transaction at the same
/// nonce with fees the new one does not beat.
fn underpriced(e: &L1Error) -> bool {
    let text = e.to_string().to_lowercase();
    text.contains("underpriced") || text.contains("replacement")
}

/// Where a mined submission stands.
enum Confirmation {
    /// Deep enough and still canonical.
    Confirmed,
    /// Its block left the chain.
    Reorged,
    /// Still canonical but not deep enough yet (no blocks came).
    Pending,
}

/// The most landings one round looks for on chain (see
/// `Submitter::record_landings`).
const MAX_RECOVERED: u64 = 64;

/// The most batches mined and not yet reported landed (waiting for their
/// confirmations) before the next waits: well within [`MAX_RECOVERED`], so
/// that none falls out of the rounds' view.
const MAX_UNCONFIRMED: u64 = MAX_RECOVERED / 2;

/// One batch's submission: every version sent (fees raised, or sent again),
/// when the first went and how many went.
#[derive(Debug)]
struct Sent {
    hashes: Vec<TxHash>,
    started: Instant,
    sends: u32,
}

/// How one round ended.
enum Round {
    /// A batch landed.
    Landed(Landing),
    /// A batch was mined and waits for its confirmations (a later round
    /// reports it); the next one may go.
    Mined,
    /// Nothing to do until a batch is proven.
    Idle,
    /// Something transient; try again.
    Retry,
}

impl Submitter {
    /// A submitter for `rollup`, proving with the key of sha256 `vk_sha256`.
    /// Checks the node, the contract and that its verifier is for our keys.
    pub async fn connect(config: L1Config, rollup: Address, vk_sha256: &str) -> Result<Self, L1Error> {
        let provider = connect(&config)?;
        let chain_id = provider.get_chain_id().await.map_err(rpc("reading the chain id"))?;
        let wallet = EthereumWallet::from(config.key.clone());
        let s = Self {
            config,
            provider,
            wallet,
            rollup,
            vk_sha256: vk_sha256.to_ascii_lowercase(),
            chain_id,
            last_count: None,
            lower_count: None,
            suspect: None,
            sent: Default::default(),
            recorded_at: None,
            last_fees: None,
        };
        s.check_vk().await?;
        // The verifier answers `vkHash()` too: a contract that does that but
        // not `sequencer()` is not the rollup.
        let sequencer = s.contract().sequencer().call().await.map_err(|e| {
            if e.to_string().contains("revert") {
                L1Error::Config(format!(
                    "{rollup} is not a MedRollup contract (it has no sequencer; is it the verifier's address?): {e}"
                ))
            } else {
                L1Error::Rpc(format!("reading the sequencer: {e}"))
            }
        })?;
        if sequencer != s.address() {
            return Err(L1Error::Config(format!(
                "this key's account {} is not the rollup's sequencer ({sequencer}): use the sequencer's key, or \
                 have the owner call setSequencer",
                s.address()
            )));
        }
        Ok(s)
    }

    /// The sequencer's address.
    pub fn address(&self) -> Address {
        self.config.key.address()
    }

    fn contract(&self) -> MedRollup::MedRollupInstance<&DynProvider> {
        MedRollup::new(self.rollup, &self.provider)
    }

    /// Refuses a verifier generated from other keys.
    pub async fn check_vk(&self) -> Result<(), L1Error> {
        let code = self.provider.get_code_at(self.rollup).await.map_err(rpc("reading the rollup's code"))?;
        if code.is_empty() {
            return Err(L1Error::Config(format!(
                "no contract at {} on chain {}",
                self.rollup, self.chain_id
            )));
        }
        let chain = self.contract().vkHash().call().await.map_err(rpc("reading the verifier's key hash"))?;
        let chain = hex::encode(chain);
        if chain != self.vk_sha256 {
            return Err(L1Error::VkMismatch { chain, ours: self.vk_sha256.clone() });
        }
        Ok(())
    }

    /// The chain's batch count and root (see [`chain_state`]).
    pub async fn chain_state(&self) -> Result<ChainState, L1Error> {
        chain_state(&self.provider, self.rollup).await
    }

    /// Runs until `shutdown`, landing batches from `source` in order; wakes
    /// on `wake` (a batch was proven) or every poll interval. Returns on an
    /// error that retrying cannot fix (reported to `observer` first).
    pub async fn run(
        mut self,
        source: &dyn BatchSource,
        observer: &dyn Observer,
        mut wake: tokio::sync::watch::Receiver<u64>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), L1Error> {
        tokio::pin!(shutdown);
        let mut backoff = self.config.poll;
        loop {
            let round = tokio::select! {
                _ = &mut shutdown => return Ok(()),
                r = self.round(source, observer) => r,
            };
            let pause = match round {
                Ok(Round::Landed(l)) => {
                    observer.landed(&l);
                    backoff = self.config.poll;
                    continue;
                }
                Ok(Round::Mined) => {
                    backoff = self.config.poll;
                    continue;
                }
                // A landing waits for its confirmations: looked at again
                // soon, so its latency is measured closely.
                Ok(Round::Idle) if !self.sent.is_empty() => self.config.poll,
                Ok(Round::Idle) => self.config.poll * 4,
                Ok(Round::Retry) => self.config.poll,
                Err(e) if e.is_transient() => {
                    warn!(error = %e, "L1 submission failed; retrying");
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    backoff
                }
                Err(e) => {
                    tracing::error!(error = %e, "L1 submitter stopped");
                    observer.failed(&e);
                    return Err(e);
                }
            };
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = wake.changed() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    async fn round(&mut self, source: &dyn BatchSource, observer: &dyn Observer) -> Result<Round, L1Error> {
        let chain = self.chain_state().await?;
        if let Some(last) = self.last_count
            && chain.count < last
        {
            // A node behind a load balancer may answer once from a backend
            // that lags: a lower count is read again before it counts.
            if self.lower_count.is_none_or(|seen| chain.count > seen) {
                debug!(from = last, to = chain.count, "a lower batch count read: reading again");
                self.lower_count = Some(chain.count);
                return Ok(Round::Retry);
            }
            warn!(from = last, to = chain.count, "the chain lost batches (reorg or reset): resubmitting");
            observer.reorg(last, chain.count);
        }
        self.lower_count = None;
        observer.chain_time(chain.time);
        self.last_count = Some(chain.count);
        let index = chain.count;
        if index > 0 && self.recorded_at != Some(index) {
            self.record_landings(index, source, observer).await?;
        }
        let Some(batch) = source.batch(index).map_err(L1Error::Config)? else {
            // Nothing sealed at this index. If the chain is ahead of us, the
            // root of our last batch must be the chain's.
            if index > 0
                && let Some(prev) = source.batch(index - 1).map_err(L1Error::Config)?
            {
                let ours: B256 = fr_u256(&prev.public.new_root).into();
                if ours != chain.root {
                    let e = self.diverged(index, chain.root, prev.public.new_root);
                    return self.disagreement(chain, e);
                }
            } else if index > 0 {
                let e = L1Error::Config(format!(
                    "the rollup on chain has {index} batches, more than this coordinator has sealed"
                ));
                return self.disagreement(chain, e);
            }
            self.suspect = None;
            return Ok(Round::Idle);
        };
        let ours: B256 = fr_u256(&batch.public.old_root).into();
        if ours != chain.root {
            let e = self.diverged(index, chain.root, batch.public.old_root);
            return self.disagreement(chain, e);
        }
        self.suspect = None;
        let Some(proof) = &batch.proof else { return Ok(Round::Idle) };
        let submit = submit_batch_call(&batch.public, &batch.cid, proof);
        let calldata = submit.abi_encode();
        // Simulate first: a refusal is explained before any gas is spent.
        let contract = self.contract();
        if let Err(e) = contract.call_builder(&submit).from(self.address()).call().await {
            let reason = revert_reason(&e);
            if reason.contains("InvalidProof") {
                // Verified off chain already: the verifier must have changed.
                self.check_vk().await?;
            }
            let Some(data) = e.as_revert_data() else {
                return Err(L1Error::Rpc(format!("simulating batch {index}: {reason}")));
            };
            return Err(L1Error::Refused { index, reason, transient: refusal_is_transient(&data) });
        }
        // Landings waiting for their confirmations are looked for once per
        // round (and while a submission waits to be mined); so many may
        // wait that the oldest would drop out of that window: the next
        // batch waits for them instead.
        if let Some(recorded) = self.recorded_at
            && index.saturating_sub(recorded) >= MAX_UNCONFIRMED
        {
            debug!(
                batch = index,
                recorded, "waiting for earlier landings' confirmations before sending more"
            );
            return Ok(Round::Idle);
        }
        self.land(index, Bytes::from(calldata), source, observer).await
    }

    /// Makes sure the landings of the chain's first `count` batches are
    /// recorded: a landing still short of its confirmations when the next
    /// batch went out, or one this submitter did not see (sent before a
    /// restart, mined while a read of the chain lagged) is found on chain and
    /// reported, oldest first, once it has its confirmations. It looks at
    /// the batches from the first not found recorded (at most the last
    /// [`MAX_RECOVERED`]), and moves that mark past each one it reports.
    /// Without this the coordinator would not count such a batch as on L1,
    /// ever if a later one lands.
    async fn record_landings(
        &mut self,
        count: u64,
        source: &dyn BatchSource,
        observer: &dyn Observer,
    ) -> Result<(), L1Error> {
        let floor = self.recorded_at.unwrap_or(0).min(count).max(count.saturating_sub(MAX_RECOVERED));
        self.sent.retain(|&index, _| index >= floor);
        // Every landing below `upto` is recorded.
        let mut upto = floor;
        while upto < count {
            let index = upto;
            let Some(batch) = source.batch(index).map_err(L1Error::Config)? else {
                break; // not ours: the root checks explain that
            };
            if batch.landed {
                self.sent.remove(&index);
            } else {
                let root = B256::from(fr_u256(&batch.public.new_root));
                // Not confirmed yet (or not ours): a later look finds it.
                let Some(landing) = self.recover_landing(index, root).await? else { break };
                if landing.sends == 0 {
                    warn!(batch = index, tx = %landing.tx_hash, "a landing this submitter did not send: recorded from the chain");
                }
                observer.landed(&landing);
            }
            upto += 1;
        }
        // A source that lacks a batch below the count (the chain has more
        // than this coordinator sealed) has nothing more to record.
        let all = upto == count || source.batch(upto).map_err(L1Error::Config)?.is_none();
        self.recorded_at = Some(if all { count } else { upto });
        Ok(())
    }

    /// Batch `index`'s landing in the canonical chain, once confirmed: from
    /// the receipt of a version this submitter sent, or else from its
    /// `BatchSubmitted` event. `None` if it has neither (yet), is not
    /// confirmed yet, or is not ours (its new root is not `new_root`: the
    /// root checks then say how the chain and the coordinator differ).
    async fn recover_landing(&mut self, index: u64, new_root: B256) -> Result<Option<Landing>, L1Error> {
        let mut receipt = None;
        for h in self.sent.get(&index).map(|s| s.hashes.clone()).unwrap_or_default().iter().rev() {
            // A version that succeeded landed this very batch: its calldata
            // is the batch, and the contract takes a batch only at its index.
            match self.provider.get_transaction_receipt(*h).await.map_err(rpc("reading a receipt"))? {
                Some(r) if r.status() => {
                    receipt = Some(r);
                    break;
                }
                _ => {}
            }
        }
        let r = match receipt {
            Some(r) => r,
            None => {
                let Some(event) = batch_event(&self.provider, self.rollup, index).await? else {
                    return Ok(None);
                };
                if event.topics().get(2) != Some(&new_root) {
                    return Ok(None);
                }
                let Some(hash) = event.transaction_hash else { return Ok(None) };
                let Some(r) =
                    self.provider.get_transaction_receipt(hash).await.map_err(rpc("reading a receipt"))?
                else {
                    return Ok(None);
                };
                r
            }
        };
        if !matches!(self.confirmation(&r).await?, Confirmation::Confirmed) {
            return Ok(None);
        }
        let hash = r.transaction_hash;
        // Accounted if it is a version this submitter sent.
        let (latency, sends) = match self.sent.remove(&index) {
            Some(s) if s.hashes.contains(&hash) => (s.started.elapsed(), s.sends),
            _ => (Duration::ZERO, 0),
        };
        Ok(Some(Landing {
            index,
            tx_hash: hash,
            block: r.block_number.unwrap_or_default(),
            gas_used: r.gas_used,
            gas_price: r.effective_gas_price,
            latency,
            sends,
        }))
    }

    /// The chain and the coordinator disagree at `chain`. That stops the
    /// submitter for good only when a read at least a poll interval later
    /// finds the chain unchanged, because one read can be inconsistent:
    /// anvil has answered, for one block hash, the batch count of a state
    /// and the root of the state before it, and a node behind a load
    /// balancer can answer from a lagging replica. Until then the round is
    /// retried.
    fn disagreement(&mut self, chain: ChainState, e: L1Error) -> Result<Round, L1Error> {
        match self.suspect {
            Some((seen, at)) if seen == chain && at.elapsed() >= self.config.poll => Err(e),
            Some((seen, _)) if seen == chain => Ok(Round::Retry),
            _ => {
                warn!(error = %e, "the chain disagrees with this coordinator: reading it again before stopping");
                self.suspect = Some((chain, Instant::now()));
                Ok(Round::Retry)
            }
        }
    }

    fn diverged(&self, index: u64, chain: B256, ours: Fr) -> L1Error {
        L1Error::Diverged {
            index,
            chain: format!("{chain}"),
            ours: format!("{}", B256::from(fr_u256(&ours))),
        }
    }

    /// Sends the submission and follows it until it lands with enough
    /// confirmations, raising fees and resending as needed.
    async fn land(
        &mut self,
        index: u64,
        calldata: Bytes,
        source: &dyn BatchSource,
        observer: &dyn Observer,
    ) -> Result<Round, L1Error> {
        let p = self.provider.clone();
        let from = self.address();
        let nonce = p.get_transaction_count(from).latest().await.map_err(rpc("reading the nonce"))?;
        let (mut max_fee, mut tip) = fresh_fees(&p).await?;
        let (percent, cap) = (self.config.fee_bump_percent, self.config.max_fee_cap);
        (max_fee, tip) = match self.last_fees {
            // Ours waits at this nonce: raised over it, or, where the cap
            // leaves no raise a node would take, the very same transaction
            // again (the node knows it already).
            Some((n, m, t)) if n == nonce => {
                replacement((m, t), raise_over((max_fee, tip), (m, t), percent), cap).unwrap_or((m, t))
            }
            _ => capped((max_fee, tip), cap),
        };
        let (rollup, chain_id, gas_limit) = (self.rollup, self.chain_id, self.config.gas_limit);
        let request = |max_fee: u128, tip: u128| {
            TransactionRequest::default()
                .with_from(from)
                .with_to(rollup)
                .with_input(calldata.clone())
                .with_nonce(nonce)
                .with_chain_id(chain_id)
                .with_gas_limit(gas_limit)
                .with_max_fee_per_gas(max_fee)
                .with_max_priority_fee_per_gas(tip)
        };
        // A version sent before (by an earlier round, or before a restart)
        // may wait in the pool with higher fees: raised over it.
        let mut raises = 0;
        let first = loop {
            match send(&p, &self.wallet, request(max_fee, tip)).await {
                Err(e) if underpriced(&e) && raises < 40 => {
                    raises += 1;
                    // The waiting one's fees are unknown: higher each time,
                    // up to the cap.
                    let raised = capped(raise_over((max_fee, tip), (max_fee, tip), percent), cap);
                    if raised == (max_fee, tip) {
                        return Err(L1Error::Rpc(format!(
                            "a transaction of this account waits at nonce {nonce} with fees the cap ({} gwei \
                             per gas) cannot beat (sent elsewhere, or before a restart with a higher cap): {e}",
                            cap as f64 / GWEI as f64
                        )));
                    }
                    (max_fee, tip) = raised;
                    warn!(
                        batch = index,
                        nonce, max_fee, tip, "a transaction with higher fees waits at this nonce: raising"
                    );
                }
                r => break r?,
            }
        };
        self.last_fees = Some((nonce, max_fee, tip));
        let mut hashes = vec![first];
        info!(batch = index, nonce, tx = %hashes[0], "batch sent to L1");
        self.note_sent(index, first);
        let mut sent_at = Instant::now();
        loop {
            tokio::time::sleep(self.config.poll).await;
            // Earlier batches reach their confirmations while this one waits
            // (for hours, at the fee cap): reported as they do.
            if self.recorded_at != Some(index) {
                self.record_landings(index, source, observer).await?;
            }
            // The nonce first: if it moved, a receipt read after it shows
            // whether one of ours moved it.
            let confirmed = p.get_transaction_count(from).latest().await.map_err(rpc("reading the nonce"))?;
            // Any version of the transaction may be the one that is mined.
            let mut mined = None;
            for h in hashes.iter().rev() {
                if let Some(r) = p.get_transaction_receipt(*h).await.map_err(rpc("reading a receipt"))? {
                    mined = Some(r);
                    break;
                }
            }
            if let Some(r) = mined {
                if !r.status() {
                    // Lost a race (the batch is already on chain, e.g. from
                    // before a restart) or the chain changed: the next round
                    // reads the chain again and explains any refusal.
                    warn!(batch = index, tx = %r.transaction_hash, "submission reverted on chain");
                    return Ok(Round::Retry);
                }
                return match self.confirmation(&r).await? {
                    // Reported here only if every landing before it was:
                    // else the next round reports them all, oldest first.
                    Confirmation::Confirmed if index == 0 || self.recorded_at == Some(index) => {
                        let (latency, sends) = self
                            .sent
                            .remove(&index)
                            .map_or((Duration::ZERO, 1), |s| (s.started.elapsed(), s.sends));
                        Ok(Round::Landed(Landing {
                            index,
                            tx_hash: r.transaction_hash,
                            block: r.block_number.unwrap_or_default(),
                            gas_used: r.gas_used,
                            gas_price: r.effective_gas_price,
                            latency,
                            sends,
                        }))
                    }
                    Confirmation::Confirmed => Ok(Round::Mined),
                    Confirmation::Reorged => {
                        observer.resent(index);
                        Ok(Round::Retry)
                    }
                    // Reported by a later round, once deep enough; the next
                    // batch need not wait for that.
                    Confirmation::Pending => {
                        debug!(batch = index, tx = %r.transaction_hash, "batch mined; waiting for confirmations");
                        Ok(Round::Mined)
                    }
                };
            }
            // Our nonce used by something else (a transaction sent before a
            // restart, or from elsewhere), or the account's count went back
            // below it (a reorg): the next round reads the chain.
            if confirmed != nonce {
                return Ok(Round::Retry);
            }
            if sent_at.elapsed() < self.config.stuck_after {
                continue;
            }
            let known = p
                .get_transaction_by_hash(*hashes.last().expect("one sent"))
                .await
                .map_err(rpc("looking up a transaction"))?
                .is_some();
            if known {
                let raised = raise_over(fresh_fees(&p).await?, (max_fee, tip), percent);
                let Some(raised) = replacement((max_fee, tip), raised, cap) else {
                    warn!(
                        batch = index,
                        nonce, max_fee, "transaction stuck at the fee cap: waiting for fees to fall"
                    );
                    sent_at = Instant::now();
                    continue;
                };
                (max_fee, tip) = raised;
                warn!(batch = index, nonce, max_fee, tip, "transaction stuck: raising its fees");
                observer.fee_bumped(index);
            } else {
                // Not in the node's pool (evicted, or the node restarted): no
                // replacement rule applies, but a node refuses a transaction
                // below its base fee, so it goes again at no less than the
                // chain's fees now, within the cap.
                let fresh = fresh_fees(&p).await?;
                (max_fee, tip) = capped((max_fee.max(fresh.0), tip.max(fresh.1)), cap);
                warn!(
                    batch = index,
                    nonce, max_fee, tip, "transaction dropped by the node: sending it again"
                );
                observer.resent(index);
            }
            match send(&p, &self.wallet, request(max_fee, tip)).await {
                Ok(h) => {
                    if !hashes.contains(&h) {
                        hashes.push(h);
                    }
                    self.last_fees = Some((nonce, max_fee, tip));
                    self.note_sent(index, h);
                }
                Err(e) => warn!(batch = index, error = %e, "resend failed"),
            }
            sent_at = Instant::now();
        }
    }

    /// Where `r` stands now: confirmed once its block has `confirmations`
    /// blocks (itself included) and is still in the canonical chain. Does
    /// not wait: a later round looks again.
    async fn confirmation(&self, r: &TransactionReceipt) -> Result<Confirmation, L1Error> {
        let block = r.block_number.unwrap_or_default();
        let head = self.provider.get_block_number().await.map_err(rpc("reading the block number"))?;
        if head + 1 < block + self.config.confirmations {
            // Not deep enough, or the head below it (a lagging node, or a
            // reorg that the next rounds' reads of the chain show).
            return Ok(Confirmation::Pending);
        }
        match self
            .provider
            .get_transaction_receipt(r.transaction_hash)
            .await
            .map_err(rpc("reading a receipt"))?
        {
            Some(now) if now.block_hash == r.block_hash => Ok(Confirmation::Confirmed),
            _ => {
                warn!(tx = %r.transaction_hash, "a landed batch left the chain (reorg): resubmitting");
                Ok(Confirmation::Reorged)
            }
        }
    }

    /// Notes a version of batch `index`'s submission sent (the first starts
    /// its latency); only the newest [`MAX_RECOVERED`] batches are kept.
    fn note_sent(&mut self, index: u64, hash: TxHash) {
        let s = self.sent.entry(index).or_insert_with(|| Sent {
            hashes: Vec::new(),
            started: Instant::now(),
            sends: 0,
        });
        if !s.hashes.contains(&hash) {
            s.hashes.push(hash);
        }
        s.sends += 1;
        while self.sent.len() as u64 > MAX_RECOVERED {
            self.sent.pop_first();
        }
    }

    /// The batch count last seen before a restart: a lower one read at the
    /// first rounds is taken for a reorg once read again (and the observer
    /// told), as one seen while running is.
    pub fn resume_from_count(&mut self, count: u64) {
        self.last_count = Some(count);
    }

    /// Calls the verifier directly (a check the CLI and tests use).
    pub async fn verify_on_chain(
        &self,
        verifier: Address,
        public: &PublicInputs,
        proof: &Proof<Bn254>,
    ) -> Result<bool, L1Error> {
        BatchVerifier::new(verifier, &self.provider)
            .verifyProof(proof_words(proof), input_words(public))
            .call()
            .await
            .map_err(rpc("calling the verifier"))
    }

    /// The provider (for reading events and receipts).
    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    /// The rollup contract's address.
    pub fn rollup(&self) -> Address {
        self.rollup
    }
}

/// The reason a submission reverted, from its revert data (for tests and logs).
pub fn decode_revert(data: &[u8]) -> Option<String> {
    MedRollup::MedRollupErrors::abi_decode(data).ok().map(|e| format!("{e:?}"))
}

/// `U256` of a root, for callers comparing with the chain.
pub fn root_word(root: &Fr) -> B256 {
    fr_u256(root).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_refusals_that_pass_by_themselves_are_retried() {
        use alloy::sol_types::SolError;
        let (root, other) = (B256::repeat_byte(1), B256::repeat_byte(2));
        let stale = MedRollup::StaleOldRoot { current: root, given: other }.abi_encode();
        let early =
            MedRollup::TimestampInFuture { timestamp: 10, blockTimestamp: alloy::primitives::U256::from(9) }
                .abi_encode();
        assert!(refusal_is_transient(&stale) && refusal_is_transient(&early));
        let not_us = MedRollup::NotSequencer { caller: Address::repeat_byte(3) }.abi_encode();
        let before = MedRollup::TimestampBeforeLast { timestamp: 9, last: 10 }.abi_encode();
        for permanent in [not_us, MedRollup::InvalidProof {}.abi_encode(), before, vec![1, 2, 3, 4]] {
            assert!(!refusal_is_transient(&permanent), "{permanent:?}");
        }
        let e = L1Error::Refused { index: 3, reason: "NotSequencer".into(), transient: false };
        assert!(!e.is_transient());
    }

    #[tokio::test]
    async fn a_deployment_without_a_usable_upgrade_delay_is_refused_before_anything_is_sent() {
        let hex_key = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
        // No node at this address: refused before it is asked anything.
        let config = L1Config::local("http://127.0.0.1:9", parse_key(hex_key).unwrap());
        let owner = Address::repeat_byte(9);
        for delay in [0, MIN_UPGRADE_DELAY_S - 1, MAX_UPGRADE_DELAY_S + 1, u64::MAX] {
            let gov = Governance { owner, upgrade_delay_s: delay };
            let e = deploy(&config, &crate::contracts::verifier_artifact(), Fr::from(1u64), gov)
                .await
                .unwrap_err();
            assert!(e.to_string().contains(&format!("an upgrade delay of {delay} s")), "{e}");
        }
    }

    #[test]
    fn the_key_stays_out_of_debug_output_and_errors() {
        let hex_key = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
        let config = L1Config::local("http://127.0.0.1:1", parse_key(hex_key).unwrap());
        let shown = format!("{config:?}");
        assert!(!shown.contains(hex_key) && !shown.contains(&hex_key[..16]), "{shown}");
        assert!(
            shown.contains("0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"),
            "the address is shown: {shown}"
        );
        let bad = format!("{}", parse_key("0x1234zz").unwrap_err());
        assert!(bad.contains("not 32 bytes of hex") && !bad.contains("1234zz"), "{bad}");
        assert!(parse_key(&format!("0x{hex_key}\n")).is_ok());
    }

    #[tokio::test]
    async fn a_node_that_never_answers_is_an_error_after_the_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        // Accepts connections and holds them, answering nothing.
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((c, _)) = listener.accept().await {
                open.push(c);
            }
        });
        let p = connect_read_only_within(&url, Duration::from_millis(500)).unwrap();
        let e = tokio::time::timeout(Duration::from_secs(10), chain_state(&p, Address::ZERO))
            .await
            .expect("an error within the timeout, not a wait for good")
            .unwrap_err();
        assert!(matches!(e, L1Error::Rpc(_)), "{e}");
        held.abort();
    }

    #[test]
    fn replacement_fees_beat_the_old_ones_in_both_fields_and_never_fall_below_fresh_ones() {
        let gwei = 1_000_000_000u128;
        // Fresh fees below a raised transaction that waits (the tip above all).
        let old = (40 * gwei, 3 * gwei);
        let (m, t) = raise_over((30 * gwei, gwei), old, 10);
        assert!(m * 10 >= old.0 * 11 && t * 10 >= old.1 * 11, "{m} {t}");
        assert!(t <= m);
        // Fresh fees far above: they are taken.
        assert_eq!(raise_over((500 * gwei, 2 * gwei), old, 10), (500 * gwei, 3 * gwei + 3 * gwei / 10 + 1));
        // A tip never above the max fee.
        let (m, t) = raise_over((gwei, gwei), (gwei, 10 * gwei), 10);
        assert_eq!(t, m);
        // The node's refusal of such a replacement is recognised.
        assert!(underpriced(&L1Error::Rpc(
            "sending a transaction: replacement transaction underpriced".into()
        )));
        assert!(!underpriced(&L1Error::Rpc("sending a transaction: nonce too low".into())));
    }

    #[test]
    fn fees_stop_at_the_cap_with_the_tip_within_the_max_fee() {
        assert_eq!(capped((900 * GWEI, 700 * GWEI), 500 * GWEI), (500 * GWEI, 500 * GWEI));
        assert_eq!(capped((900 * GWEI, 2 * GWEI), 500 * GWEI), (500 * GWEI, 2 * GWEI));
        assert_eq!(capped((30 * GWEI, 2 * GWEI), 500 * GWEI), (30 * GWEI, 2 * GWEI), "below it: unchanged");
        // At the cap no replacement is offered (a node would refuse one
        // whose max fee is not 10% higher): the submitter waits instead.
        let at = capped((500 * GWEI, 2 * GWEI), 500 * GWEI);
        assert_eq!(replacement(at, raise_over(at, at, 25), 500 * GWEI), None);
        // Below it a raise is offered, up to the cap when that is 10% more.
        let below = (400 * GWEI, 2 * GWEI);
        let raised = raise_over(below, below, 25);
        assert_eq!(replacement(below, raised, 450 * GWEI), Some((450 * GWEI, raised.1)));
        assert_eq!(replacement(below, raised, 420 * GWEI), None, "5% more is no replacement");
    }

    #[test]
    fn reverts_decode_to_named_errors() {
        use alloy::sol_types::SolError;
        let data = MedRollup::StaleOldRoot { current: B256::repeat_byte(1), given: B256::repeat_byte(2) }
            .abi_encode();
        let reason = decode_revert(&data).unwrap();
        assert!(reason.contains("StaleOldRoot"), "{reason}");
        assert!(decode_revert(&[0xde, 0xad, 0xbe, 0xef]).is_none());
    }
}
