//! The farm end to end against a real nats-server: the coordinator and the
//! workers run as processes, clients submit over NATS and read the HTTP API.

mod common;

use common::*;
use medrollup_circuits::keys::CircuitShape;
use medrollup_circuits::sample;
use medrollup_coordinator::workload;
use medrollup_wire::{TxAnswer, TxStatus};
use std::collections::HashSet;
use std::time::Duration;

/// The circuit the farm tests prove: 8 transactions, trees of 4^5 leaves.
const SHAPE: CircuitShape = CircuitShape { batch_size: 8, levels: 5 };

/// Heavy tests take turns (2 cores; several provers each).
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Farm {
    dir: tempfile::TempDir,
    nats: Nats,
    keys: std::path::PathBuf,
    /// The coordinator's data directory (the same at each start).
    data: std::path::PathBuf,
    http_port: u16,
}

impl Farm {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let nats = Nats::start(dir.path());
        Farm {
            keys: keys_dir(SHAPE),
            nats,
            http_port: free_port(),
            data: dir.path().join("coordinator"),
            dir,
        }
    }

    /// The tests' usual coordinator settings for this farm.
    fn opts(&self) -> CoordinatorOpts<'_> {
        CoordinatorOpts::new(&self.nats, &self.keys, &self.data, self.dir.path(), self.http_port)
    }

    fn coordinator(&self, ack_wait_s: u64) -> Coordinator {
        self.coordinator_with(ack_wait_s, 5)
    }

    fn coordinator_with(&self, ack_wait_s: u64, max_deliver: i64) -> Coordinator {
        Coordinator::start(&CoordinatorOpts {
            job_ack_wait_s: ack_wait_s,
            job_max_deliver: max_deliver,
            ..self.opts()
        })
    }

    fn worker(&self, name: &str) -> Proc {
        start_worker(&self.nats, name, &self.dir.path().join(format!("cache-{name}")), self.dir.path())
    }

    fn http(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }
}

/// Sends one clinic's (or the admin's) steps in order, adding record content
/// first; returns each step's answer.
async fn run_steps(client: &Client, http: &str, steps: &[workload::Step]) -> Vec<(workload::Step, TxAnswer)> {
    let mut out = Vec::new();
    for s in steps {
        if let Some(c) = &s.content {
            kubo_add(http, c.clone()).await;
        }
        let a = client.submit_bytes(serde_json::to_vec(&s.tx).unwrap()).await;
        out.push((s.clone(), a));
    }
    out
}

async fn all_submitted(http: &str) -> Option<u64> {
    let root = get_json(&format!("{http}/root")).await;
    let (sealed, submitted) = (root["batches_sealed"].as_u64()?, root["batches_submitted"].as_u64()?);
    (sealed > 0 && sealed == submitted).then_some(sealed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_transactions_from_concurrent_clients_end_proven_or_rejected() {
    let _heavy = HEAVY.lock().await;
    let farm = Farm::new();
    let _coordinator = farm.coordinator(30);
    let _w1 = farm.worker("hospital-a");
    let _w2 = farm.worker("hospital-b");
    let http = farm.http();
    let load = workload::generate(25, now(), "two-hundred");
    assert_eq!(load.len(), 200);

    let admin = Client::connect(&farm.nats).await;
    let mut answers = run_steps(&admin, &http, &load.admin).await;
    // Five concurrent clients, five clinics each.
    let mut tasks = Vec::new();
    for chunk in load.clinics.chunks(5) {
        let client = Client::connect(&farm.nats).await;
        let (http, chunk) = (http.clone(), chunk.to_vec());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for clinic in &chunk {
                out.extend(run_steps(&client, &http, clinic).await);
            }
            out
        }));
    }
    for t in tasks {
        answers.extend(t.await.unwrap());
    }
    assert_eq!(answers.len(), 200);

    // Every transaction is answered as the rules say.
    let mut accepted = HashSet::new();
    for (step, a) in &answers {
        match &a.status {
            TxStatus::Accepted { .. } => {
                assert!(!step.expect_rejected, "{:?} should have been refused", step.tx.tx.body);
                accepted.insert(a.id.clone());
            }
            TxStatus::Rejected { code, reason } => {
                assert!(step.expect_rejected, "{:?} refused: {code}: {reason}", step.tx.tx.body);
                assert_eq!(code, "consent_revoked", "{reason}");
            }
            TxStatus::Duplicate { .. } => panic!("no duplicates were sent: {a:?}"),
        }
    }
    assert_eq!(accepted.len(), 175);

    // Every accepted one ends in a proven batch handed to L1, in order.
    let batches =
        wait_for("every batch proven and submitted", Duration::from_secs(600), || all_submitted(&http)).await;
    let (root, ids, sealed) = native_replay(&http, &sample::genesis(SHAPE.levels)).await;
    assert_eq!(sealed, batches);
    let api_root = get_json(&format!("{http}/root")).await;
    assert_eq!(api_root["root"].as_str().unwrap(), root, "the coordinator's root equals a native replay");
    assert_eq!(ids.len(), accepted.len(), "each accepted transaction is in exactly one batch");
    assert_eq!(ids.iter().cloned().collect::<HashSet<_>>(), accepted);
    for n in 0..batches {
        let b = get_json(&format!("{http}/batch/{n}")).await;
        assert!(b["proof"].is_object(), "batch {n} has a verified proof");
        assert_eq!(b["submitted"], true);
    }
    let sink = std::fs::read_to_string(farm.dir.path().join("coordinator/l1-sink.jsonl")).unwrap();
    let order: Vec<u64> = sink
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["batch"].as_u64().unwrap())
        .collect();
    assert_eq!(order, (0..batches).collect::<Vec<_>>(), "proofs reach L1 strictly in batch order");

    // The transaction stream keeps only what came after the last seal (some
    // of the refusals at most), not every submission.
    let admin = async_nats::jetstream::new(farm.nats.connect(COORDINATOR).await);
    let mut tx_stream = admin.get_stream(medrollup_wire::streams::TX).await.unwrap();
    let kept = &tx_stream.info().await.unwrap().state;
    assert!(kept.messages <= 25 && kept.first_sequence > 175, "{kept:?}");

    // Both workers proved, and the metrics say what happened.
    let farm_status = get_json(&format!("{http}/farm")).await;
    assert_eq!(farm_status["jobs"]["proven"].as_u64(), Some(batches));
    let metrics = reqwest::get(format!("{http}/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("medrollup_tx_total{outcome=\"accepted\"} 175"), "{metrics}");
    assert!(metrics.contains("medrollup_tx_rejected_total{reason=\"consent_revoked\"} 25"));
    assert!(metrics.contains(&format!("medrollup_batches_proven_total {batches}")));
}

async fn proven_by(http: &str, batch: u64) -> Option<String> {
    let b = get_json(&format!("{http}/batch/{batch}")).await;
    b["proof"]["worker"].as_str().map(str::to_string)
}

/// Waits (at most `limit`) for the first batch to be sealed.
async fn first_batch_sealed(http: &str, limit: Duration) {
    wait_for("the batch sealed", limit, || async {
        let root = get_json(&format!("{http}/root")).await;
        (root["batches_sealed"].as_u64()? >= 1).then_some(())
    })
    .await;
}

/// One full batch: the doctor registrations of eight clinics.
async fn one_batch(client: &Client, http: &str) -> Vec<TxAnswer> {
    let load = workload::generate(8, now(), "one-batch");
    run_steps(client, http, &load.admin).await.into_iter().map(|(_, a)| a).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hospital_worker_proves_on_its_device_and_reports_what_it_did() {
    let Some(device) = opencl_device() else { return };
    let _heavy = HEAVY.lock().await;
    let farm = Farm::new();
    let _coordinator = farm.coordinator(30);
    let http = farm.http();
    let metrics_port = free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let _w = start_worker_with(
        &farm.nats,
        "gpu-hospital",
        &farm.dir.path().join("cache-gpu"),
        farm.dir.path(),
        &[OPENCL_WORKER, &["--device-memory", "1GiB", "--metrics", &metrics_addr]].concat(),
    );
    let client = Client::connect(&farm.nats).await;
    one_batch(&client, &http).await;
    first_batch_sealed(&http, Duration::from_secs(60)).await;
    let who = wait_for("the batch proven", Duration::from_secs(300), || proven_by(&http, 0)).await;
    assert_eq!(who, "gpu-hospital");

    // The farm sees the device; the proof was made on it (the coordinator
    // verified it); the worker's metrics count the device's work.
    let f = get_json(&format!("{http}/farm")).await;
    let w = &f["workers"][0];
    assert_eq!(w["backend"], "opencl", "{f}");
    assert!(w["devices"][0].as_str().unwrap().starts_with(&device), "{f}");
    let metrics = reqwest::get(format!("http://{metrics_addr}/metrics")).await.unwrap().text().await.unwrap();
    let value = |name: &str, label: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l.contains(label))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} for {label}:\n{metrics}"))
    };
    let on_device = format!("device=\"{device}\"");
    assert!(value("medrollup_worker_device_msm_points_total", &on_device) > 0.0, "{metrics}");
    assert!(value("medrollup_worker_device_ntt_elements_total", &on_device) > 0.0, "{metrics}");
    assert_eq!(value("medrollup_worker_device_healthy", &on_device), 1.0);
    assert_eq!(value("medrollup_worker_device_errors_total", &on_device), 0.0);
    assert_eq!(value("medrollup_worker_device_msm_points_total", "device=\"cpu\""), 0.0, "all on the device");
    // The key's bases stay resident within the budget asked for.
    assert_eq!(value("medrollup_worker_device_memory_budget_bytes", &on_device), f64::from(1u32 << 30));
    let used = value("medrollup_worker_device_memory_used_bytes", &on_device);
    assert!(used > 0.0, "{metrics}");
    assert!(metrics.contains("medrollup_worker_stage_seconds_count{backend=\"opencl\""), "{metrics}");
    wait_for("batch 0 on L1", Duration::from_secs(30), || all_submitted(&http)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_mid_proof_loses_its_job_to_another() {
    let _heavy = HEAVY.lock().await;
    let farm = Farm::new();
    let _coordinator = farm.coordinator(3);
    let http = farm.http();
    let mut a = farm.worker("doomed");
    let client = Client::connect(&farm.nats).await;
    for ans in one_batch(&client, &http).await {
        assert!(matches!(ans.status, TxStatus::Accepted { batch: 0, .. }), "{ans:?}");
    }
    // Kill the worker while it holds the job.
    wait_for("the first worker to take the job", Duration::from_secs(60), || async {
        let f = get_json(&format!("{}/farm", farm.http())).await;
        f["workers"].as_array()?.iter().any(|w| w["name"] == "doomed" && w["busy"] == true).then_some(())
    })
    .await;
    a.kill9();
    assert!(proven_by(&http, 0).await.is_none(), "the killed worker must not have finished");
    let _b = farm.worker("survivor");
    let who =
        wait_for("the job redelivered and proven", Duration::from_secs(180), || proven_by(&http, 0)).await;
    assert_eq!(who, "survivor");
    wait_for("batch 0 on L1", Duration::from_secs(30), || all_submitted(&http)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rogue_workers_proof_is_rejected_reproved_elsewhere_and_never_handed_on() {
    let _heavy = HEAVY.lock().await;
    let farm = Farm::new();
    let _coordinator = farm.coordinator(30);
    let http = farm.http();
    let client = Client::connect(&farm.nats).await;
    one_batch(&client, &http).await;

    // The rogue takes the job and answers with curve points that are no proof.
    let (js, c) = rogue_consumer(&farm).await;
    let m = next_job(&c).await;
    let spec: medrollup_wire::JobSpec = serde_json::from_slice(&m.payload).unwrap();
    let bogus = {
        use ark_ec::PrimeGroup;
        ark_groth16::Proof::<ark_bn254::Bn254> {
            a: (ark_bn254::G1Projective::generator() * ark_bn254::Fr::from(3u64)).into(),
            b: ark_bn254::G2Projective::generator().into(),
            c: ark_bn254::G1Projective::generator().into(),
        }
    };
    let result = medrollup_wire::JobResult {
        batch: spec.batch,
        attempt: spec.attempt,
        worker: "rogue".into(),
        outcome: medrollup_wire::JobOutcome::Proved {
            proof: medrollup_wire::encode_proof(&bogus),
            backend: "cpu".into(),
            stages: Default::default(),
        },
    };
    return_result(&js, &m, &result).await;

    // Rejected and queued again without the rogue; an honest worker proves it.
    let job = wait_for("the rejection", Duration::from_secs(30), || async {
        let b = get_json(&format!("{http}/batch/0")).await;
        (b["job"]["attempt"] == 2).then(|| b["job"].clone())
    })
    .await;
    assert_eq!(job["excluded"], serde_json::json!(["rogue"]));
    assert!(job["failures"][0].as_str().unwrap().contains("does not verify"), "{job}");
    let _honest = farm.worker("honest");
    let who = wait_for("the honest proof", Duration::from_secs(180), || proven_by(&http, 0)).await;
    assert_eq!(who, "honest");
    wait_for("batch 0 on L1", Duration::from_secs(30), || all_submitted(&http)).await;
    let sink = std::fs::read_to_string(farm.dir.path().join("coordinator/l1-sink.jsonl")).unwrap();
    assert_eq!(sink.lines().count(), 1);
    assert!(!sink.contains(&medrollup_wire::encode_proof(&bogus)), "the rogue's proof never reaches L1");
    let metrics = reqwest::get(format!("{http}/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("medrollup_proofs_verified_total{outcome=\"rejected\"} 1"), "{metrics}");
    assert!(metrics.contains("medrollup_proofs_verified_total{outcome=\"accepted\"} 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_coordinator_killed_mid_run_loses_nothing_and_applies_nothing_twice() {
    let _heavy = HEAVY.lock().await;
    let farm = Farm::new();
    let mut coordinator = farm.coordinator(30);
    let _w = farm.worker("steady");
    let http = farm.http();
    let load = workload::generate(8, now(), "crash");
    let mut steps: Vec<workload::Step> = load.admin.clone();
    // Interleave the clinics so every batch mixes them.
    for k in 0..workload::STEPS_PER_CLINIC {
        steps.extend(load.clinics.iter().map(|c| c[k].clone()));
    }
    let client = Client::connect(&farm.nats).await;
    // Content first (the coordinator checks it), then publish without
    // waiting: the stream holds what the coordinator has not decided yet.
    for s in &steps {
        if let Some(c) = &s.content {
            kubo_add(&http, c.clone()).await;
        }
    }
    let half = steps.len() / 2;
    for s in &steps[..half] {
        client.publish_only(serde_json::to_vec(&s.tx).unwrap()).await;
    }
    wait_for("a batch or two sealed", Duration::from_secs(60), || async {
        let r = get_json(&format!("{http}/root")).await;
        (r["batches_sealed"].as_u64()? >= 2).then_some(())
    })
    .await;
    coordinator.proc.kill9();
    for s in &steps[half..] {
        client.publish_only(serde_json::to_vec(&s.tx).unwrap()).await;
    }
    let _restarted = farm.coordinator(30);
    wait_for("every batch proven and submitted", Duration::from_secs(600), || async {
        let sealed = all_submitted(&http).await?;
        let accepted: usize = {
            let mut n = 0;
            for b in 0..sealed {
                n += get_json(&format!("{http}/batch/{b}")).await["tx_ids"].as_array()?.len();
            }
            n
        };
        (accepted == steps.iter().filter(|s| !s.expect_rejected).count()).then_some(())
    })
    .await;
    let (root, ids, _) = native_replay(&http, &sample::genesis(SHAPE.levels)).await;
    assert_eq!(get_json(&format!("{http}/root")).await["root"].as_str().unwrap(), root);
    let expected: HashSet<String> = steps
        .iter()
        .filter(|s| !s.expect_rejected)
        .map(|s| medrollup_wire::tx_id(&serde_json::to_vec(&s.tx).unwrap()))
        .collect();
    assert_eq!(ids.len(), expected.len(), "nothing applied twice");
    assert_eq!(ids.into_iter().collect::<HashSet<_>>(), expected, "nothing lost");
    for s in steps.iter().filter(|s| s.expect_rejected) {
        let id = medrollup_wire::tx_id(&serde_json::to_vec(&s.tx).unwrap());
        let a = get_json(&format!("{http}/tx/{id}")).await;
        assert_eq!(a["status"], "rejected", "{a}");
    }
}

/// A NATS restart under a coordinator that has read nothing since its own
/// start makes the client library recreate its stream reader from the
/// stream's first message. What was applied is skipped, not decided again:
/// a patient's grant refused for coming before the patient's registration
/// stays refused (decided again, it would now be accepted).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_nats_restart_decides_no_transaction_again() {
    let mut farm = Farm::new();
    let coordinator = farm.coordinator(30);
    let http = farm.http();
    let load = workload::generate(2, now(), "nats-restart");
    let client = Client::connect(&farm.nats).await;
    let accepted = |a: &TxAnswer| matches!(a.status, TxStatus::Accepted { .. });
    for (_, a) in run_steps(&client, &http, &load.admin).await {
        assert!(accepted(&a), "{a:?}");
    }
    let clinic = &load.clinics[0];
    for s in &clinic[..2] {
        if let Some(c) = &s.content {
            kubo_add(&http, c.clone()).await;
        }
    }
    // The patient's grant before its registration: refused.
    let early = client.submit_bytes(serde_json::to_vec(&clinic[1].tx).unwrap()).await;
    let TxStatus::Rejected { code, .. } = &early.status else { panic!("{early:?}") };
    let first = client.submit_bytes(serde_json::to_vec(&clinic[0].tx).unwrap()).await;
    assert!(accepted(&first), "{first:?}");
    wait_for("the batch sealed", Duration::from_secs(30), || async {
        let r = get_json(&format!("{http}/tx/{}", first.id)).await;
        let batch = r["batch"].as_u64()?;
        (get_json(&format!("{http}/root")).await["batches_sealed"].as_u64()? > batch).then_some(())
    })
    .await;
    drop(coordinator);
    let _coordinator = farm.coordinator(30);
    farm.nats.restart();
    // The coordinator goes on: the next clinic's first step is decided.
    let next = &load.clinics[1][0];
    if let Some(c) = &next.content {
        kubo_add(&http, c.clone()).await;
    }
    let client = Client::connect(&farm.nats).await;
    let a = client.submit_bytes(serde_json::to_vec(&next.tx).unwrap()).await;
    assert!(accepted(&a), "{a:?}");
    let again = get_json(&format!("{http}/tx/{}", early.id)).await;
    assert_eq!(again["status"], "rejected", "the refused transaction was decided again: {again}");
    assert_eq!(again["code"].as_str(), Some(code.as_str()), "{again}");
    let log = std::fs::read_to_string(farm.dir.path().join("coordinator.log")).unwrap_or_default();
    assert!(!log.contains("decided otherwise"), "{log}");
}

/// A transaction accepted into the open batch stays accepted through a
/// crash, though what its decision rested on changed while the coordinator
/// was down (here its record's content became unreachable); one sent while
/// it was down goes into a batch of its own time, not the old open one's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_accepted_transaction_stays_accepted_through_a_crash_whatever_changed_meanwhile() {
    let farm = Farm::new();
    let data = &farm.data;
    let opts = |seal_timeout_ms| CoordinatorOpts { seal_timeout_ms, ..farm.opts() };
    let http = farm.http();
    let load = workload::generate(1, now(), "crash-replay");
    let clinic = &load.clinics[0];
    let client = Client::connect(&farm.nats).await;
    // The doctor, the patient and the consent, sealed.
    let first = Coordinator::start(&opts(300));
    let mut last = 0;
    for s in load.admin.iter().chain(&clinic[..2]) {
        let a = client.submit_bytes(serde_json::to_vec(&s.tx).unwrap()).await;
        let TxStatus::Accepted { batch, .. } = a.status else { panic!("{a:?}") };
        last = batch;
    }
    wait_for("the set-up sealed", Duration::from_secs(30), || async {
        (get_json(&format!("{http}/root")).await["batches_sealed"].as_u64()? > last).then_some(())
    })
    .await;
    drop(first);
    // The doctor's record, accepted into a batch that stays open; then a crash.
    let mut second = Coordinator::start(&opts(600_000));
    let add = &clinic[2];
    let cid = kubo_add(&http, add.content.clone().unwrap()).await;
    let accepted = client.submit_bytes(serde_json::to_vec(&add.tx).unwrap()).await;
    let TxStatus::Accepted { batch, position } = accepted.status else { panic!("{accepted:?}") };
    second.proc.kill9();
    // While it is down, the content goes out of reach (an IPFS node not
    // back yet, say): decided afresh, the record would now be refused.
    std::fs::remove_file(data.join("content").join(&cid)).unwrap();
    // The doctor logs a read meanwhile; the open batch's time passes.
    let log = &clinic[3];
    client.publish_only(serde_json::to_vec(&log.tx).unwrap()).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let _third = Coordinator::start(&opts(300));
    wait_for("the record's batch sealed", Duration::from_secs(30), || async {
        (get_json(&format!("{http}/root")).await["batches_sealed"].as_u64()? > batch).then_some(())
    })
    .await;
    let answer = get_json(&format!("{http}/tx/{}", accepted.id)).await;
    assert_eq!(
        (answer["status"].as_str(), answer["batch"].as_u64(), answer["position"].as_u64()),
        (Some("accepted"), Some(batch), Some(u64::from(position))),
        "{answer}"
    );
    let sealed = get_json(&format!("{http}/batch/{batch}")).await;
    assert_eq!(sealed["tx_ids"], serde_json::json!([accepted.id]), "{sealed}");
    let logged = medrollup_wire::tx_id(&serde_json::to_vec(&log.tx).unwrap());
    let answer = wait_for("the read decided", Duration::from_secs(30), || async {
        let r = reqwest::get(format!("{http}/tx/{logged}")).await.ok()?;
        r.status().is_success().then_some(())?;
        r.json::<serde_json::Value>().await.ok()
    })
    .await;
    assert_eq!(
        (answer["status"].as_str(), answer["batch"].as_u64()),
        (Some("accepted"), Some(batch + 1)),
        "{answer}"
    );
}

/// A record refused because its content was not there yet is accepted when
/// the same signed transaction is sent again after the content was added
/// (the refusal says to do so; the stream's duplicate window must not stop
/// it); so is one refused for a nonce ahead once the one before is in.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refusal_that_rested_on_what_was_there_then_is_decided_again_when_sent_again() {
    let farm = Farm::new();
    let _coordinator = farm.coordinator(30);
    let http = farm.http();
    let load = workload::generate(1, now(), "resend");
    let clinic = &load.clinics[0];
    let client = Client::connect(&farm.nats).await;
    for s in load.admin.iter().chain(&clinic[..2]) {
        let a = client.submit_bytes(serde_json::to_vec(&s.tx).unwrap()).await;
        assert!(matches!(a.status, TxStatus::Accepted { .. }), "{a:?}");
    }
    let add = &clinic[2];
    let body = serde_json::to_vec(&add.tx).unwrap();
    let post = || async {
        let r = reqwest::Client::new().post(format!("{http}/tx")).body(body.clone()).send().await.unwrap();
        (r.status().as_u16(), r.json::<TxAnswer>().await.unwrap())
    };
    let (status, first) = post().await;
    assert_eq!(status, 422);
    assert!(
        matches!(&first.status, TxStatus::Rejected { code, reason } if code == "record_content_missing" && reason.contains("send the transaction again")),
        "{first:?}"
    );
    kubo_add(&http, add.content.clone().unwrap()).await;
    let (status, again) = post().await;
    assert_eq!(status, 200, "{again:?}");
    assert!(matches!(again.status, TxStatus::Accepted { .. }), "{again:?}");
    assert_eq!(get_json(&format!("{http}/tx/{}", first.id)).await["status"], "accepted");
    // Sent a third time: a duplicate of the accepted one, not decided again.
    let (status, third) = post().await;
    assert_eq!(status, 200);
    assert!(matches!(third.status, TxStatus::Accepted { .. } | TxStatus::Duplicate { .. }), "{third:?}");
    // The doctor's update sent before the read it follows: its nonce is
    // ahead. Sent again once the read is in, it is decided again.
    let (read, update) = (&clinic[3], &clinic[4]);
    // The update's content is in the store only as the last block of other
    // content (a chunk's bytes are anyone's to name).
    let v2 = update.content.clone().unwrap();
    assert!(v2.len() < medrollup_storage::content::MAX_BLOCK);
    let holder = [vec![0x5a; medrollup_storage::content::MAX_BLOCK], v2.clone()].concat();
    let holder = kubo_add(&http, holder).await;
    let send = |tx: &medrollup_circuits::tx::SignedTx| {
        let body = serde_json::to_vec(tx).unwrap();
        let http = http.clone();
        async move {
            let r = reqwest::Client::new().post(format!("{http}/tx")).body(body).send().await.unwrap();
            (r.status().as_u16(), r.json::<TxAnswer>().await.unwrap())
        }
    };
    let (status, early) = send(&update.tx).await;
    assert_eq!(status, 422);
    assert!(matches!(&early.status, TxStatus::Rejected { code, .. } if code == "bad_nonce"), "{early:?}");
    assert!(matches!(send(&read.tx).await.1.status, TxStatus::Accepted { .. }));
    let (status, later) = send(&update.tx).await;
    assert_eq!(status, 200, "{later:?}");
    assert!(matches!(later.status, TxStatus::Accepted { .. }), "{later:?}");
    // The content holding it is let go; the accepted record's content was
    // pinned when it was accepted, and stays.
    let rm = reqwest::Client::new().post(format!("{http}/api/v0/pin/rm?arg={holder}")).send().await.unwrap();
    assert_eq!(rm.status(), 200, "{}", rm.text().await.unwrap());
    let v2_cid = medrollup_coordinator::cid::Cid::of(&v2);
    let cat = reqwest::Client::new().post(format!("{http}/api/v0/cat?arg={v2_cid}")).send().await.unwrap();
    assert_eq!(cat.status(), 200);
    assert_eq!(cat.bytes().await.unwrap().as_ref(), v2.as_slice(), "the accepted update's content is kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_oversized_forged_and_replayed_transactions_get_answers_and_change_nothing() {
    let farm = Farm::new();
    let _coordinator = farm.coordinator(30);
    let http = farm.http();
    let client = Client::connect(&farm.nats).await;
    let txs = sample::transactions();
    let first = client.submit_bytes(serde_json::to_vec(&txs[0]).unwrap()).await;
    assert!(matches!(first.status, TxStatus::Accepted { batch: 0, position: 0 }), "{first:?}");
    wait_for("batch 0 sealed", Duration::from_secs(30), || async {
        (get_json(&format!("{http}/root")).await["batches_sealed"] == 1).then_some(())
    })
    .await;
    let root = get_json(&format!("{http}/root")).await;

    let code = |a: &TxAnswer| match &a.status {
        TxStatus::Rejected { code, reason } => {
            assert!(!reason.is_empty());
            code.clone()
        }
        other => panic!("expected a rejection, got {other:?}"),
    };
    assert_eq!(code(&client.submit_bytes(b"\x00\x01garbage{".to_vec()).await), "malformed");
    assert_eq!(code(&client.submit_bytes(b"{\"signer\": 1}".to_vec()).await), "malformed");
    let huge = format!("{{\"pad\": \"{}\"}}", "x".repeat(medrollup_wire::MAX_TX_BYTES));
    assert_eq!(code(&client.submit_bytes(huge.into_bytes()).await), "too_large");
    // Far over it, the bus itself refuses to store the message.
    let r = client.js.publish(medrollup_wire::subjects::TX_SUBMIT, vec![b'x'; 100_000].into()).await;
    let stored = match r {
        Ok(ack) => ack.await.is_ok(),
        Err(_) => false,
    };
    assert!(!stored, "a 100 kB message was stored in the transaction stream");
    let mut forged = txs[1].clone();
    if let medrollup_circuits::tx::TxBody::RegisterDoctor { doctor, .. } = &mut forged.tx.body {
        *doctor += 1;
    }
    assert_eq!(code(&client.submit_bytes(serde_json::to_vec(&forged).unwrap()).await), "bad_signature");
    // The accepted transaction again, encoded differently: a duplicate.
    let again = serde_json::to_vec_pretty(&txs[0]).unwrap();
    let dup = client.submit_bytes(again).await;
    assert_eq!(dup.status, TxStatus::Duplicate { batch: 0 });
    // Over HTTP too.
    let r = reqwest::Client::new().post(format!("{http}/tx")).body("not json").send().await.unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["code"], "malformed");

    // Nothing changed, and the coordinator still serves.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(get_json(&format!("{http}/root")).await, root);
    let next = reqwest::Client::new().post(format!("{http}/tx")).json(&txs[1]).send().await.unwrap();
    assert_eq!(next.status(), 200);
    let next: TxAnswer = next.json().await.unwrap();
    assert!(matches!(next.status, TxStatus::Accepted { batch: 1, .. }), "{next:?}");
    let by_id = get_json(&format!("{http}/tx/{}", next.id)).await;
    assert_eq!(by_id["status"], "accepted");

    // Light-client reads and the Kubo subset.
    let p = get_json(&format!("{http}/proof/accounts/1")).await;
    assert_eq!(p["leaf"].as_array().unwrap().len(), 7);
    assert_eq!(reqwest::get(format!("{http}/proof/bogus/1")).await.unwrap().status(), 400);
    let cid = kubo_add(&http, b"hello".to_vec()).await;
    assert_eq!(cid, medrollup_coordinator::cid::Cid::of(b"hello").to_string());
    let cat = reqwest::Client::new().post(format!("{http}/api/v0/cat?arg={cid}")).send().await.unwrap();
    assert_eq!(cat.bytes().await.unwrap().as_ref(), b"hello");
    let pin = reqwest::Client::new().post(format!("{http}/api/v0/pin/add?arg={cid}")).send().await.unwrap();
    assert_eq!(pin.json::<serde_json::Value>().await.unwrap()["Pins"][0], cid);
    let missing = medrollup_coordinator::cid::Cid::of(b"never added");
    let cat = reqwest::Client::new().post(format!("{http}/api/v0/cat?arg={missing}")).send().await.unwrap();
    assert_eq!(cat.status(), 500);
    assert!(
        cat.json::<serde_json::Value>().await.unwrap()["Message"]
            .as_str()
            .unwrap()
            .contains("not in the store")
    );
    // A request wrong in itself is the client's error, as Kubo says it.
    for (path, why) in [
        ("cat?arg=bafy-not-a-cid", "cid"),
        ("pin/rm", "argument \"ipfs-path\" is required"),
        ("block/stat?arg=", "cid"),
    ] {
        let r = reqwest::Client::new().post(format!("{http}/api/v0/{path}")).send().await.unwrap();
        assert_eq!(r.status(), 400, "{path}");
        let body = r.json::<serde_json::Value>().await.unwrap();
        assert_eq!(body["Code"], 1, "{path}");
        assert!(body["Message"].as_str().unwrap().to_lowercase().contains(why), "{path}: {body}");
    }
    let no_file = reqwest::Client::new()
        .post(format!("{http}/api/v0/add"))
        .multipart(reqwest::multipart::Form::new())
        .send()
        .await
        .unwrap();
    assert_eq!(no_file.status(), 400);
    // The same API through the Kubo RPC client the client library uses.
    use medrollup_coordinator::content::{ContentError, ContentStore};
    let kubo = medrollup_storage::kubo::KuboStore::new(&http);
    let record = kubo.add(b"an encrypted record".to_vec()).await.unwrap();
    assert_eq!(kubo.cat(record).await.unwrap(), b"an encrypted record");
    // A record of many blocks (a 400 kB bundle), and one over the limit.
    let bundle: Vec<u8> = (0..400_000u32).map(|i| (i % 251) as u8).collect();
    let big = kubo.add(bundle.clone()).await.unwrap();
    assert_eq!(kubo.cat(big).await.unwrap(), bundle);
    let over =
        reqwest::multipart::Part::bytes(vec![7u8; medrollup_coordinator::content::MAX_CONTENT + 128 * 1024]);
    let r = reqwest::Client::new()
        .post(format!("{http}/api/v0/add"))
        .multipart(reqwest::multipart::Form::new().part("file", over))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert!(kubo.has(record).await.unwrap());
    kubo.unpin(record).await.unwrap();
    assert!(!kubo.has(record).await.unwrap(), "unpinned from the embedded store");
    assert!(matches!(kubo.cat(record).await, Err(ContentError::NotFound(_))));
    assert!(matches!(kubo.unpin(record).await, Err(ContentError::NotFound(_))));
    // A batch's published data is not anyone's to remove: refused, still there.
    let batch0 = get_json(&format!("{http}/batch/0")).await;
    let data = batch0["cid"].as_str().unwrap();
    let rm = reqwest::Client::new().post(format!("{http}/api/v0/pin/rm?arg={data}")).send().await.unwrap();
    assert_eq!(rm.status(), 403);
    let why = rm.json::<serde_json::Value>().await.unwrap()["Message"].as_str().unwrap().to_string();
    assert!(why.contains("batch 0's published data"), "{why}");
    let e = kubo.unpin(data.parse().unwrap()).await.unwrap_err();
    assert!(e.to_string().contains("data availability"), "{e}");
    assert!(kubo.has(data.parse().unwrap()).await.unwrap(), "batch 0's data is kept");
    // Damaged on disk: content that cannot be read is still let go, but not
    // a batch's published data (which batch it claims cannot be read).
    let store_dir = farm.data.join("content");
    let damaged = kubo.add(b"a record damaged on disk".to_vec()).await.unwrap();
    std::fs::write(store_dir.join(damaged.to_string()), b"a rec").unwrap();
    let e = kubo.cat(damaged).await.unwrap_err();
    assert!(e.to_string().contains("damaged"), "{e}");
    kubo.unpin(damaged).await.unwrap();
    assert!(!kubo.has(damaged).await.unwrap());
    std::fs::write(store_dir.join(data), b"not batch data").unwrap();
    let rm = reqwest::Client::new().post(format!("{http}/api/v0/pin/rm?arg={data}")).send().await.unwrap();
    assert_eq!(rm.status(), 403, "{}", rm.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worker_and_client_credentials_cannot_publish_what_is_not_theirs() {
    use async_nats::jetstream;
    let farm = Farm::new();
    let _coordinator = farm.coordinator(30);
    let admin = jetstream::new(farm.nats.connect(COORDINATOR).await);
    // Messages stored so far (the transaction stream is trimmed at each seal,
    // so its last sequence, not its message count).
    let count = |name: &'static str| {
        let admin = admin.clone();
        async move {
            let mut stream = admin.get_stream(name).await.unwrap();
            let state = &stream.info().await.unwrap().state;
            if name == medrollup_wire::streams::TX { state.last_sequence } else { state.messages }
        }
    };
    let (tx_before, jobs_before) =
        (count(medrollup_wire::streams::TX).await, count(medrollup_wire::streams::JOBS).await);
    let tx = serde_json::to_vec(&sample::transactions()[0]).unwrap();
    let worker = jetstream::new(farm.nats.connect(WORKER).await);
    let client = jetstream::new(farm.nats.connect(CLIENT).await);
    for (who, js, subject) in [
        ("worker", &worker, medrollup_wire::subjects::TX_SUBMIT),
        ("worker", &worker, medrollup_wire::subjects::JOBS),
        ("client", &client, medrollup_wire::subjects::JOBS),
    ] {
        let outcome = match js.publish(subject, tx.clone().into()).await {
            Ok(ack) => tokio::time::timeout(Duration::from_secs(10), ack).await.ok().and_then(Result::ok),
            Err(_) => None,
        };
        assert!(outcome.is_none(), "{who} could publish to {subject}");
    }
    assert_eq!(count(medrollup_wire::streams::TX).await, tx_before);
    assert_eq!(count(medrollup_wire::streams::JOBS).await, jobs_before);
    // A client's own subject works.
    let ok = client.publish(medrollup_wire::subjects::TX_SUBMIT, tx.into()).await.unwrap().await;
    assert!(ok.is_ok());
    // A hospital's worker speaks only for itself: results...
    let (user, password) = worker_credential("hospital-a");
    let nc = farm.nats.connect((&user, &password)).await;
    let a = jetstream::new(nc.clone());
    assert!(published(&a, &medrollup_wire::subjects::result("hospital-a")).await);
    assert!(!published(&a, &medrollup_wire::subjects::result("hospital-b")).await, "a result as hospital-b");
    // It reads the key bucket by direct gets, and may make no consumer on
    // its stream: the server delivers a push consumer's messages to the
    // subject its maker names, whatever that user may publish (here the
    // transaction stream's).
    let keys = a.get_stream(format!("OBJ_{}", medrollup_wire::streams::KEYS_BUCKET)).await.unwrap();
    assert!(!keys.direct_get(1).await.unwrap().payload.is_empty(), "a chunk of the proving key");
    let push = jetstream::consumer::push::Config {
        deliver_subject: medrollup_wire::subjects::TX_SUBMIT.into(),
        ..Default::default()
    };
    let made = tokio::time::timeout(Duration::from_secs(15), keys.create_consumer(push)).await;
    assert!(!matches!(made, Ok(Ok(_))), "a worker made a consumer on the key bucket's stream");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count(medrollup_wire::streams::TX).await, tx_before + 1, "only the client's transaction");
    // Its replies (job deliveries, acks' answers) come only to its own
    // inbox: under hospital-b's, nothing reaches it.
    let sneaky = async_nats::ConnectOptions::with_user_and_password(user.clone(), password.clone())
        .custom_inbox_prefix(medrollup_wire::natsconf::worker_inbox("hospital-b"))
        .connect(farm.nats.url.as_str())
        .await
        .unwrap();
    let sneaky = jetstream::new(sneaky);
    assert!(
        !published(&sneaky, &medrollup_wire::subjects::result("hospital-a")).await,
        "a reply in b's inbox"
    );
    // ...and heartbeats: in hospital-b's name on its subject (refused by the
    // server) or on hospital-a's own (dropped by the coordinator); only
    // hospital-a's own counts.
    let beat = |name| beat(name, false);
    use medrollup_wire::subjects::heartbeat;
    nc.publish(heartbeat("hospital-b"), beat("hospital-b")).await.unwrap();
    nc.publish(heartbeat("hospital-a"), beat("hospital-b")).await.unwrap();
    nc.publish(heartbeat("hospital-a"), beat("hospital-a")).await.unwrap();
    nc.flush().await.unwrap();
    let http = farm.http();
    let workers = wait_for("hospital-a's heartbeat", Duration::from_secs(30), || async {
        let w = get_json(&format!("{http}/farm")).await["workers"].to_string();
        w.contains("\"hospital-a\"").then_some(w)
    })
    .await;
    assert!(!workers.contains("hospital-b"), "a heartbeat in another's name counted: {workers}");
}

/// A heartbeat of worker `name` (a CPU worker, `busy` or not).
fn beat(name: &str, busy: bool) -> bytes::Bytes {
    let info = medrollup_wire::WorkerInfo {
        name: name.into(),
        backend: "cpu".into(),
        devices: vec![],
        threads: 1,
        memory_bytes: 1 << 30,
        jobs_done: 0,
        jobs_failed: 0,
        busy,
    };
    serde_json::to_vec(&info).unwrap().into()
}

/// Whether a JetStream publish to `subject` is stored (a refused one gets
/// no ack).
async fn published(js: &async_nats::jetstream::Context, subject: &str) -> bool {
    match js.publish(subject.to_string(), "{}".into()).await {
        Ok(ack) => tokio::time::timeout(Duration::from_secs(5), ack).await.is_ok_and(|r| r.is_ok()),
        Err(_) => false,
    }
}

/// `medrollup-coordinator nats-config`: a user per worker, owner-only
/// password files kept when it is run again (a worker added later), bad
/// names refused, and a nats-server that runs the result keeps each worker
/// to its own subjects.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nats_config_gives_each_worker_a_user_and_keeps_passwords_when_run_again() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("nats-auth");
    let port = free_port();
    let run = |workers: &[&str]| {
        let mut cmd = std::process::Command::new(coordinator_bin());
        cmd.args(["nats-config", "--out"]).arg(&out).args(["--port", &port.to_string()]);
        for w in workers {
            cmd.args(["--worker", w]);
        }
        cmd.output().unwrap()
    };
    let read = |user: &str| {
        std::fs::read_to_string(out.join(format!("{user}.password"))).unwrap().trim().to_string()
    };
    let o = run(&["hospital-a"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (coordinator_pw, a_pw) = (read("coordinator"), read("worker-hospital-a"));
    assert_eq!(a_pw.len(), 48, "192 bits, hex");
    for f in ["nats.conf", "coordinator.password", "worker-hospital-a.password"] {
        let mode = std::fs::metadata(out.join(f)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    // A kept password file others may read is used, with a warning.
    let a_file = out.join("worker-hospital-a.password");
    std::fs::set_permissions(&a_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = run(&["hospital-a", "hospital-b"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("worker-hospital-a.password may be read by others (mode 644)"), "{stderr}");
    assert!(!stderr.contains("coordinator.password"), "only the open one is named: {stderr}");
    assert_eq!((read("coordinator"), read("worker-hospital-a")), (coordinator_pw.clone(), a_pw.clone()));
    assert_ne!(read("worker-hospital-b"), a_pw);
    let o = run(&["hospital-a", "a.b"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("'.' is not a letter"));
    // The server runs it.
    let _nats = Proc::spawn(
        "nats-server",
        std::process::Command::new(nats_server_bin()).arg("-c").arg(out.join("nats.conf")),
        dir.path(),
    );
    let url = format!("nats://127.0.0.1:{port}");
    let connect = |user: &str, password: String| connect_options(user, &password).connect(url.clone());
    let admin = wait_for("nats-server", Duration::from_secs(20), || async {
        connect("coordinator", coordinator_pw.clone()).await.ok()
    })
    .await;
    async_nats::jetstream::new(admin)
        .create_stream(async_nats::jetstream::stream::Config {
            name: medrollup_wire::streams::RESULTS.into(),
            subjects: vec![format!("{}.*", medrollup_wire::subjects::RESULT_PREFIX)],
            ..Default::default()
        })
        .await
        .unwrap();
    let a = async_nats::jetstream::new(connect("worker-hospital-a", a_pw.clone()).await.unwrap());
    assert!(published(&a, &medrollup_wire::subjects::result("hospital-a")).await);
    assert!(!published(&a, &medrollup_wire::subjects::result("hospital-b")).await);
    assert!(connect("worker-hospital-a", "wrong".into()).await.is_err(), "a wrong password is refused");
}

/// Binds to the job queue with a worker's credential, as a hostile worker would.
async fn rogue_consumer(
    farm: &Farm,
) -> (
    async_nats::jetstream::Context,
    async_nats::jetstream::consumer::Consumer<async_nats::jetstream::consumer::pull::Config>,
) {
    use async_nats::jetstream;
    let js = jetstream::new(farm.nats.connect(WORKER).await);
    let jobs = js.get_stream(medrollup_wire::streams::JOBS).await.unwrap();
    let c = jobs.get_consumer(medrollup_wire::streams::JOBS_CONSUMER).await.unwrap();
    (js, c)
}

/// Publishes a result for job message `m`, then acks it, as a worker does.
async fn return_result(
    js: &async_nats::jetstream::Context,
    m: &async_nats::jetstream::Message,
    result: &medrollup_wire::JobResult,
) {
    let subject = medrollup_wire::subjects::result(&result.worker);
    js.publish(subject, serde_json::to_vec(result).unwrap().into()).await.unwrap().await.unwrap();
    m.ack().await.unwrap();
}

/// Takes the job's three attempts (the default bound) and fails each, as
/// workers `<prefix>-1` to `-3` for `reason`; none is excluded, as no other
/// worker is there.
async fn fail_a_round(
    js: &async_nats::jetstream::Context,
    c: &async_nats::jetstream::consumer::Consumer<async_nats::jetstream::consumer::pull::Config>,
    prefix: &str,
    reason: &str,
) {
    for attempt in 1..=3u32 {
        let m = next_job(c).await;
        let spec: medrollup_wire::JobSpec = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(spec.attempt, attempt);
        assert!(spec.exclude.is_empty(), "with no other worker there, a failed one is not excluded");
        let result = medrollup_wire::JobResult {
            batch: spec.batch,
            attempt: spec.attempt,
            worker: format!("{prefix}-{attempt}"),
            outcome: medrollup_wire::JobOutcome::Failed { reason: reason.into() },
        };
        return_result(js, &m, &result).await;
    }
}

async fn next_job(
    c: &async_nats::jetstream::consumer::Consumer<async_nats::jetstream::consumer::pull::Config>,
) -> async_nats::jetstream::Message {
    use futures::StreamExt;
    wait_for("a job", Duration::from_secs(60), || async {
        c.fetch().max_messages(1).expires(Duration::from_secs(1)).messages().await.ok()?.next().await?.ok()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_that_keeps_failing_is_parked_dead_with_its_reason() {
    let farm = Farm::new();
    let _coordinator = farm.coordinator(30);
    let http = farm.http();
    one_batch(&Client::connect(&farm.nats).await, &http).await;
    let (js, c) = rogue_consumer(&farm).await;
    // Three failed attempts (the coordinator's default bound).
    fail_a_round(&js, &c, "flaky", "out of device memory").await;
    let f = wait_for("the job parked dead", Duration::from_secs(30), || async {
        let f = get_json(&format!("{http}/farm")).await;
        (f["jobs"]["dead"] == 1).then_some(f)
    })
    .await;
    let reason = f["dead"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("3 attempts failed") && reason.contains("out of device memory"), "{reason}");
    assert_eq!(f["dead"][0]["failures"].as_array().unwrap().len(), 3);
    // Operators see it: the job waits (dead, not gone from the queue's
    // depth), and each failed attempt is counted.
    let metrics = reqwest::get(format!("{http}/metrics")).await.unwrap().text().await.unwrap();
    for line in [
        "medrollup_jobs{state=\"dead\"} 1",
        "medrollup_queue_depth 1",
        "medrollup_job_attempts_failed_total 3",
    ] {
        assert!(metrics.lines().any(|l| l == line), "no `{line}` in:\n{metrics}");
    }
    // Not re-queued: no fourth job.
    use futures::StreamExt;
    let more =
        c.fetch().max_messages(1).expires(Duration::from_secs(2)).messages().await.unwrap().next().await;
    assert!(more.is_none(), "a dead job is not queued again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_job_is_queued_again_after_its_wait_and_proven_by_a_worker_that_joined() {
    let farm = Farm::new();
    let _coordinator = Coordinator::start(&CoordinatorOpts { dead_job_retry_s: 8, ..farm.opts() });
    let http = farm.http();
    one_batch(&Client::connect(&farm.nats).await, &http).await;
    // Three workers fail the three attempts of a round: dead.
    let (js, c) = rogue_consumer(&farm).await;
    fail_a_round(&js, &c, "broken", "its GPU fell off the bus").await;
    wait_for("the job parked dead", Duration::from_secs(30), || async {
        (get_json(&format!("{http}/farm")).await["jobs"]["dead"] == 1).then_some(())
    })
    .await;
    // A hospital joins; after the wait the job is queued again and proven.
    let _worker = farm.worker("hospital-a");
    let f = wait_for("the batch proven", Duration::from_secs(180), || async {
        let f = get_json(&format!("{http}/farm")).await;
        (f["jobs"]["proven"] == 1).then_some(f)
    })
    .await;
    assert_eq!(f["jobs"]["dead"], 0, "{f}");
    let batch = get_json(&format!("{http}/batch/0")).await;
    assert!(batch["proof"].is_object(), "{batch}");
    let metrics = reqwest::get(format!("{http}/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("medrollup_jobs_revived_total 1"), "{metrics}");
}

/// A worker that fails a job is excluded from it while another is there;
/// a result in another worker's name (on one worker's subject, signed with
/// another's name) is dropped: it neither fails the job nor excludes anyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn results_count_only_in_the_name_of_the_worker_that_sent_them() {
    let farm = Farm::new();
    let _coordinator = farm.coordinator(30);
    let http = farm.http();
    one_batch(&Client::connect(&farm.nats).await, &http).await;
    let (js, c) = rogue_consumer(&farm).await;
    // Another worker, w2, is there (its heartbeat).
    let nc = farm.nats.connect(WORKER).await;
    nc.publish(medrollup_wire::subjects::heartbeat("w2"), beat("w2", true)).await.unwrap();
    nc.flush().await.unwrap();
    wait_for("w2 heard", Duration::from_secs(30), || async {
        (get_json(&format!("{http}/farm")).await["workers"].to_string().contains("\"w2\"")).then_some(())
    })
    .await;
    let failed = |attempt, worker: &str| medrollup_wire::JobResult {
        batch: 0,
        attempt,
        worker: worker.into(),
        outcome: medrollup_wire::JobOutcome::Failed { reason: "no".into() },
    };
    return_result(&js, &next_job(&c).await, &failed(1, "w1")).await;
    let m = next_job(&c).await;
    let spec: medrollup_wire::JobSpec = serde_json::from_slice(&m.payload).unwrap();
    assert_eq!((spec.attempt, spec.exclude.as_slice()), (2, ["w1".to_string()].as_slice()));
    // w2's subject carries a failure of attempt 2 in w3's name.
    drop(m);
    let spoof = failed(2, "w3");
    js.publish(medrollup_wire::subjects::result("w2"), serde_json::to_vec(&spoof).unwrap().into())
        .await
        .unwrap()
        .await
        .unwrap();
    wait_for("the spoofed result dropped", Duration::from_secs(30), || async {
        let metrics = reqwest::get(format!("{http}/metrics")).await.ok()?.text().await.ok()?;
        metrics.contains("medrollup_results_dropped_total 1").then_some(())
    })
    .await;
    let job = get_json(&format!("{http}/batch/0")).await["job"].clone();
    assert_eq!((job["attempt"].as_u64(), job["state"].as_str()), (Some(2), Some("queued")), "{job}");
    assert_eq!(job["excluded"], serde_json::json!(["w1"]));
    assert_eq!(job["failures"].as_array().unwrap().len(), 1, "only w1's failure: {job}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_whose_workers_keep_vanishing_is_parked_dead_after_its_deliveries() {
    let farm = Farm::new();
    let _coordinator = farm.coordinator_with(1, 2);
    let http = farm.http();
    one_batch(&Client::connect(&farm.nats).await, &http).await;
    let (_js, c) = rogue_consumer(&farm).await;
    // Take it twice and never answer (as a worker that dies each time).
    for delivery in 1..=2 {
        let m = next_job(&c).await;
        assert_eq!(m.info().unwrap().delivered, delivery);
    }
    // Workers keep pulling: the server sees the job is out of deliveries
    // when it would hand it out a third time, and says so in an advisory.
    let f = wait_for("the job parked dead", Duration::from_secs(30), || async {
        use futures::StreamExt;
        let extra =
            c.fetch().max_messages(1).expires(Duration::from_millis(500)).messages().await.ok()?.next().await;
        assert!(extra.is_none(), "a job past its deliveries is not handed out again");
        let f = get_json(&format!("{http}/farm")).await;
        (f["jobs"]["dead"] == 1).then_some(f)
    })
    .await;
    let reason = f["dead"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("delivered 2 times"), "{reason}");
    let metrics = reqwest::get(format!("{http}/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("medrollup_jobs{state=\"dead\"} 1"), "{metrics}");
}

/// A job a worker takes and acks without answering is queued again as its
/// next attempt once it has been gone for the wait; one waiting in the
/// queue, or held by a worker (taken, not acked), is left alone however long.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_acked_without_a_result_is_queued_again_as_its_next_attempt() {
    let farm = Farm::new();
    let opts = CoordinatorOpts { job_lost_after_s: 2, ..farm.opts() };
    let mut coordinator = Coordinator::start(&opts);
    let http = farm.http();
    one_batch(&Client::connect(&farm.nats).await, &http).await;
    let job = || async { get_json(&format!("{http}/batch/0")).await["job"].clone() };
    let (_js, c) = rogue_consumer(&farm).await;
    // Waiting in the queue for twice the wait: still attempt 1.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let m = next_job(&c).await;
    let spec: medrollup_wire::JobSpec = serde_json::from_slice(&m.payload).unwrap();
    assert_eq!(spec.attempt, 1);
    // Held for twice the wait (within its ack wait): still attempt 1.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let j = job().await;
    assert_eq!((j["attempt"].as_u64(), j["failures"].as_array().map(Vec::len)), (Some(1), Some(0)), "{j}");
    // Acked with no result: its next attempt comes.
    m.ack().await.unwrap();
    let m = next_job(&c).await;
    let spec: medrollup_wire::JobSpec = serde_json::from_slice(&m.payload).unwrap();
    assert_eq!(spec.attempt, 2);
    assert!(spec.exclude.is_empty(), "nobody is known to have taken it");
    let j = job().await;
    assert_eq!((j["attempt"].as_u64(), j["state"].as_str()), (Some(2), Some("queued")), "{j}");
    let failure = j["failures"][0].as_str().unwrap();
    assert!(failure.contains("attempt 1: the job left the queue with no result"), "{failure}");
    let metrics = reqwest::get(format!("{http}/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("medrollup_jobs_lost_total 1"), "{metrics}");
    // Acked unanswered while the coordinator is down: the restarted one
    // finds it gone too (its publication again is a duplicate, whose ack
    // names the message that went).
    coordinator.proc.kill9();
    m.ack().await.unwrap();
    let _coordinator = Coordinator::start(&opts);
    let m = next_job(&c).await;
    let spec: medrollup_wire::JobSpec = serde_json::from_slice(&m.payload).unwrap();
    assert_eq!(spec.attempt, 3);
    let failure = job().await["failures"][1].as_str().unwrap().to_string();
    assert!(failure.contains("attempt 2: the job left the queue with no result"), "{failure}");
}

/// A worker whose prover overruns its bound (here a millisecond, so any
/// real proof does) fails the job back by name and exits with status 3
/// (a stuck prover thread cannot be stopped from inside); the job goes on
/// to its next attempt and another worker proves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_whose_prover_overruns_its_bound_fails_the_job_and_stops() {
    let _heavy = HEAVY.lock().await;
    let farm = Farm::new();
    let _coordinator = farm.coordinator(30);
    let http = farm.http();
    let cache = farm.dir.path().join("cache-stuck");
    let mut stuck =
        start_worker_with(&farm.nats, "stuck", &cache, farm.dir.path(), &["--prove-timeout-s", "0.001"]);
    one_batch(&Client::connect(&farm.nats).await, &http).await;
    let status = wait_for("the stuck worker to exit", Duration::from_secs(120), || {
        let s = stuck.child.try_wait().unwrap();
        async move { s }
    })
    .await;
    assert_eq!(status.code(), Some(3), "{}", stuck.log_text());
    assert!(stuck.log_text().contains("did not finish within 0.001 s"), "{}", stuck.log_text());
    let j = wait_for("its failure heard", Duration::from_secs(30), || async {
        let j = get_json(&format!("{http}/batch/0")).await["job"].clone();
        (j["attempt"] == 2).then_some(j)
    })
    .await;
    let failure = j["failures"][0].as_str().unwrap_or_default();
    assert!(failure.contains("attempt 1: stuck failed") && failure.contains("taken for stuck"), "{j}");
    let _worker = farm.worker("hospital-a");
    let by = wait_for("the batch proven", Duration::from_secs(180), || proven_by(&http, 0)).await;
    assert_eq!(by, "hospital-a");
}

/// A device that fails for good (the worker's fault drill: from its first
/// kernel launch) is taken out of service mid-proof and the CPU finishes the
/// proof; opened afresh and tested again, it is still out, and a worker told
/// to exits then (status 4) for its supervisor to start it again, its job
/// answered first.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_whose_device_stays_out_once_opened_afresh_exits_for_a_relaunch_after_its_proof() {
    let Some(device) = opencl_device() else { return };
    let _heavy = HEAVY.lock().await;
    let farm = Farm::new();
    let _coordinator = farm.coordinator(30);
    let http = farm.http();
    let drill = ["--fault-drill", "0", "--readmit-after-s", "0.2", "--relaunch-when-device-lost"];
    let cache = farm.dir.path().join("cache-drilled");
    let mut w = start_worker_with(
        &farm.nats,
        "drilled",
        &cache,
        farm.dir.path(),
        &[OPENCL_WORKER, &["--device-memory", "1GiB"], &drill].concat(),
    );
    one_batch(&Client::connect(&farm.nats).await, &http).await;
    first_batch_sealed(&http, Duration::from_secs(60)).await;
    // The coordinator verified it: the CPU's proof, the device's part given up.
    let who = wait_for("the batch proven", Duration::from_secs(300), || proven_by(&http, 0)).await;
    assert_eq!(who, "drilled");
    let status = wait_for("the worker to exit", Duration::from_secs(120), || {
        let s = w.child.try_wait().unwrap();
        async move { s }
    })
    .await;
    let log = w.log_text();
    assert_eq!(status.code(), Some(4), "{log}");
    assert!(log.contains("fault drill"), "{log}");
    assert!(log.contains("device failed; its work goes to the CPU"), "{log}");
    assert!(log.contains("device still out of service, though opened afresh"), "{log}");
    let stopped =
        log.lines().find(|l| l.contains("stopped for a relaunch")).unwrap_or_else(|| panic!("{log}"));
    assert!(
        stopped.contains(&device) && stopped.contains("still out of service though opened afresh"),
        "{log}"
    );
    // The wait before the next test is doubled for the next start, which reads it.
    let kept = std::fs::read_to_string(cache.join("readmit-wait-s")).unwrap();
    assert_eq!(kept.trim().parse::<f64>().unwrap(), 0.4, "{kept}");
    drop(w);
    let again = start_worker_with(
        &farm.nats,
        "drilled",
        &cache,
        farm.dir.path(),
        &[OPENCL_WORKER, &["--device-memory", "1GiB", "--readmit-after-s", "0.2"]].concat(),
    );
    wait_for("the kept wait read at the next start", Duration::from_secs(60), || {
        let log = again.log_text();
        let read = log.lines().any(|l| l.contains("kept from the last relaunch") && l.contains("wait_s=0.4"));
        async move { read.then_some(()) }
    })
    .await;
    wait_for("batch 0 on L1", Duration::from_secs(60), || all_submitted(&http)).await;
}

/// A job whose deliveries ran out while the coordinator was down: the
/// server's advisory, kept in its stream, parks it dead at the next start
/// (the queue's idleness check, which would take far longer here, is not
/// what finds it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_whose_deliveries_ran_out_while_the_coordinator_was_down_is_parked_dead() {
    let reason = deliveries_run_out_while_the_coordinator_is_down(3600, false).await;
    assert!(reason.contains("delivered 2 times without a result"), "{reason}");
}

/// The same with the advisory lost (its stream purged): the queue found
/// idle with the job in it, twice, parks it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_stranded_with_its_advisory_lost_is_parked_dead() {
    let reason = deliveries_run_out_while_the_coordinator_is_down(2, true).await;
    assert!(reason.contains("its deliveries ran out"), "{reason}");
}

/// Runs a job out of its deliveries while the coordinator is down (with
/// the advisory purged if `lose_advisory`); returns the reason the job was
/// parked dead with once the coordinator is back.
async fn deliveries_run_out_while_the_coordinator_is_down(
    job_lost_after_s: u64,
    lose_advisory: bool,
) -> String {
    let farm = Farm::new();
    let opts = CoordinatorOpts { job_ack_wait_s: 1, job_max_deliver: 2, job_lost_after_s, ..farm.opts() };
    let mut coordinator = Coordinator::start(&opts);
    let http = farm.http();
    one_batch(&Client::connect(&farm.nats).await, &http).await;
    let (_js, c) = rogue_consumer(&farm).await;
    assert_eq!(next_job(&c).await.info().unwrap().delivered, 1);
    coordinator.proc.kill9();
    // Taken once more and never answered; pulls go on until the server has
    // given up on it, with nobody to hear it say so.
    assert_eq!(next_job(&c).await.info().unwrap().delivered, 2);
    use futures::StreamExt;
    for _ in 0..4 {
        let extra = c
            .fetch()
            .max_messages(1)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .unwrap()
            .next()
            .await;
        assert!(extra.is_none(), "a job past its deliveries is not handed out again");
    }
    let js = async_nats::jetstream::new(farm.nats.connect(COORDINATOR).await);
    let mut kept = js.get_stream(medrollup_wire::streams::JOB_ADVISORIES).await.unwrap();
    assert_eq!(kept.info().await.unwrap().state.messages, 1, "the advisory is kept");
    if lose_advisory {
        kept.purge().await.unwrap();
    }
    let _coordinator = Coordinator::start(&opts);
    let f = wait_for("the job parked dead", Duration::from_secs(60), || async {
        let f = get_json(&format!("{http}/farm")).await;
        (f["jobs"]["dead"] == 1).then_some(f)
    })
    .await;
    f["dead"][0]["reason"].as_str().unwrap().to_string()
}

/// The admin's transactions sealed, then each clinic's first step accepted
/// into a batch a coordinator killed by a crash left open; their answers.
async fn open_batch_left_by_a_crash(farm: &Farm, load: &workload::Workload) -> Vec<TxAnswer> {
    let opts = |seal_timeout_ms| CoordinatorOpts { seal_timeout_ms, ..farm.opts() };
    let http = farm.http();
    let client = Client::connect(&farm.nats).await;
    let first = Coordinator::start(&opts(300));
    let mut last = 0;
    for s in &load.admin {
        let a = client.submit_bytes(serde_json::to_vec(&s.tx).unwrap()).await;
        let TxStatus::Accepted { batch, .. } = a.status else { panic!("{a:?}") };
        last = batch;
    }
    wait_for("the admin's batch sealed", Duration::from_secs(30), || async {
        (get_json(&format!("{http}/root")).await["batches_sealed"].as_u64()? > last).then_some(())
    })
    .await;
    drop(first);
    let mut second = Coordinator::start(&opts(600_000));
    let mut open = Vec::new();
    for clinic in &load.clinics {
        let a = client.submit_bytes(serde_json::to_vec(&clinic[0].tx).unwrap()).await;
        assert!(matches!(a.status, TxStatus::Accepted { .. }), "{a:?}");
        open.push(a);
    }
    second.proc.kill9();
    open
}

/// Messages the stream lost under the open batch (its oldest removed by
/// limits or a purge, or one deleted by hand) are refused at the restart:
/// their transactions were answered accepted, and the batch would be sealed
/// without them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transaction_stream_that_lost_the_open_batchs_messages_is_refused() {
    use async_nats::jetstream;
    use medrollup_wire::streams;
    let farm = Farm::new();
    let opts = |seal_timeout_ms| CoordinatorOpts { seal_timeout_ms, ..farm.opts() };
    let load = workload::generate(2, now(), "stream-trimmed");
    // Two patients' registrations accepted into a batch left open by a crash.
    let open = open_batch_left_by_a_crash(&farm, &load).await;
    let applied = load.admin.len() as u64;
    let js = jetstream::new(farm.nats.connect(COORDINATOR).await);
    let stream = js.get_stream(streams::TX).await.unwrap();

    // The second one's message deleted: the first replays, then the gap.
    assert!(stream.delete_message(applied + 2).await.unwrap());
    let log = Coordinator::refused(&opts(300));
    assert!(
        log.contains(&format!("no longer holds its message at sequence {}", applied + 2))
            && log.contains(&format!("transaction {}", open[1].id))
            && log.contains("Restore NATS's data"),
        "{log}"
    );
    // The stream purged up to the open batch's end: it now starts after
    // every decided message (the check before looked only past those).
    stream.purge().sequence(applied + 3).await.unwrap();
    let log = Coordinator::refused(&opts(300));
    assert!(
        log.contains(&format!(
            "stream {} has lost its messages from sequence {} to {}",
            streams::TX,
            applied + 1,
            applied + 2
        )),
        "{log}"
    );
}

/// A transaction stream that lacks what the coordinator decided (NATS lost
/// its data, or the stream was made afresh and numbers from 1 again) is
/// refused with the reason, instead of its new transactions being skipped
/// as applied or taken for those decided there before.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transaction_stream_made_afresh_is_refused_not_misread() {
    use async_nats::jetstream;
    use medrollup_wire::{streams, subjects};
    let farm = Farm::new();
    let opts = |seal_timeout_ms| CoordinatorOpts { seal_timeout_ms, ..farm.opts() };
    let load = workload::generate(1, now(), "stream-afresh");
    let client = Client::connect(&farm.nats).await;
    // The patient's registration accepted into a batch left open by a crash.
    let a = open_batch_left_by_a_crash(&farm, &load).await.remove(0);
    let decided = load.admin.len() as u64 + 1;

    // NATS loses its data: the stream is gone.
    let js = jetstream::new(farm.nats.connect(COORDINATOR).await);
    js.delete_stream(streams::TX).await.unwrap();
    let log = Coordinator::refused(&opts(300));
    assert!(log.contains(&format!("stream {} is missing", streams::TX)), "{log}");
    assert!(
        log.contains(&format!("up to sequence {decided}")) && log.contains("Restore NATS's data"),
        "{log}"
    );
    assert!(js.get_stream(streams::TX).await.is_err(), "not made afresh by the coordinator");

    // Made afresh by hand, with a new transaction in it.
    let fresh = jetstream::stream::Config {
        name: streams::TX.into(),
        subjects: vec![subjects::TX_SUBMIT.into()],
        ..Default::default()
    };
    js.create_stream(fresh).await.unwrap();
    let later = &load.clinics[0][1..];
    client.publish_only(serde_json::to_vec(&later[0].tx).unwrap()).await;
    let log = Coordinator::refused(&opts(300));
    assert!(log.contains(&format!("stream {} ends at sequence 1", streams::TX)), "{log}");

    // With as many messages as were decided: the open batch's place holds
    // another transaction than the one decided there.
    for s in &later[1..decided as usize] {
        client.publish_only(serde_json::to_vec(&s.tx).unwrap()).await;
    }
    let log = Coordinator::refused(&opts(300));
    assert!(log.contains(&format!("message at sequence {decided} is transaction")), "{log}");
    assert!(log.contains(&format!("but {} was decided there before the restart", a.id)), "{log}");
}

/// A coordinator with a new database (the old one lost, or another farm's
/// stream) is refused a transaction stream that a coordinator already
/// trimmed: it would seal a batch 0 again without what was accepted before.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_database_is_refused_a_stream_an_earlier_coordinator_trimmed() {
    let farm = Farm::new();
    let http = farm.http();
    let load = workload::generate(1, now(), "new-database");
    let client = Client::connect(&farm.nats).await;
    let first = Coordinator::start(&CoordinatorOpts { seal_timeout_ms: 300, ..farm.opts() });
    let a = client.submit_bytes(serde_json::to_vec(&load.admin[0].tx).unwrap()).await;
    assert!(matches!(a.status, TxStatus::Accepted { batch: 0, .. }), "{a:?}");
    wait_for("batch 0 sealed", Duration::from_secs(30), || async {
        (get_json(&format!("{http}/root")).await["batches_sealed"].as_u64()? >= 1).then_some(())
    })
    .await;
    drop(first);
    let fresh = tempfile::tempdir().unwrap();
    let log = Coordinator::refused(&CoordinatorOpts { data: fresh.path(), ..farm.opts() });
    assert!(log.contains("starts at sequence 2") && log.contains("this one's database has none"), "{log}");
    // On its own data, the coordinator starts again.
    let _again = Coordinator::start(&farm.opts());
    assert_eq!(get_json(&format!("{http}/root")).await["batches_sealed"], 1);
}

/// The job queue's settings given at a start are the queue's, also when an
/// earlier start made its consumer with others.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn job_queue_settings_take_effect_at_each_start() {
    let farm = Farm::new();
    let js = async_nats::jetstream::new(farm.nats.connect(COORDINATOR).await);
    let settings = || async {
        let jobs = js.get_stream(medrollup_wire::streams::JOBS).await.unwrap();
        let mut c: async_nats::jetstream::consumer::PullConsumer =
            jobs.get_consumer(medrollup_wire::streams::JOBS_CONSUMER).await.unwrap();
        let config = c.info().await.unwrap().config.clone();
        (config.ack_wait, config.max_deliver)
    };
    drop(farm.coordinator_with(3, 2));
    assert_eq!(settings().await, (Duration::from_secs(3), 2));
    drop(farm.coordinator_with(7, 4));
    assert_eq!(settings().await, (Duration::from_secs(7), 4));
}

/// The same bytes as a transaction accepted into a sealed batch, coming
/// again while a later batch is open (a client publishing them under
/// another message id): answered `duplicate`, and still shown accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_accepted_transaction_sent_again_later_is_still_shown_accepted() {
    use futures::StreamExt;
    let farm = Farm::new();
    let _coordinator = Coordinator::start(&CoordinatorOpts { seal_timeout_ms: 600_000, ..farm.opts() });
    let http = farm.http();
    let load = workload::generate(2, now(), "dup-later");
    let client = Client::connect(&farm.nats).await;
    // A full batch (sealed at once), and one more transaction in the next.
    let steps: Vec<workload::Step> =
        load.admin.iter().chain(&load.clinics[0]).chain(&load.clinics[1][..2]).cloned().collect();
    let answers = run_steps(&client, &http, &steps).await;
    for (s, a) in &answers {
        assert!(matches!(a.status, TxStatus::Accepted { .. }) || s.expect_rejected, "{a:?}");
    }
    let first = &answers[0].1;
    assert!(matches!(first.status, TxStatus::Accepted { batch: 0, .. }), "{first:?}");
    let statuses: Vec<_> = answers.iter().map(|(_, a)| a.status.clone()).collect();
    assert_eq!(get_json(&format!("{http}/root")).await["batches_sealed"], 1, "{statuses:?}");
    let mut sub = client.nats.subscribe(medrollup_wire::subjects::answer(&first.id)).await.unwrap();
    client.nats.flush().await.unwrap();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "the same bytes under another id");
    let bytes = serde_json::to_vec(&steps[0].tx).unwrap();
    client
        .js
        .publish_with_headers(medrollup_wire::subjects::TX_SUBMIT, headers, bytes.into())
        .await
        .unwrap()
        .await
        .unwrap();
    let m = tokio::time::timeout(Duration::from_secs(30), sub.next()).await.unwrap().unwrap();
    let dup: TxAnswer = serde_json::from_slice(&m.payload).unwrap();
    assert_eq!(dup.status, TxStatus::Duplicate { batch: 0 });
    let shown = get_json(&format!("{http}/tx/{}", first.id)).await;
    assert_eq!((shown["status"].as_str(), shown["batch"].as_u64()), (Some("accepted"), Some(0)), "{shown}");
}

/// A job still in the queue at a restart, past the job stream's duplicate
/// window, is followed there: published again it would be stored twice
/// (and proven twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_waiting_in_the_queue_at_a_restart_is_followed_not_published_twice() {
    use async_nats::jetstream::stream;
    let _heavy = HEAVY.lock().await;
    let farm = Farm::new();
    let js = async_nats::jetstream::new(farm.nats.connect(COORDINATOR).await);
    // The job stream as the coordinator makes it (it keeps one that
    // exists), with a duplicate window short enough to outwait here.
    js.create_stream(stream::Config {
        name: medrollup_wire::streams::JOBS.into(),
        subjects: vec![medrollup_wire::subjects::JOBS.into()],
        retention: stream::RetentionPolicy::WorkQueue,
        duplicate_window: Duration::from_secs(1),
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .unwrap();
    let waiting = || async {
        js.get_stream(medrollup_wire::streams::JOBS).await.unwrap().get_info().await.unwrap().state.messages
    };
    let coordinator = farm.coordinator(30);
    let http = farm.http();
    let client = Client::connect(&farm.nats).await;
    one_batch(&client, &http).await;
    wait_for("the job queued", Duration::from_secs(60), || async { (waiting().await == 1).then_some(()) })
        .await;
    drop(coordinator);
    tokio::time::sleep(Duration::from_secs(2)).await;

    let _coordinator = farm.coordinator(30);
    // Several ticks: a job to publish again goes out at the first.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(waiting().await, 1, "the job is in the queue once");
    let _w = farm.worker("survivor");
    let who = wait_for("the job proven", Duration::from_secs(180), || proven_by(&http, 0)).await;
    assert_eq!(who, "survivor");
    wait_for("batch 0 on L1", Duration::from_secs(30), || all_submitted(&http)).await;
    assert_eq!(waiting().await, 0, "nothing left to prove again");
}
