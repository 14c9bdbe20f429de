//! One G1 MSM, timed five times: a harness for `perf` and for before/after
//! comparisons of the CPU backend's MSM.
//!
//! `cargo run --release -p medrollup-prover --example msm-profile`; `LOG=18`
//! sets the size (2^20 by default), `PORTABLE=1` takes the portable path.

use ark_bn254::{Fr, G1Affine, G1Projective};
use ark_ec::{CurveGroup, PrimeGroup};
use ark_ff::UniformRand;
use medrollup_prover::CpuBackend;
use medrollup_prover::backend::{MsmBackend, msm_g1};
use rand::SeedableRng;
use std::time::Instant;

fn main() {
    let log: u32 = std::env::var("LOG").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let n = 1usize << log;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let g = G1Projective::generator();
    let mut acc = G1Projective::rand(&mut rng);
    let points: Vec<G1Projective> = (0..n)
        .map(|_| {
            acc += g;
            acc
        })
        .collect();
    let bases: Vec<G1Affine> = G1Projective::normalize_batch(&points);
    let scalars: Vec<Fr> = (0..n).map(|_| Fr::rand(&mut rng)).collect();
    let cpu = if std::env::var_os("PORTABLE").is_some() { CpuBackend::portable() } else { CpuBackend::new() };
    let loaded = cpu.load_g1(&bases).expect("bases load");
    for _ in 0..5 {
        let t = Instant::now();
        let _ = std::hint::black_box(msm_g1(&cpu, &loaded, &scalars).expect("msm"));
        println!("G1 MSM 2^{log}: {:.3} s", t.elapsed().as_secs_f64());
    }
}
