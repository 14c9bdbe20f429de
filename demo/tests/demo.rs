//! The main command, bounded: the whole farm starts, a short load runs, every
//! transaction ends on L1 or rejected with a reason, the snapshot is written,
//! and nothing is left running.

use std::process::Command;

#[test]
fn a_bounded_run_accounts_for_every_transaction_and_stops_everything() {
    let out = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_medrollup-demo"))
        .args(["--seconds", "5", "--concurrency", "2", "--ports", "auto", "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    println!("{stdout}");
    assert!(o.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("done: every transaction is on L1 or was rejected with a reason"), "{stdout}");
    let snap: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("throughput.json")).unwrap()).unwrap();
    let t = &snap["transactions"];
    // Two clinics: 12 accepted transactions and one refusal (the stale read) each.
    assert_eq!(t["submitted"], 26, "{snap}");
    assert_eq!(t["on_l1"], 24, "{snap}");
    assert_eq!(t["rejected"]["consent_revoked"], 2, "{snap}");
    assert_eq!(t["unaccounted"].as_array().unwrap().len(), 0, "{snap}");
    assert!(snap["proven_tx_per_s"].as_f64().unwrap() > 0.0, "{snap}");
    assert!(
        snap["latency_to_l1_s"]["p95"].as_f64().unwrap()
            >= snap["latency_to_l1_s"]["median"].as_f64().unwrap()
    );
    // Every process the demo started is gone.
    let logs = out.path().join("logs");
    for name in
        ["nats-server", "anvil", "coordinator", "worker-hospital-1", "worker-hospital-2", "prometheus"]
    {
        assert!(logs.join(format!("{name}.log")).exists(), "{name} ran");
    }
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout);
    let dir = out.path().to_string_lossy();
    assert!(!ps.lines().any(|l| l.contains(dir.as_ref())), "left running:\n{ps}");
}
