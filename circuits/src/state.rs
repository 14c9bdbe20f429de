//! The healthcare rollup state and its rules.
//!
//! Four sparse Merkle trees of the same height hold 7-field leaves:
//!
//! | tree | leaf fields |
//! |---|---|
//! | accounts | role, pk.x, pk.y, rsa key hash, nonce, 0, 0 |
//! | records | owner, author, cid hi, cid lo, meta hash, version, deleted |
//! | consents | patient, grantee, scope, all records?, record, expiry, revoked |
//! | audit | kind (1 read, 2 emergency), actor, patient, record, consent, reason, time |
//!
//! A leaf's hash is `Poseidon(fields)`, or 0 when the leaf is empty (all
//! fields 0; field 0 of an occupied leaf is never 0). The state root is
//! `Poseidon(instance, accounts, records, consents, audit, audit count)`.
//!
//! [`State::check`] enforces every rule with a typed error; [`State::execute`]
//! performs a transaction's effects without checking, in the fixed order the
//! circuit follows (signer's account, two reads, one update) and records the
//! Merkle paths: what an honest sequencer does after `check`, and what a
//! cheating one would do instead.

use crate::eddsa::{self, PublicKey};
use crate::field::{Fr, fr_to_u64};
use crate::merkle::{MerklePath, SparseTree};
use crate::poseidon;
use crate::tx::{ConsentTarget, Scope, SignedTx, TxBody, TxKind};
use ark_ff::Zero;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};

/// Fields per leaf.
pub const LEAF_WIDTH: usize = 7;
/// A leaf's fields.
pub type Leaf = [Fr; LEAF_WIDTH];

/// The four trees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TreeId {
    /// Accounts.
    Accounts = 0,
    /// Records.
    Records = 1,
    /// Consents.
    Consents = 2,
    /// Audit log.
    Audit = 3,
}

impl TreeId {
    /// The four, in root order.
    pub const ALL: [TreeId; 4] = [TreeId::Accounts, TreeId::Records, TreeId::Consents, TreeId::Audit];
}

/// Account roles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Owns records, grants and revokes access.
    Patient = 1,
    /// Writes and reads records with consent; may break the glass.
    Doctor = 2,
    /// In the genesis state; registers doctors.
    Hospital = 3,
}

impl Role {
    /// The role an account leaf's first field names (`None`: no account).
    pub fn from_code(x: Fr) -> Option<Role> {
        match fr_to_u64(&x)? {
            1 => Some(Role::Patient),
            2 => Some(Role::Doctor),
            3 => Some(Role::Hospital),
            _ => None,
        }
    }
}

/// Audit entry kinds.
pub const AUDIT_READ: u64 = 1;
/// An emergency (break-glass) access: flagged for review.
pub const AUDIT_EMERGENCY: u64 = 2;

/// Why a transaction is refused. Each variant names what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    /// An id does not fit the tree.
    #[error("{what} id {id} is outside the tree (ids are below {capacity})")]
    IdOutOfRange {
        /// Which id.
        what: &'static str,
        /// The id.
        id: u64,
        /// The tree's number of leaves.
        capacity: u64,
    },
    /// Account id 0 means "nobody" and cannot be registered.
    #[error("account id 0 is reserved; choose another id")]
    ReservedAccountId,
    /// Registration at an occupied id.
    #[error("account {0} already exists")]
    AccountExists(u64),
    /// No such account.
    #[error("account {0} does not exist")]
    UnknownAccount(u64),
    /// The signer's nonce differs.
    #[error("wrong nonce for account {account}: expected {expected}, got {got}")]
    BadNonce {
        /// The signer.
        account: u64,
        /// The account's nonce.
        expected: u64,
        /// The transaction's nonce.
        got: u64,
    },
    /// The account has used up its nonces.
    #[error("account {0} has exhausted its nonces")]
    NonceOverflow(u64),
    /// The signature does not verify under the signer's key and this rollup's instance id.
    #[error(
        "signature of account {0} does not verify (wrong key, altered fields, or signed for another rollup instance)"
    )]
    BadSignature(u64),
    /// A key that anyone could sign for (small order) or that is off the curve.
    #[error("public key is not usable: {0}")]
    InvalidPublicKey(String),
    /// The signer's role does not allow this transaction.
    #[error("account {account} is a {actual:?}; {action} needs a {expected}")]
    WrongRole {
        /// The account.
        account: u64,
        /// Its role.
        actual: Role,
        /// What it tried.
        action: &'static str,
        /// Which role is needed.
        expected: &'static str,
    },
    /// A new record at an occupied id.
    #[error("record {0} already exists")]
    RecordExists(u64),
    /// No such record.
    #[error("record {0} does not exist")]
    UnknownRecord(u64),
    /// The record was deleted.
    #[error("record {0} is deleted")]
    RecordDeleted(u64),
    /// The signer does not own the record or consent.
    #[error("account {account} does not own {what} {id}")]
    NotOwner {
        /// The signer.
        account: u64,
        /// "record" or "consent".
        what: &'static str,
        /// Its id.
        id: u64,
    },
    /// An update by someone who is neither the owner nor the author.
    #[error(
        "account {account} may not update record {record}: only its owner, or its author with write consent"
    )]
    NotAuthorized {
        /// The signer.
        account: u64,
        /// The record.
        record: u64,
    },
    /// No such consent.
    #[error("consent {0} does not exist")]
    UnknownConsent(u64),
    /// The consent belongs to another grantee or patient, or does not cover the record.
    #[error("consent {consent} does not allow this: {reason}")]
    ConsentMismatch {
        /// The consent.
        consent: u64,
        /// What does not match.
        reason: &'static str,
    },
    /// The consent was revoked.
    #[error("consent {0} is revoked")]
    ConsentRevoked(u64),
    /// The consent lapsed.
    #[error("consent {consent} expired at {expiry}; the batch time is {now}")]
    ConsentExpired {
        /// The consent.
        consent: u64,
        /// Its expiry.
        expiry: u64,
        /// The batch timestamp.
        now: u64,
    },
    /// A grant whose expiry is not in the future.
    #[error("expiry {expiry} is not after the batch time {now}")]
    ExpiryNotInFuture {
        /// The requested expiry.
        expiry: u64,
        /// The batch timestamp.
        now: u64,
    },
    /// The grantee must be a doctor or a hospital.
    #[error("account {0} cannot receive consent: grantees are doctors or hospitals")]
    InvalidGrantee(u64),
    /// An update names another version than the record's: another write came
    /// between the writer's read and this update.
    #[error(
        "record {record} is at version {current}, not {named}: it changed since it was read (read it again, then update)"
    )]
    StaleVersion {
        /// The record.
        record: u64,
        /// The version the update replaces.
        named: u64,
        /// The record's version.
        current: u64,
    },
    /// The record's version counter is exhausted.
    #[error("record {0} has reached the last version")]
    VersionOverflow(u64),
    /// The audit log is full.
    #[error("the audit log is full")]
    AuditLogFull,
    /// A genesis whose trees cannot be built.
    #[error("a tree height of {0} levels is not supported: 1 to 31 (4^levels leaves per tree)")]
    TreeHeight(usize),
    /// A field that must be 0 for this transaction is not.
    #[error("{0}")]
    NonCanonical(&'static str),
}

impl TxError {
    /// A stable, machine-readable name for the error (for answers and metrics).
    pub fn code(&self) -> &'static str {
        match self {
            TxError::IdOutOfRange { .. } => "id_out_of_range",
            TxError::ReservedAccountId => "reserved_account_id",
            TxError::AccountExists(_) => "account_exists",
            TxError::UnknownAccount(_) => "unknown_account",
            TxError::BadNonce { .. } => "bad_nonce",
            TxError::NonceOverflow(_) => "nonce_overflow",
            TxError::BadSignature(_) => "bad_signature",
            TxError::InvalidPublicKey(_) => "invalid_public_key",
            TxError::WrongRole { .. } => "wrong_role",
            TxError::RecordExists(_) => "record_exists",
            TxError::UnknownRecord(_) => "unknown_record",
            TxError::RecordDeleted(_) => "record_deleted",
            TxError::NotOwner { .. } => "not_owner",
            TxError::NotAuthorized { .. } => "not_authorized",
            TxError::UnknownConsent(_) => "unknown_consent",
            TxError::ConsentMismatch { .. } => "consent_mismatch",
            TxError::ConsentRevoked(_) => "consent_revoked",
            TxError::ConsentExpired { .. } => "consent_expired",
            TxError::ExpiryNotInFuture { .. } => "expiry_not_in_future",
            TxError::InvalidGrantee(_) => "invalid_grantee",
            TxError::StaleVersion { .. } => "stale_version",
            TxError::VersionOverflow(_) => "version_overflow",
            TxError::AuditLogFull => "audit_log_full",
            TxError::TreeHeight(_) => "tree_height",
            TxError::NonCanonical(_) => "non_canonical",
        }
    }
}

/// Account view of an accounts leaf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// Role.
    pub role: Role,
    /// Signing key.
    pub pubkey: PublicKey,
    /// Hash of the RSA public key.
    pub rsa_key_hash: Fr,
    /// Next nonce.
    pub nonce: u64,
}

/// What an account registers for its RSA public key (`spki`, the
/// SubjectPublicKeyInfo DER): `Poseidon(sha256(spki) as two 128-bit limbs)`.
pub fn rsa_key_hash(spki: &[u8]) -> Fr {
    poseidon::hash_sha256(spki)
}

/// One entry of the append-only audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// [`AUDIT_READ`] or [`AUDIT_EMERGENCY`].
    pub kind: u64,
    /// Who read.
    pub actor: u64,
    /// Whose record.
    pub patient: u64,
    /// Which record.
    pub record: u64,
    /// The consent used (reads).
    pub consent: u64,
    /// Hash of the stated reason (emergency access).
    #[serde(with = "crate::field::serde_fr")]
    pub reason_hash: Fr,
    /// Batch time of the access.
    pub timestamp: u64,
}

impl AuditEntry {
    /// The leaf fields.
    pub fn fields(&self) -> Leaf {
        [
            f(self.kind),
            f(self.actor),
            f(self.patient),
            f(self.record),
            f(self.consent),
            self.reason_hash,
            f(self.timestamp),
        ]
    }

    /// The entry an audit leaf holds.
    pub fn from_fields(l: &Leaf) -> Self {
        AuditEntry {
            kind: u(&l[0]),
            actor: u(&l[1]),
            patient: u(&l[2]),
            record: u(&l[3]),
            consent: u(&l[4]),
            reason_hash: l[5],
            timestamp: u(&l[6]),
        }
    }
}

/// A records leaf, read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordLeaf {
    /// The patient who owns it.
    pub owner: u64,
    /// The doctor who added it (kept when the owner writes a new version).
    pub author: u64,
    /// sha256 digest inside the content's CID.
    #[serde(with = "crate::field::serde_hex32")]
    pub cid_digest: [u8; 32],
    /// Hash of the record's metadata.
    #[serde(with = "crate::field::serde_fr")]
    pub meta_hash: Fr,
    /// Versions written (1 after the add).
    pub version: u64,
    /// Deleted (crypto-shredded).
    pub deleted: bool,
}

impl RecordLeaf {
    /// The record a records leaf holds, or `None` for an empty leaf or one
    /// whose content digest is not two 128-bit limbs.
    pub fn from_fields(l: &Leaf) -> Option<Self> {
        if l[0].is_zero() {
            return None;
        }
        Some(RecordLeaf {
            owner: u(&l[0]),
            author: u(&l[1]),
            cid_digest: crate::field::limbs_to_digest([l[2], l[3]])?,
            meta_hash: l[4],
            version: u(&l[5]),
            deleted: !l[6].is_zero(),
        })
    }
}

/// A consents leaf, read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentLeaf {
    /// The patient who granted it.
    pub patient: u64,
    /// Who holds it.
    pub grantee: u64,
    /// What it allows.
    pub scope: Scope,
    /// Which records.
    pub target: ConsentTarget,
    /// When it lapses (Unix seconds).
    pub expiry: u64,
    /// Revoked.
    pub revoked: bool,
}

impl ConsentLeaf {
    /// The consent a consents leaf holds, or `None` for an empty or
    /// malformed leaf.
    pub fn from_fields(l: &Leaf) -> Option<Self> {
        if l[0].is_zero() {
            return None;
        }
        let scope = match u(&l[2]) {
            1 => Scope::Read,
            2 => Scope::ReadWrite,
            _ => return None,
        };
        let target = if l[3].is_zero() { ConsentTarget::Record(u(&l[4])) } else { ConsentTarget::AllRecords };
        Some(ConsentLeaf {
            patient: u(&l[0]),
            grantee: u(&l[1]),
            scope,
            target,
            expiry: u(&l[5]),
            revoked: !l[6].is_zero(),
        })
    }

    /// Whether it lets its grantee read `record` of `owner` at time `now`
    /// (and write it, with `write`): the rule [`State::check`] applies.
    pub fn allows(&self, owner: u64, record: u64, write: bool, now: u64) -> bool {
        self.patient == owner
            && !self.revoked
            && self.expiry > now
            && (!write || self.scope == Scope::ReadWrite)
            && match self.target {
                ConsentTarget::AllRecords => true,
                ConsentTarget::Record(r) => r == record,
            }
    }
}

/// Where an account appears in the state: what a client asks the
/// coordinator for, then checks leaf by leaf.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountIndex {
    /// Records it owns or wrote.
    pub records: Vec<u64>,
    /// Consents it granted or holds.
    pub consents: Vec<u64>,
    /// Audit entries about its records or by it.
    pub audit: Vec<u64>,
}

/// A hospital in the genesis state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GenesisHospital {
    /// Account id.
    pub id: u64,
    /// Signing key.
    pub pubkey: PublicKey,
    /// Hash of its RSA public key.
    #[serde(with = "crate::field::serde_fr")]
    pub rsa_key_hash: Fr,
}

/// Everything that defines a rollup's initial state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Genesis {
    /// The rollup instance id (bound into every signature and the state root).
    #[serde(with = "crate::field::serde_fr")]
    pub instance: Fr,
    /// Height of every tree (each has `4^levels` leaves).
    pub levels: usize,
    /// The hospitals.
    pub hospitals: Vec<GenesisHospital>,
}

/// One tree operation of a transaction, as the circuit needs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitTrace {
    /// The leaf index.
    pub index: u64,
    /// The leaf's fields before.
    #[serde(with = "crate::field::serde_fr::array")]
    pub old: Leaf,
    /// The leaf's fields after (equal to `old` for a read).
    #[serde(with = "crate::field::serde_fr::array")]
    pub new: Leaf,
    /// The leaf's path (siblings) before the operation.
    pub path: MerklePath,
}

impl UnitTrace {
    fn disabled(levels: usize) -> Self {
        UnitTrace {
            index: 0,
            old: [Fr::zero(); LEAF_WIDTH],
            new: [Fr::zero(); LEAF_WIDTH],
            path: MerklePath::zeros(levels),
        }
    }
}

/// What one transaction did to the trees.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxTrace {
    /// The transaction.
    pub tx: SignedTx,
    /// The signer's account (nonce bump, or creation for a patient's registration).
    pub signer: UnitTrace,
    /// First read: the grantee's account (grant) or the consent used (add, update, log).
    pub read1: UnitTrace,
    /// Second read: the record (grant of one record, log access, emergency access).
    pub read2: UnitTrace,
    /// The update: new doctor, record, consent or audit entry.
    pub update: UnitTrace,
}

/// Which tree and leaf each of a transaction's operations touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The signer's account, unless padding.
    pub signer: Option<u64>,
    /// First read.
    pub read1: Option<(TreeId, u64)>,
    /// Second read.
    pub read2: Option<(TreeId, u64)>,
    /// The update.
    pub update: Option<(TreeId, u64)>,
}

/// The rollup state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    instance: Fr,
    levels: usize,
    trees: [SparseTree; 4],
    leaves: [HashMap<u64, Leaf>; 4],
    audit_count: u64,
    index: Indices,
}

/// Reverse indices over the leaves, kept with every write, so that finding
/// an account's leaves or a content's record reads what it finds, not the
/// whole state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Indices {
    /// Account → (tree, index) of the leaves naming it: records and consents
    /// by their first two fields, audit entries by their second and third.
    by_account: HashMap<u64, BTreeSet<(u8, u64)>>,
    /// (hi, lo) limbs of a content's sha256 → the live records holding it.
    by_content: HashMap<(Fr, Fr), BTreeSet<u64>>,
}

impl Indices {
    fn columns(tree: TreeId) -> &'static [usize] {
        match tree {
            TreeId::Accounts => &[],
            TreeId::Records | TreeId::Consents => &[0, 1],
            TreeId::Audit => &[1, 2],
        }
    }

    fn content(tree: TreeId, l: &Leaf) -> Option<(Fr, Fr)> {
        (tree == TreeId::Records && l[6].is_zero() && !l[0].is_zero()).then_some((l[2], l[3]))
    }

    fn add(&mut self, tree: TreeId, index: u64, l: &Leaf) {
        for &c in Self::columns(tree) {
            if let Some(a) = fr_to_u64(&l[c]) {
                self.by_account.entry(a).or_default().insert((tree as u8, index));
            }
        }
        if let Some(k) = Self::content(tree, l) {
            self.by_content.entry(k).or_default().insert(index);
        }
    }

    fn remove(&mut self, tree: TreeId, index: u64, l: &Leaf) {
        for &c in Self::columns(tree) {
            if let Some(a) = fr_to_u64(&l[c])
                && let Some(set) = self.by_account.get_mut(&a)
            {
                set.remove(&(tree as u8, index));
                if set.is_empty() {
                    self.by_account.remove(&a);
                }
            }
        }
        if let Some(k) = Self::content(tree, l)
            && let Some(set) = self.by_content.get_mut(&k)
        {
            set.remove(&index);
            if set.is_empty() {
                self.by_content.remove(&k);
            }
        }
    }
}

fn f(x: u64) -> Fr {
    Fr::from(x)
}

fn u(x: &Fr) -> u64 {
    // Leaves written by valid transactions hold u64 ids and counters.
    fr_to_u64(x).unwrap_or(u64::MAX)
}

/// The hash of a leaf: `Poseidon(fields)`, or 0 for the empty leaf.
pub fn leaf_hash(leaf: &Leaf) -> Fr {
    if leaf[0].is_zero() { Fr::zero() } else { poseidon::hash(leaf) }
}

/// The state root of the given components.
pub fn state_root(instance: Fr, roots: &[Fr; 4], audit_count: u64) -> Fr {
    poseidon::hash(&[instance, roots[0], roots[1], roots[2], roots[3], f(audit_count)])
}

impl State {
    /// The genesis state.
    pub fn genesis(g: &Genesis) -> Result<Self, TxError> {
        if !(1..=31).contains(&g.levels) {
            return Err(TxError::TreeHeight(g.levels));
        }
        let mut s = State {
            instance: g.instance,
            levels: g.levels,
            trees: core::array::from_fn(|_| SparseTree::new(g.levels)),
            leaves: Default::default(),
            audit_count: 0,
            index: Indices::default(),
        };
        for h in &g.hospitals {
            s.check_id("hospital", h.id)?;
            if h.id == 0 {
                return Err(TxError::ReservedAccountId);
            }
            check_key(&h.pubkey)?;
            if s.account(h.id).is_some() {
                return Err(TxError::AccountExists(h.id));
            }
            s.write(
                TreeId::Accounts,
                h.id,
                [f(Role::Hospital as u64), h.pubkey.x, h.pubkey.y, h.rsa_key_hash, f(0), f(0), f(0)],
            );
        }
        Ok(s)
    }

    /// The instance id.
    pub fn instance(&self) -> Fr {
        self.instance
    }

    /// Tree height.
    pub fn levels(&self) -> usize {
        self.levels
    }

    /// Leaves per tree.
    pub fn capacity(&self) -> u64 {
        self.trees[0].capacity()
    }

    /// The four tree roots.
    pub fn roots(&self) -> [Fr; 4] {
        core::array::from_fn(|i| self.trees[i].root())
    }

    /// Entries in the audit log.
    pub fn audit_count(&self) -> u64 {
        self.audit_count
    }

    /// The state root.
    pub fn root(&self) -> Fr {
        state_root(self.instance, &self.roots(), self.audit_count)
    }

    /// A leaf's fields (all 0 when empty).
    pub fn leaf(&self, tree: TreeId, index: u64) -> Leaf {
        self.leaves[tree as usize].get(&index).copied().unwrap_or([Fr::zero(); LEAF_WIDTH])
    }

    /// A leaf's Merkle path.
    pub fn path(&self, tree: TreeId, index: u64) -> MerklePath {
        self.trees[tree as usize].path(index)
    }

    /// The account at `id`, if registered.
    pub fn account(&self, id: u64) -> Option<Account> {
        let l = self.leaves[TreeId::Accounts as usize].get(&id)?;
        Some(Account {
            role: Role::from_code(l[0])?,
            pubkey: PublicKey { x: l[1], y: l[2] },
            rsa_key_hash: l[3],
            nonce: u(&l[4]),
        })
    }

    /// The audit entries about `patient`'s records, each with its index and
    /// Merkle path, so the patient can prove them against the audit root.
    pub fn audit_entries_of(&self, patient: u64) -> Vec<(u64, AuditEntry, MerklePath)> {
        self.index_of(patient)
            .audit
            .into_iter()
            .filter_map(|i| {
                let l = self.leaf(TreeId::Audit, i);
                (l[2] == f(patient)).then(|| (i, AuditEntry::from_fields(&l), self.path(TreeId::Audit, i)))
            })
            .collect()
    }

    /// The live (not deleted) record whose current content has sha256
    /// `digest`, if any.
    pub fn live_record_with_content(&self, digest: &[u8; 32]) -> Option<u64> {
        let [hi, lo] = crate::field::digest_to_limbs(digest);
        self.index.by_content.get(&(hi, lo)).and_then(|set| set.first().copied())
    }

    /// Where `account` appears: records it owns or wrote, consents it
    /// granted or holds, audit entries it made or that concern it (sorted).
    pub fn index_of(&self, account: u64) -> AccountIndex {
        let mut out = AccountIndex::default();
        for &(tree, i) in self.index.by_account.get(&account).into_iter().flatten() {
            match TreeId::ALL[usize::from(tree)] {
                TreeId::Records => out.records.push(i),
                TreeId::Consents => out.consents.push(i),
                TreeId::Audit => out.audit.push(i),
                TreeId::Accounts => {}
            }
        }
        out
    }

    /// The state of `instance` with trees of height `levels` holding
    /// `leaves` (tree, index, fields) and `audit_count` audit entries: a
    /// state stored leaf by leaf, rebuilt without replaying what led to it.
    /// The caller compares its root with the one it expects.
    pub fn from_leaves(
        instance: Fr,
        levels: usize,
        leaves: impl IntoIterator<Item = (TreeId, u64, Leaf)>,
        audit_count: u64,
    ) -> Result<Self, TxError> {
        if !(1..=31).contains(&levels) {
            return Err(TxError::TreeHeight(levels));
        }
        let mut by_tree: [HashMap<u64, Leaf>; 4] = Default::default();
        let capacity = 1u64 << (2 * levels);
        for (tree, index, leaf) in leaves {
            if index >= capacity {
                return Err(TxError::IdOutOfRange { what: "stored leaf", id: index, capacity });
            }
            if !leaf[0].is_zero() {
                by_tree[tree as usize].insert(index, leaf);
            }
        }
        let trees = core::array::from_fn(|t| {
            use rayon::prelude::*;
            // Each leaf's hash on every core (a Poseidon of 7 fields each).
            let hashed: Vec<(u64, Fr)> = by_tree[t].par_iter().map(|(&i, l)| (i, leaf_hash(l))).collect();
            SparseTree::from_leaves(levels, hashed)
        });
        let mut index = Indices::default();
        for tree in TreeId::ALL {
            for (&i, l) in &by_tree[tree as usize] {
                index.add(tree, i, l);
            }
        }
        Ok(State { instance, levels, trees, leaves: by_tree, audit_count, index })
    }

    /// Non-empty leaves, in all trees.
    pub fn leaf_count(&self) -> usize {
        self.leaves.iter().map(HashMap::len).sum()
    }

    /// Every non-empty leaf (tree, index, fields), in no particular order.
    pub fn leaves(&self) -> impl Iterator<Item = (TreeId, u64, &Leaf)> {
        TreeId::ALL
            .into_iter()
            .flat_map(move |t| self.leaves[t as usize].iter().map(move |(&i, l)| (t, i, l)))
    }

    /// The leaves that the transactions traced in `traces` wrote (signers'
    /// accounts and updates), each with its fields in this state, once each:
    /// what a copy of the leaves kept elsewhere must take on after them.
    /// Indices come from the traces (an audit entry's is the audit count of
    /// its time), trees from the transactions' kinds.
    pub fn written_by<'a>(&self, traces: impl IntoIterator<Item = &'a TxTrace>) -> Vec<(TreeId, u64, Leaf)> {
        let mut at = BTreeSet::new();
        for t in traces {
            // Not `plan`, which reads the state: after the batch, it can
            // refuse what was applied before it (an audit log now full).
            if t.tx.tx.kind() != TxKind::Noop {
                at.insert((TreeId::Accounts as u8, t.signer.index));
            }
            if let Some(tree) = updated_tree(&t.tx.tx.body) {
                at.insert((tree as u8, t.update.index));
            }
        }
        at.into_iter()
            .map(|(t, id)| {
                let tree = TreeId::ALL[t as usize];
                (tree, id, self.leaf(tree, id))
            })
            .collect()
    }

    /// Takes `other`'s leaves at `written` (tree, index), the nodes on their
    /// paths and its audit count: where `other` is this state with some
    /// transactions applied and `written` names every leaf they wrote (see
    /// [`Self::written_by`]), this state becomes equal to it, in time that
    /// grows with the leaves written, not with the state as a clone would.
    ///
    /// # Panics
    /// When the two are of different instances or heights.
    pub fn copy_written_from(&mut self, other: &State, written: impl IntoIterator<Item = (TreeId, u64)>) {
        assert!(self.instance == other.instance && self.levels == other.levels, "states of one rollup");
        for (tree, index) in written {
            let t = tree as usize;
            self.trees[t].copy_path_from(&other.trees[t], index);
            self.put_leaf(tree, index, other.leaves[t].get(&index).copied());
        }
        self.audit_count = other.audit_count;
    }

    /// Overwrites a leaf directly, bypassing every rule: for tests of states
    /// that no transaction reaches (counters at their maximum).
    #[doc(hidden)]
    pub fn force_leaf(&mut self, tree: TreeId, index: u64, leaf: Leaf) {
        self.write(tree, index, leaf);
    }

    fn write(&mut self, tree: TreeId, index: u64, leaf: Leaf) {
        self.trees[tree as usize].set(index, leaf_hash(&leaf));
        self.put_leaf(tree, index, (!leaf[0].is_zero()).then_some(leaf));
    }

    /// Stores (or, with `None`, removes) a leaf's fields, with the indices.
    fn put_leaf(&mut self, tree: TreeId, index: u64, leaf: Option<Leaf>) {
        let old = match leaf {
            Some(l) => self.leaves[tree as usize].insert(index, l),
            None => self.leaves[tree as usize].remove(&index),
        };
        if let Some(o) = old {
            self.index.remove(tree, index, &o);
        }
        if let Some(l) = leaf {
            self.index.add(tree, index, &l);
        }
    }

    fn check_id(&self, what: &'static str, id: u64) -> Result<(), TxError> {
        if id < self.capacity() {
            Ok(())
        } else {
            Err(TxError::IdOutOfRange { what, id, capacity: self.capacity() })
        }
    }

    /// Which leaves `tx` touches, in the circuit's order. Fails only when an id
    /// does not fit the trees.
    pub fn plan(&self, tx: &SignedTx) -> Result<Plan, TxError> {
        let t = &tx.tx;
        let mut p = Plan { signer: None, read1: None, read2: None, update: None };
        if t.kind() == TxKind::Noop {
            return Ok(p);
        }
        self.check_id("signer", t.signer)?;
        p.signer = Some(t.signer);
        match &t.body {
            TxBody::Noop | TxBody::RegisterPatient { .. } => {}
            TxBody::RegisterDoctor { doctor, .. } => {
                self.check_id("doctor", *doctor)?;
                p.update = Some((TreeId::Accounts, *doctor));
            }
            TxBody::AddRecord { record, consent, .. } => {
                self.check_id("record", *record)?;
                self.check_id("consent", *consent)?;
                p.read1 = Some((TreeId::Consents, *consent));
                p.update = Some((TreeId::Records, *record));
            }
            TxBody::UpdateRecord { record, consent, .. } => {
                self.check_id("record", *record)?;
                self.check_id("consent", *consent)?;
                let owner = self.leaf(TreeId::Records, *record)[0];
                if owner != f(t.signer) {
                    p.read1 = Some((TreeId::Consents, *consent));
                }
                p.update = Some((TreeId::Records, *record));
            }
            TxBody::DeleteRecord { record } => {
                self.check_id("record", *record)?;
                p.update = Some((TreeId::Records, *record));
            }
            TxBody::Grant { consent, grantee, target, .. } => {
                self.check_id("grantee", *grantee)?;
                self.check_id("consent", *consent)?;
                p.read1 = Some((TreeId::Accounts, *grantee));
                if let ConsentTarget::Record(r) = target {
                    self.check_id("record", *r)?;
                    p.read2 = Some((TreeId::Records, *r));
                }
                p.update = Some((TreeId::Consents, *consent));
            }
            TxBody::Revoke { consent } => {
                self.check_id("consent", *consent)?;
                p.update = Some((TreeId::Consents, *consent));
            }
            TxBody::LogAccess { record, consent } => {
                self.check_id("record", *record)?;
                self.check_id("consent", *consent)?;
                p.read1 = Some((TreeId::Consents, *consent));
                p.read2 = Some((TreeId::Records, *record));
                if self.audit_count >= self.capacity() {
                    return Err(TxError::AuditLogFull);
                }
                p.update = Some((TreeId::Audit, self.audit_count));
            }
            TxBody::EmergencyAccess { record, .. } => {
                self.check_id("record", *record)?;
                p.read2 = Some((TreeId::Records, *record));
                if self.audit_count >= self.capacity() {
                    return Err(TxError::AuditLogFull);
                }
                p.update = Some((TreeId::Audit, self.audit_count));
            }
        }
        Ok(p)
    }

    /// Checks every rule for `tx` in a batch with timestamp `now`.
    pub fn check(&self, tx: &SignedTx, now: u64) -> Result<(), TxError> {
        let t = &tx.tx;
        self.plan(tx)?;
        let kind = t.kind();
        if kind == TxKind::Noop {
            if t.signer != 0 || t.nonce != 0 {
                return Err(TxError::NonCanonical("padding transactions have signer 0 and nonce 0"));
            }
            // The circuit checks every slot's signature against the identity
            // key; only the empty signature keeps a padding slot provable.
            if tx.signature != eddsa::Signature::padding() {
                return Err(TxError::NonCanonical(
                    "padding transactions carry the empty signature (R8 = (0, 1), S = 0)",
                ));
            }
            return Ok(());
        }
        let signer = t.signer;
        // The signer's account, and the key the signature must verify under.
        let (account, key) = match &t.body {
            TxBody::RegisterPatient { pubkey, .. } => {
                if signer == 0 {
                    return Err(TxError::ReservedAccountId);
                }
                if self.account(signer).is_some() {
                    return Err(TxError::AccountExists(signer));
                }
                check_key(pubkey)?;
                (None, *pubkey)
            }
            _ => {
                let a = self.account(signer).ok_or(TxError::UnknownAccount(signer))?;
                let key = a.pubkey;
                (Some(a), key)
            }
        };
        let nonce = account.as_ref().map_or(0, |a| a.nonce);
        if t.nonce != nonce {
            return Err(TxError::BadNonce { account: signer, expected: nonce, got: t.nonce });
        }
        if nonce == u64::MAX {
            return Err(TxError::NonceOverflow(signer));
        }
        if !eddsa::verify(&key, t.message(self.instance), &tx.signature) {
            return Err(TxError::BadSignature(signer));
        }
        let role = account.map(|a| a.role);
        let need = |expected: Role, action: &'static str, name: &'static str| match role {
            Some(r) if r == expected => Ok(()),
            Some(r) => Err(TxError::WrongRole { account: signer, actual: r, action, expected: name }),
            None => Err(TxError::UnknownAccount(signer)),
        };
        match &t.body {
            TxBody::Noop | TxBody::RegisterPatient { .. } => Ok(()),
            TxBody::RegisterDoctor { doctor, pubkey, .. } => {
                need(Role::Hospital, "registering a doctor", "hospital")?;
                if *doctor == 0 {
                    return Err(TxError::ReservedAccountId);
                }
                if self.account(*doctor).is_some() {
                    return Err(TxError::AccountExists(*doctor));
                }
                check_key(pubkey)
            }
            TxBody::AddRecord { record, patient, consent, .. } => {
                need(Role::Doctor, "adding a record", "doctor")?;
                self.check_consent(*consent, signer, *patient, *record, true, now)?;
                if !self.leaf(TreeId::Records, *record)[0].is_zero() {
                    return Err(TxError::RecordExists(*record));
                }
                Ok(())
            }
            TxBody::UpdateRecord { record, version, consent, .. } => {
                let r = self.live_record(*record)?;
                if f(*version) != r[5] {
                    return Err(TxError::StaleVersion {
                        record: *record,
                        named: *version,
                        current: u(&r[5]),
                    });
                }
                if version_exhausted(&r) {
                    return Err(TxError::VersionOverflow(*record));
                }
                if r[0] == f(signer) {
                    if *consent != 0 {
                        return Err(TxError::NonCanonical(
                            "an owner's update names no consent (consent must be 0)",
                        ));
                    }
                    return Ok(());
                }
                if r[1] != f(signer) {
                    return Err(TxError::NotAuthorized { account: signer, record: *record });
                }
                self.check_consent(*consent, signer, u(&r[0]), *record, true, now)
            }
            TxBody::DeleteRecord { record } => {
                let r = self.live_record(*record)?;
                if r[0] != f(signer) {
                    return Err(TxError::NotOwner { account: signer, what: "record", id: *record });
                }
                Ok(())
            }
            TxBody::Grant { consent, grantee, target, expiry, .. } => {
                need(Role::Patient, "granting consent", "patient")?;
                match self.account(*grantee) {
                    None => return Err(TxError::UnknownAccount(*grantee)),
                    Some(a) if a.role == Role::Patient => {
                        return Err(TxError::InvalidGrantee(*grantee));
                    }
                    Some(_) => {}
                }
                if let ConsentTarget::Record(rid) = target {
                    let r = self.live_record(*rid)?;
                    if r[0] != f(signer) {
                        return Err(TxError::NotOwner { account: signer, what: "record", id: *rid });
                    }
                }
                if *expiry <= now {
                    return Err(TxError::ExpiryNotInFuture { expiry: *expiry, now });
                }
                let old = self.leaf(TreeId::Consents, *consent);
                if !old[0].is_zero() && old[0] != f(signer) {
                    return Err(TxError::NotOwner { account: signer, what: "consent", id: *consent });
                }
                Ok(())
            }
            TxBody::Revoke { consent } => {
                let c = self.leaf(TreeId::Consents, *consent);
                if c[0].is_zero() {
                    return Err(TxError::UnknownConsent(*consent));
                }
                if c[0] != f(signer) {
                    return Err(TxError::NotOwner { account: signer, what: "consent", id: *consent });
                }
                if !c[6].is_zero() {
                    return Err(TxError::ConsentRevoked(*consent));
                }
                Ok(())
            }
            TxBody::LogAccess { record, consent } => {
                let r = self.live_record(*record)?;
                self.check_consent(*consent, signer, u(&r[0]), *record, false, now)
            }
            TxBody::EmergencyAccess { record, .. } => {
                need(Role::Doctor, "emergency access", "doctor")?;
                self.live_record(*record).map(|_| ())
            }
        }
    }

    fn live_record(&self, id: u64) -> Result<Leaf, TxError> {
        let r = self.leaf(TreeId::Records, id);
        if r[0].is_zero() {
            return Err(TxError::UnknownRecord(id));
        }
        if !r[6].is_zero() {
            return Err(TxError::RecordDeleted(id));
        }
        Ok(r)
    }

    fn check_consent(
        &self,
        id: u64,
        grantee: u64,
        patient: u64,
        record: u64,
        write: bool,
        now: u64,
    ) -> Result<(), TxError> {
        let c = self.leaf(TreeId::Consents, id);
        let mismatch = |reason| Err(TxError::ConsentMismatch { consent: id, reason });
        if c[0].is_zero() {
            return Err(TxError::UnknownConsent(id));
        }
        if c[1] != f(grantee) {
            return mismatch("it was granted to another account");
        }
        if c[0] != f(patient) {
            return mismatch("it was granted by another patient");
        }
        if !c[6].is_zero() {
            return Err(TxError::ConsentRevoked(id));
        }
        if write && c[2] != f(2) {
            return mismatch("it is read-only");
        }
        if c[3].is_zero() && c[4] != f(record) {
            return mismatch("it covers another record");
        }
        let expiry = u(&c[5]);
        if expiry <= now {
            return Err(TxError::ConsentExpired { consent: id, expiry, now });
        }
        Ok(())
    }

    /// Checks and applies `tx`, returning its trace.
    pub fn apply(&mut self, tx: &SignedTx, now: u64) -> Result<TxTrace, TxError> {
        self.check(tx, now)?;
        self.execute(tx, now)
    }

    /// Performs `tx`'s effects without checking the rules (an honest sequencer
    /// calls [`State::check`] first). Fails only when an id does not fit the trees.
    pub fn execute(&mut self, tx: &SignedTx, now: u64) -> Result<TxTrace, TxError> {
        let plan = self.plan(tx)?;
        debug_assert_eq!(plan.update.map(|(t, _)| t), updated_tree(&tx.tx.body), "one tree per kind");
        let fields = tx.tx.fields();
        let a = fields.args;
        let signer = fields.signer;
        let kind = fields.kind;
        let levels = self.levels;
        let mut trace = TxTrace {
            tx: tx.clone(),
            signer: UnitTrace::disabled(levels),
            read1: UnitTrace::disabled(levels),
            read2: UnitTrace::disabled(levels),
            update: UnitTrace::disabled(levels),
        };
        if let Some(id) = plan.signer {
            let old = self.leaf(TreeId::Accounts, id);
            let mut new = old;
            if kind == TxKind::RegisterPatient {
                new = [f(Role::Patient as u64), a[1], a[2], a[3], old[4], old[5], old[6]];
            }
            new[4] += Fr::from(1u64);
            trace.signer = UnitTrace { index: id, old, new, path: self.path(TreeId::Accounts, id) };
            self.write(TreeId::Accounts, id, new);
        }
        let read = |s: &Self, op: Option<(TreeId, u64)>| match op {
            None => UnitTrace::disabled(levels),
            Some((tree, index)) => {
                let l = s.leaf(tree, index);
                UnitTrace { index, old: l, new: l, path: s.path(tree, index) }
            }
        };
        trace.read1 = read(self, plan.read1);
        trace.read2 = read(self, plan.read2);
        if let Some((tree, index)) = plan.update {
            let o = self.leaf(tree, index);
            let owner = trace.read2.old[0];
            let z = Fr::zero();
            let one = Fr::from(1u64);
            let new = match kind {
                TxKind::RegisterDoctor => [f(Role::Doctor as u64), a[1], a[2], a[3], z, z, z],
                TxKind::AddRecord => [a[1], signer, a[3], a[4], a[5], one, z],
                TxKind::UpdateRecord => [o[0], o[1], a[3], a[4], a[5], o[5] + one, z],
                TxKind::DeleteRecord | TxKind::Revoke => [o[0], o[1], o[2], o[3], o[4], o[5], one],
                TxKind::Grant => [signer, a[1], a[3], a[4], a[0], a[5], z],
                TxKind::LogAccess => [f(AUDIT_READ), signer, owner, a[0], a[2], z, f(now)],
                TxKind::EmergencyAccess => [f(AUDIT_EMERGENCY), signer, owner, a[0], z, a[3], f(now)],
                TxKind::Noop | TxKind::RegisterPatient => unreachable!("no update planned"),
            };
            trace.update = UnitTrace { index, old: o, new, path: self.path(tree, index) };
            self.write(tree, index, new);
            if tree == TreeId::Audit {
                self.audit_count += 1;
            }
        }
        Ok(trace)
    }
}

/// The tree a transaction of this kind updates, if any (which leaf can
/// depend on the state: an audit entry goes at the count of its time).
fn updated_tree(body: &TxBody) -> Option<TreeId> {
    match body {
        TxBody::Noop | TxBody::RegisterPatient { .. } => None,
        TxBody::RegisterDoctor { .. } => Some(TreeId::Accounts),
        TxBody::AddRecord { .. } | TxBody::UpdateRecord { .. } | TxBody::DeleteRecord { .. } => {
            Some(TreeId::Records)
        }
        TxBody::Grant { .. } | TxBody::Revoke { .. } => Some(TreeId::Consents),
        TxBody::LogAccess { .. } | TxBody::EmergencyAccess { .. } => Some(TreeId::Audit),
    }
}

fn version_exhausted(r: &Leaf) -> bool {
    u(&r[5]) == u64::MAX
}

/// Keys must be on the curve (parsing checks it) and not of small order.
fn check_key(k: &PublicKey) -> Result<(), TxError> {
    if !crate::babyjub::on_curve(k.x, k.y) {
        return Err(TxError::InvalidPublicKey("not a point of Baby Jubjub".into()));
    }
    if k.is_small_order() {
        return Err(TxError::InvalidPublicKey("a small-order point (anyone could sign for it)".into()));
    }
    Ok(())
}
