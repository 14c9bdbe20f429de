//! The GPU backend: the engine's conformance suites on OpenCL (POCL runs them
//! on the CPU in CI) and on CUDA, the NVRTC compile check, sharding over
//! logical devices, the fallbacks, and full proofs through the devices.
//!
//! A runtime that is missing skips its tests with the reason printed, unless
//! the environment says it must be there: `MEDROLLUP_REQUIRE_OPENCL=1` and
//! `MEDROLLUP_REQUIRE_NVRTC=1` (CI installs POCL and NVRTC and sets both),
//! `MEDROLLUP_REQUIRE_CUDA=1` (on a GPU machine).

use ark_bn254::{Bn254, Fr, G1Affine, G1Projective, G2Affine, G2Projective};
use ark_ec::{CurveGroup, VariableBaseMSM};
use ark_ff::{FftField, UniformRand};
use ark_groth16::Groth16;
use ark_snark::SNARK;
use medrollup_circuits::batch::BatchWitness;
use medrollup_circuits::circuit::BatchCircuit;
use medrollup_circuits::keys::{self, CircuitShape};
use medrollup_circuits::sample::batch;
use medrollup_prover::backend::{MsmBackend, NttDirection, msm_batch, msm_g1, ntt, qap_quotient};
use medrollup_prover::dual::DualBackend;
use medrollup_prover::gpu::{self, GpuBackend, GpuConfig, Runtimes};
use medrollup_prover::groth16::{LoadedKey, ProveError, prove};
use medrollup_prover::worker::{prepare_checked, prove_checked};
use medrollup_prover::{CpuBackend, NttBackend};
use std::sync::OnceLock;

fn required(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| v == "1")
}

/// A backend with the devices `config` finds, or why there is none (a
/// panic instead when `require` is set).
fn devices(config: GpuConfig, require: &str) -> Result<GpuBackend, String> {
    let b = GpuBackend::new(&config);
    if b.device_count() > 0 {
        return Ok(b);
    }
    let why = format!("no device admitted: {}", b.report().refused.join("; "));
    assert!(!required(require), "{require}=1 but {why}");
    Err(why)
}

fn opencl() -> Result<GpuBackend, String> {
    static B: OnceLock<Result<GpuBackend, String>> = OnceLock::new();
    B.get_or_init(|| devices(GpuConfig::opencl_any(), "MEDROLLUP_REQUIRE_OPENCL")).clone()
}

fn cuda() -> Result<GpuBackend, String> {
    static B: OnceLock<Result<GpuBackend, String>> = OnceLock::new();
    B.get_or_init(|| {
        devices(GpuConfig { runtimes: Runtimes::Cuda, ..GpuConfig::default() }, "MEDROLLUP_REQUIRE_CUDA")
    })
    .clone()
}

/// Every bases set precomputed (the default does it from 2^16 bases on).
fn opencl_precomputed() -> Result<GpuBackend, String> {
    static B: OnceLock<Result<GpuBackend, String>> = OnceLock::new();
    B.get_or_init(|| {
        devices(GpuConfig { precompute_min: 0, ..GpuConfig::opencl_any() }, "MEDROLLUP_REQUIRE_OPENCL")
    })
    .clone()
}

fn cuda_precomputed() -> Result<GpuBackend, String> {
    static B: OnceLock<Result<GpuBackend, String>> = OnceLock::new();
    B.get_or_init(|| {
        devices(
            GpuConfig { runtimes: Runtimes::Cuda, precompute_min: 0, ..GpuConfig::default() },
            "MEDROLLUP_REQUIRE_CUDA",
        )
    })
    .clone()
}

fn two_opencl() -> Result<GpuBackend, String> {
    devices(GpuConfig { logical_per_device: 2, ..GpuConfig::opencl_any() }, "MEDROLLUP_REQUIRE_OPENCL")
}

medrollup_prover::msm_conformance!(opencl_msm, try crate::opencl());
medrollup_prover::ntt_conformance!(opencl_ntt, try crate::opencl());
medrollup_prover::msm_conformance!(opencl_precomputed_msm, try crate::opencl_precomputed());
medrollup_prover::msm_conformance!(cuda_msm, try crate::cuda());
medrollup_prover::msm_conformance!(cuda_precomputed_msm, try crate::cuda_precomputed());
medrollup_prover::ntt_conformance!(cuda_ntt, try crate::cuda());

#[test]
fn nvrtc_compiles_the_cuda_dialect() {
    if !gpu::nvrtc_present() {
        assert!(
            !required("MEDROLLUP_REQUIRE_NVRTC"),
            "MEDROLLUP_REQUIRE_NVRTC=1 but libnvrtc cannot be loaded"
        );
        println!("skipped nvrtc_compiles_the_cuda_dialect: libnvrtc cannot be loaded");
        return;
    }
    let cache = tempfile::tempdir().unwrap();
    for arch in ["compute_90", "compute_80"] {
        let ptx = String::from_utf8(gpu::compile_kernels(false, arch, Some(cache.path())).unwrap()).unwrap();
        for k in gpu::source::KERNELS {
            assert!(ptx.contains(&format!(".entry {k}(")), "{arch}: kernel {k} is not in the PTX");
        }
        // The fast path is the one compiled: the carry-chain multiply-adds.
        assert!(ptx.contains("madc.hi.cc.u32"), "{arch}: no PTX carry chains");
        assert!(ptx.contains(&format!(".target sm_{}", &arch[8..])), "{arch}: wrong target");
    }
    // Cached by source and architecture: the second compilation is a read.
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 2);
    let again = gpu::compile_kernels(false, "compute_90", Some(cache.path())).unwrap();
    assert!(String::from_utf8(again).unwrap().contains(".entry ntt_pass("));
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 2);
    // A damaged cache file (cut short by a full disk, say) is compiled afresh
    // and written again, not loaded.
    let file = gpu::cache_file(cache.path(), false, "compute_90");
    let whole = std::fs::read(&file).unwrap();
    std::fs::write(&file, &whole[..whole.len() / 2]).unwrap();
    let afresh = gpu::compile_kernels(false, "compute_90", Some(cache.path())).unwrap();
    assert!(String::from_utf8(afresh).unwrap().contains(".entry ntt_pass("));
    assert_eq!(std::fs::read(&file).unwrap(), whole);
    // Through ptxas to Hopper machine code (what the driver would do with the
    // PTX): an ELF CUBIN.
    let cubin = gpu::compile_kernels(false, "sm_90", None).unwrap();
    assert_eq!(&cubin[..4], b"\x7fELF");
    // The portable arithmetic compiles too.
    let portable = String::from_utf8(gpu::compile_kernels(true, "compute_90", None).unwrap()).unwrap();
    assert!(portable.contains(".entry G2_bucket_acc("));
}

fn points_g1(n: usize) -> Vec<G1Affine> {
    let mut r = ark_std::test_rng();
    G1Projective::normalize_batch(&(0..n).map(|_| G1Projective::rand(&mut r)).collect::<Vec<_>>())
}

fn points_g2(n: usize) -> Vec<G2Affine> {
    let mut r = ark_std::test_rng();
    G2Projective::normalize_batch(&(0..n).map(|_| G2Projective::rand(&mut r)).collect::<Vec<_>>())
}

#[test]
fn sharding_spreads_a_proofs_msms_and_chains_over_two_devices() {
    let Some(b) = medrollup_prover::conformance::available(two_opencl(), "sharding") else { return };
    assert_eq!(b.device_count(), 2);
    let mut r = ark_std::test_rng();
    let n = 4096;
    let (ga, gb, g2) = (points_g1(n), points_g1(n), points_g2(n));
    let h: Vec<Fr> = (0..n).map(|_| Fr::rand(&mut r)).collect();
    let z: Vec<Fr> = (0..n).map(|_| Fr::rand(&mut r)).collect();
    let (la, lb, l2) = (b.load_g1(&ga).unwrap(), b.load_g1(&gb).unwrap(), b.load_g2(&g2).unwrap());

    // Five MSMs, as in a proof.
    let out = msm_batch(&b, &[(&la, &h), (&lb, &h), (&la, &z), (&lb, &z)], &[(&l2, &z)]).unwrap();
    let want = [(&ga, &h), (&gb, &h), (&ga, &z), (&gb, &z)].map(|(p, s)| G1Projective::msm(p, s).unwrap());
    for (k, w) in want.iter().enumerate() {
        assert_eq!(out.g1[k].0, *w, "job {k}");
    }
    assert_eq!(out.g2[0].0, G2Projective::msm(&g2, &z).unwrap());
    let report = b.report();
    for d in &report.devices {
        assert!(d.counters.msm_points > 0, "{} did no MSM work: {report:?}", d.label);
    }

    // One MSM, two devices: split by ranges, both take part.
    let before: Vec<u64> = b.report().devices.iter().map(|d| d.counters.msm_points).collect();
    assert_eq!(msm_g1(&b, &la, &h).unwrap(), want[0]);
    let after: Vec<u64> = b.report().devices.iter().map(|d| d.counters.msm_points).collect();
    assert!(after.iter().zip(&before).all(|(a, b)| a > b), "{before:?} -> {after:?}");

    // The quotient's three chains on both devices.
    let m = 1 << 9;
    let v: Vec<Vec<Fr>> = (0..3).map(|_| (0..m).map(|_| Fr::rand(&mut r)).collect()).collect();
    let got = qap_quotient(&b, v[0].clone(), v[1].clone(), v[2].clone()).unwrap();
    let want = qap_quotient(&CpuBackend::new(), v[0].clone(), v[1].clone(), v[2].clone()).unwrap();
    assert_eq!(got, want);
    let report = b.report();
    for d in &report.devices {
        assert!(d.counters.ntt_elements > 0, "{} did no NTT work: {report:?}", d.label);
        assert!(d.healthy && d.counters.errors == 0);
    }
    assert_eq!(report.cpu.fallbacks, 0);
}

#[test]
fn with_no_device_everything_runs_on_the_cpu() {
    let b = GpuBackend::new(&GpuConfig { runtimes: Runtimes::None, ..GpuConfig::default() });
    assert_eq!(b.device_count(), 0);
    assert_eq!(MsmBackend::name(&b), "cpu (no device)");
    let mut r = ark_std::test_rng();
    let g = points_g1(300);
    let s: Vec<Fr> = (0..300).map(|_| Fr::rand(&mut r)).collect();
    let l = b.load_g1(&g).unwrap();
    assert_eq!(msm_g1(&b, &l, &s).unwrap(), G1Projective::msm(&g, &s).unwrap());
    let mut v = s[..256].to_vec();
    let mut w = v.clone();
    ntt(&b, &mut v, NttDirection::Forward, Some(Fr::GENERATOR)).unwrap();
    ntt(&CpuBackend::new(), &mut w, NttDirection::Forward, Some(Fr::GENERATOR)).unwrap();
    assert_eq!(v, w);
    let report = b.report();
    assert_eq!(report.cpu.msm_points, 300);
    assert_eq!(report.cpu.ntt_elements, 256);
    // Not a fallback: there was never a device.
    assert_eq!(report.cpu.fallbacks, 0);
}

#[test]
fn missing_runtimes_are_refused_with_their_reason() {
    if gpu::nvrtc_present() && cuda().is_ok() {
        println!("skipped the no-CUDA half: this machine has CUDA");
    } else {
        let b = GpuBackend::new(&GpuConfig { runtimes: Runtimes::Cuda, ..GpuConfig::default() });
        assert_eq!(b.device_count(), 0);
        let refused = b.report().refused.join("; ");
        assert!(refused.starts_with("no CUDA: "), "{refused}");
    }
    // OpenCL CPU devices (POCL) are not used unless asked for.
    if let Ok(all) = opencl()
        && all.report().devices.iter().all(|d| d.label.contains("pthread") || d.label.contains("cpu"))
    {
        let b = GpuBackend::new(&GpuConfig { runtimes: Runtimes::OpenCl, ..GpuConfig::default() });
        assert_eq!(b.device_count(), 0);
        assert!(b.report().refused.iter().any(|r| r.contains("a CPU device")), "{:?}", b.report().refused);
    }
}

fn proof_setup() -> &'static (ark_groth16::ProvingKey<Bn254>, BatchWitness) {
    static S: OnceLock<(ark_groth16::ProvingKey<Bn254>, BatchWitness)> = OnceLock::new();
    S.get_or_init(|| {
        let shape = CircuitShape { batch_size: 1, levels: 4 };
        (keys::setup(shape, Some(5)).unwrap(), batch(shape))
    })
}

/// A full proof through `backend`: bit for bit ark-groth16's with the same
/// randomness, and accepted by its verifier.
fn proves_like_ark_groth16<B: MsmBackend + NttBackend>(backend: &B) {
    let (pk, w) = proof_setup();
    let key = LoadedKey::load(backend, pk.clone()).unwrap();
    let mut rng = ark_std::test_rng();
    let (r, s) = (Fr::rand(&mut rng), Fr::rand(&mut rng));
    let (ours, _) = prove(backend, &key, BatchCircuit::new(w.clone()), r, s).unwrap();
    let theirs =
        Groth16::<Bn254>::create_proof_with_reduction(BatchCircuit::new(w.clone()), pk, r, s).unwrap();
    assert_eq!(ours, theirs);
    let pvk = keys::prepare(&pk.vk);
    assert!(Groth16::<Bn254>::verify_with_processed_vk(&pvk, &w.public_inputs().to_vec(), &ours).unwrap());
}

#[test]
fn a_batch_proof_through_opencl_is_ark_groth16s() {
    let Some(b) = medrollup_prover::conformance::available(opencl(), "proof through OpenCL") else { return };
    let before = b.report();
    proves_like_ark_groth16(&b);
    let after = b.report();
    // All of it on the device.
    assert!(after.devices[0].counters.msm_points > before.devices[0].counters.msm_points, "{after:?}");
    assert!(after.devices[0].counters.ntt_elements > before.devices[0].counters.ntt_elements, "{after:?}");
    assert_eq!(after.cpu.fallbacks, 0, "{after:?}");
    assert_eq!(after.cpu.msm_points, before.cpu.msm_points, "{after:?}");
    // Dual mode: the CPU backend and the device, every result compared
    // (the device's own: nothing fell back to the CPU).
    let dual = DualBackend::new(CpuBackend::new(), b.clone());
    proves_like_ark_groth16(&dual);
    assert!(dual.compared() >= 6, "{} comparisons", dual.compared());
    let dual_after = b.report();
    assert_eq!(dual_after.cpu.fallbacks, 0, "{dual_after:?}");
    assert!(dual_after.devices[0].counters.msm_points > after.devices[0].counters.msm_points);
}

#[test]
fn a_batch_proof_through_cuda_is_ark_groth16s() {
    let Some(b) = medrollup_prover::conformance::available(cuda(), "proof through CUDA") else { return };
    proves_like_ark_groth16(&b);
    let report = b.report();
    assert!(report.devices.iter().all(|d| d.healthy), "{report:?}");
    assert_eq!(report.cpu.fallbacks, 0, "{report:?}");
    // Dual mode compares the device's own results: nothing fell back.
    let dual = DualBackend::new(CpuBackend::new(), b.clone());
    proves_like_ark_groth16(&dual);
    assert!(dual.compared() >= 6, "{} comparisons", dual.compared());
    let after = b.report();
    assert_eq!(after.cpu.fallbacks, 0, "{after:?}");
    assert!(after.devices[0].counters.msm_points > report.devices[0].counters.msm_points, "{after:?}");
}

/// Device 0 of two runs short of resources (`fault`) while sorting its first
/// MSM's digits: the batch is right either way, and the counters say what
/// happened to the device.
fn short_of_resources_mid_msm(fault: gpu::Fault, what: &str) -> Option<gpu::GpuReport> {
    let b = medrollup_prover::conformance::available(two_opencl(), what)?;
    let mut r = ark_std::test_rng();
    let n = 600;
    let (g, g2) = (points_g1(n), points_g2(n));
    let s: Vec<Fr> = (0..n).map(|_| Fr::rand(&mut r)).collect();
    let (l, l2) = (b.load_g1(&g).unwrap(), b.load_g2(&g2).unwrap());
    b.inject_fault(0, 3, fault);
    let out = msm_batch(&b, &[(&l, &s), (&l, &s[..n / 2])], &[(&l2, &s)]).unwrap();
    assert_eq!(out.g1[0].0, G1Projective::msm(&g, &s).unwrap());
    assert_eq!(out.g1[1].0, G1Projective::msm(&g[..n / 2], &s[..n / 2]).unwrap());
    assert_eq!(out.g2[0].0, G2Projective::msm(&g2, &s).unwrap());
    let before = b.report();
    // Another batch: device 0 takes work again only if it stayed in service.
    let again = msm_batch(&b, &[(&l, &s)], &[(&l2, &s)]).unwrap();
    assert_eq!(again.g1[0].0, out.g1[0].0);
    let after = b.report();
    let d0 = &after.devices[0];
    assert_eq!(d0.counters.errors, 1, "{after:?}");
    assert!(d0.counters.fallbacks >= 1 && after.cpu.fallbacks >= 1, "{after:?}");
    let worked = |r: &gpu::GpuReport| r.devices[0].counters.msm_points;
    assert_eq!(worked(&after) > worked(&before), d0.healthy, "{after:?}");
    Some(after)
}

#[test]
fn a_device_briefly_short_of_resources_stays_in_service() {
    if let Some(r) = short_of_resources_mid_msm(gpu::Fault::ShortOfResources, "brief shortage") {
        assert!(r.devices[0].healthy, "it passed its known-answer test again: {r:?}");
    }
}

#[test]
fn a_device_short_of_resources_for_good_is_taken_out_of_service() {
    if let Some(r) = short_of_resources_mid_msm(gpu::Fault::ShortOfResourcesAlways, "lasting shortage") {
        assert!(!r.devices[0].healthy, "it failed its known-answer test again: {r:?}");
    }
}

#[test]
fn a_device_faulting_mid_quotient_chain_is_finished_on_the_cpu() {
    for fault in [gpu::Fault::Fails, gpu::Fault::Panics] {
        let Some(b) = medrollup_prover::conformance::available(two_opencl(), "failure mid-chain") else {
            return;
        };
        let mut r = ark_std::test_rng();
        let m = 1 << 9;
        let v: Vec<Vec<Fr>> = (0..3).map(|_| (0..m).map(|_| Fr::rand(&mut r)).collect()).collect();
        // Device 0 takes chains a and c (device 1 takes b), and faults a
        // few launches into the first of them, before anything is written
        // over its input: the CPU does both of its chains.
        b.inject_fault(0, 3, fault);
        let got = qap_quotient(&b, v[0].clone(), v[1].clone(), v[2].clone()).unwrap();
        let want = qap_quotient(&CpuBackend::new(), v[0].clone(), v[1].clone(), v[2].clone()).unwrap();
        assert_eq!(got, want, "{fault:?}");
        let report = b.report();
        let (d0, d1) = (&report.devices[0], &report.devices[1]);
        assert!(
            !d0.healthy && d0.counters.errors == 1 && d0.counters.ntt_calls == 0,
            "{fault:?}: {report:?}"
        );
        assert!(d1.healthy && d1.counters.ntt_elements > 0, "{fault:?}: {report:?}");
        assert_eq!(report.cpu.ntt_elements, 2 * 2 * m as u64, "two chains of two NTTs: {report:?}");
    }
}

#[test]
fn a_device_failing_mid_msm_is_finished_on_the_cpu() {
    let Some(b) = medrollup_prover::conformance::available(two_opencl(), "failure mid-MSM") else { return };
    let mut r = ark_std::test_rng();
    let n = 3000;
    let (g, g2) = (points_g1(n), points_g2(n));
    let s: Vec<Fr> = (0..n).map(|_| Fr::rand(&mut r)).collect();
    let (l, l2) = (b.load_g1(&g).unwrap(), b.load_g2(&g2).unwrap());
    // Device 0 fails in the middle of sorting its first MSM's digits.
    b.inject_fault(0, 3, gpu::Fault::Fails);
    let out = msm_batch(&b, &[(&l, &s), (&l, &s[..n / 2])], &[(&l2, &s)]).unwrap();
    assert_eq!(out.g1[0].0, G1Projective::msm(&g, &s).unwrap());
    assert_eq!(out.g1[1].0, G1Projective::msm(&g[..n / 2], &s[..n / 2]).unwrap());
    assert_eq!(out.g2[0].0, G2Projective::msm(&g2, &s).unwrap());
    let report = b.report();
    let d0 = &report.devices[0];
    assert!(!d0.healthy && d0.counters.errors == 1 && d0.counters.fallbacks >= 1, "{report:?}");
    assert!(report.devices[1].healthy && report.devices[1].counters.msm_points > 0, "{report:?}");
    assert!(report.cpu.msm_points > 0 && report.cpu.fallbacks >= 1, "{report:?}");
}

#[test]
fn a_device_giving_wrong_answers_is_caught_by_the_proof_check_and_the_proof_made_on_the_cpu() {
    let fresh = devices(GpuConfig::opencl_any(), "MEDROLLUP_REQUIRE_OPENCL");
    let Some(b) = medrollup_prover::conformance::available(fresh, "wrong answers") else { return };
    let (pk, w) = proof_setup();
    let pvk = keys::prepare(&pk.vk);
    let verifies = |p: &ark_groth16::Proof<Bn254>| {
        Groth16::<Bn254>::verify_with_processed_vk(&pvk, &w.public_inputs().to_vec(), p).unwrap()
    };
    let shape = CircuitShape { batch_size: 1, levels: 4 };
    // A key that is not the circuit's fails on the device and on the CPU:
    // the device is not blamed.
    let mut other = pk.clone();
    other.vk.gamma_abc_g1[0] = (other.vk.gamma_abc_g1[0] + other.vk.alpha_g1).into_affine();
    let wrong_key = LoadedKey::load(&b, other).unwrap();
    let e = prepare_checked(&b, &wrong_key, shape).unwrap_err();
    assert!(matches!(e, ProveError::KeyMismatch(_)), "{e}");
    let r = b.report();
    assert!(r.devices[0].healthy && r.devices[0].counters.errors == 0, "{r:?}");
    // The device now returns wrong values without an error: a proof made
    // with it, unchecked, does not verify, and the device seems healthy.
    let key = LoadedKey::load(&b, pk.clone()).unwrap();
    prepare_checked(&b, &key, shape).unwrap();
    b.inject_corruption(0);
    let mut rng = ark_std::test_rng();
    let (unchecked, _) =
        prove(&b, &key, BatchCircuit::new(w.clone()), Fr::rand(&mut rng), Fr::rand(&mut rng)).unwrap();
    assert!(!verifies(&unchecked));
    assert!(b.report().devices[0].healthy);
    // Checked, the proof is made again on the CPU and verifies; the device
    // is out of service, with the error counted.
    let (proof, _) = prove_checked(&b, &key, || BatchCircuit::new(w.clone())).unwrap();
    assert!(verifies(&proof));
    let r = b.report();
    assert!(!r.devices[0].healthy && r.devices[0].counters.errors == 1, "{r:?}");
    assert_eq!(b.device_count(), 0);
    let (next, _) = prove_checked(&b, &key, || BatchCircuit::new(w.clone())).unwrap();
    assert!(verifies(&next));
    // Still wrong, it fails its known-answer test: it stays out.
    let label = b.report().devices[0].label.clone();
    assert_eq!(b.readmit(), gpu::Readmission { back: vec![], still_out: vec![label] });
    assert_eq!(b.device_count(), 0);
}

/// A proof on two devices of which device 0 fails as `fault` says in its
/// first quotient chain, after that chain's result was written over its
/// input: unchecked, the proof fails with the device named; checked (as the
/// worker proves), it is made again without the device and verifies.
fn a_proof_survives_a_device_that_loses_its_input(fault: gpu::Fault, launches: usize, says: &str) {
    let Some(b) = medrollup_prover::conformance::available(two_opencl(), "lost input") else { return };
    let (pk, w) = proof_setup();
    let key = LoadedKey::load(&b, pk.clone()).unwrap();
    prepare_checked(&b, &key, CircuitShape { batch_size: 1, levels: 4 }).unwrap();
    b.inject_fault(0, launches, fault);
    let mut rng = ark_std::test_rng();
    let e =
        prove(&b, &key, BatchCircuit::new(w.clone()), Fr::rand(&mut rng), Fr::rand(&mut rng)).unwrap_err();
    let label = b.report().devices[0].label.clone();
    assert!(e.to_string().contains(&label) && e.to_string().contains(says), "{e}");
    assert_eq!(b.device_count(), 1);
    // Device 0 is back, and fails again; the worker's proof is made anyway.
    b.inject_fault(0, usize::MAX, fault);
    assert_eq!(b.readmit().back, vec![label]);
    b.inject_fault(0, launches, fault);
    let (proof, _) = prove_checked(&b, &key, || BatchCircuit::new(w.clone())).unwrap();
    let pvk = keys::prepare(&pk.vk);
    assert!(Groth16::<Bn254>::verify_with_processed_vk(&pvk, &w.public_inputs().to_vec(), &proof).unwrap());
    let r = b.report();
    assert!(!r.devices[0].healthy && r.devices[0].counters.errors == 2, "{r:?}");
    assert!(r.devices[1].healthy && r.devices[1].counters.errors == 0, "{r:?}");
}

#[test]
fn a_device_losing_its_output_over_the_input_costs_the_worker_one_more_proof() {
    a_proof_survives_a_device_that_loses_its_input(
        gpu::Fault::LosesOutput,
        0,
        "failed while copying its result back, over the input",
    );
}

#[test]
fn a_device_panicking_in_the_copy_over_the_input_costs_the_worker_one_more_proof() {
    a_proof_survives_a_device_that_loses_its_input(
        gpu::Fault::PanicsInCopy,
        0,
        "failed while copying its result back, over the input: panicked",
    );
}

#[test]
fn a_device_panicking_mid_proof_is_finished_on_the_cpu() {
    // The panic comes before anything is written over the chain's input.
    device_0_faulting_mid_proof_is_finished_on_the_cpu(gpu::Fault::Panics, "panic mid-proof");
}

#[test]
fn a_device_out_of_service_is_back_once_it_passes_its_known_answer_test_again() {
    let Some(b) = medrollup_prover::conformance::available(two_opencl(), "re-admission") else { return };
    b.inject_fault(0, 7, gpu::Fault::Fails);
    proves_like_ark_groth16(&b);
    assert_eq!(b.device_count(), 1, "device 0 out: {:?}", b.report());
    // While the fault lasts, testing it again changes nothing: opened
    // afresh, a broken device is still broken.
    let label = b.report().devices[0].label.clone();
    assert_eq!(b.readmit(), gpu::Readmission { back: vec![], still_out: vec![label.clone()] });
    assert_eq!(b.device_count(), 1);
    assert_eq!(b.report().devices[0].counters.reopened, 1);
    // The fault is over: back in service, its error still counted, and it works.
    b.inject_fault(0, usize::MAX, gpu::Fault::Fails);
    assert_eq!(b.readmit().back, vec![label]);
    let before = b.report();
    assert!(before.devices[0].healthy && before.devices[0].counters.errors == 1, "{before:?}");
    proves_like_ark_groth16(&b);
    let after = b.report();
    let worked = |r: &gpu::GpuReport| r.devices[0].counters.msm_points + r.devices[0].counters.ntt_elements;
    assert!(worked(&after) > worked(&before), "{after:?}");
}

#[test]
fn a_device_whose_context_is_lost_mid_proof_is_back_once_opened_afresh() {
    let what = "lost context mid-proof";
    device_0_faulting_mid_proof_is_finished_on_the_cpu(gpu::Fault::LosesContext, what);
    let Some(b) = medrollup_prover::conformance::available(two_opencl(), what) else { return };
    b.inject_fault(0, 7, gpu::Fault::LosesContext);
    proves_like_ark_groth16(&b);
    assert_eq!(b.device_count(), 1, "device 0 out: {:?}", b.report());
    // The fault is not cleared by hand: the new context is what brings it back.
    let label = b.report().devices[0].label.clone();
    assert_eq!(b.readmit().back, vec![label]);
    let before = b.report();
    assert_eq!(before.devices[0].counters.reopened, 1, "{before:?}");
    proves_like_ark_groth16(&b);
    let after = b.report();
    let worked = |r: &gpu::GpuReport| r.devices[0].counters.msm_points + r.devices[0].counters.ntt_elements;
    assert!(worked(&after) > worked(&before), "{after:?}");
    assert_eq!(after.devices[0].counters.errors, 1, "{after:?}");
}

/// On a CUDA device (skipped without one; the lost-context tests above,
/// with an injected fault, are its CPU-runnable twins): a kernel that traps
/// loses the device's context for real; the next call goes to the CPU, and
/// readmission brings the device back in a new context, without the old
/// one's memory kept. CUDA's guides say a crashed kernel's process may need
/// relaunching: this says whether a new context is enough.
/// `scripts/gpu-check run` runs it alone (its name has no "cuda"), so that
/// the other tests' results stand whatever a lost context touches.
#[test]
fn a_gpu_whose_context_is_really_lost_is_back_once_opened_afresh() {
    let fresh =
        devices(GpuConfig { runtimes: Runtimes::Cuda, ..GpuConfig::default() }, "MEDROLLUP_REQUIRE_CUDA");
    let Some(b) = medrollup_prover::conformance::available(fresh, "a real lost context") else { return };
    let mut r = ark_std::test_rng();
    // Large enough (precomputed, hundreds of MB) that memory the old context
    // kept would show in the driver's free memory.
    let n = 1 << 18;
    let step = G1Projective::rand(&mut r);
    let mut acc = G1Projective::rand(&mut r);
    let g = G1Projective::normalize_batch(
        &(0..n)
            .map(|_| {
                acc += step;
                acc
            })
            .collect::<Vec<_>>(),
    );
    let s: Vec<Fr> = (0..n).map(|_| Fr::rand(&mut r)).collect();
    let want = G1Projective::msm(&g, &s).unwrap();
    let l = b.load_g1(&g).unwrap();
    assert_eq!(msm_g1(&b, &l, &s).unwrap(), want);
    let held = b.report().devices[0].memory_used;
    let (free_before, _) = b.driver_memory(0).expect("CUDA says its free memory");
    b.lose_context(0).unwrap();
    // The next call fails on the device: the CPU's answer, the device out.
    assert_eq!(msm_g1(&b, &l, &s).unwrap(), want);
    let out = b.report();
    assert!(!out.devices[0].healthy && out.devices[0].counters.errors == 1, "{out:?}");
    let label = out.devices[0].label.clone();
    assert_eq!(b.readmit().back, vec![label], "{:?}", b.report());
    let before = b.report();
    assert_eq!(before.devices[0].counters.reopened, 1, "{before:?}");
    assert_eq!(before.devices[0].memory_used, held, "the set loaded once again");
    assert_eq!(msm_g1(&b, &l, &s).unwrap(), want);
    let (free_after, _) = b.driver_memory(0).unwrap();
    println!(
        "set held {held} bytes; driver free memory before the loss {free_before}, after readmission {free_after}"
    );
    assert!(
        free_after + held / 2 >= free_before,
        "the old context's memory is kept: {free_before} bytes free before, {free_after} after, the set {held}"
    );
    let mut v: Vec<Fr> = (0..1 << 12).map(|_| Fr::rand(&mut r)).collect();
    let mut w = v.clone();
    ntt(&b, &mut v, NttDirection::Forward, None).unwrap();
    ntt(&CpuBackend::new(), &mut w, NttDirection::Forward, None).unwrap();
    assert_eq!(v, w);
    let after = b.report();
    let d = |r: &gpu::GpuReport| (r.devices[0].counters.msm_points, r.devices[0].counters.ntt_elements);
    assert!(d(&after).0 > d(&before).0 && d(&after).1 > d(&before).1, "{after:?}");
    assert_eq!(
        (after.cpu.msm_points, after.cpu.ntt_elements),
        (before.cpu.msm_points, before.cpu.ntt_elements)
    );
}

#[test]
fn a_device_failing_mid_proof_is_finished_on_the_cpu() {
    device_0_faulting_mid_proof_is_finished_on_the_cpu(gpu::Fault::Fails, "failure mid-proof");
}

/// Of two devices, device 0 faults as `fault` says a few launches into the
/// proof (in the MSMs over the witness, which go to the devices first: see
/// `a_device_faulting_mid_quotient_chain_is_finished_on_the_cpu` for a
/// chain): the proof is ark-groth16's, finished on the CPU and device 1, and
/// the next one avoids device 0.
fn device_0_faulting_mid_proof_is_finished_on_the_cpu(fault: gpu::Fault, what: &str) {
    let Some(b) = medrollup_prover::conformance::available(two_opencl(), what) else { return };
    b.inject_fault(0, 7, fault);
    proves_like_ark_groth16(&b);
    let report = b.report();
    let d0 = &report.devices[0];
    assert!(!d0.healthy && d0.counters.errors == 1 && d0.counters.fallbacks >= 1, "{report:?}");
    assert!(report.devices[1].healthy, "{report:?}");
    assert!(report.cpu.fallbacks >= 1, "{report:?}");
    // The next proof avoids the failed device.
    proves_like_ark_groth16(&b);
    assert_eq!(b.device_count(), 1);
}
