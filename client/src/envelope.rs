//! Encrypted medical records: an HL7 FHIR R4 `Bundle` (JSON), checked for
//! shape, encrypted with AES-256-GCM under a fresh per-record key, the key
//! wrapped with RSA-OAEP-SHA256 for each reader.
//!
//! ## Envelope, version 1 (JSON; what goes to IPFS)
//!
//! ```text
//! { "format": "medrollup-emr-envelope", "version": 1,
//!   "record": <record id>, "content_type": "application/fhir+json",
//!   "cipher": "aes-256-gcm", "nonce": hex(12), "ciphertext": base64,
//!   "recipients": [ { "rsa_key_hash": decimal, "wrapped_key": hex(RSA-OAEP-SHA256(key)) } ] }
//! ```
//!
//! The associated data is `medrollup-emr-envelope/v1/<record>/<content_type>`,
//! so a ciphertext cannot be passed off as another record's. Readers find
//! their wrapped key by the `rsa_key_hash` their account registered. Revoking
//! a reader is a new envelope under a new key for the remaining readers (the
//! revoked reader's copy of the old key opens nothing new).

use crate::keystore::{Identity, KeystoreError, PublicIdentity, hex_bytes, random};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use medrollup_circuits::field::{Fr, serde_fr};
use rsa::sha2::Sha256;
use serde::{Deserialize, Serialize};

/// The `format` tag.
pub const FORMAT: &str = "medrollup-emr-envelope";
/// The version written and read.
pub const VERSION: u32 = 1;
/// The only content type: FHIR JSON.
pub const CONTENT_TYPE: &str = "application/fhir+json";

/// FHIR R4 resource types a record bundle may hold.
pub const ACCEPTED_RESOURCES: &[&str] = &[
    "Patient",
    "Practitioner",
    "Organization",
    "Encounter",
    "Observation",
    "Condition",
    "Procedure",
    "MedicationRequest",
    "MedicationStatement",
    "AllergyIntolerance",
    "Immunization",
    "DiagnosticReport",
    "DocumentReference",
    "CarePlan",
    "Composition",
];

/// FHIR R4 `Bundle.type` codes.
const BUNDLE_TYPES: &[&str] = &[
    "document",
    "message",
    "transaction",
    "transaction-response",
    "batch",
    "batch-response",
    "history",
    "searchset",
    "collection",
];

/// What is wrong with a record or an envelope.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The record is not a FHIR bundle we accept; the message names where.
    #[error("not a FHIR R4 record bundle: {0}")]
    Fhir(String),
    /// The reader has no wrapped key in this envelope.
    #[error("this record is not shared with the key {0} (no consent, or it was revoked)")]
    NotARecipient(String),
    /// The envelope or its ciphertext is damaged.
    #[error("the encrypted record is corrupted: {0}")]
    Corrupted(String),
    /// A format this client does not read.
    #[error("unsupported envelope: {0}")]
    Unsupported(String),
    /// Keys.
    #[error(transparent)]
    Keys(#[from] KeystoreError),
}

/// Checks that `json` is a FHIR R4 `Bundle` with at least one entry, each
/// entry's `resource` of an accepted type. Returns the resource types.
pub fn validate_bundle(json: &[u8]) -> Result<Vec<String>, RecordError> {
    let v: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| RecordError::Fhir(format!("not JSON: {e}")))?;
    let obj = v.as_object().ok_or_else(|| RecordError::Fhir("the top level is not a JSON object".into()))?;
    match obj.get("resourceType").and_then(|t| t.as_str()) {
        Some("Bundle") => {}
        Some(other) => return Err(RecordError::Fhir(format!("resourceType is {other:?}, not \"Bundle\""))),
        None => return Err(RecordError::Fhir("resourceType is missing".into())),
    }
    match obj.get("type").and_then(|t| t.as_str()) {
        Some(t) if BUNDLE_TYPES.contains(&t) => {}
        Some(t) => return Err(RecordError::Fhir(format!("type {t:?} is not a FHIR R4 bundle type"))),
        None => return Err(RecordError::Fhir("type is missing".into())),
    }
    let entries = obj
        .get("entry")
        .and_then(|e| e.as_array())
        .ok_or_else(|| RecordError::Fhir("entry is missing or not an array".into()))?;
    if entries.is_empty() {
        return Err(RecordError::Fhir("entry is empty".into()));
    }
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let ty = e
                .get("resource")
                .and_then(|r| r.as_object())
                .ok_or_else(|| RecordError::Fhir(format!("entry[{i}].resource is missing or not an object")))?
                .get("resourceType")
                .and_then(|t| t.as_str())
                .ok_or_else(|| RecordError::Fhir(format!("entry[{i}].resource.resourceType is missing")))?;
            if !ACCEPTED_RESOURCES.contains(&ty) {
                return Err(RecordError::Fhir(format!(
                    "entry[{i}].resource.resourceType {ty:?} is not one of {}",
                    ACCEPTED_RESOURCES.join(", ")
                )));
            }
            Ok(ty.to_string())
        })
        .collect()
}

/// An example record: a FHIR R4 `collection` Bundle for patient `patient`
/// with heart-rate Observations (LOINC 8867-4) until it is about `size`
/// bytes of JSON. For demos, tests and benchmarks.
pub fn example_bundle(patient: &str, size: usize) -> Vec<u8> {
    let mut entries = vec![serde_json::json!({ "resource": { "resourceType": "Patient", "id": patient } })];
    let mut len = 100;
    let mut i = 0;
    while len < size {
        let e = serde_json::json!({ "resource": {
            "resourceType": "Observation", "id": format!("o{i}"), "status": "final",
            "subject": { "reference": format!("Patient/{patient}") },
            "code": { "coding": [ { "system": "http://loinc.org", "code": "8867-4", "display": "Heart rate" } ] },
            "valueQuantity": { "value": 60 + i % 40, "unit": "beats/minute" },
            "note": [ { "text": "x".repeat(800) } ]
        }});
        len += e.to_string().len() + 1;
        entries.push(e);
        i += 1;
    }
    serde_json::json!({ "resourceType": "Bundle", "type": "collection", "entry": entries })
        .to_string()
        .into_bytes()
}

/// One reader's copy of the record key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    /// The reader's registered RSA key hash.
    #[serde(with = "serde_fr")]
    pub rsa_key_hash: Fr,
    /// RSA-OAEP-SHA256 of the 32-byte record key.
    #[serde(with = "hex_bytes")]
    pub wrapped_key: Vec<u8>,
}

/// An encrypted record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// [`FORMAT`].
    pub format: String,
    /// [`VERSION`].
    pub version: u32,
    /// The record id in the rollup state.
    pub record: u64,
    /// [`CONTENT_TYPE`].
    pub content_type: String,
    /// `aes-256-gcm`.
    pub cipher: String,
    /// GCM nonce.
    #[serde(with = "hex_bytes")]
    pub nonce: Vec<u8>,
    /// The encrypted bundle (with its tag), base64 (standard alphabet, padded).
    #[serde(with = "b64_bytes")]
    pub ciphertext: Vec<u8>,
    /// Who can read it.
    pub recipients: Vec<Recipient>,
}

/// A record's symmetric key (crypto-shredding destroys every copy of it;
/// this one is wiped from memory when dropped).
pub struct RecordKey([u8; 32]);

impl Drop for RecordKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl std::fmt::Debug for RecordKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecordKey(..)")
    }
}

/// Base64 (de)serialisation of the ciphertext (a third larger, not twice).
mod b64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s.as_bytes()).map_err(|e| serde::de::Error::custom(format!("not base64: {e}")))
    }
}

fn aad(record: u64) -> Vec<u8> {
    format!("{FORMAT}/v{VERSION}/{record}/{CONTENT_TYPE}").into_bytes()
}

fn wrap(key: &RecordKey, reader: &PublicIdentity) -> Result<Recipient, RecordError> {
    let wrapped = reader
        .rsa_key()?
        .oaep_encrypt::<Sha256>(&key.0)
        .map_err(|e| RecordError::Unsupported(format!("RSA-OAEP: {e}")))?;
    Ok(Recipient { rsa_key_hash: reader.rsa_key_hash, wrapped_key: wrapped })
}

impl Envelope {
    /// Validates `bundle` and encrypts it for `readers` under a fresh key.
    pub fn seal(
        bundle: &[u8],
        record: u64,
        readers: &[&PublicIdentity],
    ) -> Result<(Self, RecordKey), RecordError> {
        validate_bundle(bundle)?;
        if readers.is_empty() {
            return Err(RecordError::Unsupported("a record needs at least one reader (its patient)".into()));
        }
        let key = RecordKey(random());
        let nonce: [u8; 12] = random();
        let ciphertext = Aes256Gcm::new(&key.0.into())
            .encrypt(&Nonce::from(nonce), Payload { msg: bundle, aad: &aad(record) })
            .expect("AES-GCM encrypts");
        let recipients = readers.iter().map(|r| wrap(&key, r)).collect::<Result<_, _>>()?;
        Ok((
            Self {
                format: FORMAT.into(),
                version: VERSION,
                record,
                content_type: CONTENT_TYPE.into(),
                cipher: "aes-256-gcm".into(),
                nonce: nonce.to_vec(),
                ciphertext,
                recipients,
            },
            key,
        ))
    }

    /// Gives `reader` a copy of the key (a grant), if it has none.
    pub fn add_reader(&mut self, key: &RecordKey, reader: &PublicIdentity) -> Result<(), RecordError> {
        if !self.recipients.iter().any(|r| r.rsa_key_hash == reader.rsa_key_hash) {
            self.recipients.push(wrap(key, reader)?);
        }
        Ok(())
    }

    /// The record key, unwrapped by `identity`.
    pub fn record_key(&self, identity: &Identity) -> Result<RecordKey, RecordError> {
        self.check_header()?;
        let hash = identity.public().rsa_key_hash;
        let r = self
            .recipients
            .iter()
            .find(|r| r.rsa_key_hash == hash)
            .ok_or_else(|| RecordError::NotARecipient(medrollup_circuits::field::fr_to_dec(&hash)))?;
        let key = identity.rsa_key().oaep_decrypt::<Sha256>(&r.wrapped_key).map_err(|_| {
            RecordError::Corrupted("the wrapped key does not unwrap with this reader's key".into())
        })?;
        let key = zeroize::Zeroizing::new(key);
        let key: [u8; 32] = key
            .as_slice()
            .try_into()
            .map_err(|_| RecordError::Corrupted("the record key is not 32 bytes".into()))?;
        Ok(RecordKey(key))
    }

    /// Decrypts the bundle with `identity`'s copy of the key.
    pub fn open(&self, identity: &Identity) -> Result<Vec<u8>, RecordError> {
        let key = self.record_key(identity)?;
        self.open_with(&key)
    }

    /// Decrypts the bundle with the record key.
    pub fn open_with(&self, key: &RecordKey) -> Result<Vec<u8>, RecordError> {
        self.check_header()?;
        let nonce: [u8; 12] = self.nonce.as_slice().try_into().map_err(|_| {
            RecordError::Corrupted(format!("the nonce has {} bytes, not 12", self.nonce.len()))
        })?;
        let plain = Aes256Gcm::new(&key.0.into())
            .decrypt(&Nonce::from(nonce), Payload { msg: &self.ciphertext, aad: &aad(self.record) })
            .map_err(|_| {
                RecordError::Corrupted(format!(
                    "record {}: the ciphertext does not authenticate under this key (altered, or another record's)",
                    self.record
                ))
            })?;
        validate_bundle(&plain)?;
        Ok(plain)
    }

    fn check_header(&self) -> Result<(), RecordError> {
        if self.format != FORMAT || self.version != VERSION {
            return Err(RecordError::Unsupported(format!(
                "{} version {} (this client reads {FORMAT} version {VERSION})",
                self.format, self.version
            )));
        }
        if self.cipher != "aes-256-gcm" || self.content_type != CONTENT_TYPE {
            return Err(RecordError::Unsupported(format!(
                "cipher {:?}, content type {:?}",
                self.cipher, self.content_type
            )));
        }
        Ok(())
    }

    /// The envelope's bytes (what is stored and addressed by CID).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("json")
    }

    /// Parses stored bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, RecordError> {
        let v: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| RecordError::Corrupted(format!("the envelope is not JSON: {e}")))?;
        if v.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
            return Err(RecordError::Unsupported("not a medrollup record envelope".into()));
        }
        serde_json::from_value(v).map_err(|e| RecordError::Corrupted(format!("the envelope: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    #[test]
    #[allow(unsafe_code)] // reads memory the test owns, after the key in it was dropped
    fn a_record_key_is_wiped_from_memory_when_dropped() {
        fn bytes_after_drop<T>(value: T) -> Vec<u8> {
            let mut slot = std::mem::MaybeUninit::new(value);
            // SAFETY: `slot` holds an initialised `T`, dropped once here and
            // never used as a `T` again; its storage stays ours and
            // initialised (the destructor writes it), so reading it as bytes
            // is sound.
            unsafe {
                std::ptr::drop_in_place(slot.as_mut_ptr());
                std::slice::from_raw_parts(slot.as_ptr().cast::<u8>(), std::mem::size_of::<T>()).to_vec()
            }
        }
        assert_eq!(std::mem::size_of::<RecordKey>(), 32);
        assert_eq!(bytes_after_drop(RecordKey([0xa5; 32])), vec![0; 32]);
        assert_eq!(bytes_after_drop([0xa5u8; 32]), vec![0xa5; 32], "a plain array is left as it was");
    }

    fn people() -> &'static [Identity; 3] {
        static P: OnceLock<[Identity; 3]> = OnceLock::new();
        P.get_or_init(|| [Identity::generate(), Identity::generate(), Identity::generate()])
    }

    /// A small FHIR R4 bundle (shape as in the FHIR R4 specification's examples).
    pub(crate) fn bundle() -> Vec<u8> {
        serde_json::json!({
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [
                { "resource": { "resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1980-04-02" } },
                { "resource": { "resourceType": "Observation", "id": "o1", "status": "final",
                    "code": { "coding": [ { "system": "http://loinc.org", "code": "8867-4", "display": "Heart rate" } ] },
                    "valueQuantity": { "value": 72, "unit": "beats/minute" } } }
            ]
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn readers_open_and_others_do_not() {
        let [patient, doctor, stranger] = people();
        let (env, key) = Envelope::seal(&bundle(), 400, &[&patient.public()]).unwrap();
        let stored = env.to_bytes();
        assert!(!String::from_utf8_lossy(&stored).contains("Heart rate"), "the content is encrypted");
        let mut env = Envelope::from_bytes(&stored).unwrap();
        assert_eq!(env.open(patient).unwrap(), bundle());
        assert!(matches!(env.open(doctor), Err(RecordError::NotARecipient(_))));
        env.add_reader(&key, &doctor.public()).unwrap();
        env.add_reader(&key, &doctor.public()).unwrap();
        assert_eq!(env.recipients.len(), 2, "a second grant adds no second copy");
        assert_eq!(env.open(doctor).unwrap(), bundle());
        assert!(matches!(env.open(stranger), Err(RecordError::NotARecipient(_))));
    }

    #[test]
    fn a_revocation_rekeys_so_the_old_key_opens_nothing_new() {
        let [patient, doctor, _] = people();
        let (old, _) = Envelope::seal(&bundle(), 400, &[&patient.public(), &doctor.public()]).unwrap();
        let doctors_old_key = old.record_key(doctor).unwrap();
        let (new, _) = Envelope::seal(&bundle(), 400, &[&patient.public()]).unwrap();
        assert!(matches!(new.open(doctor), Err(RecordError::NotARecipient(_))));
        assert!(matches!(new.open_with(&doctors_old_key), Err(RecordError::Corrupted(_))));
        assert_eq!(new.open(patient).unwrap(), bundle());
        assert_ne!(old.ciphertext, new.ciphertext);
    }

    #[test]
    fn damage_and_swaps_are_caught() {
        let [patient, _, _] = people();
        let (env, key) = Envelope::seal(&bundle(), 400, &[&patient.public()]).unwrap();
        let mut bad = env.clone();
        bad.ciphertext[3] ^= 0x80;
        let e = bad.open(patient).unwrap_err();
        assert!(matches!(e, RecordError::Corrupted(ref m) if m.contains("does not authenticate")), "{e}");
        // The same ciphertext presented as another record's.
        let mut moved = env.clone();
        moved.record = 402;
        assert!(matches!(moved.open_with(&key), Err(RecordError::Corrupted(_))));
        let mut wrapped = env.clone();
        wrapped.recipients[0].wrapped_key[5] ^= 1;
        assert!(matches!(wrapped.open(patient), Err(RecordError::Corrupted(_))));
        let e =
            Envelope::from_bytes(b"{\"format\": \"medrollup-emr-envelope\", \"version\": 1}").unwrap_err();
        assert!(matches!(e, RecordError::Corrupted(_)), "{e}");
        assert!(matches!(Envelope::from_bytes(b"\x00\x01"), Err(RecordError::Corrupted(_))));
        assert!(matches!(Envelope::from_bytes(b"{}"), Err(RecordError::Unsupported(_))));
        let mut v2 = env.clone();
        v2.version = 2;
        assert!(matches!(v2.open(patient), Err(RecordError::Unsupported(_))));
    }

    #[test]
    fn only_fhir_bundles_are_accepted_with_the_place_of_the_problem() {
        assert_eq!(validate_bundle(&bundle()).unwrap(), vec!["Patient", "Observation"]);
        let cases: &[(&str, &str)] = &[
            ("not json", "not JSON"),
            ("[]", "not a JSON object"),
            (r#"{"resourceType":"Patient"}"#, "resourceType is \"Patient\""),
            (r#"{"resourceType":"Bundle","entry":[]}"#, "type is missing"),
            (
                r#"{"resourceType":"Bundle","type":"pile","entry":[]}"#,
                "\"pile\" is not a FHIR R4 bundle type",
            ),
            (r#"{"resourceType":"Bundle","type":"collection"}"#, "entry is missing"),
            (r#"{"resourceType":"Bundle","type":"collection","entry":[]}"#, "entry is empty"),
            (
                r#"{"resourceType":"Bundle","type":"collection","entry":[{"fullUrl":"x"}]}"#,
                "entry[0].resource is missing",
            ),
            (
                r#"{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Patient"}},{"resource":{"resourceType":"Spaceship"}}]}"#,
                "entry[1].resource.resourceType \"Spaceship\"",
            ),
        ];
        for (input, says) in cases {
            let e = validate_bundle(input.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(says), "{input}: {e}");
        }
        let [patient, _, _] = people();
        assert!(matches!(Envelope::seal(b"{}", 1, &[&patient.public()]), Err(RecordError::Fhir(_))));
        assert!(matches!(Envelope::seal(&bundle(), 1, &[]), Err(RecordError::Unsupported(_))));
    }
}
