//! The patients' and doctors' client against the real services: nats-server,
//! the coordinator with a worker, anvil with the rollup contract, and a js-ipfs
//! node holding the records. A hospital registers doctors; a patient
//! registers and grants; doctors write and read; the patient sees the reads
//! in the audit log, revokes (the record is re-keyed), deletes; and a lying
//! coordinator is caught.

mod common;

use alloy::primitives::Address;
use axum::extract::{Path as UrlPath, State};
use axum::response::IntoResponse;
use common::*;
use medrollup_circuits::field::Fr;
use medrollup_circuits::sample;
use medrollup_circuits::state::{AUDIT_EMERGENCY, AUDIT_READ, TreeId, leaf_hash, state_root};
use medrollup_circuits::tx::{ConsentTarget, Scope, TxBody};
use medrollup_client::envelope::{Envelope, RecordError, example_bundle};
use medrollup_client::keystore::Identity;
use medrollup_client::light::LightError;
use medrollup_client::session::{ClientError, Endpoints, Session};
use medrollup_l1::canonical;
use medrollup_l1::devnet::{Anvil, DEV_KEY};
use medrollup_storage::content::{ContentError, ContentStore};
use medrollup_storage::devnode::IpfsNode;
use medrollup_storage::kubo::KuboStore;
use std::time::Duration;

const HOSPITAL: u64 = 1;
const PATIENT: u64 = 10;
const DOCTOR_A: u64 = 20;
const DOCTOR_B: u64 = 21;
const PATIENT_2: u64 = 11;

/// Runs `medrollup-client` (built beside this package's binaries by
/// `cargo test --workspace`) in `dir`.
fn run_cli(dir: &std::path::Path, env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let bin = coordinator_bin().with_file_name("medrollup-client");
    assert!(bin.exists(), "{} is missing: run the tests with --workspace", bin.display());
    std::process::Command::new(bin).current_dir(dir).envs(env.iter().copied()).args(args).output().unwrap()
}

/// [`run_cli`], which must succeed; returns its standard output.
fn cli(dir: &std::path::Path, env: &[(&str, &str)], args: &[&str]) -> String {
    let o = run_cli(dir, env, args);
    assert!(o.status.success(), "medrollup-client {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// [`run_cli`], which must fail; returns its standard error.
fn cli_fails(dir: &std::path::Path, env: &[(&str, &str)], args: &[&str]) -> String {
    let o = run_cli(dir, env, args);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(!o.status.success(), "medrollup-client {args:?} succeeded: {out}");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn in_a_week() -> u64 {
    now() + 7 * 86_400
}

/// Serves `app` (a coordinator in front of the honest one) on a free port;
/// returns its URL.
async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// The honest coordinator's answer to the request, passed on as it is.
async fn pass_through(
    honest: &str,
    method: axum::http::Method,
    uri: &axum::http::Uri,
    body: axum::body::Bytes,
) -> axum::response::Response {
    let url = format!("{honest}{}", uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
    let r = reqwest::Client::new().request(method, url).body(body).send().await.unwrap();
    let status = r.status();
    (status, r.bytes().await.unwrap()).into_response()
}

/// An IPFS node in front of `real` that refuses every unpin (as one that
/// fails at that moment would); every other call is passed on.
async fn unpin_refusing_node(real: String) -> String {
    async fn forward(
        State(real): State<String>,
        method: axum::http::Method,
        headers: axum::http::HeaderMap,
        uri: axum::http::Uri,
        body: axum::body::Bytes,
    ) -> axum::response::Response {
        if uri.path() == "/api/v0/pin/rm" {
            let refusal = serde_json::json!({ "Message": "the node is busy", "Code": 0, "Type": "error" });
            return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, axum::Json(refusal)).into_response();
        }
        let url = format!("{real}{}", uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
        let mut r = reqwest::Client::new().request(method, url).body(body);
        if let Some(t) = headers.get(axum::http::header::CONTENT_TYPE) {
            r = r.header(axum::http::header::CONTENT_TYPE, t);
        }
        let r = r.send().await.unwrap();
        (r.status(), r.bytes().await.unwrap()).into_response()
    }
    serve(axum::Router::new().fallback(forward).with_state(real.trim_end_matches('/').to_string())).await
}

/// How a dishonest coordinator lies about consents.
#[derive(Clone, Copy)]
enum Lie {
    /// Its `/proof/consents/*` answers say the consent is not revoked, with
    /// trees and root recomputed to fit.
    Forge,
    /// It gives the first answer it saw for each `/proof/consents/*` path
    /// ever after: genuine L1 state, but from the past.
    Replay,
    /// Its `/root` names another rollup instance, and its `/proof/*`
    /// answers' roots are recomputed for that instance: a signature got for
    /// it would be valid on that other rollup.
    Instance,
}

/// The instance [`Lie::Instance`] names.
fn other_instance() -> Fr {
    Fr::from(sample::INSTANCE + 1)
}

/// A coordinator that lies about consents as `lie` says; every other GET is
/// passed through.
async fn lying_coordinator(honest: String, lie: Lie) -> String {
    type Seen = std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, axum::body::Bytes>>>;
    async fn forward(
        State((honest, lie, seen)): State<(String, Lie, Seen)>,
        UrlPath(path): UrlPath<String>,
    ) -> axum::response::Response {
        let fetched = match reqwest::get(format!("{honest}/{path}")).await {
            Ok(r) => r.bytes().await,
            Err(e) => Err(e),
        };
        let body = match fetched {
            Ok(b) => b,
            Err(e) => return (axum::http::StatusCode::BAD_GATEWAY, format!("{e:?}")).into_response(),
        };
        let json = [(axum::http::header::CONTENT_TYPE, "application/json")];
        let dec = |x: &Fr| serde_json::json!(medrollup_circuits::field::fr_to_dec(x));
        if let Lie::Instance = lie {
            let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            if path == "root" {
                v["instance"] = dec(&other_instance());
            } else if path.starts_with("proof/") {
                let a: medrollup_client::light::ProofAnswer = serde_json::from_value(v.clone()).unwrap();
                let roots: [Fr; 4] = a.tree_roots.clone().try_into().unwrap();
                v["root"] = dec(&state_root(other_instance(), &roots, a.audit_count));
            }
            return axum::Json(v).into_response();
        }
        if !path.starts_with("proof/consents/") {
            return (json, body).into_response();
        }
        if let Lie::Replay = lie {
            let first = seen.lock().unwrap().entry(path).or_insert(body).clone();
            return (json, first).into_response();
        }
        let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let mut a: medrollup_client::light::ProofAnswer = serde_json::from_value(v.clone()).unwrap();
        a.leaf[6] = Fr::from(0u64); // not revoked
        let leaf: [Fr; 7] = a.leaf.clone().try_into().unwrap();
        a.tree_roots[TreeId::Consents as usize] = a.path.root(a.index, leaf_hash(&leaf));
        let roots: [Fr; 4] = a.tree_roots.clone().try_into().unwrap();
        let root = state_root(Fr::from(sample::INSTANCE), &roots, a.audit_count);
        v["leaf"] = a.leaf.iter().map(dec).collect();
        v["tree_roots"] = a.tree_roots.iter().map(dec).collect();
        v["root"] = dec(&root);
        axum::Json(v).into_response()
    }
    let seen = Seen::default();
    let app =
        axum::Router::new().route("/{*path}", axum::routing::get(forward)).with_state((honest, lie, seen));
    serve(app).await
}

/// A coordinator in front of `honest` whose first record add waits, once
/// it is posted, until `go` (after it has said so on `posted`), as if
/// another client's transaction were sealed first; every request is passed
/// through.
async fn slow_to_add(
    honest: String,
    posted: tokio::sync::oneshot::Sender<()>,
    go: tokio::sync::oneshot::Receiver<()>,
) -> String {
    type Hold = std::sync::Arc<
        tokio::sync::Mutex<Option<(tokio::sync::oneshot::Sender<()>, tokio::sync::oneshot::Receiver<()>)>>,
    >;
    async fn forward(
        State((honest, hold)): State<(String, Hold)>,
        method: axum::http::Method,
        uri: axum::http::Uri,
        body: axum::body::Bytes,
    ) -> axum::response::Response {
        if method == axum::http::Method::POST
            && uri.path() == "/tx"
            && String::from_utf8_lossy(&body).contains("add_record")
            && let Some((posted, go)) = hold.lock().await.take()
        {
            posted.send(()).unwrap();
            go.await.unwrap();
        }
        pass_through(&honest, method, &uri, body).await
    }
    let hold: Hold = std::sync::Arc::new(tokio::sync::Mutex::new(Some((posted, go))));
    let app = axum::Router::new().fallback(forward).with_state((honest, hold));
    serve(app).await
}

/// A coordinator in front of `honest` that drops the first transaction
/// posted to it, answering that it was accepted into the batch now open
/// (after saying so on `dropped`); every other request is passed through.
async fn dropping_one(honest: String, dropped: tokio::sync::oneshot::Sender<()>) -> String {
    type Once = std::sync::Arc<std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>>;
    async fn forward(
        State((honest, once)): State<(String, Once)>,
        method: axum::http::Method,
        uri: axum::http::Uri,
        body: axum::body::Bytes,
    ) -> axum::response::Response {
        if method == axum::http::Method::POST && uri.path() == "/tx" {
            let dropped = once.lock().unwrap().take();
            if let Some(dropped) = dropped {
                let open = get_json(&format!("{honest}/root")).await["batches_sealed"].as_u64().unwrap();
                let answer = medrollup_wire::TxAnswer {
                    id: medrollup_wire::tx_id(&body),
                    status: medrollup_wire::TxStatus::Accepted { batch: open, position: 0 },
                };
                dropped.send(()).unwrap();
                return axum::Json(answer).into_response();
            }
        }
        pass_through(&honest, method, &uri, body).await
    }
    let once: Once = std::sync::Arc::new(std::sync::Mutex::new(Some(dropped)));
    let app = axum::Router::new().fallback(forward).with_state((honest, once));
    serve(app).await
}

/// `(record, consent)` of each record `s` finds listed for it.
async fn listed(s: &Session) -> Vec<(u64, Option<u64>)> {
    s.listed_records().await.unwrap().into_iter().map(|r| (r.id, r.consent)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn patients_and_doctors_share_read_revoke_and_delete_records_checked_against_l1() {
    let dir = tempfile::tempdir().unwrap();
    let ipfs = IpfsNode::start().expect("a js-ipfs node (scripts/ipfs installs it)");
    let nats = Nats::start(dir.path());
    let keys = keys_dir_seeded(canonical::SHAPE, canonical::SEED);
    let anvil = Anvil::start(free_port(), &["--block-time", "1"]).unwrap();
    let http_port = free_port();
    let data = dir.path().join("coordinator");
    let _coordinator = Coordinator::start(&CoordinatorOpts {
        seal_timeout_ms: 300,
        l1: Some((&anvil.url(), DEV_KEY, 1)),
        ipfs_api: Some(ipfs.api()),
        ..CoordinatorOpts::new(&nats, &keys, &data, dir.path(), http_port)
    });
    let _w1 = start_worker(&nats, "hospital-a", &dir.path().join("cache-a"), dir.path());
    let _w2 = start_worker(&nats, "hospital-b", &dir.path().join("cache-b"), dir.path());
    let http = format!("http://127.0.0.1:{http_port}");
    let rollup: Address = get_json(&format!("{http}/l1")).await["rollup"].as_str().unwrap().parse().unwrap();
    let endpoints = Endpoints {
        coordinator: http.clone(),
        ipfs_api: Some(ipfs.api().to_string()),
        l1_rpc: anvil.url(),
        rollup,
        l1_wait: Duration::from_secs(300),
    };
    let hospital_key = sample::parties().hospitals[0].key.clone();
    let hospital_id = Identity::from_parts(hospital_key, Identity::generate().rsa_key().clone());
    let mut hospital = Session::open(&endpoints, HOSPITAL, hospital_id).await.unwrap();
    let mut patient = Session::open(&endpoints, PATIENT, Identity::generate()).await.unwrap();
    let mut doc_a = Session::open(&endpoints, DOCTOR_A, Identity::generate()).await.unwrap();
    let mut doc_b = Session::open(&endpoints, DOCTOR_B, Identity::generate()).await.unwrap();

    // Registration: the hospital registers its doctors, the patient themself.
    hospital.register_doctor(DOCTOR_A, &doc_a.identity().public()).await.unwrap();
    hospital.register_doctor(DOCTOR_B, &doc_b.identity().public()).await.unwrap();
    patient.register_patient().await.unwrap();
    assert_eq!(patient.public_identity(DOCTOR_A).await.unwrap(), doc_a.identity().public());

    // Doctor A has no consent yet: refused before anything is sent or stored.
    let small = example_bundle("p10", 4_000);
    let e = doc_a.add_record(PATIENT, &small).await.unwrap_err();
    assert!(e.to_string().contains("holds no read-write consent"), "{e}");

    // The patient lets doctor A write; A adds a record (on the IPFS node).
    let c_a =
        patient.grant(DOCTOR_A, Scope::ReadWrite, ConsentTarget::AllRecords, in_a_week()).await.unwrap();
    let record = doc_a.add_record(PATIENT, &small).await.unwrap();
    let leaf = patient.record(record).await.unwrap();
    assert_eq!((leaf.owner, leaf.author, leaf.version), (PATIENT, DOCTOR_A, 1));
    let on_node = KuboStore::new(ipfs.api());
    assert!(on_node.has(medrollup_storage::cid::Cid::from_digest(leaf.cid_digest)).await.unwrap());
    assert_eq!(patient.read(record).await.unwrap().bundle, small, "the patient reads their record");

    // Doctor B gets read access to that record and reads it; the read is
    // in the patient's audit log.
    let c_b = patient.grant(DOCTOR_B, Scope::Read, ConsentTarget::Record(record), in_a_week()).await.unwrap();
    let read = doc_b.read(record).await.unwrap();
    assert_eq!((read.bundle.as_slice(), read.consent), (small.as_slice(), Some(c_b)));
    let old_cid = read.cid;
    let old_envelope = Envelope::from_bytes(&on_node.cat(old_cid).await.unwrap()).unwrap();
    let b_old_key = old_envelope.record_key(doc_b.identity()).unwrap();
    let log = patient.audit_log().await.unwrap();
    assert!(
        log.iter().any(|(_, e)| e.kind == AUDIT_READ
            && e.actor == DOCTOR_B
            && e.record == record
            && e.consent == c_b),
        "doctor B's read is in the audit log: {log:?}"
    );
    let consents = patient.my_consents().await.unwrap();
    assert_eq!(
        consents.iter().map(|(c, _)| *c).collect::<std::collections::BTreeSet<_>>(),
        [c_a, c_b].into()
    );
    // B did not write it, yet finds it listed, under its consent; A wrote it.
    assert_eq!(listed(&doc_b).await, [(record, Some(c_b))]);
    assert_eq!(listed(&doc_a).await, [(record, None)]);
    // The keys of another account are not taken for ours.
    let impostor = Session::open(&endpoints, DOCTOR_B, Identity::generate()).await.unwrap();
    let e = impostor.my_role().await.unwrap_err();
    assert!(e.to_string().contains("account 21 is registered (as a doctor) to other keys"), "{e}");
    assert_eq!(doc_b.my_role().await.unwrap(), Some(medrollup_circuits::state::Role::Doctor));

    // A lying coordinator cannot hand doctor B a revoked consent as active:
    // (checked after the revoke below). One that replays the past has seen
    // B's consent active; B's client through it believes it now.
    let liar = lying_coordinator(http.clone(), Lie::Forge).await;
    let replayer = lying_coordinator(http.clone(), Lie::Replay).await;
    let mut replayed = Session::open(
        &Endpoints { coordinator: replayer, ..endpoints.clone() },
        DOCTOR_B,
        Identity::generate(),
    )
    .await
    .unwrap();
    assert!(!replayed.consent(c_b).await.unwrap().revoked);

    // The patient revokes B: the record is re-keyed to a new CID, the old
    // content unpinned.
    assert_eq!(patient.revoke(c_b).await.unwrap(), vec![record]);
    assert_eq!(listed(&doc_b).await, [], "no longer listed for B");
    let e = doc_b.read(record).await.unwrap_err();
    assert!(matches!(e, ClientError::Refused(_)) && e.to_string().contains("no active consent"), "{e}");
    // Sent anyway, the access is refused by the rules.
    let e = doc_b.submit(TxBody::LogAccess { record, consent: c_b }).await.unwrap_err();
    assert!(matches!(&e, ClientError::Rejected { code, .. } if code == "consent_revoked"), "{e}");
    let leaf = patient.record(record).await.unwrap();
    let new_cid = medrollup_storage::cid::Cid::from_digest(leaf.cid_digest);
    assert_ne!(new_cid, old_cid, "re-keyed content has a new CID");
    let new_envelope = Envelope::from_bytes(&on_node.cat(new_cid).await.unwrap()).unwrap();
    assert!(matches!(new_envelope.open(doc_b.identity()), Err(RecordError::NotARecipient(_))));
    assert!(
        matches!(new_envelope.open_with(&b_old_key), Err(RecordError::Corrupted(_))),
        "B's old key opens nothing new"
    );
    assert_eq!(new_envelope.open(doc_a.identity()).unwrap(), small, "A still reads");
    let pins = reqwest::Client::new()
        .post(format!("{}/api/v0/pin/ls?type=recursive", ipfs.api()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!pins.contains(&old_cid.to_string()), "the old ciphertext is unpinned: {pins}");
    // ...and the liar's forged consent is refused against L1.
    let mut fooled =
        Session::open(&Endpoints { coordinator: liar, ..endpoints.clone() }, DOCTOR_B, Identity::generate())
            .await
            .unwrap();
    fooled.light_mut().wait = Duration::from_secs(20);
    let e = fooled.consent(c_b).await.unwrap_err();
    assert!(matches!(e, ClientError::Light(LightError::NotOnL1 { .. })), "{e}");
    assert!(e.to_string().contains("not the chain's state"), "{e}");
    // ...and the replayed consent from before the revoke is L1's old state,
    // refused as stale once L1 has moved past it.
    assert!(patient.consent(c_b).await.unwrap().revoked, "L1 has the revoke");
    replayed.light_mut().wait = Duration::from_secs(20);
    let e = replayed.consent(c_b).await.unwrap_err();
    assert!(matches!(e, ClientError::Light(LightError::Stale { .. })), "{e}");
    assert!(e.to_string().contains("stale"), "{e}");
    // A coordinator that names another rollup instance (and fits its
    // answers to it) gets no signature: the first transaction's nonce is
    // read checked against L1, which has none of its roots. (Signed, it
    // would have been posted to this liar, which takes no POST.)
    let other = lying_coordinator(http.clone(), Lie::Instance).await;
    let mut misled =
        Session::open(&Endpoints { coordinator: other, ..endpoints.clone() }, DOCTOR_B, Identity::generate())
            .await
            .unwrap();
    misled.light_mut().wait = Duration::from_secs(20);
    let e = misled.submit(TxBody::LogAccess { record, consent: c_a }).await.unwrap_err();
    assert!(matches!(e, ClientError::Light(LightError::NotOnL1 { .. })), "{e}");
    // A coordinator that says a grant was accepted but drops it: once the
    // batch it named is on L1 (sealed with doctor A's read, sent meanwhile
    // to the honest coordinator), the client finds no such consent there.
    let (told, dropped) = tokio::sync::oneshot::channel();
    let dropper = dropping_one(http.clone(), told).await;
    let patient_keys = || {
        Identity::from_parts(patient.identity().signing_key().clone(), patient.identity().rsa_key().clone())
    };
    let mut deceived =
        Session::open(&Endpoints { coordinator: dropper, ..endpoints.clone() }, PATIENT, patient_keys())
            .await
            .unwrap();
    let (e, ()) = tokio::join!(
        deceived.grant(DOCTOR_B, Scope::Read, ConsentTarget::Record(record), in_a_week()),
        async {
            dropped.await.unwrap();
            doc_a.submit(TxBody::LogAccess { record, consent: c_a }).await.unwrap();
        }
    );
    let e = e.unwrap_err();
    let ClientError::NotApplied { what, batch } = &e else { panic!("{e}") };
    assert!(what.starts_with("consent ") && what.ends_with("to account 21"), "{e}");
    assert_eq!(Some(*batch), doc_a.journal().last().and_then(|s| s.batch), "{e}");
    assert!(e.to_string().contains("did not apply it"), "{e}");

    // A large record (beyond one 256 KiB chunk: a dag-pb root on IPFS).
    let large = example_bundle("p10", 400_000);
    let cid = doc_a.update_record(record, &large).await.unwrap();
    assert_eq!(cid.codec(), medrollup_storage::cid::DAG_PB);
    assert_eq!(patient.read(record).await.unwrap().bundle, large);

    // Two writers at once, from the same version: the doctor and the
    // patient. One update is applied; the other names the version both read,
    // which is gone by then: it is refused, its writer told why, and its
    // content let go. Nothing is overwritten unseen.
    let (va, vp) = (example_bundle("p10", 5_000), example_bundle("p10", 6_000));
    let at = patient.record(record).await.unwrap().version;
    let (ra, rp) = tokio::join!(doc_a.update_record(record, &va), patient.update_record(record, &vp));
    assert_eq!(patient.record(record).await.unwrap().version, at + 1, "one applied");
    let (lost, kept) = match (&ra, &rp) {
        (Err(e), Ok(_)) => (e, &vp),
        (Ok(_), Err(e)) => (e, &va),
        other => panic!("one write is refused, the other applied: {other:?}"),
    };
    let &ClientError::Stale { record: r, read, cid } = lost else { panic!("{lost}") };
    assert_eq!((r, read), (record, at), "{lost}");
    assert!(lost.to_string().contains("changed after it was read"), "{lost}");
    let cid = cid.expect("stored before it was refused");
    assert!(matches!(on_node.unpin(cid).await, Err(ContentError::NotFound(_))), "let go: {lost}");
    assert_eq!(patient.read(record).await.unwrap().bundle, *kept);
    // A person's edit of the version they read, sent after another writer's
    // update (however long the edit took): refused before anything is
    // stored or sent.
    let sent = doc_a.journal().len();
    let e = doc_a.update_record_from(record, Some(at), &va).await.unwrap_err();
    assert!(matches!(e, ClientError::Stale { read, cid: None, .. } if read == at), "{e}");
    assert!(e.to_string().contains(&format!("changed after it was read at version {at}")), "{e}");
    assert_eq!(doc_a.journal().len(), sent, "nothing sent");
    assert_eq!(patient.read(record).await.unwrap().bundle, *kept);

    // Break-glass by B: logged and flagged, but the re-keyed record does not open for B.
    let e = doc_b.emergency_read(record, "unconscious in the emergency room").await.unwrap_err();
    assert!(matches!(e, ClientError::Record(RecordError::NotARecipient(_))), "{e}");
    let log = patient.audit_log().await.unwrap();
    assert!(log.iter().any(|(_, e)| e.kind == AUDIT_EMERGENCY && e.actor == DOCTOR_B), "{log:?}");

    // With the IPFS node unreachable, a write fails cleanly and changes nothing.
    let mut offline = Session::open(
        &Endpoints { ipfs_api: Some(format!("http://127.0.0.1:{}", free_port())), ..endpoints.clone() },
        DOCTOR_A,
        Identity::from_parts(doc_a.identity().signing_key().clone(), doc_a.identity().rsa_key().clone()),
    )
    .await
    .unwrap();
    let before = doc_a.index_of(PATIENT).await.unwrap().records;
    let e = offline.add_record(PATIENT, &small).await.unwrap_err();
    assert!(matches!(e, ClientError::Storage(ContentError::Remote(_))), "{e}");
    assert!(e.to_string().contains("does not answer"), "{e}");
    assert_eq!(doc_a.index_of(PATIENT).await.unwrap().records, before);

    // A second patient uses the command line for the same flows.
    let home = dir.path().join("patient-11");
    std::fs::create_dir(&home).unwrap();
    let rollup_hex = rollup.to_string();
    let account = PATIENT_2.to_string();
    let env = [
        ("MEDROLLUP_PASSWORD", "a long passphrase"),
        ("MEDROLLUP_ACCOUNT", account.as_str()),
        ("MEDROLLUP_COORDINATOR", http.as_str()),
        ("MEDROLLUP_L1_RPC", endpoints.l1_rpc.as_str()),
        ("MEDROLLUP_ROLLUP", rollup_hex.as_str()),
        ("MEDROLLUP_IPFS_API", ipfs.api()),
    ];
    cli(&home, &env, &["keys", "new"]);
    assert!(cli(&home, &env, &["register"]).contains("registered patient 11"));
    let out = cli(&home, &env, &["grant", "--grantee", "20", "--write", "--days", "7"]);
    let consent: u64 =
        out.strip_prefix("consent ").and_then(|r| r.split(':').next()).unwrap().parse().unwrap();
    let note = example_bundle("p11", 2_000);
    let r2 = doc_a.add_record(PATIENT_2, &note).await.unwrap();
    cli(&home, &env, &["read", "--record", &r2.to_string(), "--out", "record.json"]);
    assert_eq!(std::fs::read(home.join("record.json")).unwrap(), note);
    // Written for its reader only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(home.join("record.json")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    // Through a link, the file it names gets the record; the link stays.
    std::fs::write(home.join("named.json"), b"").unwrap();
    std::os::unix::fs::symlink(home.join("named.json"), home.join("link.json")).unwrap();
    cli(&home, &env, &["read", "--record", &r2.to_string(), "--out", "link.json"]);
    assert!(std::fs::symlink_metadata(home.join("link.json")).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read(home.join("named.json")).unwrap(), note);
    // Without the rollup contract named, nothing is taken from the
    // coordinator on trust: refused, with what the coordinator says.
    let unpinned: Vec<(&str, &str)> = env.iter().filter(|(k, _)| *k != "MEDROLLUP_ROLLUP").copied().collect();
    let e = cli_fails(&home, &unpinned, &["consents"]);
    assert!(e.contains("--rollup (or MEDROLLUP_ROLLUP) is required"), "{e}");
    assert!(e.to_lowercase().contains(&format!("names {}", rollup_hex.to_lowercase())), "{e}");
    assert_eq!(doc_a.read(r2).await.unwrap().consent, Some(consent));
    let listed = cli(&home, &env, &["consents"]);
    assert!(
        listed.contains(&format!("consent {consent}: patient 11 -> 20 ReadWrite AllRecords")),
        "{listed}"
    );
    let audit = cli(&home, &env, &["audit"]);
    assert!(
        audit.contains(&format!("account 20 read record {r2} of patient 11 (consent {consent})")),
        "{audit}"
    );

    // The patient revokes doctor A, the record's author, while the content
    // store is out of reach: the revoke is sealed, the re-keying fails, and
    // A's key still opens the record.
    let mut patient_offline = Session::open(
        &Endpoints { ipfs_api: Some(format!("http://127.0.0.1:{}", free_port())), ..endpoints.clone() },
        PATIENT,
        Identity::from_parts(patient.identity().signing_key().clone(), patient.identity().rsa_key().clone()),
    )
    .await
    .unwrap();
    let e = patient_offline.revoke(c_a).await.unwrap_err();
    let ClientError::Unfinished { what, error } = &e else { panic!("{e}") };
    assert!(matches!(**error, ClientError::Storage(ContentError::Remote(_))), "{e}");
    assert!(what.contains(&format!("not re-keyed yet: {record}")), "{e}");
    assert!(patient.consent(c_a).await.unwrap().revoked);
    let current =
        Envelope::from_bytes(&on_node.cat(patient.read(record).await.unwrap().cid).await.unwrap()).unwrap();
    assert!(current.open(doc_a.identity()).is_ok(), "half a revoke: A still a recipient");
    // Revoking again finishes it (no second transaction): A is out.
    assert_eq!(patient.revoke(c_a).await.unwrap(), vec![record]);
    assert_eq!(patient.revoke(c_a).await.unwrap(), Vec::<u64>::new(), "nothing left to re-key");
    // The patient's own update does not hand the new key back to its author.
    let v3 = example_bundle("p10", 3_000);
    patient.update_record(record, &v3).await.unwrap();
    let e = doc_a.emergency_read(record, "the revoked author tries").await.unwrap_err();
    assert!(matches!(e, ClientError::Record(RecordError::NotARecipient(_))), "{e}");
    assert_eq!(patient.read(record).await.unwrap().bundle, v3);
    // An update whose superseded content cannot be unpinned stands, and
    // says so, naming that content.
    let mut patient_unpinless = Session::open(
        &Endpoints { ipfs_api: Some(unpin_refusing_node(ipfs.api().to_string()).await), ..endpoints.clone() },
        PATIENT,
        Identity::from_parts(patient.identity().signing_key().clone(), patient.identity().rsa_key().clone()),
    )
    .await
    .unwrap();
    let before = patient.read(record).await.unwrap().cid;
    let v4 = example_bundle("p10", 4_000);
    let e = patient_unpinless.update_record(record, &v4).await.unwrap_err();
    let ClientError::Unfinished { what, error } = &e else { panic!("{e}") };
    assert!(matches!(**error, ClientError::Storage(ContentError::Remote(_))), "{e}");
    assert!(what.contains(&format!("supersedes, {before}, is still pinned")), "{e}");
    assert!(what.contains("nothing needs writing again"), "{e}");
    assert_eq!(patient.read(record).await.unwrap().bundle, v4, "the update stands");
    assert!(on_node.has(before).await.unwrap(), "still pinned, as said");
    on_node.unpin(before).await.unwrap();

    // A grant whose sharing stops (the content store out of reach) after
    // its consent is sealed says the consent stands; sharing it again
    // finishes it, and once more finds nothing left.
    let e = patient_offline
        .grant(DOCTOR_B, Scope::Read, ConsentTarget::Record(record), in_a_week())
        .await
        .unwrap_err();
    assert!(matches!(&e, ClientError::Unfinished { .. }), "{e}");
    assert!(
        e.to_string().contains("is granted and stands") && e.to_string().contains("not by granting again"),
        "{e}"
    );
    let c_b2 = patient
        .my_consents()
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, c)| c.grantee == DOCTOR_B && !c.revoked)
        .map(|(id, _)| id)
        .max()
        .expect("the consent stands");
    let e = doc_b.read(record).await.unwrap_err();
    assert!(matches!(e, ClientError::Record(RecordError::NotARecipient(_))), "not shared yet: {e}");
    assert_eq!(patient.share(c_b2).await.unwrap(), vec![record]);
    assert_eq!(doc_b.read(record).await.unwrap().bundle, v4);
    assert_eq!(patient.share(c_b2).await.unwrap(), Vec::<u64>::new(), "nothing left to share");

    // A revoke sealed while a record is being added: doctor B's consent to
    // all the patient's records ends after A's client read the readers and
    // before its add is sealed. A's client finds it once the add lands and
    // seals the record again without B (a revoke's re-keying lists the
    // records before this one exists).
    let c_a2 =
        patient.grant(DOCTOR_A, Scope::ReadWrite, ConsentTarget::AllRecords, in_a_week()).await.unwrap();
    let c_b_all = patient.grant(DOCTOR_B, Scope::Read, ConsentTarget::AllRecords, in_a_week()).await.unwrap();
    let (posted, posted_rx) = tokio::sync::oneshot::channel();
    let (go, go_rx) = tokio::sync::oneshot::channel();
    let slow = slow_to_add(http.clone(), posted, go_rx).await;
    let a_again =
        Identity::from_parts(doc_a.identity().signing_key().clone(), doc_a.identity().rsa_key().clone());
    let mut doc_a_slow =
        Session::open(&Endpoints { coordinator: slow, ..endpoints.clone() }, DOCTOR_A, a_again)
            .await
            .unwrap();
    let raced = example_bundle("p10", 1_500);
    let adding = {
        let raced = raced.clone();
        tokio::spawn(async move { doc_a_slow.add_record(PATIENT, &raced).await })
    };
    posted_rx.await.unwrap();
    // The revoke's transaction alone, sealed (its re-keying, which finds no
    // record of B's to re-key yet but takes a proof's time, comes after: the
    // add is held meanwhile, within its client's 90 s).
    patient.submit(TxBody::Revoke { consent: c_b_all }).await.unwrap();
    patient.settle().await.unwrap();
    go.send(()).unwrap();
    let added = adding.await.unwrap().unwrap();
    let e = doc_b.read(added).await.unwrap_err();
    assert!(matches!(e, ClientError::Refused(_)), "{e}");
    let e = doc_b.emergency_read(added, "the revoked doctor tries").await.unwrap_err();
    assert!(matches!(e, ClientError::Record(RecordError::NotARecipient(_))), "{e}");
    assert_eq!(doc_a.read(added).await.unwrap().bundle, raced);
    assert_eq!(patient.read(added).await.unwrap().bundle, raced);
    // (The patient's revoke, run again, would have re-keyed it too: only
    // after the checks above.)
    patient.revoke(c_b_all).await.unwrap();
    patient.revoke(c_a2).await.unwrap();

    // The patient deletes the record: unpinned, and nobody reads it again.
    let gone = patient.delete(record).await.unwrap();
    assert!(patient.record(record).await.unwrap().deleted);
    let e = doc_a.read(record).await.unwrap_err();
    assert!(e.to_string().contains("was deleted"), "{e}");
    let e = on_node.unpin(gone).await.unwrap_err();
    assert!(matches!(e, ContentError::NotFound(_)) || e.to_string().contains("not pinned"), "{e}");
    // Deleting again sends nothing and is content (a delete cut short after
    // its transaction is finished so).
    let sent = patient.journal().len();
    assert_eq!(patient.delete(record).await.unwrap(), gone);
    assert_eq!(patient.journal().len(), sent, "no second delete transaction");

    // Consents are judged by the later of the local clock and L1's: with
    // L1's an hour ahead (as if this machine's clock were an hour behind),
    // doctor B's consent that ends in ten minutes by the local clock has
    // ended by the chain's. A record A adds now is not sealed for B, nor
    // does B's client use that consent to read.
    let ends_soon = now() + 600;
    let c_b_short = patient.grant(DOCTOR_B, Scope::Read, ConsentTarget::AllRecords, ends_soon).await.unwrap();
    patient.grant(DOCTOR_A, Scope::ReadWrite, ConsentTarget::AllRecords, in_a_week()).await.unwrap();
    let local = doc_b.now().await.unwrap();
    assert!(local < ends_soon, "the consent still holds by both clocks");
    for (method, params) in
        [("evm_increaseTime", serde_json::json!([3600])), ("evm_mine", serde_json::json!([]))]
    {
        let body = serde_json::json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params });
        let r: serde_json::Value =
            reqwest::Client::new().post(anvil.url()).json(&body).send().await.unwrap().json().await.unwrap();
        assert!(r.get("error").is_none(), "{method}: {r}");
    }
    assert!(doc_b.now().await.unwrap() >= local + 3600, "the chain's clock is the later");
    assert!(now() < ends_soon, "the local clock still has the consent holding");
    let late = doc_a.add_record(PATIENT, &small).await.unwrap();
    let e = doc_b.read(late).await.unwrap_err();
    assert!(matches!(e, ClientError::Refused(_)) && e.to_string().contains("no active consent"), "{e}");
    let e = doc_b.emergency_read(late, "a consent ended by the chain's clock").await.unwrap_err();
    assert!(matches!(e, ClientError::Record(RecordError::NotARecipient(_))), "{e}");
    assert_eq!(patient.read(late).await.unwrap().bundle, small);
    assert_eq!(patient.consent(c_b_short).await.unwrap().expiry, ends_soon);

    // A client that stops waiting for L1 once its grant was accepted says
    // the consent stands and how to finish, not that the grant failed (sent
    // again, it would be a second consent); finished so, B reads.
    let keys =
        Identity::from_parts(patient.identity().signing_key().clone(), patient.identity().rsa_key().clone());
    let mut hasty = Session::open(&endpoints, PATIENT, keys).await.unwrap();
    hasty.light_mut().wait = Duration::from_millis(1);
    let e = hasty.grant(DOCTOR_B, Scope::Read, ConsentTarget::Record(late), in_a_week()).await.unwrap_err();
    let ClientError::Unfinished { what, error } = &e else { panic!("{e}") };
    assert!(matches!(**error, ClientError::Light(LightError::NotYetOnL1 { .. })), "{e}");
    assert!(what.contains("stands") && what.contains("do not grant again"), "{e}");
    assert_eq!(hasty.journal().iter().filter(|s| s.kind == "grant").count(), 1, "sent once");
    let c_late: u64 =
        what.strip_prefix("consent ").and_then(|w| w.split(' ').next()).unwrap().parse().unwrap();
    let granted = patient.consent(c_late).await.unwrap();
    assert_eq!((granted.grantee, granted.target), (DOCTOR_B, ConsentTarget::Record(late)));
    assert_eq!(patient.share(c_late).await.unwrap(), vec![late]);
    assert_eq!(doc_b.read(late).await.unwrap().bundle, small);
}
