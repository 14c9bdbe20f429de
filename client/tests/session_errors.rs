//! What a session says when the coordinator fails after accepting a
//! transaction: the error must not read as a refusal, or the user sends it
//! again (a second record, a second grant).

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use medrollup_circuits::field::fr_to_dec;
use medrollup_circuits::sample;
use medrollup_circuits::state::{State as RollupState, TreeId};
use medrollup_client::keystore::Identity;
use medrollup_client::session::{ClientError, Endpoints, Session};
use medrollup_wire::{TxAnswer, TxStatus};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// `GET /root` of a coordinator at `st`, nothing sealed.
fn root_of(st: &RollupState) -> Json<Value> {
    Json(json!({
        "root": fr_to_dec(&st.root()), "batches_sealed": 0,
        "instance": fr_to_dec(&st.instance()), "capacity": st.capacity(),
    }))
}

/// `GET /proof/accounts/{index}` of a coordinator at `st`.
fn account_of(st: &RollupState, index: u64) -> Json<Value> {
    Json(json!({
        "tree": TreeId::Accounts, "index": index,
        "leaf": st.leaf(TreeId::Accounts, index).iter().map(fr_to_dec).collect::<Vec<_>>(),
        "path": st.path(TreeId::Accounts, index),
        "tree_roots": st.roots().iter().map(fr_to_dec).collect::<Vec<_>>(),
        "audit_count": st.audit_count(), "root": fr_to_dec(&st.root()), "batches_sealed": 0,
    }))
}

/// A coordinator that answers `/root` and account leaves from the sample
/// genesis, accepts every transaction into batch 0, and stops answering
/// `/root` once it has.
async fn accepts_then_fails() -> String {
    type Fake = (Arc<RollupState>, Arc<AtomicBool>);
    async fn root(State((st, gone)): State<Fake>) -> Result<Json<Value>, axum::http::StatusCode> {
        if gone.load(Ordering::SeqCst) {
            return Err(axum::http::StatusCode::SERVICE_UNAVAILABLE);
        }
        Ok(root_of(&st))
    }
    async fn account(State((st, _)): State<Fake>, Path(index): Path<u64>) -> Json<Value> {
        account_of(&st, index)
    }
    async fn tx(State((_, gone)): State<Fake>, body: axum::body::Bytes) -> Json<TxAnswer> {
        gone.store(true, Ordering::SeqCst);
        Json(TxAnswer {
            id: medrollup_wire::tx_id(&body),
            status: TxStatus::Accepted { batch: 0, position: 0 },
        })
    }
    let st = Arc::new(RollupState::genesis(&sample::genesis(5)).unwrap());
    let app = Router::new()
        .route("/root", get(root))
        .route("/proof/accounts/{index}", get(account))
        .route("/tx", post(tx))
        .with_state((st, Arc::new(AtomicBool::new(false))));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// A node whose rollup is at genesis with the sample's root: it answers
/// the two calls a light client makes of it then (`batchCount`,
/// `genesisRoot`).
async fn genesis_node() -> String {
    use alloy::sol_types::SolCall;
    use medrollup_l1::contracts::MedRollup;
    async fn rpc(State(root): State<[u8; 32]>, Json(req): Json<Value>) -> Json<Value> {
        let data = req["params"][0]["data"].as_str().or(req["params"][0]["input"].as_str()).unwrap_or("");
        let selector = hex::decode(data.trim_start_matches("0x").get(..8).unwrap_or("")).unwrap_or_default();
        let word = if selector == MedRollup::batchCountCall::SELECTOR {
            [0u8; 32]
        } else if selector == MedRollup::genesisRootCall::SELECTOR {
            root
        } else {
            return Json(
                json!({ "jsonrpc": "2.0", "id": req["id"], "error": { "code": -32601, "message": "not here" } }),
            );
        };
        Json(json!({ "jsonrpc": "2.0", "id": req["id"], "result": format!("0x{}", hex::encode(word)) }))
    }
    let st = RollupState::genesis(&sample::genesis(5)).unwrap();
    let root = medrollup_l1::submitter::root_word(&st.root()).0;
    let app = Router::new().route("/", post(rpc)).with_state(root);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

#[tokio::test]
async fn a_transaction_accepted_before_the_coordinator_failed_is_said_to_stand() {
    let endpoints = Endpoints {
        coordinator: accepts_then_fails().await,
        ipfs_api: None,
        l1_rpc: genesis_node().await,
        rollup: alloy::primitives::Address::ZERO,
        l1_wait: Duration::from_secs(1),
    };
    let mut s = Session::open(&endpoints, 10, Identity::generate()).await.unwrap();
    let body = medrollup_circuits::tx::TxBody::Revoke { consent: 5 };
    assert_eq!(s.submit(body).await.unwrap(), 0, "accepted into batch 0");
    let e = s.settle().await.unwrap_err();
    assert!(matches!(e, ClientError::Coordinator { .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains("accepted into batch 0 and stands: do not send it again"), "{text}");
}

/// Payloads a [`loses_first_answers`] coordinator was sent, in order.
type Posted = Arc<std::sync::Mutex<Vec<Value>>>;

/// A coordinator like [`accepts_then_fails`]'s (without failing) that
/// accepts every transaction into batch 0 but loses the answer to the
/// first post of each (503, as when the bus's acknowledgement is lost);
/// a transaction posted again is a duplicate of itself.
async fn loses_first_answers() -> (String, Posted) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let posted = Posted::default();
    serve_losing(listener, posted.clone());
    (url, posted)
}

/// Serves [`loses_first_answers`]'s coordinator on `listener`, noting
/// posts in `posted`; stops when the task is aborted.
fn serve_losing(listener: tokio::net::TcpListener, posted: Posted) -> tokio::task::JoinHandle<()> {
    type Fake = (Arc<RollupState>, Posted);
    async fn root(State((st, _)): State<Fake>) -> Json<Value> {
        root_of(&st)
    }
    async fn account(State((st, _)): State<Fake>, Path(index): Path<u64>) -> Json<Value> {
        account_of(&st, index)
    }
    async fn tx(State((_, posted)): State<Fake>, body: axum::body::Bytes) -> axum::response::Response {
        use axum::response::IntoResponse;
        let id = medrollup_wire::tx_id(&body);
        let tx: Value = serde_json::from_slice(&body).unwrap();
        let mut seen = posted.lock().unwrap();
        let again = seen.iter().any(|p| p["id"] == id.as_str());
        seen.push(json!({ "id": id, "tx": tx }));
        if again {
            Json(TxAnswer { id, status: TxStatus::Duplicate { batch: 0 } }).into_response()
        } else {
            let lost = json!({ "error": "the transaction may or may not have been queued" });
            (axum::http::StatusCode::SERVICE_UNAVAILABLE, Json(lost)).into_response()
        }
    }
    let st = Arc::new(RollupState::genesis(&sample::genesis(5)).unwrap());
    let app = Router::new()
        .route("/root", get(root))
        .route("/proof/accounts/{index}", get(account))
        .route("/tx", post(tx))
        .with_state((st, posted));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() })
}

#[tokio::test]
async fn a_transaction_whose_answer_was_lost_goes_again_as_itself_before_any_other() {
    let (coordinator, posted) = loses_first_answers().await;
    let endpoints = Endpoints {
        coordinator,
        ipfs_api: None,
        l1_rpc: genesis_node().await,
        rollup: alloy::primitives::Address::ZERO,
        l1_wait: Duration::from_secs(1),
    };
    let mut s = Session::open(&endpoints, 10, Identity::generate()).await.unwrap();
    let revoke = medrollup_circuits::tx::TxBody::Revoke { consent: 5 };
    let ids =
        || posted.lock().unwrap().iter().map(|p| p["id"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    let nonces =
        || posted.lock().unwrap().iter().map(|p| p["tx"]["nonce"].as_u64().unwrap()).collect::<Vec<_>>();

    // The answer is lost: not a refusal, the transaction may stand.
    let e = s.submit(revoke.clone()).await.unwrap_err();
    assert!(matches!(e, ClientError::Unsettled { .. }), "{e}");
    assert!(e.to_string().contains("may stand"), "{e}");
    // Sent again (a retry): the very same bytes, found to stand; one
    // transaction, not two.
    assert_eq!(s.submit(revoke.clone()).await.unwrap(), 0);
    assert_eq!(ids().len(), 2);
    assert_eq!(ids()[0], ids()[1], "the same transaction");
    assert!(s.journal().iter().all(|j| j.id == ids()[0] && j.batch == Some(0)), "{:?}", s.journal());

    // Lost again, then another transaction: the first goes again and
    // stands, so the other is not sent.
    let grant_like = medrollup_circuits::tx::TxBody::Revoke { consent: 6 };
    let e = s.submit(revoke.clone()).await.unwrap_err();
    assert!(matches!(e, ClientError::Unsettled { .. }), "{e}");
    let e = s.submit(grant_like.clone()).await.unwrap_err();
    assert!(matches!(e, ClientError::EarlierStood { batch: 0, .. }), "{e}");
    assert!(e.to_string().contains("was not sent"), "{e}");
    let ids_now = ids();
    assert_eq!(ids_now.len(), 4);
    assert_eq!(ids_now[2], ids_now[3], "only the earlier one went again");
    // Asked once more, it goes, at the next nonce.
    let e = s.submit(grant_like).await.unwrap_err();
    assert!(matches!(e, ClientError::Unsettled { .. }), "its own first answer lost: {e}");
    let n = nonces();
    assert_eq!(n, vec![n[0], n[0], n[0] + 1, n[0] + 1, n[0] + 2], "each transaction at its own nonce");
}

#[tokio::test]
async fn a_lost_answer_is_kept_through_a_coordinator_that_cannot_be_reached() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let posted = Posted::default();
    let server = serve_losing(listener, posted.clone());
    let endpoints = Endpoints {
        coordinator: format!("http://{addr}"),
        ipfs_api: None,
        l1_rpc: genesis_node().await,
        rollup: alloy::primitives::Address::ZERO,
        l1_wait: Duration::from_secs(1),
    };
    let mut s = Session::open(&endpoints, 10, Identity::generate()).await.unwrap();
    let first = medrollup_circuits::tx::TxBody::Revoke { consent: 5 };
    let other = medrollup_circuits::tx::TxBody::Revoke { consent: 6 };
    let e = s.submit(first).await.unwrap_err();
    assert!(matches!(e, ClientError::Unsettled { .. }), "{e}");

    // The coordinator down: the earlier one cannot go again, so the other
    // is not sent, and the earlier one is kept.
    server.abort();
    let _ = server.await;
    let e = s.submit(other.clone()).await.unwrap_err();
    assert!(e.to_string().contains("could not be settled") && e.to_string().contains("was not sent"), "{e}");
    assert_eq!(posted.lock().unwrap().len(), 1);

    // Back up: the earlier one goes first, stands, and the other is not sent.
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let _server = serve_losing(listener, posted.clone());
    let e = s.submit(other).await.unwrap_err();
    assert!(matches!(e, ClientError::EarlierStood { batch: 0, .. }), "{e}");
    let ids: Vec<Value> = posted.lock().unwrap().iter().map(|p| p["id"].clone()).collect();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], ids[1], "the earlier one, sent again as itself");
}
