//! The command line on good and bad input: every refusal says what was wrong.

mod common;

use std::path::Path;
use std::process::Command;

fn run(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_medrollup-circuits"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the binary runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn sample_build_prove_verify_and_bad_input() {
    let dir = common::temp_dir("cli");
    let (ok, out) = run(&dir, &["sample", "--levels", "5", "--out", "s"]);
    assert!(ok, "{out}");

    // One transaction with a forged signature: listed with its reason, the rest batched.
    let txs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("s/txs.json")).unwrap()).unwrap();
    let mut edited = txs.clone();
    edited[3]["expiry"] = serde_json::json!(1_767_312_001u64);
    std::fs::write(dir.join("s/edited.json"), edited.to_string()).unwrap();
    let (ok, out) = run(
        &dir,
        &[
            "build-batch",
            "--genesis",
            "s/genesis.json",
            "--txs",
            "s/edited.json",
            "--batch-size",
            "16",
            "--out",
            "b1",
        ],
    );
    assert!(ok, "{out}");
    assert!(out.contains("transaction 3 (grant) rejected: signature of account 10 does not verify"), "{out}");
    // ... and what depended on it (the add-record using consent 100) is refused for its own reason.
    assert!(out.contains("transaction 4 (add_record) rejected: consent 100 does not exist"), "{out}");

    // Malformed files name the file and the problem.
    std::fs::write(
        dir.join("s/bad.json"),
        r#"[{"signer": 1, "nonce": 0, "type": "teleport", "signature": {"r8": ["0", "1"], "s": "0"}}]"#,
    )
    .unwrap();
    let (ok, out) = run(&dir, &["build-batch", "--genesis", "s/genesis.json", "--txs", "s/bad.json"]);
    assert!(!ok);
    assert!(out.contains("s/bad.json is not a valid transaction list") && out.contains("teleport"), "{out}");
    let mut big_s = txs.clone();
    big_s[0]["signature"]["s"] =
        serde_json::json!("2736030358979909402780800718157159386076813972158567259200215660948447373041");
    std::fs::write(dir.join("s/bigs.json"), big_s.to_string()).unwrap();
    let (ok, out) = run(&dir, &["build-batch", "--genesis", "s/genesis.json", "--txs", "s/bigs.json"]);
    assert!(!ok);
    assert!(out.contains("not below the Baby Jubjub subgroup order"), "{out}");
    let (ok, out) = run(&dir, &["build-batch", "--genesis", "s/missing.json", "--txs", "s/txs.json"]);
    assert!(!ok && out.contains("s/missing.json"), "{out}");

    // Keys, a proof, verification; a proof checked against other public inputs fails.
    let (ok, out) = run(
        &dir,
        &[
            "build-batch",
            "--genesis",
            "s/genesis.json",
            "--txs",
            "s/txs.json",
            "--batch-size",
            "2",
            "--out",
            "b",
        ],
    );
    assert!(ok && out.contains("8 batches, 0 transactions rejected"), "{out}");
    let (ok, out) = run(&dir, &["setup", "--batch-size", "2", "--levels", "5", "--seed", "3", "--out", "k"]);
    assert!(ok && out.contains("multi-party ceremony"), "{out}");
    let (ok, out) = run(&dir, &["prove", "--keys", "k", "--batch", "b/batch-0001.json", "--out", "p"]);
    assert!(ok, "{out}");
    let (ok, out) =
        run(&dir, &["verify", "--keys", "k", "--proof", "p/proof.json", "--public", "p/public.json"]);
    assert!(ok && out.contains("OK"), "{out}");
    let mut public: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("p/public.json")).unwrap()).unwrap();
    public[0] = "12345".into();
    std::fs::write(dir.join("p/other.json"), serde_json::to_string(&public).unwrap()).unwrap();
    let (ok, out) =
        run(&dir, &["verify", "--keys", "k", "--proof", "p/proof.json", "--public", "p/other.json"]);
    assert!(!ok && out.contains("does NOT verify"), "{out}");
    // A batch of another shape is refused before proving.
    let (ok, out) = run(&dir, &["prove", "--keys", "k", "--batch", "b1/batch-0000.json", "--out", "p2"]);
    assert!(!ok && out.contains("the keys are for 2 slots"), "{out}");
}
