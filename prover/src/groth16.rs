//! Groth16 on BN254 over the backend traits.
//!
//! The steps and their order are ark-groth16 0.6's (libsnark's R1CS-to-QAP
//! reduction, the same coset), so that with the same `(r, s)` the proof is the
//! same, bit for bit; only the MSMs and NTTs run on the backend.

use crate::backend::{self, BackendError, MsmBackend, NttBackend};
use ark_bn254::{Bn254, Fr, G1Affine, G1Projective, G2Projective};
use ark_ec::CurveGroup;
use ark_ff::Zero;
use ark_groth16::{Proof, ProvingKey};
use ark_relations::gr1cs::{
    ConstraintSynthesizer, ConstraintSystem, OptimizationGoal, R1CS_PREDICATE_LABEL, SynthesisError,
    SynthesisMode,
};
use rayon::prelude::*;
use std::time::{Duration, Instant};

/// Why proving failed.
#[derive(Debug, thiserror::Error)]
pub enum ProveError {
    /// The circuit could not be synthesised (or its witness is missing).
    #[error("synthesis failed: {0}")]
    Synthesis(#[from] SynthesisError),
    /// A backend call failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The circuit does not match the proving key.
    #[error("the circuit does not match the proving key: {0}")]
    KeyMismatch(String),
}

/// Wall-clock time of each stage of one proof.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StageTimes {
    /// Synthesis and witness generation (with every linear combination evaluated once).
    pub synthesis: Duration,
    /// Collecting the constraints' values (the QAP's a, b, c).
    pub witness_map: Duration,
    /// The quotient: seven NTTs and the pointwise step.
    pub ntt: Duration,
    /// G1 MSM over the quotient h. The MSM times are the backend's time on
    /// each MSM; a backend with several devices runs them side by side, so
    /// they may add up to more than the wall-clock time of the batch.
    pub msm_h: Duration,
    /// G1 MSM over the private witness (L).
    pub msm_l: Duration,
    /// G1 MSM for A.
    pub msm_a: Duration,
    /// G1 MSM for B in G1.
    pub msm_b_g1: Duration,
    /// G2 MSM for B.
    pub msm_b_g2: Duration,
}

/// A proving key with its bases loaded on a backend (load once, prove many times).
pub struct LoadedKey<B: MsmBackend> {
    pk: ProvingKey<Bn254>,
    a: B::G1Bases,
    b_g1: B::G1Bases,
    b_g2: B::G2Bases,
    h: B::G1Bases,
    l: B::G1Bases,
}

impl<B: MsmBackend> std::fmt::Debug for LoadedKey<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedKey").field("a_query", &self.pk.a_query.len()).finish_non_exhaustive()
    }
}

impl<B: MsmBackend> LoadedKey<B> {
    /// Loads the key's five query vectors (without their constant-one term,
    /// which is added separately, as ark-groth16 does).
    pub fn load(backend: &B, pk: ProvingKey<Bn254>) -> Result<Self, BackendError> {
        let tail1 = |v: &[G1Affine]| v.get(1..).unwrap_or(&[]).to_vec();
        let a = backend.load_g1(&tail1(&pk.a_query))?;
        let b_g1 = backend.load_g1(&tail1(&pk.b_g1_query))?;
        let b_g2 = backend.load_g2(pk.b_g2_query.get(1..).unwrap_or(&[]))?;
        let h = backend.load_g1(&pk.h_query)?;
        let l = backend.load_g1(&pk.l_query)?;
        Ok(Self { pk, a, b_g1, b_g2, h, l })
    }

    /// The key.
    pub fn proving_key(&self) -> &ProvingKey<Bn254> {
        &self.pk
    }
}

/// Proves `circuit` with randomness `(r, s)` (use fresh random values; fixed
/// ones only to compare with another prover).
pub fn prove<B, C>(
    backend: &B,
    key: &LoadedKey<B>,
    circuit: C,
    r: Fr,
    s: Fr,
) -> Result<(Proof<Bn254>, StageTimes), ProveError>
where
    B: MsmBackend + NttBackend,
    C: ConstraintSynthesizer<Fr>,
{
    let mut times = StageTimes::default();
    let t = Instant::now();
    // Synthesis records every constraint's three linear combinations and
    // evaluates each linear combination once, as it is created. The QAP needs
    // only those values, so there is no inlining of linear combinations and no
    // constraint matrix (what ark-groth16 spends most of its synthesis time
    // and a large part of its memory on).
    let cs = ConstraintSystem::<Fr>::new_ref();
    cs.set_optimization_goal(OptimizationGoal::Constraints);
    cs.set_mode(SynthesisMode::Prove { construct_matrices: true, generate_lc_assignments: true });
    circuit.generate_constraints(cs.clone())?;
    let num_inputs = cs.num_instance_variables();
    let num_constraints = cs.num_constraints();
    let inner = cs.borrow().ok_or(SynthesisError::MissingCS)?;
    let instance = inner.instance_assignment()?.to_vec();
    let witness = inner.witness_assignment()?;
    let z: Vec<Fr> = instance.iter().chain(witness).copied().collect();
    if key.pk.a_query.len() != z.len() {
        return Err(ProveError::KeyMismatch(format!(
            "the key has {} variables, the circuit {}",
            key.pk.a_query.len(),
            z.len()
        )));
    }
    times.synthesis = t.elapsed();

    // QAP quotient h (libsnark's reduction, as ark-groth16 computes it).
    let t = Instant::now();
    let r1cs = inner
        .predicate_constraint_systems
        .get(R1CS_PREDICATE_LABEL)
        .ok_or_else(|| ProveError::KeyMismatch("the circuit has no R1CS constraints".into()))?;
    let lcs = r1cs.get_constraints();
    let n = (num_constraints + num_inputs).next_power_of_two();
    let assignments = &inner.assignments;
    let value = |v| assignments.assigned_value(v).ok_or(SynthesisError::AssignmentMissing);
    let column = |k: usize| -> Result<Vec<Fr>, SynthesisError> {
        let mut out = vec![Fr::zero(); n];
        out[..num_constraints].par_iter_mut().zip(lcs[k].par_iter()).try_for_each(
            |(o, v)| -> Result<(), SynthesisError> {
                *o = value(*v)?;
                Ok(())
            },
        )?;
        Ok(out)
    };
    let mut a = column(0)?;
    let b = column(1)?;
    let c = column(2)?;
    a[num_constraints..num_constraints + num_inputs].copy_from_slice(&z[..num_inputs]);
    drop(inner);
    drop(cs);
    times.witness_map = t.elapsed();

    let t = Instant::now();
    let h = backend::qap_quotient(backend, a, b, c)?;
    times.ntt = t.elapsed();

    // The five MSMs in one batch (a backend with several devices runs them
    // side by side). The assignment without the constant one: public
    // inputs, then the witness.
    let assignment = &z[1..];
    let aux = &z[num_inputs..];
    let pk = &key.pk;
    let h_len = backend.g1_len(&key.h).min(h.len());
    let mut g1_jobs: Vec<(&B::G1Bases, &[Fr])> =
        vec![(&key.h, &h[..h_len]), (&key.l, aux), (&key.a, assignment)];
    // With r = 0, ark-groth16 computes no B in G1 (it is multiplied by r).
    if !r.is_zero() {
        g1_jobs.push((&key.b_g1, assignment));
    }
    let out = backend::msm_batch(backend, &g1_jobs, &[(&key.b_g2, assignment)])?;
    let (h_acc, l_acc, a_acc) = (out.g1[0].0, out.g1[1].0, out.g1[2].0);
    times.msm_h = out.g1[0].1;
    times.msm_l = out.g1[1].1;
    times.msm_a = out.g1[2].1;
    let g_a: G1Projective = pk.delta_g1 * r + pk.a_query[0] + a_acc + pk.vk.alpha_g1;
    let g1_b: G1Projective = match out.g1.get(3) {
        Some(&(b_acc, took)) => {
            times.msm_b_g1 = took;
            pk.delta_g1 * s + pk.b_g1_query[0] + b_acc + pk.beta_g1
        }
        None => G1Projective::zero(),
    };
    let (b2_acc, took) = out.g2[0];
    times.msm_b_g2 = took;
    let g2_b: G2Projective = pk.vk.delta_g2 * s + pk.b_g2_query[0] + b2_acc + pk.vk.beta_g2;

    let g_c = g_a * s + g1_b * r - pk.delta_g1 * (r * s) + l_acc + h_acc;
    let proof = Proof { a: g_a.into_affine(), b: g2_b.into_affine(), c: g_c.into_affine() };
    Ok((proof, times))
}
