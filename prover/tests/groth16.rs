//! The prover against ark-groth16 on the batch circuit: the same proof bit for
//! bit with the same randomness, and proofs that ark-groth16's verifier accepts;
//! the constraint matrices kept with a key, and the witnesses and circuits it
//! refuses; the MSMs over the witness beside the quotient where a backend
//! offloads its MSMs.

use ark_bn254::{Bn254, Fr, G1Affine, G1Projective, G2Affine, G2Projective};
use ark_ff::UniformRand;
use ark_groth16::Groth16;
use ark_relations::gr1cs::{ConstraintSynthesizer, ConstraintSystemRef, SynthesisError};
use ark_relations::lc;
use ark_snark::SNARK;
use medrollup_circuits::circuit::BatchCircuit;
use medrollup_circuits::keys::{self, CircuitShape};
use medrollup_circuits::sample::batch;
use medrollup_prover::backend::MsmBatch;
use medrollup_prover::groth16::{LoadedKey, ProveError, prove};
use medrollup_prover::{BackendError, CpuBackend, MsmBackend, NttBackend, NttDirection};
use rand::SeedableRng;

#[test]
fn bit_identical_to_ark_groth16_and_verified_by_it() {
    let shape = CircuitShape { batch_size: 2, levels: 5 };
    let pk = keys::setup(shape, Some(11)).unwrap();
    let backend = CpuBackend::new();
    let key = LoadedKey::load(&backend, pk.clone()).unwrap();
    let w = batch(shape);
    let mut rng = ark_std::test_rng();
    let (r, s) = (Fr::rand(&mut rng), Fr::rand(&mut rng));

    let theirs =
        Groth16::<Bn254>::create_proof_with_reduction(BatchCircuit::new(w.clone()), &pk, r, s).unwrap();
    assert!(key.r1cs().is_none(), "no proof yet: no matrices");
    let (ours, times) = prove(&backend, &key, BatchCircuit::new(w.clone()), r, s).unwrap();
    assert_eq!(ours, theirs, "same randomness, same proof");
    let r1cs = key.r1cs().expect("the first proof keeps the circuit's matrices");
    assert_eq!(r1cs.num_instance() + r1cs.num_witness(), pk.a_query.len());
    assert_eq!(r1cs.num_constraints(), keys::constraint_count(shape));
    assert!(times.ntt > std::time::Duration::ZERO && times.msm_h > std::time::Duration::ZERO);
    // On the CPU backend the stages run one after another, within the whole.
    let stages = times.synthesis
        + times.witness_map
        + times.ntt
        + times.msm_h
        + times.msm_l
        + times.msm_a
        + times.msm_b_g1
        + times.msm_b_g2;
    assert!(times.total >= stages, "{times:?}");

    let pvk = keys::prepare(&pk.vk);
    let public = w.public_inputs();
    let (fresh, _) =
        prove(&backend, &key, BatchCircuit::new(w.clone()), Fr::rand(&mut rng), Fr::rand(&mut rng)).unwrap();
    assert_ne!(fresh, ours);
    assert!(Groth16::<Bn254>::verify_with_processed_vk(&pvk, &public.to_vec(), &fresh).unwrap());
    let mut wrong = public.to_vec();
    wrong[1] += Fr::from(1u64);
    assert!(!Groth16::<Bn254>::verify_with_processed_vk(&pvk, &wrong, &fresh).unwrap());

    // Later proofs synthesise the assignment only, through the kept matrices.
    // r = 0 takes ark-groth16's other branch (no B in G1): still identical.
    let theirs0 =
        Groth16::<Bn254>::create_proof_with_reduction(BatchCircuit::new(w.clone()), &pk, Fr::from(0u64), s)
            .unwrap();
    let (ours0, _) = prove(&backend, &key, BatchCircuit::new(w), Fr::from(0u64), s).unwrap();
    assert_eq!(ours0, theirs0);
}

#[test]
fn a_circuit_of_another_shape_is_refused() {
    let pk = keys::setup(CircuitShape { batch_size: 1, levels: 3 }, Some(2)).unwrap();
    let backend = CpuBackend::new();
    let key = LoadedKey::load(&backend, pk).unwrap();
    let other = keys::padding_witness(CircuitShape { batch_size: 2, levels: 3 });
    let err = prove(&backend, &key, BatchCircuit::new(other), Fr::from(1u64), Fr::from(2u64)).unwrap_err();
    assert!(matches!(err, ProveError::KeyMismatch(_)), "{err}");
}

#[test]
fn a_witness_that_breaks_a_constraint_is_refused_before_and_after_the_matrices_are_kept() {
    let shape = CircuitShape { batch_size: 1, levels: 3 };
    let pk = keys::setup(shape, Some(3)).unwrap();
    let backend = CpuBackend::new();
    let key = LoadedKey::load(&backend, pk.clone()).unwrap();
    let mut bad = batch(shape);
    bad.new_roots[0] += Fr::from(1u64);
    let unsatisfied = |err: ProveError| match err {
        ProveError::Unsatisfied { constraint, of } => {
            assert!(constraint < of, "{constraint} of {of}");
            assert_eq!(of, keys::constraint_count(shape));
        }
        other => panic!("expected an unsatisfied constraint, got {other}"),
    };
    let (one, two) = (Fr::from(1u64), Fr::from(2u64));
    unsatisfied(prove(&backend, &key, BatchCircuit::new(bad.clone()), one, two).unwrap_err());
    assert!(key.r1cs().is_none(), "matrices are kept only from a satisfied witness");

    key.prepare(&backend, BatchCircuit::new(keys::padding_witness(shape))).unwrap();
    assert!(key.r1cs().is_some());
    let err = prove(&backend, &key, BatchCircuit::new(bad), one, two).unwrap_err();
    assert!(err.to_string().starts_with("the witness does not satisfy constraint "), "{err}");
    unsatisfied(err);
    let good = batch(shape);
    let (proof, _) = prove(&backend, &key, BatchCircuit::new(good.clone()), one, two).unwrap();
    let pvk = keys::prepare(&pk.vk);
    assert!(
        Groth16::<Bn254>::verify_with_processed_vk(&pvk, &good.public_inputs().to_vec(), &proof).unwrap()
    );
}

/// (k·x)·x = k·y for a public y: the same variables for every k, other
/// constraints (and another quotient) for each k.
#[derive(Clone, Copy)]
struct Square {
    x: u64,
    k: u64,
    cheat: bool,
}

impl ConstraintSynthesizer<Fr> for Square {
    fn generate_constraints(self, cs: ConstraintSystemRef<Fr>) -> Result<(), SynthesisError> {
        let x = Fr::from(self.x);
        let y = cs.new_input_variable(|| Ok(x * x + Fr::from(u64::from(self.cheat))))?;
        let xv = cs.new_witness_variable(|| Ok(x))?;
        let k = Fr::from(self.k);
        cs.enforce_r1cs_constraint(|| lc!() + (k, xv), || lc!() + xv, || lc!() + (k, y))
    }
}

#[test]
fn the_first_proof_keeps_the_matrices_only_when_they_are_the_keys() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let (pk, vk) =
        Groth16::<Bn254>::circuit_specific_setup(Square { x: 3, k: 1, cheat: false }, &mut rng).unwrap();
    let backend = CpuBackend::new();
    let key = LoadedKey::load(&backend, pk).unwrap();
    let (one, two) = (Fr::from(1u64), Fr::from(2u64));

    // Same variables and a satisfied witness, but other constraints.
    let err = prove(&backend, &key, Square { x: 5, k: 2, cheat: false }, one, two).unwrap_err();
    assert!(matches!(err, ProveError::KeyMismatch(_)), "{err}");
    assert!(err.to_string().contains("does not verify against the key"), "{err}");
    assert!(key.r1cs().is_none());
    let err = prove(&backend, &key, Square { x: 5, k: 1, cheat: true }, one, two).unwrap_err();
    assert!(matches!(err, ProveError::Unsatisfied { constraint: 0, of: 1 }), "{err}");
    assert!(key.r1cs().is_none());

    let (proof, _) = prove(&backend, &key, Square { x: 5, k: 1, cheat: false }, one, two).unwrap();
    assert!(Groth16::<Bn254>::verify(&vk, &[Fr::from(25u64)], &proof).unwrap());
    assert_eq!(key.r1cs().map(|r| (r.num_instance(), r.num_witness(), r.num_constraints())), Some((2, 1, 1)));
    // From now on the key's constraints judge every witness.
    let err = prove(&backend, &key, Square { x: 7, k: 1, cheat: true }, one, two).unwrap_err();
    assert!(matches!(err, ProveError::Unsatisfied { constraint: 0, of: 1 }), "{err}");
    let (proof, _) = prove(&backend, &key, Square { x: 7, k: 1, cheat: false }, one, two).unwrap();
    assert!(Groth16::<Bn254>::verify(&vk, &[Fr::from(49u64)], &proof).unwrap());
    assert!(!Groth16::<Bn254>::verify(&vk, &[Fr::from(50u64)], &proof).unwrap());
}

#[test]
fn constraints_kept_from_a_witness_that_hid_their_difference_are_built_again() {
    use medrollup_prover::gpu::{GpuBackend, GpuConfig, Runtimes};
    use medrollup_prover::worker::prove_checked;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(10);
    let (pk, vk) =
        Groth16::<Bn254>::circuit_specific_setup(Square { x: 3, k: 1, cheat: false }, &mut rng).unwrap();
    let backend = GpuBackend::new(&GpuConfig { runtimes: Runtimes::None, ..GpuConfig::default() });
    let key = LoadedKey::load(&backend, pk).unwrap();
    // x = 0 makes every term of the other constraints 0: the proof made
    // through them verifies, and they are kept.
    let (proof, _) = prove_checked(&backend, &key, || Square { x: 0, k: 2, cheat: false }).unwrap();
    assert!(Groth16::<Bn254>::verify(&vk, &[Fr::from(0u64)], &proof).unwrap());
    assert!(key.r1cs().is_some());
    // Through them, a proof of the key's circuit does not verify...
    let (one, two) = (Fr::from(1u64), Fr::from(2u64));
    let (wrong, _) = prove(&backend, &key, Square { x: 5, k: 1, cheat: false }, one, two).unwrap();
    assert!(!Groth16::<Bn254>::verify(&vk, &[Fr::from(25u64)], &wrong).unwrap());
    // ... so the checked proof builds the constraints again, and verifies.
    let (proof, _) = prove_checked(&backend, &key, || Square { x: 5, k: 1, cheat: false }).unwrap();
    assert!(Groth16::<Bn254>::verify(&vk, &[Fr::from(25u64)], &proof).unwrap());
    let (next, _) = prove(&backend, &key, Square { x: 6, k: 1, cheat: false }, one, two).unwrap();
    assert!(
        Groth16::<Bn254>::verify(&vk, &[Fr::from(36u64)], &next).unwrap(),
        "the key's constraints are kept now"
    );

    // Kept constraints that the key's witnesses do not even satisfy (a term
    // the first witness had at 0): built again too.
    let (pk, vk) =
        Groth16::<Bn254>::circuit_specific_setup(Shifted { x: 3, shift: false }, &mut rng).unwrap();
    let key = LoadedKey::load(&backend, pk).unwrap();
    prove_checked(&backend, &key, || Shifted { x: 0, shift: true }).unwrap();
    let err = prove(&backend, &key, Shifted { x: 5, shift: false }, one, two).unwrap_err();
    assert!(matches!(err, ProveError::Unsatisfied { .. }), "{err}");
    let (proof, _) = prove_checked(&backend, &key, || Shifted { x: 5, shift: false }).unwrap();
    assert!(Groth16::<Bn254>::verify(&vk, &[Fr::from(25u64)], &proof).unwrap());
}

/// x·x = y (+ x when shifted) for a public y: the same variables, and the
/// same constraint where x is 0.
#[derive(Clone, Copy)]
struct Shifted {
    x: u64,
    shift: bool,
}

impl ConstraintSynthesizer<Fr> for Shifted {
    fn generate_constraints(self, cs: ConstraintSystemRef<Fr>) -> Result<(), SynthesisError> {
        let x = Fr::from(self.x);
        let shift = Fr::from(u64::from(self.shift));
        let y = cs.new_input_variable(|| Ok(x * x - shift * x))?;
        let xv = cs.new_witness_variable(|| Ok(x))?;
        cs.enforce_r1cs_constraint(|| lc!() + xv, || lc!() + xv, || lc!() + y + (shift, xv))
    }
}

#[test]
fn a_key_with_a_query_cut_short_is_refused_naming_it() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(12);
    let (pk, _) =
        Groth16::<Bn254>::circuit_specific_setup(Square { x: 3, k: 1, cheat: false }, &mut rng).unwrap();
    let backend = CpuBackend::new();
    let (one, two) = (Fr::from(1u64), Fr::from(2u64));
    type Cut = fn(&mut ark_groth16::ProvingKey<Bn254>);
    let cuts: [(&str, Cut); 4] = [
        ("B in G1", |pk| pk.b_g1_query.truncate(1)),
        ("B in G2", |pk| pk.b_g2_query.clear()),
        ("L", |pk| pk.l_query.clear()),
        ("the verifying key's inputs", |pk| pk.vk.gamma_abc_g1.truncate(1)),
    ];
    for (name, cut) in cuts {
        let mut short = pk.clone();
        cut(&mut short);
        let key = LoadedKey::load(&backend, short).unwrap();
        let err = prove(&backend, &key, Square { x: 5, k: 1, cheat: false }, one, two).unwrap_err();
        assert!(matches!(err, ProveError::KeyMismatch(_)), "{name}: {err}");
        assert!(err.to_string().contains(&format!("the key's {name} query has")), "{name}: {err}");
    }
}

/// A CPU backend that says whether its MSMs are offloaded, and logs the
/// prover's calls. Where it meets (`meet`), the batch of MSMs over the
/// witness (the one with a G2 MSM) and the quotient each wait, up to a
/// minute, for the other to have started: a prover that ran them one after
/// the other fails.
struct Rendezvous {
    cpu: CpuBackend,
    offloads: bool,
    meet: bool,
    /// Whether the witness MSMs, and the quotient, have started.
    started: std::sync::Mutex<[bool; 2]>,
    turn: std::sync::Condvar,
    log: std::sync::Mutex<Vec<String>>,
}

impl Rendezvous {
    fn new(offloads: bool, meet: bool) -> Self {
        Rendezvous {
            cpu: CpuBackend::new(),
            offloads,
            meet,
            started: Default::default(),
            turn: Default::default(),
            log: Default::default(),
        }
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    fn started(&self, side: usize, what: String) -> Result<(), BackendError> {
        self.log.lock().unwrap().push(what.clone());
        if !self.meet {
            return Ok(());
        }
        let mut started = self.started.lock().unwrap();
        started[side] = true;
        self.turn.notify_all();
        let (started, wait) = self
            .turn
            .wait_timeout_while(started, std::time::Duration::from_secs(60), |s| !s[1 - side])
            .unwrap();
        if wait.timed_out() && !started[1 - side] {
            return Err(BackendError::Device {
                backend: "rendezvous".into(),
                reason: format!("{what} ran alone"),
            });
        }
        Ok(())
    }
}

impl MsmBackend for Rendezvous {
    type G1Bases = <CpuBackend as MsmBackend>::G1Bases;
    type G2Bases = <CpuBackend as MsmBackend>::G2Bases;
    fn name(&self) -> String {
        "rendezvous".into()
    }
    fn load_g1(&self, points: &[G1Affine]) -> Result<Self::G1Bases, BackendError> {
        self.cpu.load_g1(points)
    }
    fn load_g2(&self, points: &[G2Affine]) -> Result<Self::G2Bases, BackendError> {
        self.cpu.load_g2(points)
    }
    fn g1_len(&self, bases: &Self::G1Bases) -> usize {
        self.cpu.g1_len(bases)
    }
    fn g2_len(&self, bases: &Self::G2Bases) -> usize {
        self.cpu.g2_len(bases)
    }
    fn msm_g1_unchecked(&self, bases: &Self::G1Bases, scalars: &[Fr]) -> Result<G1Projective, BackendError> {
        self.cpu.msm_g1_unchecked(bases, scalars)
    }
    fn msm_g2_unchecked(&self, bases: &Self::G2Bases, scalars: &[Fr]) -> Result<G2Projective, BackendError> {
        self.cpu.msm_g2_unchecked(bases, scalars)
    }
    fn offloads_msms(&self) -> bool {
        self.offloads
    }
    fn msm_batch_unchecked(
        &self,
        g1: &[(&Self::G1Bases, &[Fr])],
        g2: &[(&Self::G2Bases, &[Fr])],
    ) -> Result<MsmBatch, BackendError> {
        let what = format!("MSMs: {} G1, {} G2", g1.len(), g2.len());
        if g2.is_empty() {
            self.log.lock().unwrap().push(what);
        } else {
            self.started(0, what)?;
        }
        self.cpu.msm_batch_unchecked(g1, g2)
    }
}

impl NttBackend for Rendezvous {
    fn name(&self) -> String {
        "rendezvous".into()
    }
    fn max_log_size(&self) -> u32 {
        self.cpu.max_log_size()
    }
    fn ntt_unchecked(
        &self,
        data: &mut [Fr],
        dir: NttDirection,
        coset: Option<Fr>,
    ) -> Result<(), BackendError> {
        self.cpu.ntt_unchecked(data, dir, coset)
    }
    fn qap_quotient_unchecked(&self, a: Vec<Fr>, b: Vec<Fr>, c: Vec<Fr>) -> Result<Vec<Fr>, BackendError> {
        self.started(1, "quotient".into())?;
        self.cpu.qap_quotient_unchecked(a, b, c)
    }
}

#[test]
fn msms_over_the_witness_run_beside_the_quotient_where_the_backend_offloads_them() {
    let shape = CircuitShape { batch_size: 1, levels: 3 };
    let pk = keys::setup(shape, Some(5)).unwrap();
    let w = batch(shape);
    let (r, s) = (Fr::from(3u64), Fr::from(4u64));
    let theirs =
        Groth16::<Bn254>::create_proof_with_reduction(BatchCircuit::new(w.clone()), &pk, r, s).unwrap();

    // Offloaded: the four over the witness beside the quotient (each waits
    // for the other to start), then the one over h.
    let backend = Rendezvous::new(true, true);
    let key = LoadedKey::load(&backend, pk.clone()).unwrap();
    let (ours, _) = prove(&backend, &key, BatchCircuit::new(w.clone()), r, s).unwrap();
    assert_eq!(ours, theirs, "same randomness, same proof");
    let mut log = backend.log();
    log[..2].sort();
    assert_eq!(log, ["MSMs: 3 G1, 1 G2", "quotient", "MSMs: 1 G1, 0 G2"]);
    // With r = 0, no B in G1 (ark-groth16's other branch): still its proof.
    let theirs0 =
        Groth16::<Bn254>::create_proof_with_reduction(BatchCircuit::new(w.clone()), &pk, Fr::from(0u64), s)
            .unwrap();
    let backend = Rendezvous::new(true, true);
    let key = LoadedKey::load(&backend, pk.clone()).unwrap();
    let (ours0, _) = prove(&backend, &key, BatchCircuit::new(w.clone()), Fr::from(0u64), s).unwrap();
    assert_eq!(ours0, theirs0);
    let mut log = backend.log();
    log[..2].sort();
    assert_eq!(log, ["MSMs: 2 G1, 1 G2", "quotient", "MSMs: 1 G1, 0 G2"]);

    // Not offloaded: the quotient, then the five in one batch.
    let backend = Rendezvous::new(false, false);
    let key = LoadedKey::load(&backend, pk.clone()).unwrap();
    let (ours, _) = prove(&backend, &key, BatchCircuit::new(w.clone()), r, s).unwrap();
    assert_eq!(ours, theirs);
    assert_eq!(backend.log(), ["quotient", "MSMs: 4 G1, 1 G2"]);

    // A witness that breaks a constraint is refused as such, once the MSMs
    // it started are done; the quotient and the MSM over h never run.
    let backend = Rendezvous::new(true, false);
    let key = LoadedKey::load(&backend, pk).unwrap();
    let mut bad = w;
    bad.new_roots[0] += Fr::from(1u64);
    let err = prove(&backend, &key, BatchCircuit::new(bad), r, s).unwrap_err();
    assert!(matches!(err, ProveError::Unsatisfied { .. }), "{err}");
    assert_eq!(backend.log(), ["MSMs: 3 G1, 1 G2"]);
}
