//! The hospital worker: takes proving jobs from the farm's JetStream work
//! queue, proves them with this engine, and returns the proofs.
//!
//! A job is acked only after its result is stored in the results stream; while
//! it proves, the worker acks progress so the job stays its own. A worker that
//! dies stops acking, and JetStream gives the job to another worker. Transient
//! trouble (the proving key cannot be fetched yet) hands the job back with a
//! delay; a job that cannot be proved (wrong shape, bad witness) is answered
//! as failed, so the coordinator decides.
//!
//! It proves on the devices [`WorkerConfig::gpu`] finds (CUDA GPUs, or
//! OpenCL ones), with the CPU as the fallback and, with no device, as the
//! prover; `/metrics` reports each device's work, errors and fallbacks.

use crate::backend::BackendError;
use crate::gpu::{DeviceCounters, Fault, GpuBackend, GpuConfig};
use crate::groth16::{LoadedKey, ProveError, StageTimes, prove_with_inputs};
use ark_bn254::Fr;
use ark_ff::UniformRand;
use async_nats::jetstream::{self, AckKind, consumer, message::Acker};
use futures::StreamExt;
use medrollup_circuits::circuit::BatchCircuit;
use medrollup_circuits::keys::{self, CircuitShape};
use medrollup_wire::{JobOutcome, JobResult, JobSpec, StageSeconds, WorkerInfo, streams, subjects};
use prometheus::{
    CounterVec, Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{Instrument, info, info_span, warn};

/// A worker's settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// NATS server.
    pub nats_url: String,
    /// The worker's NATS credential.
    pub credentials: Option<(String, String)>,
    /// Its name in the farm (unique).
    pub name: String,
    /// Where fetched proving keys are cached.
    pub cache_dir: PathBuf,
    /// Heartbeat period.
    pub heartbeat: Duration,
    /// Progress-ack period while proving (well under the job's ack wait).
    pub progress: Duration,
    /// Prometheus `/metrics` address, if any.
    pub metrics_addr: Option<SocketAddr>,
    /// Which devices to prove on (the CPU when none is usable).
    pub gpu: GpuConfig,
    /// Proving keys kept loaded (their bases resident on the devices); the
    /// least recently used goes first when another is needed.
    pub max_keys: usize,
    /// The longest a proof (or a key's loading, which proves a padding
    /// batch) may take. One that takes longer is taken for stuck (a hung
    /// kernel, a wedged device): the job is failed back to the farm and the
    /// worker stops, since a stuck thread cannot be stopped from outside
    /// and would hold the device; its supervisor starts it again. Set it
    /// well above the slowest proof the machine makes.
    pub prove_timeout: Duration,
    /// How long devices out of service wait before they are opened afresh
    /// and tested again (doubled each time one comes back, up to six hours;
    /// back to this once all have served a day).
    pub readmit_after: Duration,
    /// A device (of any runtime) still out of service once opened afresh
    /// makes the worker stop taking jobs and exit (status 4 from
    /// `medrollup-prover worker`) for its supervisor to start it again: CUDA
    /// documents a relaunch of the process as the only sure way back from a
    /// crashed kernel's lost context. A device that fails its test at the
    /// next start is refused then, so the worker does not exit again for
    /// it; one that fails again after each start makes it exit once per
    /// wait, doubled at each relaunch (kept in `cache_dir`, forgotten after
    /// a day), up to six hours. Off: the worker proves on its other
    /// devices, or the CPU, until a test brings the device back.
    pub relaunch_when_device_lost: bool,
    /// A drill for operators (does the supervisor start the worker again?)
    /// and tests: the first device fails every kernel launch after this
    /// many, for good, as a broken one does; again at every start, so it is
    /// taken off once the drill is over. Never for production.
    pub fault_drill: Option<usize>,
}

impl WorkerConfig {
    /// Defaults for one machine.
    pub fn local(name: &str) -> Self {
        Self {
            nats_url: "nats://127.0.0.1:4222".into(),
            credentials: None,
            name: name.into(),
            cache_dir: "worker-cache".into(),
            heartbeat: Duration::from_secs(2),
            progress: Duration::from_secs(5),
            metrics_addr: None,
            gpu: GpuConfig::default(),
            max_keys: 2,
            prove_timeout: Duration::from_secs(1800),
            readmit_after: READMIT_EVERY,
            relaunch_when_device_lost: false,
            fault_drill: None,
        }
    }
}

/// Why the worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// NATS.
    #[error("NATS: {0}")]
    Nats(String),
    /// Files or sockets.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The prover overran its bound (see [`WorkerConfig::prove_timeout`]).
    #[error("stopped: {0}")]
    Stuck(String),
    /// A device stayed out of service though opened afresh, and the worker
    /// was asked to exit for a relaunch then (see
    /// [`WorkerConfig::relaunch_when_device_lost`]).
    #[error("stopped for a relaunch: {0}")]
    Relaunch(String),
}

/// What went wrong with one job, and so what to do with it.
#[derive(Debug, thiserror::Error)]
enum JobError {
    /// Try again later (the job goes back to the queue).
    #[error("{0}")]
    Transient(String),
    /// This job cannot be proved here; report it.
    #[error("{0}")]
    Fatal(String),
    /// The prover overran its bound: report it, then stop.
    #[error("{0}")]
    Stuck(String),
}

/// Waits for blocking work (`what`) for at most `limit`.
async fn within<T>(limit: Duration, what: &str, work: tokio::task::JoinHandle<T>) -> Result<T, JobError> {
    match tokio::time::timeout(limit, work).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(JobError::Fatal(format!("{what} panicked: {e}"))),
        Err(_) => Err(JobError::Stuck(format!(
            "{what} did not finish within {:.3} s (--prove-timeout-s): taken for stuck; the worker stops",
            limit.as_secs_f64()
        ))),
    }
}

/// Proves the circuit `circuit` makes on `backend`, and checks the proof
/// against the key before it goes out: a device can be wrong without
/// failing (a fault at sizes its admission test does not reach), and a
/// wrong proof would only be refused by the coordinator, this worker
/// excluded, while the devices stayed in service. A proof that does not
/// verify is made again with the devices suspended (on the CPU): if that
/// one verifies, the devices were wrong and stay out of service; if not,
/// they are put back and the proof fails. A witness that does not satisfy
/// the constraints kept from an earlier proof, or a proof through them that
/// does not verify either way, is tried once more with the constraints
/// built afresh from its circuit (see [`LoadedKey::forget_constraints`]):
/// the kept ones may differ from the key's where the earlier witness was 0.
pub fn prove_checked<C: ark_relations::gr1cs::ConstraintSynthesizer<Fr>>(
    backend: &GpuBackend,
    key: &LoadedKey<GpuBackend>,
    circuit: impl Fn() -> C,
) -> Result<(ark_groth16::Proof<ark_bn254::Bn254>, StageTimes), ProveError> {
    let kept = key.r1cs().is_some();
    match prove_checked_once(backend, key, &circuit) {
        Err(e @ (ProveError::KeyMismatch(_) | ProveError::Unsatisfied { .. })) if kept => {
            warn!(error = %e, "a proof through the kept constraints failed: building them again");
            key.forget_constraints();
            prove_checked_once(backend, key, &circuit)
        }
        other => other,
    }
}

fn prove_checked_once<C: ark_relations::gr1cs::ConstraintSynthesizer<Fr>>(
    backend: &GpuBackend,
    key: &LoadedKey<GpuBackend>,
    circuit: &impl Fn() -> C,
) -> Result<(ark_groth16::Proof<ark_bn254::Bn254>, StageTimes), ProveError> {
    let attempt = || {
        let mut rng = rand::thread_rng();
        let (r, s) = (Fr::rand(&mut rng), Fr::rand(&mut rng));
        let (proof, times, inputs) = prove_with_inputs(backend, key, circuit(), r, s)?;
        Ok::<_, ProveError>((key.verifies(&proof, &inputs), proof, times))
    };
    // Devices may fail loudly later in the proof (out of service by then):
    // the proof was still made partly with them.
    let with_devices = backend.device_count() > 0;
    let (ok, proof, times) = past_lost_devices(backend, attempt)?;
    if ok {
        return Ok((proof, times));
    }
    if !with_devices {
        return Err(ProveError::KeyMismatch(
            "a proof made on the CPU does not verify against the key".into(),
        ));
    }
    let suspended = backend.suspend_devices();
    warn!(devices = ?suspended, "a proof made with the devices does not verify: proving again on the CPU");
    let again = attempt();
    let faulty = matches!(again, Ok((true, ..)));
    backend.end_suspension(
        &suspended,
        faulty,
        "a proof made with it did not verify; one made on the CPU did",
    );
    match again? {
        (true, proof, times) => Ok((proof, times)),
        _ => Err(ProveError::KeyMismatch(
            "the proof does not verify against the key, made with the devices or on the CPU".into(),
        )),
    }
}

/// `f`, again while a device fails in a way the proof cannot be finished
/// from on the CPU (an in-place call's input lost with the device's
/// output): each such failure takes that device out of service, so the
/// next attempt runs without it.
fn past_lost_devices<T>(
    backend: &GpuBackend,
    f: impl Fn() -> Result<T, ProveError>,
) -> Result<T, ProveError> {
    loop {
        let before = backend.device_count();
        match f() {
            Err(ProveError::Backend(e @ BackendError::Device { .. })) if backend.device_count() < before => {
                warn!(error = %e, "a device failed and lost the proof's data with it: proving again without it");
            }
            r => return r,
        }
    }
}

/// Builds `key`'s constraints with a padding proof of `shape`
/// ([`LoadedKey::prepare`]); a proof that does not verify is made again
/// with the devices suspended, as in [`prove_checked`], so that a wrong
/// device is not taken for a key that does not fit the circuit.
pub fn prepare_checked(
    backend: &GpuBackend,
    key: &LoadedKey<GpuBackend>,
    shape: CircuitShape,
) -> Result<(), ProveError> {
    let padding = || BatchCircuit::new(keys::padding_witness(shape));
    match past_lost_devices(backend, || key.prepare(backend, padding())) {
        Err(ProveError::KeyMismatch(why)) if backend.device_count() > 0 => {
            let suspended = backend.suspend_devices();
            warn!(devices = ?suspended, %why, "the key's first proof failed with the devices: again on the CPU");
            let again = key.prepare(backend, padding());
            backend.end_suspension(
                &suspended,
                again.is_ok(),
                "the key's first proof, made with it, did not verify; made on the CPU, it did",
            );
            again
        }
        r => r,
    }
}

/// Per-device counters, as the backend reports them.
#[derive(Debug, Clone)]
struct DeviceMetrics {
    msm_points: CounterVec,
    ntt_elements: CounterVec,
    busy: CounterVec,
    errors: CounterVec,
    fallbacks: CounterVec,
    reopened: CounterVec,
    healthy: IntGaugeVec,
    memory_used: IntGaugeVec,
    memory_budget: IntGaugeVec,
    /// What was last added, per device: the backend's counters only grow.
    seen: Arc<Mutex<HashMap<String, DeviceCounters>>>,
}

/// The worker's metrics.
#[derive(Debug, Clone)]
struct Metrics {
    registry: Registry,
    jobs: IntCounterVec,
    stages: HistogramVec,
    busy: IntGauge,
    devices: DeviceMetrics,
    backend: GpuBackend,
}

impl Metrics {
    fn new(backend: GpuBackend) -> Self {
        let registry = Registry::new();
        let jobs = IntCounterVec::new(
            Opts::new(
                "medrollup_worker_jobs_total",
                "Jobs this worker took, by outcome (proved, failed, handed_back, result_not_returned)",
            ),
            &["outcome"],
        )
        .expect("metric");
        let stages = HistogramVec::new(
            HistogramOpts::new("medrollup_worker_stage_seconds", "Proving stage times")
                // Up to the proofs of large batches on a CPU (a B = 64 batch is minutes there).
                .buckets(vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0]),
            &["stage", "backend", "device"],
        )
        .expect("metric");
        let busy = IntGauge::new("medrollup_worker_busy", "1 while proving").expect("metric");
        let labels = &["device", "runtime"];
        let counter =
            |name: &str, help: &str| CounterVec::new(Opts::new(name, help), labels).expect("metric");
        let gauge = |name: &str, help: &str| IntGaugeVec::new(Opts::new(name, help), labels).expect("metric");
        let devices = DeviceMetrics {
            msm_points: counter(
                "medrollup_worker_device_msm_points_total",
                "Points multiplied in MSMs, per device (the CPU is device \"cpu\")",
            ),
            ntt_elements: counter(
                "medrollup_worker_device_ntt_elements_total",
                "Elements transformed by NTTs, per device",
            ),
            busy: counter("medrollup_worker_device_busy_seconds_total", "Time each device spent working"),
            errors: counter(
                "medrollup_worker_device_errors_total",
                "Device failures (each takes the device out of service, but a shortage of resources it passes its known-answer test after)",
            ),
            fallbacks: counter(
                "medrollup_worker_device_fallbacks_total",
                "Pieces of work a device was given that the CPU finished",
            ),
            reopened: counter(
                "medrollup_worker_device_reopens_total",
                "Times a device out of service was opened afresh (a new context) to be tested for readmission",
            ),
            healthy: IntGaugeVec::new(
                Opts::new("medrollup_worker_device_healthy", "1 while a device is in service"),
                labels,
            )
            .expect("metric"),
            memory_used: gauge(
                "medrollup_worker_device_memory_used_bytes",
                "Device memory the prover's buffers take (resident bases, tables, a call's working buffers)",
            ),
            memory_budget: gauge(
                "medrollup_worker_device_memory_budget_bytes",
                "Device memory the prover may take (--device-memory)",
            ),
            seen: Arc::new(Mutex::new(HashMap::new())),
        };
        // Every outcome from the start (zeros, not missing series): a job
        // handed back (a transient failure here) or whose result could not
        // be returned is counted as well as a result.
        for o in ["proved", "failed", "handed_back", "result_not_returned"] {
            jobs.with_label_values(&[o]);
        }
        registry.register(Box::new(jobs.clone())).expect("unique");
        registry.register(Box::new(stages.clone())).expect("unique");
        registry.register(Box::new(busy.clone())).expect("unique");
        for c in [
            &devices.msm_points,
            &devices.ntt_elements,
            &devices.busy,
            &devices.errors,
            &devices.fallbacks,
            &devices.reopened,
        ] {
            registry.register(Box::new(c.clone())).expect("unique");
        }
        for g in [&devices.healthy, &devices.memory_used, &devices.memory_budget] {
            registry.register(Box::new(g.clone())).expect("unique");
        }
        let m = Self { registry, jobs, stages, busy, devices, backend };
        m.sync_devices();
        m
    }

    /// Brings the device counters up to the backend's.
    fn sync_devices(&self) {
        let report = self.backend.report();
        let d = &self.devices;
        let mut seen = d.seen.lock().unwrap_or_else(|p| p.into_inner());
        let rows = report
            .devices
            .iter()
            .map(|r| (r.label.as_str(), r.runtime, r.healthy, &r.counters))
            .chain(std::iter::once(("cpu", "cpu", true, &report.cpu)));
        for (label, runtime, healthy, now) in rows {
            let before = seen.entry(label.to_string()).or_default();
            let l = [label, runtime];
            d.msm_points
                .with_label_values(&l)
                .inc_by(now.msm_points.saturating_sub(before.msm_points) as f64);
            d.ntt_elements
                .with_label_values(&l)
                .inc_by(now.ntt_elements.saturating_sub(before.ntt_elements) as f64);
            d.busy.with_label_values(&l).inc_by((now.busy_seconds - before.busy_seconds).max(0.0));
            d.errors.with_label_values(&l).inc_by(now.errors.saturating_sub(before.errors) as f64);
            d.fallbacks.with_label_values(&l).inc_by(now.fallbacks.saturating_sub(before.fallbacks) as f64);
            d.reopened.with_label_values(&l).inc_by(now.reopened.saturating_sub(before.reopened) as f64);
            d.healthy.with_label_values(&l).set(i64::from(healthy));
            *before = now.clone();
        }
        for r in &report.devices {
            let l = [r.label.as_str(), r.runtime];
            d.memory_used.with_label_values(&l).set(r.memory_used as i64);
            d.memory_budget.with_label_values(&l).set(r.memory_budget as i64);
        }
    }

    fn render(&self) -> String {
        self.sync_devices();
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("text encoding");
        String::from_utf8(buf).expect("utf-8")
    }
}

/// "cuda", "opencl" or "cpu": what a proof runs on.
fn backend_kind(backend: &GpuBackend) -> String {
    let report = backend.report();
    report.devices.iter().find(|d| d.healthy).map_or("cpu", |d| d.runtime).to_string()
}

struct Worker {
    config: WorkerConfig,
    js: jetstream::Context,
    backend: GpuBackend,
    /// Loaded keys by hash, with when each was last used.
    keys: HashMap<String, (Arc<LoadedKey<GpuBackend>>, u64)>,
    uses: u64,
    metrics: Metrics,
    busy: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    /// Set when the worker is to stop: its prover overran its bound, or a
    /// device lost for good asks for a relaunch.
    stop: Option<WorkerError>,
    /// Since when devices have been out of service untested (reset while
    /// all are in service, and at each test).
    last_readmit: std::time::Instant,
    /// The wait before devices out of service are tested again: doubled
    /// each time a test brings one back (one wrong only at sizes the test
    /// does not reach would otherwise cost a proof made twice every time),
    /// and back to [`READMIT_EVERY`] once all have served a long while.
    readmit_every: Duration,
    /// Since when every device has been in service (None while one is out).
    all_healthy_since: Option<std::time::Instant>,
}

/// Runs a worker until `shutdown` completes; a job in progress is finished
/// (or, if it cannot be, handed back) before it returns.
pub async fn run(
    config: WorkerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WorkerError> {
    let opts = match &config.credentials {
        Some((u, p)) => async_nats::ConnectOptions::with_user_and_password(u.clone(), p.clone()),
        None => async_nats::ConnectOptions::new(),
    };
    let client = opts
        .name(format!("medrollup-worker-{}", config.name))
        .custom_inbox_prefix(medrollup_wire::natsconf::worker_inbox(&config.name))
        .connection_timeout(Duration::from_secs(5))
        .connect(config.nats_url.as_str())
        .await
        .map_err(|e| {
            WorkerError::Nats(format!(
                "connecting to {}: {e}",
                medrollup_wire::natsconf::redacted(&config.nats_url)
            ))
        })?;
    let js = jetstream::new(client.clone());
    std::fs::create_dir_all(&config.cache_dir)?;
    // Finding devices compiles (or reads cached) kernels and tests each one.
    let gpu = config.gpu.clone();
    let backend = tokio::task::spawn_blocking(move || GpuBackend::new(&gpu))
        .await
        .map_err(|e| WorkerError::Nats(format!("device discovery panicked: {e}")))?;
    let report = backend.report();
    for d in &report.devices {
        info!(device = %d.label, memory_gib = d.memory >> 30, "proving on this device");
    }
    if report.devices.is_empty() {
        info!(reasons = ?report.refused, "no device: proving on the CPU");
    }
    if let Some(launches) = config.fault_drill {
        match report.devices.first() {
            Some(d) => {
                warn!(device = %d.label, launches, "fault drill: the device fails for good after this many kernel launches");
                backend.inject_fault(0, launches, Fault::Fails);
            }
            None => warn!("fault drill asked for, but there is no device to fail"),
        }
    }
    let mut w = Worker {
        config: config.clone(),
        js: js.clone(),
        backend: backend.clone(),
        keys: HashMap::new(),
        uses: 0,
        metrics: Metrics::new(backend.clone()),
        busy: Arc::new(AtomicBool::new(false)),
        done: Arc::new(AtomicU64::new(0)),
        failed: Arc::new(AtomicU64::new(0)),
        stop: None,
        last_readmit: std::time::Instant::now(),
        readmit_every: saved_readmit_wait(&config.cache_dir, config.readmit_after),
        all_healthy_since: Some(std::time::Instant::now()),
    };
    if w.readmit_every > config.readmit_after {
        info!(
            wait_s = w.readmit_every.as_secs_f64(),
            "kept from the last relaunch: devices out of service wait this long before they are tested again"
        );
    }
    let heartbeat = tokio::spawn(heartbeats(
        client.clone(),
        config.clone(),
        backend,
        w.busy.clone(),
        w.done.clone(),
        w.failed.clone(),
    ));
    let metrics_server = match config.metrics_addr {
        Some(addr) => Some(tokio::spawn(serve_metrics(addr, w.metrics.clone()))),
        None => None,
    };
    // The consumer is the coordinator's; workers only bind to it.
    let jobs = loop {
        match js.get_stream(streams::JOBS).await {
            Ok(s) => match s.get_consumer::<consumer::pull::Config>(streams::JOBS_CONSUMER).await {
                Ok(c) => break c,
                Err(e) => warn!(error = %e, "job queue not ready; waiting for the coordinator"),
            },
            Err(e) => warn!(error = %e, "job stream not ready; waiting for the coordinator"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    info!(name = %config.name, "taking jobs");
    tokio::pin!(shutdown);
    while w.stop.is_none() {
        w.readmit_if_due().await;
        if w.stop.is_some() {
            break;
        }
        let batch = tokio::select! {
            _ = &mut shutdown => break,
            b = jobs.fetch().max_messages(1).expires(Duration::from_secs(2)).messages() => b,
        };
        let mut batch = match batch {
            Ok(b) => b,
            Err(e) => {
                warn!(error = %e, "fetching a job");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        while let Some(m) = batch.next().await {
            match m {
                Ok(m) => w.handle(m).await,
                Err(e) => warn!(error = %e, "receiving a job"),
            }
        }
    }
    heartbeat.abort();
    if let Some(s) = metrics_server {
        s.abort();
    }
    let _ = client.flush().await;
    if let Some(e) = w.stop {
        return Err(e);
    }
    info!(name = %config.name, "worker stopped");
    Ok(())
}

async fn heartbeats(
    client: async_nats::Client,
    config: WorkerConfig,
    backend: GpuBackend,
    busy: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
) {
    let threads = rayon::current_num_threads();
    let memory_bytes = memory_bytes();
    let mut tick = tokio::time::interval(config.heartbeat);
    loop {
        tick.tick().await;
        let report = backend.report();
        let mut devices: Vec<String> = report
            .devices
            .iter()
            .map(|d| format!("{}{}", d.label, if d.healthy { "" } else { " (failed)" }))
            .collect();
        devices.push(format!("cpu ({threads} threads)"));
        let info = WorkerInfo {
            name: config.name.clone(),
            backend: backend_kind(&backend),
            devices,
            threads,
            memory_bytes,
            jobs_done: done.load(Ordering::Relaxed),
            jobs_failed: failed.load(Ordering::Relaxed),
            busy: busy.load(Ordering::Relaxed),
        };
        let body = serde_json::to_vec(&info).expect("serialises");
        let _ = client.publish(subjects::heartbeat(&config.name), body.into()).await;
    }
}

/// Total memory from /proc/meminfo (0 where there is none).
fn memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

async fn serve_metrics(addr: SocketAddr, metrics: Metrics) -> std::io::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let m = metrics.clone();
            async move { ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], m.render()) }
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await
}

/// A worker name the farm takes: it is the last token of the worker's NATS
/// subjects (`medrollup.results.<name>`), and the coordinator drops results
/// under names over 128 bytes.
pub fn parse_name(name: &str) -> Result<String, String> {
    medrollup_wire::natsconf::check_worker_name(name)?;
    Ok(name.to_string())
}

/// A `--prove-timeout-s` (or `--readmit-after-s`): seconds, fractions
/// allowed, more than 0 and at most 10^7 (about 116 days).
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    let s: f64 = text.trim().parse().map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !(s > 0.0 && s <= 1e7) {
        return Err(format!("{text} s: give more than 0 and at most 10000000 seconds"));
    }
    Ok(Duration::from_secs_f64(s))
}

/// The failure to return for a job this worker cannot read (`error`), if
/// the job's batch and attempt can be read: a job from a coordinator of
/// another version fails here and goes to other workers, instead of
/// vanishing from the queue unheard.
fn unreadable(worker: &str, payload: &[u8], error: &serde_json::Error) -> Option<JobResult> {
    let head: serde_json::Value = serde_json::from_slice(payload).ok()?;
    Some(JobResult {
        batch: head["batch"].as_u64()?,
        attempt: u32::try_from(head["attempt"].as_u64()?).ok()?,
        worker: worker.to_string(),
        outcome: JobOutcome::Failed {
            reason: format!("this worker cannot read the job (another version?): {error}"),
        },
    })
}

/// How long a job this worker is excluded from waits before it is offered
/// again (to any worker), at its first delivery; see [`handback_delay`].
const EXCLUDED_HANDBACK: Duration = Duration::from_secs(5);
/// The same for a job handed back for transient trouble (the key bucket
/// out of reach).
const TRANSIENT_HANDBACK: Duration = Duration::from_secs(2);
/// The longest a job handed back waits.
const MAX_HANDBACK: Duration = Duration::from_secs(120);

/// How long a job handed back at its `delivered`-th delivery waits: `base`,
/// doubled at each delivery (up to [`MAX_HANDBACK`]). Every hand-back uses
/// up one of the job's deliveries; at a fixed few seconds, the excluded
/// workers would use them all within half a minute while the one worker
/// that may prove it is busy, and the job would lie dead for minutes.
fn handback_delay(base: Duration, delivered: i64) -> Duration {
    let doublings = delivered.saturating_sub(1).clamp(0, 16) as u32;
    (base * 2u32.pow(doublings)).min(MAX_HANDBACK)
}

/// The longest a proving key's fetch from the farm's bucket may take (a
/// key of hundreds of MiB at 0.5 MB/s); past it, the job is handed back.
const KEY_FETCH_TIMEOUT: Duration = Duration::from_secs(900);

/// How long devices out of service wait, at first, before they are tested
/// again (between jobs); doubled at each test that brings one back, up to
/// [`MAX_READMIT_EVERY`].
const READMIT_EVERY: Duration = Duration::from_secs(600);
/// The longest wait before devices out of service are tested again.
const MAX_READMIT_EVERY: Duration = Duration::from_secs(6 * 3600);
/// Every device in service this long: the faults before were transient,
/// and the wait starts from [`READMIT_EVERY`] again (a few faults over a
/// long run no longer leave a GPU idle for hours).
const READMIT_FORGIVEN_AFTER: Duration = Duration::from_secs(24 * 3600);

/// The wait before devices out of service are tested again, when every
/// device has been in service for `healthy_for` (None: one is out): back to
/// `first` after a day.
fn readmit_wait(current: Duration, first: Duration, healthy_for: Option<Duration>) -> Duration {
    match healthy_for {
        Some(t) if t >= READMIT_FORGIVEN_AFTER => first,
        _ => current,
    }
}

/// Why the worker should exit for a relaunch once devices were opened
/// afresh and tested: those still out of service (labels), when asked to
/// (`relaunch`). None: it goes on.
fn relaunch_reason(relaunch: bool, still_out: &[String]) -> Option<String> {
    (relaunch && !still_out.is_empty()).then(|| {
        format!(
            "{} still out of service though opened afresh (--relaunch-when-device-lost): a new process may bring {} back",
            still_out.join(", "),
            if still_out.len() == 1 { "it" } else { "them" }
        )
    })
}

/// The file in the worker's cache directory that keeps the wait before
/// devices are tested again across a relaunch.
const READMIT_WAIT_FILE: &str = "readmit-wait-s";

/// Keeps `wait` for the next start (see [`saved_readmit_wait`]).
fn save_readmit_wait(dir: &std::path::Path, wait: Duration) -> std::io::Result<()> {
    let (path, part) = (dir.join(READMIT_WAIT_FILE), dir.join(format!("{READMIT_WAIT_FILE}.part")));
    std::fs::write(&part, format!("{}\n", wait.as_secs_f64()))?;
    std::fs::rename(part, path)
}

/// The wait kept at the last relaunch, if it was kept less than a day ago
/// (then every fault before counts as over), and at least `first`; else
/// `first`.
fn saved_readmit_wait(dir: &std::path::Path, first: Duration) -> Duration {
    let path = dir.join(READMIT_WAIT_FILE);
    let read = || -> Option<Duration> {
        let age = std::fs::metadata(&path).ok()?.modified().ok()?.elapsed().unwrap_or_default();
        if age >= READMIT_FORGIVEN_AFTER {
            return None;
        }
        let text = std::fs::read_to_string(&path).ok()?;
        match parse_timeout(&text) {
            Ok(wait) => Some(wait.min(MAX_READMIT_EVERY)),
            Err(e) => {
                warn!(file = %path.display(), error = %e, "a kept wait before devices are tested again, unreadable: ignored");
                None
            }
        }
    };
    read().map_or(first, |w| w.max(first))
}

/// Forgets the wait kept at a relaunch (the devices have served a day).
fn forget_readmit_wait(dir: &std::path::Path) {
    match std::fs::remove_file(dir.join(READMIT_WAIT_FILE)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            warn!(error = %e, "the kept wait before devices are tested again is not forgotten")
        }
        _ => {}
    }
}

impl Worker {
    /// The wait before the next test of devices out of service, doubled.
    fn longer_readmit_wait(&self) -> Duration {
        (self.readmit_every * 2).min(MAX_READMIT_EVERY).max(self.config.readmit_after)
    }

    /// Between jobs, once devices have been out of service for
    /// `readmit_every`: those that pass their known-answer test again are
    /// back (else one transient fault would leave a hospital's GPUs idle
    /// until a restart). A test that hangs is taken for stuck; a device
    /// still out asks for a relaunch where the worker was told to exit then.
    async fn readmit_if_due(&mut self) {
        if self.backend.report().devices.iter().all(|d| d.healthy) {
            let since = *self.all_healthy_since.get_or_insert_with(std::time::Instant::now);
            let wait = readmit_wait(self.readmit_every, self.config.readmit_after, Some(since.elapsed()));
            if wait != self.readmit_every {
                forget_readmit_wait(&self.config.cache_dir);
            }
            self.readmit_every = wait;
            self.last_readmit = std::time::Instant::now();
            return;
        }
        self.all_healthy_since = None;
        if self.last_readmit.elapsed() < self.readmit_every {
            return;
        }
        let backend = self.backend.clone();
        let testing = tokio::task::spawn_blocking(move || backend.readmit());
        match within(self.config.prove_timeout, "testing devices out of service again", testing).await {
            Ok(done) => {
                let longer = self.longer_readmit_wait();
                if !done.back.is_empty() {
                    self.metrics.sync_devices();
                    self.readmit_every = longer;
                    info!(devices = ?done.back, next_wait_s = self.readmit_every.as_secs_f64(), "devices back in service");
                }
                if let Some(reason) = relaunch_reason(self.config.relaunch_when_device_lost, &done.still_out)
                {
                    tracing::error!(%reason, "the worker stops for a relaunch");
                    // The next process waits longer before its own test: a
                    // device that crashes again after every start does not
                    // have the worker started again every few minutes.
                    if let Err(e) = save_readmit_wait(&self.config.cache_dir, longer) {
                        warn!(error = %e, "the wait before devices are tested again is not kept for the next start");
                    }
                    self.stop = Some(WorkerError::Relaunch(reason));
                }
            }
            Err(JobError::Stuck(reason)) => {
                tracing::error!(%reason, "a device test is taken for stuck");
                self.stop = Some(WorkerError::Stuck(reason));
            }
            Err(e) => warn!(error = %e, "testing devices again failed"),
        }
        self.last_readmit = std::time::Instant::now();
    }

    async fn handle(&mut self, m: jetstream::Message) {
        let spec: JobSpec = match serde_json::from_slice(&m.payload) {
            Ok(s) => s,
            Err(e) => {
                let (msg, acker) = m.split();
                match unreadable(&self.config.name, &msg.payload, &e) {
                    // Its batch is known: the coordinator hears, excludes
                    // this worker and gives the job to another (of another
                    // version, say).
                    Some(result) => self.return_result(&acker, result).await,
                    // Poison: no worker can read it.
                    None => {
                        warn!(error = %e, "a job that does not decode; terminated");
                        let _ = acker.ack_with(AckKind::Term).await;
                    }
                }
                return;
            }
        };
        let span = info_span!("job", batch = spec.batch, attempt = spec.attempt);
        self.run_job(m, spec).instrument(span).await
    }

    /// Proves one job, keeping it leased, and returns its result before acking it.
    async fn run_job(&mut self, m: jetstream::Message, spec: JobSpec) {
        let delivered = m.info().map_or(1, |i| i.delivered);
        if spec.exclude.contains(&self.config.name) {
            // Our proof of it was rejected (or we failed it): leave it to
            // another worker. Every hand-back counts as a delivery, so not
            // at once: a busy worker has time to take it.
            let _ = m.ack_with(AckKind::Nak(Some(handback_delay(EXCLUDED_HANDBACK, delivered)))).await;
            return;
        }
        self.busy.store(true, Ordering::Relaxed);
        self.metrics.busy.set(1);
        let (batch, attempt) = (spec.batch, spec.attempt);
        // Keep the job ours while it proves.
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (msg, acker) = m.split();
        let acker = Arc::new(acker);
        let progress = {
            let acker = acker.clone();
            let period = self.config.progress;
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(period);
                tick.tick().await;
                loop {
                    tokio::select! {
                        _ = &mut stop_rx => break,
                        _ = tick.tick() => { let _ = acker.ack_with(AckKind::Progress).await; }
                    }
                }
            })
        };
        let outcome = self.prove(spec).await;
        let _ = stop_tx.send(());
        let _ = progress.await;
        drop(msg);
        let outcome = match outcome {
            Ok(o) => o,
            Err(JobError::Transient(reason)) => {
                warn!(%reason, "handing the job back");
                self.metrics.jobs.with_label_values(&["handed_back"]).inc();
                let _ =
                    acker.ack_with(AckKind::Nak(Some(handback_delay(TRANSIENT_HANDBACK, delivered)))).await;
                self.busy.store(false, Ordering::Relaxed);
                self.metrics.busy.set(0);
                return;
            }
            Err(JobError::Fatal(reason)) => JobOutcome::Failed { reason },
            Err(JobError::Stuck(reason)) => {
                tracing::error!(%reason, "the prover is taken for stuck");
                self.stop = Some(WorkerError::Stuck(reason.clone()));
                JobOutcome::Failed { reason }
            }
        };
        let result = JobResult { batch, attempt, worker: self.config.name.clone(), outcome };
        self.return_result(&acker, result).await;
        self.busy.store(false, Ordering::Relaxed);
        self.metrics.busy.set(0);
    }

    /// Publishes `result` and acks its job once the stream has it (else
    /// hands the job back).
    async fn return_result(&mut self, acker: &Acker, result: JobResult) {
        let label = match &result.outcome {
            JobOutcome::Proved { .. } => "proved",
            JobOutcome::Failed { .. } => "failed",
        };
        let body = serde_json::to_vec(&result).expect("serialises");
        let stored = match self.js.publish(subjects::result(&self.config.name), body.into()).await {
            Ok(f) => f.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match stored {
            Ok(()) => {
                let _ = acker.ack().await;
                self.metrics.jobs.with_label_values(&[label]).inc();
                if label == "proved" {
                    self.done.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.failed.fetch_add(1, Ordering::Relaxed);
                }
                info!(outcome = label, "result returned");
            }
            Err(e) => {
                warn!(error = %e, "could not return the result; handing the job back");
                self.metrics.jobs.with_label_values(&["result_not_returned"]).inc();
                let _ = acker.ack_with(AckKind::Nak(Some(Duration::from_secs(1)))).await;
            }
        }
    }

    async fn prove(&mut self, spec: JobSpec) -> Result<JobOutcome, JobError> {
        if spec.witness.batch_size() != spec.shape.batch_size || spec.witness.levels != spec.shape.levels {
            return Err(JobError::Fatal(format!(
                "the witness ({} slots, height {}) does not fit the job's circuit ({:?})",
                spec.witness.batch_size(),
                spec.witness.levels,
                spec.shape
            )));
        }
        let key = self.key(&spec.proving_key_sha256, spec.shape).await?;
        let backend = self.backend.clone();
        let witness = spec.witness;
        let proving = tokio::task::spawn_blocking(move || {
            prove_checked(&backend, &key, || BatchCircuit::new(witness.clone()))
        });
        let proved = within(self.config.prove_timeout, "the proof", proving).await?;
        let (proof, times) = proved.map_err(|e| JobError::Fatal(e.to_string()))?;
        let msm = times.msm_h + times.msm_l + times.msm_a + times.msm_b_g1 + times.msm_b_g2;
        let stages = StageSeconds {
            synthesis: times.synthesis.as_secs_f64(),
            ntt: (times.witness_map + times.ntt).as_secs_f64(),
            msm: msm.as_secs_f64(),
            total: times.total.as_secs_f64(),
        };
        let kind = backend_kind(&self.backend);
        let report = self.backend.report();
        let device = report.devices.iter().find(|d| d.healthy).map_or("cpu", |d| d.label.as_str());
        for (stage, v) in [
            ("synthesis", stages.synthesis),
            ("ntt", stages.ntt),
            ("msm", stages.msm),
            ("total", stages.total),
        ] {
            self.metrics.stages.with_label_values(&[stage, &kind, device]).observe(v);
        }
        self.metrics.sync_devices();
        Ok(JobOutcome::Proved { proof: medrollup_wire::encode_proof(&proof), backend: kind, stages })
    }

    /// The proving key with this hash: from memory, the disk cache, or the
    /// farm's key bucket; its bytes are checked against the hash every time
    /// they are read. A key is loaded on the backend and proves a padding
    /// batch of `shape` before it is kept (which also builds the circuit's
    /// constraints, so that every job's proof takes the fast path).
    async fn key(
        &mut self,
        sha256: &str,
        shape: CircuitShape,
    ) -> Result<Arc<LoadedKey<GpuBackend>>, JobError> {
        self.uses += 1;
        if let Some((k, used)) = self.keys.get_mut(sha256) {
            *used = self.uses;
            return Ok(k.clone());
        }
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(JobError::Fatal(format!("{sha256:?} is not a sha256")));
        }
        let path = self.config.cache_dir.join(format!("{sha256}.pk"));
        let bytes = match tokio::fs::read(&path).await {
            Ok(b) if keys::sha256_hex(&b) == sha256 => b,
            _ => {
                info!(sha256, "fetching the proving key");
                let fetch = read_key_object(&self.js, sha256);
                // A read that stalls would keep the job leased (its progress
                // is acked meanwhile) for good.
                let b = tokio::time::timeout(KEY_FETCH_TIMEOUT, fetch).await.map_err(|_| {
                    JobError::Transient(format!(
                        "fetching proving key {sha256} took longer than {} s",
                        KEY_FETCH_TIMEOUT.as_secs()
                    ))
                })??;
                if keys::sha256_hex(&b) != sha256 {
                    return Err(JobError::Transient(format!(
                        "the farm's proving key {sha256} has another hash"
                    )));
                }
                let tmp = path.with_extension("tmp");
                if tokio::fs::write(&tmp, &b).await.is_ok() {
                    let _ = tokio::fs::rename(&tmp, &path).await;
                }
                b
            }
        };
        // Room for this one: the least recently used keys go (with their
        // bases on the devices, freed off the async threads) before it loads.
        let unloaded = evict_least_recent(&mut self.keys, self.config.max_keys.max(1) - 1);
        for (old, _) in &unloaded {
            info!(sha256 = %old, max_keys = self.config.max_keys, "proving key unloaded (the least recently used)");
        }
        let backend = self.backend.clone();
        let sha = sha256.to_string();
        let loading = tokio::task::spawn_blocking(move || {
            drop(unloaded);
            let pk =
                keys::proving_key_from_bytes(&bytes, &sha).map_err(|e| JobError::Fatal(e.to_string()))?;
            let key = LoadedKey::load(&backend, pk).map_err(|e| JobError::Fatal(e.to_string()))?;
            prepare_checked(&backend, &key, shape)
                .map_err(|e| JobError::Fatal(format!("proving key {sha}: {e}")))?;
            Ok(key)
        });
        let loaded = within(self.config.prove_timeout, "loading the proving key", loading).await??;
        let loaded = Arc::new(loaded);
        self.keys.insert(sha256.to_string(), (loaded.clone(), self.uses));
        Ok(loaded)
    }
}

/// Reads the object `name` of the farm's key bucket chunk by chunk with
/// direct gets: a worker creates no consumer on the bucket's stream (a push
/// consumer's delivery subject is not held to its creator's permissions, so
/// a worker allowed to create one could have the server deliver into any
/// subject).
async fn read_key_object(js: &async_nats::jetstream::Context, name: &str) -> Result<Vec<u8>, JobError> {
    let bucket = js
        .get_object_store(streams::KEYS_BUCKET)
        .await
        .map_err(|e| JobError::Transient(format!("key bucket: {e}")))?;
    let missing = || JobError::Fatal(format!("the farm's key bucket has no proving key {name}"));
    let info = bucket.info(name).await.map_err(|e| match e.kind() {
        // The farm's bucket lacks the job's key: no worker will find it by
        // asking again; the coordinator hears why.
        async_nats::jetstream::object_store::InfoErrorKind::NotFound => missing(),
        _ => JobError::Transient(format!("proving key {name}: {e}")),
    })?;
    if info.deleted {
        return Err(missing());
    }
    let stream = js
        .get_stream(format!("OBJ_{}", streams::KEYS_BUCKET))
        .await
        .map_err(|e| JobError::Transient(format!("key bucket's stream: {e}")))?;
    let subject = format!("$O.{}.C.{}", streams::KEYS_BUCKET, info.nuid);
    let mut bytes = Vec::with_capacity(info.size);
    let mut next = 1;
    for chunk in 0..info.chunks {
        let m = stream.direct_get_next_for_subject(subject.as_str(), Some(next)).await.map_err(|e| {
            JobError::Transient(format!("proving key {name}: chunk {chunk} of {}: {e}", info.chunks))
        })?;
        bytes.extend_from_slice(&m.payload);
        next = m.sequence + 1;
    }
    if bytes.len() != info.size {
        return Err(JobError::Transient(format!(
            "proving key {name}: {} bytes read, {} stored",
            bytes.len(),
            info.size
        )));
    }
    Ok(bytes)
}

/// Takes out the least recently used entries until at most `keep` are
/// left; returns them, oldest first.
fn evict_least_recent<V>(entries: &mut HashMap<String, (V, u64)>, keep: usize) -> Vec<(String, V)> {
    let mut gone = Vec::new();
    while entries.len() > keep {
        let oldest = entries.iter().min_by_key(|(_, (_, used))| *used).map(|(k, _)| k.clone());
        let Some(oldest) = oldest else { break };
        let (value, _) = entries.remove(&oldest).expect("found above");
        gone.push((oldest, value));
    }
    gone
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_between_device_tests_is_forgiven_after_a_day_in_service() {
        let long = MAX_READMIT_EVERY;
        let first = Duration::from_secs(5);
        assert_eq!(readmit_wait(long, first, None), long, "a device out of service: the wait stays");
        assert_eq!(
            readmit_wait(long, first, Some(Duration::from_secs(3600))),
            long,
            "in service for an hour only"
        );
        assert_eq!(readmit_wait(long, first, Some(READMIT_FORGIVEN_AFTER)), first);
    }

    #[test]
    fn a_device_still_out_once_opened_afresh_asks_for_a_relaunch_only_where_told_to() {
        let out = vec!["cuda:1 NVIDIA H200".to_string()];
        assert_eq!(relaunch_reason(false, &out), None, "not asked: the worker goes on");
        assert_eq!(relaunch_reason(true, &[]), None, "every device back: nothing to relaunch for");
        let why = relaunch_reason(true, &out).unwrap();
        assert!(why.starts_with("cuda:1 NVIDIA H200 still out of service though opened afresh"), "{why}");
        assert!(why.ends_with("bring it back"), "{why}");
        let two = relaunch_reason(true, &["cuda:0".into(), "cuda:1".into()]).unwrap();
        assert!(two.starts_with("cuda:0, cuda:1 still out") && two.ends_with("bring them back"), "{two}");
    }

    #[test]
    fn the_wait_kept_at_a_relaunch_is_read_at_the_next_start_for_a_day() {
        let dir = tempfile::tempdir().unwrap();
        let first = Duration::from_secs(600);
        assert_eq!(saved_readmit_wait(dir.path(), first), first, "nothing kept");
        save_readmit_wait(dir.path(), Duration::from_secs(2400)).unwrap();
        assert_eq!(saved_readmit_wait(dir.path(), first), Duration::from_secs(2400));
        assert_eq!(
            saved_readmit_wait(dir.path(), Duration::from_secs(3600)),
            Duration::from_secs(3600),
            "at least the first"
        );
        // Kept more than a day ago: the faults before count as over.
        let path = dir.path().join(READMIT_WAIT_FILE);
        let old = std::time::SystemTime::now() - READMIT_FORGIVEN_AFTER - Duration::from_secs(60);
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(old).unwrap();
        assert_eq!(saved_readmit_wait(dir.path(), first), first);
        // Unreadable: ignored.
        std::fs::write(&path, "soon").unwrap();
        assert_eq!(saved_readmit_wait(dir.path(), first), first);
        // At most the longest wait; forgotten on request.
        save_readmit_wait(dir.path(), Duration::from_secs(1_000_000)).unwrap();
        assert_eq!(saved_readmit_wait(dir.path(), first), MAX_READMIT_EVERY);
        forget_readmit_wait(dir.path());
        assert!(!path.exists());
        assert_eq!(saved_readmit_wait(dir.path(), first), first);
        forget_readmit_wait(dir.path());
    }

    #[test]
    fn worker_names_fit_a_nats_subject_token() {
        assert_eq!(parse_name("hospital-a_2").unwrap(), "hospital-a_2");
        for (bad, why) in [("", "1 to 128"), ("a.b", "'.'"), ("a b", "' '"), ("x*", "'*'"), ("a>", "'>'")] {
            let e = parse_name(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        assert!(parse_name(&"w".repeat(129)).unwrap_err().contains("1 to 128"));
    }

    #[test]
    fn prove_timeouts_are_positive_bounded_seconds() {
        assert_eq!(parse_timeout("1800"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_timeout("0.25"), Ok(Duration::from_millis(250)));
        for bad in ["0", "-1", "NaN", "inf", "1e8"] {
            assert!(parse_timeout(bad).unwrap_err().contains("more than 0"), "{bad}");
        }
        assert!(parse_timeout("ten").unwrap_err().contains("not a number"));
    }

    #[tokio::test]
    async fn blocking_work_past_its_bound_is_taken_for_stuck() {
        let quick = tokio::task::spawn_blocking(|| 7);
        assert_eq!(within(Duration::from_secs(5), "quick work", quick).await.unwrap(), 7);
        let (release, held) = std::sync::mpsc::channel::<()>();
        let hung = tokio::task::spawn_blocking(move || held.recv().is_ok());
        let e = within(Duration::from_millis(50), "the proof", hung).await.unwrap_err();
        assert!(
            matches!(&e, JobError::Stuck(m) if m.contains("the proof did not finish within 0.050 s")),
            "{e}"
        );
        drop(release);
        let boom = tokio::task::spawn_blocking(|| panic!("kernel fault"));
        let e = within(Duration::from_secs(5), "the proof", boom).await.unwrap_err();
        assert!(matches!(&e, JobError::Fatal(m) if m.contains("the proof panicked")), "{e}");
    }

    #[test]
    fn a_job_it_cannot_read_is_failed_by_name_when_its_batch_is_known() {
        let job = br#"{"batch": 7, "attempt": 2, "shape": "from a newer coordinator"}"#;
        let e = serde_json::from_slice::<JobSpec>(job).unwrap_err();
        let r = unreadable("hospital-a", job, &e).unwrap();
        assert_eq!((r.batch, r.attempt, r.worker.as_str()), (7, 2, "hospital-a"));
        let JobOutcome::Failed { reason } = r.outcome else { panic!("a failure") };
        assert!(reason.contains("cannot read the job") && reason.contains(&e.to_string()), "{reason}");
        let garbage = b"\x00 not json";
        let e = serde_json::from_slice::<JobSpec>(garbage).unwrap_err();
        assert!(unreadable("hospital-a", garbage, &e).is_none(), "no batch: terminated");
    }

    #[test]
    fn a_job_handed_back_again_and_again_waits_longer_each_time() {
        let waits: Vec<u64> = (1..=7).map(|d| handback_delay(EXCLUDED_HANDBACK, d).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 120, 120]);
        // Five deliveries (the farm's default) wait 75 s in all between them, not 20 s.
        assert_eq!(waits[..4].iter().sum::<u64>(), 75);
        assert_eq!(handback_delay(TRANSIENT_HANDBACK, 1), Duration::from_secs(2));
        assert_eq!(handback_delay(TRANSIENT_HANDBACK, 0), Duration::from_secs(2));
        assert_eq!(handback_delay(TRANSIENT_HANDBACK, i64::MAX), MAX_HANDBACK);
    }

    #[test]
    fn the_least_recently_used_keys_are_dropped_first() {
        let mut keys: HashMap<String, (Arc<u32>, u64)> = HashMap::new();
        for (name, used) in [("a", 5), ("b", 2), ("c", 9)] {
            keys.insert(name.into(), (Arc::new(used as u32), used));
        }
        let b = Arc::downgrade(&keys["b"].0);
        let names = |v: Vec<(String, Arc<u32>)>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert!(evict_least_recent(&mut keys, 3).is_empty());
        assert_eq!(names(evict_least_recent(&mut keys, 2)), ["b"]);
        assert!(b.upgrade().is_none(), "an unloaded key is dropped once let go (its device memory freed)");
        assert_eq!(names(evict_least_recent(&mut keys, 0)), ["a", "c"]);
        assert!(keys.is_empty());
    }
}
