//! Groth16 on BN254 over the backend traits.
//!
//! The steps and their order are ark-groth16 0.6's (libsnark's R1CS-to-QAP
//! reduction, the same coset), so that with the same `(r, s)` the proof is the
//! same, bit for bit; only the MSMs and NTTs run on the backend.

use crate::backend::{self, BackendError, MsmBackend, NttBackend};
use crate::r1cs::{self, R1cs};
use ark_bn254::{Bn254, Fr, G1Affine, G1Projective, G2Projective};
use ark_ec::CurveGroup;
use ark_ff::Zero;
use ark_groth16::{Groth16, PreparedVerifyingKey, Proof, ProvingKey, prepare_verifying_key};
use ark_relations::gr1cs::{ConstraintSynthesizer, SynthesisError};
use std::sync::{Arc, OnceLock, RwLock};
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
    /// The witness does not satisfy the circuit (no proof would verify).
    #[error("the witness does not satisfy constraint {constraint} of the circuit's {of}")]
    Unsatisfied {
        /// The first constraint with a·b ≠ c (counting from 0).
        constraint: usize,
        /// The number of constraints.
        of: usize,
    },
}

/// Wall-clock time of each stage of one proof.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StageTimes {
    /// Synthesis: the circuit's assignment (with the first proof of a key,
    /// also its constraints).
    pub synthesis: Duration,
    /// The constraints' values (the QAP's a, b, c, from the kept constraints) and
    /// the check that the witness satisfies them. With a backend that
    /// offloads its MSMs ([`MsmBackend::offloads_msms`]), the four over the
    /// witness run meanwhile (on the devices).
    pub witness_map: Duration,
    /// The quotient: seven NTTs and the pointwise step. With a backend that
    /// offloads its MSMs, this includes waiting for a device busy with those
    /// over the witness.
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
    /// The whole proof, start to end (with the first proof of a key, also
    /// its check against the key): it can be less than the stages' sum, where
    /// they overlap (MSMs side by side on several devices, or beside the
    /// quotient).
    pub total: Duration,
}

/// A proving key with its bases loaded on a backend (load once, prove many times).
pub struct LoadedKey<B: MsmBackend> {
    pk: ProvingKey<Bn254>,
    a: B::G1Bases,
    b_g1: B::G1Bases,
    b_g2: B::G2Bases,
    h: B::G1Bases,
    l: B::G1Bases,
    /// The circuit's constraints, from the first proof (or [`Self::prepare`]).
    r1cs: RwLock<Option<Arc<R1cs>>>,
    /// The verifying key, prepared when first needed.
    pvk: OnceLock<PreparedVerifyingKey<Bn254>>,
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
        Ok(Self { pk, a, b_g1, b_g2, h, l, r1cs: RwLock::new(None), pvk: OnceLock::new() })
    }

    /// Builds and keeps the circuit's constraints with one proof of
    /// `circuit` (any satisfied instance of the key's circuit, such as a
    /// padding batch), so that the first real proof is as fast as the later
    /// ones. The first proof does this itself otherwise.
    pub fn prepare<C>(&self, backend: &B, circuit: C) -> Result<(), ProveError>
    where
        B: NttBackend,
        C: ConstraintSynthesizer<Fr>,
    {
        if self.r1cs().is_none() {
            prove(backend, self, circuit, Fr::from(1u64), Fr::from(2u64))?;
        }
        Ok(())
    }

    /// The circuit's constraints, once a proof has built them.
    pub fn r1cs(&self) -> Option<Arc<R1cs>> {
        self.r1cs.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Lets the kept constraints go: the next proof builds them again from
    /// its circuit and keeps them once its proof verifies. For a proof made
    /// through the kept ones that does not verify: the witness they were
    /// checked with may have hidden a difference from the key's (one that
    /// only multiplies variables that were zero in it, as in a padding
    /// batch).
    pub fn forget_constraints(&self) {
        *self.r1cs.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Refuses an R1CS whose variables or domain are not the key's.
    fn check_r1cs(&self, r1cs: &R1cs) -> Result<(), ProveError> {
        let variables = r1cs.num_instance() + r1cs.num_witness();
        if self.pk.a_query.len() != variables {
            return Err(ProveError::KeyMismatch(format!(
                "the key has {} variables, the circuit {variables}",
                self.pk.a_query.len()
            )));
        }
        // The other queries must fit the same split of variables (a key cut
        // short is refused here, not met as an index out of range).
        for (name, len, want) in [
            ("B in G1", self.pk.b_g1_query.len(), variables),
            ("B in G2", self.pk.b_g2_query.len(), variables),
            ("L", self.pk.l_query.len(), r1cs.num_witness()),
            ("the verifying key's inputs", self.pk.vk.gamma_abc_g1.len(), r1cs.num_instance()),
        ] {
            if len != want {
                return Err(ProveError::KeyMismatch(format!(
                    "the key's {name} query has {len} elements, the circuit needs {want}"
                )));
            }
        }
        // ark-groth16's h query has one element fewer than the domain.
        let domain = (r1cs.num_constraints() + r1cs.num_instance()).next_power_of_two();
        if self.pk.h_query.len() + 1 != domain {
            return Err(ProveError::KeyMismatch(format!(
                "the circuit's {} constraints and {} inputs need a domain of {domain}, the key's is {}",
                r1cs.num_constraints(),
                r1cs.num_instance(),
                self.pk.h_query.len() + 1
            )));
        }
        Ok(())
    }

    /// The key.
    pub fn proving_key(&self) -> &ProvingKey<Bn254> {
        &self.pk
    }

    /// Whether `proof` verifies against the key for `inputs` (the public
    /// inputs, without the constant one). A few milliseconds: worth it for
    /// every proof made on a device that could be wrong without failing.
    pub fn verifies(&self, proof: &Proof<Bn254>, inputs: &[Fr]) -> bool {
        let pvk = self.pvk.get_or_init(|| prepare_verifying_key(&self.pk.vk));
        Groth16::<Bn254>::verify_proof(pvk, proof, inputs).unwrap_or(false)
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
    prove_with_inputs(backend, key, circuit, r, s).map(|(proof, times, _)| (proof, times))
}

/// [`prove`], also returning the public inputs the proof is for (without
/// the constant one), to check it with [`LoadedKey::verifies`].
pub fn prove_with_inputs<B, C>(
    backend: &B,
    key: &LoadedKey<B>,
    circuit: C,
    r: Fr,
    s: Fr,
) -> Result<(Proof<Bn254>, StageTimes, Vec<Fr>), ProveError>
where
    B: MsmBackend + NttBackend,
    C: ConstraintSynthesizer<Fr>,
{
    let mut times = StageTimes::default();
    let start = Instant::now();
    let t = start;
    // The first proof with a key builds the circuit's constraints; later ones
    // synthesise the assignment only (see `r1cs`).
    let kept = key.r1cs();
    let (assignment, fresh) = match &kept {
        Some(_) => (r1cs::assign(circuit)?, None),
        None => {
            let (assignment, r1cs) = R1cs::build(circuit)?;
            key.check_r1cs(&r1cs)?;
            (assignment, Some(r1cs))
        }
    };
    let r1cs: &R1cs = fresh.as_ref().or(kept.as_deref()).expect("built or kept");
    r1cs.check_shape(&assignment)?;
    times.synthesis = t.elapsed();

    // The QAP's a, b, c (libsnark's reduction, as ark-groth16 computes it):
    // the constraints' values, then the public inputs in a; then the
    // quotient's coefficients h.
    let z = assignment.z;
    let (num_inputs, num_constraints) = (r1cs.num_instance(), r1cs.num_constraints());
    let quotient = |times: &mut StageTimes| -> Result<Vec<Fr>, ProveError> {
        let t = Instant::now();
        let n = (num_constraints + num_inputs).next_power_of_two();
        let [mut a, b, c] = r1cs.satisfied_values(&z, n)?;
        a[num_constraints..num_constraints + num_inputs].copy_from_slice(&z[..num_inputs]);
        times.witness_map = t.elapsed();
        let t = Instant::now();
        let h = backend::qap_quotient(backend, a, b, c)?;
        times.ntt = t.elapsed();
        Ok(h)
    };

    // The five MSMs: one over h, four over the assignment without the
    // constant one (public inputs, then the witness).
    let assignment = &z[1..];
    let aux = &z[num_inputs..];
    let pk = &key.pk;
    let mut witness_g1: Vec<(&B::G1Bases, &[Fr])> = vec![(&key.l, aux), (&key.a, assignment)];
    // With r = 0, ark-groth16 computes no B in G1 (it is multiplied by r).
    if !r.is_zero() {
        witness_g1.push((&key.b_g1, assignment));
    }
    let witness_g2 = [(&key.b_g2, assignment)];
    let h_len = |h: &[Fr]| backend.g1_len(&key.h).min(h.len());
    // In `out`, G1: h, l, a and b (where r is not zero); G2: b.
    let out = if backend.offloads_msms() {
        // The four over the witness go to the devices at once, while the
        // host computes the quotient's inputs (and a device the quotient,
        // once free); the one over h follows. A witness that breaks a
        // constraint is refused once they are done.
        let (h, witness) = std::thread::scope(|scope| {
            let msms = scope.spawn(|| backend::msm_batch(backend, &witness_g1, &witness_g2));
            let h = quotient(&mut times);
            (h, msms.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
        });
        let h = h?;
        let mut out = witness?;
        let over_h = backend::msm_batch(backend, &[(&key.h, &h[..h_len(&h)])], &[])?;
        out.g1.insert(0, over_h.g1[0]);
        out
    } else {
        // The five in one batch (a backend with several devices runs them
        // side by side).
        let h = quotient(&mut times)?;
        let mut g1_jobs = vec![(&key.h, &h[..h_len(&h)])];
        g1_jobs.extend_from_slice(&witness_g1);
        backend::msm_batch(backend, &g1_jobs, &witness_g2)?
    };
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

    if let Some(r1cs) = fresh {
        // Constraints built from the circuit are kept only once a proof made
        // with them verifies against the key: then they are the key's.
        if !key.verifies(&proof, &z[1..num_inputs]) {
            return Err(ProveError::KeyMismatch(
                "a proof made with the circuit's constraints does not verify against the key".into(),
            ));
        }
        // Another proof may have kept the same constraints meanwhile.
        key.r1cs.write().unwrap_or_else(|p| p.into_inner()).get_or_insert_with(|| Arc::new(r1cs));
    }
    times.total = start.elapsed();
    Ok((proof, times, z[1..num_inputs].to_vec()))
}
