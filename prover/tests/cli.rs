//! The prover binary's command line: bad settings are refused with what was
//! wrong, before anything starts.

use std::process::Command;

fn prover(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_medrollup-prover")).args(args).output().expect("the binary runs")
}

#[test]
fn a_device_memory_that_is_not_a_size_or_too_small_is_refused_with_the_reason() {
    for (value, why) in [
        ("8GB", "unknown unit \"GB\""),
        ("lots", "is not a memory size"),
        ("0", "less than 64MiB"),
        ("16MiB", "less than 64MiB"),
    ] {
        let out = prover(&["devices", "--devices", "none", "--device-memory", value]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{value}: accepted");
        assert!(stderr.contains("--device-memory") && stderr.contains(why), "{value}: {stderr}");
    }
    let out = prover(&["devices", "--devices", "none", "--device-memory", "8GiB"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no device: the worker proves on the CPU"));
}

#[test]
fn a_worker_that_may_keep_no_key_is_refused() {
    let out = prover(&["worker", "--name", "w", "--nats-url", "nats://127.0.0.1:1", "--max-keys", "0"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("--max-keys") && stderr.contains("0 is not in 1.."), "{stderr}");
}

#[test]
fn a_zero_heartbeat_or_progress_period_is_refused() {
    for flag in ["--heartbeat-ms", "--progress-ms"] {
        let out = prover(&["worker", "--name", "w", "--nats-url", "nats://127.0.0.1:1", flag, "0"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} 0 accepted");
        assert!(stderr.contains(flag) && stderr.contains("0 is not in 1.."), "{flag}: {stderr}");
    }
}
