//! Stage times of CPU proofs of the synthetic chain circuit (and of each
//! proof's check against the key, as the worker does), and the same key's
//! MSMs alone (random scalars): a harness for the prover's stages.
//!
//! `cargo run --release -p medrollup-prover --example prove-profile`; `LOG=16`
//! sets the circuit's size (2^16 constraints by default); `RUNTIME=cuda` or
//! `opencl` proves through the GPU backend on that runtime's devices instead
//! (`OPENCL_CPU=1` admits CPU devices, such as POCL's).

#[path = "../benches/common/mod.rs"]
mod common;

use ark_bn254::{Bn254, Fr};
use ark_groth16::Groth16;
use ark_snark::SNARK;
use ark_std::UniformRand;
use common::{Chain, stages};
use medrollup_prover::CpuBackend;
use medrollup_prover::backend::{MsmBackend, NttBackend, msm_g1};
use medrollup_prover::gpu::{GpuBackend, GpuConfig, Runtimes};
use medrollup_prover::groth16::{LoadedKey, prove_with_inputs};
use rand::SeedableRng;
use std::time::Instant;

fn main() {
    let log: u32 = std::env::var("LOG").ok().and_then(|v| v.parse().ok()).unwrap_or(16);
    let chain = Chain(1 << log);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let pk = Groth16::<Bn254>::circuit_specific_setup(chain.clone(), &mut rng).expect("setup").0;
    match std::env::var("RUNTIME").as_deref() {
        Err(_) | Ok("cpu") => profile(&CpuBackend::new(), log, chain, pk, &mut rng),
        Ok(runtime) => {
            let runtimes: Runtimes = runtime.parse().expect("RUNTIME: cpu, cuda or opencl");
            let opencl_cpu = std::env::var("OPENCL_CPU").is_ok_and(|v| v == "1");
            let gpu = GpuBackend::new(&GpuConfig { runtimes, opencl_cpu, ..GpuConfig::default() });
            println!("{}: {:?}", MsmBackend::name(&gpu), gpu.report());
            profile(&gpu, log, chain, pk, &mut rng)
        }
    }
}

fn profile<B: MsmBackend + NttBackend>(
    cpu: &B,
    log: u32,
    chain: Chain,
    pk: ark_groth16::ProvingKey<Bn254>,
    rng: &mut rand_chacha::ChaCha8Rng,
) {
    let (h_query, a_query) = (pk.h_query.clone(), pk.a_query[1..].to_vec());
    let key = LoadedKey::load(cpu, pk).expect("load");
    key.prepare(cpu, chain.clone()).expect("prepare");
    for _ in 0..3 {
        let t = Instant::now();
        let (proof, times, inputs) =
            prove_with_inputs(cpu, &key, chain.clone(), Fr::rand(rng), Fr::rand(rng)).expect("proves");
        let took = t.elapsed();
        // The worker's check of every proof against the key.
        let t = Instant::now();
        assert!(key.verifies(&proof, &inputs));
        let check = t.elapsed();
        println!(
            "proof 2^{log}: {:.3} s: {}; its check against the key {:.1} ms",
            took.as_secs_f64(),
            stages(&times),
            check.as_secs_f64() * 1e3
        );
    }
    for (what, points) in [("h", &h_query), ("a", &a_query)] {
        let bases = cpu.load_g1(points).expect("load");
        let scalars: Vec<Fr> = (0..points.len()).map(|_| Fr::rand(rng)).collect();
        let t = Instant::now();
        let _ = std::hint::black_box(msm_g1(cpu, &bases, &scalars).expect("msm"));
        println!("{what} bases alone, {} random scalars: {:.3} s", points.len(), t.elapsed().as_secs_f64());
    }
}
