//! Conformance suites: one per backend trait, instantiated for a backend with
//! one line, comparing it with arkworks (the naive reference) on random inputs
//! and edge cases.
//!
//! ```text
//! medrollup_prover::msm_conformance!(cpu_msm, medrollup_prover::CpuBackend::new());
//! medrollup_prover::ntt_conformance!(cpu_ntt, medrollup_prover::CpuBackend::new());
//! ```
//!
//! A backend that may be missing on a machine (a device) is given as
//! `try EXPR`, where `EXPR` is a `Result<Backend, String>`: each test then
//! prints the reason and passes when the backend is not there. The expression
//! is evaluated inside the suite's module: name things from the crate root.

/// The backend of a suite, or the printed reason why the test is skipped.
pub fn available<B>(backend: Result<B, String>, test: &str) -> Option<B> {
    match backend {
        Ok(b) => Some(b),
        Err(why) => {
            println!("skipped {test}: {why}");
            None
        }
    }
}

/// MSM conformance tests for a backend expression `$backend` (or `try $backend`).
#[macro_export]
macro_rules! msm_conformance {
    ($name:ident, try $backend:expr) => {
        $crate::msm_conformance!(@suite $name, $backend);
    };
    ($name:ident, $backend:expr) => {
        $crate::msm_conformance!(@suite $name, Ok::<_, String>($backend));
    };
    (@suite $name:ident, $backend:expr) => {
        mod $name {
            use ark_bn254::{Fr, G1Affine, G1Projective, G2Affine, G2Projective};
            use ark_ec::{AffineRepr, CurveGroup, VariableBaseMSM};
            use ark_ff::{PrimeField, UniformRand, Zero};
            use $crate::backend::{BackendError, MsmBackend, msm_batch, msm_g1, msm_g2};

            fn rng() -> impl ark_std::rand::Rng {
                ark_std::test_rng()
            }

            fn points_g1(n: usize) -> Vec<G1Affine> {
                let mut r = rng();
                let p: Vec<G1Projective> = (0..n).map(|_| G1Projective::rand(&mut r)).collect();
                G1Projective::normalize_batch(&p)
            }

            fn points_g2(n: usize) -> Vec<G2Affine> {
                let mut r = rng();
                let p: Vec<G2Projective> = (0..n).map(|_| G2Projective::rand(&mut r)).collect();
                G2Projective::normalize_batch(&p)
            }

            fn check_g1<B: MsmBackend>(b: &B, bases: &[G1Affine], scalars: &[Fr]) {
                let loaded = b.load_g1(bases).unwrap();
                let got = msm_g1(b, &loaded, scalars).unwrap();
                let want = G1Projective::msm(&bases[..scalars.len()], scalars).unwrap();
                assert_eq!(got.into_affine(), want.into_affine(), "n = {}", scalars.len());
            }

            #[test]
            fn g1_random_sizes() {
                let Some(b) = $crate::conformance::available($backend, "g1_random_sizes") else { return };
                let mut r = rng();
                for n in [0usize, 1, 2, 3, 31, 32, 100, 1000, 4096, 4099] {
                    let bases = points_g1(n);
                    let scalars: Vec<Fr> = (0..n).map(|_| Fr::rand(&mut r)).collect();
                    check_g1(&b, &bases, &scalars);
                }
            }

            #[test]
            fn g1_edge_cases() {
                let Some(b) = $crate::conformance::available($backend, "g1_edge_cases") else { return };
                let n = 600;
                let mut bases = points_g1(n);
                let mut r = rng();
                // points at infinity and repeated points
                for i in (0..n).step_by(7) {
                    bases[i] = G1Affine::identity();
                }
                for i in (1..n).step_by(5) {
                    bases[i] = bases[0];
                }
                let zeros = vec![Fr::zero(); n];
                let ones = vec![Fr::from(1u64); n];
                let max = vec![-Fr::from(1u64); n];
                let small: Vec<Fr> = (0..n as u64).map(|i| Fr::from(i % 4)).collect();
                let mixed: Vec<Fr> =
                    (0..n).map(|i| if i % 3 == 0 { Fr::zero() } else { Fr::rand(&mut r) }).collect();
                let all_bits: Vec<Fr> = (0..n)
                    .map(|_| Fr::from_bigint(<Fr as PrimeField>::MODULUS_MINUS_ONE_DIV_TWO).unwrap())
                    .collect();
                // P and -P meeting in one bucket cancel; P and P double.
                let alternating: Vec<Fr> =
                    (0..n).map(|i| if i % 2 == 0 { Fr::from(1u64) } else { -Fr::from(1u64) }).collect();
                for scalars in [&zeros, &ones, &max, &small, &mixed, &all_bits, &alternating] {
                    check_g1(&b, &bases, scalars);
                }
                // fewer scalars than bases
                check_g1(&b, &bases, &mixed[..n / 2]);
                // one bucket holding nearly every point (a witness of ones):
                // summed level after level
                let skewed = points_g1(4096);
                let mut ones = vec![Fr::from(1u64); 4096];
                ones[17] = Fr::rand(&mut r);
                check_g1(&b, &skewed, &ones);
            }

            #[test]
            fn g1_too_many_scalars_is_an_error() {
                let Some(b) = $crate::conformance::available($backend, "g1_too_many_scalars_is_an_error") else { return };
                let loaded = b.load_g1(&points_g1(3)).unwrap();
                let err = msm_g1(&b, &loaded, &[Fr::from(1u64); 4]).unwrap_err();
                assert_eq!(err, BackendError::TooManyScalars { scalars: 4, bases: 3 });
            }

            #[test]
            fn g2_random_and_edges() {
                let Some(b) = $crate::conformance::available($backend, "g2_random_and_edges") else { return };
                let mut r = rng();
                for n in [0usize, 1, 5, 257, 1100] {
                    let mut bases = points_g2(n);
                    if n > 2 {
                        bases[1] = G2Affine::identity();
                        bases[2] = bases[0];
                    }
                    let mut scalars: Vec<Fr> = (0..n).map(|_| Fr::rand(&mut r)).collect();
                    if n > 4 {
                        scalars[3] = Fr::zero();
                        scalars[4] = -Fr::from(1u64);
                    }
                    let loaded = b.load_g2(&bases).unwrap();
                    let got = msm_g2(&b, &loaded, &scalars).unwrap();
                    let want = G2Projective::msm(&bases, &scalars).unwrap();
                    assert_eq!(got.into_affine(), want.into_affine(), "n = {n}");
                }
            }

            #[test]
            fn batch_equals_its_msms() {
                // A proof's shape: MSMs over their own scalars and three over
                // one shared vector (A, B in G1, B in G2).
                let Some(b) = $crate::conformance::available($backend, "batch_equals_its_msms") else { return };
                let mut r = rng();
                let (g1a, g1b, g2) = (points_g1(3000), points_g1(2100), points_g2(2100));
                let h: Vec<Fr> = (0..3000).map(|_| Fr::rand(&mut r)).collect();
                let z: Vec<Fr> = (0..2100).map(|i| if i % 2 == 0 { Fr::from(1u64) } else { Fr::rand(&mut r) }).collect();
                let (la, lb, l2) = (b.load_g1(&g1a).unwrap(), b.load_g1(&g1b).unwrap(), b.load_g2(&g2).unwrap());
                let out = msm_batch(&b, &[(&la, &h), (&la, &z), (&lb, &z)], &[(&l2, &z)]).unwrap();
                let want = [
                    G1Projective::msm(&g1a, &h).unwrap(),
                    G1Projective::msm(&g1a[..2100], &z).unwrap(),
                    G1Projective::msm(&g1b, &z).unwrap(),
                ];
                for (k, w) in want.iter().enumerate() {
                    assert_eq!(out.g1[k].0.into_affine(), w.into_affine(), "G1 job {k}");
                }
                assert_eq!(out.g2[0].0.into_affine(), G2Projective::msm(&g2, &z).unwrap().into_affine());
                let err = msm_batch(&b, &[(&lb, &h)], &[]).unwrap_err();
                assert_eq!(err, BackendError::TooManyScalars { scalars: 3000, bases: 2100 });
            }
        }
    };
}

/// NTT conformance tests for a backend expression `$backend` (or `try $backend`).
#[macro_export]
macro_rules! ntt_conformance {
    ($name:ident, try $backend:expr) => {
        $crate::ntt_conformance!(@suite $name, $backend);
    };
    ($name:ident, $backend:expr) => {
        $crate::ntt_conformance!(@suite $name, Ok::<_, String>($backend));
    };
    (@suite $name:ident, $backend:expr) => {
        mod $name {
            use ark_bn254::Fr;
            use ark_ff::{FftField, Field, One, UniformRand, Zero};
            use ark_poly::{EvaluationDomain, Radix2EvaluationDomain};
            use $crate::backend::{BackendError, NttDirection, ntt, qap_quotient};

            #[test]
            fn forward_inverse_coset_match_arkworks() {
                let Some(b) = $crate::conformance::available($backend, "forward_inverse_coset_match_arkworks") else { return };
                let mut r = ark_std::test_rng();
                for log in 0..=12u32 {
                    let n = 1usize << log;
                    let d = Radix2EvaluationDomain::<Fr>::new(n).unwrap();
                    let coeffs: Vec<Fr> = (0..n).map(|_| Fr::rand(&mut r)).collect();
                    let mut v = coeffs.clone();
                    ntt(&b, &mut v, NttDirection::Forward, None).unwrap();
                    assert_eq!(v, d.fft(&coeffs), "forward, n = {n}");
                    ntt(&b, &mut v, NttDirection::Inverse, None).unwrap();
                    assert_eq!(v, coeffs, "inverse, n = {n}");
                    let coset = d.get_coset(Fr::GENERATOR).unwrap();
                    let mut w = coeffs.clone();
                    ntt(&b, &mut w, NttDirection::Forward, Some(Fr::GENERATOR)).unwrap();
                    assert_eq!(w, coset.fft(&coeffs), "coset forward, n = {n}");
                    ntt(&b, &mut w, NttDirection::Inverse, Some(Fr::GENERATOR)).unwrap();
                    assert_eq!(w, coeffs, "coset inverse, n = {n}");
                }
            }

            #[test]
            fn edge_values() {
                let Some(b) = $crate::conformance::available($backend, "edge_values") else { return };
                let n = 1 << 10;
                let d = Radix2EvaluationDomain::<Fr>::new(n).unwrap();
                for v in [vec![Fr::zero(); n], vec![Fr::one(); n], vec![-Fr::one(); n]] {
                    let mut w = v.clone();
                    ntt(&b, &mut w, NttDirection::Forward, None).unwrap();
                    assert_eq!(w, d.fft(&v));
                }
            }

            #[test]
            fn quotient_matches_arkworks_domains() {
                let Some(b) = $crate::conformance::available($backend, "quotient_matches_arkworks_domains") else { return };
                let mut r = ark_std::test_rng();
                for log in [0u32, 1, 5, 11] {
                    let n = 1usize << log;
                    let d = Radix2EvaluationDomain::<Fr>::new(n).unwrap();
                    let coset = d.get_coset(Fr::GENERATOR).unwrap();
                    let v: Vec<Vec<Fr>> = (0..3).map(|_| (0..n).map(|_| Fr::rand(&mut r)).collect()).collect();
                    let evals: Vec<Vec<Fr>> = v.iter().map(|x| coset.fft(&d.ifft(x))).collect();
                    let z_inv = (Fr::GENERATOR.pow([n as u64]) - Fr::one()).inverse().unwrap();
                    let num: Vec<Fr> =
                        (0..n).map(|i| (evals[0][i] * evals[1][i] - evals[2][i]) * z_inv).collect();
                    let want = coset.ifft(&num);
                    let got = qap_quotient(&b, v[0].clone(), v[1].clone(), v[2].clone()).unwrap();
                    assert_eq!(got, want, "n = {n}");
                }
            }

            #[test]
            fn bad_sizes_are_errors() {
                let Some(b) = $crate::conformance::available($backend, "bad_sizes_are_errors") else { return };
                let mut v = vec![Fr::from(1u64); 6];
                assert_eq!(ntt(&b, &mut v, NttDirection::Forward, None), Err(BackendError::NotPowerOfTwo(6)));
                let mut empty: Vec<Fr> = vec![];
                assert_eq!(
                    ntt(&b, &mut empty, NttDirection::Forward, None),
                    Err(BackendError::NotPowerOfTwo(0))
                );
                let e = qap_quotient(&b, vec![Fr::zero(); 4], vec![Fr::zero(); 4], vec![Fr::zero(); 2]).unwrap_err();
                assert_eq!(e, BackendError::LengthMismatch { a: 4, b: 4, c: 2 });
            }
        }
    };
}
