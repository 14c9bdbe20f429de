//! The patients' and doctors' web page: `medrollup-client portal` serves it
//! from the user's own machine, over this library.
//!
//! The keys never leave the process that serves the page: the browser sends
//! a password to unlock the keystore and asks for flows (grant, revoke, add a
//! FHIR bundle, read a record, ...); the portal runs them as a [`Session`]
//! and answers with what L1 backs. The page is three static files built into
//! the binary (no framework, no build step); it writes untrusted text (record
//! bundles, error messages) with `textContent` only.
//!
//! Only this machine may use it, and only the page it serves:
//! - it listens on a loopback address (the CLI refuses any other);
//! - every request must name that address in its `Host` header, so a web
//!   page whose name was re-pointed at 127.0.0.1 (DNS rebinding) is refused;
//! - every `/api` request must carry the portal's random token in the
//!   `x-medrollup-token` header. The token is in the URL's fragment that
//!   the CLI prints (a fragment is never sent to a server); another site's
//!   page can neither read it nor send a custom header here (that needs a
//!   CORS preflight, which the portal never grants).
//!
//! Numbers arrive as the strings the user typed and are checked here, so a
//! wrong entry gets an error naming the field; every error is
//! `{"error": "..."}` with a status that says its kind.

use crate::envelope::RecordError;
use crate::keystore::{Identity, KdfParams, Keystore, KeystoreError};
use crate::session::{ClientError, Endpoints, Session};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use medrollup_circuits::state::{AUDIT_EMERGENCY, Role};
use medrollup_circuits::tx::{ConsentTarget, Scope};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::{Mutex, OwnedMutexGuard};

/// The header that carries the portal's token.
pub const TOKEN_HEADER: &str = "x-medrollup-token";
/// The largest request body (a FHIR bundle with attachments).
pub const MAX_BODY: usize = 16 << 20;
/// The shortest password a new keystore takes.
pub const MIN_PASSWORD: usize = 8;
/// How long `/api/state` waits for L1 to say whether the account is
/// registered (the page asks again).
const ROLE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long `/api/state` reuses its read of a proposed verifier (the page
/// polls every 20 s; several tabs share one read).
const UPGRADE_TTL: std::time::Duration = std::time::Duration::from_secs(15);
/// How long that read may take (a dead node must not hold up the page).
const UPGRADE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

const INDEX_HTML: &str = include_str!("../web/index.html");
const APP_JS: &str = include_str!("../web/app.js");
const STYLE_CSS: &str = include_str!("../web/style.css");
const CSP: &str = "default-src 'self'; connect-src 'self'; img-src 'self' data:; object-src 'none'; \
                   base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One user's portal: their keystore, account and endpoints, and (once
/// unlocked) their session.
pub struct Portal {
    keystore: PathBuf,
    account: u64,
    endpoints: Endpoints,
    token: String,
    addr: SocketAddr,
    hosts: Vec<String>,
    kdf: KdfParams,
    session: Arc<Mutex<Option<Session>>>,
    creating: Arc<Mutex<()>>,
    role: std::sync::Mutex<Option<Role>>,
    /// Unlocked keys are locked again after this long with no request
    /// from the page (its polls for the state do not count).
    idle_lock: std::time::Duration,
    last_use: std::sync::Mutex<std::time::Instant>,
    /// The last read of a verifier proposed on the rollup: when, and what
    /// `/state` shows for it.
    upgrade: Mutex<Option<(std::time::Instant, Value)>>,
}

/// [`Portal::with_idle_lock`] by default.
pub const DEFAULT_IDLE_LOCK: std::time::Duration = std::time::Duration::from_secs(15 * 60);

impl std::fmt::Debug for Portal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Portal")
            .field("keystore", &self.keystore)
            .field("account", &self.account)
            .field("hosts", &self.hosts)
            .finish_non_exhaustive()
    }
}

impl Portal {
    /// A portal for `account` with the keystore at `keystore` (created from
    /// the page if it is missing), served at `addr`, with a fresh token.
    pub fn new(keystore: PathBuf, account: u64, endpoints: Endpoints, addr: SocketAddr) -> Self {
        let port = addr.port();
        let mut hosts =
            vec![format!("127.0.0.1:{port}"), format!("localhost:{port}"), format!("[::1]:{port}")];
        if !hosts.contains(&addr.to_string()) {
            hosts.push(addr.to_string());
        }
        if port == 80 {
            // Browsers leave the default port out of `Host`.
            let bare: Vec<String> =
                hosts.iter().filter_map(|h| h.strip_suffix(":80").map(String::from)).collect();
            hosts.extend(bare);
        }
        Self {
            keystore,
            account,
            endpoints,
            token: hex::encode(crate::keystore::random::<32>()),
            addr,
            hosts,
            kdf: KdfParams::DEFAULT,
            session: Arc::new(Mutex::new(None)),
            creating: Arc::new(Mutex::new(())),
            role: std::sync::Mutex::new(None),
            idle_lock: DEFAULT_IDLE_LOCK,
            last_use: std::sync::Mutex::new(std::time::Instant::now()),
            upgrade: Mutex::new(None),
        }
    }

    /// Locks unlocked keys after `idle` with no request from the page (a
    /// screen left open with a record on it does not stay readable).
    pub fn with_idle_lock(mut self, idle: std::time::Duration) -> Self {
        self.idle_lock = idle;
        self
    }

    fn touch(&self) {
        *self.last_use.lock().unwrap_or_else(|e| e.into_inner()) = std::time::Instant::now();
    }

    /// Locks the keys if the page has been idle past the bound (not while
    /// a flow runs: that is use).
    fn lock_if_idle(&self) {
        let idle = self.last_use.lock().unwrap_or_else(|e| e.into_inner()).elapsed();
        if idle < self.idle_lock {
            return;
        }
        if let Ok(mut g) = self.session.clone().try_lock_owned()
            && g.is_some()
        {
            *g = None;
            eprintln!("keys locked after {} s with no use of the page", idle.as_secs());
        }
    }

    /// Waits until no flow runs: each holds the session (or, creating keys,
    /// the creation lock) until it ends, even with its page gone.
    pub async fn flows_finished(&self) {
        let _session = self.session.lock().await;
        let _creating = self.creating.lock().await;
    }

    /// Whether the keys are unlocked (waits for a running flow).
    pub async fn is_unlocked(&self) -> bool {
        self.session.lock().await.is_some()
    }

    /// Keys the page creates get these KDF settings (tests use cheaper ones).
    pub fn with_kdf(mut self, kdf: KdfParams) -> Self {
        self.kdf = kdf;
        self
    }

    /// The token `/api` requests must carry.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The address to open in a browser (the token in its fragment).
    pub fn url(&self) -> String {
        format!("http://{}/#token={}", self.addr, self.token)
    }
}

/// Serves the portal on `listener` until `shutdown`, then waits for a
/// running flow to finish, however long ago its page was closed (a revoke
/// stopped between its transaction and its re-keying would leave the
/// revoked reader's key good). Meanwhile unlocked keys are locked once the
/// page has gone unused past the idle bound, whether or not a page still
/// asks.
pub async fn serve(
    listener: tokio::net::TcpListener,
    portal: Arc<Portal>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let watch = {
        let p = portal.clone();
        let every = (p.idle_lock / 4)
            .clamp(std::time::Duration::from_millis(100), std::time::Duration::from_secs(30));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                p.lock_if_idle();
            }
        })
    };
    let served = axum::serve(listener, router(portal.clone())).with_graceful_shutdown(shutdown).await;
    watch.abort();
    portal.flows_finished().await;
    served
}

/// The portal's routes: the page, and the API under `/api`.
pub fn router(portal: Arc<Portal>) -> Router {
    let api = Router::new()
        .route("/state", get(state))
        .route("/keys", post(create_keys))
        .route("/public-keys", get(public_keys))
        .route("/unlock", post(unlock))
        .route("/lock", post(lock))
        .route("/register", post(register))
        .route("/records", get(records).post(add_record))
        .route("/records/{id}", get(read_record).put(update_record).delete(delete_record))
        .route("/records/{id}/emergency", post(emergency))
        .route("/consents", get(consents).post(grant))
        .route("/consents/{id}/revoke", post(revoke))
        .route("/consents/{id}/share", post(share))
        .route("/audit", get(audit))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such API call") })
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn_with_state(portal.clone(), require_token));
    Router::new()
        .route("/", get(|| async { page("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/app.js", get(|| async { page("text/javascript; charset=utf-8", APP_JS) }))
        .route("/style.css", get(|| async { page("text/css; charset=utf-8", STYLE_CSS) }))
        .nest("/api", api)
        .layer(middleware::from_fn_with_state(portal.clone(), require_host))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(portal)
}

fn page(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    r
}

async fn require_host(State(p): State<Arc<Portal>>, req: Request, next: Next) -> Response {
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    if !p.hosts.iter().any(|h| h == host) {
        let msg = format!("this portal answers only to {} (the request was for {host:?})", p.hosts[0]);
        return ApiError::new(StatusCode::FORBIDDEN, msg).into_response();
    }
    next.run(req).await
}

async fn require_token(State(p): State<Arc<Portal>>, req: Request, next: Next) -> Response {
    let given = req.headers().get(TOKEN_HEADER).map(|v| v.as_bytes()).unwrap_or(b"");
    if !same(given, p.token.as_bytes()) {
        let msg = "a missing or wrong portal token: open the address `medrollup-client portal` printed";
        return ApiError::new(StatusCode::UNAUTHORIZED, msg).into_response();
    }
    // The page polls the state to notice a lock: that is not use.
    let poll = req.method() == axum::http::Method::GET && req.uri().path().ends_with("/state");
    p.lock_if_idle();
    if !poll {
        p.touch();
    }
    let mut r = next.run(req).await;
    if !poll {
        p.touch(); // a long flow counts as use until it ends
    }
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Errors that axum itself answers (a body over the limit, a method a call
/// does not take, ...) as `{"error": ...}` too, like every other.
async fn json_errors(req: Request, next: Next) -> Response {
    let r = next.run(req).await;
    let json =
        r.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let status = r.status();
    if status.is_success() || json {
        return r;
    }
    let text = axum::body::to_bytes(r.into_body(), 64 << 10)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = match status {
        StatusCode::PAYLOAD_TOO_LARGE => {
            format!("the request is over the portal's {} MiB limit", MAX_BODY >> 20)
        }
        StatusCode::METHOD_NOT_ALLOWED => "this API call does not take that method".to_string(),
        _ if text.is_empty() => status.canonical_reason().unwrap_or("error").to_string(),
        _ => text,
    };
    ApiError::new(status, message).into_response()
}

/// Equal bytes, compared in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

// ---- errors ------------------------------------------------------------------

/// An API error: a status and a message for the person at the page.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }

    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    fn locked() -> Self {
        Self::new(StatusCode::LOCKED, "your keys are locked: unlock them with your password first")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(json!({ "error": self.message }))).into_response()
    }
}

impl From<ClientError> for ApiError {
    fn from(e: ClientError) -> Self {
        let status = match &e {
            ClientError::Rejected { .. } => StatusCode::CONFLICT,
            ClientError::Refused(_) => StatusCode::FORBIDDEN,
            ClientError::Superseded { .. } | ClientError::Stale { .. } | ClientError::EarlierStood { .. } => {
                StatusCode::CONFLICT
            }
            ClientError::NotFound(_) => StatusCode::NOT_FOUND,
            ClientError::Gone(_) => StatusCode::GONE,
            ClientError::Record(RecordError::NotARecipient(_)) => StatusCode::FORBIDDEN,
            ClientError::Record(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ClientError::Keys(k) => return k.into(),
            ClientError::Coordinator { .. }
            | ClientError::Unsettled { .. }
            | ClientError::Light(_)
            | ClientError::Storage(_)
            | ClientError::ForeignKeys { .. }
            | ClientError::NotApplied { .. }
            | ClientError::Unfinished { .. } => StatusCode::BAD_GATEWAY,
        };
        Self::new(status, e.to_string())
    }
}

impl From<&KeystoreError> for ApiError {
    fn from(e: &KeystoreError) -> Self {
        let status = match e {
            KeystoreError::WrongPassword => StatusCode::UNAUTHORIZED,
            KeystoreError::Invalid(_) => StatusCode::BAD_REQUEST,
            KeystoreError::Exists(_) => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, e.to_string())
    }
}

impl From<KeystoreError> for ApiError {
    fn from(e: KeystoreError) -> Self {
        (&e).into()
    }
}

type Api = Result<axum::Json<Value>, ApiError>;

fn ok(v: Value) -> Api {
    Ok(axum::Json(v))
}

/// A JSON body of `what`, or an error that says what was wrong with it.
fn body<T: DeserializeOwned>(what: &str, bytes: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad(format!("the {what} request is not what it takes: {e}")))
}

/// A whole number the user typed into `field`.
fn number(field: &str, typed: &str) -> Result<u64, ApiError> {
    let t = typed.trim();
    if t.is_empty() {
        return Err(ApiError::bad(format!("{field} is missing")));
    }
    t.parse().map_err(|_| ApiError::bad(format!("{field}: {t:?} is not a number (a whole number, like 20)")))
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Patient => "patient",
        Role::Doctor => "doctor",
        Role::Hospital => "hospital",
    }
}

// ---- the session ---------------------------------------------------------------

type Guard = OwnedMutexGuard<Option<Session>>;

/// Waits for the session (one flow at a time).
async fn session(p: &Portal) -> Guard {
    p.session.clone().lock_owned().await
}

fn unlocked(g: &mut Guard) -> Result<&mut Session, ApiError> {
    g.as_mut().ok_or_else(ApiError::locked)
}

/// Runs a flow in a task of its own, so that a page reloaded or closed
/// while it waits for L1 does not cut it short: a revoke stopped between its
/// transaction and the re-keying would leave the revoked reader's key good.
async fn detach<T: Send + 'static>(
    flow: impl Future<Output = Result<T, ApiError>> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::spawn(flow)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("the flow failed: {e}")))?
}

fn cached_role(p: &Portal) -> Option<Role> {
    *p.role.lock().unwrap_or_else(|e| e.into_inner())
}

fn cache_role(p: &Portal, role: Option<Role>) {
    // A role, once on L1, never changes; "not registered" is asked again.
    if role.is_some() {
        *p.role.lock().unwrap_or_else(|e| e.into_inner()) = role;
    }
}

// ---- keys ----------------------------------------------------------------------

/// A verifier proposed on the rollup and not installed yet, as `/state`
/// shows it (`null`: none, or L1 could not say; the rest of the page tells
/// of an unreachable node). The rollup's owner announces a new verifier
/// before installing it, so that everyone can see the rules change.
async fn verifier_upgrade(p: &Portal) -> Value {
    let mut seen = p.upgrade.lock().await;
    if let Some((at, v)) = seen.as_ref()
        && at.elapsed() < UPGRADE_TTL
    {
        return v.clone();
    }
    let read = async {
        let l1 = medrollup_l1::submitter::connect_read_only_within(&p.endpoints.l1_rpc, UPGRADE_WAIT).ok()?;
        medrollup_l1::submitter::governance(&l1, p.endpoints.rollup).await.ok()
    };
    let v = match tokio::time::timeout(UPGRADE_WAIT, read).await {
        Ok(Some(g)) => g.proposed.map_or(Value::Null, |u| {
            json!({ "verifier": u.verifier.to_string(), "vk_sha256": u.vk_sha256, "activation": u.activation })
        }),
        _ => Value::Null,
    };
    *seen = Some((std::time::Instant::now(), v.clone()));
    v
}

async fn state(State(p): State<Arc<Portal>>) -> Api {
    let mut v = json!({
        "account": p.account,
        "keystore": if p.keystore.exists() { "locked" } else { "none" },
        "role": null,
        "role_error": null,
        "account_error": null,
        "busy": false,
        "max_body": MAX_BODY,
        "coordinator": p.endpoints.coordinator,
        "rollup": p.endpoints.rollup.to_string(),
        "l1_rpc": p.endpoints.l1_rpc,
        "verifier_upgrade": verifier_upgrade(&p).await,
    });
    let known = cached_role(&p);
    match p.session.clone().try_lock_owned() {
        // A flow is running (another tab, or one this page lost): the keys
        // are open; the page waits.
        Err(_) => {
            v["keystore"] = "open".into();
            v["busy"] = true.into();
            v["role"] = known.map(role_name).into();
        }
        Ok(g) => {
            // The role is asked without the session: a flow from this page
            // or another tab need not wait for L1 with the poll.
            let query = g.as_ref().map(|s| s.role_query());
            drop(g);
            if let Some(query) = query {
                v["keystore"] = "open".into();
                let role = match known {
                    Some(r) => Ok(Some(r)),
                    None => match tokio::time::timeout(ROLE_WAIT, query.run()).await {
                        // Registered to other keys: asking again changes nothing.
                        Ok(Err(ClientError::Refused(e))) => {
                            v["account_error"] = e.into();
                            return ok(v);
                        }
                        Ok(r) => r.map_err(|e| e.to_string()),
                        Err(_) => Err(format!(
                            "L1 has not reached the coordinator's state within {} s; asking again",
                            ROLE_WAIT.as_secs()
                        )),
                    },
                };
                match role {
                    Ok(r) => {
                        cache_role(&p, r);
                        v["role"] = r.map(role_name).into();
                    }
                    Err(e) => v["role_error"] = e.into(),
                }
            }
        }
    }
    ok(v)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Password {
    password: String,
    #[serde(default)]
    confirm: Option<String>,
}

impl Drop for Password {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.password);
        if let Some(c) = &mut self.confirm {
            zeroize::Zeroize::zeroize(c);
        }
    }
}

fn keys_exist(p: &Portal) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        format!("there are keys at {} already: unlock them (nothing was overwritten)", p.keystore.display()),
    )
}

async fn create_keys(State(p): State<Arc<Portal>>, bytes: Bytes) -> Api {
    let req: Password = body("create-keys", &bytes)?;
    if p.keystore.exists() {
        return Err(keys_exist(&p));
    }
    if req.password.chars().count() < MIN_PASSWORD {
        return Err(ApiError::bad(format!("a password of at least {MIN_PASSWORD} characters, please")));
    }
    if req.confirm.as_deref() != Some(req.password.as_str()) {
        return Err(ApiError::bad("the two passwords differ"));
    }
    // One creation at a time (two tabs): the second finds the first's file.
    let creating = p.creating.clone().lock_owned().await;
    if p.keystore.exists() {
        return Err(keys_exist(&p));
    }
    let (path, kdf) = (p.keystore.clone(), p.kdf);
    let identity = tokio::task::spawn_blocking(move || -> Result<Identity, KeystoreError> {
        let _creating = creating;
        let identity = Identity::generate();
        // Never over another process's keys (a CLI, a second portal).
        Keystore::seal(&identity, &req.password, kdf)?.write_new(&path)?;
        Ok(identity)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| match e {
        KeystoreError::Exists(_) => keys_exist(&p),
        e => e.into(),
    })?;
    // The keys are saved: a coordinator out of reach only leaves them locked.
    open_session(&p, identity).await.map_err(|e| {
        ApiError::new(
            e.status,
            format!(
                "your keys are created and saved, but not unlocked: {} (unlock them once it answers)",
                e.message
            ),
        )
    })?;
    ok(json!({ "keystore": "open", "keystore_path": p.keystore.display().to_string() }))
}

async fn public_keys(State(p): State<Arc<Portal>>) -> Api {
    let ks = Keystore::read(&p.keystore).map_err(|e| match e {
        KeystoreError::Io { .. } if !p.keystore.exists() => {
            ApiError::new(StatusCode::NOT_FOUND, "you have no keys yet: create them first")
        }
        e => e.into(),
    })?;
    ok(serde_json::to_value(&ks.public).expect("public keys serialise"))
}

async fn unlock(State(p): State<Arc<Portal>>, bytes: Bytes) -> Api {
    let req: Password = body("unlock", &bytes)?;
    if !p.keystore.exists() {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "you have no keys yet: create them first"));
    }
    let path = p.keystore.clone();
    let identity = tokio::task::spawn_blocking(move || Keystore::read(&path)?.open(&req.password))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    open_session(&p, identity).await?;
    ok(json!({ "keystore": "open" }))
}

async fn open_session(p: &Portal, identity: Identity) -> Result<(), ApiError> {
    let opened = Session::open(&p.endpoints, p.account, identity).await?;
    *session(p).await = Some(opened);
    Ok(())
}

async fn lock(State(p): State<Arc<Portal>>) -> Api {
    // Waits for a running flow to end: its keys are in use.
    *session(&p).await = None;
    ok(json!({ "keystore": "locked" }))
}

// ---- flows -----------------------------------------------------------------------

async fn register(State(p): State<Arc<Portal>>) -> Api {
    let mut g = session(&p).await;
    let (role, republished) = detach(async move {
        let s = unlocked(&mut g)?;
        match s.my_role().await? {
            // Registered, but maybe its keys never reached the directory (a
            // publish that failed): publish them again.
            Some(r) => {
                s.publish_keys().await?;
                Ok((r, true))
            }
            None => {
                s.register_patient().await?;
                Ok((Role::Patient, false))
            }
        }
    })
    .await?;
    cache_role(&p, Some(role));
    ok(json!({ "role": role_name(role), "republished": republished }))
}

async fn records(State(p): State<Arc<Portal>>) -> Api {
    let mut g = session(&p).await;
    detach(async move {
        let s = unlocked(&mut g)?;
        let out: Vec<Value> = s
            .listed_records()
            .await?
            .into_iter()
            .map(|r| {
                let l = r.leaf;
                json!({
                    "id": r.id, "owner": l.owner, "author": l.author, "version": l.version,
                    "deleted": l.deleted, "consent": r.consent,
                })
            })
            .collect();
        ok(Value::Array(out))
    })
    .await
}

fn read_answer(id: u64, r: crate::session::ReadRecord, emergency: bool) -> Value {
    let bundle = serde_json::from_slice::<Value>(&r.bundle)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&r.bundle).into_owned()));
    json!({
        "id": id, "owner": r.leaf.owner, "author": r.leaf.author, "version": r.leaf.version,
        "cid": r.cid.to_string(), "consent": r.consent, "emergency": emergency, "bundle": bundle,
    })
}

async fn read_record(State(p): State<Arc<Portal>>, UrlPath(id): UrlPath<String>) -> Api {
    let id = number("record", &id)?;
    let mut g = session(&p).await;
    detach(async move {
        let r = unlocked(&mut g)?.read(id).await?;
        ok(read_answer(id, r, false))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Reason {
    reason: String,
}

async fn emergency(State(p): State<Arc<Portal>>, UrlPath(id): UrlPath<String>, bytes: Bytes) -> Api {
    let id = number("record", &id)?;
    let req: Reason = body("emergency-access", &bytes)?;
    if req.reason.trim().is_empty() {
        return Err(ApiError::bad("reason: an emergency access needs a stated reason"));
    }
    let mut g = session(&p).await;
    detach(async move {
        let r = unlocked(&mut g)?.emergency_read(id, &req.reason).await?;
        ok(read_answer(id, r, true))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRecord {
    patient: String,
    bundle: String,
}

async fn add_record(State(p): State<Arc<Portal>>, bytes: Bytes) -> Api {
    let req: NewRecord = body("add-record", &bytes)?;
    let patient = number("patient", &req.patient)?;
    let mut g = session(&p).await;
    detach(async move {
        let record = unlocked(&mut g)?.add_record(patient, req.bundle.as_bytes()).await?;
        ok(json!({ "record": record, "patient": patient }))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewVersion {
    bundle: String,
    /// The version the page showed (and the person edited): a record that
    /// has moved on since is refused, not overwritten.
    #[serde(default)]
    version: Option<u64>,
}

async fn update_record(State(p): State<Arc<Portal>>, UrlPath(id): UrlPath<String>, bytes: Bytes) -> Api {
    let id = number("record", &id)?;
    let req: NewVersion = body("update-record", &bytes)?;
    let mut g = session(&p).await;
    detach(async move {
        let s = unlocked(&mut g)?;
        let cid = s.update_record_from(id, req.version, req.bundle.as_bytes()).await?;
        // The update stands: a read of its version that fails (L1 slow)
        // does not make it a failure.
        let version = s.record(id).await.ok().map(|l| l.version);
        ok(json!({ "record": id, "cid": cid.to_string(), "version": version }))
    })
    .await
}

async fn delete_record(State(p): State<Arc<Portal>>, UrlPath(id): UrlPath<String>) -> Api {
    let id = number("record", &id)?;
    let mut g = session(&p).await;
    detach(async move {
        let cid = unlocked(&mut g)?.delete(id).await?;
        ok(json!({ "record": id, "unpinned": cid.to_string() }))
    })
    .await
}

async fn consents(State(p): State<Arc<Portal>>) -> Api {
    let mut g = session(&p).await;
    detach(async move {
        let s = unlocked(&mut g)?;
        let consents = s.my_consents().await?;
        // L1's clock is asked only if there is a consent to judge.
        let now = if consents.is_empty() { 0 } else { s.now().await? };
        let out: Vec<Value> = consents
            .into_iter()
            .map(|(id, c)| {
                let record = match c.target {
                    ConsentTarget::AllRecords => Value::Null,
                    ConsentTarget::Record(r) => r.into(),
                };
                json!({
                    "id": id, "patient": c.patient, "grantee": c.grantee,
                    "write": c.scope == Scope::ReadWrite, "record": record, "expiry": c.expiry,
                    "revoked": c.revoked, "expired": c.expiry <= now,
                })
            })
            .collect();
        ok(Value::Array(out))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Grant {
    grantee: String,
    #[serde(default)]
    write: bool,
    /// Empty: all records, present and future.
    #[serde(default)]
    record: String,
    /// Empty: 30.
    #[serde(default)]
    days: String,
}

async fn grant(State(p): State<Arc<Portal>>, bytes: Bytes) -> Api {
    let req: Grant = body("grant", &bytes)?;
    let grantee = number("grantee", &req.grantee)?;
    let target = match req.record.trim() {
        "" => ConsentTarget::AllRecords,
        r => ConsentTarget::Record(number("record", r)?),
    };
    let days = match req.days.trim() {
        "" => 30,
        d => number("days", d)?,
    };
    if !(1..=3650).contains(&days) {
        return Err(ApiError::bad(format!("days: {days} is not from 1 to 3650")));
    }
    if grantee == p.account {
        return Err(ApiError::bad("grantee: you cannot grant access to yourself"));
    }
    let scope = if req.write { Scope::ReadWrite } else { Scope::Read };
    let mut g = session(&p).await;
    detach(async move {
        let s = unlocked(&mut g)?;
        let expiry = s.now().await? + days * 86_400;
        let consent = s.grant(grantee, scope, target, expiry).await?;
        ok(json!({ "consent": consent, "grantee": grantee, "expiry": expiry }))
    })
    .await
}

async fn revoke(State(p): State<Arc<Portal>>, UrlPath(id): UrlPath<String>) -> Api {
    let id = number("consent", &id)?;
    let mut g = session(&p).await;
    detach(async move {
        let rekeyed = unlocked(&mut g)?.revoke(id).await?;
        ok(json!({ "consent": id, "rekeyed": rekeyed }))
    })
    .await
}

async fn share(State(p): State<Arc<Portal>>, UrlPath(id): UrlPath<String>) -> Api {
    let id = number("consent", &id)?;
    let mut g = session(&p).await;
    detach(async move {
        let shared = unlocked(&mut g)?.share(id).await?;
        ok(json!({ "consent": id, "shared": shared }))
    })
    .await
}

async fn audit(State(p): State<Arc<Portal>>) -> Api {
    let mut g = session(&p).await;
    detach(async move {
        let out: Vec<Value> = unlocked(&mut g)?
            .audit_log()
            .await?
            .into_iter()
            .map(|(i, e)| {
                json!({
                    "id": i, "timestamp": e.timestamp, "actor": e.actor, "patient": e.patient,
                    "record": e.record, "consent": e.consent, "emergency": e.kind == AUDIT_EMERGENCY,
                })
            })
            .collect();
        ok(Value::Array(out))
    })
    .await
}

/// The checks of typed numbers and tokens (`tests/portal_api.rs` drives
/// the router over HTTP).
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_checked_with_the_field_named() {
        assert_eq!(number("grantee", " 20 ").unwrap(), 20);
        assert!(number("grantee", "").unwrap_err().message.contains("grantee is missing"));
        let e = number("grantee", "dr. house").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("grantee: \"dr. house\" is not a number"), "{}", e.message);
        assert!(number("days", "-3").is_err());
    }

    #[tokio::test]
    async fn a_shutdown_waits_for_the_running_flow() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let endpoints = Endpoints {
            coordinator: "http://127.0.0.1:9".into(),
            ipfs_api: None,
            l1_rpc: "http://127.0.0.1:9".into(),
            rollup: alloy::primitives::Address::ZERO,
            l1_wait: std::time::Duration::from_secs(1),
        };
        let p = Arc::new(Portal::new(PathBuf::from("/nonexistent/keys.json"), 10, endpoints, addr));
        // A flow runs (it holds the session), its page long closed.
        let flow = p.session.clone().lock_owned().await;
        let served = tokio::spawn(serve(listener, p.clone(), async {}));
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(!served.is_finished(), "the portal stopped while a flow ran");
        drop(flow);
        let done = tokio::time::timeout(std::time::Duration::from_secs(5), served).await;
        done.expect("the portal stops once the flow ends").unwrap().unwrap();
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"abcd", b"abcd"));
        assert!(!same(b"abcd", b"abce"));
        assert!(!same(b"abc", b"abcd"));
        assert!(!same(b"", b"abcd"));
    }
}
