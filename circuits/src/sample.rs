//! A deterministic sample scenario (two hospitals, their doctors, patients,
//! records, consents, reads and revocations) for the demo, the tests and the
//! benchmarks. Keys derive from fixed labels: never use them for real data.

use crate::eddsa::PrivateKey;
use crate::field::Fr;
use crate::poseidon;
use crate::state::{Genesis, GenesisHospital};
use crate::tx::{ConsentTarget, Scope, SignedTx, Tx, TxBody};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// The sample's rollup instance id.
pub const INSTANCE: u64 = 0x6d6564; // "med"

/// The sample's batch time (2026-01-01T00:00:00Z) unless a caller chooses another.
pub const NOW: u64 = 1_767_225_600;

/// A sample participant: account id and key.
#[derive(Clone, Debug)]
pub struct Party {
    /// Account id.
    pub id: u64,
    /// Signing key.
    pub key: PrivateKey,
}

fn key(label: &str) -> PrivateKey {
    let d = Sha256::digest(format!("medrollup-sample/{label}").as_bytes());
    PrivateKey::from_bytes(d.into())
}

fn rsa_hash(label: &str) -> Fr {
    // Stands for the hash of the party's RSA public key.
    let d = Sha256::digest(format!("medrollup-sample-rsa/{label}").as_bytes());
    poseidon::hash(&crate::field::digest_to_limbs(&d.into()))
}

/// Signs transactions for the sample's parties, tracking their nonces.
#[derive(Debug)]
pub struct Signer {
    instance: Fr,
    nonces: HashMap<u64, u64>,
}

impl Signer {
    /// For `instance`.
    pub fn new(instance: Fr) -> Self {
        Self { instance, nonces: HashMap::new() }
    }

    /// Signs `body` as `party` with its next nonce.
    pub fn sign(&mut self, party: &Party, body: TxBody) -> SignedTx {
        let nonce = self.nonces.entry(party.id).or_insert(0);
        let tx = Tx { signer: party.id, nonce: *nonce, body };
        *nonce += 1;
        tx.sign(&party.key, self.instance)
    }
}

/// The sample's parties.
#[derive(Clone, Debug)]
pub struct Parties {
    /// Hospitals (in the genesis state).
    pub hospitals: Vec<Party>,
    /// Doctors.
    pub doctors: Vec<Party>,
    /// Patients.
    pub patients: Vec<Party>,
}

/// The parties: two hospitals, three doctors, three patients.
pub fn parties() -> Parties {
    let p = |label: &str, id| Party { id, key: key(label) };
    Parties {
        hospitals: vec![p("hospital-1", 1), p("hospital-2", 2)],
        doctors: vec![p("doctor-1", 20), p("doctor-2", 21), p("doctor-3", 22)],
        patients: vec![p("patient-1", 10), p("patient-2", 11), p("patient-3", 12)],
    }
}

/// The genesis state holding the sample's hospitals.
pub fn genesis(levels: usize) -> Genesis {
    Genesis {
        instance: Fr::from(INSTANCE),
        levels,
        hospitals: parties()
            .hospitals
            .iter()
            .enumerate()
            .map(|(i, h)| GenesisHospital {
                id: h.id,
                pubkey: h.key.public(),
                rsa_key_hash: rsa_hash(&format!("hospital-{}", i + 1)),
            })
            .collect(),
    }
}

/// A record's content digest for the sample.
pub fn cid(label: &str) -> [u8; 32] {
    Sha256::digest(label.as_bytes()).into()
}

/// The first `shape.batch_size` sample transactions as one batch from the
/// sample genesis (what the prover's tests and benchmarks prove).
pub fn batch(shape: crate::keys::CircuitShape) -> crate::batch::BatchWitness {
    let mut st = crate::state::State::genesis(&genesis(shape.levels)).expect("the sample genesis is valid");
    let mut b = crate::batch::BatchBuilder::new(&mut st, shape.batch_size, NOW);
    for tx in transactions().iter().take(shape.batch_size) {
        b.push(tx).expect("the sample transactions are valid in order");
    }
    b.finish()
}

/// A realistic sequence exercising every transaction kind, valid in order at
/// time [`NOW`] (16 transactions).
pub fn transactions() -> Vec<SignedTx> {
    let ps = parties();
    let (h1, h2) = (&ps.hospitals[0], &ps.hospitals[1]);
    let (d1, d2, d3) = (&ps.doctors[0], &ps.doctors[1], &ps.doctors[2]);
    let (p1, p2, p3) = (&ps.patients[0], &ps.patients[1], &ps.patients[2]);
    let mut s = Signer::new(Fr::from(INSTANCE));
    let reg_patient = |s: &mut Signer, p: &Party, label: &str| {
        s.sign(p, TxBody::RegisterPatient { pubkey: p.key.public(), rsa_key_hash: rsa_hash(label) })
    };
    let reg_doctor = |s: &mut Signer, h: &Party, d: &Party, label: &str| {
        s.sign(
            h,
            TxBody::RegisterDoctor { doctor: d.id, pubkey: d.key.public(), rsa_key_hash: rsa_hash(label) },
        )
    };
    let meta = |x: u64| poseidon::hash(&[Fr::from(x)]);
    vec![
        reg_patient(&mut s, p1, "patient-1"),
        reg_doctor(&mut s, h1, d1, "doctor-1"),
        reg_doctor(&mut s, h2, d2, "doctor-2"),
        s.sign(
            p1,
            TxBody::Grant {
                consent: 100,
                grantee: d1.id,
                scope: Scope::ReadWrite,
                target: ConsentTarget::AllRecords,
                expiry: NOW + 86_400,
            },
        ),
        s.sign(
            d1,
            TxBody::AddRecord {
                record: 500,
                patient: p1.id,
                consent: 100,
                cid_digest: cid("emr-500-v1"),
                meta_hash: meta(1),
            },
        ),
        reg_patient(&mut s, p2, "patient-2"),
        s.sign(
            p1,
            TxBody::Grant {
                consent: 101,
                grantee: d2.id,
                scope: Scope::Read,
                target: ConsentTarget::Record(500),
                expiry: NOW + 3_600,
            },
        ),
        s.sign(d2, TxBody::LogAccess { record: 500, consent: 101 }),
        s.sign(
            d1,
            TxBody::UpdateRecord {
                record: 500,
                version: 1,
                consent: 100,
                cid_digest: cid("emr-500-v2"),
                meta_hash: meta(2),
            },
        ),
        reg_doctor(&mut s, h1, d3, "doctor-3"),
        s.sign(d3, TxBody::EmergencyAccess { record: 500, reason_hash: meta(911) }),
        s.sign(p1, TxBody::Revoke { consent: 101 }),
        s.sign(
            p1,
            TxBody::UpdateRecord {
                record: 500,
                version: 2,
                consent: 0,
                cid_digest: cid("emr-500-v3"),
                meta_hash: meta(3),
            },
        ),
        reg_patient(&mut s, p3, "patient-3"),
        s.sign(
            d1,
            TxBody::AddRecord {
                record: 501,
                patient: p1.id,
                consent: 100,
                cid_digest: cid("emr-501-v1"),
                meta_hash: meta(4),
            },
        ),
        s.sign(p1, TxBody::DeleteRecord { record: 500 }),
    ]
}
