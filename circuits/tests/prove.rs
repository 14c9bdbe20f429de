//! End to end with real keys: a batch of B = 4 at small depth is proven with
//! ark-groth16 and verified by ark-groth16 and by snarkjs (npm), from key files
//! loaded through their content hashes.

mod common;

use medrollup_circuits::Fr;
use medrollup_circuits::batch::BatchBuilder;
use medrollup_circuits::keys::{self, CircuitShape, KeyError};
use medrollup_circuits::sample::{self, NOW};
use medrollup_circuits::snarkjs;
use medrollup_circuits::state::State;

#[test]
fn batch_of_four_is_proven_and_verified_here_and_by_snarkjs() {
    let shape = CircuitShape { batch_size: 4, levels: 5 };
    let dir = common::temp_dir("prove");
    let pk = keys::setup(shape, Some(7)).unwrap();
    let manifest = keys::write_keys(&dir, shape, &pk, true).unwrap();
    assert!(manifest.proving_key.contains(&manifest.proving_key_sha256[..16]), "named by content hash");

    let (m, pk) = keys::load_proving_key(&dir).unwrap();
    let (_, vk) = keys::load_verifying_key(&dir).unwrap();
    let pvk = keys::prepare(&vk);

    let mut state = State::genesis(&sample::genesis(shape.levels)).unwrap();
    let mut b = BatchBuilder::new(&mut state, 4, NOW);
    for tx in &sample::transactions()[..4] {
        b.push(tx).unwrap();
    }
    let witness = b.finish();
    let (proof, public) = keys::prove(&pk, m.shape, witness).unwrap();
    assert_eq!(public.new_root, state.root());
    assert!(keys::verify(&pvk, &public, &proof), "ark-groth16 verifies");
    for i in 0..4 {
        let mut wrong = public.to_vec();
        wrong[i] += Fr::from(1u64);
        let wrong = medrollup_circuits::batch::PublicInputs {
            old_root: wrong[0],
            new_root: wrong[1],
            tx_commitment: wrong[2],
            timestamp: public.timestamp + u64::from(i == 3),
        };
        assert!(!keys::verify(&pvk, &wrong, &proof), "public input {i} altered");
    }

    // snarkjs round trip: the exported proof parses back to the same proof ...
    let sp = snarkjs::proof(&proof);
    assert_eq!(snarkjs::parse_proof(&sp).unwrap(), proof);
    // ... and snarkjs itself verifies it against the exported key.
    let out = common::temp_dir("snarkjs");
    let write = |name: &str, v: &dyn erased::Json| std::fs::write(out.join(name), v.json()).unwrap();
    write("proof.json", &sp);
    write("public.json", &snarkjs::public_inputs(&public.to_vec()));
    std::fs::copy(dir.join(&m.verifying_key_snarkjs), out.join("vk.json")).unwrap();
    let verify = |public: &str| {
        common::node(&[
            "node_modules/snarkjs/build/cli.cjs",
            "groth16",
            "verify",
            out.join("vk.json").to_str().unwrap(),
            out.join(public).to_str().unwrap(),
            out.join("proof.json").to_str().unwrap(),
        ])
    };
    let (ok, text) = verify("public.json");
    assert!(ok && text.contains("OK"), "snarkjs verifies our proof: {text}");
    let mut wrong = public.to_vec();
    wrong[1] += Fr::from(1u64);
    write("wrong.json", &snarkjs::public_inputs(&wrong));
    let (ok, text) = verify("wrong.json");
    assert!(!ok, "snarkjs refuses a wrong new root: {text}");

    // A proving key file that no longer matches its hash is refused before use.
    let pk_path = dir.join(&m.proving_key);
    let mut bytes = std::fs::read(&pk_path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&pk_path, bytes).unwrap();
    assert!(matches!(keys::load_proving_key(&dir), Err(KeyError::HashMismatch { .. })));
}

/// Serialise anything to JSON through one closure type.
mod erased {
    pub trait Json {
        fn json(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Json for T {
        fn json(&self) -> Vec<u8> {
            serde_json::to_vec_pretty(self).unwrap()
        }
    }
}
