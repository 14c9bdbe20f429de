//! The coordinator's HTTP API: submit a transaction (for clients without
//! NATS), the status of a transaction and of a batch, the state root, Merkle
//! proofs of any leaf (for light clients), farm status, Prometheus metrics,
//! and the subset of the Kubo RPC API clients need for content (`add`, `cat`,
//! `pin/add`), so that one client talks to this or to a real IPFS node.

use crate::cid::Cid;
use crate::content::{MAX_BLOCK, MAX_CONTENT};
use crate::service::Shared;
use crate::store::{JobRecord, JobState, ProofRecord};
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Multipart, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use medrollup_circuits::batch::PublicInputs;
use medrollup_circuits::field::fr_to_dec;
use medrollup_circuits::merkle::MerklePath;
use medrollup_circuits::state::TreeId;
use medrollup_wire::{MAX_TX_BYTES, TxAnswer, TxStatus, subjects, tx_id};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

type AppState = Arc<Shared>;

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// The router.
pub fn router(shared: AppState) -> Router {
    Router::new()
        .route("/tx", post(submit))
        .route("/tx/{id}", get(tx_status))
        .route("/batch/{n}", get(batch))
        .route("/root", get(root))
        .route("/proof/{tree}/{index}", get(proof))
        .route("/index/{account}", get(index))
        .route("/directory/{account}", get(directory).post(publish_directory))
        .route("/farm", get(farm))
        .route("/l1", get(l1_status))
        .route("/metrics", get(metrics))
        // Whole records (the store chunks them), with room for the
        // multipart framing.
        .route("/api/v0/add", post(kubo_add).layer(DefaultBodyLimit::max(MAX_CONTENT + 64 * 1024)))
        .route("/api/v0/cat", post(kubo_cat))
        .route("/api/v0/pin/add", post(kubo_pin))
        .route("/api/v0/pin/rm", post(kubo_unpin))
        .route("/api/v0/block/stat", post(kubo_block_stat))
        .layer(DefaultBodyLimit::max(MAX_BLOCK + 64 * 1024))
        .with_state(shared)
}

/// Serves the API until `stop` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: AppState,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    axum::serve(listener, router(shared))
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
}

fn lookup(s: &Shared, id: &str) -> Option<TxAnswer> {
    if let Some(a) = s.view.read().expect("view lock").recent.get(id) {
        return Some(a.clone());
    }
    s.store.answer(id).ok().flatten()
}

/// A refusal that the same transaction, sent again, may not get.
/// Refusals that the bytes alone decide: sent again, they would be refused
/// again. Every other refusal rests on the state or the content store then
/// (a nonce ahead of its account's, an account or consent not there yet,
/// content not added yet), so the same transaction sent again is decided
/// again.
const FINAL_REFUSALS: &[&str] = &[
    "malformed",
    "too_large",
    "padding_only",
    "bad_signature",
    "invalid_public_key",
    "non_canonical",
    "id_out_of_range",
    "reserved_account_id",
];

fn refused_for_now(a: &TxAnswer) -> bool {
    matches!(&a.status, TxStatus::Rejected { code, .. } if !FINAL_REFUSALS.contains(&code.as_str()))
}

fn answer_response(a: TxAnswer) -> Response {
    let status = match a.status {
        TxStatus::Rejected { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::OK,
    };
    (status, Json(a)).into_response()
}

/// `POST /tx`: the body is a signed transaction (JSON). It goes through the
/// same stream as NATS clients' transactions; the answer comes back when the
/// coordinator has decided it (200 accepted or duplicate, 422 rejected), or
/// 202 with its id if that takes longer than 30 s.
async fn submit(State(s): State<AppState>, body: Bytes) -> Response {
    let id = tx_id(&body);
    if body.len() > MAX_TX_BYTES {
        return answer_response(TxAnswer {
            id,
            status: TxStatus::Rejected {
                code: "too_large".into(),
                reason: format!(
                    "{} bytes; a transaction is at most {MAX_TX_BYTES} bytes of JSON",
                    body.len()
                ),
            },
        });
    }
    let mut answers = match s.client.subscribe(subjects::answer(&id)).await {
        Ok(sub) => sub,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, format!("NATS: {e}")),
    };
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", id.as_str());
    let ack = match s.js.publish_with_headers(subjects::TX_SUBMIT, headers, body.clone()).await {
        Ok(f) => f.await,
        Err(e) => {
            return error(StatusCode::SERVICE_UNAVAILABLE, format!("could not queue the transaction: {e}"));
        }
    };
    // The publish may have been stored though its acknowledgement was lost:
    // then it is decided like any other.
    let unknown = |e: &dyn std::fmt::Display| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the transaction may or may not have been queued ({e}): ask GET /tx/{id} before sending it again \
                 (sent again, it is recognised as the same transaction)"
            ),
        )
    };
    match ack {
        Err(e) => {
            return unknown(&e);
        }
        Ok(ack) if ack.duplicate => {
            // Submitted before: its answer exists or is coming.
            let mut sent_again = false;
            for _ in 0..60 {
                match lookup(&s, &id) {
                    // Refused for what was so then (its content not there,
                    // its nonce ahead): decided again, through the stream
                    // under another id.
                    Some(a) if refused_for_now(&a) => {
                        let mut headers = async_nats::HeaderMap::new();
                        let again = format!("{id}/again/{}", crate::service::now_ms());
                        headers.insert("Nats-Msg-Id", again.as_str());
                        let queued = match s.js.publish_with_headers(subjects::TX_SUBMIT, headers, body).await
                        {
                            Ok(f) => f.await.is_ok(),
                            Err(_) => false,
                        };
                        if !queued {
                            return answer_response(a);
                        }
                        sent_again = true;
                        break;
                    }
                    Some(a) => return answer_response(a),
                    None => tokio::time::sleep(Duration::from_millis(500)).await,
                }
            }
            if sent_again
                && let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(30), answers.next()).await
                && let Ok(a) = serde_json::from_slice::<TxAnswer>(&m.payload)
            {
                return answer_response(a);
            }
        }
        Ok(_) => {
            if let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(30), answers.next()).await
                && let Ok(a) = serde_json::from_slice::<TxAnswer>(&m.payload)
            {
                return answer_response(a);
            }
        }
    }
    (StatusCode::ACCEPTED, Json(json!({ "id": id, "status": "pending" }))).into_response()
}

/// `GET /tx/{id}`: the answer given to a transaction.
async fn tx_status(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    match lookup(&s, &id) {
        Some(a) => (StatusCode::OK, Json(a)).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!(
                "no transaction with id {id} has been decided (or it was refused more than {} hours ago: \
                 refusals are forgotten then)",
                s.refusals_kept.as_secs() / 3_600
            ),
        ),
    }
}

/// A batch without its witness.
#[derive(Debug, Serialize, Deserialize)]
pub struct BatchSummary {
    /// Index.
    pub batch: u64,
    /// Public inputs.
    pub public_inputs: PublicInputs,
    /// CID of its data.
    pub cid: Cid,
    /// Submitted transaction ids.
    pub tx_ids: Vec<String>,
    /// Sealed at (Unix ms).
    pub sealed_at_ms: u64,
    /// Its verified proof.
    pub proof: Option<ProofRecord>,
    /// Handed to L1 (without L1: recorded to the sink file).
    pub submitted: bool,
    /// How it landed on L1.
    pub l1: Option<crate::store::Landing>,
    /// Its job.
    pub job: Option<JobRecord>,
}

/// `GET /batch/{n}`.
async fn batch(State(s): State<AppState>, Path(n): Path<u64>) -> Response {
    match (s.store.batch(n), s.store.job(n)) {
        (Ok(Some(b)), Ok(job)) => {
            let l1 = s.store.landing(n).ok().flatten();
            Json(BatchSummary {
                batch: b.batch,
                public_inputs: b.public_inputs,
                cid: b.cid,
                tx_ids: b.tx_ids,
                sealed_at_ms: b.sealed_at_ms,
                proof: b.proof,
                submitted: b.submitted || l1.is_some(),
                l1,
                job,
            })
            .into_response()
        }
        (Ok(None), _) => error(StatusCode::NOT_FOUND, format!("batch {n} has not been sealed")),
        (Err(e), _) | (_, Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `GET /root`: the state root after the last sealed batch.
async fn root(State(s): State<AppState>) -> Response {
    let v = s.view.read().expect("view lock");
    let submitted = s.store.next_submit().unwrap_or(0);
    Json(json!({
        "root": fr_to_dec(&v.sealed.root()),
        "batches_sealed": v.batches_sealed,
        "batches_submitted": submitted,
        "instance": fr_to_dec(&v.sealed.instance()),
        "levels": v.sealed.levels(),
        "capacity": v.sealed.capacity(),
    }))
    .into_response()
}

/// `GET /proof/{tree}/{index}`: a leaf, its Merkle path, the four tree roots
/// and the audit count, from which the state root follows.
async fn proof(State(s): State<AppState>, Path((tree, index)): Path<(String, u64)>) -> Response {
    let Ok(tree_id) = serde_json::from_value::<TreeId>(json!(tree)) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("no tree {tree:?}; trees are accounts, records, consents, audit"),
        );
    };
    let v = s.view.read().expect("view lock");
    if index >= v.sealed.capacity() {
        return error(
            StatusCode::BAD_REQUEST,
            format!("index {index} is outside the tree (it has {} leaves)", v.sealed.capacity()),
        );
    }
    let leaf = v.sealed.leaf(tree_id, index);
    let path: MerklePath = v.sealed.path(tree_id, index);
    Json(json!({
        "tree": tree_id,
        "index": index,
        "leaf": leaf.iter().map(fr_to_dec).collect::<Vec<_>>(),
        "path": path,
        "tree_roots": v.sealed.roots().iter().map(fr_to_dec).collect::<Vec<_>>(),
        "audit_count": v.sealed.audit_count(),
        "root": fr_to_dec(&v.sealed.root()),
        "batches_sealed": v.batches_sealed,
    }))
    .into_response()
}

/// `GET /index/{account}`: the records, consents and audit entries where
/// the account appears in the last sealed state. A hint: clients fetch each
/// leaf with `/proof` and check it against L1.
async fn index(State(s): State<AppState>, Path(account): Path<u64>) -> Response {
    let v = s.view.read().expect("view lock");
    Json(json!({ "account": account, "batches_sealed": v.batches_sealed, "index": v.sealed.index_of(account) }))
        .into_response()
}

/// An account's public keys as it publishes them.
#[derive(Debug, Serialize, Deserialize)]
struct DirectoryEntry {
    babyjub: medrollup_circuits::eddsa::PublicKey,
    /// RSA SubjectPublicKeyInfo DER, hex.
    rsa_spki: String,
    /// Its hash (decimal), as registered.
    rsa_key_hash: String,
}

/// `POST /directory/{account}`: publishes the account's public keys, so
/// that others can wrap record keys for it. Taken only when they are the
/// keys the account registered (its leaf in the last sealed state), so the
/// entry needs no other authentication.
async fn publish_directory(State(s): State<AppState>, Path(account): Path<u64>, body: Bytes) -> Response {
    let entry: DirectoryEntry = match serde_json::from_slice(&body) {
        Ok(e) => e,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "a directory entry is {{\"babyjub\": {{\"x\", \"y\"}}, \"rsa_spki\": hex, \"rsa_key_hash\"}}: {e}"
                ),
            );
        }
    };
    let Ok(spki) = hex::decode(&entry.rsa_spki) else {
        return error(StatusCode::BAD_REQUEST, "rsa_spki is not hex");
    };
    let hash = medrollup_circuits::state::rsa_key_hash(&spki);
    if fr_to_dec(&hash) != entry.rsa_key_hash {
        return error(StatusCode::BAD_REQUEST, "rsa_key_hash is not the hash of rsa_spki");
    }
    let registered = s.view.read().expect("view lock").sealed.account(account);
    match registered {
        None => {
            return error(
                StatusCode::NOT_FOUND,
                format!("account {account} is not registered in the last sealed batch; publish after it is"),
            );
        }
        Some(a) if a.pubkey != entry.babyjub || a.rsa_key_hash != hash => {
            return error(
                StatusCode::FORBIDDEN,
                format!("these are not the keys account {account} registered"),
            );
        }
        Some(_) => {}
    }
    let canonical = serde_json::to_vec(&entry).expect("serialises");
    match s.store.put_directory(account, &canonical) {
        Ok(()) => (StatusCode::OK, Json(json!({ "account": account, "published": true }))).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `GET /directory/{account}`: the account's published public keys
/// (clients check them against the account's leaf on L1).
async fn directory(State(s): State<AppState>, Path(account): Path<u64>) -> Response {
    match s.store.directory(account) {
        Ok(Some(bytes)) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("account {account} has published no keys")),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `GET /l1`: the rollup contract and the submitter's progress.
async fn l1_status(State(s): State<AppState>) -> Response {
    match &s.l1 {
        Some(st) => Json(st.lock().expect("l1 status").clone()).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "no L1 configured: proven batches are recorded to <data>/l1-sink.jsonl",
        ),
    }
}

/// Open jobs `/farm` lists (the oldest; all are counted).
const FARM_JOBS_LISTED: usize = 200;

/// `GET /farm`: workers, jobs by state, the oldest open jobs (queued and
/// dead) listed.
async fn farm(State(s): State<AppState>) -> Response {
    let (open, counts) = match s.store.open_jobs_and_counts(FARM_JOBS_LISTED) {
        Ok(j) => j,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let records: std::collections::HashMap<_, _> =
        s.store.workers().unwrap_or_default().into_iter().collect();
    let workers: Vec<_> = {
        let w = s.workers.lock().expect("workers lock");
        let mut v: Vec<_> = w
            .values()
            .map(|h| {
                let rec = records.get(&h.info.name).cloned().unwrap_or_default();
                json!({
                    "name": h.info.name,
                    "backend": h.info.backend,
                    "devices": h.info.devices,
                    "threads": h.info.threads,
                    "memory_bytes": h.info.memory_bytes,
                    "busy": h.info.busy,
                    "jobs_done": h.info.jobs_done,
                    "last_seen_seconds": h.at.elapsed().as_secs_f64(),
                    "alive": h.at.elapsed() < s.worker_timeout,
                    "proofs_accepted": rec.proofs_accepted,
                    "proofs_rejected": rec.proofs_rejected,
                    "jobs_failed": rec.jobs_failed,
                })
            })
            .collect();
        v.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        v
    };
    let dead: Vec<_> = open.iter().filter(|j| matches!(j.state, JobState::Dead { .. })).collect();
    let queued: Vec<u64> = open.iter().filter(|j| j.state == JobState::Queued).map(|j| j.batch).collect();
    Json(json!({
        "workers": workers,
        "jobs": {
            "queued": counts.queued,
            "proven": counts.proven,
            "dead": counts.dead,
        },
        "queued": queued,
        "dead": dead,
        "open_jobs_listed_up_to": FARM_JOBS_LISTED,
    }))
    .into_response()
}

async fn metrics(State(s): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render()).into_response()
}

/// A Kubo RPC error body, with Kubo's status for a failed command (500).
fn kubo_error(message: impl Into<String>) -> Response {
    kubo_error_with(StatusCode::INTERNAL_SERVER_ERROR, message)
}

/// A Kubo RPC error for a request that is wrong in itself (a missing or
/// malformed argument, a body with no file): 400, as Kubo answers it.
fn kubo_bad_request(message: impl Into<String>) -> Response {
    kubo_error_with(StatusCode::BAD_REQUEST, message)
}

/// Kubo's `Code`: 1 for the client's error, 0 for the command's.
fn kubo_error_with(status: StatusCode, message: impl Into<String>) -> Response {
    let code = u8::from(status.is_client_error());
    (status, Json(json!({ "Message": message.into(), "Code": code, "Type": "error" }))).into_response()
}

#[derive(Debug, Deserialize)]
struct Arg {
    arg: Option<String>,
}

/// The CID in `?arg=`, or what is wrong with it.
fn cid_arg(q: &Arg) -> Result<Cid, String> {
    let arg = q.arg.as_deref().ok_or("argument \"ipfs-path\" is required")?;
    arg.parse::<Cid>().map_err(|e| e.to_string())
}

/// `POST /api/v0/add` (multipart, one file): as Kubo with
/// `cid-version=1&raw-leaves=true` for content within one chunk.
async fn kubo_add(State(s): State<AppState>, mut form: Multipart) -> Response {
    let field = match form.next_field().await {
        Ok(Some(f)) => f,
        Ok(None) => return kubo_bad_request("no file in the multipart body"),
        Err(e) => return kubo_error_with(e.status(), format!("multipart body: {e}")),
    };
    let name = field.file_name().map(str::to_string);
    let bytes = match field.bytes().await {
        Ok(b) => b,
        Err(e) => return kubo_error_with(e.status(), format!("multipart body: {e}")),
    };
    let size = bytes.len();
    match s.content.add(bytes.to_vec()).await {
        Ok(cid) => Json(json!({
            "Name": name.unwrap_or_else(|| cid.to_string()),
            "Hash": cid.to_string(),
            "Size": size.to_string(),
        }))
        .into_response(),
        Err(e) => kubo_error(e.to_string()),
    }
}

/// `POST /api/v0/cat?arg=CID`.
async fn kubo_cat(State(s): State<AppState>, Query(q): Query<Arg>) -> Response {
    let cid = match cid_arg(&q) {
        Ok(c) => c,
        Err(e) => return kubo_bad_request(e),
    };
    match s.content.cat(cid).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response(),
        Err(e) => kubo_error(e.to_string()),
    }
}

/// `POST /api/v0/pin/add?arg=CID`.
async fn kubo_pin(State(s): State<AppState>, Query(q): Query<Arg>) -> Response {
    let cid = match cid_arg(&q) {
        Ok(c) => c,
        Err(e) => return kubo_bad_request(e),
    };
    match s.content.pin(cid).await {
        Ok(()) => Json(json!({ "Pins": [cid.to_string()] })).into_response(),
        Err(e) => kubo_error(e.to_string()),
    }
}

/// The batch whose published data `bytes` claim to be, if they parse as
/// batch data.
fn claimed_batch(bytes: &[u8]) -> Option<u64> {
    serde_json::from_slice::<medrollup_wire::BatchData>(bytes).ok().map(|d| d.batch)
}

/// Why `cid` may not be removed through this API, if it may not: the
/// current content of a live record (it goes with the update or delete that
/// supersedes it), a record transaction's in the open batch, or a batch's
/// published data (kept for data availability; `claimed` is the batch its
/// bytes name, read beforehand). Reads no content: judged under the
/// content gate, which transactions wait on.
fn kept(s: &Shared, cid: Cid, claimed: Option<u64>) -> Option<String> {
    let digest = cid.digest();
    {
        let v = s.view.read().expect("view lock");
        if let Some(r) = v.sealed.live_record_with_content(&digest) {
            return Some(format!(
                "{cid} is record {r}'s current content: it can go once an update or delete of the record is sealed"
            ));
        }
        if v.open_content.contains(&digest) {
            return Some(format!("{cid} is the content of a record transaction in the open batch"));
        }
    }
    let batch = claimed?;
    if s.store.batch(batch).ok().flatten().is_some_and(|b| b.cid == cid) {
        return Some(format!("{cid} is batch {batch}'s published data, kept for data availability"));
    }
    None
}

/// `POST /api/v0/pin/rm?arg=<cid>` (the embedded store deletes what no other
/// root reaches; a block of other content is not unpinned alone): only
/// content nothing needs any more (a record's superseded versions, uploads
/// no transaction took); see [`kept`].
async fn kubo_unpin(State(s): State<AppState>, Query(q): Query<Arg>) -> Response {
    let cid = match cid_arg(&q) {
        Ok(c) => c,
        Err(e) => return kubo_bad_request(e),
    };
    // The content is read before the gate is taken (a node can take seconds
    // to say it has none, and transactions wait on the gate). Content that
    // is not here has nothing to remove, even should it arrive meanwhile.
    let claimed = match s.content.cat(cid).await {
        Ok(bytes) => claimed_batch(&bytes),
        // Damaged content can still be let go, unless it is a batch's data
        // (which batch it claims to be cannot be read: the CID index tells).
        Err(crate::content::ContentError::Corrupted(_)) => match s.store.batch_with_cid(&cid) {
            Ok(n) => n,
            Err(e) => return kubo_error(e.to_string()),
        },
        Err(e) => return kubo_error(e.to_string()),
    };
    // Judged and removed with no transaction looking for content meanwhile.
    let _gate = s.content_gate.lock().await;
    if let Some(why) = kept(&s, cid, claimed) {
        return (
            StatusCode::FORBIDDEN,
            Json(json!({ "Message": format!("not removed: {why}"), "Code": 0, "Type": "error" })),
        )
            .into_response();
    }
    match s.content.unpin(cid).await {
        Ok(()) => Json(json!({ "Pins": [cid.to_string()] })).into_response(),
        Err(e) => kubo_error(e.to_string()),
    }
}

/// `POST /api/v0/block/stat?arg=<cid>`: the block's size, if it is here.
async fn kubo_block_stat(State(s): State<AppState>, Query(q): Query<Arg>) -> Response {
    let cid = match cid_arg(&q) {
        Ok(c) => c,
        Err(e) => return kubo_bad_request(e),
    };
    match s.content.cat(cid).await {
        Ok(b) => Json(json!({ "Key": cid.to_string(), "Size": b.len() })).into_response(),
        Err(e) => kubo_error(e.to_string()),
    }
}
