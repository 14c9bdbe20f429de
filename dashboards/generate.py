#!/usr/bin/env python3
"""Writes medrollup's Grafana dashboards (dashboards/grafana/*.json) from the
panel lists below: one place for every query, a consistent layout, and JSON
that Grafana (9 or later) imports as is. `--check` fails if the checked-in
files differ from what this script writes.

Every query here is evaluated against a live Prometheus scraping a live farm
by coordinator/tests/dashboards.rs.
"""
import json
import pathlib
import sys

OUT = pathlib.Path(__file__).resolve().parent / "grafana"
DS = {"type": "prometheus", "uid": "${datasource}"}


def q(expr, legend=""):
    return {"expr": expr, "legendFormat": legend}


def p50_p95(metric, by="", window="5m"):
    group = f"le{', ' + by if by else ''}"
    suffix = f" {{{{{by}}}}}" if by else ""
    return [
        q(f"histogram_quantile(0.5, sum by ({group}) (rate({metric}_bucket[{window}])))", "p50" + suffix),
        q(f"histogram_quantile(0.95, sum by ({group}) (rate({metric}_bucket[{window}])))", "p95" + suffix),
    ]


def panel(title, targets, unit="short", kind="timeseries", desc=""):
    return {"title": title, "targets": targets, "unit": unit, "kind": kind, "description": desc}


DASHBOARDS = {
    "farm-overview": ("medrollup: farm overview", [
        panel("Transactions in, by outcome", [q("sum by (outcome) (rate(medrollup_tx_total[1m]))", "{{outcome}}")], "reqps",
              desc="Transactions the coordinator decided per second: accepted, duplicate, rejected."),
        panel("Batches per minute", [
            q("rate(medrollup_batches_sealed_total[5m]) * 60", "sealed"),
            q("rate(medrollup_batches_proven_total[5m]) * 60", "proven"),
            q("rate(medrollup_batches_submitted_total[5m]) * 60", "on L1"),
        ], "short"),
        panel("Latency from intake to L1 (per transaction)", [
            *p50_p95("medrollup_tx_intake_to_l1_seconds"),
            q("histogram_quantile(0.99, sum by (le) (rate(medrollup_tx_intake_to_l1_seconds_bucket[5m])))", "p99"),
        ], "s"),
        panel("Seal to proof, seal to L1", [
            *[dict(t, legendFormat="proof " + t["legendFormat"]) for t in p50_p95("medrollup_seal_to_proof_seconds")],
            *[dict(t, legendFormat="L1 " + t["legendFormat"]) for t in p50_p95("medrollup_seal_to_l1_seconds")],
        ], "s"),
        panel("Proving queue depth", [q("medrollup_queue_depth", "waiting")], "short",
              desc="Jobs waiting for a proof: queued, or parked dead after failed attempts (queued again after a wait)."),
        panel("Failed attempts, lost jobs, dropped results (5 min)", [
            q("sum(increase(medrollup_job_attempts_failed_total[5m]))", "failed attempts"),
            q("sum(increase(medrollup_jobs_lost_total[5m]))", "jobs lost"),
            q("sum(increase(medrollup_jobs_revived_total[5m]))", "dead jobs queued again"),
            q("sum(increase(medrollup_results_dropped_total[5m]))", "results dropped"),
        ], "short",
              desc="A worker's failure or a proof that did not verify; a job taken and never answered; "
                   "a result undecodable or sent in another worker's name."),
        panel("Jobs by state", [q("sum by (state) (medrollup_jobs)", "{{state}}")], "short"),
        panel("Rejections by reason (5 min)", [q("sum by (reason) (increase(medrollup_tx_rejected_total[5m]))", "{{reason}}")], "short"),
        panel("Workers alive", [q("medrollup_workers", "workers")], "short", "stat"),
        panel("Transactions per batch (median)", [q("histogram_quantile(0.5, sum by (le) (rate(medrollup_batch_transactions_bucket[5m])))", "median")], "short"),
        panel("Proofs checked, by outcome", [q("sum by (outcome) (rate(medrollup_proofs_verified_total[5m]))", "{{outcome}}")], "ops"),
    ]),
    "provers": ("medrollup: provers", [
        panel("Proofs per worker", [q("sum by (instance, outcome) (rate(medrollup_worker_jobs_total[5m]))", "{{instance}} {{outcome}}")], "ops"),
        panel("Stage times per worker (median)", [q("histogram_quantile(0.5, sum by (le, instance, stage) (rate(medrollup_worker_stage_seconds_bucket[5m])))", "{{instance}} {{stage}}")], "s"),
        panel("Stage times by backend (as reported with accepted proofs)", [
            q(f"histogram_quantile({x}, sum by (le, stage, backend) (rate(medrollup_prover_stage_seconds_bucket[5m])))",
              f"p{int(x * 100)} {{{{stage}}}} {{{{backend}}}}")
            for x in (0.5, 0.95)
        ], "s"),
        panel("MSM points per second, per device", [q("sum by (instance, device) (rate(medrollup_worker_device_msm_points_total[1m]))", "{{instance}} {{device}}")], "short"),
        panel("NTT elements per second, per device", [q("sum by (instance, device) (rate(medrollup_worker_device_ntt_elements_total[1m]))", "{{instance}} {{device}}")], "short"),
        panel("Device busy (fraction of time)", [q("sum by (instance, device) (rate(medrollup_worker_device_busy_seconds_total[1m]))", "{{instance}} {{device}}")], "percentunit"),
        panel("Device errors, CPU fallbacks and reopens (5 min)", [
            q("sum by (instance, device) (increase(medrollup_worker_device_errors_total[5m]))", "errors {{instance}} {{device}}"),
            q("sum by (instance, device) (increase(medrollup_worker_device_fallbacks_total[5m]))", "fallbacks {{instance}} {{device}}"),
            q("sum by (instance, device) (increase(medrollup_worker_device_reopens_total[5m]))", "reopens {{instance}} {{device}}"),
        ], "short",
              desc="A device that fails goes out of service and its work to the CPU; to come back it is opened afresh "
                   "(a new context) and passes its known-answer test again."),
        panel("Device memory: used and budget", [
            q("sum by (instance, device) (medrollup_worker_device_memory_used_bytes)", "used {{instance}} {{device}}"),
            q("sum by (instance, device) (medrollup_worker_device_memory_budget_bytes)", "budget {{instance}} {{device}}"),
        ], "bytes",
              desc="GPU memory held (resident proving-key bases, cached NTT tables, buffers of the calls running) "
                   "against each device's budget (--device-memory). Bases load only with room left for the largest call."),
        panel("Devices in service", [q("sum by (instance) (medrollup_worker_device_healthy)", "{{instance}}")], "short", "stat"),
        panel("Workers proving now", [q("sum(medrollup_worker_busy)", "busy")], "short", "stat"),
    ]),
    "l1": ("medrollup: L1", [
        panel("Gas per batch", [
            q("rate(medrollup_l1_gas_per_batch_sum[5m]) / rate(medrollup_l1_gas_per_batch_count[5m])", "mean"),
            q("histogram_quantile(0.95, sum by (le) (rate(medrollup_l1_gas_per_batch_bucket[5m])))", "p95"),
        ], "short"),
        panel("Gas per transaction", [q("rate(medrollup_l1_gas_per_transaction_sum[5m]) / rate(medrollup_l1_gas_per_transaction_count[5m])", "mean")], "short"),
        panel("Submit latency (first send to confirmed)", p50_p95("medrollup_l1_submit_seconds"), "s"),
        panel("Confirmations of the last batch", [
            q("medrollup_l1_head_block - medrollup_l1_last_landed_block + 1", "confirmations"),
            q("medrollup_l1_confirmations", "required"),
        ], "short"),
        panel("Submitter balance", [q("medrollup_l1_submitter_balance_ether", "ETH")], "short", "stat"),
        panel("Submitter events (5 min)", [q("sum by (event) (increase(medrollup_l1_events_total[5m]))", "{{event}}")], "short"),
        panel("Last batch on L1", [q("medrollup_last_submitted_batch", "batch")], "short", "stat"),
        panel("Proven batches awaiting L1", [q("medrollup_batches_awaiting_l1", "awaiting")], "short", "stat"),
        panel("Submitter up", [q("medrollup_l1_up", "up")], "short", "stat"),
        panel("Proposed verifier: installable at (Unix s; 0: none) and for other keys (1)", [
            q("medrollup_l1_verifier_upgrade_activation_seconds", "installable at"),
            q("medrollup_l1_verifier_upgrade_foreign", "for other keys"),
        ], "short", "stat"),
    ]),
    "storage": ("medrollup: storage", [
        panel("Add and cat latency", p50_p95("medrollup_storage_seconds", "op"), "s"),
        panel("Bytes per second", [q("sum by (op) (rate(medrollup_storage_bytes_total[5m]))", "{{op}}")], "Bps"),
        panel("Calls per second", [q("sum by (op) (rate(medrollup_storage_seconds_count[5m]))", "{{op}}")], "ops"),
        panel("Errors (5 min)", [q("sum by (op) (increase(medrollup_storage_errors_total[5m]))", "{{op}}")], "short"),
    ]),
}


def grafana(uid, title, panels):
    out = []
    for i, p in enumerate(panels):
        w = 8 if p["kind"] == "stat" else 12
        out.append({
            "id": i + 1,
            "type": p["kind"],
            "title": p["title"],
            "description": p["description"],
            "datasource": DS,
            "gridPos": {"h": 8, "w": w, "x": (i % 2) * 12, "y": (i // 2) * 8},
            "fieldConfig": {"defaults": {"unit": p["unit"]}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom"}} if p["kind"] == "timeseries" else {},
            "targets": [dict(t, refId=chr(ord("A") + j), datasource=DS) for j, t in enumerate(p["targets"])],
        })
    return {
        "uid": f"medrollup-{uid}",
        "title": title,
        "tags": ["medrollup"],
        "timezone": "browser",
        "schemaVersion": 38,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-30m", "to": "now"},
        "templating": {"list": [{
            "name": "datasource", "type": "datasource", "query": "prometheus",
            "label": "Prometheus", "current": {}, "hide": 0,
        }]},
        "panels": out,
    }


def main():
    check = "--check" in sys.argv[1:]
    stale = []
    for uid, (title, panels) in DASHBOARDS.items():
        text = json.dumps(grafana(uid, title, panels), indent=2) + "\n"
        path = OUT / f"{uid}.json"
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.write_text(text)
    if stale:
        sys.exit("out of date (run dashboards/generate.py): " + ", ".join(stale))


if __name__ == "__main__":
    main()
