//! A realistic, deterministic load for tests and the demo: hospitals register
//! doctors; then each clinic (a patient and their doctor) registers the
//! patient, grants the doctor read-write consent, and the doctor writes a
//! record, reads it, updates it; the patient revokes the consent, and the
//! doctor's later write is refused (consent revoked).
//!
//! Record contents are stand-ins for encrypted FHIR bundles; each record
//! transaction carries the sha256 of content that must be added to the
//! content store before the transaction is submitted.

use medrollup_circuits::eddsa::PrivateKey;
use medrollup_circuits::field::Fr;
use medrollup_circuits::poseidon;
use medrollup_circuits::sample::{self, Party, Signer};
use medrollup_circuits::tx::{ConsentTarget, Scope, SignedTx, TxBody};
use sha2::{Digest, Sha256};

/// One transaction to send, with the content it refers to (if any).
#[derive(Debug, Clone)]
pub struct Step {
    /// The transaction.
    pub tx: SignedTx,
    /// Bytes to add to the content store first.
    pub content: Option<Vec<u8>>,
    /// Whether the rules must refuse it.
    pub expect_rejected: bool,
}

/// The whole load: an admin sequence (doctor registrations) that must come
/// first, then one independent sequence per clinic.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Doctor registrations, by the hospitals, in order.
    pub admin: Vec<Step>,
    /// Per clinic, in order.
    pub clinics: Vec<Vec<Step>>,
}

impl Workload {
    /// Transactions in all.
    pub fn len(&self) -> usize {
        self.admin.len() + self.clinics.iter().map(Vec::len).sum::<usize>()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Transactions per clinic (plus one doctor registration each).
pub const STEPS_PER_CLINIC: usize = 7;

fn key(label: &str) -> PrivateKey {
    PrivateKey::from_bytes(Sha256::digest(format!("medrollup-workload/{label}").as_bytes()).into())
}

fn rsa_hash(label: &str) -> Fr {
    poseidon::hash(&[Fr::from(u64::from_le_bytes(
        Sha256::digest(label.as_bytes())[..8].try_into().expect("8"),
    ))])
}

/// A load of `clinics` clinics (8 transactions each) on the sample genesis
/// (whose hospitals are accounts 1 and 2), with consents expiring a day
/// after `now`. Ids: patients 100+i, doctors 200+i, consents 300+i, records
/// 400+2i and 401+2i (trees of height 5 hold them for up to 50 clinics).
/// `tag` varies the content so that two runs write different records.
pub fn generate(clinics: usize, now: u64, tag: &str) -> Workload {
    let instance = Fr::from(sample::INSTANCE);
    let hospitals = sample::parties().hospitals;
    let mut signer = Signer::new(instance);
    let content =
        |i: usize, v: u32| format!("encrypted FHIR bundle {tag} clinic {i} version {v}").into_bytes();
    let digest = |b: &[u8]| -> [u8; 32] { Sha256::digest(b).into() };
    let meta = |x: u64| poseidon::hash(&[Fr::from(x)]);
    let mut admin = Vec::new();
    let mut out = Vec::new();
    for i in 0..clinics {
        let patient = Party { id: 100 + i as u64, key: key(&format!("patient-{i}")) };
        let doctor = Party { id: 200 + i as u64, key: key(&format!("doctor-{i}")) };
        let hospital = &hospitals[i % hospitals.len()];
        admin.push(Step {
            tx: signer.sign(
                hospital,
                TxBody::RegisterDoctor {
                    doctor: doctor.id,
                    pubkey: doctor.key.public(),
                    rsa_key_hash: rsa_hash(&format!("doctor-{i}")),
                },
            ),
            content: None,
            expect_rejected: false,
        });
        let consent = 300 + i as u64;
        let (record, late_record) = (400 + 2 * i as u64, 401 + 2 * i as u64);
        let (v1, v2, v3) = (content(i, 1), content(i, 2), content(i, 3));
        let ok = |tx, content| Step { tx, content, expect_rejected: false };
        let steps = vec![
            ok(
                signer.sign(
                    &patient,
                    TxBody::RegisterPatient {
                        pubkey: patient.key.public(),
                        rsa_key_hash: rsa_hash(&format!("patient-{i}")),
                    },
                ),
                None,
            ),
            ok(
                signer.sign(
                    &patient,
                    TxBody::Grant {
                        consent,
                        grantee: doctor.id,
                        scope: Scope::ReadWrite,
                        target: ConsentTarget::AllRecords,
                        expiry: now + 86_400,
                    },
                ),
                None,
            ),
            ok(
                signer.sign(
                    &doctor,
                    TxBody::AddRecord {
                        record,
                        patient: patient.id,
                        consent,
                        cid_digest: digest(&v1),
                        meta_hash: meta(1),
                    },
                ),
                Some(v1),
            ),
            ok(signer.sign(&doctor, TxBody::LogAccess { record, consent }), None),
            ok(
                signer.sign(
                    &doctor,
                    TxBody::UpdateRecord {
                        record,
                        version: 1,
                        consent,
                        cid_digest: digest(&v2),
                        meta_hash: meta(2),
                    },
                ),
                Some(v2),
            ),
            ok(signer.sign(&patient, TxBody::Revoke { consent }), None),
            Step {
                tx: signer.sign(
                    &doctor,
                    TxBody::AddRecord {
                        record: late_record,
                        patient: patient.id,
                        consent,
                        cid_digest: digest(&v3),
                        meta_hash: meta(3),
                    },
                ),
                content: Some(v3),
                expect_rejected: true,
            },
        ];
        debug_assert_eq!(steps.len(), STEPS_PER_CLINIC);
        out.push(steps);
    }
    Workload { admin, clinics: out }
}
