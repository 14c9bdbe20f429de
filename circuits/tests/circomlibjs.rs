//! Signatures made here verify in circomlibjs (npm, the reference
//! implementation), and altered ones do not. The signatures in
//! `testdata/medrollup_signatures.json` were made by this crate; the test
//! checks that signing still reproduces them and that circomlibjs accepts them.

mod common;

use medrollup_circuits::Fr;
use medrollup_circuits::eddsa::{PrivateKey, Signature};
use medrollup_circuits::field::fr_to_dec;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct Case {
    prv: String,
    msg: String,
    r#pub: [String; 2],
    r8: [String; 2],
    s: String,
}

fn cases() -> Vec<Case> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2026);
    (0..8)
        .map(|i| {
            let prv = PrivateKey::from_bytes(rng.r#gen());
            let msg = match i {
                0 => Fr::from(0u64),
                1 => -Fr::from(1u64),
                _ => Fr::from(rng.r#gen::<u128>()) * Fr::from(rng.r#gen::<u128>()),
            };
            let pk = prv.public();
            let sig = prv.sign(msg);
            let sj: serde_json::Value = serde_json::to_value(sig).unwrap();
            Case {
                prv: hex::encode(prv.to_bytes()),
                msg: fr_to_dec(&msg),
                r#pub: [fr_to_dec(&pk.x), fr_to_dec(&pk.y)],
                r8: [fr_to_dec(&sig.r8x), fr_to_dec(&sig.r8y)],
                s: sj["s"].as_str().unwrap().to_owned(),
            }
        })
        .collect()
}

#[test]
fn our_signatures_verify_in_circomlibjs() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/medrollup_signatures.json");
    let ours = cases();
    if std::env::var_os("MEDROLLUP_REGENERATE").is_some() {
        std::fs::write(path, serde_json::to_vec_pretty(&ours).unwrap()).unwrap();
    }
    let kept: Vec<Case> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(kept, ours, "signing reproduces the kept vectors");

    let (ok, out) = common::node(&["verify-eddsa.mjs", path]);
    assert!(ok, "verify-eddsa.mjs ran: {out}");
    let verdicts: Vec<bool> = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(verdicts, vec![true; ours.len()], "circomlibjs accepts every signature");

    // Altered copies: another message, another S, another key.
    let mut altered = cases();
    altered[0].msg = "1".into();
    let s: num_bigint::BigUint = altered[1].s.parse().unwrap();
    altered[1].s = (s + 1u32).to_string();
    altered[2].r#pub = altered[3].r#pub.clone();
    let tmp = common::temp_dir("eddsa").join("altered.json");
    std::fs::write(&tmp, serde_json::to_vec(&altered).unwrap()).unwrap();
    let (ok, out) = common::node(&["verify-eddsa.mjs", tmp.to_str().unwrap()]);
    assert!(ok, "{out}");
    let verdicts: Vec<bool> = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(&verdicts[..4], &[false, false, false, true]);
    // Parsing keeps S below the subgroup order on our side as well.
    let _ = Signature::parse_s(&altered[1].s).unwrap();
}
