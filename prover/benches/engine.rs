//! Side by side, in one process, on the same inputs: the CPU backend and the
//! prover against arkworks (ark-ec's MSM, ark-poly's radix-2 FFT, ark-groth16),
//! with medians, ratios and peak heap.
//!
//! `cargo bench -p medrollup-prover --bench engine` runs everything (3 runs
//! each); `MEDROLLUP_BENCH_QUICK=1` runs a quick subset once (what CI prints).
//! The Groth16 rows on the batch circuit are also the ark-groth16 baseline
//! (time and peak heap, B = 4 and B = 16) that the README quotes.

use ark_bn254::{Bn254, Fr, G1Projective, G2Projective};
use ark_ec::VariableBaseMSM;
use ark_ff::UniformRand;
use ark_groth16::Groth16;
use ark_groth16::r1cs_to_qap::evaluate_constraint;
use ark_poly::{EvaluationDomain, Radix2EvaluationDomain};
use ark_relations::gr1cs::{
    ConstraintSynthesizer, ConstraintSystem, OptimizationGoal, R1CS_PREDICATE_LABEL, SynthesisMode,
};
use ark_snark::SNARK;
use medrollup_circuits::circuit::BatchCircuit;
use medrollup_circuits::keys::{self, CircuitShape};
use medrollup_circuits::sample::batch;
use medrollup_prover::CpuBackend;
use medrollup_prover::backend::{MsmBackend, NttDirection, msm_g1, msm_g2, ntt};
use medrollup_prover::groth16::{LoadedKey, StageTimes, prove};
use medrollup_prover::peak_alloc::{PeakAlloc, peak_since, reset_peak};
use medrollup_prover::r1cs::R1cs;
use rand::SeedableRng;
use rayon::prelude::*;
use std::time::Instant;

mod common;

use common::{Chain, median, random_g1, random_g2, random_scalars, stages};

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

struct Row {
    what: String,
    ark_s: f64,
    ours_s: f64,
    ark_mib: f64,
    ours_mib: f64,
}

/// Median seconds and peak MiB of `f` over `runs` runs.
fn measure(runs: usize, mut f: impl FnMut()) -> (f64, f64) {
    measure_on(runs, || (), |()| f())
}

/// Like [`measure`], with a fresh input from `setup` for each run, made
/// outside the timed region (an in-place transform's copy of its input is
/// not part of the transform).
fn measure_on<T, R>(runs: usize, mut setup: impl FnMut() -> T, mut f: impl FnMut(T) -> R) -> (f64, f64) {
    let mut times = Vec::new();
    let mut peak = 0;
    for _ in 0..runs {
        let input = setup();
        let base = reset_peak();
        let t = Instant::now();
        let out = f(input);
        times.push(t.elapsed().as_secs_f64());
        peak = peak.max(peak_since(base));
        drop(out);
    }
    (median(times), peak as f64 / (1024.0 * 1024.0))
}

fn groth16_row<C: ConstraintSynthesizer<Fr> + Clone>(
    what: &str,
    runs: usize,
    pk: ark_groth16::ProvingKey<Bn254>,
    circuit: C,
    notes: &mut Vec<String>,
) -> Row {
    let cpu = CpuBackend::new();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let (ark_s, ark_mib) = measure(runs, || {
        Groth16::<Bn254>::prove(&pk, circuit.clone(), &mut rng).expect("ark-groth16 proves");
    });
    let key = LoadedKey::load(&cpu, pk).expect("load");
    // What a worker does when it loads a key: one proof that builds and
    // keeps the circuit's constraints.
    let t = Instant::now();
    key.prepare(&cpu, circuit.clone()).expect("prepare");
    let prepare_s = t.elapsed().as_secs_f64();
    let mut last = StageTimes::default();
    let (ours_s, ours_mib) = measure(runs, || {
        let (r, s) = (Fr::rand(&mut rng), Fr::rand(&mut rng));
        last = prove(&cpu, &key, circuit.clone(), r, s).expect("proves").1;
    });
    let r1cs = key.r1cs().expect("prepared");
    notes.push(format!(
        "{what}, our stages: {}; the key's first proof (building the constraints: {} combinations of {} \
         terms, depth {}) took {prepare_s:.2} s",
        stages(&last),
        r1cs.num_linear_combinations(),
        r1cs.num_terms(),
        r1cs.depth()
    ));
    Row { what: what.into(), ark_s, ours_s, ark_mib, ours_mib }
}

/// ark-groth16 0.6's prover up to the quotient's first NTT: the witness and
/// a, b, c (`create_proof_with_reduction`, then `witness_map`'s evaluations).
fn ark_witness_values<C: ConstraintSynthesizer<Fr>>(circuit: C, n: usize) -> [Vec<Fr>; 3] {
    let cs = ConstraintSystem::<Fr>::new_ref();
    cs.set_optimization_goal(OptimizationGoal::Constraints);
    cs.set_mode(SynthesisMode::Prove { construct_matrices: true, generate_lc_assignments: false });
    circuit.generate_constraints(cs.clone()).expect("synthesis");
    cs.finalize();
    let matrices = &cs.to_matrices().expect("matrices")[R1CS_PREDICATE_LABEL];
    let inner = cs.borrow().expect("a constraint system");
    let z: Vec<Fr> = inner
        .instance_assignment()
        .expect("proving")
        .iter()
        .chain(inner.witness_assignment().expect("proving"))
        .copied()
        .collect();
    let m = inner.num_constraints();
    core::array::from_fn(|k| {
        let mut out = vec![Fr::from(0u64); n];
        out[..m].par_iter_mut().zip(&matrices[k]).for_each(|(o, row)| *o = evaluate_constraint(row, &z));
        out
    })
}

/// The witness and a, b, c: arkworks' way and ours from the kept constraints.
fn witness_row<C: ConstraintSynthesizer<Fr>>(what: &str, runs: usize, circuit: impl Fn() -> C) -> Row {
    let r1cs = R1cs::from_circuit(circuit()).expect("constraints");
    let n = (r1cs.num_constraints() + r1cs.num_instance()).next_power_of_two();
    let (ark_s, ark_mib) = measure(runs, || {
        let _ = std::hint::black_box(ark_witness_values(circuit(), n));
    });
    let (ours_s, ours_mib) = measure(runs, || {
        let _ = std::hint::black_box(r1cs.values(circuit(), n).expect("satisfied"));
    });
    Row { what: format!("witness and a, b, c: {what}"), ark_s, ours_s, ark_mib, ours_mib }
}

fn main() {
    let quick = std::env::var_os("MEDROLLUP_BENCH_QUICK").is_some();
    let runs = if quick { 1 } else { 3 };
    let cpu = CpuBackend::new();
    let mut rows = Vec::new();
    let mut notes = Vec::new();

    let msm_logs: &[u32] = if quick { &[16] } else { &[16, 18, 20] };
    let largest = 1usize << msm_logs.iter().max().unwrap();
    let bases = random_g1(largest);
    let scalars = random_scalars(largest, 1);
    let loaded = cpu.load_g1(&bases).expect("load");
    for &log in msm_logs {
        let n = 1usize << log;
        let (ark_s, ark_mib) = measure(runs, || {
            let _ = std::hint::black_box(G1Projective::msm(&bases[..n], &scalars[..n]).unwrap());
        });
        let (ours_s, ours_mib) = measure(runs, || {
            let _ = std::hint::black_box(msm_g1(&cpu, &loaded, &scalars[..n]).unwrap());
        });
        rows.push(Row { what: format!("G1 MSM 2^{log}, random scalars"), ark_s, ours_s, ark_mib, ours_mib });
    }
    drop(loaded);
    // The portable path beside the vector one, where both run.
    let portable = CpuBackend::portable();
    if cpu.vector() && !quick {
        let n = largest;
        let loaded = portable.load_g1(&bases).expect("load");
        let (ark_s, ark_mib) = measure(runs, || {
            let _ = std::hint::black_box(G1Projective::msm(&bases[..n], &scalars[..n]).unwrap());
        });
        let (ours_s, ours_mib) = measure(runs, || {
            let _ = std::hint::black_box(msm_g1(&portable, &loaded, &scalars[..n]).unwrap());
        });
        let what = format!("G1 MSM 2^{}, random scalars, portable path", n.trailing_zeros());
        rows.push(Row { what, ark_s, ours_s, ark_mib, ours_mib });
    }
    {
        let n = 1usize << 16;
        let g2 = random_g2(n);
        let loaded = cpu.load_g2(&g2).expect("load");
        let (ark_s, ark_mib) = measure(runs, || {
            let _ = std::hint::black_box(G2Projective::msm(&g2, &scalars[..n]).unwrap());
        });
        let (ours_s, ours_mib) = measure(runs, || {
            let _ = std::hint::black_box(msm_g2(&cpu, &loaded, &scalars[..n]).unwrap());
        });
        rows.push(Row { what: "G2 MSM 2^16, random scalars".into(), ark_s, ours_s, ark_mib, ours_mib });
    }
    let ntt_logs: Vec<u32> = if quick { vec![16, 18] } else { (16..=20).collect() };
    for log in ntt_logs {
        let n = 1usize << log;
        let data = random_scalars(n, 2);
        let d = Radix2EvaluationDomain::<Fr>::new(n).unwrap();
        let (ark_s, ark_mib) = measure_on(
            runs,
            || data.clone(),
            |mut v| {
                d.fft_in_place(&mut v);
                v
            },
        );
        let (ours_s, ours_mib) = measure_on(
            runs,
            || data.clone(),
            |mut v| {
                ntt(&cpu, &mut v, NttDirection::Forward, None).unwrap();
                v
            },
        );
        rows.push(Row { what: format!("NTT 2^{log} (forward)"), ark_s, ours_s, ark_mib, ours_mib });
        if cpu.vector() && log == 20 {
            let (ours_s, ours_mib) = measure_on(
                runs,
                || data.clone(),
                |mut v| {
                    ntt(&portable, &mut v, NttDirection::Forward, None).unwrap();
                    v
                },
            );
            let what = format!("NTT 2^{log} (forward), portable path");
            rows.push(Row { what, ark_s, ours_s, ark_mib, ours_mib });
        }
    }

    // The CPU side of every proof, GPU proofs included: the witness and the
    // constraints' values a, b, c. arkworks' way is ark-groth16's: synthesis
    // with matrices, inlining, the matrices, then one row per value.
    let log = if quick { 16 } else { 20 };
    rows.push(witness_row(&format!("synthetic 2^{log} constraints"), runs, || Chain(1 << log)));
    if !quick {
        let w = batch(CircuitShape { batch_size: 16, levels: medrollup_circuits::cli::DEFAULT_LEVELS });
        rows.push(witness_row("batch circuit B = 16", runs, || BatchCircuit::new(w.clone())));
    }

    let sizes: &[usize] = if quick { &[4] } else { &[4, 16] };
    for &b in sizes {
        let shape = CircuitShape { batch_size: b, levels: medrollup_circuits::cli::DEFAULT_LEVELS };
        let t = Instant::now();
        let pk = keys::setup(shape, Some(1)).expect("setup");
        let setup_s = t.elapsed().as_secs_f64();
        {
            // ark-groth16 setup and verification times, for the record.
            let w = batch(shape);
            let public = w.public_inputs();
            let (proof, _) = keys::prove(&pk, shape, w).expect("prove");
            let pvk = keys::prepare(&pk.vk);
            assert!(keys::verify(&pvk, &public, &proof)); // warm-up
            let t = Instant::now();
            assert!(keys::verify(&pvk, &public, &proof));
            let verify_ms = t.elapsed().as_secs_f64() * 1e3;
            notes.push(format!(
                "batch circuit B = {b}: {} constraints; ark-groth16 setup {setup_s:.1} s, verify {verify_ms:.1} ms",
                keys::constraint_count(shape),
            ));
        }
        let row = groth16_row(
            &format!("Groth16, batch circuit B = {b} (2^24 trees)"),
            runs,
            pk,
            BatchCircuit::new(batch(shape)),
            &mut notes,
        );
        rows.push(row);
    }
    if !quick {
        let chain = Chain(1 << 18);
        let pk = Groth16::<Bn254>::circuit_specific_setup(
            chain.clone(),
            &mut rand_chacha::ChaCha8Rng::seed_from_u64(3),
        )
        .expect("setup")
        .0;
        rows.push(groth16_row("Groth16, synthetic 2^18 constraints", runs, pk, chain, &mut notes));
    }

    println!(
        "medrollup-prover CPU backend ({}) vs arkworks 0.6, {} threads, {} run(s) each (median)",
        cpu.name(),
        rayon::current_num_threads(),
        runs
    );
    println!("| what | arkworks s | ours s | speed-up | arkworks peak MiB | ours peak MiB | memory ratio |");
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.3} | {:.3} | {:.2}x | {:.0} | {:.0} | {:.2} |",
            r.what,
            r.ark_s,
            r.ours_s,
            r.ark_s / r.ours_s,
            r.ark_mib,
            r.ours_mib,
            if r.ark_mib > 0.0 { r.ours_mib / r.ark_mib } else { 0.0 }
        );
    }
    println!();
    for n in notes {
        println!("- {n}");
    }
}
