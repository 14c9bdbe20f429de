//! One forward NTT, timed five times: a harness for `perf` and for
//! before/after comparisons of the CPU backend's NTT.
//!
//! `cargo run --release -p medrollup-prover --example ntt-profile`; `LOG=19`
//! sets the size (2^20 by default), `PORTABLE=1` takes the portable path.

use ark_bn254::Fr;
use ark_ff::UniformRand;
use medrollup_prover::CpuBackend;
use medrollup_prover::backend::{NttDirection, ntt};
use rand::SeedableRng;
use std::time::Instant;

fn main() {
    let log: u32 = std::env::var("LOG").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let mut data: Vec<Fr> = (0..1usize << log).map(|_| Fr::rand(&mut rng)).collect();
    let cpu = if std::env::var_os("PORTABLE").is_some() { CpuBackend::portable() } else { CpuBackend::new() };
    for _ in 0..5 {
        let t = Instant::now();
        ntt(&cpu, &mut data, NttDirection::Forward, None).expect("ntt");
        println!("NTT 2^{log}: {:.4} s", t.elapsed().as_secs_f64());
    }
    std::hint::black_box(&data);
}
