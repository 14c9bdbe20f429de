//! What the coordinator's store, seals and restarts cost as the history
//! grows: bytes stored per batch (a witness is kept only until its proof),
//! a seal's time at the first and the last batches, the sealed state brought
//! up to date by the paths a batch wrote against a clone, an account's index
//! against a look at every leaf, and a restart from the kept leaves against a
//! replay of every batch.
//!
//! `cargo bench -p medrollup-coordinator --bench restart --profile dev`
//! (dependencies and the circuits crate at opt-level 3, as in every build
//! here). `MEDROLLUP_BENCH_BATCHES` sets the batches sealed (default 2000,
//! four transactions each); the load grows every tree: patients register,
//! grant a doctor consent, the doctor adds a record and logs five reads.

use medrollup_circuits::eddsa::PrivateKey;
use medrollup_circuits::field::Fr;
use medrollup_circuits::keys::CircuitShape;
use medrollup_circuits::poseidon;
use medrollup_circuits::sample::{self, Party, Signer};
use medrollup_circuits::state::{State, TreeId};
use medrollup_circuits::tx::{ConsentTarget, Scope, SignedTx, TxBody};
use medrollup_coordinator::cid::Cid;
use medrollup_coordinator::sequencer::{self, Sequencer};
use medrollup_coordinator::service::restore_state;
use medrollup_coordinator::store::{JobRecord, JobState, ProofRecord, Store, WorkerRecord};
use medrollup_prover::peak_alloc::{PeakAlloc, peak_since, reset_peak};
use medrollup_wire::StageSeconds;
use medrollup_wire::TxStatus;
use std::time::Instant;

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

const LEVELS: usize = 10;
const SHAPE: CircuitShape = CircuitShape { batch_size: 4, levels: LEVELS };
const TXS_PER_PATIENT: usize = 8;

fn party(label: &str, id: u64) -> Party {
    let mut b = [0u8; 32];
    let l = label.as_bytes();
    b[..l.len().min(24)].copy_from_slice(&l[..l.len().min(24)]);
    b[24..].copy_from_slice(&id.to_le_bytes());
    Party { id, key: PrivateKey::from_bytes(b) }
}

/// `patients` patients' transactions, in order.
fn load(patients: u64) -> Vec<SignedTx> {
    let mut s = Signer::new(Fr::from(sample::INSTANCE));
    let hospital = sample::parties().hospitals[0].clone();
    let doctor = party("bench-doctor", 20);
    let h = |x: u64| poseidon::hash(&[Fr::from(x)]);
    let mut out = vec![s.sign(
        &hospital,
        TxBody::RegisterDoctor { doctor: doctor.id, pubkey: doctor.key.public(), rsa_key_hash: h(20) },
    )];
    for i in 0..patients {
        let p = party("bench-patient", 1000 + i);
        let (consent, record) = (1000 + i, 1000 + i);
        out.push(s.sign(&p, TxBody::RegisterPatient { pubkey: p.key.public(), rsa_key_hash: h(i) }));
        out.push(s.sign(
            &p,
            TxBody::Grant {
                consent,
                grantee: doctor.id,
                scope: Scope::ReadWrite,
                target: ConsentTarget::AllRecords,
                expiry: sample::NOW + 86_400,
            },
        ));
        out.push(s.sign(
            &doctor,
            TxBody::AddRecord {
                record,
                patient: p.id,
                consent,
                cid_digest: sample::cid(&i.to_string()),
                meta_hash: h(1),
            },
        ));
        for _ in 0..TXS_PER_PATIENT - 3 {
            out.push(s.sign(&doctor, TxBody::LogAccess { record, consent }));
        }
    }
    out
}

/// Proofs are stored this many batches behind the seals (a farm keeping up).
const PROOF_LAG: u64 = 8;

/// What one seal cost and left behind.
struct Sealing {
    in_sequencer_s: f64,
    in_store_s: f64,
    written: Vec<(TreeId, u64)>,
    record_bytes: usize,
    witness_bytes: usize,
}

/// Seals the open batch into `store`, and stores the proof of the batch
/// [`PROOF_LAG`] before it.
fn seal_into(store: &Store, seq: &mut Sequencer) -> Sealing {
    let t = Instant::now();
    let sealed = seq.seal().expect("a batch open");
    let in_sequencer_s = t.elapsed().as_secs_f64();
    let n = sealed.batch;
    let record = sealed.record(Cid::of(format!("batch {n}").as_bytes()), 0);
    let t = Instant::now();
    store.seal(sealed.to_store(&record, &JobRecord::new(n, 0), &[], n + 1)).expect("stored");
    let in_store_s = t.elapsed().as_secs_f64();
    if let Some(p) = n.checked_sub(PROOF_LAG) {
        let mut rec = store.batch(p).expect("read").expect("sealed");
        rec.proof = Some(ProofRecord {
            proof: "00".repeat(128),
            worker: "bench".into(),
            backend: "cpu".into(),
            stages: StageSeconds::default(),
            verified_at_ms: 0,
        });
        let mut job = JobRecord::new(p, 0);
        job.state = JobState::Proven;
        store.prove(&rec, &job, "bench", &WorkerRecord::default()).expect("proven");
    }
    Sealing {
        in_sequencer_s,
        in_store_s,
        written: sealed.leaves.iter().map(|(t, i, _)| (*t, *i)).collect(),
        record_bytes: serde_json::to_vec(&record).expect("json").len(),
        witness_bytes: serde_json::to_vec(&sealed.witness).expect("json").len(),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Seconds and peak heap MiB of `f`.
fn measure<T>(f: impl FnOnce() -> T) -> (T, f64, f64) {
    let base = reset_peak();
    let t = Instant::now();
    let out = f();
    let s = t.elapsed().as_secs_f64();
    (out, s, peak_since(base) as f64 / (1024.0 * 1024.0))
}

fn mib(bytes: f64) -> f64 {
    bytes / (1024.0 * 1024.0)
}

fn main() {
    let batches: u64 =
        std::env::var("MEDROLLUP_BENCH_BATCHES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let genesis = sample::genesis(LEVELS);
    let patients = (batches * 4).div_ceil(TXS_PER_PATIENT as u64);
    let t = Instant::now();
    let txs = load(patients);
    println!("signed {} transactions in {:.1} s", txs.len(), t.elapsed().as_secs_f64());

    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("coordinator.redb");
    let store = Store::open(&path).expect("store");
    let mut seq = restore_state(&store, &genesis, SHAPE).expect("genesis");
    let mut seals = Vec::new();
    let t = Instant::now();
    for tx in txs.iter().take(batches as usize * 4) {
        let p = sequencer::parse(&serde_json::to_vec(tx).expect("json")).expect("parses");
        let a = seq.admit(&p, sample::NOW, |_| None, true);
        assert!(matches!(a.status, TxStatus::Accepted { .. }), "{a:?}");
        if seq.is_full() {
            seals.push(seal_into(&store, &mut seq));
        }
    }
    let sealed = seq.next_batch();
    let leaves = seq.sealed_state().leaves().count();
    let n = seals.len() as f64;
    let record = seals.iter().map(|s| s.record_bytes).sum::<usize>() as f64;
    let witness = seals.iter().map(|s| s.witness_bytes).sum::<usize>() as f64;
    println!(
        "sealed {sealed} batches in {:.1} s, proofs stored {PROOF_LAG} behind; state: {leaves} leaves, {} audit entries",
        t.elapsed().as_secs_f64(),
        seq.sealed_state().audit_count(),
    );
    println!();
    println!("| stored per batch | KiB | all {sealed} batches MiB |");
    println!("|---|---|---|");
    println!("| record (kept) | {:.1} | {:.1} |", record / n / 1024.0, mib(record));
    println!("| witness (kept only until the proof) | {:.1} | {:.1} |", witness / n / 1024.0, mib(witness));
    println!(
        "| database file at the end ({PROOF_LAG} witnesses held) | {:.1} | {:.1} |",
        std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) as f64 / n / 1024.0,
        mib(std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) as f64),
    );

    let window = 100.min(seals.len());
    let at = |from: usize| {
        let w = &seals[from..from + window];
        (
            median(w.iter().map(|x| x.in_sequencer_s).collect()),
            median(w.iter().map(|x| x.in_store_s).collect()),
        )
    };
    let (first, last) = (at(0), at(seals.len() - window));
    println!();
    println!("| seal, median of {window} | first batches ms | last batches ms | last / first |");
    println!("|---|---|---|---|");
    println!(
        "| sequencer (witness, leaves written, sealed state brought up to date) | {:.2} | {:.2} | {:.2} |",
        first.0 * 1e3,
        last.0 * 1e3,
        last.0 / first.0
    );
    println!(
        "| store (one transaction) | {:.2} | {:.2} | {:.2} |",
        first.1 * 1e3,
        last.1 * 1e3,
        last.1 / first.1
    );
    println!(
        "(debug builds compare the whole sealed state after each seal while it has at most 4096 leaves: the first batches here)"
    );

    // The sealed state brought up to date after the last batch, twice at
    // every seal (the sequencer's and the HTTP view's): before, a clone.
    let ahead = seq.sealed_state();
    let last_written = &seals.last().expect("a batch").written;
    let reps = 50;
    let clone_s = median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(ahead.clone());
                t.elapsed().as_secs_f64()
            })
            .collect(),
    );
    let mut behind = ahead.clone();
    let copy_s = median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                behind.copy_written_from(ahead, last_written.iter().copied());
                t.elapsed().as_secs_f64()
            })
            .collect(),
    );
    assert!(behind == *ahead);
    println!();
    println!("| sealed state brought up to date, {leaves} leaves, median of {reps} | ms |");
    println!("|---|---|");
    println!("| before: a clone of the whole state | {:.3} |", clone_s * 1e3);
    println!(
        "| now: the paths of the {} leaves the batch wrote copied | {:.4} |",
        last_written.len(),
        copy_s * 1e3
    );
    println!("| ratio | {:.0} |", clone_s / copy_s);

    // An account's index (`GET /index/{account}`, read under the view's
    // lock at every client's listing): before, a look at every leaf.
    let st = seq.sealed_state();
    let account = 1000 + patients / 2;
    let scan = || {
        // One pass, each leaf checked against its own tree's fields.
        let a = Fr::from(account);
        let (mut records, mut consents, mut audit) = (Vec::new(), Vec::new(), Vec::new());
        for (t, i, l) in st.leaves() {
            let (cols, out): (&[usize], _) = match t {
                TreeId::Accounts => continue,
                TreeId::Records => (&[0, 1], &mut records),
                TreeId::Consents => (&[0, 1], &mut consents),
                TreeId::Audit => (&[1, 2], &mut audit),
            };
            if cols.iter().any(|&c| l[c] == a) {
                out.push(i);
            }
        }
        for v in [&mut records, &mut consents, &mut audit] {
            v.sort_unstable();
        }
        (records, consents, audit)
    };
    let timed = |f: &dyn Fn() -> (Vec<u64>, Vec<u64>, Vec<u64>)| {
        median(
            (0..reps)
                .map(|_| {
                    let t = Instant::now();
                    std::hint::black_box(f());
                    t.elapsed().as_secs_f64()
                })
                .collect(),
        )
    };
    let indexed = || {
        let i = st.index_of(account);
        (i.records, i.consents, i.audit)
    };
    assert_eq!(scan(), indexed());
    let (scan_s, index_s) = (timed(&scan), timed(&indexed));
    println!();
    println!("| an account's index, {leaves} leaves, median of {reps} | ms |");
    println!("|---|---|");
    println!("| before: every leaf looked at | {:.3} |", scan_s * 1e3);
    println!("| now: the account's entry in the kept index | {:.4} |", index_s * 1e3);
    println!("| ratio | {:.0} |", scan_s / index_s);

    let root = seq.sealed_state().root();
    drop(seq);
    let (read, read_s, _) = measure(|| store.kept_leaves().expect("read").expect("kept"));
    let (_, build_s, _) = measure(|| {
        State::from_leaves(genesis.instance, LEVELS, read.leaves, read.audit_count).expect("rebuilt")
    });
    let (kept, kept_s, kept_mib) = measure(|| restore_state(&store, &genesis, SHAPE).expect("restores"));
    assert_eq!((kept.sealed_state().root(), kept.next_batch()), (root, sealed));
    drop(kept);
    // A database of an older version is replayed, a page at a time, once
    // (leaves marked out of step with the batches take the same path).
    store.keep_leaves(sealed + 1, 0, std::iter::empty()).expect("marked out of step");
    let (paged, paged_s, paged_mib) = measure(|| restore_state(&store, &genesis, SHAPE).expect("replays"));
    assert_eq!(paged.sealed_state().root(), root);
    println!();
    println!("| restart with {sealed} batches | s | peak heap MiB | time ratio to the kept leaves |");
    println!("|---|---|---|---|");
    println!(
        "| replay of every batch, a page at a time (an older database, once) | {paged_s:.2} | {paged_mib:.1} | {:.0} |",
        paged_s / kept_s
    );
    println!("| from the kept leaves | {kept_s:.3} | {kept_mib:.1} | 1 |");
    println!(
        "(of which, measured apart: reading the leaves {read_s:.3} s, rebuilding trees and indices {build_s:.3} s)"
    );

    let (counts, counts_s, _) = measure(|| store.job_counts().expect("counts"));
    assert_eq!((counts.proven, counts.queued), (sealed.saturating_sub(PROOF_LAG), sealed.min(PROOF_LAG)));
    println!();
    println!(
        "job counts (read at every job event for the metrics): {:.3} ms with {sealed} jobs, {PROOF_LAG} open",
        counts_s * 1e3
    );
}
