//! The GPU backend against the CPU backend, side by side in one process on
//! the same inputs: MSMs with resident bases, NTTs (through the trait, with
//! their copies, and resident on the device), the Groth16 quotient, and full
//! proofs (verified with ark-groth16's verifier).
//!
//! `cargo bench -p medrollup-prover --bench gpu` on a machine with a device.
//! Environment: `MEDROLLUP_GPU_RUNTIME` (auto, cuda, opencl), `MEDROLLUP_GPU_OPENCL_CPU=1`
//! (use POCL), `MEDROLLUP_BENCH_QUICK=1` (small sizes), `MEDROLLUP_BENCH_PROOFS`
//! (comma list of `b4`, `b16`, `chain20`; default `b4,chain20`),
//! `MEDROLLUP_BENCH_VARIANTS=1` (also the portable arithmetic on CUDA),
//! `MEDROLLUP_GPU_PROFILE=1` (time per driver phase), `MEDROLLUP_BENCH_OUT=FILE`
//! (the table and notes in Markdown).

mod common;

use ark_bn254::{Bn254, Fr};
use ark_ff::UniformRand;
use ark_groth16::Groth16;
use ark_relations::gr1cs::ConstraintSynthesizer;
use ark_snark::SNARK;
use common::{Chain, median, random_g1, random_g2, random_scalars, stages};
use medrollup_circuits::circuit::BatchCircuit;
use medrollup_circuits::keys::{self, CircuitShape};
use medrollup_circuits::sample::batch;
use medrollup_prover::CpuBackend;
use medrollup_prover::backend::{MsmBackend, NttDirection, msm_g1, msm_g2, ntt, qap_quotient};
use medrollup_prover::gpu::{GpuBackend, GpuConfig, Runtimes};
use medrollup_prover::groth16::{LoadedKey, StageTimes, prove};
use rand::SeedableRng;
use std::fmt::Write as _;
use std::time::Instant;

struct Row {
    what: String,
    cpu_s: Option<f64>,
    gpu_s: f64,
}

/// Median seconds of `runs` runs of `f`, after one untimed warm-up when `warm`.
fn time(runs: usize, warm: bool, mut f: impl FnMut()) -> f64 {
    if warm {
        f();
    }
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "1")
}

struct Bench {
    quick: bool,
    mismatches: Vec<String>,
    gpu_runs: usize,
    cpu_runs: usize,
    rows: Vec<Row>,
    notes: Vec<String>,
}

impl Bench {
    /// Records a disagreement between the backends (the run goes on, so the
    /// other rows still come out; the report ends with the list).
    fn agree<T: PartialEq>(&mut self, what: &str, gpu: T, cpu: T) {
        if gpu != cpu {
            eprintln!("  MISMATCH: {what}");
            self.mismatches.push(what.to_string());
        }
    }

    fn row(&mut self, what: impl Into<String>, cpu_s: Option<f64>, gpu_s: f64) {
        let what = what.into();
        eprintln!(
            "  {what}: gpu {:.3} ms, cpu {}",
            gpu_s * 1e3,
            cpu_s.map_or("-".into(), |c| format!("{:.2} ms", c * 1e3))
        );
        self.rows.push(Row { what, cpu_s, gpu_s });
    }

    fn msms(&mut self, gpu: &GpuBackend, cpu: &CpuBackend) {
        let logs: &[u32] = if self.quick { &[12, 14] } else { &[16, 18, 20] };
        let largest = 1usize << logs.iter().max().expect("sizes");
        let bases = random_g1(largest);
        let scalars = random_scalars(largest, 1);
        let (lg, lc) = (gpu.load_g1(&bases).expect("load"), cpu.load_g1(&bases).expect("load"));
        for &log in logs {
            let n = 1usize << log;
            let g = time(self.gpu_runs, true, || {
                let _ = std::hint::black_box(msm_g1(gpu, &lg, &scalars[..n]).unwrap());
            });
            let c = time(self.cpu_runs, false, || {
                let _ = std::hint::black_box(msm_g1(cpu, &lc, &scalars[..n]).unwrap());
            });
            self.agree(
                &format!("G1 MSM 2^{log}"),
                msm_g1(gpu, &lg, &scalars[..n]).unwrap(),
                msm_g1(cpu, &lc, &scalars[..n]).unwrap(),
            );
            self.row(format!("G1 MSM 2^{log}, random scalars, resident bases"), Some(c), g);
        }
        // A witness: mostly zeros and ones (the skewed buckets).
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let witness: Vec<Fr> = (0..largest)
            .map(|i| match i % 10 {
                0..=5 => Fr::from(0u64),
                6..=8 => Fr::from(1u64),
                _ => Fr::rand(&mut r),
            })
            .collect();
        let g = time(self.gpu_runs, true, || {
            let _ = std::hint::black_box(msm_g1(gpu, &lg, &witness).unwrap());
        });
        let c = time(self.cpu_runs, false, || {
            let _ = std::hint::black_box(msm_g1(cpu, &lc, &witness).unwrap());
        });
        self.agree(
            "G1 MSM, witness-like",
            msm_g1(gpu, &lg, &witness).unwrap(),
            msm_g1(cpu, &lc, &witness).unwrap(),
        );
        self.row(format!("G1 MSM 2^{}, witness-like scalars (60% 0, 30% 1)", largest.ilog2()), Some(c), g);

        let g2_logs: &[u32] = if self.quick { &[12] } else { &[16, 18] };
        let g2 = random_g2(1 << g2_logs.iter().max().expect("sizes"));
        let (lg2, lc2) = (gpu.load_g2(&g2).expect("load"), cpu.load_g2(&g2).expect("load"));
        for &log in g2_logs {
            let n = 1usize << log;
            let g = time(self.gpu_runs, true, || {
                let _ = std::hint::black_box(msm_g2(gpu, &lg2, &scalars[..n]).unwrap());
            });
            let c = time(self.cpu_runs, false, || {
                let _ = std::hint::black_box(msm_g2(cpu, &lc2, &scalars[..n]).unwrap());
            });
            self.agree(
                &format!("G2 MSM 2^{log}"),
                msm_g2(gpu, &lg2, &scalars[..n]).unwrap(),
                msm_g2(cpu, &lc2, &scalars[..n]).unwrap(),
            );
            self.row(format!("G2 MSM 2^{log}, random scalars, resident bases"), Some(c), g);
        }
    }

    fn copies(&mut self, gpu: &GpuBackend) {
        let mib = if self.quick { 4 } else { 32 };
        let (up, down) = gpu.time_copies(mib << 20, 5).expect("copies");
        self.row(format!("copy {mib} MiB to the device"), None, up.as_secs_f64());
        self.row(format!("copy {mib} MiB from the device"), None, down.as_secs_f64());
    }

    fn ntts(&mut self, gpu: &GpuBackend, cpu: &CpuBackend) {
        let logs: Vec<u32> = if self.quick { vec![12, 14] } else { (16..=20).collect() };
        for &log in &logs {
            let n = 1usize << log;
            let data = random_scalars(n, 2);
            let mut v = data.clone();
            let g = time(self.gpu_runs, true, || {
                v.copy_from_slice(&data);
                ntt(gpu, &mut v, NttDirection::Forward, None).unwrap();
            });
            let mut w = data.clone();
            let c = time(self.cpu_runs, false, || {
                w.copy_from_slice(&data);
                ntt(cpu, &mut w, NttDirection::Forward, None).unwrap();
            });
            self.agree(&format!("NTT 2^{log}"), &v, &w);
            self.row(format!("NTT 2^{log} forward, host to host (with copies)"), Some(c), g);
            let resident =
                gpu.time_resident_ntt(log, self.gpu_runs.max(5)).expect("resident NTT").as_secs_f64();
            self.row(format!("NTT 2^{log} forward, resident on the device"), None, resident);
        }
        let log = *logs.last().expect("sizes");
        let n = 1usize << log;
        let v: Vec<Vec<Fr>> = (0..3).map(|k| random_scalars(n, 10 + k)).collect();
        let q = || (v[0].clone(), v[1].clone(), v[2].clone());
        let g = time(self.gpu_runs, true, || {
            let (a, b, c) = q();
            drop(std::hint::black_box(qap_quotient(gpu, a, b, c).unwrap()));
        });
        let c_s = time(self.cpu_runs, false, || {
            let (a, b, c) = q();
            drop(std::hint::black_box(qap_quotient(cpu, a, b, c).unwrap()));
        });
        let (a, b, c) = q();
        let (a2, b2, c2) = q();
        self.agree("quotient", qap_quotient(gpu, a, b, c).unwrap(), qap_quotient(cpu, a2, b2, c2).unwrap());
        self.row(format!("Groth16 quotient 2^{log} (7 NTTs, host to host)"), Some(c_s), g);
    }

    fn proof<C: ConstraintSynthesizer<Fr> + Clone>(
        &mut self,
        what: &str,
        gpu: &GpuBackend,
        pk: ark_groth16::ProvingKey<Bn254>,
        circuit: C,
        public: Vec<Fr>,
    ) {
        let cpu = CpuBackend::new();
        let t = Instant::now();
        let kg = LoadedKey::load(gpu, pk.clone()).expect("load");
        let load_s = t.elapsed().as_secs_f64();
        // What a worker does when it loads a key: one proof that builds and
        // keeps the circuit's constraints.
        let t = Instant::now();
        kg.prepare(gpu, circuit.clone()).expect("prepare");
        let prepare_s = t.elapsed().as_secs_f64();
        let kc = LoadedKey::load(&cpu, pk.clone()).expect("load");
        kc.prepare(&cpu, circuit.clone()).expect("prepare");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let mut last = StageTimes::default();
        let mut proof = None;
        let g = time(self.gpu_runs.min(3), true, || {
            let (r, s) = (Fr::rand(&mut rng), Fr::rand(&mut rng));
            let t0 = Instant::now();
            let (p, t) = prove(gpu, &kg, circuit.clone(), r, s).expect("proves");
            eprintln!("    {what}: {:.3} s, {}", t0.elapsed().as_secs_f64(), stages(&t));
            last = t;
            proof = Some(p);
        });
        let c = time(1, false, || {
            let _ = std::hint::black_box(
                prove(&cpu, &kc, circuit.clone(), Fr::from(1u64), Fr::from(2u64)).expect("proves"),
            );
        });
        let pvk = keys::prepare(&pk.vk);
        let ok = Groth16::<Bn254>::verify_with_processed_vk(&pvk, &public, proof.as_ref().expect("a proof"))
            .expect("verify");
        self.agree(&format!("the GPU proof of {what} verifies"), ok, true);
        self.notes.push(format!(
            "{what}: GPU stages {}; keys loaded on the devices in {load_s:.2} s, first proof (building the \
             constraints) {prepare_s:.2} s; verified by ark-groth16",
            stages(&last)
        ));
        self.row(format!("Groth16, {what}"), Some(c), g);
    }

    fn proofs(&mut self, gpu: &GpuBackend) {
        let list = std::env::var("MEDROLLUP_BENCH_PROOFS").unwrap_or_else(|_| "b4,chain20".into());
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match item {
                "b4" | "b16" => {
                    let b = if item == "b4" { 4 } else { 16 };
                    let shape =
                        CircuitShape { batch_size: b, levels: medrollup_circuits::cli::DEFAULT_LEVELS };
                    let t = Instant::now();
                    let pk = keys::setup(shape, Some(1)).expect("setup");
                    self.notes.push(format!(
                        "batch circuit B = {b}: {} constraints, setup {:.1} s",
                        keys::constraint_count(shape),
                        t.elapsed().as_secs_f64()
                    ));
                    let w = batch(shape);
                    let public = w.public_inputs().to_vec();
                    self.proof(&format!("batch circuit B = {b}"), gpu, pk, BatchCircuit::new(w), public);
                }
                "chain20" => {
                    // 2^20 - 2 constraints and two instance variables: a 2^20 domain.
                    let chain = Chain((1 << 20) - 2);
                    let t = Instant::now();
                    let pk = Groth16::<Bn254>::circuit_specific_setup(
                        chain.clone(),
                        &mut rand_chacha::ChaCha8Rng::seed_from_u64(3),
                    )
                    .expect("setup")
                    .0;
                    self.notes.push(format!(
                        "synthetic circuit: 2^20 constraints, setup {:.1} s",
                        t.elapsed().as_secs_f64()
                    ));
                    let public = chain.public_inputs();
                    self.proof("synthetic 2^20 constraints", gpu, pk, chain, public);
                }
                other => panic!("unknown proof {other:?}: use b4, b16 or chain20"),
            }
        }
    }
}

fn main() {
    let quick = env_flag("MEDROLLUP_BENCH_QUICK");
    let runtimes: Runtimes =
        std::env::var("MEDROLLUP_GPU_RUNTIME").unwrap_or_else(|_| "auto".into()).parse().expect("runtime");
    let config =
        GpuConfig { runtimes, opencl_cpu: env_flag("MEDROLLUP_GPU_OPENCL_CPU"), ..GpuConfig::default() };
    let t = Instant::now();
    let gpu = GpuBackend::new(&config);
    let report = gpu.report();
    if gpu.device_count() == 0 {
        println!("no device to benchmark: {}", report.refused.join("; "));
        return;
    }
    let mut header = String::new();
    let _ = writeln!(
        header,
        "GPU backend vs CPU backend ({} CPU threads); devices ready in {:.1} s:",
        rayon::current_num_threads(),
        t.elapsed().as_secs_f64()
    );
    for d in &report.devices {
        let _ = writeln!(
            header,
            "- {} ({}, {:.0} GiB, {} compute units)",
            d.label,
            d.runtime,
            d.memory as f64 / (1u64 << 30) as f64,
            d.compute_units
        );
    }
    eprint!("{header}");
    let mut b = Bench {
        quick,
        mismatches: Vec::new(),
        gpu_runs: if quick { 3 } else { 7 },
        cpu_runs: if quick { 1 } else { 3 },
        rows: Vec::new(),
        notes: Vec::new(),
    };
    let cpu = CpuBackend::new();
    b.copies(&gpu);
    b.msms(&gpu, &cpu);
    b.ntts(&gpu, &cpu);
    if env_flag("MEDROLLUP_BENCH_VARIANTS") && runtimes != Runtimes::OpenCl {
        let portable = GpuBackend::new(&GpuConfig { cuda_portable: true, ..config.clone() });
        if portable.device_count() > 0 {
            let n = if quick { 1 << 14 } else { 1 << 20 };
            let bases = random_g1(n);
            let s = random_scalars(n, 1);
            let l = portable.load_g1(&bases).expect("load");
            let g = time(b.gpu_runs, true, || {
                let _ = std::hint::black_box(msm_g1(&portable, &l, &s).unwrap());
            });
            b.row(format!("G1 MSM 2^{}, portable arithmetic (no PTX)", n.ilog2()), None, g);
            let r = portable.time_resident_ntt(n.ilog2(), 7).expect("ntt").as_secs_f64();
            b.row(format!("NTT 2^{} resident, portable arithmetic (no PTX)", n.ilog2()), None, r);
        }
    }
    if !quick {
        b.proofs(&gpu);
    }
    let after = gpu.report();

    let mut out = header;
    let _ = writeln!(out, "\n| what | CPU backend ms | GPU ms | speed-up |\n|---|---|---|---|");
    for r in &b.rows {
        let (c, x) = match r.cpu_s {
            Some(c) => (format!("{:.2}", c * 1e3), format!("{:.1}x", c / r.gpu_s)),
            None => ("-".into(), "-".into()),
        };
        let _ = writeln!(out, "| {} | {c} | {:.3} | {x} |", r.what, r.gpu_s * 1e3);
    }
    let _ = writeln!(out);
    for n in &b.notes {
        let _ = writeln!(out, "- {n}");
    }
    let profile = GpuBackend::profile();
    if !profile.is_empty() {
        let _ = writeln!(
            out,
            "\nDriver phases (MEDROLLUP_GPU_PROFILE=1; each phase waits for the device):\n\n| phase | calls | total ms | ms per call |\n|---|---|---|---|"
        );
        for (name, calls, total) in profile {
            let ms = total.as_secs_f64() * 1e3;
            let _ = writeln!(out, "| {name} | {calls} | {ms:.1} | {:.3} |", ms / calls as f64);
        }
    }
    for d in &after.devices {
        let c = &d.counters;
        let _ = writeln!(
            out,
            "- {}: {} MSM calls, {} points, {} NTTs, busy {:.2} s, {} errors",
            d.label, c.msm_calls, c.msm_points, c.ntt_calls, c.busy_seconds, c.errors
        );
    }
    if after.cpu.fallbacks > 0 {
        let _ = writeln!(
            out,
            "- WARNING: {} pieces of work fell back to the CPU: {:?}",
            after.cpu.fallbacks, after.devices
        );
    }
    if b.mismatches.is_empty() {
        let _ = writeln!(out, "- every GPU result above equalled the CPU backend's");
    } else {
        let _ = writeln!(out, "- MISMATCHES: {}", b.mismatches.join("; "));
    }
    print!("{out}");
    if let Ok(path) = std::env::var("MEDROLLUP_BENCH_OUT") {
        std::fs::write(&path, &out).expect("write the report");
    }
}
