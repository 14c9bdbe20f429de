//! The coordinator's Prometheus metrics (base units, a small fixed set of labels).

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

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
    /// Batches handed to the L1 sink.
    pub batches_submitted_total: IntCounter,
    /// Submitted transactions per sealed batch.
    pub batch_transactions: HistogramVec,
    /// From sealing to a verified proof.
    pub seal_to_proof_seconds: HistogramVec,
    /// Jobs by state (queued, proven, dead).
    pub jobs: IntGaugeVec,
    /// Jobs waiting for a proof.
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
            queue_depth: reg!(IntGauge::new("medrollup_queue_depth", "Jobs waiting for a proof")),
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
            registry,
        };
        m.last_submitted_batch.set(-1);
        m
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
