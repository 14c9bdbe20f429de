//! Transactions: what patients, doctors and hospitals sign, their JSON form,
//! and the fixed-width field encoding the circuit and the signature use.
//!
//! Every transaction is `(kind, signer, nonce, args[7])`. Its message is
//! `Poseidon(instance, kind, signer, nonce, args[0..7])`: the signature covers
//! every field, the signer's nonce (replays fail) and the rollup instance id
//! (transactions of another deployment fail).

use crate::eddsa::{PrivateKey, PublicKey, Signature};
use crate::field::{Fr, digest_to_limbs, serde_fr, serde_hex32};
use crate::poseidon;
use serde::{Deserialize, Serialize};

/// Arguments per transaction in the field encoding.
pub const TX_ARGS: usize = 7;

/// What a consent lets its grantee do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Read (and log reads of) the covered records.
    Read = 1,
    /// Read, add and update the covered records.
    ReadWrite = 2,
}

/// Which records a consent covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentTarget {
    /// Every record of the patient, present and future.
    AllRecords,
    /// One record.
    Record(u64),
}

/// The metadata hash of a record whose content has CID multicodec `codec`
/// (0x55 raw: content within one chunk; 0x70 dag-pb: the root of larger
/// content): `Poseidon(1, codec)`, version 1 of the record metadata. With
/// the on-chain digest it names the exact CID, so clients and the
/// coordinator need not guess.
pub fn record_meta_hash(codec: u8) -> Fr {
    poseidon::hash(&[Fr::from(1u64), Fr::from(u64::from(codec))])
}

/// The typed body of a transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TxBody {
    /// Padding: changes nothing and needs no signature.
    Noop,
    /// A patient registers themself at account id `signer`, signing with the new key.
    RegisterPatient {
        /// The patient's Baby Jubjub key.
        pubkey: PublicKey,
        /// Hash of the patient's RSA public key (record keys are wrapped with it).
        #[serde(with = "serde_fr")]
        rsa_key_hash: Fr,
    },
    /// A hospital registers one of its doctors.
    RegisterDoctor {
        /// The new doctor's account id.
        doctor: u64,
        /// The doctor's Baby Jubjub key.
        pubkey: PublicKey,
        /// Hash of the doctor's RSA public key.
        #[serde(with = "serde_fr")]
        rsa_key_hash: Fr,
    },
    /// A doctor holding the patient's read-write consent adds a record.
    AddRecord {
        /// The new record's id.
        record: u64,
        /// The patient who owns it.
        patient: u64,
        /// The consent that allows the write.
        consent: u64,
        /// sha256 of the encrypted record's content (the digest inside its CIDv1).
        #[serde(with = "serde_hex32")]
        cid_digest: [u8; 32],
        /// Poseidon hash of the record's metadata.
        #[serde(with = "serde_fr")]
        meta_hash: Fr,
    },
    /// The owner, or the record's author with read-write consent, replaces a record's content.
    UpdateRecord {
        /// The record.
        record: u64,
        /// The version this update replaces: the record's version when the
        /// writer read it. Another writer's update in between makes it stale
        /// and the transaction is refused (no write is lost unseen).
        version: u64,
        /// The author's consent (ignored, and must be 0, when the owner signs).
        #[serde(default)]
        consent: u64,
        /// The new content digest.
        #[serde(with = "serde_hex32")]
        cid_digest: [u8; 32],
        /// The new metadata hash.
        #[serde(with = "serde_fr")]
        meta_hash: Fr,
    },
    /// The owner deletes a record (it stays in the tree, flagged deleted).
    DeleteRecord {
        /// The record.
        record: u64,
    },
    /// A patient grants (or renews) a consent.
    Grant {
        /// The consent's id (empty, or an earlier consent of the same patient).
        consent: u64,
        /// The doctor or hospital who receives access.
        grantee: u64,
        /// What the grantee may do.
        scope: Scope,
        /// Which records.
        target: ConsentTarget,
        /// Unix time (seconds) at which the consent lapses.
        expiry: u64,
    },
    /// The patient revokes a consent.
    Revoke {
        /// The consent.
        consent: u64,
    },
    /// A grantee records that they read a record (appended to the audit log).
    LogAccess {
        /// The record read.
        record: u64,
        /// The consent that allows it.
        consent: u64,
    },
    /// A doctor reads a record without consent (break-glass): always audited and flagged.
    EmergencyAccess {
        /// The record read.
        record: u64,
        /// Poseidon hash of the stated reason.
        #[serde(with = "serde_fr")]
        reason_hash: Fr,
    },
}

/// Transaction kinds, as encoded in the circuit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum TxKind {
    /// [`TxBody::Noop`]
    Noop = 0,
    /// [`TxBody::RegisterPatient`]
    RegisterPatient = 1,
    /// [`TxBody::RegisterDoctor`]
    RegisterDoctor = 2,
    /// [`TxBody::AddRecord`]
    AddRecord = 3,
    /// [`TxBody::UpdateRecord`]
    UpdateRecord = 4,
    /// [`TxBody::DeleteRecord`]
    DeleteRecord = 5,
    /// [`TxBody::Grant`]
    Grant = 6,
    /// [`TxBody::Revoke`]
    Revoke = 7,
    /// [`TxBody::LogAccess`]
    LogAccess = 8,
    /// [`TxBody::EmergencyAccess`]
    EmergencyAccess = 9,
}

impl TxKind {
    /// Every kind, in code order.
    pub const ALL: [TxKind; 10] = [
        TxKind::Noop,
        TxKind::RegisterPatient,
        TxKind::RegisterDoctor,
        TxKind::AddRecord,
        TxKind::UpdateRecord,
        TxKind::DeleteRecord,
        TxKind::Grant,
        TxKind::Revoke,
        TxKind::LogAccess,
        TxKind::EmergencyAccess,
    ];

    /// The snake_case name used in JSON.
    pub fn name(self) -> &'static str {
        match self {
            TxKind::Noop => "noop",
            TxKind::RegisterPatient => "register_patient",
            TxKind::RegisterDoctor => "register_doctor",
            TxKind::AddRecord => "add_record",
            TxKind::UpdateRecord => "update_record",
            TxKind::DeleteRecord => "delete_record",
            TxKind::Grant => "grant",
            TxKind::Revoke => "revoke",
            TxKind::LogAccess => "log_access",
            TxKind::EmergencyAccess => "emergency_access",
        }
    }
}

/// An unsigned transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tx {
    /// The signing account's id.
    pub signer: u64,
    /// The signer's nonce before this transaction.
    pub nonce: u64,
    /// What the transaction does.
    #[serde(flatten)]
    pub body: TxBody,
}

/// The fixed-width field encoding of a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxFields {
    /// The kind.
    pub kind: TxKind,
    /// The signer.
    pub signer: Fr,
    /// The nonce.
    pub nonce: Fr,
    /// The arguments (layout per kind in [`Tx::fields`]).
    pub args: [Fr; TX_ARGS],
}

impl Tx {
    /// A padding transaction.
    pub fn noop() -> Self {
        Tx { signer: 0, nonce: 0, body: TxBody::Noop }
    }

    /// The kind.
    pub fn kind(&self) -> TxKind {
        match self.body {
            TxBody::Noop => TxKind::Noop,
            TxBody::RegisterPatient { .. } => TxKind::RegisterPatient,
            TxBody::RegisterDoctor { .. } => TxKind::RegisterDoctor,
            TxBody::AddRecord { .. } => TxKind::AddRecord,
            TxBody::UpdateRecord { .. } => TxKind::UpdateRecord,
            TxBody::DeleteRecord { .. } => TxKind::DeleteRecord,
            TxBody::Grant { .. } => TxKind::Grant,
            TxBody::Revoke { .. } => TxKind::Revoke,
            TxBody::LogAccess { .. } => TxKind::LogAccess,
            TxBody::EmergencyAccess { .. } => TxKind::EmergencyAccess,
        }
    }

    /// The field encoding. Argument layout (unused positions are 0; a record id
    /// is always `args[0]` and a consent id always `args[2]`):
    ///
    /// | kind | a0 | a1 | a2 | a3 | a4 | a5 |
    /// |---|---|---|---|---|---|---|
    /// | register_patient | | pk.x | pk.y | rsa hash | | |
    /// | register_doctor | doctor | pk.x | pk.y | rsa hash | | |
    /// | add_record | record | patient | consent | cid hi | cid lo | meta |
    /// | update_record | record | version | consent | cid hi | cid lo | meta |
    /// | delete_record | record | | | | | |
    /// | grant | record (0 = all) | grantee | consent | scope | all? | expiry |
    /// | revoke | | | consent | | | |
    /// | log_access | record | | consent | | | |
    /// | emergency_access | record | | | reason | | |
    pub fn fields(&self) -> TxFields {
        let f = Fr::from;
        let z = Fr::from(0u64);
        let args = match &self.body {
            TxBody::Noop => [z; TX_ARGS],
            TxBody::RegisterPatient { pubkey, rsa_key_hash } => {
                [z, pubkey.x, pubkey.y, *rsa_key_hash, z, z, z]
            }
            TxBody::RegisterDoctor { doctor, pubkey, rsa_key_hash } => {
                [f(*doctor), pubkey.x, pubkey.y, *rsa_key_hash, z, z, z]
            }
            TxBody::AddRecord { record, patient, consent, cid_digest, meta_hash } => {
                let [hi, lo] = digest_to_limbs(cid_digest);
                [f(*record), f(*patient), f(*consent), hi, lo, *meta_hash, z]
            }
            TxBody::UpdateRecord { record, version, consent, cid_digest, meta_hash } => {
                let [hi, lo] = digest_to_limbs(cid_digest);
                [f(*record), f(*version), f(*consent), hi, lo, *meta_hash, z]
            }
            TxBody::DeleteRecord { record } => [f(*record), z, z, z, z, z, z],
            TxBody::Grant { consent, grantee, scope, target, expiry } => {
                let (record, all) = match target {
                    ConsentTarget::AllRecords => (0, 1u64),
                    ConsentTarget::Record(r) => (*r, 0),
                };
                [f(record), f(*grantee), f(*consent), f(*scope as u64), f(all), f(*expiry), z]
            }
            TxBody::Revoke { consent } => [z, z, f(*consent), z, z, z, z],
            TxBody::LogAccess { record, consent } => [f(*record), z, f(*consent), z, z, z, z],
            TxBody::EmergencyAccess { record, reason_hash } => [f(*record), z, z, *reason_hash, z, z, z],
        };
        TxFields { kind: self.kind(), signer: f(self.signer), nonce: f(self.nonce), args }
    }

    /// The message the signer signs for rollup instance `instance`.
    pub fn message(&self, instance: Fr) -> Fr {
        self.fields().message(instance)
    }

    /// Signs for `instance`.
    pub fn sign(self, key: &PrivateKey, instance: Fr) -> SignedTx {
        let signature = key.sign(self.message(instance));
        SignedTx { tx: self, signature }
    }
}

impl TxFields {
    /// `Poseidon(instance, kind, signer, nonce, args...)`.
    pub fn message(&self, instance: Fr) -> Fr {
        let mut inputs = vec![instance, Fr::from(self.kind as u64), self.signer, self.nonce];
        inputs.extend_from_slice(&self.args);
        poseidon::hash(&inputs)
    }
}

/// A transaction with its signature: what clients submit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedTx {
    /// The transaction.
    #[serde(flatten)]
    pub tx: Tx,
    /// The signer's EdDSA-Poseidon signature of [`Tx::message`].
    pub signature: Signature,
}

impl SignedTx {
    /// A padding transaction.
    pub fn noop() -> Self {
        SignedTx { tx: Tx::noop(), signature: Signature::padding() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_and_clear_errors() {
        let key = PrivateKey::from_bytes([3u8; 32]);
        let tx = Tx {
            signer: 7,
            nonce: 2,
            body: TxBody::Grant {
                consent: 9,
                grantee: 4,
                scope: Scope::ReadWrite,
                target: ConsentTarget::Record(12),
                expiry: 1_800_000_000,
            },
        }
        .sign(&key, Fr::from(1u64));
        let text = serde_json::to_string(&tx).unwrap();
        assert!(text.contains("\"type\":\"grant\""), "{text}");
        let back: SignedTx = serde_json::from_str(&text).unwrap();
        assert_eq!(back, tx);

        let bad = text.replace("\"read_write\"", "\"admin\"");
        let err = serde_json::from_str::<SignedTx>(&bad).unwrap_err().to_string();
        assert!(err.contains("admin"), "the error names the bad value: {err}");
    }

    #[test]
    fn message_binds_instance_and_every_field() {
        let tx = Tx { signer: 1, nonce: 0, body: TxBody::DeleteRecord { record: 5 } };
        let m = tx.message(Fr::from(1u64));
        assert_ne!(m, tx.message(Fr::from(2u64)), "instance");
        let mut other = tx.clone();
        other.nonce = 1;
        assert_ne!(m, other.message(Fr::from(1u64)), "nonce");
        let other = Tx { signer: 1, nonce: 0, body: TxBody::DeleteRecord { record: 6 } };
        assert_ne!(m, other.message(Fr::from(1u64)), "argument");
    }
}
