//! `medrollup-l1`: generate the Solidity verifier and the forge fixtures,
//! deploy the contracts on a dev chain, read the rollup's state, and (as
//! its owner) upgrade its verifier.

use alloy::primitives::{B256, U256};
use alloy::providers::Provider;
use alloy::sol_types::SolCall;
use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use medrollup_circuits::keys;
use medrollup_circuits::state::{Genesis, State};
use medrollup_l1::contracts::MedRollup;
use medrollup_l1::contracts::{Artifact, DirectIndex, direct_index_artifact, verifier_artifact};
use medrollup_l1::submitter::{
    self, BatchSource, DEFAULT_UPGRADE_DELAY_S, Governance, L1Batch, L1Config, Landing, Observer, Submitter,
};
use std::path::{Path, PathBuf};

#[derive(Parser, Debug)]
#[command(name = "medrollup-l1", about = "medrollup's L1 tools: verifier generator, fixtures, deployment")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Writes the Solidity verifier for the keys in --keys-dir.
    Verifier {
        #[arg(long, default_value = "keys")]
        keys_dir: PathBuf,
        #[arg(long, default_value = "contracts/src/BatchVerifier.sol")]
        out: PathBuf,
        /// Contract name.
        #[arg(long, default_value = "BatchVerifier")]
        name: String,
    },
    /// Proves sample batches with the keys in --keys-dir and writes them as
    /// the forge tests' fixtures.
    Fixtures {
        #[arg(long, default_value = "keys")]
        keys_dir: PathBuf,
        #[arg(long, default_value = "contracts/test/Fixtures.sol")]
        out: PathBuf,
        #[arg(long, default_value_t = 3)]
        count: usize,
    },
    /// Deploys a verifier and the rollup contract (key: MEDROLLUP_L1_KEY).
    Deploy {
        #[arg(long, default_value = "http://127.0.0.1:8545")]
        rpc: String,
        #[arg(long, default_value = "keys")]
        keys_dir: PathBuf,
        /// Genesis JSON (default: the sample genesis at the keys' levels).
        #[arg(long)]
        genesis: Option<PathBuf>,
        /// A verifier artifact for other keys than the checked-in verifier's.
        #[arg(long)]
        verifier_artifact: Option<PathBuf>,
        /// Where to write the addresses.
        #[arg(long, default_value = "deployment.json")]
        out: PathBuf,
        /// The rollup's owner (installs verifiers, replaces the sequencer):
        /// another account than the sequencer's, in production a multisig.
        #[arg(long)]
        owner: alloy::primitives::Address,
        /// Seconds a proposed verifier waits before the owner may install it.
        #[arg(long, default_value_t = DEFAULT_UPGRADE_DELAY_S)]
        upgrade_delay_s: u64,
        /// Deploys with keys from a seeded setup on a chain other than a
        /// development one (a test network, knowingly: anyone who knows the
        /// seed can forge proofs).
        #[arg(long)]
        allow_seeded_keys: bool,
    },
    /// Measures gas on a dev chain: one batch proven with the keys in
    /// --keys-dir submitted to a fresh rollup with their verifier, next to
    /// the per-record baseline (DirectIndex). Prints one JSON line.
    Gas {
        #[arg(long, default_value = "http://127.0.0.1:8545")]
        rpc: String,
        #[arg(long, default_value = "keys")]
        keys_dir: PathBuf,
        /// The verifier artifact for these keys (default: the checked-in one).
        #[arg(long)]
        verifier_artifact: Option<PathBuf>,
    },
    /// Shows the rollup's batch count, root, verifier key hash, owner and
    /// any proposed verifier.
    Status {
        #[arg(long, default_value = "http://127.0.0.1:8545")]
        rpc: String,
        #[arg(long)]
        rollup: alloy::primitives::Address,
        #[arg(long, default_value = "keys")]
        keys_dir: PathBuf,
    },
    /// As the rollup's owner (key: MEDROLLUP_L1_OWNER_KEY), proposes a new
    /// verifier, installs the proposed one once its wait is over, or
    /// withdraws the proposal.
    Upgrade {
        #[arg(long, default_value = "http://127.0.0.1:8545")]
        rpc: String,
        #[arg(long)]
        rollup: alloy::primitives::Address,
        #[command(subcommand)]
        action: UpgradeAction,
    },
}

#[derive(Subcommand, Debug)]
enum UpgradeAction {
    /// Announces the verifier at --verifier (deployed already).
    Propose {
        #[arg(long)]
        verifier: alloy::primitives::Address,
    },
    /// Installs the proposed verifier (after the upgrade delay).
    Activate,
    /// Withdraws the proposal.
    Cancel,
}

fn key_from_env() -> Result<alloy::signers::local::PrivateKeySigner> {
    let text = std::env::var("MEDROLLUP_L1_KEY")
        .context("set MEDROLLUP_L1_KEY to the sequencer's private key (hex)")?;
    Ok(submitter::parse_key(&text)?)
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Verifier { keys_dir, out, name } => {
            let (m, vk) = keys::load_verifying_key(&keys_dir)?;
            let src = medrollup_l1::verifier::solidity(&vk, &m.verifying_key_sha256, &name)?;
            std::fs::write(&out, src).with_context(|| format!("writing {}", out.display()))?;
            println!("{} <- verifying key {} ({:?})", out.display(), m.verifying_key_sha256, m.shape);
        }
        Command::Fixtures { keys_dir, out, count } => {
            let (m, pk) = keys::load_proving_key(&keys_dir)?;
            let (root, batches) = medrollup_l1::fixtures::prove_batches(pk, m.shape, count);
            std::fs::write(&out, medrollup_l1::fixtures::solidity(root, &m.verifying_key_sha256, &batches))
                .with_context(|| format!("writing {}", out.display()))?;
            println!("{} <- {} batches proven with {}", out.display(), batches.len(), m.verifying_key_sha256);
        }
        Command::Deploy {
            rpc,
            keys_dir,
            genesis,
            verifier_artifact: artifact,
            out,
            owner,
            upgrade_delay_s,
            allow_seeded_keys,
        } => {
            let m = keys::read_manifest(&keys_dir)?;
            let verifier = match artifact {
                Some(p) => Artifact::parse(
                    &std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?,
                )
                .with_context(|| format!("parsing {}", p.display()))?,
                None => verifier_artifact(),
            };
            if verifier.vk_sha256.as_deref() != Some(m.verifying_key_sha256.as_str()) {
                bail!(
                    "the verifier {} is for verifying key {}, the keys in {} are {}: generate its verifier \
                     (make contracts KEYS={}) and pass --verifier-artifact",
                    verifier.contract,
                    verifier.vk_sha256.as_deref().unwrap_or("(unknown)"),
                    keys_dir.display(),
                    m.verifying_key_sha256,
                    keys_dir.display()
                );
            }
            let genesis: Genesis = match genesis {
                Some(p) => serde_json::from_slice(
                    &std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?,
                )
                .with_context(|| format!("parsing {}", p.display()))?,
                None => medrollup_circuits::sample::genesis(m.shape.levels),
            };
            // A root no batch could ever be proven from is refused before it is on chain.
            anyhow::ensure!(
                genesis.levels == m.shape.levels,
                "the genesis has trees of height {}, the keys in {} prove trees of height {}: \
                 no batch could be proven from that root",
                genesis.levels,
                keys_dir.display(),
                m.shape.levels
            );
            let root = State::genesis(&genesis).map_err(|e| anyhow::anyhow!("genesis: {e}"))?.root();
            let config = L1Config::local(&rpc, key_from_env()?);
            let chain_id = submitter::connect(&config)?
                .get_chain_id()
                .await
                .with_context(|| format!("reading the chain id from {rpc}"))?;
            medrollup_l1::check_seeded_keys(m.deterministic, chain_id, allow_seeded_keys)
                .map_err(|e| anyhow::anyhow!("{}: {e} (--allow-seeded-keys)", keys_dir.display()))?;
            let d =
                submitter::deploy(&config, &verifier, root, Governance { owner, upgrade_delay_s }).await?;
            std::fs::write(&out, serde_json::to_vec_pretty(&d)?)?;
            println!(
                "rollup {} verifier {} on chain {} -> {}",
                d.rollup,
                d.verifier,
                d.chain_id,
                out.display()
            );
        }
        Command::Gas { rpc, keys_dir, verifier_artifact: artifact } => gas(&rpc, &keys_dir, artifact).await?,
        Command::Status { rpc, rollup, keys_dir } => {
            let m = keys::read_manifest(&keys_dir)?;
            let config = L1Config::local(&rpc, alloy::signers::local::PrivateKeySigner::random());
            let s = Submitter::connect(config, rollup, &m.verifying_key_sha256).await?;
            let c = s.chain_state().await?;
            let g = submitter::governance(s.provider(), rollup).await?;
            println!("batches {} root {} vk {}", c.count, c.root, m.verifying_key_sha256);
            println!("owner {} sequencer {} upgrade delay {} s", g.owner, g.sequencer, g.upgrade_delay_s);
            if let Some(p) = g.proposed {
                let whose = if p.vk_sha256 == m.verifying_key_sha256 { "these keys" } else { "OTHER keys" };
                println!(
                    "proposed verifier {} for vk {} ({whose}), installable from {}",
                    p.verifier, p.vk_sha256, p.activation
                );
            }
        }
        Command::Upgrade { rpc, rollup, action } => upgrade(&rpc, rollup, action).await?,
    }
    Ok(())
}

/// Sends one of the owner's verifier calls, simulated first so that a
/// refusal is reported by name.
async fn upgrade(rpc: &str, rollup: alloy::primitives::Address, action: UpgradeAction) -> Result<()> {
    let text = std::env::var("MEDROLLUP_L1_OWNER_KEY")
        .context("set MEDROLLUP_L1_OWNER_KEY to the rollup owner's private key (hex)")?;
    let config = L1Config::local(rpc, submitter::parse_key(&text)?);
    let provider = submitter::connect(&config)?;
    let owner = config.key.address();
    let c = MedRollup::new(rollup, &provider);
    let data: alloy::primitives::Bytes = match action {
        UpgradeAction::Propose { verifier } => c.proposeVerifier(verifier).calldata().clone(),
        UpgradeAction::Activate => c.activateVerifier().calldata().clone(),
        UpgradeAction::Cancel => c.cancelVerifier().calldata().clone(),
    };
    let sim =
        alloy::rpc::types::TransactionRequest::default().from(owner).to(rollup).input(data.clone().into());
    if let Err(e) = alloy::providers::Provider::call(&provider, sim).await {
        let reason = e
            .as_error_resp()
            .and_then(|r| r.as_revert_data())
            .and_then(|d| submitter::decode_revert(&d))
            .unwrap_or_else(|| e.to_string());
        bail!("the rollup refuses: {reason}");
    }
    let r = submitter::send_and_wait(&config, Some(rollup), data, 300_000).await?;
    anyhow::ensure!(r.status(), "the transaction {} reverted", r.transaction_hash);
    let g = submitter::governance(&provider, rollup).await?;
    println!("tx {} in block {}", r.transaction_hash, r.block_number.unwrap_or_default());
    println!("verifier vk {}", g.vk_sha256);
    match g.proposed {
        Some(p) => {
            println!("proposed {} for vk {}, installable from {}", p.verifier, p.vk_sha256, p.activation)
        }
        None => println!("no proposal pending"),
    }
    Ok(())
}

/// One batch, handed over as proven.
struct OneBatch(L1Batch);

impl BatchSource for OneBatch {
    fn batch(&self, index: u64) -> Result<Option<L1Batch>, String> {
        Ok((index == 0).then(|| self.0.clone()))
    }
}

#[derive(Default)]
struct FirstLanding(std::sync::Mutex<Option<Landing>>, tokio::sync::Notify);

impl Observer for FirstLanding {
    fn landed(&self, l: &Landing) {
        *self.0.lock().expect("lock") = Some(l.clone());
        self.1.notify_one();
    }
}

async fn gas(rpc: &str, keys_dir: &Path, artifact: Option<PathBuf>) -> Result<()> {
    let (m, pk) = keys::load_proving_key(keys_dir)?;
    let verifier = match artifact {
        Some(p) => Artifact::parse(
            &std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?,
        )?,
        None => verifier_artifact(),
    };
    anyhow::ensure!(
        verifier.vk_sha256.as_deref() == Some(m.verifying_key_sha256.as_str()),
        "the verifier artifact is not for the keys in {}",
        keys_dir.display()
    );
    // The first sample batch holds the first B sample transactions.
    let real_txs = medrollup_circuits::sample::transactions().len().min(m.shape.batch_size);
    let (root, batches) =
        tokio::task::block_in_place(|| medrollup_l1::fixtures::prove_batches(pk, m.shape, 1));
    let config = L1Config::local(rpc, key_from_env()?);
    let gov = Governance {
        owner: medrollup_l1::devnet::DEV_OWNER.parse().expect("an address"),
        upgrade_delay_s: DEFAULT_UPGRADE_DELAY_S,
    };
    let d = submitter::deploy(&config, &verifier, root, gov).await?;
    let s = Submitter::connect(config.clone(), d.rollup, &m.verifying_key_sha256).await?;
    let source = OneBatch(batches.into_iter().next().context("one sample batch")?);
    let seen = FirstLanding::default();
    let (_wake, wake_rx) = tokio::sync::watch::channel(0u64);
    tokio::select! {
        r = s.run(&source, &seen, wake_rx, std::future::pending()) => r?,
        _ = seen.1.notified() => {}
    }
    let landing = seen.0.lock().expect("lock").clone().context("no landing")?;

    // The baseline: one L1 transaction per record.
    let (index, _) = submitter::deploy_contract(&config, &direct_index_artifact(), &[]).await?;
    let mut direct = Vec::new();
    for record in 0..4u64 {
        let call = DirectIndex::indexCall {
            record: U256::from(400 + 2 * record),
            cid: B256::repeat_byte(0x5a + record as u8),
        };
        let r = submitter::send_and_wait(&config, Some(index), call.abi_encode().into(), 200_000).await?;
        anyhow::ensure!(r.status(), "DirectIndex.index reverted");
        direct.push(r.gas_used);
    }
    let direct_avg = direct.iter().sum::<u64>() / direct.len() as u64;
    let out = serde_json::json!({
        "batch_size": m.shape.batch_size,
        "levels": m.shape.levels,
        "constraints": m.constraints,
        "real_txs_in_measured_batch": real_txs,
        "gas_per_batch": landing.gas_used,
        "gas_per_tx_full_batch": landing.gas_used / m.shape.batch_size as u64,
        "direct_index_gas_per_record": direct_avg,
    });
    println!("{out}");
    Ok(())
}
