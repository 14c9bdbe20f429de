//! What a coordinator restart and a seal cost as the history grows: the
//! state rebuilt from the leaves the store keeps, against the replay of every
//! stored batch (all loaded at once, as before the leaves were kept, and a
//! page at a time, as a database of an older version is replayed once now).
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
use medrollup_circuits::state::TreeId;
use medrollup_circuits::tx::{ConsentTarget, Scope, SignedTx, TxBody};
use medrollup_coordinator::cid::Cid;
use medrollup_coordinator::sequencer::{self, Sequencer};
use medrollup_coordinator::service::restore_state;
use medrollup_coordinator::store::{BatchRecord, JobRecord, JobState, Seal, Store};
use medrollup_prover::peak_alloc::{PeakAlloc, peak_since, reset_peak};
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

/// Seals the open batch into `store`: seconds in the sequencer and in the
/// store, and the leaves the batch wrote.
fn seal_into(store: &Store, seq: &mut Sequencer) -> (f64, f64, Vec<(TreeId, u64)>) {
    let t = Instant::now();
    let sealed = seq.seal().expect("a batch open");
    let in_sequencer = t.elapsed().as_secs_f64();
    let n = sealed.batch;
    let record = BatchRecord {
        batch: n,
        public_inputs: sealed.witness.public_inputs(),
        cid: Cid::of(format!("batch {n}").as_bytes()),
        tx_ids: sealed.tx_ids.clone(),
        witness: sealed.witness,
        sealed_at_ms: 0,
        proof: None,
        submitted: false,
    };
    let t = Instant::now();
    store
        .seal(Seal {
            batch: &record,
            job: &JobRecord::new(n, 0),
            answers: &[],
            applied: &sealed.messages,
            applied_seq: n + 1,
            leaves: &sealed.leaves,
            audit_count: sealed.audit_count,
        })
        .expect("stored");
    let written = sealed.leaves.iter().map(|(t, i, _)| (*t, *i)).collect();
    (in_sequencer, t.elapsed().as_secs_f64(), written)
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
    let mut times = Vec::new();
    let mut last_written = Vec::new();
    let t = Instant::now();
    for tx in txs.iter().take(batches as usize * 4) {
        let p = sequencer::parse(&serde_json::to_vec(tx).expect("json")).expect("parses");
        let a = seq.admit(&p, sample::NOW, |_| None, true);
        assert!(matches!(a.status, TxStatus::Accepted { .. }), "{a:?}");
        if seq.is_full() {
            let (a, b, written) = seal_into(&store, &mut seq);
            times.push((a, b));
            last_written = written;
        }
    }
    let sealed = seq.next_batch();
    let leaves = seq.sealed_state().leaves().count();
    println!(
        "sealed {sealed} batches in {:.1} s; state: {leaves} leaves, {} audit entries; database {:.1} MiB",
        t.elapsed().as_secs_f64(),
        seq.sealed_state().audit_count(),
        std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) as f64 / (1024.0 * 1024.0),
    );
    let window = 100.min(times.len());
    let at = |from: usize| {
        let w = &times[from..from + window];
        (median(w.iter().map(|x| x.0).collect()), median(w.iter().map(|x| x.1).collect()))
    };
    let (first, last) = (at(0), at(times.len() - window));
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

    let root = seq.sealed_state().root();
    drop(seq);
    // Before: every batch loaded, then replayed.
    let (all, all_s, all_mib) = measure(|| {
        let all = store.batches_from(0, usize::MAX).expect("batches");
        let seq = Sequencer::restore(&genesis, SHAPE, &all).expect("replays");
        (seq.sealed_state().root(), all.len())
    });
    assert_eq!(all, (root, sealed as usize));
    // Now: from the kept leaves.
    let (kept, kept_s, kept_mib) = measure(|| restore_state(&store, &genesis, SHAPE).expect("restores"));
    assert_eq!((kept.sealed_state().root(), kept.next_batch()), (root, sealed));
    drop(kept);
    // A database of an older version: replayed a page at a time, once.
    // (Leaves marked out of step with the batches take the same path as
    // none at all.)
    store.keep_leaves(sealed + 1, 0, std::iter::empty()).expect("marked out of step");
    let (paged, paged_s, paged_mib) = measure(|| restore_state(&store, &genesis, SHAPE).expect("replays"));
    assert_eq!(paged.sealed_state().root(), root);
    println!();
    println!("| restart with {sealed} batches | s | peak heap MiB | time ratio to the kept leaves |");
    println!("|---|---|---|---|");
    println!(
        "| before: every batch loaded, then replayed | {all_s:.2} | {all_mib:.1} | {:.0} |",
        all_s / kept_s
    );
    println!(
        "| now, older database: replayed a page at a time (once) | {paged_s:.2} | {paged_mib:.1} | {:.0} |",
        paged_s / kept_s
    );
    println!("| now: from the kept leaves | {kept_s:.3} | {kept_mib:.1} | 1 |");
    // All but the last eight proven, as in a farm that keeps up.
    for n in 0..sealed.saturating_sub(8) {
        let mut job = JobRecord::new(n, 0);
        job.state = JobState::Proven;
        store.put_job(&job, None).expect("stored");
    }
    let (counts, counts_s, _) = measure(|| store.job_counts().expect("counts"));
    assert_eq!((counts.proven, counts.queued), (sealed.saturating_sub(8), sealed.min(8)));
    println!();
    println!(
        "job counts (read at every job event for the metrics): {:.3} ms with {sealed} jobs, 8 open",
        counts_s * 1e3
    );
}
