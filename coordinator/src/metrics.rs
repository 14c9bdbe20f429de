//! The coordinator's Prometheus metrics (base units, a small fixed set of labels).

use crate::service::now_ms;
use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Every metric the coordinator exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Transactions decided, by outcome (accepted, duplicate, rejected).
    pub tx_total: IntCounterVec,
    /// Rejections by reason code.
    pub tx_rejected_total: IntCounterVec,
    /// Batches sealed.
    pub batches_sealed_total: IntCounter,
    /// Batches with a verified proof.
    pub batches_proven_total: IntCounter,
    /// Dead jobs queued again after their wait.
    pub jobs_revived_total: IntCounter,
    /// Jobs found gone from the queue with no result, queued again.
    pub jobs_lost_total: IntCounter,
    /// Results dropped: undecodable, sent in another worker's name, or with no usable name.
    pub results_dropped_total: IntCounter,
    /// Proving attempts that failed: a worker's failure, or a proof that did not verify.
    pub job_attempts_failed_total: IntCounter,
    /// Proven batches L1 can take now (in order from the last landed), not yet on it.
    pub batches_awaiting_l1: IntGauge,
    /// 1 when batches go to an L1 node (the L1 gauges mean something), 0 with the file sink.
    pub l1_enabled: IntGauge,
    /// Batches handed to the L1 sink.
    pub batches_submitted_total: IntCounter,
    /// Submitted transactions per sealed batch.
    pub batch_transactions: HistogramVec,
    /// From sealing to a verified proof.
    pub seal_to_proof_seconds: HistogramVec,
    /// Jobs by state (queued, proven, dead).
    pub jobs: IntGaugeVec,
    /// Jobs waiting for a proof: queued, or parked dead after failing.
    pub queue_depth: IntGauge,
    /// Workers that heartbeat within the timeout.
    pub workers: IntGauge,
    /// Proofs checked, by outcome (accepted, rejected).
    pub proofs_verified_total: IntCounterVec,
    /// Stage times reported with accepted proofs, by stage and backend.
    pub prover_stage_seconds: HistogramVec,
    /// Index of the last batch handed to L1 (-1: none).
    pub last_submitted_batch: IntGauge,
    /// Gas used by each batch submission.
    pub l1_gas_per_batch: HistogramVec,
    /// Gas per submitted transaction of each landed batch.
    pub l1_gas_per_transaction: HistogramVec,
    /// From the first send of a batch to enough confirmations.
    pub l1_submit_seconds: HistogramVec,
    /// From sealing a batch to its landing on L1.
    pub seal_to_l1_seconds: HistogramVec,
    /// Submitter events (fee_bump, resend, reorg).
    pub l1_events_total: IntCounterVec,
    /// 1 while the L1 submitter runs, 0 once it stopped on an error.
    pub l1_up: IntGauge,
    /// Per transaction, from its acceptance to its batch on L1 (or in the sink).
    pub tx_intake_to_l1_seconds: HistogramVec,
    /// Confirmations a batch needs to count as landed.
    pub l1_confirmations: IntGauge,
    /// The block that holds the last landed batch.
    pub l1_last_landed_block: IntGauge,
    /// The chain's head as last seen.
    pub l1_head_block: IntGauge,
    /// Unix time of the last landing.
    pub l1_last_landed_timestamp_seconds: IntGauge,
    /// The submitter account's balance.
    pub l1_submitter_balance_ether: Gauge,
    /// When a proposed verifier may be installed (Unix seconds; 0: none proposed).
    pub l1_verifier_upgrade_activation_seconds: IntGauge,
    /// 1 while the proposed verifier is for other keys than the farm's.
    pub l1_verifier_upgrade_foreign: IntGauge,
    /// Content store calls, by operation (add, cat, has, pin, unpin).
    pub storage_seconds: HistogramVec,
    /// Bytes through the content store, by operation (add, cat).
    pub storage_bytes_total: IntCounterVec,
    /// Content store calls that failed, by operation.
    pub storage_errors_total: IntCounterVec,
    /// Acceptance times (Unix ms) of the transactions of batches not yet on L1.
    intake_ms: Arc<Mutex<HashMap<u64, Vec<u64>>>>,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let secs = vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];
        macro_rules! reg {
            ($m:expr) => {{
                let m = $m.expect("metric definition");
                registry.register(Box::new(m.clone())).expect("unique metric");
                m
            }};
        }
        let m = Metrics {
            tx_total: reg!(IntCounterVec::new(
                Opts::new("medrollup_tx_total", "Transactions decided, by outcome"),
                &["outcome"]
            )),
            tx_rejected_total: reg!(IntCounterVec::new(
                Opts::new("medrollup_tx_rejected_total", "Rejected transactions, by reason"),
                &["reason"]
            )),
            batches_sealed_total: reg!(IntCounter::new("medrollup_batches_sealed_total", "Batches sealed")),
            results_dropped_total: reg!(IntCounter::new(
                "medrollup_results_dropped_total",
                "Results dropped: sent in another worker's name, or with no usable name"
            )),
            job_attempts_failed_total: reg!(IntCounter::new(
                "medrollup_job_attempts_failed_total",
                "Proving attempts that failed: a worker's failure, or a proof that did not verify"
            )),
            batches_awaiting_l1: reg!(IntGauge::new(
                "medrollup_batches_awaiting_l1",
                "Proven batches L1 can take now (in order from the last landed), not yet on L1 or in the file sink"
            )),
            l1_enabled: reg!(IntGauge::new(
                "medrollup_l1_enabled",
                "1 when batches go to an L1 node, 0 when they go to the file sink"
            )),
            jobs_revived_total: reg!(IntCounter::new(
                "medrollup_jobs_revived_total",
                "Dead jobs queued again after their wait"
            )),
            jobs_lost_total: reg!(IntCounter::new(
                "medrollup_jobs_lost_total",
                "Jobs found gone from the queue with no result (acked unanswered), queued again"
            )),
            batches_proven_total: reg!(IntCounter::new(
                "medrollup_batches_proven_total",
                "Batches with a verified proof"
            )),
            batches_submitted_total: reg!(IntCounter::new(
                "medrollup_batches_submitted_total",
                "Batches handed to L1, in order"
            )),
            batch_transactions: reg!(HistogramVec::new(
                HistogramOpts::new("medrollup_batch_transactions", "Submitted transactions per sealed batch")
                    .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]),
                &[]
            )),
            seal_to_proof_seconds: reg!(HistogramVec::new(
                HistogramOpts::new(
                    "medrollup_seal_to_proof_seconds",
                    "From sealing a batch to its verified proof"
                )
                .buckets(secs.clone()),
                &[]
            )),
            jobs: reg!(IntGaugeVec::new(Opts::new("medrollup_jobs", "Proving jobs by state"), &["state"])),
            queue_depth: reg!(IntGauge::new(
                "medrollup_queue_depth",
                "Jobs waiting for a proof: queued, or parked dead after failing"
            )),
            workers: reg!(IntGauge::new("medrollup_workers", "Workers heard from within the timeout")),
            proofs_verified_total: reg!(IntCounterVec::new(
                Opts::new("medrollup_proofs_verified_total", "Returned proofs checked, by outcome"),
                &["outcome"]
            )),
            prover_stage_seconds: reg!(HistogramVec::new(
                HistogramOpts::new(
                    "medrollup_prover_stage_seconds",
                    "Proving stage times reported by workers"
                )
                .buckets(secs.clone()),
                &["stage", "backend"]
            )),
            last_submitted_batch: reg!(IntGauge::new(
                "medrollup_last_submitted_batch",
                "Index of the last batch handed to L1 (-1: none)"
            )),
            l1_gas_per_batch: reg!(HistogramVec::new(
                HistogramOpts::new("medrollup_l1_gas_per_batch", "Gas used by each batch submission")
                    .buckets(vec![200e3, 250e3, 275e3, 300e3, 325e3, 350e3, 400e3, 500e3]),
                &[]
            )),
            l1_gas_per_transaction: reg!(HistogramVec::new(
                HistogramOpts::new(
                    "medrollup_l1_gas_per_transaction",
                    "Gas per submitted transaction of each landed batch"
                )
                .buckets(vec![1e3, 2.5e3, 5e3, 10e3, 20e3, 40e3, 80e3, 160e3, 320e3]),
                &[]
            )),
            l1_submit_seconds: reg!(HistogramVec::new(
                HistogramOpts::new(
                    "medrollup_l1_submit_seconds",
                    "From the first send of a batch to enough confirmations"
                )
                .buckets(secs.clone()),
                &[]
            )),
            seal_to_l1_seconds: reg!(HistogramVec::new(
                HistogramOpts::new(
                    "medrollup_seal_to_l1_seconds",
                    "From sealing a batch to its landing on L1"
                )
                .buckets(secs.clone()),
                &[]
            )),
            l1_events_total: reg!(IntCounterVec::new(
                Opts::new("medrollup_l1_events_total", "L1 submitter events (fee_bump, resend, reorg)"),
                &["event"]
            )),
            l1_up: reg!(IntGauge::new("medrollup_l1_up", "1 while the L1 submitter runs")),
            tx_intake_to_l1_seconds: reg!(HistogramVec::new(
                HistogramOpts::new(
                    "medrollup_tx_intake_to_l1_seconds",
                    "Per transaction, from its acceptance to its batch landing on L1"
                )
                .buckets(vec![1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0]),
                &[]
            )),
            l1_confirmations: reg!(IntGauge::new(
                "medrollup_l1_confirmations",
                "Confirmations a batch needs to count as landed"
            )),
            l1_last_landed_block: reg!(IntGauge::new(
                "medrollup_l1_last_landed_block",
                "Block holding the last landed batch"
            )),
            l1_head_block: reg!(IntGauge::new("medrollup_l1_head_block", "The L1 chain's head as last seen")),
            l1_last_landed_timestamp_seconds: reg!(IntGauge::new(
                "medrollup_l1_last_landed_timestamp_seconds",
                "Unix time of the last landing on L1"
            )),
            l1_submitter_balance_ether: reg!(Gauge::new(
                "medrollup_l1_submitter_balance_ether",
                "The submitter account's balance"
            )),
            l1_verifier_upgrade_activation_seconds: reg!(IntGauge::new(
                "medrollup_l1_verifier_upgrade_activation_seconds",
                "When the proposed verifier may be installed on the rollup (Unix seconds; 0: none proposed)"
            )),
            l1_verifier_upgrade_foreign: reg!(IntGauge::new(
                "medrollup_l1_verifier_upgrade_foreign",
                "1 while the proposed verifier is for other keys than the farm's"
            )),
            storage_seconds: reg!(HistogramVec::new(
                HistogramOpts::new("medrollup_storage_seconds", "Content store calls, by operation")
                    .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
                &["op"]
            )),
            storage_bytes_total: reg!(IntCounterVec::new(
                Opts::new("medrollup_storage_bytes_total", "Bytes through the content store, by operation"),
                &["op"]
            )),
            storage_errors_total: reg!(IntCounterVec::new(
                Opts::new("medrollup_storage_errors_total", "Content store calls that failed, by operation"),
                &["op"]
            )),
            intake_ms: Arc::default(),
            registry,
        };
        m.last_submitted_batch.set(-1);
        // Every known label value from the start, so that dashboards and
        // alerts see zeros rather than no series.
        for o in ["accepted", "duplicate", "rejected"] {
            m.tx_total.with_label_values(&[o]);
        }
        for o in ["accepted", "rejected"] {
            m.proofs_verified_total.with_label_values(&[o]);
        }
        for e in ["fee_bump", "resend", "reorg"] {
            m.l1_events_total.with_label_values(&[e]);
        }
        for op in ["add", "cat", "has", "pin", "unpin"] {
            m.storage_errors_total.with_label_values(&[op]);
            m.storage_bytes_total.with_label_values(&[op]);
        }
        m
    }

    /// Notes that a transaction was accepted into `batch` now.
    pub fn note_intake(&self, batch: u64) {
        self.intake_ms.lock().expect("intake lock").entry(batch).or_default().push(now_ms());
    }

    /// Notes that `batch` landed on L1 now: observes each of its
    /// transactions' latency (those accepted since this process started).
    pub fn note_landed(&self, batch: u64) {
        let now = now_ms();
        let mut intake = self.intake_ms.lock().expect("intake lock");
        for t in intake.remove(&batch).unwrap_or_default() {
            self.tx_intake_to_l1_seconds
                .with_label_values::<&str>(&[])
                .observe(now.saturating_sub(t) as f64 / 1e3);
        }
        self.last_submitted_batch.set(batch as i64);
        self.batches_submitted_total.inc();
    }

    /// Reads the proven batches L1 can take now from `store`.
    pub fn refresh_awaiting_l1(&self, store: &crate::store::Store) -> Result<(), crate::store::StoreError> {
        let n = store.proven_in_a_row_from(store.next_submit()?)?;
        self.batches_awaiting_l1.set(n as i64);
        Ok(())
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("text encoding");
        String::from_utf8(buf).expect("utf-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// A content store that times every call and counts the bytes.
#[derive(Debug)]
pub struct MeteredStore {
    inner: Arc<dyn crate::content::ContentStore>,
    metrics: Metrics,
}

impl MeteredStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn crate::content::ContentStore>, metrics: Metrics) -> Self {
        Self { inner, metrics }
    }

    async fn timed<T>(
        &self,
        op: &str,
        f: impl std::future::Future<Output = Result<T, crate::content::ContentError>>,
        bytes: impl FnOnce(&T) -> usize,
    ) -> Result<T, crate::content::ContentError> {
        let t = std::time::Instant::now();
        let r = f.await;
        self.metrics.storage_seconds.with_label_values(&[op]).observe(t.elapsed().as_secs_f64());
        match &r {
            Ok(v) => self.metrics.storage_bytes_total.with_label_values(&[op]).inc_by(bytes(v) as u64),
            Err(_) => self.metrics.storage_errors_total.with_label_values(&[op]).inc(),
        }
        r
    }
}

impl crate::content::ContentStore for MeteredStore {
    fn add(
        &self,
        bytes: Vec<u8>,
    ) -> futures::future::BoxFuture<'_, Result<crate::cid::Cid, crate::content::ContentError>> {
        let n = bytes.len();
        Box::pin(self.timed("add", self.inner.add(bytes), move |_| n))
    }

    fn cat(
        &self,
        cid: crate::cid::Cid,
    ) -> futures::future::BoxFuture<'_, Result<Vec<u8>, crate::content::ContentError>> {
        Box::pin(self.timed("cat", self.inner.cat(cid), Vec::len))
    }

    fn has(
        &self,
        cid: crate::cid::Cid,
    ) -> futures::future::BoxFuture<'_, Result<bool, crate::content::ContentError>> {
        Box::pin(self.timed("has", self.inner.has(cid), |_| 0))
    }

    fn pin(
        &self,
        cid: crate::cid::Cid,
    ) -> futures::future::BoxFuture<'_, Result<(), crate::content::ContentError>> {
        Box::pin(self.timed("pin", self.inner.pin(cid), |_| 0))
    }

    fn unpin(
        &self,
        cid: crate::cid::Cid,
    ) -> futures::future::BoxFuture<'_, Result<(), crate::content::ContentError>> {
        Box::pin(self.timed("unpin", self.inner.unpin(cid), |_| 0))
    }
}
