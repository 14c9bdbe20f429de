//! The `medrollup-circuits` command line: setup, sample data, batch building,
//! proving, verification, constraint counts, and an end-to-end demo.

use crate::batch::{BatchBuilder, BatchWitness, PublicInputs};
use crate::circuit::{BatchCircuit, Profile};
use crate::field::Fr;
use crate::keys::{self, CircuitShape, DEV_CEREMONY_WARNING};
use crate::sample;
use crate::snarkjs;
use crate::state::{Genesis, State};
use crate::tx::{SignedTx, TxKind};
use anyhow::{Context, Result, bail};
use ark_relations::gr1cs::{ConstraintSynthesizer, ConstraintSystem};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Default tree height: 4^12 = 2^24 leaves in each tree.
pub const DEFAULT_LEVELS: usize = 12;

/// medrollup rollup core: keys, batches, proofs.
#[derive(Debug, Parser)]
#[command(name = "medrollup-circuits", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate Groth16 keys for the batch circuit (a development ceremony).
    Setup {
        /// Transactions per batch.
        #[arg(long, default_value_t = 4)]
        batch_size: usize,
        /// Tree height (each tree has 4^levels leaves).
        #[arg(long, default_value_t = DEFAULT_LEVELS)]
        levels: usize,
        /// Make the keys reproducible from this seed (insecure: for tests and demos).
        #[arg(long)]
        seed: Option<u64>,
        /// Directory for the keys and keys.json.
        #[arg(long, default_value = "keys")]
        out: PathBuf,
    },
    /// Write a sample genesis (genesis.json) and signed transactions (txs.json).
    Sample {
        /// Tree height.
        #[arg(long, default_value_t = DEFAULT_LEVELS)]
        levels: usize,
        /// Output directory.
        #[arg(long, default_value = "sample")]
        out: PathBuf,
    },
    /// Apply a JSON list of signed transactions to a genesis state and write batch witnesses.
    BuildBatch {
        /// The genesis state (JSON).
        #[arg(long)]
        genesis: PathBuf,
        /// The transactions (a JSON array).
        #[arg(long)]
        txs: PathBuf,
        /// Transactions per batch.
        #[arg(long, default_value_t = 4)]
        batch_size: usize,
        /// Batch time, Unix seconds (default: the sample's time).
        #[arg(long, default_value_t = sample::NOW)]
        timestamp: u64,
        /// Output directory (batch-0000.json, …).
        #[arg(long, default_value = "batches")]
        out: PathBuf,
    },
    /// Prove a batch witness; writes proof.json and public.json (snarkjs format).
    Prove {
        /// Key directory (with keys.json).
        #[arg(long, default_value = "keys")]
        keys: PathBuf,
        /// A batch witness from build-batch.
        #[arg(long)]
        batch: PathBuf,
        /// Output directory.
        #[arg(long, default_value = "proof")]
        out: PathBuf,
    },
    /// Verify a proof (snarkjs format) against public inputs.
    Verify {
        /// Key directory (with keys.json).
        #[arg(long, default_value = "keys")]
        keys: PathBuf,
        /// proof.json.
        #[arg(long)]
        proof: PathBuf,
        /// public.json.
        #[arg(long)]
        public: PathBuf,
    },
    /// Print the circuit's constraint counts per transaction kind and per component.
    Constraints {
        /// Tree height.
        #[arg(long, default_value_t = DEFAULT_LEVELS)]
        levels: usize,
    },
    /// Run everything on the sample: setup, batches, proofs, verification.
    Demo {
        /// Transactions per batch.
        #[arg(long, default_value_t = 4)]
        batch_size: usize,
        /// Tree height.
        #[arg(long, default_value_t = DEFAULT_LEVELS)]
        levels: usize,
        /// Working directory (default: a fresh temporary one).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {what} {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a valid {what}", path.display()))
}

fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, serde_json::to_vec_pretty(value)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// Parses the command line and runs it.
pub fn run() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Setup { batch_size, levels, seed, out } => {
            setup(CircuitShape { batch_size, levels }, seed, &out).map(|_| ())
        }
        Command::Sample { levels, out } => {
            write_json(&out.join("genesis.json"), &sample::genesis(levels))?;
            write_json(&out.join("txs.json"), &sample::transactions())?;
            println!("wrote {0}/genesis.json and {0}/txs.json", out.display());
            Ok(())
        }
        Command::BuildBatch { genesis, txs, batch_size, timestamp, out } => {
            let genesis: Genesis = read_json(&genesis, "genesis")?;
            let txs: Vec<SignedTx> = read_json(&txs, "transaction list")?;
            build_batches(&genesis, &txs, batch_size, timestamp, &out).map(|_| ())
        }
        Command::Prove { keys, batch, out } => prove(&keys, &batch, &out),
        Command::Verify { keys, proof, public } => {
            if verify(&keys, &proof, &public)? {
                println!("OK: the proof verifies");
                Ok(())
            } else {
                bail!("the proof does NOT verify for these public inputs and keys")
            }
        }
        Command::Constraints { levels } => constraints(levels),
        Command::Demo { batch_size, levels, dir } => demo(batch_size, levels, dir),
    }
}

fn setup(shape: CircuitShape, seed: Option<u64>, out: &Path) -> Result<keys::KeyManifest> {
    eprintln!("{DEV_CEREMONY_WARNING}");
    let t = Instant::now();
    let pk = keys::setup(shape, seed)?;
    let m = keys::write_keys(out, shape, &pk, seed.is_some())?;
    println!(
        "setup: {} slots, 4^{} leaves per tree, {} constraints, {:.1} s -> {}/keys.json (pk {}, vk {})",
        shape.batch_size,
        shape.levels,
        m.constraints,
        t.elapsed().as_secs_f64(),
        out.display(),
        m.proving_key,
        m.verifying_key
    );
    Ok(m)
}

fn build_batches(
    genesis: &Genesis,
    txs: &[SignedTx],
    batch_size: usize,
    timestamp: u64,
    out: &Path,
) -> Result<Vec<PathBuf>> {
    if batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let mut state = State::genesis(genesis).context("the genesis state is invalid")?;
    let mut files = Vec::new();
    let mut pending = txs.iter().enumerate().peekable();
    let mut rejected = 0;
    while pending.peek().is_some() {
        let mut b = BatchBuilder::new(&mut state, batch_size, timestamp);
        while b.len() < batch_size {
            let Some((i, tx)) = pending.next() else { break };
            if let Err(e) = b.push(tx) {
                rejected += 1;
                eprintln!("transaction {i} ({}) rejected: {e}", tx.tx.kind().name());
            }
        }
        if b.is_empty() {
            break;
        }
        let w = b.finish();
        let path = out.join(format!("batch-{:04}.json", files.len()));
        write_json(&path, &w)?;
        let p = w.public_inputs();
        println!(
            "{}: old root {}, new root {}, commitment {}",
            path.display(),
            short(&p.old_root),
            short(&p.new_root),
            short(&p.tx_commitment)
        );
        files.push(path);
    }
    println!("{} batches, {} transactions rejected", files.len(), rejected);
    Ok(files)
}

fn short(x: &Fr) -> String {
    let d = crate::field::fr_to_dec(x);
    if d.len() > 12 { format!("{}…", &d[..12]) } else { d }
}

fn prove(keys_dir: &Path, batch: &Path, out: &Path) -> Result<()> {
    let witness: BatchWitness = read_json(batch, "batch witness")?;
    let t = Instant::now();
    let (m, pk) = keys::load_proving_key(keys_dir)?;
    let load = t.elapsed();
    let t = Instant::now();
    let (proof, public) = keys::prove(&pk, m.shape, witness)?;
    println!(
        "proved {} in {:.2} s (key loaded in {:.2} s)",
        batch.display(),
        t.elapsed().as_secs_f64(),
        load.as_secs_f64()
    );
    write_json(&out.join("proof.json"), &snarkjs::proof(&proof))?;
    write_json(&out.join("public.json"), &snarkjs::public_inputs(&public.to_vec()))?;
    println!("wrote {0}/proof.json and {0}/public.json", out.display());
    Ok(())
}

fn verify(keys_dir: &Path, proof: &Path, public: &Path) -> Result<bool> {
    let (_, vk) = keys::load_verifying_key(keys_dir)?;
    let proof = snarkjs::parse_proof(&read_json(proof, "snarkjs proof")?)?;
    let inputs = snarkjs::parse_public(&read_json::<Vec<String>>(public, "public inputs list")?)?;
    if inputs.len() != 4 {
        bail!(
            "public.json must hold 4 inputs (old root, new root, commitment, timestamp), not {}",
            inputs.len()
        );
    }
    let ts = crate::field::fr_to_u64(&inputs[3]).context("the timestamp input is not a u64")?;
    let public =
        PublicInputs { old_root: inputs[0], new_root: inputs[1], tx_commitment: inputs[2], timestamp: ts };
    Ok(keys::verify(&keys::prepare(&vk), &public, &proof))
}

/// Counts for the circuit at `levels`: per transaction kind, and per component of one slot.
pub fn constraint_report(levels: usize) -> Result<String> {
    use std::fmt::Write;
    let count = |w: BatchWitness, profile: Option<Profile>| -> Result<usize> {
        let cs = ConstraintSystem::<Fr>::new_ref();
        let mut c = BatchCircuit::new(w);
        c.profile = profile;
        c.generate_constraints(cs.clone())?;
        Ok(cs.num_constraints())
    };
    let shape1 = CircuitShape { batch_size: 1, levels };
    let one = count(keys::padding_witness(shape1), None)?;
    let two = count(keys::padding_witness(CircuitShape { batch_size: 2, levels }), None)?;
    let per_slot = two - one;
    let overhead = one - per_slot;
    let mut out = String::new();
    writeln!(out, "tree height {levels} (4^{levels} = 2^{} leaves per tree)", 2 * levels)?;
    writeln!(out, "per transaction slot: {per_slot} constraints; per batch: {overhead} + B x {per_slot}")?;
    writeln!(out, "\nby transaction kind (a batch of one, minus the batch overhead):")?;
    let mut state = State::genesis(&sample::genesis(levels))?;
    let mut seen = std::collections::BTreeMap::new();
    seen.insert(TxKind::Noop, per_slot);
    for tx in sample::transactions() {
        let mut st = state.clone();
        let mut b = BatchBuilder::new(&mut st, 1, sample::NOW);
        b.push(&tx)?;
        seen.entry(tx.tx.kind()).or_insert(count(b.finish(), None)? - overhead);
        state.apply(&tx, sample::NOW)?;
    }
    for (k, n) in &seen {
        writeln!(out, "  {:<18} {n}", k.name())?;
    }
    let profile: Profile = Default::default();
    count(keys::padding_witness(shape1), Some(profile.clone()))?;
    writeln!(out, "\none slot by component:")?;
    let mut parts: Vec<_> = profile.lock().expect("profile").clone();
    parts.retain(|(k, _)| !k.starts_with("batch"));
    parts.sort_by_key(|p| std::cmp::Reverse(p.1));
    for (k, n) in parts {
        writeln!(out, "  {:<34} {:>6}  ({:.0}%)", k, n, 100.0 * n as f64 / per_slot as f64)?;
    }
    Ok(out)
}

fn constraints(levels: usize) -> Result<()> {
    print!("{}", constraint_report(levels)?);
    Ok(())
}

fn demo(batch_size: usize, levels: usize, dir: Option<PathBuf>) -> Result<()> {
    let started = Instant::now();
    let dir = match dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("medrollup-demo-{}", std::process::id())),
    };
    println!("== medrollup demo in {} ==", dir.display());
    let genesis = sample::genesis(levels);
    let txs = sample::transactions();
    write_json(&dir.join("sample/genesis.json"), &genesis)?;
    write_json(&dir.join("sample/txs.json"), &txs)?;
    println!("1. sample: 2 hospitals, {} signed transactions of every kind", txs.len());
    let keys_dir = dir.join("keys");
    println!("2. setup");
    let m = setup(CircuitShape { batch_size, levels }, Some(1), &keys_dir)?;
    println!("3. build batches");
    let batches = build_batches(&genesis, &txs, batch_size, sample::NOW, &dir.join("batches"))?;
    println!("4. prove and verify each batch");
    let (_, pk) = keys::load_proving_key(&keys_dir)?;
    let (_, vk) = keys::load_verifying_key(&keys_dir)?;
    let pvk = keys::prepare(&vk);
    for (i, path) in batches.iter().enumerate() {
        let witness: BatchWitness = read_json(path, "batch witness")?;
        let t = Instant::now();
        let (proof, public) = keys::prove(&pk, m.shape, witness)?;
        let prove_s = t.elapsed().as_secs_f64();
        let out = dir.join(format!("proofs/{i:04}"));
        write_json(&out.join("proof.json"), &snarkjs::proof(&proof))?;
        write_json(&out.join("public.json"), &snarkjs::public_inputs(&public.to_vec()))?;
        let ok = verify(&keys_dir, &out.join("proof.json"), &out.join("public.json"))?;
        if !ok {
            bail!("batch {i}: the proof does not verify");
        }
        let mut wrong = public;
        wrong.new_root += Fr::from(1u64);
        if keys::verify(&pvk, &wrong, &proof) {
            bail!("batch {i}: the proof verifies for a wrong new root");
        }
        println!("   batch {i}: proved in {prove_s:.2} s, verified; a wrong new root is refused");
    }
    println!(
        "done in {:.1} s: {} batches proven and verified ({} constraints each). snarkjs files: {}/proofs/*/, {}/{}",
        started.elapsed().as_secs_f64(),
        batches.len(),
        m.constraints,
        dir.display(),
        keys_dir.display(),
        m.verifying_key_snarkjs
    );
    Ok(())
}
