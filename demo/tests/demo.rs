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
    let cores = std::thread::available_parallelism().unwrap().get() as u64;
    assert_eq!(snap["worker_threads"], (cores / 2).max(1), "half the cores by default: {snap}");
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

fn demo(out: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_medrollup-demo"));
    c.args(["--seconds", "5", "--concurrency", "1", "--ports", "auto", "--out"]).arg(out);
    c
}

/// Processes whose command line names `dir`.
fn running_in(dir: &std::path::Path) -> Vec<String> {
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    let dir = dir.to_string_lossy().to_string();
    String::from_utf8_lossy(&ps.stdout).lines().filter(|l| l.contains(&dir)).map(str::to_string).collect()
}

#[test]
fn a_folder_of_other_files_or_one_a_demo_runs_in_is_left_alone() {
    let out = tempfile::tempdir().unwrap();
    std::fs::write(out.path().join("precious.txt"), "mine").unwrap();
    let o = demo(out.path()).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && stderr.contains("holds files the demo did not make"), "{stderr}");
    assert_eq!(std::fs::read_to_string(out.path().join("precious.txt")).unwrap(), "mine");

    // A folder the demo made, while another demo holds it.
    let out = tempfile::tempdir().unwrap();
    let marker = std::fs::File::create(out.path().join(".medrollup-demo")).unwrap();
    marker.try_lock().unwrap();
    std::fs::write(out.path().join("throughput.json"), "{}").unwrap();
    let o = demo(out.path()).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && stderr.contains("another medrollup-demo runs in"), "{stderr}");
    assert!(out.path().join("throughput.json").exists(), "nothing cleared");
}

/// Starts the demo and waits until its coordinator is starting (nats-server
/// and anvil up).
fn demo_starting(out: &std::path::Path) -> std::process::Child {
    let child = demo(out).stdout(std::process::Stdio::null()).spawn().unwrap();
    let t = std::time::Instant::now();
    while !out.join("logs/coordinator.log").exists() {
        assert!(t.elapsed() < std::time::Duration::from_secs(120), "the coordinator never started");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child
}

/// The processes `pid` started.
fn children_of(pid: u32) -> Vec<String> {
    let ps = Command::new("ps").args(["-o", "pid=", "--ppid", &pid.to_string()]).output().unwrap();
    String::from_utf8_lossy(&ps.stdout).split_whitespace().map(str::to_string).collect()
}

/// Waits until none of `pids` runs, nor anything naming `dir`; fails after
/// `within`.
fn wait_gone(pids: &[String], dir: &std::path::Path, within: std::time::Duration) {
    let t = std::time::Instant::now();
    loop {
        let mut left = running_in(dir);
        // `ps -p` lists those alive (zombies of a dead parent are reaped by init).
        let ps = Command::new("ps").args(["-o", "args=", "-p", &pids.join(",")]).output().unwrap();
        left.extend(String::from_utf8_lossy(&ps.stdout).lines().map(str::to_string));
        if left.is_empty() {
            return;
        }
        assert!(t.elapsed() < within, "left running: {left:?}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn a_ctrl_c_while_starting_stops_everything_and_exits_130() {
    let out = tempfile::tempdir().unwrap();
    let mut child = demo_starting(out.path());
    let started = children_of(child.id());
    assert!(started.len() >= 3, "nats-server, anvil and the coordinator run: {started:?}");
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "exit status of an interrupted run");
    wait_gone(&started, out.path(), std::time::Duration::from_secs(5));
}

#[test]
fn a_demo_killed_outright_leaves_no_service_running() {
    let out = tempfile::tempdir().unwrap();
    let mut child = demo_starting(out.path());
    let started = children_of(child.id());
    assert!(started.len() >= 3, "nats-server, anvil and the coordinator run: {started:?}");
    child.kill().unwrap(); // SIGKILL: the demo stops nothing itself
    child.wait().unwrap();
    wait_gone(&started, out.path(), std::time::Duration::from_secs(30));
}

#[test]
fn a_ctrl_c_during_the_first_runs_key_setup_ends_the_demo_at_once() {
    use std::io::BufRead;
    let out = tempfile::tempdir().unwrap();
    let keys = out.path().join("keys");
    let mut child = demo(&out.path().join("farm"))
        .arg("--keys-dir")
        .arg(&keys)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    while !seen.last().is_some_and(|l: &String| l.contains("first run: a seeded development setup")) {
        seen.push(lines.next().expect("the demo said it sets keys up").unwrap());
    }
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    // The setup takes some seconds (8 on the 2-core development machine):
    // the demo must not wait for it.
    let t = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > std::time::Duration::from_secs(4) {
            child.kill().unwrap();
            panic!("still running 4 s after Ctrl-C during the key setup");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(130));
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l.contains("stopped during the first run's key setup")), "{rest:?}");
    assert!(!keys.join("keys.json").exists(), "no keys kept from a setup cut short");
    assert!(running_in(out.path()).is_empty(), "nothing started");
}
