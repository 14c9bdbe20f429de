//! The CPU backend: the reference for every other backend and the fallback
//! when no device is usable.
//!
//! MSM: the bucket method with signed digits (buckets for 1..=2^(c-1) only),
//! windows processed in parallel, zero digits skipped. NTT: iterative radix-2
//! with precomputed twiddles, stages parallel over blocks or within a block.

use crate::backend::{BackendError, MsmBackend, NttBackend, NttDirection};
use ark_bn254::{Fr, G1Affine, G1Projective, G2Affine, G2Projective};
use ark_ec::AffineRepr;
use ark_ff::AdditiveGroup;
use ark_ff::{BigInteger, FftField, Field, PrimeField, Zero};
use rayon::prelude::*;

/// The CPU backend (all cores through rayon).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuBackend;

impl CpuBackend {
    /// A CPU backend.
    pub fn new() -> Self {
        CpuBackend
    }
}

/// Window size for `n` scalars.
fn window_bits(n: usize) -> usize {
    if n < 32 { 3 } else { (usize::BITS - n.leading_zeros()) as usize * 69 / 100 + 2 }
}

/// Signed base-2^c digits of every scalar, `windows` per scalar, each in
/// `[-2^(c-1), 2^(c-1)]`.
fn signed_digits(scalars: &[Fr], c: usize, windows: usize) -> Vec<i32> {
    let mut digits = vec![0i32; scalars.len() * windows];
    digits.par_chunks_mut(windows).zip(scalars.par_iter()).for_each(|(d, s)| {
        let b = s.into_bigint();
        let half = 1i64 << (c - 1);
        let mut carry = 0i64;
        for (w, dw) in d.iter_mut().enumerate() {
            let mut v = carry;
            for k in 0..c {
                let bit = w * c + k;
                if bit < 256 && b.get_bit(bit) {
                    v += 1 << k;
                }
            }
            if v > half {
                v -= 1 << c;
                carry = 1;
            } else {
                carry = 0;
            }
            *dw = v as i32;
        }
        debug_assert_eq!(carry, 0);
    });
    digits
}

/// `Σ scalars[i]·bases[i]` by the bucket method.
pub fn msm<A>(bases: &[A], scalars: &[Fr]) -> A::Group
where
    A: AffineRepr<ScalarField = Fr>,
{
    let n = scalars.len().min(bases.len());
    if n == 0 {
        return A::Group::zero();
    }
    let c = window_bits(n);
    let windows = 255 / c + 1;
    let digits = signed_digits(&scalars[..n], c, windows);
    let sums: Vec<A::Group> = (0..windows)
        .into_par_iter()
        .map(|w| {
            let mut buckets = vec![A::Group::zero(); 1 << (c - 1)];
            for (i, base) in bases[..n].iter().enumerate() {
                let d = digits[i * windows + w];
                if d > 0 {
                    buckets[(d - 1) as usize] += base;
                } else if d < 0 {
                    buckets[(-d - 1) as usize] -= base;
                }
            }
            let mut running = A::Group::zero();
            let mut total = A::Group::zero();
            for b in buckets.iter().rev() {
                running += b;
                total += &running;
            }
            total
        })
        .collect();
    sums.iter().rev().fold(A::Group::zero(), |mut acc, s| {
        for _ in 0..c {
            acc.double_in_place();
        }
        acc + s
    })
}

fn bit_reverse(a: &mut [Fr]) {
    let n = a.len();
    let log = n.trailing_zeros();
    if log == 0 {
        return;
    }
    for i in 0..n {
        let j = i.reverse_bits() >> (usize::BITS - log);
        if i < j {
            a.swap(i, j);
        }
    }
}

/// In-place radix-2 FFT with root `omega` of order `a.len()`.
fn fft(a: &mut [Fr], omega: Fr) {
    let n = a.len();
    if n <= 1 {
        return;
    }
    bit_reverse(a);
    let half_n = n / 2;
    let mut twiddles = vec![Fr::ONE; half_n];
    for i in 1..half_n {
        twiddles[i] = twiddles[i - 1] * omega;
    }
    let mut m = 2;
    while m <= n {
        let half = m / 2;
        let stride = n / m;
        let butterfly = |lo: &mut [Fr], hi: &mut [Fr], base: usize| {
            for (j, (u, v)) in lo.iter_mut().zip(hi.iter_mut()).enumerate() {
                let t = *v * twiddles[(base + j) * stride];
                *v = *u - t;
                *u += t;
            }
        };
        if n / m >= 64 {
            a.par_chunks_mut(m).for_each(|chunk| {
                let (lo, hi) = chunk.split_at_mut(half);
                butterfly(lo, hi, 0);
            });
        } else {
            for chunk in a.chunks_mut(m) {
                let (lo, hi) = chunk.split_at_mut(half);
                let block = (half / 64).max(1024);
                lo.par_chunks_mut(block)
                    .zip(hi.par_chunks_mut(block))
                    .enumerate()
                    .for_each(|(k, (l, h))| butterfly(l, h, k * block));
            }
        }
        m *= 2;
    }
}

fn scale_by_powers(a: &mut [Fr], g: Fr) {
    let block = 4096;
    a.par_chunks_mut(block).enumerate().for_each(|(k, chunk)| {
        let mut p = g.pow([(k * block) as u64]);
        for x in chunk {
            *x *= p;
            p *= g;
        }
    });
}

/// The NTT of [`NttBackend`], on the CPU.
pub fn ntt_in_place(a: &mut [Fr], dir: NttDirection, coset: Option<Fr>) {
    let n = a.len();
    if n == 0 {
        return;
    }
    let omega = Fr::get_root_of_unity(n as u64).expect("size checked against the two-adicity");
    match dir {
        NttDirection::Forward => {
            if let Some(g) = coset {
                scale_by_powers(a, g);
            }
            fft(a, omega);
        }
        NttDirection::Inverse => {
            fft(a, omega.inverse().expect("roots of unity are invertible"));
            let n_inv = Fr::from(n as u64).inverse().expect("n < p");
            match coset {
                None => a.par_iter_mut().for_each(|x| *x *= n_inv),
                Some(g) => {
                    let g_inv = g.inverse().expect("a coset generator is not zero");
                    scale_by_powers(a, g_inv);
                    a.par_iter_mut().for_each(|x| *x *= n_inv);
                }
            }
        }
    }
}

impl MsmBackend for CpuBackend {
    type G1Bases = Vec<G1Affine>;
    type G2Bases = Vec<G2Affine>;

    fn name(&self) -> String {
        "cpu".into()
    }
    fn load_g1(&self, points: &[G1Affine]) -> Result<Self::G1Bases, BackendError> {
        Ok(points.to_vec())
    }
    fn load_g2(&self, points: &[G2Affine]) -> Result<Self::G2Bases, BackendError> {
        Ok(points.to_vec())
    }
    fn g1_len(&self, bases: &Self::G1Bases) -> usize {
        bases.len()
    }
    fn g2_len(&self, bases: &Self::G2Bases) -> usize {
        bases.len()
    }
    fn msm_g1_unchecked(&self, bases: &Self::G1Bases, scalars: &[Fr]) -> Result<G1Projective, BackendError> {
        Ok(msm(bases, scalars))
    }
    fn msm_g2_unchecked(&self, bases: &Self::G2Bases, scalars: &[Fr]) -> Result<G2Projective, BackendError> {
        Ok(msm(bases, scalars))
    }
}

impl NttBackend for CpuBackend {
    fn name(&self) -> String {
        "cpu".into()
    }
    fn max_log_size(&self) -> u32 {
        Fr::TWO_ADICITY
    }
    fn ntt_unchecked(
        &self,
        data: &mut [Fr],
        dir: NttDirection,
        coset: Option<Fr>,
    ) -> Result<(), BackendError> {
        ntt_in_place(data, dir, coset);
        Ok(())
    }
}
