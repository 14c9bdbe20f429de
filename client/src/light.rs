//! The light client: nothing the coordinator says about the state (a
//! record's CID, a consent, an audit entry) is believed until its Merkle
//! proof leads to the state root on the L1 rollup contract.
//!
//! A `GET /proof/{tree}/{index}` answer holds the leaf, its Merkle path, the
//! four tree roots and the audit count. The client recomputes
//! `path.root(index, leaf_hash(leaf))`, which must be the tree's root, and
//! `state_root(instance, tree_roots, audit_count)`, which must be the root
//! L1 holds. The coordinator answers from its latest sealed batch, which L1
//! reaches once that batch is proven and landed: until then the client waits
//! (bounded); once L1 has as many batches and still another root, the
//! coordinator is lying.

use alloy::primitives::Address;
use medrollup_circuits::field::{Fr, fr_to_dec, serde_fr};
use medrollup_circuits::merkle::MerklePath;
use medrollup_circuits::state::{LEAF_WIDTH, Leaf, TreeId, leaf_hash, state_root};
use medrollup_l1::submitter::{self as l1, L1Error};
use serde::Deserialize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A `GET /proof/{tree}/{index}` answer.
#[derive(Clone, Debug, Deserialize)]
pub struct ProofAnswer {
    /// Which tree.
    pub tree: TreeId,
    /// Leaf index.
    pub index: u64,
    /// The leaf's fields (decimal).
    #[serde(with = "serde_fr::vec")]
    pub leaf: Vec<Fr>,
    /// Siblings from the leaf up.
    pub path: MerklePath,
    /// Roots of the four trees.
    #[serde(with = "serde_fr::vec")]
    pub tree_roots: Vec<Fr>,
    /// Audit entries so far.
    pub audit_count: u64,
    /// The state root the coordinator claims.
    #[serde(with = "serde_fr")]
    pub root: Fr,
    /// Sealed batches behind that root.
    pub batches_sealed: u64,
}

/// Why an answer is not believed.
#[derive(Debug, thiserror::Error)]
pub enum LightError {
    /// The answer's shape is wrong.
    #[error("the coordinator's answer is malformed: {0}")]
    Malformed(String),
    /// The path does not lead from the leaf to the tree's root.
    #[error(
        "refused: the Merkle path of {tree:?} leaf {index} does not lead to the tree root the coordinator gave \
         (the leaf or the path was altered)"
    )]
    PathMismatch {
        /// Tree.
        tree: TreeId,
        /// Index.
        index: u64,
    },
    /// The trees do not hash to the claimed root.
    #[error(
        "refused: the tree roots and audit count hash to {computed}, not to the root {claimed} the coordinator claims"
    )]
    RootMismatch {
        /// Computed.
        computed: String,
        /// Claimed.
        claimed: String,
    },
    /// L1 holds another root after as many batches.
    #[error(
        "refused: on L1 the root after {l1_batches} batches is {l1_root}, but the coordinator's state after \
         {claimed_batches} batches has root {claimed}: the coordinator's answer is not the chain's state"
    )]
    NotOnL1 {
        /// L1's batch count.
        l1_batches: u64,
        /// L1's root.
        l1_root: String,
        /// The coordinator's batch count.
        claimed_batches: u64,
        /// The coordinator's root.
        claimed: String,
    },
    /// L1 did not reach the coordinator's batch in time.
    #[error(
        "L1 is at batch {l1_batches}, the coordinator's answer is for {claimed_batches}: not landed within {waited:?}"
    )]
    NotYetOnL1 {
        /// L1's batch count.
        l1_batches: u64,
        /// The coordinator's.
        claimed_batches: u64,
        /// How long the client waited.
        waited: Duration,
    },
    /// The answer is L1's state, but an older one than L1 (or this client)
    /// has seen since: a coordinator replaying the past (a consent from
    /// before its revoke, a record from before its delete).
    #[error(
        "refused: the coordinator answered from the state after {answered} batches, but L1 or this client \
         has seen {seen} batches: the answer is stale"
    )]
    Stale {
        /// The answer's batch count.
        answered: u64,
        /// The batch count L1 (or this client) had reached before the answer came.
        seen: u64,
    },
    /// L1 could not be read.
    #[error(transparent)]
    L1(#[from] L1Error),
    /// The coordinator could not be reached.
    #[error("the coordinator: {0}")]
    Coordinator(String),
}

impl ProofAnswer {
    /// Checks the answer on its own: the leaf's path leads to its tree's
    /// root, and the trees hash to the claimed state root. Returns the leaf.
    pub fn check(&self, instance: Fr) -> Result<Leaf, LightError> {
        let leaf: Leaf = self.leaf.as_slice().try_into().map_err(|_| {
            LightError::Malformed(format!("a leaf has {LEAF_WIDTH} fields, not {}", self.leaf.len()))
        })?;
        let roots: [Fr; 4] = self.tree_roots.as_slice().try_into().map_err(|_| {
            LightError::Malformed(format!("4 tree roots expected, got {}", self.tree_roots.len()))
        })?;
        // Each level takes two bits of the index: higher bits would name
        // another leaf by the same path.
        let levels = self.path.siblings.len() as u32;
        if levels < 32 && self.index >> (2 * levels) != 0 {
            return Err(LightError::Malformed(format!(
                "leaf index {} is beyond a tree of {levels} levels",
                self.index
            )));
        }
        // An empty leaf hashes to zero whatever its other fields hold: an
        // answer could dress an empty place up as an entry (an audit entry
        // that never was) and still lead to the root. Empty is all zeros.
        if leaf[0] == Fr::from(0u64) && leaf.iter().any(|x| *x != Fr::from(0u64)) {
            return Err(LightError::Malformed(format!(
                "{:?} leaf {} is empty on L1 but the answer gives it fields",
                self.tree, self.index
            )));
        }
        if self.path.root(self.index, leaf_hash(&leaf)) != roots[self.tree as usize] {
            return Err(LightError::PathMismatch { tree: self.tree, index: self.index });
        }
        let computed = state_root(instance, &roots, self.audit_count);
        if computed != self.root {
            return Err(LightError::RootMismatch {
                computed: fr_to_dec(&computed),
                claimed: fr_to_dec(&self.root),
            });
        }
        Ok(leaf)
    }
}

/// `GET url`. A GET is safe to repeat: a connection that fails or is reset
/// is tried twice more before the coordinator counts as down.
pub(crate) async fn get(http: &reqwest::Client, url: &str) -> Result<reqwest::Response, reqwest::Error> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match http.get(url).send().await {
            Err(e) if attempt < 3 && (e.is_connect() || e.is_request()) => {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            r => return r,
        }
    }
}

/// Reads leaves through a coordinator, believing only what L1 backs.
#[derive(Debug)]
pub struct LightClient {
    coordinator: String,
    http: reqwest::Client,
    l1: alloy::providers::DynProvider,
    rollup: Address,
    instance: Fr,
    /// How long to wait for L1 to reach the coordinator's batch.
    pub wait: Duration,
    /// Answers must be at least this new (batches sealed): raised by what
    /// this client has seen sealed ([`Self::require_at_least`]).
    floor: AtomicU64,
    /// Whether an answer has passed the check against L1 (and with it the
    /// instance this client was given, which every root commits to).
    verified: AtomicBool,
}

/// A copy that starts from what this one has seen (its floor, and whether
/// an answer passed the check).
impl Clone for LightClient {
    fn clone(&self) -> Self {
        Self {
            coordinator: self.coordinator.clone(),
            http: self.http.clone(),
            l1: self.l1.clone(),
            rollup: self.rollup,
            instance: self.instance,
            wait: self.wait,
            floor: AtomicU64::new(self.floor.load(Ordering::SeqCst)),
            verified: AtomicBool::new(self.verified.load(Ordering::SeqCst)),
        }
    }
}

impl LightClient {
    /// A client of the coordinator at `coordinator` (its HTTP API), checking
    /// against the rollup at `rollup` on the node at `rpc_url`.
    pub fn new(coordinator: &str, rpc_url: &str, rollup: Address, instance: Fr) -> Result<Self, LightError> {
        Ok(Self {
            coordinator: coordinator.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("an HTTP client"),
            l1: l1::connect_read_only(rpc_url)?,
            rollup,
            instance,
            wait: Duration::from_secs(120),
            floor: AtomicU64::new(0),
            verified: AtomicBool::new(false),
        })
    }

    /// From now on, answers from before `batches` sealed batches are stale
    /// (say, after this client's own transaction was sealed in batch
    /// `batches - 1`). Never lowers the floor.
    pub fn require_at_least(&self, batches: u64) {
        self.floor.fetch_max(batches, Ordering::Relaxed);
    }

    /// The current floor (see [`Self::require_at_least`]).
    pub fn floor(&self) -> u64 {
        self.floor.load(Ordering::Relaxed)
    }

    /// Whether an answer has been checked against L1 yet: until then the
    /// instance this client was given (by the coordinator) is unconfirmed,
    /// and nothing should be signed for it.
    pub fn instance_verified(&self) -> bool {
        self.verified.load(Ordering::Relaxed)
    }

    /// The time of L1's latest block (Unix seconds).
    pub async fn chain_time(&self) -> Result<u64, LightError> {
        Ok(l1::chain_time(&self.l1).await?)
    }

    /// The coordinator's answer for a leaf, unchecked.
    pub async fn fetch(&self, tree: TreeId, index: u64) -> Result<ProofAnswer, LightError> {
        let name = serde_json::to_value(tree).expect("json");
        let url = format!("{}/proof/{}/{index}", self.coordinator, name.as_str().unwrap_or_default());
        let r =
            get(&self.http, &url).await.map_err(|e| LightError::Coordinator(format!("GET {url}: {e:?}")))?;
        if !r.status().is_success() {
            let status = r.status();
            return Err(LightError::Coordinator(format!(
                "GET {url}: {status}: {}",
                r.text().await.unwrap_or_default()
            )));
        }
        r.json().await.map_err(|e| LightError::Malformed(e.to_string()))
    }

    /// Checks `answer` against L1, waiting (bounded) for L1 to reach it: the
    /// root L1 holds after the answer's number of batches (however far L1
    /// has moved on since) must be the answer's root, and the answer must be
    /// no older than this client's floor ([`Self::require_at_least`]).
    pub async fn verify(&self, answer: &ProofAnswer) -> Result<Leaf, LightError> {
        self.verify_since(answer, 0).await
    }

    /// [`Self::verify`], with the answer also no older than `seen` batches.
    async fn verify_since(&self, answer: &ProofAnswer, seen: u64) -> Result<Leaf, LightError> {
        let leaf = answer.check(self.instance)?;
        let seen = seen.max(self.floor());
        if answer.batches_sealed < seen {
            return Err(LightError::Stale { answered: answer.batches_sealed, seen });
        }
        let claimed = l1::root_word(&answer.root);
        let started = Instant::now();
        loop {
            match l1::root_after_claimed(&self.l1, self.rollup, answer.batches_sealed, claimed).await? {
                Some(root) if root == claimed => {
                    self.verified.store(true, Ordering::Relaxed);
                    return Ok(leaf);
                }
                Some(root) => {
                    return Err(LightError::NotOnL1 {
                        l1_batches: answer.batches_sealed,
                        l1_root: root.to_string(),
                        claimed_batches: answer.batches_sealed,
                        claimed: claimed.to_string(),
                    });
                }
                None if started.elapsed() > self.wait => {
                    let chain = l1::chain_state(&self.l1, self.rollup).await?;
                    return Err(LightError::NotYetOnL1 {
                        l1_batches: chain.count,
                        claimed_batches: answer.batches_sealed,
                        waited: self.wait,
                    });
                }
                None => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    /// A leaf, fetched and verified; the answer must be at least as new as
    /// L1 was before it was asked for (a coordinator seals every batch
    /// before it lands, so an honest answer always is).
    pub async fn leaf(&self, tree: TreeId, index: u64) -> Result<Leaf, LightError> {
        let seen = l1::batch_count(&self.l1, self.rollup).await?;
        let a = self.fetch(tree, index).await?;
        if a.tree != tree || a.index != index {
            return Err(LightError::Malformed(format!(
                "asked for {tree:?} leaf {index}, the answer is for {:?} leaf {}",
                a.tree, a.index
            )));
        }
        self.verify_since(&a, seen).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use medrollup_circuits::batch::BatchBuilder;
    use medrollup_circuits::sample;
    use medrollup_circuits::state::State;

    /// What the coordinator's `GET /proof` gives, built from a state.
    fn answer(st: &State, tree: TreeId, index: u64) -> ProofAnswer {
        let v = serde_json::json!({
            "tree": tree, "index": index,
            "leaf": st.leaf(tree, index).iter().map(fr_to_dec).collect::<Vec<_>>(),
            "path": st.path(tree, index),
            "tree_roots": st.roots().iter().map(fr_to_dec).collect::<Vec<_>>(),
            "audit_count": st.audit_count(), "root": fr_to_dec(&st.root()), "batches_sealed": 4,
        });
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn honest_answers_check_and_tampered_ones_are_refused_with_the_reason() {
        let mut st = State::genesis(&sample::genesis(5)).unwrap();
        let mut b = BatchBuilder::new(&mut st, 16, sample::NOW);
        for tx in sample::transactions() {
            b.push(&tx).unwrap();
        }
        b.finish();
        let instance = st.instance();
        for (tree, index) in
            [(TreeId::Accounts, 100), (TreeId::Records, 500), (TreeId::Consents, 100), (TreeId::Audit, 0)]
        {
            let a = answer(&st, tree, index);
            assert_eq!(a.check(instance).unwrap(), st.leaf(tree, index), "{tree:?} {index}");
        }
        let honest = answer(&st, TreeId::Records, 500);
        // A changed field of the record (its CID digest, its owner, ...).
        let mut a = honest.clone();
        a.leaf[2] += Fr::from(1u64);
        assert!(matches!(a.check(instance), Err(LightError::PathMismatch { .. })));
        // A leaf moved to another index.
        let mut a = honest.clone();
        a.index += 1;
        assert!(matches!(a.check(instance), Err(LightError::PathMismatch { .. })));
        // A forged tree root that fits the forged leaf, but not the state root.
        let mut a = honest.clone();
        a.leaf[2] += Fr::from(1u64);
        a.tree_roots[1] = a.path.root(a.index, leaf_hash(&a.leaf.clone().try_into().unwrap()));
        let e = a.check(instance).unwrap_err();
        assert!(matches!(e, LightError::RootMismatch { .. }), "{e}");
        assert!(e.to_string().contains("refused"), "{e}");
        // And another instance's state.
        assert!(matches!(honest.check(instance + Fr::from(1u64)), Err(LightError::RootMismatch { .. })));
        let mut a = honest.clone();
        a.leaf.pop();
        assert!(matches!(a.check(instance), Err(LightError::Malformed(_))));
        // An empty audit place (past the log's end) dressed up as an entry
        // about this patient: its hash is still the empty leaf's, so only
        // the emptiness rule refuses it.
        let mut a = answer(&st, TreeId::Audit, st.audit_count() + 1);
        assert_eq!(a.check(instance).unwrap(), [Fr::from(0u64); 7], "an honest empty leaf");
        a.leaf[1] = Fr::from(20u64); // actor
        a.leaf[2] = Fr::from(10u64); // patient
        let e = a.check(instance).unwrap_err();
        assert!(matches!(e, LightError::Malformed(_)) && e.to_string().contains("empty"), "{e}");
        // The same leaf and path under an index beyond the tree (the path
        // would read only its low digits): refused, not taken for leaf 500.
        let mut a = honest.clone();
        a.index += 1 << (2 * a.path.siblings.len());
        let e = a.check(instance).unwrap_err();
        assert!(matches!(e, LightError::Malformed(_)) && e.to_string().contains("beyond"), "{e}");
    }
}
