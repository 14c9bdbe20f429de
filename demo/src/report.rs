//! After the run: every transaction accounted for (on L1, or rejected with
//! a reason, as the coordinator itself records it), and the throughput
//! snapshot.

use anyhow::Context;
use medrollup_client::session::Submission;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// One sealed batch, as `GET /batch/{n}` shows it.
#[derive(Debug, Clone)]
pub struct BatchInfo {
    /// Sealed at (Unix ms).
    pub sealed_at_ms: u64,
    /// Proof verified at.
    pub verified_at_ms: Option<u64>,
    /// Landed on L1 at.
    pub landed_at_ms: Option<u64>,
    /// First send to confirmations (ms), for a landing the submitter sent
    /// (one it found on chain has no latency of its own).
    pub l1_latency_ms: Option<u64>,
    /// Gas used.
    pub gas: Option<u64>,
    /// Worker stage times (synthesis, ntt, msm, total).
    pub stages: Option<[f64; 4]>,
    /// Who proved it, with what.
    pub prover: Option<String>,
    /// The ids of its transactions.
    pub tx_ids: Vec<String>,
}

/// Reads batch `n`.
pub async fn batch(http: &reqwest::Client, api: &str, n: u64) -> anyhow::Result<BatchInfo> {
    let v: serde_json::Value = http.get(format!("{api}/batch/{n}")).send().await?.json().await?;
    let p = &v["proof"];
    let st = &p["stages"];
    Ok(BatchInfo {
        sealed_at_ms: v["sealed_at_ms"].as_u64().with_context(|| format!("batch {n}: {v}"))?,
        verified_at_ms: p["verified_at_ms"].as_u64(),
        landed_at_ms: v["l1"]["landed_at_ms"].as_u64(),
        l1_latency_ms: v["l1"]["latency_ms"].as_u64().filter(|_| v["l1"]["sends"].as_u64() > Some(0)),
        gas: v["l1"]["gas_used"].as_u64(),
        stages: st["total"].as_f64().map(|t| {
            [
                st["synthesis"].as_f64().unwrap_or(0.0),
                st["ntt"].as_f64().unwrap_or(0.0),
                st["msm"].as_f64().unwrap_or(0.0),
                t,
            ]
        }),
        prover: p["worker"].as_str().map(|w| format!("{w} ({})", p["backend"].as_str().unwrap_or("?"))),
        tx_ids: serde_json::from_value(v["tx_ids"].clone())
            .with_context(|| format!("batch {n}'s tx_ids: {v}"))?,
    })
}

/// Percentile (nearest rank) of a sorted slice.
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn median_of(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    pct(&v, 50.0)
}

/// Every transaction's fate.
#[derive(Debug, Default, Serialize)]
pub struct Accounting {
    /// Sent.
    pub submitted: usize,
    /// Accepted and in a batch on L1.
    pub on_l1: usize,
    /// Accepted, batch not on L1 (only after an interrupted run).
    pub accepted_not_on_l1: usize,
    /// Rejected, by reason code.
    pub rejected: BTreeMap<String, usize>,
    /// Whose fate the coordinator tells differently, or not at all; and
    /// transactions in a batch that no client here was told were accepted.
    pub unaccounted: Vec<String>,
}

/// The throughput snapshot.
#[derive(Debug, Serialize)]
pub struct Snapshot {
    /// The machine.
    pub machine: String,
    /// Clinics run.
    pub clinics: usize,
    /// Threads each of the two workers proved with.
    pub worker_threads: usize,
    /// Wall time of the load and drain (s).
    pub duration_s: f64,
    /// Transactions' fates.
    pub transactions: Accounting,
    /// Batches sealed and on L1.
    pub batches: u64,
    /// Accepted transactions on L1 per second, from the first send to the last landing.
    pub proven_tx_per_s: f64,
    /// Per transaction, from sending to its batch on L1 (s).
    pub latency_to_l1_s: BTreeMap<&'static str, f64>,
    /// Medians per batch (s).
    pub stage_medians_s: BTreeMap<&'static str, f64>,
    /// Gas per batch, median.
    pub gas_per_batch_median: f64,
    /// Batches per prover.
    pub provers: BTreeMap<String, usize>,
}

/// Accounts for `subs` against the coordinator and computes the snapshot.
pub async fn snapshot(
    http: &reqwest::Client,
    api: &str,
    subs: &[Submission],
    batches: u64,
    (clinics, worker_threads): (usize, usize),
    duration_s: f64,
) -> anyhow::Result<Snapshot> {
    let mut infos = HashMap::new();
    for n in 0..batches {
        infos.insert(n, batch(http, api, n).await?);
    }
    // A payload sent again (the same bytes, after an unclear answer) is one
    // transaction: its last outcome counts, its first send starts its
    // latency.
    let mut by_id: Vec<Submission> = Vec::new();
    let mut at: HashMap<&str, usize> = HashMap::new();
    for s in subs {
        match at.get(s.id.as_str()) {
            Some(&i) => {
                let first = by_id[i].sent_at_ms.min(s.sent_at_ms);
                by_id[i] = Submission { sent_at_ms: first, ..s.clone() };
            }
            None => {
                at.insert(&s.id, by_id.len());
                by_id.push(s.clone());
            }
        }
    }
    let mut acc = Accounting { submitted: by_id.len(), ..Default::default() };
    // The other way round: every transaction the coordinator put in a batch
    // was sent, and told accepted, here.
    for (n, info) in &infos {
        for id in &info.tx_ids {
            if at.get(id.as_str()).map(|&i| by_id[i].batch) != Some(Some(*n)) {
                acc.unaccounted.push(format!("{id}: in batch {n} there, not accepted into it here"));
            }
        }
    }
    let mut latencies = Vec::new();
    let (mut first_sent, mut last_landing) = (u64::MAX, 0u64);
    for s in &by_id {
        let told: serde_json::Value = http.get(format!("{api}/tx/{}", s.id)).send().await?.json().await?;
        let status = told["status"].as_str().unwrap_or("unknown");
        match (&s.rejected, s.batch) {
            (Some((code, _)), _) => {
                if status == "rejected" && told["code"] == code.as_str() {
                    *acc.rejected.entry(code.clone()).or_default() += 1;
                } else {
                    acc.unaccounted
                        .push(format!("{} ({}): rejected {code} here, {told} there", s.id, s.kind));
                }
            }
            (None, Some(b)) => {
                if !(status == "accepted" || status == "duplicate") || told["batch"].as_u64() != Some(b) {
                    acc.unaccounted.push(format!("{} ({}): in batch {b} here, {told} there", s.id, s.kind));
                    continue;
                }
                match infos.get(&b).and_then(|i| i.landed_at_ms) {
                    Some(at) => {
                        acc.on_l1 += 1;
                        latencies.push(at.saturating_sub(s.sent_at_ms) as f64 / 1e3);
                        first_sent = first_sent.min(s.sent_at_ms);
                        last_landing = last_landing.max(at);
                    }
                    None => acc.accepted_not_on_l1 += 1,
                }
            }
            (None, None) => acc.unaccounted.push(format!("{} ({}): no outcome recorded", s.id, s.kind)),
        }
    }
    latencies.sort_by(f64::total_cmp);
    let span = last_landing.saturating_sub(first_sent) as f64 / 1e3;
    let mut stage_medians = BTreeMap::new();
    let all: Vec<&BatchInfo> = infos.values().collect();
    for (k, i) in [("synthesis", 0), ("ntt", 1), ("msm", 2), ("prove", 3)] {
        stage_medians.insert(k, median_of(all.iter().filter_map(|b| b.stages.map(|s| s[i])).collect()));
    }
    let gap = |a: Option<u64>, b: Option<u64>| a.zip(b).map(|(a, b)| b.saturating_sub(a) as f64 / 1e3);
    stage_medians.insert(
        "seal_to_proof",
        median_of(all.iter().filter_map(|b| gap(Some(b.sealed_at_ms), b.verified_at_ms)).collect()),
    );
    stage_medians.insert(
        "proof_to_l1",
        median_of(all.iter().filter_map(|b| gap(b.verified_at_ms, b.landed_at_ms)).collect()),
    );
    stage_medians.insert(
        "l1_submit",
        median_of(all.iter().filter_map(|b| b.l1_latency_ms.map(|m| m as f64 / 1e3)).collect()),
    );
    let mut provers = BTreeMap::new();
    for b in &all {
        if let Some(p) = &b.prover {
            *provers.entry(p.clone()).or_default() += 1;
        }
    }
    Ok(Snapshot {
        machine: machine(),
        clinics,
        worker_threads,
        duration_s,
        transactions: acc,
        batches,
        proven_tx_per_s: if span > 0.0 { latencies.len() as f64 / span } else { 0.0 },
        latency_to_l1_s: [
            ("median", pct(&latencies, 50.0)),
            ("p95", pct(&latencies, 95.0)),
            ("max", pct(&latencies, 100.0)),
        ]
        .into(),
        stage_medians_s: stage_medians,
        gas_per_batch_median: median_of(all.iter().filter_map(|b| b.gas.map(|g| g as f64)).collect()),
        provers,
    })
}

/// CPU model and core count.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpu}, {cores} cores")
}

/// The snapshot as a short text table.
pub fn render(s: &Snapshot) -> String {
    let t = &s.transactions;
    let rejected: usize = t.rejected.values().sum();
    let reasons: Vec<String> = t.rejected.iter().map(|(k, v)| format!("{v} {k}")).collect();
    let st = |k: &str| s.stage_medians_s.get(k).copied().unwrap_or(f64::NAN);
    let provers: Vec<String> = s.provers.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!(
        "machine: {}\n\
         transactions: {} sent, {} on L1 in {} batches, {rejected} rejected with a reason ({}), {} accepted but not on L1, {} unaccounted\n\
         throughput: {:.2} transactions/s proven and on L1 ({} clinics, {:.0} s)\n\
         latency from sending to L1: median {:.1} s, p95 {:.1} s, max {:.1} s\n\
         per batch (medians): synthesis {:.2} s, NTT {:.2} s, MSM {:.2} s, proof {:.2} s; seal to proof {:.1} s, proof to L1 {:.1} s (L1 submit {:.1} s); gas {:.0}\n\
         provers ({} threads each): {}",
        s.machine,
        t.submitted,
        t.on_l1,
        s.batches,
        if reasons.is_empty() { "none".into() } else { reasons.join(", ") },
        t.accepted_not_on_l1,
        t.unaccounted.len(),
        s.proven_tx_per_s,
        s.clinics,
        s.duration_s,
        s.latency_to_l1_s["median"],
        s.latency_to_l1_s["p95"],
        s.latency_to_l1_s["max"],
        st("synthesis"),
        st("ntt"),
        st("msm"),
        st("prove"),
        st("seal_to_proof"),
        st("proof_to_l1"),
        st("l1_submit"),
        s.gas_per_batch_median,
        s.worker_threads,
        provers.join(", "),
    )
}
