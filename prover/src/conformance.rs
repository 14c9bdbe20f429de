//! Conformance suites: one per backend trait, instantiated for a backend with
//! one line, comparing it with arkworks (the naive reference) on random inputs
//! and edge cases.
//!
//! ```text
//! medrollup_prover::msm_conformance!(cpu_msm, medrollup_prover::CpuBackend::new());
//! medrollup_prover::ntt_conformance!(cpu_ntt, medrollup_prover::CpuBackend::new());
//! ```

/// MSM conformance tests for a backend expression `$backend`.
#[macro_export]
macro_rules! msm_conformance {
    ($name:ident, $backend:expr) => {
        mod $name {
            use ark_bn254::{Fr, G1Affine, G1Projective, G2Affine, G2Projective};
            use ark_ec::{AffineRepr, CurveGroup, VariableBaseMSM};
            use ark_ff::{PrimeField, UniformRand, Zero};
            use $crate::backend::{BackendError, MsmBackend, msm_g1, msm_g2};

            fn rng() -> impl ark_std::rand::Rng {
                ark_std::test_rng()
            }

            fn points_g1(n: usize) -> Vec<G1Affine> {
                let mut r = rng();
                let p: Vec<G1Projective> = (0..n).map(|_| G1Projective::rand(&mut r)).collect();
                G1Projective::normalize_batch(&p)
            }

            fn check_g1(bases: &[G1Affine], scalars: &[Fr]) {
                let b = $backend;
                let loaded = b.load_g1(bases).unwrap();
                let got = msm_g1(&b, &loaded, scalars).unwrap();
                let want = G1Projective::msm(&bases[..scalars.len()], scalars).unwrap();
                assert_eq!(got.into_affine(), want.into_affine(), "n = {}", scalars.len());
            }

            #[test]
            fn g1_random_sizes() {
                let mut r = rng();
                for n in [0usize, 1, 2, 3, 31, 32, 100, 1000, 4099] {
                    let bases = points_g1(n);
                    let scalars: Vec<Fr> = (0..n).map(|_| Fr::rand(&mut r)).collect();
                    check_g1(&bases, &scalars);
                }
            }

            #[test]
            fn g1_edge_cases() {
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
                    check_g1(&bases, scalars);
                }
                // fewer scalars than bases
                check_g1(&bases, &mixed[..n / 2]);
            }

            #[test]
            fn g1_too_many_scalars_is_an_error() {
                let b = $backend;
                let loaded = b.load_g1(&points_g1(3)).unwrap();
                let err = msm_g1(&b, &loaded, &[Fr::from(1u64); 4]).unwrap_err();
                assert_eq!(err, BackendError::TooManyScalars { scalars: 4, bases: 3 });
            }

            #[test]
            fn g2_random_and_edges() {
                let mut r = rng();
                for n in [0usize, 1, 5, 257] {
                    let p: Vec<G2Projective> = (0..n).map(|_| G2Projective::rand(&mut r)).collect();
                    let mut bases = G2Projective::normalize_batch(&p);
                    if n > 2 {
                        bases[1] = G2Affine::identity();
                        bases[2] = bases[0];
                    }
                    let mut scalars: Vec<Fr> = (0..n).map(|_| Fr::rand(&mut r)).collect();
                    if n > 3 {
                        scalars[3] = Fr::zero();
                    }
                    let b = $backend;
                    let loaded = b.load_g2(&bases).unwrap();
                    let got = msm_g2(&b, &loaded, &scalars).unwrap();
                    let want = G2Projective::msm(&bases, &scalars).unwrap();
                    assert_eq!(got.into_affine(), want.into_affine(), "n = {n}");
                }
            }
        }
    };
}

/// NTT conformance tests for a backend expression `$backend`.
#[macro_export]
macro_rules! ntt_conformance {
    ($name:ident, $backend:expr) => {
        mod $name {
            use ark_bn254::Fr;
            use ark_ff::{FftField, UniformRand};
            use ark_poly::{EvaluationDomain, Radix2EvaluationDomain};
            use $crate::backend::{BackendError, NttDirection, ntt};

            #[test]
            fn forward_inverse_coset_match_arkworks() {
                let mut r = ark_std::test_rng();
                for log in 0..=12u32 {
                    let n = 1usize << log;
                    let d = Radix2EvaluationDomain::<Fr>::new(n).unwrap();
                    let coeffs: Vec<Fr> = (0..n).map(|_| Fr::rand(&mut r)).collect();
                    let b = $backend;
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
            fn bad_sizes_are_errors() {
                let b = $backend;
                let mut v = vec![Fr::from(1u64); 6];
                assert_eq!(ntt(&b, &mut v, NttDirection::Forward, None), Err(BackendError::NotPowerOfTwo(6)));
                let mut empty: Vec<Fr> = vec![];
                assert_eq!(
                    ntt(&b, &mut empty, NttDirection::Forward, None),
                    Err(BackendError::NotPowerOfTwo(0))
                );
            }
        }
    };
}
