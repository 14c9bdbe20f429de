//! `medrollup-demo` (what `make demo` runs): the whole farm on this machine,
//! under a realistic load, until a bound; then every transaction accounted
//! for and a throughput snapshot.
//!
//! It starts nats-server, anvil, the coordinator (which deploys the
//! contracts on the dev chain), two hospital workers and Prometheus; drives
//! clinics of simulated patients and doctors through the client library;
//! shows progress; waits for every sealed batch to land on L1; checks each
//! transaction's fate with the coordinator; writes `throughput.json`; and
//! says where to look. Ctrl-C stops everything cleanly.

mod load;
mod report;
mod services;

use anyhow::{Context, bail};
use clap::Parser;
use medrollup_client::keystore::Identity;
use medrollup_client::session::{Endpoints, Session};
use services::{Service, ensure_free, find, free_port, repo, sibling};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

#[derive(Parser, Debug)]
#[command(name = "medrollup-demo", about = "The whole medrollup farm on this machine, under load")]
struct Args {
    /// Start no new clinic after this many seconds (clinics in flight finish).
    #[arg(long, default_value_t = 120)]
    seconds: u64,
    /// Start no new clinic once this many transactions were sent (0: no bound).
    #[arg(long, default_value_t = 0)]
    max_tx: usize,
    /// Clinics running at once.
    #[arg(long, default_value_t = 6)]
    concurrency: usize,
    /// Where data, logs and the snapshot go: by default `target/demo` in the
    /// repository; a relative path is from the current directory. Cleared
    /// at start, so it must be empty, new, or one the demo made before.
    #[arg(long)]
    out: Option<PathBuf>,
    /// `fixed`: nats 4222, anvil 8545, coordinator 8080, workers 9101 and
    /// 9102, Prometheus 9090; `auto`: free ports.
    #[arg(long, default_value = "fixed")]
    ports: String,
    /// Keep the farm running after the summary, until Ctrl-C.
    #[arg(long)]
    keep: bool,
    /// Threads each of the two workers proves with (0: half this machine's
    /// cores, at least one; the rest run the coordinator, the chain and
    /// the clinics).
    #[arg(long, default_value_t = 0)]
    worker_threads: usize,
    /// Where the canonical development keys are kept (made there on the
    /// first run): by default `.tools/keys-canonical` in the
    /// repository.
    #[arg(long)]
    keys_dir: Option<PathBuf>,
}

/// Set while the first run's key setup computes: a signal then ends the
/// demo at once (nothing is started, nothing written yet), not after it.
static IN_KEY_SETUP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The threads each worker proves with: `asked`, or half the cores.
fn worker_threads(asked: usize) -> usize {
    if asked > 0 {
        return asked;
    }
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

struct Ports {
    nats: u16,
    anvil: u16,
    http: u16,
    workers: [u16; 2],
    prometheus: u16,
}

impl Ports {
    fn pick(mode: &str) -> anyhow::Result<Self> {
        match mode {
            "fixed" => {
                let p =
                    Ports { nats: 4222, anvil: 8545, http: 8080, workers: [9101, 9102], prometheus: 9090 };
                for (port, what) in [
                    (p.nats, "nats-server"),
                    (p.anvil, "anvil"),
                    (p.http, "coordinator"),
                    (p.workers[0], "worker 1 metrics"),
                    (p.workers[1], "worker 2 metrics"),
                    (p.prometheus, "prometheus"),
                ] {
                    ensure_free(port, what)?;
                }
                Ok(p)
            }
            "auto" => Ok(Ports {
                nats: free_port()?,
                anvil: free_port()?,
                http: free_port()?,
                workers: [free_port()?, free_port()?],
                prometheus: free_port()?,
            }),
            other => bail!("--ports is fixed or auto, not {other:?}"),
        }
    }
}

/// The canonical development keys in `dir` (the checked-in verifier is for
/// them), made there first if need be.
fn keys(dir: &Path) -> anyhow::Result<PathBuf> {
    use medrollup_l1::canonical;
    use std::sync::atomic::Ordering::SeqCst;
    if !dir.join("keys.json").exists() {
        println!("   (first run: a seeded development setup in {}, some seconds)", dir.display());
        IN_KEY_SETUP.store(true, SeqCst);
        let pk = medrollup_circuits::keys::setup(canonical::SHAPE, Some(canonical::SEED));
        IN_KEY_SETUP.store(false, SeqCst);
        medrollup_circuits::keys::write_keys(dir, canonical::SHAPE, &pk?, true)?;
    }
    Ok(dir.to_path_buf())
}

/// The farm's processes, stopped in reverse order on drop.
struct Farm(Vec<Service>);

impl Farm {
    fn check(&mut self) -> anyhow::Result<()> {
        self.0.iter_mut().try_for_each(Service::check)
    }
}

impl Drop for Farm {
    fn drop(&mut self) {
        while let Some(mut s) = self.0.pop() {
            s.stop();
        }
    }
}

fn start(out: &Path, p: &Ports, threads: usize, keys_dir: &Path) -> anyhow::Result<(Farm, PathBuf)> {
    let logs = out.join("logs");
    std::fs::create_dir_all(&logs)?;
    let mut farm = Farm(Vec::new());
    let keys = keys(keys_dir)?;
    // The bus locked down as in production: a user per role and per
    // hospital's worker, from `medrollup-coordinator nats-config`.
    let names: Vec<String> = (1..=p.workers.len()).map(|i| format!("hospital-{i}")).collect();
    let auth = out.join("nats-auth");
    let mut config = Command::new(sibling("medrollup-coordinator")?);
    config
        .args(["nats-config", "--out"])
        .arg(&auth)
        .args(["--port", &p.nats.to_string(), "--store"])
        .arg(out.join("nats"));
    for name in &names {
        config.args(["--worker", name]);
    }
    let made = config.output()?;
    if !made.status.success() {
        bail!("medrollup-coordinator nats-config: {}", String::from_utf8_lossy(&made.stderr));
    }
    let password = |user: &str| -> anyhow::Result<String> {
        let path = auth.join(format!("{user}.password"));
        Ok(std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .trim()
            .to_string())
    };
    let nats_bin = find(repo().join(".tools/venv/bin/nats-server"), "nats-server", "run scripts/services")?;
    let mut nats =
        Service::spawn("nats-server", Command::new(nats_bin).arg("-c").arg(auth.join("nats.conf")), &logs)?;
    nats.wait_port(p.nats, Duration::from_secs(20))?;
    farm.0.push(nats);
    let anvil_bin = medrollup_l1::devnet::anvil_bin().map_err(anyhow::Error::msg)?;
    let mut anvil = Service::spawn(
        "anvil",
        Command::new(anvil_bin).args([
            "--host",
            "127.0.0.1",
            "--port",
            &p.anvil.to_string(),
            "--block-time",
            "1",
        ]),
        &logs,
    )?;
    anvil.wait_port(p.anvil, Duration::from_secs(30))?;
    farm.0.push(anvil);
    let nats_url = format!("nats://127.0.0.1:{}", p.nats);
    let mut coordinator = Service::spawn(
        "coordinator",
        Command::new(sibling("medrollup-coordinator")?)
            .args(["--nats-url", &nats_url, "--http", &format!("127.0.0.1:{}", p.http)])
            .args(["--nats-user", "coordinator"])
            .env("MEDROLLUP_NATS_PASSWORD", password("coordinator")?)
            .arg("--data-dir")
            .arg(out.join("coordinator"))
            .arg("--keys-dir")
            .arg(&keys)
            .args(["--seal-timeout-ms", "1000", "--l1-rpc", &format!("http://127.0.0.1:{}", p.anvil)])
            .args(["--l1-owner", medrollup_l1::devnet::DEV_OWNER])
            .env("MEDROLLUP_L1_KEY", medrollup_l1::devnet::DEV_KEY),
        &logs,
    )?;
    coordinator.wait_port(p.http, Duration::from_secs(120))?;
    farm.0.push(coordinator);
    for (name, port) in names.iter().zip(&p.workers) {
        let user = medrollup_wire::natsconf::worker_user(name);
        let w = Service::spawn(
            &format!("worker-{name}"),
            Command::new(sibling("medrollup-prover")?)
                .args(["worker", "--nats-url", &nats_url, "--name", name, "--nats-user", &user])
                .env("MEDROLLUP_NATS_PASSWORD", password(&user)?)
                .arg("--cache-dir")
                .arg(out.join(format!("cache-{name}")))
                .args(["--metrics", &format!("127.0.0.1:{port}")])
                .env("RAYON_NUM_THREADS", threads.to_string()),
            &logs,
        )?;
        farm.0.push(w);
    }
    // Prometheus with the checked-in configuration, moved to these ports.
    let prom_dir = out.join("prometheus");
    std::fs::create_dir_all(&prom_dir)?;
    let src = repo().join("dashboards/prometheus");
    let config = std::fs::read_to_string(src.join("prometheus.yml"))?
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{}", p.http))
        .replace("127.0.0.1:9101", &format!("127.0.0.1:{}", p.workers[0]))
        .replace("127.0.0.1:9102", &format!("127.0.0.1:{}", p.workers[1]));
    std::fs::write(prom_dir.join("prometheus.yml"), config)?;
    std::fs::copy(src.join("alerts.yml"), prom_dir.join("alerts.yml"))?;
    let prom_bin = find(
        "/usr/bin/prometheus".into(),
        "prometheus",
        "run scripts/services (apt-get install prometheus)",
    )?;
    let mut prom = Service::spawn(
        "prometheus",
        Command::new(prom_bin)
            .arg(format!("--config.file={}", prom_dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", prom_dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{}", p.prometheus)),
        &logs,
    )?;
    prom.wait_port(p.prometheus, Duration::from_secs(30))?;
    farm.0.push(prom);
    Ok((farm, keys))
}

async fn get(http: &reqwest::Client, url: &str) -> anyhow::Result<serde_json::Value> {
    Ok(http.get(url).send().await.with_context(|| format!("GET {url}"))?.json().await?)
}

/// `name{labels} value` lines of a Prometheus text exposition, summed by name and label text.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

struct Progress {
    accepted: f64,
    rejected: f64,
    sealed: u64,
    proven: f64,
    on_l1: u64,
    queue: f64,
    workers: f64,
    /// Why the L1 submitter stopped, if it did.
    l1_error: Option<String>,
}

async fn progress(http: &reqwest::Client, api: &str) -> anyhow::Result<Progress> {
    let m = http.get(format!("{api}/metrics")).send().await?.text().await?;
    let root = get(http, &format!("{api}/root")).await?;
    let l1 = get(http, &format!("{api}/l1")).await?;
    Ok(Progress {
        accepted: metric(&m, "medrollup_tx_total{outcome=\"accepted\"}"),
        rejected: metric(&m, "medrollup_tx_total{outcome=\"rejected\"}"),
        sealed: root["batches_sealed"].as_u64().unwrap_or(0),
        proven: metric(&m, "medrollup_batches_proven_total"),
        on_l1: l1["last_landed"].as_u64().map_or(0, |n| n + 1),
        queue: metric(&m, "medrollup_queue_depth"),
        workers: metric(&m, "medrollup_workers "),
        l1_error: l1["error"].as_str().map(str::to_string),
    })
}

fn show(started: Instant, p: &Progress, tty: bool) {
    let secs = started.elapsed().as_secs_f64();
    let line = format!(
        "[{secs:>5.0}s] tx {} accepted, {} rejected ({:.2} tx/s) | batches sealed {}, proven {}, on L1 {} | queue {} | workers {}",
        p.accepted,
        p.rejected,
        p.accepted / secs.max(1.0),
        p.sealed,
        p.proven,
        p.on_l1,
        p.queue,
        p.workers
    );
    if tty {
        print!("\r{line:<130}");
        let _ = std::io::stdout().flush();
    } else {
        println!("{line}");
    }
}

/// Ctrl-C, SIGTERM or SIGHUP: the farm is stopped in order either way.
/// Returns the exit status a shell gives a process the signal ended
/// (128 + its number).
async fn stop_signal() -> i32 {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler");
    let mut hup = signal(SignalKind::hangup()).expect("a SIGHUP handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => 130,
        _ = term.recv() => 143,
        _ = hup.recv() => 129,
    }
}

/// The file in an output folder that says the demo made it; held locked
/// while a demo runs there.
const MARKER: &str = ".medrollup-demo";

/// Makes `out` ready for a run and locks it: refuses a folder with files
/// the demo did not make (unless it is the default one, in the build
/// folder) or one another demo runs in; then clears it.
fn prepare_out(out: &Path, default: bool) -> anyhow::Result<std::fs::File> {
    if out.exists() && !out.is_dir() {
        bail!("--out {} is a file, not a folder", out.display());
    }
    let marked = out.join(MARKER).exists();
    if out.exists() && !default && !marked && std::fs::read_dir(out)?.next().is_some() {
        bail!(
            "--out {} holds files the demo did not make, and the demo clears its folder: pick an empty or new one",
            out.display()
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let lock = std::fs::File::create(out.join(MARKER))?;
    if lock.try_lock().is_err() {
        bail!("another medrollup-demo runs in {}: stop it, or pick another --out", out.display());
    }
    for entry in std::fs::read_dir(out)? {
        let path = entry?.path();
        if path.file_name() == Some(MARKER.as_ref()) {
            continue;
        }
        if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) }
            .with_context(|| format!("clearing {}", path.display()))?;
    }
    Ok(lock)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let out = match &args.out {
        None => repo().join("target/demo"),
        Some(p) => std::env::current_dir()?.join(p),
    };
    // Ports first: a farm still running (another demo's) is found before
    // anything of it is cleared.
    let ports = Ports::pick(&args.ports)?;
    let _lock = prepare_out(&out, args.out.is_none())?;
    // A first signal stops the farm in order (start-up included); a second
    // exits at once, and the farm's processes follow (see Service::spawn).
    let (stopper, mut stop) = tokio::sync::watch::channel(None::<i32>);
    tokio::spawn(async move {
        let code = stop_signal().await;
        services::STOP.store(true, std::sync::atomic::Ordering::SeqCst);
        if IN_KEY_SETUP.load(std::sync::atomic::Ordering::SeqCst) {
            println!("\nstopped during the first run's key setup: nothing was started or kept");
            std::process::exit(code);
        }
        let _ = stopper.send(Some(code));
        let code = stop_signal().await;
        eprintln!("\nstopping at once");
        std::process::exit(code);
    });
    let stopped = |stop: &tokio::sync::watch::Receiver<Option<i32>>| *stop.borrow();
    println!("== medrollup: the whole farm on this machine, in {} ==", out.display());
    println!(
        "1. start: nats-server, anvil, the coordinator (deploys the contracts), two workers, Prometheus"
    );
    let threads = worker_threads(args.worker_threads);
    let keys_dir = match &args.keys_dir {
        None => repo().join(".tools/keys-canonical"),
        Some(p) => std::env::current_dir()?.join(p),
    };
    let (mut farm, _keys) = match start(&out, &ports, threads, &keys_dir) {
        Err(_) if let Some(code) = stopped(&stop) => {
            println!("stopped while starting; logs in {}", out.join("logs").display());
            std::process::exit(code);
        }
        r => r?,
    };
    let api = format!("http://127.0.0.1:{}", ports.http);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let l1 = get(&http, &format!("{api}/l1")).await?;
    let rollup = l1["rollup"].as_str().context("the coordinator reports no rollup contract")?.to_string();
    println!(
        "   nats :{}, anvil :{} (rollup {rollup}), coordinator http://127.0.0.1:{}, workers :{} :{} (/metrics), Prometheus http://127.0.0.1:{}",
        ports.nats, ports.anvil, ports.http, ports.workers[0], ports.workers[1], ports.prometheus
    );
    let endpoints = Endpoints {
        coordinator: api.clone(),
        ipfs_api: None,
        l1_rpc: format!("http://127.0.0.1:{}", ports.anvil),
        rollup: rollup.parse()?,
        l1_wait: Duration::from_secs(600),
    };
    let mut hospitals = Vec::new();
    for h in medrollup_circuits::sample::parties().hospitals {
        let id = Identity::from_parts(
            h.key.clone(),
            tokio::task::spawn_blocking(Identity::generate).await?.rsa_key().clone(),
        );
        hospitals.push(Arc::new(Mutex::new(Session::open(&endpoints, h.id, id).await?)));
    }
    let bound = match args.max_tx {
        0 => format!("{} s", args.seconds),
        n => format!("{} s or {n} transactions", args.seconds),
    };
    println!(
        "2. load: clinics of a patient and two doctors ({} at a time; register, grant, write, read, share, update, revoke, audit) until {bound}",
        args.concurrency
    );
    let started = Instant::now();
    let tty = std::io::stdout().is_terminal();
    let mut tasks = tokio::task::JoinSet::new();
    let mut reports = Vec::new();
    let mut next = 0u64;
    let mut last_show = Instant::now() - Duration::from_secs(60);
    let mut sent = 0;
    let interrupted = loop {
        // A coordinator that does not answer this once keeps the last count.
        if let Ok(p) = progress(&http, &api).await {
            sent = (p.accepted + p.rejected) as usize;
        }
        let open =
            started.elapsed() < Duration::from_secs(args.seconds) && (args.max_tx == 0 || sent < args.max_tx);
        while open && tasks.len() < args.concurrency.max(1) {
            let h = hospitals[next as usize % hospitals.len()].clone();
            tasks.spawn(load::clinic(next, endpoints.clone(), h));
            next += 1;
        }
        if !open && tasks.is_empty() {
            break false;
        }
        if last_show.elapsed() >= Duration::from_secs(if tty { 1 } else { 10 }) {
            if let Ok(p) = progress(&http, &api).await {
                show(started, &p, tty);
            }
            last_show = Instant::now();
        }
        farm.check()?;
        tokio::select! {
            r = tasks.join_next(), if !tasks.is_empty() => {
                if let Some(r) = r {
                    let report = r?;
                    if let Some(e) = &report.error {
                        println!("\n   ! {e}");
                    }
                    reports.push(report);
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.wait_for(Option::is_some) => break true,
        }
    };
    let interrupt = |farm: Farm| -> ! {
        println!("\nstopping the farm");
        drop(farm);
        println!("stopped before the end; data and logs in {}", out.display());
        std::process::exit(stopped(&stop).unwrap_or(130));
    };
    if interrupted {
        tasks.abort_all();
        interrupt(farm);
    }
    // Every transaction's outcome as its client saw it.
    let mut subs = Vec::new();
    for h in &hospitals {
        subs.extend(h.lock().await.journal().iter().cloned());
    }
    let failed: Vec<_> = reports.iter().filter_map(|r| r.error.clone()).collect();
    let reads: usize = reports.iter().map(|r| r.reads).sum();
    for r in reports {
        subs.extend(r.submissions);
    }
    // The drain ends once every batch a transaction went into is sealed
    // (one nothing waited on may still be open) and on L1.
    let last_batch = subs.iter().filter_map(|s| s.batch).max();
    println!("\n3. drain: every sealed batch onto L1");
    // The coordinator starts its submitter again 30 s after it stopped on
    // an error: one still stopped a minute on is taken for good.
    let mut l1_stopped_since: Option<Instant> = None;
    let sealed = loop {
        // The deadline and a stop hold whether or not the coordinator answers.
        match progress(&http, &api).await {
            Ok(p) if p.on_l1 >= p.sealed && last_batch.is_none_or(|b| p.sealed > b) => break p.sealed,
            Ok(Progress { l1_error: Some(e), .. })
                if l1_stopped_since.get_or_insert_with(Instant::now).elapsed() > Duration::from_secs(60) =>
            {
                bail!("the coordinator's L1 submitter stopped: {e} (see {}/logs)", out.display())
            }
            Ok(p) => {
                if p.l1_error.is_none() {
                    l1_stopped_since = None;
                }
                show(started, &p, tty)
            }
            Err(e) => println!("\n   ! the coordinator does not say how far it is: {e:#}"),
        }
        farm.check()?;
        if stopped(&stop).is_some() {
            interrupt(farm);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        if started.elapsed() > Duration::from_secs(args.seconds + 1800) {
            bail!("batches are not landing on L1: see {}/logs", out.display());
        }
    };
    let duration = started.elapsed().as_secs_f64();
    let p = progress(&http, &api).await?;
    show(started, &p, false);
    println!("4. accounting: each transaction's fate, as the coordinator and L1 record it");
    let snap = report::snapshot(&http, &api, &subs, sealed, (next as usize, threads), duration).await?;
    std::fs::write(out.join("throughput.json"), serde_json::to_vec_pretty(&snap)?)?;
    println!("5. throughput snapshot ({}):", out.join("throughput.json").display());
    for line in report::render(&snap).lines() {
        println!("   {line}");
    }
    println!(
        "   {reads} records read and decrypted, each checked against L1; {} clinics stopped early",
        failed.len()
    );
    println!(
        "where to look: http://127.0.0.1:{p}/farm, /l1, /root, /metrics (the coordinator); http://127.0.0.1:{pr}/alerts and /graph (Prometheus);\n\
         dashboards: import dashboards/grafana/*.json into a Grafana (or provision it with dashboards/grafana/provisioning/) with a Prometheus data source at http://127.0.0.1:{pr};\n\
         logs: {logs}",
        p = ports.http,
        pr = ports.prometheus,
        logs = out.join("logs").display()
    );
    let t = &snap.transactions;
    let ok = t.unaccounted.is_empty() && t.accepted_not_on_l1 == 0 && failed.is_empty() && t.on_l1 > 0;
    if args.keep {
        println!("the farm keeps running: Ctrl-C stops it");
        println!(
            "your own patient's page on it: {client} portal --account 500 --coordinator {api} --l1-rpc {l1} --rollup {rollup}\n\
             then open the address it prints (create keys, register, and the page shows the rest)",
            client = std::env::current_exe()?.with_file_name("medrollup-client").display(),
            l1 = endpoints.l1_rpc,
        );
        let _ = stop.wait_for(Option::is_some).await;
    }
    drop(farm);
    if t.on_l1 == 0 {
        bail!("no transaction reached L1 (see above and {}/logs)", out.display());
    }
    if !ok {
        bail!(
            "not every transaction is accounted for, or a clinic failed (see above and {}/logs)",
            out.display()
        );
    }
    println!("done: every transaction is on L1 or was rejected with a reason");
    Ok(())
}
