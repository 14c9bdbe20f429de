//! Backend traits for the heavy steps of Groth16, and the validating front end.
//!
//! A backend loads bases once ([`MsmBackend::load_g1`]): a proving key's points
//! never change, so a GPU keeps them resident and a CPU keeps precomputed
//! tables. The free functions [`msm_g1`], [`msm_g2`], [`msm_batch`], [`ntt`] and
//! [`qap_quotient`] check sizes and capabilities once, with typed errors, then
//! call the unchecked fast paths.

use ark_bn254::{Fr, G1Affine, G1Projective, G2Affine, G2Projective};
use ark_ff::{FftField, Field, One};
use rayon::prelude::*;
use std::time::{Duration, Instant};

/// What went wrong in a backend call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// More scalars than loaded bases.
    #[error("{scalars} scalars for {bases} bases: an MSM takes at most one scalar per base")]
    TooManyScalars {
        /// Scalars given.
        scalars: usize,
        /// Bases loaded.
        bases: usize,
    },
    /// An NTT size that is not a power of two.
    #[error("NTT size {0} is not a power of two")]
    NotPowerOfTwo(usize),
    /// An NTT larger than the backend (or the field's two-adicity) supports.
    #[error("NTT of 2^{log} elements is beyond this backend's 2^{max}")]
    TooLarge {
        /// log2 of the requested size.
        log: u32,
        /// log2 of the largest supported size.
        max: u32,
    },
    /// The quotient's three vectors differ in length.
    #[error("the quotient's vectors have {a}, {b} and {c} elements: they must be equally long")]
    LengthMismatch {
        /// Length of a.
        a: usize,
        /// Length of b.
        b: usize,
        /// Length of c.
        c: usize,
    },
    /// The device failed; the caller may retry elsewhere (on the CPU).
    #[error("backend {backend} failed: {reason}")]
    Device {
        /// Which backend.
        backend: String,
        /// What happened.
        reason: String,
    },
    /// Two backends run side by side (a dual backend) disagreed.
    #[error("{left} and {right} disagree on {what}")]
    Mismatch {
        /// The first backend.
        left: String,
        /// The second backend.
        right: String,
        /// Which call.
        what: String,
    },
}

/// The results of [`MsmBackend::msm_batch_unchecked`], in the order of its
/// jobs, each with the backend time spent on it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MsmBatch {
    /// The G1 MSMs.
    pub g1: Vec<(G1Projective, Duration)>,
    /// The G2 MSMs.
    pub g2: Vec<(G2Projective, Duration)>,
}

/// Multi-scalar multiplication on BN254's G1 and G2.
pub trait MsmBackend: Send + Sync {
    /// Loaded G1 bases.
    type G1Bases: Send + Sync;
    /// Loaded G2 bases.
    type G2Bases: Send + Sync;

    /// A short name for logs and metrics.
    fn name(&self) -> String;
    /// Loads G1 bases (kept between calls).
    fn load_g1(&self, points: &[G1Affine]) -> Result<Self::G1Bases, BackendError>;
    /// Loads G2 bases.
    fn load_g2(&self, points: &[G2Affine]) -> Result<Self::G2Bases, BackendError>;
    /// Number of loaded G1 bases.
    fn g1_len(&self, bases: &Self::G1Bases) -> usize;
    /// Number of loaded G2 bases.
    fn g2_len(&self, bases: &Self::G2Bases) -> usize;
    /// `Σ scalars[i] · bases[i]`; `scalars.len() <= g1_len(bases)` (checked by [`msm_g1`]).
    fn msm_g1_unchecked(&self, bases: &Self::G1Bases, scalars: &[Fr]) -> Result<G1Projective, BackendError>;
    /// The same on G2.
    fn msm_g2_unchecked(&self, bases: &Self::G2Bases, scalars: &[Fr]) -> Result<G2Projective, BackendError>;

    /// Whether this backend's MSMs run off the host's cores (on devices), so
    /// that a prover gains by running them beside its own CPU work: the
    /// Groth16 prover then starts a proof's four MSMs over the witness
    /// while it computes the quotient's inputs. A CPU backend's would only
    /// compete with that work for the same cores. (The answer is the
    /// backend's, not a key's: a GPU backend whose device holds none of a
    /// key's bases says yes, and runs those MSMs on the CPU beside the
    /// quotient, which costs time, not correctness.)
    fn offloads_msms(&self) -> bool {
        false
    }

    /// Several MSMs at once (a proof's five, or the four over its witness),
    /// each within its bases (checked by [`msm_batch`]). A backend with
    /// several devices runs them side by side; this default runs them one
    /// after another.
    fn msm_batch_unchecked(
        &self,
        g1: &[(&Self::G1Bases, &[Fr])],
        g2: &[(&Self::G2Bases, &[Fr])],
    ) -> Result<MsmBatch, BackendError> {
        let mut out = MsmBatch::default();
        for (bases, scalars) in g1 {
            let t = Instant::now();
            let v = self.msm_g1_unchecked(bases, scalars)?;
            out.g1.push((v, t.elapsed()));
        }
        for (bases, scalars) in g2 {
            let t = Instant::now();
            let v = self.msm_g2_unchecked(bases, scalars)?;
            out.g2.push((v, t.elapsed()));
        }
        Ok(out)
    }
}

/// Direction of an NTT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NttDirection {
    /// Coefficients → evaluations at `ω^i` (times `g^i` first, on a coset).
    Forward,
    /// Evaluations → coefficients.
    Inverse,
}

/// NTT over BN254's Fr, with the roots of unity of arkworks'
/// `Radix2EvaluationDomain` (`FftField::get_root_of_unity`).
pub trait NttBackend: Send + Sync {
    /// A short name.
    fn name(&self) -> String;
    /// log2 of the largest size supported.
    fn max_log_size(&self) -> u32;
    /// In place; `data.len()` is a power of two within [`Self::max_log_size`]
    /// (checked by [`ntt`]). With `coset = Some(g)`, evaluates on `g·⟨ω⟩`
    /// (forward) or interpolates from it (inverse).
    fn ntt_unchecked(
        &self,
        data: &mut [Fr],
        dir: NttDirection,
        coset: Option<Fr>,
    ) -> Result<(), BackendError>;

    /// Groth16's QAP quotient (libsnark's reduction, as ark-groth16 computes
    /// it): with `a`, `b`, `c` the constraints' values on the domain of
    /// their (equal, power-of-two, checked by [`qap_quotient`]) length, the
    /// coefficients of `(A·B − C) / Z` through the coset of Fr's generator.
    /// A device backend keeps the whole chain on the device; this default
    /// runs the seven NTTs through [`Self::ntt_unchecked`] and the pointwise
    /// step on the CPU.
    fn qap_quotient_unchecked(&self, a: Vec<Fr>, b: Vec<Fr>, c: Vec<Fr>) -> Result<Vec<Fr>, BackendError> {
        let (mut a, mut b, mut c) = (a, b, c);
        let g = Fr::GENERATOR;
        for v in [&mut a, &mut b, &mut c] {
            self.ntt_unchecked(v, NttDirection::Inverse, None)?;
            self.ntt_unchecked(v, NttDirection::Forward, Some(g))?;
        }
        pointwise_quotient(&mut a, &b, &c);
        self.ntt_unchecked(&mut a, NttDirection::Inverse, Some(g))?;
        Ok(a)
    }
}

/// `a = (a·b − c) / Z` on the coset of Fr's generator, where the vanishing
/// polynomial `x^n − 1` is the constant `g^n − 1`.
pub fn pointwise_quotient(a: &mut [Fr], b: &[Fr], c: &[Fr]) {
    let g = Fr::GENERATOR;
    let z_inv = (g.pow([a.len() as u64]) - Fr::one()).inverse().expect("g is not an n-th root of unity");
    a.par_iter_mut().zip(b).zip(c).for_each(|((ai, bi), ci)| {
        *ai = (*ai * bi - ci) * z_inv;
    });
}

/// Validated G1 MSM.
pub fn msm_g1<B: MsmBackend>(
    b: &B,
    bases: &B::G1Bases,
    scalars: &[Fr],
) -> Result<G1Projective, BackendError> {
    let n = b.g1_len(bases);
    if scalars.len() > n {
        return Err(BackendError::TooManyScalars { scalars: scalars.len(), bases: n });
    }
    b.msm_g1_unchecked(bases, scalars)
}

/// Validated G2 MSM.
pub fn msm_g2<B: MsmBackend>(
    b: &B,
    bases: &B::G2Bases,
    scalars: &[Fr],
) -> Result<G2Projective, BackendError> {
    let n = b.g2_len(bases);
    if scalars.len() > n {
        return Err(BackendError::TooManyScalars { scalars: scalars.len(), bases: n });
    }
    b.msm_g2_unchecked(bases, scalars)
}

/// Validated batch of MSMs.
pub fn msm_batch<B: MsmBackend>(
    b: &B,
    g1: &[(&B::G1Bases, &[Fr])],
    g2: &[(&B::G2Bases, &[Fr])],
) -> Result<MsmBatch, BackendError> {
    for (bases, scalars) in g1 {
        let n = b.g1_len(bases);
        if scalars.len() > n {
            return Err(BackendError::TooManyScalars { scalars: scalars.len(), bases: n });
        }
    }
    for (bases, scalars) in g2 {
        let n = b.g2_len(bases);
        if scalars.len() > n {
            return Err(BackendError::TooManyScalars { scalars: scalars.len(), bases: n });
        }
    }
    b.msm_batch_unchecked(g1, g2)
}

/// Validated QAP quotient.
pub fn qap_quotient<B: NttBackend>(
    b: &B,
    a: Vec<Fr>,
    bv: Vec<Fr>,
    c: Vec<Fr>,
) -> Result<Vec<Fr>, BackendError> {
    if a.len() != bv.len() || a.len() != c.len() {
        return Err(BackendError::LengthMismatch { a: a.len(), b: bv.len(), c: c.len() });
    }
    check_ntt_size(b, a.len())?;
    b.qap_quotient_unchecked(a, bv, c)
}

fn check_ntt_size<B: NttBackend>(b: &B, n: usize) -> Result<(), BackendError> {
    if !n.is_power_of_two() {
        return Err(BackendError::NotPowerOfTwo(n));
    }
    let log = n.trailing_zeros();
    if log > b.max_log_size() {
        return Err(BackendError::TooLarge { log, max: b.max_log_size() });
    }
    Ok(())
}

/// Validated NTT.
pub fn ntt<B: NttBackend>(
    b: &B,
    data: &mut [Fr],
    dir: NttDirection,
    coset: Option<Fr>,
) -> Result<(), BackendError> {
    check_ntt_size(b, data.len())?;
    b.ntt_unchecked(data, dir, coset)
}
