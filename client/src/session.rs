//! The flows patients, doctors and hospitals run, as library calls (the
//! `medrollup-client` CLI is a thin layer over them).
//!
//! A [`Session`] is one user (account id + keys) talking to a coordinator's
//! HTTP API, storing envelopes on an IPFS node (or the coordinator's
//! embedded store, which speaks the same API), and believing nothing about
//! the state that L1 does not back ([`crate::light`]).
//!
//! Every flow that writes ends when its transactions are sealed into a
//! batch, so the next flow (even from another process) sees their effects.
//! Flows that read check each leaf against L1 first, so they wait for the
//! last sealed batch to be proven and landed.
//!
//! Who can decrypt a record is who holds a wrapped copy of its key in the
//! envelope: the patient, the author, and every grantee whose consent covers
//! it. A grant adds the grantee's copy (a new envelope, a new CID, an update
//! transaction); a revoke re-keys every record the consent covered: a fresh
//! key for the remaining readers, the old content unpinned. Deleting a
//! record unpins its content, which holds the only wrapped copies of its key
//! (crypto-shredding on our nodes: a copy someone saved elsewhere is out of
//! reach of any protocol).
//!
//! A record's metadata hash says how its content is addressed
//! ([`record_meta_hash`]): raw for envelopes within one 256 KiB chunk,
//! dag-pb for the root of a larger one. The on-chain digest and this hash
//! give the exact CID.

use crate::envelope::{Envelope, RecordError};
use crate::keystore::{Identity, KeystoreError, PublicIdentity};
use crate::light::{LightClient, LightError};
use alloy::primitives::Address;
use medrollup_circuits::field::{Fr, fr_to_dec};
use medrollup_circuits::poseidon;
use medrollup_circuits::state::{
    AUDIT_EMERGENCY, AUDIT_READ, AccountIndex, AuditEntry, ConsentLeaf, RecordLeaf, Role, TreeId,
};
use medrollup_circuits::tx::{ConsentTarget, Scope, Tx, TxBody};
use medrollup_storage::cid::{Cid, DAG_PB, RAW};
use medrollup_storage::content::{ContentError, ContentStore};
use medrollup_storage::kubo::KuboStore;
use serde::Deserialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What went wrong in a flow. Each names what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The coordinator refused a transaction.
    #[error("the coordinator refused the {kind} transaction ({code}): {reason}")]
    Rejected {
        /// Which transaction.
        kind: &'static str,
        /// Its stable code (`consent_revoked`, `bad_nonce`, ...).
        code: String,
        /// Why, for a person.
        reason: String,
    },
    /// The coordinator could not be reached or answered nonsense.
    #[error("the coordinator at {url}: {why}")]
    Coordinator {
        /// Its URL.
        url: String,
        /// What happened.
        why: String,
    },
    /// An answer about the state was not believed.
    #[error(transparent)]
    Light(#[from] LightError),
    /// The content store (IPFS node or embedded store).
    #[error("storage: {0}")]
    Storage(#[from] ContentError),
    /// An envelope or a record.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// Keys.
    #[error(transparent)]
    Keys(#[from] KeystoreError),
    /// The flow is not allowed by the state (checked before sending).
    #[error("{0}")]
    Refused(String),
    /// What the flow would undo is undone already: a record deleted whose
    /// content is gone too (a delete finished twice).
    #[error("{0}")]
    Gone(String),
    /// What the flow names is not in the state (checked against L1): no
    /// such record or consent, an account not registered.
    #[error("{0}")]
    NotFound(String),
    /// A published key does not match what the account registered.
    #[error("account {account}'s published keys are not the ones it registered: {why}")]
    ForeignKeys {
        /// The account.
        account: u64,
        /// What differs.
        why: String,
    },
    /// The coordinator answered that a transaction was accepted and its
    /// batch sealed, but the state L1 holds after that batch does not show
    /// it: the coordinator dropped it (or changed it).
    #[error(
        "{what}: the coordinator said it was accepted into batch {batch}, but the state on L1 after that batch \
         does not show it; this coordinator did not apply it (do not trust it)"
    )]
    NotApplied {
        /// What is missing.
        what: String,
        /// The batch it was said to be in.
        batch: u64,
    },
    /// An update of a record that L1 shows with a later version than the
    /// update made and other content: another writer's update came after
    /// it (or it was not applied). Its content is unpinned.
    #[error(
        "record {record} moved on after this update (L1 has version {now}{}, this update made version \
         {made}): another writer's update or delete came after it (or this one was not applied); its content \
         {cid} is let go. Read the record, and write again if this change is still needed",
        if *deleted { ", deleted" } else { "" }
    )]
    Superseded {
        /// The record.
        record: u64,
        /// The version this update made.
        made: u64,
        /// The version on L1.
        now: u64,
        /// Whether L1 has it deleted.
        deleted: bool,
        /// This update's content.
        cid: Cid,
    },
    /// An update refused because the record changed after it was read:
    /// another writer's update came first. Nothing was written; this
    /// update's content, if it was stored, is unpinned.
    #[error(
        "record {record} changed after it was read at version {read} (another writer's update came first): this \
         update was refused{}. Read the record again and make the change on what it holds now",
        cid.map(|c| format!(" and its content {c} let go")).unwrap_or_default()
    )]
    Stale {
        /// The record.
        record: u64,
        /// The version this update was made from.
        read: u64,
        /// This update's content (`None`: refused before it was stored).
        cid: Option<Cid>,
    },
    /// A transaction went out but its fate is unknown: the answer was lost
    /// or unreadable, or no decision came in time. It may stand, so its
    /// content stays and the session sends the very same transaction again
    /// before any other ([`Session::submit`]).
    #[error(
        "the {kind} transaction {id} was sent, but its fate is unknown ({why}): it may stand. This session sends \
         the very same transaction again before any other, so it cannot count twice (another session or CLI run \
         should first ask the coordinator's GET /tx/{id})"
    )]
    Unsettled {
        /// Which transaction.
        kind: &'static str,
        /// Its id.
        id: String,
        /// What went wrong.
        why: String,
    },
    /// A transaction whose fate was unknown, sent again before a new one,
    /// turned out to stand: the new one was not sent (it may repeat what
    /// the earlier did).
    #[error(
        "the earlier {earlier} transaction {id}, whose answer was lost, stands (batch {batch}): this {kind} \
         transaction was not sent. See what the earlier one did, then send this one again if it is still wanted"
    )]
    EarlierStood {
        /// The earlier transaction's kind.
        earlier: &'static str,
        /// Its id.
        id: String,
        /// Its batch.
        batch: u64,
        /// The kind of the one not sent.
        kind: &'static str,
    },
    /// The flow's transaction stands, but what follows it stopped (`what`
    /// says what stands and how to finish).
    #[error("{what}: {error}")]
    Unfinished {
        /// What stands, and how to finish.
        what: String,
        /// What stopped it.
        error: Box<ClientError>,
    },
}

/// Where the client talks to.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// The coordinator's HTTP API.
    pub coordinator: String,
    /// An IPFS node's RPC API for records; `None`: the coordinator's
    /// embedded store (the same `/api/v0` subset, the same CIDs).
    pub ipfs_api: Option<String>,
    /// Ethereum JSON-RPC.
    pub l1_rpc: String,
    /// The rollup contract (the client's root of trust: take it from the
    /// deployment, not from the coordinator).
    pub rollup: Address,
    /// How long to wait for L1 to reach the coordinator's state.
    pub l1_wait: Duration,
}

/// The coordinator's `GET /root`.
#[derive(Debug, Clone, Deserialize)]
pub struct RootInfo {
    /// The state root (decimal).
    pub root: String,
    /// Sealed batches.
    pub batches_sealed: u64,
    /// Rollup instance id (decimal).
    pub instance: String,
    /// Leaves per tree.
    pub capacity: u64,
}

/// One user's session.
#[derive(Debug)]
pub struct Session {
    account: u64,
    identity: Identity,
    coordinator: String,
    http: reqwest::Client,
    light: Arc<LightClient>,
    store: Arc<dyn ContentStore>,
    instance: Fr,
    capacity: u64,
    nonce: Option<u64>,
    /// Superseded content that could not be unpinned (tried again at the
    /// end of each write).
    stale: Vec<Cid>,
    /// The batch the last accepted transaction went into.
    last_batch: Option<u64>,
    journal: Vec<Submission>,
    /// A transaction sent whose fate is unknown: sent again, the very same
    /// bytes, before any other.
    unsettled: Option<Signed>,
}

/// A signed transaction, as sent.
#[derive(Debug, Clone)]
struct Signed {
    id: String,
    payload: Vec<u8>,
    body: TxBody,
    kind: &'static str,
    nonce: u64,
    /// When it was first sent (Unix ms).
    sent_at_ms: u64,
}

/// Why a send got no decision.
enum Undecided {
    /// It never left (the coordinator could not be reached).
    NotSent(ClientError),
    /// It may have been taken: what happened.
    Unclear(String),
}

/// One transaction this session submitted and what became of it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Submission {
    /// Its id (sha256 of the payload, hex).
    pub id: String,
    /// Its kind (`grant`, `log_access`, ...).
    pub kind: &'static str,
    /// When it was sent (Unix ms).
    pub sent_at_ms: u64,
    /// The batch it went into, if accepted.
    pub batch: Option<u64>,
    /// The refusal's code and reason, if rejected.
    pub rejected: Option<(String, String)>,
}

/// What the role of a session's account is, asked apart from the session
/// ([`Session::role_query`]).
#[derive(Debug, Clone)]
pub struct RoleQuery {
    account: u64,
    keys: PublicIdentity,
    light: Arc<LightClient>,
}

impl RoleQuery {
    /// The account's role on L1 (`None`: not registered); refused if the
    /// account is registered to other keys.
    pub async fn run(&self) -> Result<Option<Role>, ClientError> {
        let leaf = self.light.leaf(TreeId::Accounts, self.account).await?;
        let Some(role) = Role::from_code(leaf[0]) else { return Ok(None) };
        if other_keys(&self.keys, &leaf).is_some() {
            return Err(ClientError::Refused(format!(
                "account {} is registered (as a {}) to other keys than these: is the account id right?",
                self.account,
                format!("{role:?}").to_lowercase()
            )));
        }
        Ok(Some(role))
    }
}

/// A record as its reader gets it.
#[derive(Debug, Clone)]
pub struct ReadRecord {
    /// The record's leaf (checked against L1).
    pub leaf: RecordLeaf,
    /// Its content's CID.
    pub cid: Cid,
    /// The FHIR bundle (JSON).
    pub bundle: Vec<u8>,
    /// The consent used (`None`: the owner, or an emergency access).
    pub consent: Option<u64>,
}

pub use medrollup_circuits::tx::record_meta_hash;

/// Poseidon of an emergency access's stated reason (sha256 as two limbs).
pub fn reason_hash(reason: &str) -> Fr {
    poseidon::hash_sha256(reason.as_bytes())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970").as_millis()
        as u64
}

/// Unix seconds now by this machine's clock (consents' expiries are in
/// these); [`Session::now`] is the time a consent is judged by.
fn local_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970").as_secs()
}

/// The error of a write that stands (`written`) though sealing `record`
/// again without a reader whose consent ended meanwhile failed with `e`
/// (see `Session::without_lapsed_readers`).
fn lapsed_reader_left(written: String, record: u64, e: ClientError) -> ClientError {
    ClientError::Unfinished {
        what: format!(
            "{written} stands, but a reader whose consent ended meanwhile still holds its key (finish it by \
             updating record {record}, not by writing it anew; should this account's own consent have ended, the \
             patient's revoke, run again, re-keys it)"
        ),
        error: Box::new(e),
    }
}

impl Session {
    /// Opens a session for `account` with `identity`: reads the rollup's
    /// instance from the coordinator (a wrong one cannot match L1's root).
    pub async fn open(endpoints: &Endpoints, account: u64, identity: Identity) -> Result<Self, ClientError> {
        let coordinator = endpoints.coordinator.trim_end_matches('/').to_string();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(90))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("an HTTP client");
        let root: RootInfo = get_json(&http, &format!("{coordinator}/root")).await?;
        let instance = medrollup_circuits::field::parse_fr(&root.instance).map_err(|e| {
            ClientError::Coordinator { url: coordinator.clone(), why: format!("instance: {e}") }
        })?;
        if root.capacity < 2 {
            return Err(ClientError::Coordinator {
                url: format!("{coordinator}/root"),
                why: format!("trees of {} leaves cannot hold an account's records", root.capacity),
            });
        }
        let mut light = LightClient::new(&coordinator, &endpoints.l1_rpc, endpoints.rollup, instance)?;
        light.wait = endpoints.l1_wait;
        let store: Arc<dyn ContentStore> =
            Arc::new(KuboStore::new(endpoints.ipfs_api.as_deref().unwrap_or(&coordinator)));
        Ok(Self {
            account,
            identity,
            coordinator,
            http,
            light: Arc::new(light),
            store,
            instance,
            capacity: root.capacity,
            nonce: None,
            stale: Vec::new(),
            last_batch: None,
            journal: Vec::new(),
            unsettled: None,
        })
    }

    /// The account id.
    pub fn account(&self) -> u64 {
        self.account
    }

    /// The user's keys.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The content store records go to.
    pub fn store(&self) -> &Arc<dyn ContentStore> {
        &self.store
    }

    /// The time consents are judged by (Unix seconds): the later of this
    /// machine's clock and L1's latest block. A clock running behind would
    /// otherwise keep alive, for this client, a consent the chain has seen
    /// end: its grantee would be given the key of a record written now.
    pub async fn now(&self) -> Result<u64, ClientError> {
        Ok(local_now().max(self.light.chain_time().await?))
    }

    /// Every transaction this session had decided, in order.
    pub fn journal(&self) -> &[Submission] {
        &self.journal
    }

    /// The light client.
    pub fn light(&self) -> &LightClient {
        &self.light
    }

    /// The light client, to tune (how long it waits for L1).
    pub fn light_mut(&mut self) -> &mut LightClient {
        Arc::make_mut(&mut self.light)
    }

    // ---- talking to the coordinator -------------------------------------

    /// The coordinator's `GET /root`.
    pub async fn root_info(&self) -> Result<RootInfo, ClientError> {
        get_json(&self.http, &format!("{}/root", self.coordinator)).await
    }

    /// Where an account appears (the coordinator's hint; leaves are checked
    /// one by one when used).
    pub async fn index_of(&self, account: u64) -> Result<AccountIndex, ClientError> {
        #[derive(Deserialize)]
        struct A {
            index: AccountIndex,
        }
        let a: A = get_json(&self.http, &format!("{}/index/{account}", self.coordinator)).await?;
        Ok(a.index)
    }

    async fn next_nonce(&mut self) -> Result<u64, ClientError> {
        if let Some(n) = self.nonce {
            return Ok(n);
        }
        // Unchecked once the instance is confirmed (a wrong nonce only gets
        // the transaction refused). Before, checked against L1: the instance
        // comes from the coordinator, and a signature for another instance
        // (another rollup where this key has an account) would be valid there.
        let leaf = if self.light.instance_verified() {
            self.light.fetch(TreeId::Accounts, self.account).await?.leaf
        } else {
            self.light.leaf(TreeId::Accounts, self.account).await?.to_vec()
        };
        let n = leaf.get(4).and_then(medrollup_circuits::field::fr_to_u64).unwrap_or(0);
        self.nonce = Some(n);
        Ok(n)
    }

    /// Signs `body` with the next nonce and submits it; returns the batch it
    /// is in. A refusal comes back as [`ClientError::Rejected`].
    ///
    /// A `bad_nonce` refusal means another client of this account (another
    /// device, a portal and a CLI) sent a transaction since this one read
    /// its nonce; the refused one changed nothing. A transaction that does
    /// not rest on what was read before it (not a record's add or update,
    /// whose readers were read then) is signed again with the sealed state's
    /// nonce, and once more after the next batch is sealed (the other
    /// transaction may still be in the open one). A record write is refused
    /// to the caller, whose next call reads afresh.
    ///
    /// A transaction sent before whose fate is unknown
    /// ([`ClientError::Unsettled`]) goes again first, the same bytes (the
    /// coordinator knows it by its id). If it stands and `body` is the same,
    /// that was a retry: its batch is the answer. If it stands and `body`
    /// differs, `body` is not sent ([`ClientError::EarlierStood`]). If it
    /// was refused, `body` goes as usual.
    pub async fn submit(&mut self, body: TxBody) -> Result<u64, ClientError> {
        if let Some(earlier) = self.unsettled.take() {
            let (kind, id, same) = (earlier.kind, earlier.id.clone(), earlier.body == body);
            let kind_now = Tx { signer: self.account, nonce: 0, body: body.clone() }.kind().name();
            match self.send_signed(earlier.clone()).await {
                Ok(batch) if same => return Ok(batch),
                Ok(batch) => {
                    return Err(ClientError::EarlierStood { earlier: kind, id, batch, kind: kind_now });
                }
                Err(ClientError::Rejected { code, .. }) if code == "bad_nonce" => {}
                Err(e @ ClientError::Rejected { .. }) if same => return Err(e),
                Err(ClientError::Rejected { .. }) => {}
                Err(e) if same => {
                    // Still unsettled (or not sent again): kept for the next
                    // call, and this one is that transaction.
                    self.unsettled.get_or_insert(earlier);
                    return Err(e);
                }
                Err(e) => {
                    // Kept for the next call; this flow's transaction was
                    // not sent (its content may go).
                    self.unsettled.get_or_insert(earlier);
                    return Err(ClientError::Coordinator {
                        url: self.coordinator.clone(),
                        why: format!(
                            "the earlier {kind} transaction {id}, whose answer was lost, goes again before any other \
                             and could not be settled ({e}); this {kind_now} transaction was not sent"
                        ),
                    });
                }
            }
        }
        let again = !matches!(body, TxBody::AddRecord { .. } | TxBody::UpdateRecord { .. });
        for attempt in 0.. {
            match self.submit_once(body.clone()).await {
                Err(ClientError::Rejected { code, .. }) if code == "bad_nonce" && again && attempt < 2 => {
                    if attempt == 1 {
                        self.wait_for_a_seal(Duration::from_secs(10)).await?;
                    }
                }
                r => return r,
            }
        }
        unreachable!("the loop returns")
    }

    /// After an automatic rewrite of `record` (a share, a re-keying) was
    /// refused as stale: the coordinator holds another writer's version that
    /// L1 does not show yet. Waits (up to the light client's wait) for L1 to
    /// show the record past `read`, so that the rewrite can start again from
    /// it.
    async fn wait_past(&self, record: u64, read: u64) -> Result<(), ClientError> {
        let started = Instant::now();
        while started.elapsed() < self.light.wait {
            let l = self.record(record).await?;
            if l.version > read || l.deleted {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(())
    }

    /// Waits until the coordinator seals another batch, or `limit` passes.
    async fn wait_for_a_seal(&self, limit: Duration) -> Result<(), ClientError> {
        let sealed = self.root_info().await?.batches_sealed;
        let started = Instant::now();
        while started.elapsed() < limit && self.root_info().await?.batches_sealed == sealed {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }

    async fn submit_once(&mut self, body: TxBody) -> Result<u64, ClientError> {
        let nonce = self.next_nonce().await?;
        let tx = Tx { signer: self.account, nonce, body: body.clone() };
        let kind = tx.kind().name();
        let signed = tx.sign(self.identity.signing_key(), self.instance);
        let payload = serde_json::to_vec(&signed).expect("a transaction serialises");
        let id = medrollup_wire::tx_id(&payload);
        self.send_signed(Signed { id, payload, body, kind, nonce, sent_at_ms: now_ms() }).await
    }

    /// Sends `tx` and waits for the coordinator's decision; records it. A
    /// send that may have been taken without a decision seen leaves `tx`
    /// unsettled, to go again before any other.
    async fn send_signed(&mut self, tx: Signed) -> Result<u64, ClientError> {
        let answer = match self.decide(&tx).await {
            Ok(a) => a,
            Err(Undecided::NotSent(e)) => return Err(e),
            Err(Undecided::Unclear(why)) => {
                let e = ClientError::Unsettled { kind: tx.kind, id: tx.id.clone(), why };
                self.unsettled = Some(tx);
                return Err(e);
            }
        };
        let Signed { id, kind, nonce, sent_at_ms, .. } = tx;
        match answer.status {
            medrollup_wire::TxStatus::Accepted { batch, .. }
            | medrollup_wire::TxStatus::Duplicate { batch } => {
                self.nonce = Some(nonce + 1);
                self.last_batch = Some(batch);
                self.journal.push(Submission { id, kind, sent_at_ms, batch: Some(batch), rejected: None });
                Ok(batch)
            }
            medrollup_wire::TxStatus::Rejected { code, reason } => {
                if code == "bad_nonce" {
                    self.nonce = None;
                }
                let rejected = Some((code.clone(), reason.clone()));
                self.journal.push(Submission { id, kind, sent_at_ms, batch: None, rejected });
                Err(ClientError::Rejected { kind, code, reason })
            }
        }
    }

    /// Posts `tx` and asks until the coordinator has decided it.
    async fn decide(&self, tx: &Signed) -> Result<medrollup_wire::TxAnswer, Undecided> {
        use Undecided::Unclear;
        let url = format!("{}/tx", self.coordinator);
        let r = match self.http.post(&url).body(tx.payload.clone()).send().await {
            Ok(r) => r,
            // No connection, so nothing went out.
            Err(e) if e.is_connect() => return Err(Undecided::NotSent(self.unreachable(&url, e))),
            Err(e) => return Err(Unclear(format!("POST {url}: {}", chain(&e)))),
        };
        let status = r.status();
        let mut answer: serde_json::Value =
            r.json().await.map_err(|e| Unclear(format!("the answer to POST {url} ({status}): {e}")))?;
        // Still deciding: ask until it has.
        let started = Instant::now();
        while answer.get("status").and_then(|s| s.as_str()) == Some("pending") {
            if started.elapsed() > Duration::from_secs(300) {
                return Err(Unclear("undecided after 300 s".into()));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let u = format!("{}/tx/{}", self.coordinator, tx.id);
            let r = self.http.get(&u).send().await.map_err(|e| Unclear(format!("GET {u}: {}", chain(&e))))?;
            if r.status().is_success() {
                answer = r.json().await.map_err(|e| Unclear(format!("the answer to GET {u}: {e}")))?;
            }
        }
        serde_json::from_value(answer.clone())
            .map_err(|e| Unclear(format!("POST {url} answered {status} {answer}: {e}")))
    }

    /// Waits until the batch of the last accepted transaction is sealed.
    pub async fn settle(&self) -> Result<(), ClientError> {
        let Some(batch) = self.last_batch else { return Ok(()) };
        // What went before was accepted: an error here must not read as a
        // refusal (sent again, it would be a second record, a second grant).
        self.sealed(batch).await.map_err(|e| match e {
            ClientError::Coordinator { url, why } => ClientError::Coordinator {
                url,
                why: format!(
                    "{why} (the last transaction was accepted into batch {batch} and stands: do not send it again)"
                ),
            },
            e => e,
        })
    }

    /// Waits until batch `batch` is sealed.
    async fn sealed(&self, batch: u64) -> Result<(), ClientError> {
        let started = Instant::now();
        loop {
            if self.root_info().await?.batches_sealed > batch {
                // What this user did is sealed: an answer from before it is stale.
                self.light.require_at_least(batch + 1);
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(120) {
                return Err(ClientError::Coordinator {
                    url: self.coordinator.clone(),
                    why: format!(
                        "batch {batch} not sealed within 120 s (the last transaction was accepted into it and \
                         stands: do not send it again)"
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// After a transaction was accepted: waits for its batch to be sealed,
    /// then reads its effect from the state L1 holds with `check` (checked
    /// reads wait for L1 to reach the sealed batch). The client believes
    /// only L1, not the coordinator's word that its transaction went in:
    /// `Ok(false)` is [`ClientError::NotApplied`], naming `what` as missing.
    /// Any error on the way (the batch not sealed or not on L1 in time, the
    /// coordinator or L1 out of reach) is [`ClientError::Unfinished`]: the
    /// transaction stands, and `then` says what to do instead of sending it
    /// again (a second record, a second grant).
    async fn confirm(
        &self,
        what: &str,
        then: &str,
        check: impl Future<Output = Result<bool, ClientError>>,
    ) -> Result<(), ClientError> {
        let Some(batch) = self.last_batch else { return Ok(()) };
        // Only "could not find out" is wrapped: an answer that contradicts
        // L1 (forged, stale, malformed) is no sign the transaction stands.
        let stands = |e: ClientError| match e {
            ClientError::Coordinator { .. }
            | ClientError::Light(
                LightError::NotYetOnL1 { .. } | LightError::L1(_) | LightError::Coordinator(_),
            ) => ClientError::Unfinished {
                what: format!(
                    "{what} was accepted into batch {batch} and stands, but confirming it on L1 stopped ({then})"
                ),
                error: Box::new(e),
            },
            e => e,
        };
        self.sealed(batch).await.map_err(stands)?;
        if check.await.map_err(stands)? {
            Ok(())
        } else {
            Err(ClientError::NotApplied { what: what.to_string(), batch })
        }
    }

    fn unreachable(&self, url: &str, e: reqwest::Error) -> ClientError {
        ClientError::Coordinator { url: url.to_string(), why: format!("does not answer: {}", chain(&e)) }
    }

    // ---- verified reads ---------------------------------------------------

    /// A record's leaf, checked against L1.
    pub async fn record(&self, record: u64) -> Result<RecordLeaf, ClientError> {
        let leaf = self.light.leaf(TreeId::Records, record).await?;
        RecordLeaf::from_fields(&leaf)
            .ok_or_else(|| ClientError::NotFound(format!("record {record} does not exist")))
    }

    /// A consent's leaf, checked against L1.
    pub async fn consent(&self, consent: u64) -> Result<ConsentLeaf, ClientError> {
        let leaf = self.light.leaf(TreeId::Consents, consent).await?;
        ConsentLeaf::from_fields(&leaf)
            .ok_or_else(|| ClientError::NotFound(format!("consent {consent} does not exist")))
    }

    /// An account's published keys, checked against its leaf on L1.
    pub async fn public_identity(&self, account: u64) -> Result<PublicIdentity, ClientError> {
        let leaf = self.light.leaf(TreeId::Accounts, account).await?;
        if leaf[0] == Fr::from(0u64) {
            return Err(ClientError::NotFound(format!("account {account} is not registered")));
        }
        let id: PublicIdentity =
            get_json(&self.http, &format!("{}/directory/{account}", self.coordinator)).await?;
        id.check()?;
        if let Some(why) = other_keys(&id, &leaf) {
            return Err(ClientError::ForeignKeys { account, why: why.into() });
        }
        Ok(id)
    }

    /// An account's role, checked against L1; `None` while it is not
    /// registered.
    pub async fn role(&self, account: u64) -> Result<Option<Role>, ClientError> {
        Ok(Role::from_code(self.light.leaf(TreeId::Accounts, account).await?[0]))
    }

    /// This session's role, checked against L1, and that the account is
    /// registered to this session's keys: an account id mistyped, or taken
    /// by someone else first, is refused here rather than shown as ours.
    pub async fn my_role(&self) -> Result<Option<Role>, ClientError> {
        self.role_query().run().await
    }

    /// [`Self::my_role`], to be asked without the session (a caller that
    /// holds it for others need not hold it while L1 is waited for).
    pub fn role_query(&self) -> RoleQuery {
        RoleQuery { account: self.account, keys: self.identity.public(), light: self.light.clone() }
    }

    /// The records this user may open, each checked against L1: those it
    /// owns or wrote, and the live ones that active consents it holds cover
    /// (with that consent).
    pub async fn listed_records(&self) -> Result<Vec<ListedRecord>, ClientError> {
        let mut out = std::collections::BTreeMap::new();
        for id in self.index_of(self.account).await?.records {
            // The index is the coordinator's hint: only what L1 shows as
            // ours is listed as ours.
            let leaf = self.record(id).await?;
            if leaf.owner == self.account || leaf.author == self.account {
                out.insert(id, ListedRecord { id, leaf, consent: None });
            }
        }
        let consents = self.my_consents().await?;
        // L1's clock is asked only if there is a consent to judge.
        let now = if consents.is_empty() { 0 } else { self.now().await? };
        for (c, consent) in consents {
            if consent.grantee != self.account || consent.revoked || consent.expiry <= now {
                continue;
            }
            let covered = match consent.target {
                ConsentTarget::Record(r) => vec![r],
                ConsentTarget::AllRecords => self.index_of(consent.patient).await?.records,
            };
            for id in covered {
                if out.contains_key(&id) {
                    continue;
                }
                let leaf = self.record(id).await?;
                if leaf.owner == consent.patient && !leaf.deleted {
                    out.insert(id, ListedRecord { id, leaf, consent: Some(c) });
                }
            }
        }
        Ok(out.into_values().collect())
    }

    /// Consents `account` granted or holds, each checked against L1.
    pub async fn consents_of(&self, account: u64) -> Result<Vec<(u64, ConsentLeaf)>, ClientError> {
        let mut out = Vec::new();
        for c in self.index_of(account).await?.consents {
            let leaf = self.consent(c).await?;
            if leaf.patient != account && leaf.grantee != account {
                return Err(ClientError::Refused(format!(
                    "the coordinator listed consent {c} for account {account}, but it is between {} and {}",
                    leaf.patient, leaf.grantee
                )));
            }
            out.push((c, leaf));
        }
        Ok(out)
    }

    /// This user's consents (granted or held).
    pub async fn my_consents(&self) -> Result<Vec<(u64, ConsentLeaf)>, ClientError> {
        self.consents_of(self.account).await
    }

    /// The audit entries about this user's records or by this user, each
    /// checked against L1.
    pub async fn audit_log(&self) -> Result<Vec<(u64, AuditEntry)>, ClientError> {
        let mut out = Vec::new();
        for i in self.index_of(self.account).await?.audit {
            let e = AuditEntry::from_fields(&self.light.leaf(TreeId::Audit, i).await?);
            if e.kind != AUDIT_READ && e.kind != AUDIT_EMERGENCY {
                return Err(ClientError::Refused(format!(
                    "the coordinator listed audit entry {i}, but there is no such entry on L1"
                )));
            }
            if e.patient != self.account && e.actor != self.account {
                return Err(ClientError::Refused(format!(
                    "the coordinator listed audit entry {i} as about account {}, but it is not",
                    self.account
                )));
            }
            out.push((i, e));
        }
        Ok(out)
    }

    /// Grantees whose consents (from `owner`) let them read `record` now.
    async fn readers_of(&self, owner: u64, record: u64) -> Result<Vec<u64>, ClientError> {
        let t = self.now().await?;
        let mut readers: Vec<u64> = self
            .consents_of(owner)
            .await?
            .into_iter()
            .filter(|(_, c)| c.allows(owner, record, false, t))
            .map(|(_, c)| c.grantee)
            .collect();
        readers.sort_unstable();
        readers.dedup();
        Ok(readers)
    }

    /// The public keys of `owner` and `others` (deduplicated).
    async fn identities(&self, owner: u64, others: &[u64]) -> Result<Vec<PublicIdentity>, ClientError> {
        let mut ids = vec![owner];
        for &o in others {
            if !ids.contains(&o) {
                ids.push(o);
            }
        }
        let mut out = Vec::new();
        for a in ids {
            out.push(if a == self.account {
                self.identity.public()
            } else {
                self.public_identity(a).await?
            });
        }
        Ok(out)
    }

    /// A consent of this user's that lets it read (or write) `record` of `owner`.
    async fn my_consent_for(&self, owner: u64, record: u64, write: bool) -> Result<Option<u64>, ClientError> {
        let t = self.now().await?;
        Ok(self
            .my_consents()
            .await?
            .into_iter()
            .find(|(_, c)| c.grantee == self.account && c.allows(owner, record, write, t))
            .map(|(id, _)| id))
    }

    /// A free leaf index in `tree` (random). A record id is checked
    /// unverified (a taken one only gets the transaction refused); a consent
    /// id against L1, since a grant may reuse one of the patient's own slots
    /// and would put a coordinator's pick over a consent that holds.
    async fn free_id(&self, tree: TreeId) -> Result<u64, ClientError> {
        for _ in 0..16 {
            let mut b = [0u8; 8];
            getrandom::fill(&mut b).expect("the operating system's random source");
            let id = 1 + u64::from_le_bytes(b) % (self.capacity - 1);
            let first = if tree == TreeId::Consents {
                self.light.leaf(tree, id).await?[0]
            } else {
                self.light.fetch(tree, id).await?.leaf.first().copied().unwrap_or_default()
            };
            if first == Fr::from(0u64) {
                return Ok(id);
            }
        }
        Err(ClientError::Refused(format!("no free {tree:?} id found in 16 tries; the tree is nearly full")))
    }

    // ---- content ----------------------------------------------------------

    /// Stores an envelope; returns its CID and the metadata hash that says
    /// how it is addressed.
    async fn put(&self, env: &Envelope) -> Result<(Cid, Fr), ClientError> {
        let cid = self.store.add(env.to_bytes()).await?;
        self.store.pin(cid).await?;
        Ok((cid, record_meta_hash(cid.codec())))
    }

    /// The CID a record leaf names: its metadata hash says which codec;
    /// records written by other tools are looked up as raw, then dag-pb.
    async fn cid_of(&self, leaf: &RecordLeaf) -> Result<Cid, ClientError> {
        for codec in [RAW, DAG_PB] {
            if leaf.meta_hash == record_meta_hash(codec) {
                return Ok(if codec == RAW {
                    Cid::from_digest(leaf.cid_digest)
                } else {
                    Cid::dag_pb_from_digest(leaf.cid_digest)
                });
            }
        }
        for cid in Cid::candidates(leaf.cid_digest) {
            if self.store.has(cid).await? {
                return Ok(cid);
            }
        }
        Err(ContentError::NotFound(Cid::from_digest(leaf.cid_digest)).into())
    }

    /// Fetches the envelope a record leaf names (the store checks the bytes
    /// against the CID).
    async fn envelope(&self, record: u64, leaf: &RecordLeaf) -> Result<(Cid, Envelope), ClientError> {
        let cid = self.cid_of(leaf).await?;
        let env = Envelope::from_bytes(&self.store.cat(cid).await?)?;
        if env.record != record {
            return Err(RecordError::Corrupted(format!(
                "the content at {cid} is record {}'s envelope, not record {record}'s",
                env.record
            ))
            .into());
        }
        Ok((cid, env))
    }

    /// Lets an old envelope go; a node that no longer has it is fine.
    async fn release(&self, cid: Cid) -> Result<(), ClientError> {
        match self.store.unpin(cid).await {
            Ok(()) | Err(ContentError::NotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    // ---- flows --------------------------------------------------------------

    /// Publishes this user's public keys (after its registration is sealed),
    /// so that others can wrap record keys for it.
    pub async fn publish_keys(&self) -> Result<(), ClientError> {
        self.publish(self.account, &self.identity.public()).await
    }

    async fn publish(&self, account: u64, public: &PublicIdentity) -> Result<(), ClientError> {
        let url = format!("{}/directory/{account}", self.coordinator);
        let r = self.http.post(&url).json(public).send().await.map_err(|e| self.unreachable(&url, e))?;
        if !r.status().is_success() {
            let why = format!("{}: {}", r.status(), r.text().await.unwrap_or_default());
            return Err(ClientError::Coordinator { url, why });
        }
        Ok(())
    }

    /// A patient registers themself at this session's account id.
    pub async fn register_patient(&mut self) -> Result<(), ClientError> {
        let public = self.identity.public();
        self.submit(TxBody::RegisterPatient { pubkey: public.babyjub, rsa_key_hash: public.rsa_key_hash })
            .await?;
        let what = format!("patient {} registered with these keys", self.account);
        self.confirm(&what, "do not register again", async {
            let leaf = self.light.leaf(TreeId::Accounts, self.account).await?;
            Ok(Role::from_code(leaf[0]) == Some(Role::Patient) && other_keys(&public, &leaf).is_none())
        })
        .await?;
        self.publish_keys().await
    }

    /// A hospital registers a doctor (its public keys) at `doctor`.
    pub async fn register_doctor(&mut self, doctor: u64, public: &PublicIdentity) -> Result<(), ClientError> {
        public.check()?;
        self.submit(TxBody::RegisterDoctor {
            doctor,
            pubkey: public.babyjub,
            rsa_key_hash: public.rsa_key_hash,
        })
        .await?;
        let what = format!("doctor {doctor} registered with these keys");
        self.confirm(&what, "do not register them again", async {
            let leaf = self.light.leaf(TreeId::Accounts, doctor).await?;
            Ok(Role::from_code(leaf[0]) == Some(Role::Doctor) && other_keys(public, &leaf).is_none())
        })
        .await?;
        self.publish(doctor, public).await
    }

    /// A doctor adds a record (a FHIR bundle) for `patient`, under a
    /// read-write consent covering all the patient's records. The record is
    /// readable by the patient, the doctor, and every grantee whose consent
    /// covers all the patient's records. Returns the record id.
    pub async fn add_record(&mut self, patient: u64, bundle: &[u8]) -> Result<u64, ClientError> {
        crate::envelope::validate_bundle(bundle)?;
        let t = self.now().await?;
        let consent = self
            .my_consents()
            .await?
            .into_iter()
            .find(|(_, c)| {
                c.grantee == self.account
                    && c.target == ConsentTarget::AllRecords
                    && c.allows(patient, 0, true, t)
            })
            .map(|(id, _)| id)
            .ok_or_else(|| {
                ClientError::Refused(format!(
                    "account {} holds no read-write consent to all of patient {patient}'s records",
                    self.account
                ))
            })?;
        let record = self.free_id(TreeId::Records).await?;
        let mut readers = self.readers_of(patient, record).await?;
        readers.push(self.account);
        let ids = self.identities(patient, &readers).await?;
        let (env, _key) = Envelope::seal(bundle, record, &ids.iter().collect::<Vec<_>>())?;
        let (cid, meta_hash) = self.put(&env).await?;
        let body = TxBody::AddRecord { record, patient, consent, cid_digest: cid.digest(), meta_hash };
        if let Err(e) = self.submit(body).await {
            // Nothing refers to the content: let it go (unless the
            // transaction may stand).
            if !matches!(e, ClientError::Unsettled { .. }) {
                let _ = self.release(cid).await;
            }
            return Err(e);
        }
        let what = format!("record {record} added for patient {patient}");
        let then = format!("do not add it again: read record {record} once L1 has it");
        self.confirm(&what, &then, async {
            Ok(found(self.record(record).await)?.is_some_and(|l| {
                l.owner == patient && l.author == self.account && l.cid_digest == cid.digest() && !l.deleted
            }))
        })
        .await?;
        self.without_lapsed_readers(record, patient, &readers, bundle, consent, cid).await.map_err(|e| {
            lapsed_reader_left(format!("record {record} is added for patient {patient}"), record, e)
        })?;
        self.released_stale(|| format!("record {record} added for patient {patient}")).await?;
        Ok(record)
    }

    /// After a write of `record` (sealed for `sealed_for` besides its owner
    /// as `cid`) has landed: a consent among them revoked or lapsed while
    /// the write was under way (after its readers were read, before it was
    /// sealed) left its grantee with the key, and a patient's revoke that
    /// listed the records before this version existed did not re-key it.
    /// Such a version is sealed again, at once, for the readers that hold
    /// (the writer, who knows what it wrote, is not a reason to). Returns
    /// the record's content now.
    async fn without_lapsed_readers(
        &mut self,
        record: u64,
        owner: u64,
        sealed_for: &[u64],
        bundle: &[u8],
        consent: u64,
        cid: Cid,
    ) -> Result<Cid, ClientError> {
        let readers = self.readers_of(owner, record).await?;
        if sealed_for.iter().all(|r| *r == owner || *r == self.account || readers.contains(r)) {
            return Ok(cid);
        }
        // Only this version is ours to seal again: a newer one (or a delete)
        // since is its writer's, sealed for the readers it read then.
        let now = self.record(record).await?;
        if now.deleted || now.cid_digest != cid.digest() {
            return Ok(cid);
        }
        let ids = self.identities(owner, &readers).await?;
        self.rekey_to(record, &ids, bundle, consent, (cid, now.version)).await
    }

    /// Writes a new version of a record: its owner, or its author under a
    /// read-write consent. The new envelope is for the owner and the
    /// grantees whose consents cover the record now (the author among them
    /// only while theirs holds), under a fresh key; the old one is unpinned.
    pub async fn update_record(&mut self, record: u64, bundle: &[u8]) -> Result<Cid, ClientError> {
        self.update_record_from(record, None, bundle).await
    }

    /// [`Self::update_record`] of the version `read` (the one a person saw
    /// and edited; `None`: the one L1 shows now). A record that has moved on
    /// since is [`ClientError::Stale`], before anything is written: another
    /// writer's update is never overwritten unseen, however long the edit
    /// took.
    pub async fn update_record_from(
        &mut self,
        record: u64,
        read: Option<u64>,
        bundle: &[u8],
    ) -> Result<Cid, ClientError> {
        crate::envelope::validate_bundle(bundle)?;
        let leaf = self.live_record(record).await?;
        match read {
            Some(read) if read < leaf.version => return Err(ClientError::Stale { record, read, cid: None }),
            Some(read) if read > leaf.version => {
                return Err(ClientError::Refused(format!(
                    "record {record} is at version {} on L1, before the version {read} given: L1 has not caught \
                     up yet (try again shortly), or the version is wrong",
                    leaf.version
                )));
            }
            _ => {}
        }
        let consent = if leaf.owner == self.account {
            0
        } else if leaf.author == self.account {
            self.my_consent_for(leaf.owner, record, true).await?.ok_or_else(|| {
                ClientError::Refused(format!(
                    "account {} holds no read-write consent for record {record}",
                    self.account
                ))
            })?
        } else {
            return Err(ClientError::Refused(format!(
                "only record {record}'s owner or author may update it"
            )));
        };
        // The author reads it only under a consent that still holds: a
        // revoked author gets no key to the new version.
        let readers = self.readers_of(leaf.owner, record).await?;
        let old = self.cid_of(&leaf).await?;
        let ids = self.identities(leaf.owner, &readers).await?;
        let cid = self.rekey_to(record, &ids, bundle, consent, (old, leaf.version)).await?;
        let cid = self
            .without_lapsed_readers(record, leaf.owner, &readers, bundle, consent, cid)
            .await
            .map_err(|e| lapsed_reader_left(format!("record {record}'s new version {cid}"), record, e))?;
        self.released_stale(|| format!("record {record}'s new version {cid}")).await?;
        Ok(cid)
    }

    /// Seals `bundle` for `ids` (the owner and the readers) under a fresh
    /// key, stores it, sends the update, unpins `old`.
    async fn rekey_to(
        &mut self,
        record: u64,
        ids: &[PublicIdentity],
        bundle: &[u8],
        consent: u64,
        old: (Cid, u64),
    ) -> Result<Cid, ClientError> {
        let (env, _key) = Envelope::seal(bundle, record, &ids.iter().collect::<Vec<_>>())?;
        self.replace(record, &env, consent, old).await
    }

    async fn replace(
        &mut self,
        record: u64,
        env: &Envelope,
        consent: u64,
        (old, read): (Cid, u64),
    ) -> Result<Cid, ClientError> {
        let (cid, meta_hash) = self.put(env).await?;
        let body =
            TxBody::UpdateRecord { record, version: read, consent, cid_digest: cid.digest(), meta_hash };
        if let Err(e) = self.submit(body).await {
            if cid != old && !matches!(e, ClientError::Unsettled { .. }) {
                let _ = self.release(cid).await;
            }
            return Err(match e {
                ClientError::Rejected { code, .. } if code == "stale_version" => {
                    ClientError::Stale { record, read, cid: Some(cid) }
                }
                e => e,
            });
        }
        // The old content is let go only once L1 holds the new version (else
        // it is the record's only content).
        let what = format!("record {record}'s new version {cid}");
        let then = format!("read record {record} once L1 has it; its old content {old} is still pinned");
        // Versions count updates: this one made `read + 1`. A later version
        // with other content means another writer's update came after.
        let made = read + 1;
        let confirmed = self
            .confirm(&what, &then, async {
                let Some(l) = found(self.record(record).await)? else { return Ok(false) };
                if l.cid_digest == cid.digest() && !l.deleted {
                    return Ok(true);
                }
                if l.version > made || l.deleted && l.version >= made {
                    let (now, deleted) = (l.version, l.deleted);
                    return Err(ClientError::Superseded { record, made, now, deleted, cid });
                }
                Ok(false)
            })
            .await;
        if let Err(e @ ClientError::Superseded { .. }) = confirmed {
            // Neither is the record's content on L1 now.
            for c in [cid, old] {
                let _ = self.release(c).await;
            }
            return Err(e);
        }
        confirmed?;
        // Should that fail, the flow goes on (its other steps matter more);
        // it says so at its end, and the next write tries again.
        if cid != old && self.release(old).await.is_err() {
            self.stale.push(old);
        }
        Ok(cid)
    }

    /// The end of a flow that wrote `written`: superseded content that could
    /// not be unpinned (this flow's, or an earlier one's) is tried again;
    /// what still cannot be is said, as not needing a write again.
    async fn released_stale(&mut self, written: impl FnOnce() -> String) -> Result<(), ClientError> {
        let mut first = None;
        for cid in std::mem::take(&mut self.stale) {
            if let Err(e) = self.release(cid).await {
                self.stale.push(cid);
                first.get_or_insert(e);
            }
        }
        let Some(error) = first else { return Ok(()) };
        let cids = self.stale.iter().map(Cid::to_string).collect::<Vec<_>>().join(", ");
        Err(still_pinned(written(), &cids, error))
    }

    async fn live_record(&self, record: u64) -> Result<RecordLeaf, ClientError> {
        let leaf = self.record(record).await?;
        if leaf.deleted {
            return Err(ClientError::Refused(format!("record {record} was deleted")));
        }
        Ok(leaf)
    }

    /// Reads a record: checks it and the reader's consent against L1, logs
    /// the access with a transaction (the owner's own reads are not logged),
    /// then fetches and decrypts it.
    pub async fn read(&mut self, record: u64) -> Result<ReadRecord, ClientError> {
        let leaf = self.live_record(record).await?;
        let consent = if leaf.owner == self.account {
            None
        } else {
            let c = self.my_consent_for(leaf.owner, record, false).await?.ok_or_else(|| {
                ClientError::Refused(format!(
                    "account {} holds no active consent to read record {record} (none granted, revoked or expired)",
                    self.account
                ))
            })?;
            self.submit(TxBody::LogAccess { record, consent: c }).await?;
            self.settle().await?;
            Some(c)
        };
        let (cid, env) = self.envelope(record, &leaf).await?;
        let bundle = env.open(&self.identity)?;
        Ok(ReadRecord { leaf, cid, bundle, consent })
    }

    /// Break-glass: a doctor reads a record without consent. The access is
    /// logged first, flagged as an emergency with the reason's hash; the
    /// record opens only if the envelope holds a key for this doctor (for
    /// instance from a consent that has since lapsed).
    pub async fn emergency_read(&mut self, record: u64, reason: &str) -> Result<ReadRecord, ClientError> {
        if reason.trim().is_empty() {
            return Err(ClientError::Refused("an emergency access needs a stated reason".into()));
        }
        let leaf = self.live_record(record).await?;
        self.submit(TxBody::EmergencyAccess { record, reason_hash: reason_hash(reason) }).await?;
        self.settle().await?;
        let (cid, env) = self.envelope(record, &leaf).await?;
        let bundle = env.open(&self.identity)?;
        Ok(ReadRecord { leaf, cid, bundle, consent: None })
    }

    /// The live records a consent of this patient's covers.
    async fn covered_records(&self, target: ConsentTarget) -> Result<Vec<(u64, RecordLeaf)>, ClientError> {
        let ids = match target {
            ConsentTarget::Record(r) => vec![r],
            ConsentTarget::AllRecords => self.index_of(self.account).await?.records,
        };
        let mut out = Vec::new();
        for r in ids {
            let leaf = self.record(r).await?;
            if leaf.owner == self.account && !leaf.deleted {
                out.push((r, leaf));
            }
        }
        Ok(out)
    }

    /// A patient grants `grantee` access: the consent transaction, then the
    /// grantee's copy of each covered record's key (new envelopes, the old
    /// ones unpinned; see [`Self::share`]). Returns the consent id. Should
    /// the sharing stop after the consent is sealed, the error is
    /// [`ClientError::Unfinished`]: the consent stands, and [`Self::share`]
    /// finishes it (granting again would make a second consent).
    pub async fn grant(
        &mut self,
        grantee: u64,
        scope: Scope,
        target: ConsentTarget,
        expiry: u64,
    ) -> Result<u64, ClientError> {
        let reader = self.public_identity(grantee).await?;
        let consent = self.free_id(TreeId::Consents).await?;
        self.submit(TxBody::Grant { consent, grantee, scope, target, expiry }).await?;
        let granted = ConsentLeaf { patient: self.account, grantee, scope, target, expiry, revoked: false };
        let what = format!("consent {consent} to account {grantee}");
        let then = format!("do not grant again: share consent {consent} once L1 has it");
        self.confirm(&what, &then, async {
            Ok(found(self.consent(consent).await)?.is_some_and(|c| c == granted))
        })
        .await?;
        self.share_with(target, &reader).await.map_err(|e| ClientError::Unfinished {
            what: format!(
                "consent {consent} to account {grantee} is granted and stands, but sharing the records it covers \
                 stopped (finish it by sharing consent {consent} again, not by granting again)"
            ),
            error: Box::new(e),
        })?;
        self.released_stale(|| format!("consent {consent} to account {grantee} and its sharing")).await?;
        Ok(consent)
    }

    /// Shares the records an active consent this patient granted covers
    /// with its grantee: each envelope without the grantee's copy of the key
    /// gets one. Returns the records shared now (none when every one was
    /// already). Finishes a grant cut short; calling it again changes
    /// nothing.
    pub async fn share(&mut self, consent: u64) -> Result<Vec<u64>, ClientError> {
        let c = self.granted_consent(consent).await?;
        if c.revoked || c.expiry <= self.now().await? {
            return Err(ClientError::Refused(format!(
                "consent {consent} is revoked or expired: nothing to share"
            )));
        }
        let reader = self.public_identity(c.grantee).await?;
        let shared = self.share_with(c.target, &reader).await?;
        self.released_stale(|| format!("the sharing of consent {consent}")).await?;
        Ok(shared)
    }

    /// A consent this patient granted, checked against L1.
    async fn granted_consent(&self, consent: u64) -> Result<ConsentLeaf, ClientError> {
        let c = self.consent(consent).await?;
        if c.patient != self.account {
            return Err(ClientError::Refused(format!(
                "consent {consent} was not granted by account {}",
                self.account
            )));
        }
        Ok(c)
    }

    async fn share_with(
        &mut self,
        target: ConsentTarget,
        reader: &PublicIdentity,
    ) -> Result<Vec<u64>, ClientError> {
        let mut shared = Vec::new();
        for (record, _) in self.covered_records(target).await? {
            // Once more, read afresh, if another client of the account moved
            // its nonce meanwhile.
            // Or once L1 shows another writer's version, if one came first.
            let done = match self.share_one(record, reader).await {
                Err(ClientError::Rejected { code, .. }) if code == "bad_nonce" => {
                    self.share_one(record, reader).await?
                }
                Err(ClientError::Stale { read, .. }) => {
                    self.wait_past(record, read).await?;
                    self.share_one(record, reader).await?
                }
                r => r?,
            };
            if done {
                shared.push(record);
            }
        }
        Ok(shared)
    }

    /// Adds `reader`'s copy of one of this patient's records' key, if its
    /// envelope lacks one; says whether it did.
    async fn share_one(&mut self, record: u64, reader: &PublicIdentity) -> Result<bool, ClientError> {
        let leaf = self.live_record(record).await?;
        let (old, mut env) = self.envelope(record, &leaf).await?;
        if env.recipients.iter().any(|r| r.rsa_key_hash == reader.rsa_key_hash) {
            return Ok(false);
        }
        let key = env.record_key(&self.identity)?;
        env.add_reader(&key, reader)?;
        self.replace(record, &env, 0, (old, leaf.version)).await?;
        Ok(true)
    }

    /// A patient revokes a consent: the revoke transaction, then every
    /// record it covered is re-keyed for the readers that remain (the
    /// revoked grantee's copy of the old key opens nothing new), and the old
    /// content is unpinned. Returns the records re-keyed.
    ///
    /// A revoke cut short after its transaction (the content store down, a
    /// crash) is finished by calling it again: the transaction is not sent
    /// twice, and only the records whose envelopes still hold a reader that
    /// no consent allows are re-keyed.
    pub async fn revoke(&mut self, consent: u64) -> Result<Vec<u64>, ClientError> {
        let c = self.granted_consent(consent).await?;
        if !c.revoked {
            self.submit(TxBody::Revoke { consent }).await?;
            // Re-keying reads the readers from L1: with the revoke missing
            // there, the grantee would stay one and nothing be re-keyed.
            let what = format!("the revoke of consent {consent}");
            let then =
                "revoke it again once L1 has it, to re-key the records it covered: it is not sent twice";
            self.confirm(&what, then, async {
                Ok(found(self.consent(consent).await)?.is_some_and(|c| c.revoked))
            })
            .await?;
        }
        let mut rekeyed = Vec::new();
        let mut failed = Vec::new();
        for (record, _) in self.covered_records(c.target).await? {
            // Once more, read afresh, if another client of the account moved
            // its nonce meanwhile.
            // Or once L1 shows another writer's version, if one came first.
            let r = match self.rekey_without(record).await {
                Err(ClientError::Rejected { code, .. }) if code == "bad_nonce" => {
                    self.rekey_without(record).await
                }
                Err(ClientError::Stale { read, .. }) => match self.wait_past(record, read).await {
                    Ok(()) => self.rekey_without(record).await,
                    Err(e) => Err(e),
                },
                r => r,
            };
            // One record that cannot be re-keyed (its content unreachable, an
            // envelope this patient cannot open) does not keep the others
            // readable by the revoked grantee.
            match r {
                Ok(true) => rekeyed.push(record),
                Ok(false) => {}
                Err(e) => failed.push((record, e)),
            }
        }
        if !failed.is_empty() {
            let list = |ids: &[u64]| ids.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
            let not: Vec<u64> = failed.iter().map(|(r, _)| *r).collect();
            let (_, first) = failed.swap_remove(0);
            return Err(ClientError::Unfinished {
                what: format!(
                    "consent {consent} is revoked; records re-keyed: {}; not re-keyed yet: {} (revoke consent \
                     {consent} again to finish)",
                    if rekeyed.is_empty() { "none".into() } else { list(&rekeyed) },
                    list(&not)
                ),
                error: Box::new(first),
            });
        }
        self.released_stale(|| format!("the revoke of consent {consent} and its re-keying")).await?;
        Ok(rekeyed)
    }

    /// Re-keys one of this patient's records for the readers its consents
    /// allow now, if its envelope holds any other; says whether it did.
    async fn rekey_without(&mut self, record: u64) -> Result<bool, ClientError> {
        let leaf = self.live_record(record).await?;
        let (old, env) = self.envelope(record, &leaf).await?;
        // Readers are read after the revoke is on L1, so the grantee is
        // gone unless another consent still covers the record.
        let readers = self.readers_of(self.account, record).await?;
        let ids = self.identities(self.account, &readers).await?;
        if env.recipients.iter().all(|r| ids.iter().any(|i| i.rsa_key_hash == r.rsa_key_hash)) {
            return Ok(false); // re-keyed already, or never shared with the grantee
        }
        let bundle = env.open(&self.identity)?;
        self.rekey_to(record, &ids, &bundle, 0, (old, leaf.version)).await?;
        Ok(true)
    }

    /// A patient deletes a record: the delete transaction, then its content
    /// (the only place its wrapped keys live) is unpinned. A delete cut short
    /// after its transaction is finished by calling it again (the content is
    /// unpinned; nothing is sent twice).
    pub async fn delete(&mut self, record: u64) -> Result<Cid, ClientError> {
        let leaf = self.record(record).await?;
        if leaf.owner != self.account {
            return Err(ClientError::Refused(format!(
                "account {} does not own record {record}",
                self.account
            )));
        }
        let cid = match self.cid_of(&leaf).await {
            Err(ClientError::Storage(ContentError::NotFound(_))) if leaf.deleted => {
                return Err(ClientError::Gone(format!(
                    "record {record} was deleted and its content is gone"
                )));
            }
            r => r?,
        };
        if !leaf.deleted {
            self.submit(TxBody::DeleteRecord { record }).await?;
            // The content is let go only once L1 holds the record deleted.
            let what = format!("the delete of record {record}");
            let then = "delete it again once L1 has it, to unpin its content: it is not sent twice";
            self.confirm(&what, then, async {
                Ok(found(self.record(record).await)?.is_some_and(|l| l.deleted))
            })
            .await?;
        }
        self.release(cid)
            .await
            .map_err(|e| still_pinned(format!("the delete of record {record}"), &cid.to_string(), e))?;
        Ok(cid)
    }
}

/// A write that stands on L1 whose superseded content could not be
/// unpinned: said so, naming the content, not as a plain storage error that
/// invites writing again.
fn still_pinned(written: String, old: &str, e: ClientError) -> ClientError {
    ClientError::Unfinished {
        what: format!(
            "{written} stands on L1, but the content it supersedes, {old}, is still pinned (it holds the keys \
             of the readers it was sealed for): unpin it from the content store (this session tries again at \
             its next write); nothing needs writing again"
        ),
        error: Box::new(e),
    }
}

/// A checked read's leaf, `None` where L1's state has none (any other
/// error, L1 unreachable say, stays an error).
fn found<T>(r: Result<T, ClientError>) -> Result<Option<T>, ClientError> {
    match r {
        Ok(t) => Ok(Some(t)),
        Err(ClientError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// What differs between `keys` and those an account's `leaf` registered,
/// if anything.
fn other_keys(keys: &PublicIdentity, leaf: &[Fr]) -> Option<&'static str> {
    if keys.babyjub.x != leaf[1] || keys.babyjub.y != leaf[2] {
        Some("another signing key")
    } else if keys.rsa_key_hash != leaf[3] {
        Some("another RSA key")
    } else {
        None
    }
}

/// A record in [`Session::listed_records`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedRecord {
    /// Its id.
    pub id: u64,
    /// Its leaf.
    pub leaf: RecordLeaf,
    /// The consent it is listed under; `None` for one this user owns or wrote.
    pub consent: Option<u64>,
}

async fn get_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
) -> Result<T, ClientError> {
    let r = crate::light::get(http, url).await.map_err(|e| ClientError::Coordinator {
        url: url.into(),
        why: format!("does not answer: {}", chain(&e)),
    })?;
    if !r.status().is_success() {
        let why = format!("{}: {}", r.status(), r.text().await.unwrap_or_default());
        return Err(ClientError::Coordinator { url: url.into(), why });
    }
    r.json()
        .await
        .map_err(|e| ClientError::Coordinator { url: url.into(), why: format!("malformed answer: {e}") })
}

/// An error with its causes ("error sending request: connection refused").
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Decimal of a field element (for display).
pub fn dec(x: &Fr) -> String {
    fr_to_dec(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metadata_hash_names_the_codec() {
        assert_ne!(record_meta_hash(RAW), record_meta_hash(DAG_PB));
        assert_ne!(reason_hash("a"), reason_hash("b"));
    }
}
