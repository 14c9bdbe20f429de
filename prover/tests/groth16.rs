//! The prover against ark-groth16 on the batch circuit: the same proof bit for
//! bit with the same randomness, and proofs that ark-groth16's verifier accepts.

use ark_bn254::{Bn254, Fr};
use ark_ff::UniformRand;
use ark_groth16::Groth16;
use ark_snark::SNARK;
use medrollup_circuits::circuit::BatchCircuit;
use medrollup_circuits::keys::{self, CircuitShape};
use medrollup_circuits::sample::batch;
use medrollup_prover::CpuBackend;
use medrollup_prover::groth16::{LoadedKey, ProveError, prove};

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
    let (ours, times) = prove(&backend, &key, BatchCircuit::new(w.clone()), r, s).unwrap();
    assert_eq!(ours, theirs, "same randomness, same proof");
    assert!(times.ntt > std::time::Duration::ZERO && times.msm_h > std::time::Duration::ZERO);

    let pvk = keys::prepare(&pk.vk);
    let public = w.public_inputs();
    let (fresh, _) =
        prove(&backend, &key, BatchCircuit::new(w.clone()), Fr::rand(&mut rng), Fr::rand(&mut rng)).unwrap();
    assert_ne!(fresh, ours);
    assert!(Groth16::<Bn254>::verify_with_processed_vk(&pvk, &public.to_vec(), &fresh).unwrap());
    let mut wrong = public.to_vec();
    wrong[1] += Fr::from(1u64);
    assert!(!Groth16::<Bn254>::verify_with_processed_vk(&pvk, &wrong, &fresh).unwrap());

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
