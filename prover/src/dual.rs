//! A backend that runs every call on two backends and compares the results
//! (risc0's `DualHal`): the cheapest way to validate a device inside the full
//! prover. The left backend's result is returned; a disagreement is an error
//! that names the call.

use crate::backend::{BackendError, MsmBackend, MsmBatch, NttBackend, NttDirection};
use ark_bn254::{Fr, G1Affine, G1Projective, G2Affine, G2Projective};
use std::sync::atomic::{AtomicU64, Ordering};

/// Runs `left` and `right` side by side on every call.
#[derive(Debug)]
pub struct DualBackend<L, R> {
    /// The reference (usually the CPU backend).
    pub left: L,
    /// The backend under test.
    pub right: R,
    compared: AtomicU64,
}

impl<L, R> DualBackend<L, R> {
    /// Compares `right` with `left`.
    pub fn new(left: L, right: R) -> Self {
        Self { left, right, compared: AtomicU64::new(0) }
    }

    /// Results compared so far (each MSM, NTT or quotient counts one).
    pub fn compared(&self) -> u64 {
        self.compared.load(Ordering::Relaxed)
    }
}

impl<L: MsmBackend, R: MsmBackend> DualBackend<L, R> {
    fn agree<T: PartialEq>(&self, l: &T, r: &T, what: impl FnOnce() -> String) -> Result<(), BackendError> {
        self.compared.fetch_add(1, Ordering::Relaxed);
        if l == r {
            Ok(())
        } else {
            Err(BackendError::Mismatch { left: self.left.name(), right: self.right.name(), what: what() })
        }
    }
}

impl<L: MsmBackend, R: MsmBackend> MsmBackend for DualBackend<L, R> {
    type G1Bases = (L::G1Bases, R::G1Bases);
    type G2Bases = (L::G2Bases, R::G2Bases);

    fn name(&self) -> String {
        format!("dual({}, {})", self.left.name(), self.right.name())
    }
    fn load_g1(&self, points: &[G1Affine]) -> Result<Self::G1Bases, BackendError> {
        Ok((self.left.load_g1(points)?, self.right.load_g1(points)?))
    }
    fn load_g2(&self, points: &[G2Affine]) -> Result<Self::G2Bases, BackendError> {
        Ok((self.left.load_g2(points)?, self.right.load_g2(points)?))
    }
    fn g1_len(&self, bases: &Self::G1Bases) -> usize {
        self.left.g1_len(&bases.0)
    }
    fn g2_len(&self, bases: &Self::G2Bases) -> usize {
        self.left.g2_len(&bases.0)
    }
    fn msm_g1_unchecked(&self, bases: &Self::G1Bases, scalars: &[Fr]) -> Result<G1Projective, BackendError> {
        let l = self.left.msm_g1_unchecked(&bases.0, scalars)?;
        let r = self.right.msm_g1_unchecked(&bases.1, scalars)?;
        self.agree(&l, &r, || format!("a G1 MSM of {} points", scalars.len()))?;
        Ok(l)
    }
    fn msm_g2_unchecked(&self, bases: &Self::G2Bases, scalars: &[Fr]) -> Result<G2Projective, BackendError> {
        let l = self.left.msm_g2_unchecked(&bases.0, scalars)?;
        let r = self.right.msm_g2_unchecked(&bases.1, scalars)?;
        self.agree(&l, &r, || format!("a G2 MSM of {} points", scalars.len()))?;
        Ok(l)
    }
    fn msm_batch_unchecked(
        &self,
        g1: &[(&Self::G1Bases, &[Fr])],
        g2: &[(&Self::G2Bases, &[Fr])],
    ) -> Result<MsmBatch, BackendError> {
        let l1: Vec<_> = g1.iter().map(|(b, s)| (&b.0, *s)).collect();
        let l2: Vec<_> = g2.iter().map(|(b, s)| (&b.0, *s)).collect();
        let r1: Vec<_> = g1.iter().map(|(b, s)| (&b.1, *s)).collect();
        let r2: Vec<_> = g2.iter().map(|(b, s)| (&b.1, *s)).collect();
        let l = self.left.msm_batch_unchecked(&l1, &l2)?;
        let r = self.right.msm_batch_unchecked(&r1, &r2)?;
        let counts = |b: &MsmBatch| (b.g1.len(), b.g2.len());
        self.agree(&counts(&l), &counts(&r), || "the number of results of an MSM batch".to_string())?;
        for (k, (a, b)) in l.g1.iter().zip(&r.g1).enumerate() {
            self.agree(&a.0, &b.0, || format!("G1 MSM {k} of a batch ({} points)", g1[k].1.len()))?;
        }
        for (k, (a, b)) in l.g2.iter().zip(&r.g2).enumerate() {
            self.agree(&a.0, &b.0, || format!("G2 MSM {k} of a batch ({} points)", g2[k].1.len()))?;
        }
        Ok(l)
    }
}

impl<L: MsmBackend + NttBackend, R: MsmBackend + NttBackend> NttBackend for DualBackend<L, R> {
    fn name(&self) -> String {
        MsmBackend::name(self)
    }
    fn max_log_size(&self) -> u32 {
        self.left.max_log_size().min(self.right.max_log_size())
    }
    fn ntt_unchecked(
        &self,
        data: &mut [Fr],
        dir: NttDirection,
        coset: Option<Fr>,
    ) -> Result<(), BackendError> {
        let mut other = data.to_vec();
        self.left.ntt_unchecked(data, dir, coset)?;
        self.right.ntt_unchecked(&mut other, dir, coset)?;
        self.agree(&data.to_vec(), &other, || format!("an NTT ({dir:?}) of {} elements", data.len()))
    }
    fn qap_quotient_unchecked(&self, a: Vec<Fr>, b: Vec<Fr>, c: Vec<Fr>) -> Result<Vec<Fr>, BackendError> {
        let n = a.len();
        let r = self.right.qap_quotient_unchecked(a.clone(), b.clone(), c.clone())?;
        let l = self.left.qap_quotient_unchecked(a, b, c)?;
        self.agree(&l, &r, || format!("the quotient of {n} elements"))?;
        Ok(l)
    }
}
