//! Backend traits for the heavy steps of Groth16, and the validating front end.
//!
//! A backend loads bases once ([`MsmBackend::load_g1`]): a proving key's points
//! never change, so a GPU keeps them resident and a CPU keeps precomputed
//! tables. The free functions [`msm_g1`], [`msm_g2`] and [`ntt`] check sizes and
//! capabilities once, with typed errors, then call the unchecked fast paths.

use ark_bn254::{Fr, G1Affine, G1Projective, G2Affine, G2Projective};

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
    /// The device failed; the caller may retry elsewhere (on the CPU).
    #[error("backend {backend} failed: {reason}")]
    Device {
        /// Which backend.
        backend: String,
        /// What happened.
        reason: String,
    },
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

/// Validated NTT.
pub fn ntt<B: NttBackend>(
    b: &B,
    data: &mut [Fr],
    dir: NttDirection,
    coset: Option<Fr>,
) -> Result<(), BackendError> {
    let n = data.len();
    if !n.is_power_of_two() {
        return Err(BackendError::NotPowerOfTwo(n));
    }
    let log = n.trailing_zeros();
    if log > b.max_log_size() {
        return Err(BackendError::TooLarge { log, max: b.max_log_size() });
    }
    b.ntt_unchecked(data, dir, coset)
}
