//! Test harness: a real nats-server with the farm's users and permissions,
//! keys for a small circuit, the coordinator and workers as processes, and a
//! client that submits over NATS and reads the HTTP API.

#![allow(dead_code)]

use async_nats::jetstream;
use futures::StreamExt;
use medrollup_circuits::keys::{self, CircuitShape};
use medrollup_wire::{TxAnswer, subjects, tx_id};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The farm's credentials in the test server.
pub const COORDINATOR: (&str, &str) = ("coordinator", "coordinator-test-secret");
/// A hospital worker.
pub const WORKER: (&str, &str) = ("worker", "worker-test-secret");
/// A patient's or doctor's client.
pub const CLIENT: (&str, &str) = ("client", "client-test-secret");

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace").to_path_buf()
}

/// The nats-server binary: `MEDROLLUP_NATS_SERVER`, `.tools/venv/bin` (what
/// `scripts/services` installs), or the PATH.
pub fn nats_server_bin() -> PathBuf {
    if let Ok(p) = std::env::var("MEDROLLUP_NATS_SERVER") {
        return p.into();
    }
    let local = root().join(".tools/venv/bin/nats-server");
    if local.exists() {
        return local;
    }
    if Command::new("nats-server").arg("--version").output().is_ok() {
        return "nats-server".into();
    }
    panic!("no nats-server: run ./scripts/services (installs it into .tools/), or set MEDROLLUP_NATS_SERVER");
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The workers the tests start by name, each with its own NATS user
/// (`worker-<name>`, password `<name>-test-secret`), allowed only its own
/// result and heartbeat subjects, as `medrollup-coordinator nats-config`
/// makes them.
pub const WORKERS: &[&str] = &[
    "hospital-a",
    "hospital-b",
    "hospital-0",
    "hospital-1",
    "gpu-hospital",
    "doomed",
    "survivor",
    "honest",
    "steady",
    "stuck",
    "drilled",
];

/// The NATS credential of the test worker `name`.
pub fn worker_credential(name: &str) -> (String, String) {
    assert!(WORKERS.contains(&name), "worker {name:?} has no NATS user: add it to common::WORKERS");
    (medrollup_wire::natsconf::worker_user(name), format!("{name}-test-secret"))
}

/// The farm's configuration (`medrollup_wire::natsconf`): the coordinator,
/// the clients, a user per test worker, and [`WORKER`], one credential that
/// may use any worker name (as a farm that shares one among its workers),
/// which the hostile-worker tests use.
pub fn nats_config(port: u16, store: &Path) -> String {
    use medrollup_wire::natsconf::{Role, User, server_config};
    let user =
        |(user, password): (&str, &str), role| User { user: user.into(), password: password.into(), role };
    let mut users = vec![
        user(COORDINATOR, Role::Coordinator),
        user(CLIENT, Role::Clients),
        user(WORKER, Role::Worker(None)),
    ];
    for name in WORKERS {
        let (u, p) = worker_credential(name);
        users.push(user((&u, &p), Role::Worker(Some(name.to_string()))));
    }
    server_config("127.0.0.1", port, store, &users).unwrap()
}

/// A process whose output goes to a log file, killed when dropped; the log's
/// tail is printed if the test is failing.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command, log_dir: &Path) -> Self {
        let log = log_dir.join(format!("{name}.log"));
        let f = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let child = cmd
            .stdout(Stdio::from(f.try_clone().unwrap()))
            .stderr(Stdio::from(f))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Proc { name: name.into(), child, log }
    }

    /// SIGKILL: no cleanup of any kind.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            let text = self.log_text();
            // Backtrace frames would crowd out the error they follow.
            let frame = |l: &&str| {
                let t = l.trim_start();
                t.starts_with("at ") || t.split_once(": ").is_some_and(|(n, _)| n.parse::<u32>().is_ok())
            };
            let tail: Vec<&str> = text.lines().rev().filter(|l| !frame(l)).take(40).collect();
            let mut err = std::io::stderr();
            let _ = writeln!(err, "---- last lines of {} ----", self.name);
            for l in tail.iter().rev() {
                let _ = writeln!(err, "{l}");
            }
        }
    }
}

/// A nats-server with JetStream and the farm's users.
pub struct Nats {
    pub port: u16,
    pub url: String,
    pub proc: Proc,
    conf: PathBuf,
    dir: PathBuf,
}

impl Nats {
    pub fn start(dir: &Path) -> Self {
        let port = free_port();
        let store = dir.join("jetstream");
        let conf = dir.join("nats.conf");
        std::fs::write(&conf, nats_config(port, &store)).unwrap();
        let proc = Self::spawn(&conf, dir, port);
        Nats { port, url: format!("nats://127.0.0.1:{port}"), proc, conf, dir: dir.to_path_buf() }
    }

    fn spawn(conf: &Path, dir: &Path, port: u16) -> Proc {
        let proc = Proc::spawn("nats-server", Command::new(nats_server_bin()).arg("-c").arg(conf), dir);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start:\n{}", proc.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
        proc
    }

    /// Kills the server (SIGKILL) and starts it again on the same port with
    /// the same JetStream store.
    pub fn restart(&mut self) {
        self.proc.kill9();
        self.proc = Self::spawn(&self.conf, &self.dir, self.port);
    }

    /// Connects as `user`, under the inbox prefix its permissions allow.
    pub async fn connect(&self, (user, password): (&str, &str)) -> async_nats::Client {
        connect_options(user, password).connect(self.url.as_str()).await.unwrap()
    }
}

/// Options to connect as `user` (a worker's `worker-<name>`, the clients',
/// or another), under the inbox prefix its permissions allow.
pub fn connect_options(user: &str, password: &str) -> async_nats::ConnectOptions {
    use medrollup_wire::natsconf::{CLIENTS_INBOX, worker_inbox};
    let inbox = match user.strip_prefix("worker-") {
        _ if user == CLIENT.0 => CLIENTS_INBOX.to_string(),
        Some(name) => worker_inbox(name),
        None => "_INBOX".to_string(),
    };
    async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
        .custom_inbox_prefix(inbox)
}

/// Keys for `shape`, made once per test binary and shape (seeded setup).
pub fn keys_dir(shape: CircuitShape) -> PathBuf {
    keys_dir_seeded(shape, 7)
}

/// Keys for `shape` from a setup with `seed`, made once per test binary.
pub fn keys_dir_seeded(shape: CircuitShape, seed: u64) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "medrollup-test-keys-{}-{}-{seed}-{}",
        shape.batch_size,
        shape.levels,
        std::process::id()
    ));
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if !dir.join("keys.json").exists() {
        let pk = keys::setup(shape, Some(seed)).unwrap();
        keys::write_keys(&dir, shape, &pk, true).unwrap();
    }
    dir
}

/// The coordinator binary of this package.
pub fn coordinator_bin() -> PathBuf {
    env!("CARGO_BIN_EXE_medrollup-coordinator").into()
}

/// The worker binary (`medrollup-prover`), built beside this package's
/// binaries by `cargo test --workspace`.
pub fn prover_bin() -> PathBuf {
    let p = coordinator_bin().with_file_name("medrollup-prover");
    assert!(
        p.exists(),
        "{} is missing: run the tests with --workspace (cargo builds the prover package's binary for its tests), \
         or `cargo build -p medrollup-prover` first",
        p.display()
    );
    p
}

/// A coordinator process.
pub struct Coordinator {
    pub http: String,
    pub proc: Proc,
}

/// Options for a coordinator process.
pub struct CoordinatorOpts<'a> {
    pub nats: &'a Nats,
    pub keys: &'a Path,
    pub data: &'a Path,
    pub logs: &'a Path,
    pub http_port: u16,
    pub seal_timeout_ms: u64,
    pub job_ack_wait_s: u64,
    pub job_max_deliver: i64,
    /// Seconds a dead job stays parked before it is queued again.
    pub dead_job_retry_s: u64,
    /// Seconds a job may be gone from the queue with no result.
    pub job_lost_after_s: u64,
    /// `(RPC URL, key, confirmations)` to land batches on L1.
    pub l1: Option<(&'a str, &'a str, u64)>,
    /// An IPFS node's RPC API as the content store.
    pub ipfs_api: Option<&'a str>,
}

impl<'a> CoordinatorOpts<'a> {
    /// The tests' usual settings: seal after 500 ms, jobs acked within 30 s
    /// and delivered at most 5 times, no L1, the embedded content store.
    pub fn new(nats: &'a Nats, keys: &'a Path, data: &'a Path, logs: &'a Path, http_port: u16) -> Self {
        CoordinatorOpts {
            nats,
            keys,
            data,
            logs,
            http_port,
            seal_timeout_ms: 500,
            job_ack_wait_s: 30,
            job_max_deliver: 5,
            dead_job_retry_s: 300,
            job_lost_after_s: 30,
            l1: None,
            ipfs_api: None,
        }
    }
}

impl Coordinator {
    fn command(o: &CoordinatorOpts<'_>) -> Command {
        let mut cmd = Command::new(coordinator_bin());
        if let Some((rpc, key, confirmations)) = o.l1 {
            cmd.args(["--l1-rpc", rpc, "--l1-confirmations", &confirmations.to_string()])
                .args(["--l1-stuck-after-ms", "3000", "--l1-owner", medrollup_l1::devnet::DEV_OWNER])
                .env("MEDROLLUP_L1_KEY", key);
        }
        if let Some(api) = o.ipfs_api {
            cmd.args(["--ipfs-api", api]);
        }
        cmd.args(["--nats-url", &o.nats.url, "--nats-user", COORDINATOR.0])
            .env("MEDROLLUP_NATS_PASSWORD", COORDINATOR.1)
            .arg("--data-dir")
            .arg(o.data)
            .arg("--keys-dir")
            .arg(o.keys)
            .args(["--http", &format!("127.0.0.1:{}", o.http_port)])
            .args(["--seal-timeout-ms", &o.seal_timeout_ms.to_string()])
            .args(["--job-ack-wait-s", &o.job_ack_wait_s.to_string()])
            .args(["--job-max-deliver", &o.job_max_deliver.to_string()])
            .args(["--dead-job-retry-s", &o.dead_job_retry_s.to_string()])
            .args(["--job-lost-after-s", &o.job_lost_after_s.to_string()])
            .env("RUST_LOG", "warn,medrollup_coordinator=info,medrollup_prover=info");
        cmd
    }

    pub fn start(o: &CoordinatorOpts<'_>) -> Self {
        let http = format!("http://127.0.0.1:{}", o.http_port);
        let proc = Proc::spawn("coordinator", &mut Self::command(o), o.logs);
        let mut c = Coordinator { http, proc };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", o.http_port)).is_ok() {
                break;
            }
            if let Ok(Some(status)) = c.proc.child.try_wait() {
                panic!("the coordinator exited ({status}):\n{}", c.proc.log_text());
            }
            assert!(Instant::now() < deadline, "the coordinator did not start:\n{}", c.proc.log_text());
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }

    /// Starts a coordinator that must refuse to run: returns its log once
    /// it has exited with an error.
    pub fn refused(o: &CoordinatorOpts<'_>) -> String {
        // Its log is appended to: only what this run wrote is returned.
        let before =
            std::fs::metadata(o.logs.join("coordinator-refused.log")).map_or(0, |m| m.len() as usize);
        let mut p = Proc::spawn("coordinator-refused", &mut Self::command(o), o.logs);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = p.child.try_wait() {
                assert!(!status.success(), "the coordinator exited cleanly:\n{}", p.log_text());
                return p.log_text().get(before..).unwrap_or_default().to_string();
            }
            assert!(
                std::net::TcpStream::connect(("127.0.0.1", o.http_port)).is_err(),
                "the coordinator runs:\n{}",
                p.log_text()
            );
            assert!(Instant::now() < deadline, "the coordinator did not exit:\n{}", p.log_text());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A worker process named `name`.
pub fn start_worker(nats: &Nats, name: &str, cache: &Path, logs: &Path) -> Proc {
    start_worker_with(nats, name, cache, logs, &[])
}

/// A worker process named `name`, with more arguments.
pub fn start_worker_with(nats: &Nats, name: &str, cache: &Path, logs: &Path, extra: &[&str]) -> Proc {
    let (user, password) = worker_credential(name);
    Proc::spawn(
        &format!("worker-{name}"),
        Command::new(prover_bin())
            .args(["worker", "--nats-url", &nats.url, "--nats-user", &user, "--name", name])
            .args(extra)
            .env("MEDROLLUP_NATS_PASSWORD", password)
            .arg("--cache-dir")
            .arg(cache)
            .args(["--heartbeat-ms", "200", "--progress-ms", "500"])
            .env("RUST_LOG", "warn,medrollup_coordinator=info,medrollup_prover=info")
            .env("RAYON_NUM_THREADS", "1"),
        logs,
    )
}

/// A worker's options for proving on the OpenCL device (POCL's CPU device
/// in CI), without precomputed bases: on a CPU device they cost more than
/// they save.
pub const OPENCL_WORKER: &[&str] = &["--devices", "opencl", "--opencl-cpu", "--precompute-min", "100000000"];

/// The OpenCL device a worker would use here (POCL in CI). `None`, with the
/// reason printed, where there is none; with `MEDROLLUP_REQUIRE_OPENCL=1`
/// (the test command sets it) having none fails instead.
pub fn opencl_device() -> Option<String> {
    let out = Command::new(prover_bin())
        .args(["devices", "--devices", "opencl", "--opencl-cpu"])
        .output()
        .expect("medrollup-prover devices runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}");
    match text.lines().find_map(|l| l.strip_prefix("device ")) {
        Some(l) => Some(l.split(" (opencl").next().unwrap_or(l).to_string()),
        None => {
            assert!(
                std::env::var("MEDROLLUP_REQUIRE_OPENCL").as_deref() != Ok("1"),
                "MEDROLLUP_REQUIRE_OPENCL=1 but there is no OpenCL device: {text}"
            );
            println!("skipped: no OpenCL device ({text})");
            None
        }
    }
}

/// A client: publishes transactions and waits for their answers.
#[derive(Clone)]
pub struct Client {
    pub nats: async_nats::Client,
    pub js: jetstream::Context,
}

impl Client {
    pub async fn connect(nats: &Nats) -> Self {
        let c = nats.connect(CLIENT).await;
        Client { js: jetstream::new(c.clone()), nats: c }
    }

    /// Publishes `payload` and returns the coordinator's answer.
    pub async fn submit_bytes(&self, payload: Vec<u8>) -> TxAnswer {
        let id = tx_id(&payload);
        let mut sub = self.nats.subscribe(subjects::answer(&id)).await.unwrap();
        self.nats.flush().await.unwrap();
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", id.as_str());
        let ack = self
            .js
            .publish_with_headers(subjects::TX_SUBMIT, headers, payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(!ack.duplicate, "a fresh payload must not be a stream duplicate");
        let m = tokio::time::timeout(Duration::from_secs(120), sub.next())
            .await
            .unwrap_or_else(|_| panic!("no answer to {id} within 120 s"))
            .expect("subscription open");
        serde_json::from_slice(&m.payload).unwrap()
    }

    /// Publishes without waiting for the answer (the stream keeps it).
    pub async fn publish_only(&self, payload: Vec<u8>) {
        let id = tx_id(&payload);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", id.as_str());
        self.js
            .publish_with_headers(subjects::TX_SUBMIT, headers, payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
}

/// Adds content through the coordinator's Kubo-compatible API.
pub async fn kubo_add(http: &str, bytes: Vec<u8>) -> String {
    let part = reqwest::multipart::Part::bytes(bytes)
        .file_name("record")
        .mime_str("application/octet-stream")
        .unwrap();
    let form = reqwest::multipart::Form::new().part("file", part);
    let r = reqwest::Client::new()
        .post(format!("{http}/api/v0/add?cid-version=1&raw-leaves=true"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "add: {}", r.status());
    let v: serde_json::Value = r.json().await.unwrap();
    v["Hash"].as_str().unwrap().to_string()
}

/// GET a JSON document.
pub async fn get_json(url: &str) -> serde_json::Value {
    let r = reqwest::get(url).await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert!(r.status().is_success(), "GET {url}: {}", r.status());
    r.json().await.unwrap()
}

/// Waits until `f` returns `Some`, polling.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Unix seconds now.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// Replays every sealed batch from its published data (fetched through the
/// Kubo API by CID) onto the genesis state, checks each batch's public inputs
/// and returns the final root, the submitted transaction ids in order, and
/// the number of batches.
pub async fn native_replay(
    http: &str,
    genesis: &medrollup_circuits::state::Genesis,
) -> (String, Vec<String>, u64) {
    use medrollup_circuits::batch::OpenBatch;
    use medrollup_circuits::state::State;
    let root = get_json(&format!("{http}/root")).await;
    let sealed = root["batches_sealed"].as_u64().unwrap();
    let mut state = State::genesis(genesis).unwrap();
    let mut ids = Vec::new();
    for n in 0..sealed {
        let b = get_json(&format!("{http}/batch/{n}")).await;
        let cid = b["cid"].as_str().unwrap();
        let data = reqwest::Client::new().post(format!("{http}/api/v0/cat?arg={cid}")).send().await.unwrap();
        assert!(data.status().is_success());
        let data: medrollup_wire::BatchData = serde_json::from_slice(&data.bytes().await.unwrap()).unwrap();
        assert_eq!(serde_json::to_value(data.public_inputs).unwrap(), b["public_inputs"]);
        let tx_ids: Vec<String> = serde_json::from_value(b["tx_ids"].clone()).unwrap();
        let mut open = OpenBatch::new(&state, data.txs.len(), data.public_inputs.timestamp);
        for tx in &data.txs[..tx_ids.len()] {
            open.push(&mut state, tx)
                .unwrap_or_else(|e| panic!("batch {n}: a published transaction does not replay: {e}"));
        }
        let w = open.finish(&mut state);
        assert_eq!(w.public_inputs(), data.public_inputs, "batch {n} replays to its public inputs");
        ids.extend(tx_ids);
    }
    (medrollup_circuits::field::fr_to_dec(&state.root()), ids, sealed)
}

/// As the dev rollup's owner, proposes (or with `propose` false, withdraws)
/// a verifier for other keys: a contract installed at a fixed address whose
/// `vkHash()` is 0xabab..ab and which verifies nothing (every other call
/// returns false). Returns its address.
pub async fn foreign_verifier_proposal(
    rpc_url: &str,
    rollup: alloy::primitives::Address,
    propose: bool,
) -> alloy::primitives::Address {
    claiming_verifier_proposal(rpc_url, rollup, propose, [0xab; 32]).await
}

/// As [`foreign_verifier_proposal`], with a contract whose `vkHash()`
/// reports `vk` (a farm's own, for a verifier that only claims its keys).
pub async fn claiming_verifier_proposal(
    rpc_url: &str,
    rollup: alloy::primitives::Address,
    propose: bool,
    vk: [u8; 32],
) -> alloy::primitives::Address {
    use alloy::providers::Provider;
    use alloy::sol_types::SolCall;
    use medrollup_l1::contracts::{BatchVerifier, MedRollup};
    use medrollup_l1::submitter::{self, L1Config};
    let foreign = alloy::primitives::Address::repeat_byte(0xf0);
    if propose {
        // selector = calldata >> 224; if it is vkHash()'s, return the word,
        // else return 32 zero bytes (false).
        let mut code = vec![0x60, 0x00, 0x35, 0x60, 0xe0, 0x1c, 0x63];
        code.extend_from_slice(&BatchVerifier::vkHashCall::SELECTOR);
        code.extend_from_slice(&[0x14, 0x60, 25, 0x57]); // EQ, JUMPI to 25
        code.extend_from_slice(&[0x60, 0x00, 0x60, 0x00, 0x52, 0x60, 0x20, 0x60, 0x00, 0xf3]);
        code.extend_from_slice(&[0x5b, 0x7f]); // 25: JUMPDEST, PUSH32 vk
        code.extend_from_slice(&vk);
        code.extend_from_slice(&[0x60, 0x00, 0x52, 0x60, 0x20, 0x60, 0x00, 0xf3]);
        let owner =
            L1Config::local(rpc_url, submitter::parse_key(medrollup_l1::devnet::DEV_OWNER_KEY).unwrap());
        let p = submitter::connect(&owner).unwrap();
        let code = serde_json::json!([foreign, format!("0x{}", hex::encode(code))]);
        let _: serde_json::Value = p.raw_request("anvil_setCode".into(), code).await.unwrap();
    }
    let data = if propose {
        MedRollup::proposeVerifierCall { next: foreign }.abi_encode()
    } else {
        MedRollup::cancelVerifierCall {}.abi_encode()
    };
    owner_call(rpc_url, rollup, data).await;
    foreign
}

/// Sends `data` to the dev rollup as its owner; fails if it reverts.
pub async fn owner_call(rpc_url: &str, rollup: alloy::primitives::Address, data: Vec<u8>) {
    use medrollup_l1::submitter::{self, L1Config};
    let owner = L1Config::local(rpc_url, submitter::parse_key(medrollup_l1::devnet::DEV_OWNER_KEY).unwrap());
    let r = submitter::send_and_wait(&owner, Some(rollup), data.into(), 300_000).await.unwrap();
    assert!(r.status(), "the owner's call reverted");
}
