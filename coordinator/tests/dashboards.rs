//! The operators' dashboards and alerts, proven against a live Prometheus
//! (Debian's 2.42) that scrapes a live farm: nats-server, the coordinator
//! landing batches on anvil, and two workers, while a realistic load flows.
//! One of the workers proves on an OpenCL device (POCL's CPU device in CI).
//! Every query of every Grafana panel and every alert expression must parse
//! and return data; the alert rules load and evaluate cleanly; and the alert
//! unit tests pass under promtool. Grafana itself cannot be installed here:
//! this is how the dashboards are known to work.

mod common;

use common::*;
use medrollup_coordinator::workload;
use medrollup_l1::canonical;
use medrollup_l1::devnet::{Anvil, DEV_KEY};
use medrollup_wire::TxStatus;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn dashboards_dir() -> PathBuf {
    root().join("dashboards")
}

fn promtool() -> Command {
    Command::new("promtool")
}

fn prometheus_missing() -> String {
    "prometheus/promtool are not installed: `apt-get install prometheus` (scripts/services does it)".into()
}

/// Every (dashboard, panel, expr) in dashboards/grafana/*.json.
fn panel_queries() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(dashboards_dir().join("grafana"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    for f in files {
        let d: serde_json::Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
        let title = d["title"].as_str().unwrap().to_string();
        for p in d["panels"].as_array().unwrap() {
            for t in p["targets"].as_array().unwrap() {
                out.push((
                    title.clone(),
                    p["title"].as_str().unwrap().into(),
                    t["expr"].as_str().unwrap().into(),
                ));
            }
        }
    }
    out
}

/// The metric names an expression reads.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let starts = (expr[i..].starts_with("medrollup_") || expr[i..].starts_with("up{"))
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'));
        if starts {
            let end = expr[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(expr.len(), |e| i + e);
            names.push(expr[i..end].to_string());
            i = end;
        } else {
            i += 1;
        }
    }
    names.sort();
    names.dedup();
    names
}

async fn query(prom: &str, expr: &str) -> Result<Vec<serde_json::Value>, String> {
    let r = reqwest::Client::new()
        .get(format!("{prom}/api/v1/query"))
        .query(&[("query", expr)])
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let v: serde_json::Value = r.json().await.map_err(|e| e.to_string())?;
    if v["status"] != "success" {
        return Err(format!("{}: {}", v["errorType"], v["error"]));
    }
    Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
}

#[test]
fn the_checked_in_dashboards_are_what_the_generator_writes() {
    let out =
        Command::new("python3").arg(dashboards_dir().join("generate.py")).arg("--check").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(panel_queries().len() >= 40, "every dashboard has its panels");
    assert_eq!(
        metric_names("rate(medrollup_a_total[1m]) / up{job=\"x\"} - medrollup_b"),
        ["medrollup_a_total", "medrollup_b", "up"]
    );
}

#[test]
fn the_alert_rules_pass_their_promtool_unit_tests() {
    let dir = dashboards_dir().join("prometheus");
    let check = promtool().args(["check", "config", "prometheus.yml"]).current_dir(&dir).output();
    let Ok(check) = check else { panic!("{}", prometheus_missing()) };
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    let out = promtool().args(["test", "rules", "alerts.test.yml"]).current_dir(&dir).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && text.contains("SUCCESS"), "{text}");
}

/// Prometheus on `port` with the checked-in configuration, its targets
/// moved to where this test's processes listen.
fn start_prometheus(dir: &Path, port: u16, coordinator: u16, workers: [u16; 2]) -> Proc {
    let src = dashboards_dir().join("prometheus");
    let config = std::fs::read_to_string(src.join("prometheus.yml"))
        .unwrap()
        .replace("scrape_interval: 5s", "scrape_interval: 1s")
        .replace("evaluation_interval: 5s", "evaluation_interval: 1s")
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{coordinator}"))
        .replace("127.0.0.1:9101", &format!("127.0.0.1:{}", workers[0]))
        .replace("127.0.0.1:9102", &format!("127.0.0.1:{}", workers[1]));
    assert!(config.contains(&format!("127.0.0.1:{}", workers[1])), "the template's targets moved");
    std::fs::copy(src.join("alerts.yml"), dir.join("alerts.yml")).unwrap();
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    Proc::spawn(
        "prometheus",
        Command::new("prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}")),
        dir,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_panel_and_alert_query_returns_data_from_a_live_farm() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(dir.path());
    let keys = keys_dir_seeded(canonical::SHAPE, canonical::SEED);
    let anvil = Anvil::start(free_port(), &["--block-time", "1"]).unwrap();
    let http_port = free_port();
    let http = format!("http://127.0.0.1:{http_port}");
    let data = dir.path().join("coordinator");
    let _coordinator = Coordinator::start(&CoordinatorOpts {
        l1: Some((&anvil.url(), DEV_KEY, 1)),
        ..CoordinatorOpts::new(&nats, &keys, &data, dir.path(), http_port)
    });
    let ports = [free_port(), free_port()];
    // One worker on the CPU, one on an OpenCL device (POCL's in CI): the
    // device panels show a GPU backend's metrics, as a hospital's would.
    let device = opencl_device();
    let _workers: Vec<Proc> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let name = format!("hospital-{i}");
            let metrics = ["--metrics".to_string(), format!("127.0.0.1:{port}")];
            let mut args: Vec<&str> = metrics.iter().map(String::as_str).collect();
            if i == 1 && device.is_some() {
                args.extend(OPENCL_WORKER);
            }
            start_worker_with(&nats, &name, &dir.path().join(&name), dir.path(), &args)
        })
        .collect();
    let prom_port = free_port();
    let prom = format!("http://127.0.0.1:{prom_port}");
    let _prometheus = match which("prometheus") {
        true => start_prometheus(dir.path(), prom_port, http_port, ports),
        false => panic!("{}", prometheus_missing()),
    };

    // A realistic load: doctors registered, clinics' consents, records,
    // reads, a revoke, and the refused write after it.
    let load = workload::generate(3, now(), "dashboards");
    let client = Client::connect(&nats).await;
    let mut steps = load.admin.clone();
    steps.extend(load.clinics.concat());
    let (mut accepted, mut rejected) = (0, 0);
    for s in steps {
        if let Some(c) = &s.content {
            kubo_add(&http, c.clone()).await;
        }
        match client.submit_bytes(serde_json::to_vec(&s.tx).unwrap()).await.status {
            TxStatus::Accepted { .. } => accepted += 1,
            TxStatus::Rejected { .. } => rejected += 1,
            TxStatus::Duplicate { .. } => panic!("a fresh transaction is not a duplicate"),
        }
    }
    assert!(accepted > 0 && rejected > 0, "{accepted} accepted, {rejected} rejected");
    let sealed = wait_for("every batch on L1", Duration::from_secs(600), || async {
        let root = get_json(&format!("{http}/root")).await;
        let sealed = root["batches_sealed"].as_u64()?;
        let l1 = get_json(&format!("{http}/l1")).await;
        (sealed > 0 && l1["last_landed"].as_u64() == Some(sealed - 1)).then_some(sealed)
    })
    .await;

    // Prometheus has scraped all three targets since, and its rules ran.
    wait_for("every target up and scraped after the last landing", Duration::from_secs(60), || async {
        let t = get_json(&format!("{prom}/api/v1/targets")).await;
        let active = t["data"]["activeTargets"].as_array()?.clone();
        let landed = query(&prom, "medrollup_last_submitted_batch").await.ok()?;
        let seen = landed.first()?["value"][1].as_str()?.parse::<u64>().ok()?;
        (active.len() == 3 && active.iter().all(|a| a["health"] == "up") && seen == sealed - 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut failures = Vec::new();
    let queries = panel_queries();
    for (dashboard, panel, expr) in &queries {
        if device.is_none() && expr.contains("device_memory") {
            println!("not checked without an OpenCL device (only devices have memory): {panel}");
            continue;
        }
        match query(&prom, expr).await {
            Ok(r) if r.is_empty() => failures.push(format!("{dashboard} / {panel}: no data for {expr}")),
            Ok(_) => {}
            Err(e) => failures.push(format!("{dashboard} / {panel}: {expr}: {e}")),
        }
    }
    let rules = get_json(&format!("{prom}/api/v1/rules")).await;
    let rules: Vec<serde_json::Value> = rules["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .collect();
    let written = std::fs::read_to_string(dashboards_dir().join("prometheus/alerts.yml")).unwrap();
    let written = written.lines().filter(|l| l.trim_start().starts_with("- alert:")).count();
    assert!(written >= 9, "alerts.yml has {written} rules");
    assert_eq!(rules.len(), written, "every alert rule loaded");
    for r in &rules {
        let (name, expr) = (r["name"].as_str().unwrap(), r["query"].as_str().unwrap());
        if r["health"] != "ok" {
            failures.push(format!("alert {name}: health {} ({})", r["health"], r["lastError"]));
        }
        // The expression parses and evaluates (it returns data only when it
        // fires); every series it reads exists.
        if let Err(e) = query(&prom, expr).await {
            failures.push(format!("alert {name}: {expr}: {e}"));
        }
        for m in metric_names(expr) {
            let selector = if m == "up" { "up{job=\"medrollup-workers\"}".to_string() } else { m.clone() };
            match query(&prom, &selector).await {
                Ok(r) if r.is_empty() => failures.push(format!("alert {name}: no series {selector}")),
                Ok(_) => {}
                Err(e) => failures.push(format!("alert {name}: {selector}: {e}")),
            }
        }
    }
    println!(
        "{} panel queries and {} alert rules evaluated against {sealed} batches on L1",
        queries.len(),
        rules.len()
    );
    assert!(failures.is_empty(), "{} problems:\n{}", failures.len(), failures.join("\n"));
    // A healthy farm fires nothing.
    let firing: Vec<_> = rules.iter().filter(|r| r["state"] == "firing").map(|r| r["name"].clone()).collect();
    assert!(firing.is_empty(), "alerts firing on a healthy farm: {firing:?}");
}

fn which(bin: &str) -> bool {
    Command::new(bin).arg("--version").output().is_ok_and(|o| o.status.success())
}
