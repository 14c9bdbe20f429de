//! The portal's HTTP rules without a farm: only this machine's address and
//! the portal's token are answered, every wrong entry gets an error naming
//! it, keys are created once and never overwritten, and a wrong password or
//! an unreachable coordinator say so.

use medrollup_client::keystore::{KdfParams, Keystore};
use medrollup_client::portal::{Portal, TOKEN_HEADER, serve as serve_portal};
use medrollup_client::session::Endpoints;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

struct Served {
    portal: Arc<Portal>,
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Served {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut r =
            self.http.request(method, format!("{}{path}", self.base)).header(TOKEN_HEADER, &self.token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
}

fn error(v: &Value) -> &str {
    v["error"].as_str().unwrap_or_else(|| panic!("no error message in {v}"))
}

/// A portal whose coordinator is a closed port.
async fn serve(keystore: std::path::PathBuf) -> Served {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let coordinator = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    serve_with(keystore, coordinator, medrollup_client::portal::DEFAULT_IDLE_LOCK).await
}

/// A portal with `coordinator` that locks its keys after `idle`.
async fn serve_with(keystore: std::path::PathBuf, coordinator: String, idle: Duration) -> Served {
    serve_with_l1(keystore, coordinator, "http://127.0.0.1:9".into(), idle).await
}

/// [`serve_with`], with the L1 node at `l1_rpc`.
async fn serve_with_l1(
    keystore: std::path::PathBuf,
    coordinator: String,
    l1_rpc: String,
    idle: Duration,
) -> Served {
    let endpoints = Endpoints {
        coordinator,
        ipfs_api: None,
        l1_rpc,
        rollup: alloy::primitives::Address::ZERO,
        l1_wait: Duration::from_secs(1),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let portal =
        Arc::new(Portal::new(keystore, 10, endpoints, addr).with_kdf(KdfParams::MIN).with_idle_lock(idle));
    let token = portal.token().to_string();
    assert_eq!(portal.url(), format!("http://{addr}/#token={token}"));
    tokio::spawn(serve_portal(listener, portal.clone(), std::future::pending()));
    Served { portal, base: format!("http://{addr}"), token, http: reqwest::Client::new() }
}

#[tokio::test]
async fn only_this_machine_and_the_token_are_answered() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path().join("keys.json")).await;

    // The page itself needs no token, and forbids framing and foreign scripts.
    let page = s.http.get(format!("{}/", s.base)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    assert!(page.text().await.unwrap().contains("src=\"/app.js\""));

    // No token, a wrong one: refused, saying where to get it.
    let r = s.http.get(format!("{}/api/state", s.base)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(error(&r.json().await.unwrap()).contains("portal token"));
    for wrong in ["00".to_string(), "0".repeat(s.token.len())] {
        let r = s.http.get(format!("{}/api/state", s.base)).header(TOKEN_HEADER, wrong).send().await.unwrap();
        assert_eq!(r.status(), 401);
    }

    // A name re-pointed at this machine (DNS rebinding) is refused, token or not.
    let r = s
        .http
        .get(format!("{}/api/state", s.base))
        .header(TOKEN_HEADER, &s.token)
        .header("host", "evil.example:80")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(error(&r.json().await.unwrap()).contains("\"evil.example:80\""));

    // The portal's own names for itself are answered; another port is not.
    let port = s.base.rsplit(':').next().unwrap().to_string();
    for (host, status) in [(format!("localhost:{port}"), 200), ("127.0.0.1:1".to_string(), 403)] {
        let r = s
            .http
            .get(format!("{}/api/state", s.base))
            .header(TOKEN_HEADER, &s.token)
            .header("host", &host)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "Host: {host}");
    }

    let (status, v) = s.get("/api/state").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!((v["account"].as_u64(), v["keystore"].as_str()), (Some(10), Some("none")));
    let r = s.http.get(format!("{}/api/state", s.base)).header(TOKEN_HEADER, &s.token).send().await.unwrap();
    assert_eq!(r.headers()["cache-control"], "no-store", "answers about the user are not cached");
    let (status, v) = s.get("/api/nothing-here").await;
    assert_eq!((status, error(&v)), (404, "no such API call"));
    // What axum answers itself is JSON too.
    let (status, v) = s.call(reqwest::Method::DELETE, "/api/consents", None).await;
    assert_eq!((status, error(&v)), (405, "this API call does not take that method"));
    let big = json!({ "patient": "10", "bundle": "x".repeat(17 << 20) });
    let (status, v) = s.post("/api/records", big).await;
    assert_eq!(status, 413, "{v}");
    assert!(error(&v).contains("over the portal's 16 MiB limit"), "{v}");
}

#[tokio::test]
async fn wrong_entries_get_errors_that_name_them_and_keys_are_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.json");
    let s = serve(path.clone()).await;

    // Before there are keys.
    let (status, v) = s.post("/api/unlock", json!({ "password": "whatever1" })).await;
    assert_eq!((status, error(&v)), (404, "you have no keys yet: create them first"));
    let (status, v) = s.get("/api/public-keys").await;
    assert_eq!(status, 404, "{v}");
    let (status, v) = s.get("/api/records").await;
    assert_eq!(status, 423);
    assert!(error(&v).contains("locked"), "{v}");

    // Entries checked before anything is done, each naming what was wrong.
    let cases = [
        ("/api/keys", json!({ "password": "short", "confirm": "short" }), "at least 8 characters"),
        (
            "/api/keys",
            json!({ "password": "long enough", "confirm": "long enouhg" }),
            "the two passwords differ",
        ),
        ("/api/keys", json!({ "pasword": "long enough" }), "unknown field `pasword`"),
        ("/api/consents", json!({ "grantee": "dr. house" }), "grantee: \"dr. house\" is not a number"),
        ("/api/consents", json!({ "grantee": "" }), "grantee is missing"),
        ("/api/consents", json!({ "grantee": "20", "days": "0" }), "days: 0 is not from 1 to 3650"),
        ("/api/consents", json!({ "grantee": "20", "record": "x1" }), "record: \"x1\" is not a number"),
        ("/api/consents", json!({ "grantee": "10" }), "cannot grant access to yourself"),
        ("/api/records", json!({ "patient": "ten", "bundle": "{}" }), "patient: \"ten\" is not a number"),
        ("/api/records", json!({ "patient": "10" }), "missing field `bundle`"),
        ("/api/records/abc/emergency", json!({ "reason": "x" }), "record: \"abc\" is not a number"),
        (
            "/api/records/5/emergency",
            json!({ "reason": " " }),
            "reason: an emergency access needs a stated reason",
        ),
    ];
    for (path, body, says) in cases {
        let (status, v) = s.post(path, body.clone()).await;
        assert_eq!(status, 400, "{path} {body}: {v}");
        assert!(error(&v).contains(says), "{path} {body}: {v}");
    }
    let r = s
        .http
        .post(format!("{}/api/keys", s.base))
        .header(TOKEN_HEADER, &s.token)
        .body("{ not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(error(&r.json().await.unwrap()).contains("the create-keys request is not what it takes"));
    assert!(!path.exists(), "no keys from refused requests");

    // Keys are created (the coordinator is down, so the session is not
    // opened, and the page is told why), then never overwritten.
    let (status, v) =
        s.post("/api/keys", json!({ "password": "long enough", "confirm": "long enough" })).await;
    assert_eq!(status, 502, "{v}");
    assert!(error(&v).contains("does not answer"), "{v}");
    assert!(error(&v).starts_with("your keys are created and saved, but not unlocked"), "{v}");
    let written = std::fs::read(&path).unwrap();
    let (status, v) =
        s.post("/api/keys", json!({ "password": "another one", "confirm": "another one" })).await;
    assert_eq!(status, 409, "{v}");
    assert!(error(&v).contains("nothing was overwritten"), "{v}");
    assert_eq!(std::fs::read(&path).unwrap(), written);
    Keystore::read(&path).unwrap().open("long enough").expect("the keys open with the page's password");
    let (_, v) = s.get("/api/state").await;
    assert_eq!(v["keystore"], "locked");

    // The public part, for a hospital; a wrong password; the right one with
    // the coordinator down.
    let (status, v) = s.get("/api/public-keys").await;
    assert_eq!(status, 200);
    assert_eq!(v, serde_json::to_value(&Keystore::read(&path).unwrap().public).unwrap());
    let (status, v) = s.post("/api/unlock", json!({ "password": "not it at all" })).await;
    assert_eq!((status, error(&v)), (401, "wrong password for this keystore"));
    let (status, v) = s.post("/api/unlock", json!({ "password": "long enough" })).await;
    assert_eq!(status, 502);
    assert!(error(&v).contains("the coordinator at http://127.0.0.1:"), "{v}");
}

/// A coordinator that answers only `GET /root`: enough to open a session.
async fn root_only() -> String {
    let root =
        || async { axum::Json(json!({ "root": "0", "batches_sealed": 0, "instance": "1", "capacity": 16 })) };
    let app = axum::Router::new().route("/root", axum::routing::get(root));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test]
async fn unlocked_keys_lock_again_once_the_page_goes_unused() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve_with(dir.path().join("keys.json"), root_only().await, Duration::from_millis(1500)).await;
    let (status, v) =
        s.post("/api/keys", json!({ "password": "long enough", "confirm": "long enough" })).await;
    assert_eq!(status, 200, "{v}");
    let keystore = || async { s.get("/api/state").await.1["keystore"].as_str().unwrap().to_string() };
    assert_eq!(keystore().await, "open");
    // In use (a request every half second): open past the bound.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(s.get("/api/public-keys").await.0, 200);
    }
    assert_eq!(keystore().await, "open");
    // Only polled for its state, as an unattended page is: locked.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        keystore().await;
    }
    assert_eq!(keystore().await, "locked");
    let (status, v) = s.get("/api/records").await;
    assert_eq!(status, 423, "{v}");
    // Unlocked again, it is open again.
    let (status, v) = s.post("/api/unlock", json!({ "password": "long enough" })).await;
    assert_eq!((status, keystore().await.as_str()), (200, "open"), "{v}");
    // With no page left to ask, the keys are locked all the same.
    assert!(s.portal.is_unlocked().await);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(!s.portal.is_unlocked().await, "locked with no request");
}

/// An L1 node that takes connections and never answers.
async fn silent_node() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_state_poll_waiting_for_l1_holds_up_no_flow() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(
        serve_with_l1(
            dir.path().join("keys.json"),
            root_only().await,
            silent_node().await,
            medrollup_client::portal::DEFAULT_IDLE_LOCK,
        )
        .await,
    );
    // The first poll waits (5 s) for L1's word on a verifier upgrade, kept
    // for the next polls.
    assert_eq!(s.get("/api/state").await.1["verifier_upgrade"], Value::Null);
    let (status, v) =
        s.post("/api/keys", json!({ "password": "long enough", "confirm": "long enough" })).await;
    assert_eq!(status, 200, "{v}");
    // The page's poll asks L1 for the role: no answer comes.
    let poll = tokio::spawn({
        let s = s.clone();
        async move { s.get("/api/state").await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!poll.is_finished());
    // Meanwhile a flow (locking the keys) runs at once, and another tab's
    // poll does not see the keys busy.
    let t = std::time::Instant::now();
    let (status, v) = s.post("/api/lock", json!({})).await;
    assert_eq!((status, v["keystore"].as_str()), (200, Some("locked")), "{v}");
    assert!(t.elapsed() < Duration::from_secs(2), "the lock waited {:?} for the poll", t.elapsed());
    let (_, other) = s.get("/api/state").await;
    assert_eq!(
        (other["busy"].as_bool(), other["keystore"].as_str()),
        (Some(false), Some("locked")),
        "{other}"
    );
    // The poll ends by saying why it has no role.
    let (status, v) = poll.await.unwrap();
    assert_eq!(status, 200, "{v}");
    assert!(v["role_error"].as_str().is_some_and(|e| e.contains("asking again")), "{v}");
}
