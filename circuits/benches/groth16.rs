//! Baseline for the prover engine: ark-groth16 proving the batch circuit at
//! B = 4 and B = 16 (default tree height, 2^24 leaves per tree), with proving
//! time (median of the runs) and peak heap during proving.
//!
//! `cargo bench -p medrollup-circuits --bench groth16` (MEDROLLUP_BENCH_RUNS=n
//! sets the runs per size, default 3; MEDROLLUP_BENCH_SIZES=4,16 the sizes).
#![allow(unsafe_code)] // the counting allocator below

use medrollup_circuits::batch::BatchBuilder;
use medrollup_circuits::keys::{self, CircuitShape};
use medrollup_circuits::sample::{self, NOW};
use medrollup_circuits::state::State;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Instant;

/// Counts live heap bytes and their peak since the last reset.
struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: defers to the system allocator; only adds bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Relaxed) + l.size();
            PEAK.fetch_max(now, Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn reset_peak() -> usize {
    let live = LIVE.load(Relaxed);
    PEAK.store(live, Relaxed);
    live
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    let runs: usize = std::env::var("MEDROLLUP_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let sizes: Vec<usize> = std::env::var("MEDROLLUP_BENCH_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![4, 16]);
    let levels = medrollup_circuits::cli::DEFAULT_LEVELS;
    println!(
        "ark-groth16 on the batch circuit, tree height {levels} (2^{} leaves per tree), {} threads, {runs} runs",
        2 * levels,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "| B | constraints | setup s | prove s (median) | prove s (min..max) | peak heap while proving MiB | verify ms |"
    );
    println!("|---|---|---|---|---|---|---|");
    for b in sizes {
        let shape = CircuitShape { batch_size: b, levels };
        let constraints = keys::constraint_count(shape);
        let t = Instant::now();
        let pk = keys::setup(shape, Some(1)).expect("setup");
        let setup_s = t.elapsed().as_secs_f64();
        let pvk = keys::prepare(&pk.vk);
        // A real batch: the sample transactions, padded.
        let mut state = State::genesis(&sample::genesis(levels)).expect("genesis");
        let mut builder = BatchBuilder::new(&mut state, b, NOW);
        for tx in sample::transactions().iter().take(b) {
            builder.push(tx).expect("sample transactions are valid");
        }
        let witness = builder.finish();
        let mut times = Vec::new();
        let mut peak = 0usize;
        let mut verify_ms = 0.0;
        for _ in 0..runs {
            let base = reset_peak();
            let t = Instant::now();
            let (proof, public) = keys::prove(&pk, shape, witness.clone()).expect("prove");
            times.push(t.elapsed().as_secs_f64());
            peak = peak.max(PEAK.load(Relaxed) - base);
            let t = Instant::now();
            assert!(keys::verify(&pvk, &public, &proof), "the proof verifies");
            verify_ms = t.elapsed().as_secs_f64() * 1e3;
        }
        let (lo, hi) =
            (times.iter().copied().fold(f64::MAX, f64::min), times.iter().copied().fold(0.0, f64::max));
        println!(
            "| {b} | {constraints} | {setup_s:.1} | {:.2} | {lo:.2}..{hi:.2} | {:.0} | {verify_ms:.1} |",
            median(times),
            peak as f64 / (1024.0 * 1024.0)
        );
    }
}
