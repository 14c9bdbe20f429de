//! The patients' and doctors' web page in a real browser (Debian's Chromium,
//! driven by `client/browser/portal.mjs`) against the real farm: nats-server,
//! the coordinator with a worker, anvil with the rollup contract. A patient
//! and a doctor each run `medrollup-client portal`; from their pages they
//! create keys, register, grant, add a FHIR bundle, read and update it, see
//! the read in the audit log, revoke, break the glass, lock and unlock, and
//! delete, with a typo, a wrong file and a wrong password on the way. This
//! test then checks on L1, through the library, that the page did what it
//! showed.
//!
//! Without Chromium, Node.js or the page's npm package (`scripts/browser`
//! and `scripts/js-deps` install them) it is skipped with the reason, unless
//! `MEDROLLUP_REQUIRE_BROWSER=1` (as `make test` sets) makes that a failure.

mod common;

use alloy::primitives::Address;
use common::*;
use medrollup_circuits::sample;
use medrollup_circuits::state::{AUDIT_EMERGENCY, AUDIT_READ};
use medrollup_circuits::tx::Scope;
use medrollup_client::envelope::example_bundle;
use medrollup_client::keystore::{Identity, KdfParams, Keystore};
use medrollup_client::session::{Endpoints, Session};
use medrollup_l1::canonical;
use medrollup_l1::devnet::{Anvil, DEV_KEY};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const HOSPITAL: u64 = 1;
const PATIENT: u64 = 10;
const DOCTOR: u64 = 20;

/// What the browser test needs, or why it cannot run here.
fn browser() -> Result<PathBuf, String> {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        return Err(format!("no Chromium at {chromium} (scripts/browser installs it)"));
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Err("no Node.js".into());
    }
    let pw = root().join("client/browser/node_modules/playwright-core");
    if !pw.exists() {
        return Err(format!("no {} (scripts/js-deps installs it)", pw.display()));
    }
    Ok(chromium.into())
}

/// A `medrollup-client portal` process; returns it and the address it printed.
fn start_portal(name: &str, account: u64, keystore: &Path, args: &[&str], logs: &Path) -> (Proc, String) {
    let bin = coordinator_bin().with_file_name("medrollup-client");
    assert!(bin.exists(), "{} is missing: run the tests with --workspace", bin.display());
    let mut cmd = Command::new(bin);
    cmd.args(["portal", "--account", &account.to_string(), "--listen", "127.0.0.1:0"])
        .arg("--keystore")
        .arg(keystore)
        .args(args)
        .env_remove("MEDROLLUP_PASSWORD");
    let mut p = Proc::spawn(name, &mut cmd, logs);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = p.log_text();
        if let Some(url) = log.lines().find(|l| l.starts_with("http://127.0.0.1:") && l.contains("/#token="))
        {
            return (p, url.to_string());
        }
        if let Ok(Some(status)) = p.child.try_wait() {
            panic!("{name} exited ({status}):\n{log}");
        }
        assert!(Instant::now() < deadline, "{name} printed no address:\n{log}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_patient_and_a_doctor_share_and_revoke_a_record_from_their_web_pages() {
    let chromium = match browser() {
        Ok(c) => c,
        Err(why) if std::env::var("MEDROLLUP_REQUIRE_BROWSER").is_ok_and(|v| v == "1") => {
            panic!("MEDROLLUP_REQUIRE_BROWSER=1, but {why}")
        }
        Err(why) => {
            eprintln!("skipping the browser test: {why}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let nats = Nats::start(d);
    let keys = keys_dir_seeded(canonical::SHAPE, canonical::SEED);
    let anvil = Anvil::start(free_port(), &["--block-time", "1"]).unwrap();
    let http_port = free_port();
    let data = d.join("coordinator");
    let _coordinator = Coordinator::start(&CoordinatorOpts {
        seal_timeout_ms: 300,
        l1: Some((&anvil.url(), DEV_KEY, 1)),
        ..CoordinatorOpts::new(&nats, &keys, &data, d, http_port)
    });
    let _w1 = start_worker(&nats, "hospital-a", &d.join("cache-a"), d);
    let _w2 = start_worker(&nats, "hospital-b", &d.join("cache-b"), d);
    let http = format!("http://127.0.0.1:{http_port}");
    let rollup_s = get_json(&format!("{http}/l1")).await["rollup"].as_str().unwrap().to_string();
    let rollup: Address = rollup_s.parse().unwrap();

    // The hospital's keystore, for its CLI.
    let hospital_ks = d.join("hospital.json");
    let hospital_id = Identity::from_parts(
        sample::parties().hospitals[0].key.clone(),
        Identity::generate().rsa_key().clone(),
    );
    Keystore::seal(&hospital_id, "hospital password", KdfParams::MIN).unwrap().write(&hospital_ks).unwrap();
    let conn = ["--coordinator", &http, "--l1-rpc", &anvil.url(), "--rollup", &rollup_s];
    let patient_ks = d.join("patient.json");
    let doctor_ks = d.join("doctor.json");
    let (_patient_portal, patient_url) = start_portal("portal-patient", PATIENT, &patient_ks, &conn, d);
    let (_doctor_portal, doctor_url) = start_portal("portal-doctor", DOCTOR, &doctor_ks, &conn, d);

    let mut bundle: serde_json::Value = serde_json::from_slice(&example_bundle("p10", 3_000)).unwrap();
    bundle["entry"][0]["resource"]["name"] = serde_json::json!([{ "text": "Portal Test Patient" }]);
    std::fs::write(d.join("bundle.json"), serde_json::to_vec_pretty(&bundle).unwrap()).unwrap();
    bundle["entry"][0]["resource"]["name"] = serde_json::json!([{ "text": "Second Version" }]);
    std::fs::write(d.join("bundle-v2.json"), serde_json::to_vec_pretty(&bundle).unwrap()).unwrap();
    std::fs::write(d.join("patient-only.json"), br#"{"resourceType": "Patient", "id": "p10"}"#).unwrap();

    // A verifier for other keys announced on the rollup: the page tells of it.
    let foreign = foreign_verifier_proposal(&anvil.url(), rollup, true).await;

    let started = Instant::now();
    let out = Command::new("node")
        .arg(root().join("client/browser/portal.mjs"))
        .env("CHROMIUM", &chromium)
        .env("PATIENT_URL", &patient_url)
        .env("DOCTOR_URL", &doctor_url)
        .env("PATIENT", PATIENT.to_string())
        .env("DOCTOR", DOCTOR.to_string())
        .env("BUNDLE", d.join("bundle.json"))
        .env("BUNDLE_V2", d.join("bundle-v2.json"))
        .env("NOT_FHIR", d.join("patient-only.json"))
        .env("WORK", d)
        .env("MEDROLLUP_CLIENT_BIN", coordinator_bin().with_file_name("medrollup-client"))
        .env("HOSPITAL", HOSPITAL.to_string())
        .env("HOSPITAL_KEYSTORE", &hospital_ks)
        .env("HOSPITAL_PASSWORD", "hospital password")
        .env("COORDINATOR", &http)
        .env("L1_RPC", anvil.url())
        .env("ROLLUP", &rollup_s)
        .env("UPGRADE_VK", "ab".repeat(32))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the browser run failed (screenshots in {}):\n{stderr}", d.display());
    eprintln!("the browser run took {:.0} s:\n{stderr}", started.elapsed().as_secs_f64());
    let shown: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or("")).unwrap();
    let consent = shown["consent"].as_u64().unwrap();
    let record = shown["record"].as_u64().unwrap();
    // The pages at the end, for a person to look at.
    let shots = root().join("target/portal");
    std::fs::create_dir_all(&shots).unwrap();
    for page in ["patient.png", "doctor.png"] {
        assert!(std::fs::metadata(d.join(page)).unwrap().len() > 10_000, "a screenshot of the {page} page");
        std::fs::copy(d.join(page), shots.join(page)).unwrap();
    }

    // What the page showed is what L1 holds: the page's keys, the doctor's
    // record, the consent revoked, the read logged.
    let endpoints = Endpoints {
        coordinator: http.clone(),
        ipfs_api: None,
        l1_rpc: anvil.url(),
        rollup,
        l1_wait: Duration::from_secs(120),
    };
    let patient = Keystore::read(&patient_ks).unwrap().open("patient password 1").unwrap();
    let doctor = Keystore::read(&doctor_ks).unwrap().open("doctor password 1").unwrap();
    let mut as_patient = Session::open(&endpoints, PATIENT, patient).await.unwrap();
    assert_eq!(
        as_patient.public_identity(DOCTOR).await.unwrap(),
        doctor.public(),
        "registered from the page's file"
    );
    let c = as_patient.consent(consent).await.unwrap();
    assert_eq!((c.patient, c.grantee, c.scope, c.revoked), (PATIENT, DOCTOR, Scope::ReadWrite, true));
    let leaf = as_patient.record(record).await.unwrap();
    // Added, updated by the doctor, then by the patient (the doctor's edit
    // of the version before refused), re-keyed by the revoke, then deleted.
    assert_eq!((leaf.owner, leaf.version, leaf.deleted), (PATIENT, 4, true));
    let e = as_patient.read(record).await.unwrap_err();
    assert!(e.to_string().contains("deleted"), "{e}");
    let log = as_patient.audit_log().await.unwrap();
    // The page logs the accesses the doctor asked for, no more: one read,
    // two emergency accesses (one opened the record, one did not).
    for (what, kind, times) in [("read", AUDIT_READ, 1), ("emergency access", AUDIT_EMERGENCY, 2)] {
        let found: Vec<_> = log.iter().filter(|(_, e)| e.kind == kind).collect();
        assert_eq!(found.len(), times, "the doctor's {what} in the audit log: {log:?}");
        for (_, e) in found {
            assert_eq!((e.actor, e.patient, e.record), (DOCTOR, PATIENT, record), "{what}");
            let under = if kind == AUDIT_READ { consent } else { 0 };
            assert_eq!(e.consent, under, "{what}");
        }
    }
    let mut as_doctor = Session::open(&endpoints, DOCTOR, doctor).await.unwrap();
    let e = as_doctor.read(record).await.unwrap_err();
    assert!(e.to_string().contains("deleted"), "{e}");

    // The page's state tells of the proposal (when it may be installed, for
    // which key), and no longer once the owner withdraws it.
    let (base, token) = patient_url.split_once("/#token=").unwrap();
    let page_state = || async {
        let r = reqwest::Client::new()
            .get(format!("{base}/api/state"))
            .header(medrollup_client::portal::TOKEN_HEADER, token)
            .send()
            .await
            .unwrap();
        r.json::<serde_json::Value>().await.unwrap()
    };
    let up = page_state().await["verifier_upgrade"].clone();
    assert_eq!(
        (up["verifier"].as_str(), up["vk_sha256"].as_str()),
        (Some(&*foreign.to_string()), Some(&*"ab".repeat(32)))
    );
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let activation = up["activation"].as_u64().unwrap();
    let delay = medrollup_l1::submitter::DEFAULT_UPGRADE_DELAY_S;
    assert!(activation > now + delay - 600 && activation <= now + delay, "{up}");
    foreign_verifier_proposal(&anvil.url(), rollup, false).await;
    wait_for("the page no longer tells of it", Duration::from_secs(40), || async {
        page_state().await["verifier_upgrade"].is_null().then_some(())
    })
    .await;
}
