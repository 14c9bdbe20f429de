//! A user's keys and the encrypted file that keeps them.
//!
//! Every user has a Baby Jubjub key (signs rollup transactions) and an
//! RSA-3072 key pair (receives record keys wrapped with RSA-OAEP-SHA256). The
//! account registers `rsa_key_hash = Poseidon(sha256(SPKI DER) as two limbs)`.
//!
//! ## Keystore file, version 1 (JSON)
//!
//! ```text
//! { "format": "medrollup-keystore", "version": 1,
//!   "kdf":    { "algorithm": "argon2id", "memory_kib", "iterations", "parallelism", "salt": hex(16) },
//!   "cipher": { "algorithm": "aes-256-gcm", "nonce": hex(12) },
//!   "check":  hex(32),
//!   "public": { "babyjub": { "x", "y" } (decimal), "rsa_spki": hex(DER), "rsa_key_hash" (decimal) },
//!   "ciphertext": hex }
//! ```
//!
//! Argon2id turns the password and salt into 64 bytes: the first 32 are the
//! AES-256-GCM key, the sha256 of the last 32 is `check`. The plaintext is the
//! JSON `{ "babyjub": hex(32), "rsa_pkcs8": hex(DER) }`; the associated data is
//! the format tag and the sha256 of the `public` part, so the public part
//! cannot be swapped. A wrong password fails `check`; a file whose check
//! passes but whose ciphertext or public part does not authenticate is
//! corrupted. Without the password the file gives nothing but the public keys.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use medrollup_circuits::eddsa;
use medrollup_circuits::field::{Fr, serde_fr};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use rsa::{Generate, PrivateKey as RsaPrivateKey, PublicKey as RsaPublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;

/// The `format` tag of keystore files.
pub const FORMAT: &str = "medrollup-keystore";
/// The keystore version this code writes and reads.
pub const VERSION: u32 = 1;

/// What went wrong with keys or a keystore.
#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    /// The password does not open this keystore.
    #[error("wrong password for this keystore")]
    WrongPassword,
    /// The file is damaged or was altered.
    #[error("the keystore is corrupted: {0}")]
    Corrupted(String),
    /// A format or version this code does not read.
    #[error("unsupported keystore: {0}")]
    Unsupported(String),
    /// Bad settings (weak KDF parameters, empty password, ...).
    #[error("{0}")]
    Invalid(String),
    /// A new keystore's file exists already (nothing was overwritten).
    #[error("{0} exists; move it away first (nothing was overwritten)")]
    Exists(String),
    /// Reading or writing the file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Random bytes from the operating system.
pub(crate) fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the operating system's random source");
    b
}

/// A user's secret keys.
pub struct Identity {
    signing: eddsa::PrivateKey,
    rsa: RsaPrivateKey,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").field("public", &self.public()).finish_non_exhaustive()
    }
}

impl Identity {
    /// Fresh keys (RSA-3072 key generation takes a few seconds).
    pub fn generate() -> Self {
        Self { signing: eddsa::PrivateKey::from_bytes(random()), rsa: RsaPrivateKey::generate() }
    }

    /// From existing keys.
    pub fn from_parts(signing: eddsa::PrivateKey, rsa: RsaPrivateKey) -> Self {
        Self { signing, rsa }
    }

    /// The Baby Jubjub signing key.
    pub fn signing_key(&self) -> &eddsa::PrivateKey {
        &self.signing
    }

    /// The RSA private key.
    pub fn rsa_key(&self) -> &RsaPrivateKey {
        &self.rsa
    }

    /// The public halves.
    pub fn public(&self) -> PublicIdentity {
        let spki =
            self.rsa.to_public_key().to_public_key_der().expect("an RSA key encodes").as_bytes().to_vec();
        PublicIdentity::new(self.signing.public(), spki)
    }
}

/// A user's public keys, as others see them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicIdentity {
    /// Baby Jubjub public key.
    pub babyjub: eddsa::PublicKey,
    /// RSA public key, SubjectPublicKeyInfo DER.
    #[serde(with = "hex_bytes")]
    pub rsa_spki: Vec<u8>,
    /// What the account registers: Poseidon of sha256(`rsa_spki`).
    #[serde(with = "serde_fr")]
    pub rsa_key_hash: Fr,
}

impl PublicIdentity {
    /// From the keys, computing the hash.
    pub fn new(babyjub: eddsa::PublicKey, rsa_spki: Vec<u8>) -> Self {
        let rsa_key_hash = rsa_key_hash(&rsa_spki);
        Self { babyjub, rsa_spki, rsa_key_hash }
    }

    /// The RSA public key.
    pub fn rsa_key(&self) -> Result<RsaPublicKey, KeystoreError> {
        RsaPublicKey::from_public_key_der(&self.rsa_spki)
            .map_err(|e| KeystoreError::Corrupted(format!("the RSA public key does not decode: {e}")))
    }

    /// Checks that the stored hash is the hash of the stored key, and that
    /// the key is as strong as the ones this client makes (records' keys
    /// are wrapped under it): RSA of at least 3072 bits, exponent 65537.
    pub fn check(&self) -> Result<(), KeystoreError> {
        use rsa::traits::PublicKeyParts;
        if rsa_key_hash(&self.rsa_spki) != self.rsa_key_hash {
            return Err(KeystoreError::Corrupted("rsa_key_hash is not the hash of rsa_spki".into()));
        }
        let key = self.rsa_key()?;
        let bits = key.n().bit_width();
        if bits < MIN_RSA_BITS {
            return Err(KeystoreError::Invalid(format!(
                "the RSA key has {bits} bits; at least {MIN_RSA_BITS} are required"
            )));
        }
        if *key.e_bytes() != [0x01, 0x00, 0x01] {
            return Err(KeystoreError::Invalid(format!(
                "the RSA key's public exponent is 0x{}, not 65537",
                hex::encode(key.e_bytes())
            )));
        }
        Ok(())
    }
}

pub use medrollup_circuits::state::rsa_key_hash;

/// The smallest RSA modulus a reader's key may have (records' keys are
/// wrapped under it; this client makes 3072-bit keys).
pub const MIN_RSA_BITS: u32 = 3072;

/// Argon2id parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl KdfParams {
    /// The default: 64 MiB, 3 passes, 1 lane (OWASP's second recommended
    /// Argon2id configuration is 12 MiB / 3; this is stronger).
    pub const DEFAULT: Self = Self { memory_kib: 64 * 1024, iterations: 3, parallelism: 1 };
    /// The weakest accepted (for tests that create many keystores).
    pub const MIN: Self = Self { memory_kib: 8 * 1024, iterations: 1, parallelism: 1 };

    fn validate(&self) -> Result<(), KeystoreError> {
        if self.memory_kib < Self::MIN.memory_kib || self.iterations < 1 || self.parallelism < 1 {
            return Err(KeystoreError::Invalid(format!(
                "argon2id parameters {self:?} are below the minimum {:?}",
                Self::MIN
            )));
        }
        // A file can ask for anything: bounded so that opening one cannot
        // take minutes or all the memory (1 GiB, 16 passes, 16 lanes).
        if self.memory_kib > 1024 * 1024 || self.iterations > 16 || self.parallelism > 16 {
            return Err(KeystoreError::Unsupported(format!("argon2id parameters {self:?} are out of range")));
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct KdfSection {
    algorithm: String,
    #[serde(flatten)]
    params: KdfParams,
    #[serde(with = "hex_bytes")]
    salt: Vec<u8>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct CipherSection {
    algorithm: String,
    #[serde(with = "hex_bytes")]
    nonce: Vec<u8>,
}

/// A keystore file's contents.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Keystore {
    format: String,
    version: u32,
    kdf: KdfSection,
    cipher: CipherSection,
    #[serde(with = "hex_bytes")]
    check: Vec<u8>,
    /// The public keys (readable without the password).
    pub public: PublicIdentity,
    #[serde(with = "hex_bytes")]
    ciphertext: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct Secret {
    #[serde(with = "secret_hex")]
    babyjub: Vec<u8>,
    #[serde(with = "secret_hex")]
    rsa_pkcs8: Vec<u8>,
}

/// Hex (de)serialisation of secret bytes: the hex text is wiped once used.
mod secret_hex {
    use serde::{Deserialize, Deserializer, Serializer};
    use zeroize::Zeroizing;

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&Zeroizing::new(hex::encode(b)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = Zeroizing::new(String::deserialize(d)?);
        hex::decode(text.as_str()).map_err(|e| serde::de::Error::custom(format!("not hex: {e}")))
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.babyjub);
        zeroize::Zeroize::zeroize(&mut self.rsa_pkcs8);
    }
}

/// The encryption key and the password check derived from a password (the
/// key is wiped from memory when dropped).
type Derived = (zeroize::Zeroizing<[u8; 32]>, [u8; 32]);

fn derive(password: &str, salt: &[u8], p: KdfParams) -> Result<Derived, KeystoreError> {
    let params = argon2::Params::new(p.memory_kib, p.iterations, p.parallelism, Some(64))
        .map_err(|e| KeystoreError::Unsupported(format!("argon2id parameters: {e}")))?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = zeroize::Zeroizing::new([0u8; 64]);
    a.hash_password_into(password.as_bytes(), salt, out.as_mut_slice())
        .map_err(|e| KeystoreError::Invalid(format!("argon2id: {e}")))?;
    let mut enc = zeroize::Zeroizing::new([0u8; 32]);
    enc.copy_from_slice(&out[..32]);
    Ok((enc, Sha256::digest(&out[32..]).into()))
}

fn aad(public: &PublicIdentity) -> Vec<u8> {
    let mut a = format!("{FORMAT}/v{VERSION}/").into_bytes();
    a.extend_from_slice(&Sha256::digest(serde_json::to_vec(public).expect("json")));
    a
}

impl Keystore {
    /// Encrypts `identity` under `password`.
    pub fn seal(identity: &Identity, password: &str, params: KdfParams) -> Result<Self, KeystoreError> {
        if password.is_empty() {
            return Err(KeystoreError::Invalid("the password is empty".into()));
        }
        params.validate()?;
        let salt: [u8; 16] = random();
        let nonce: [u8; 12] = random();
        let (key, check) = derive(password, &salt, params)?;
        let public = identity.public();
        let secret = Secret {
            babyjub: identity.signing.to_bytes().to_vec(),
            rsa_pkcs8: identity.rsa.to_pkcs8_der().expect("an RSA key encodes").as_bytes().to_vec(),
        };
        // Sized for the whole text up front: no reallocation leaves a copy
        // of it behind unwiped.
        let mut plain = zeroize::Zeroizing::new(Vec::with_capacity(
            2 * (secret.babyjub.len() + secret.rsa_pkcs8.len()) + 64,
        ));
        serde_json::to_writer(&mut *plain, &secret).expect("json");
        let ciphertext = Aes256Gcm::new(&(*key).into())
            .encrypt(&Nonce::from(nonce), Payload { msg: plain.as_slice(), aad: &aad(&public) })
            .expect("AES-GCM encrypts");
        Ok(Self {
            format: FORMAT.into(),
            version: VERSION,
            kdf: KdfSection { algorithm: "argon2id".into(), params, salt: salt.to_vec() },
            cipher: CipherSection { algorithm: "aes-256-gcm".into(), nonce: nonce.to_vec() },
            check: check.to_vec(),
            public,
            ciphertext,
        })
    }

    /// Decrypts the keys with `password`.
    pub fn open(&self, password: &str) -> Result<Identity, KeystoreError> {
        if self.format != FORMAT {
            return Err(KeystoreError::Unsupported(format!("format {:?} is not {FORMAT:?}", self.format)));
        }
        if self.version != VERSION {
            return Err(KeystoreError::Unsupported(format!(
                "version {} (this client reads {VERSION})",
                self.version
            )));
        }
        if self.kdf.algorithm != "argon2id" || self.cipher.algorithm != "aes-256-gcm" {
            return Err(KeystoreError::Unsupported(format!(
                "kdf {:?} with cipher {:?} (this client reads argon2id with aes-256-gcm)",
                self.kdf.algorithm, self.cipher.algorithm
            )));
        }
        self.kdf.params.validate()?;
        let nonce: [u8; 12] = self.cipher.nonce.as_slice().try_into().map_err(|_| {
            KeystoreError::Corrupted(format!("the nonce has {} bytes, not 12", self.cipher.nonce.len()))
        })?;
        if self.kdf.salt.len() < 16 {
            return Err(KeystoreError::Corrupted(format!(
                "the salt has {} bytes, fewer than 16",
                self.kdf.salt.len()
            )));
        }
        let (key, check) = derive(password, &self.kdf.salt, self.kdf.params)?;
        if check.as_slice() != self.check.as_slice() {
            return Err(KeystoreError::WrongPassword);
        }
        let plain = Aes256Gcm::new(&(*key).into())
            .decrypt(&Nonce::from(nonce), Payload { msg: &self.ciphertext, aad: &aad(&self.public) })
            .map_err(|_| {
                KeystoreError::Corrupted(
                    "the password is right but the keys or the public part were altered".into(),
                )
            })?;
        let plain = zeroize::Zeroizing::new(plain);
        let secret: Secret = serde_json::from_slice(&plain)
            .map_err(|e| KeystoreError::Corrupted(format!("the decrypted keys do not parse: {e}")))?;
        let babyjub: zeroize::Zeroizing<[u8; 32]> = zeroize::Zeroizing::new(
            secret
                .babyjub
                .as_slice()
                .try_into()
                .map_err(|_| KeystoreError::Corrupted("the Baby Jubjub key is not 32 bytes".into()))?,
        );
        let rsa = RsaPrivateKey::from_pkcs8_der(&secret.rsa_pkcs8)
            .map_err(|e| KeystoreError::Corrupted(format!("the RSA key does not decode: {e}")))?;
        let identity = Identity { signing: eddsa::PrivateKey::from_bytes(*babyjub), rsa };
        if identity.public() != self.public {
            return Err(KeystoreError::Corrupted("the public keys are not those of the secret keys".into()));
        }
        Ok(identity)
    }

    /// Parses a keystore file's text.
    pub fn parse(text: &str) -> Result<Self, KeystoreError> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| KeystoreError::Corrupted(format!("not JSON: {e}")))?;
        if v.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
            return Err(KeystoreError::Unsupported(
                "not a medrollup keystore (no \"format\": \"medrollup-keystore\")".into(),
            ));
        }
        let ks: Self = serde_json::from_value(v).map_err(|e| KeystoreError::Corrupted(e.to_string()))?;
        ks.public.check()?;
        Ok(ks)
    }

    /// Reads a keystore file.
    pub fn read(path: &Path) -> Result<Self, KeystoreError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| KeystoreError::Io { path: path.display().to_string(), source })?;
        Self::parse(&text)
    }

    /// Writes the keystore to `path`, replacing what is there (atomically:
    /// a temporary file renamed, so a crash never leaves half a keystore),
    /// readable by its owner only.
    pub fn write(&self, path: &Path) -> Result<(), KeystoreError> {
        let tmp = self.write_aside(path)?;
        std::fs::rename(&tmp, path).map_err(|source| {
            let _ = std::fs::remove_file(&tmp);
            KeystoreError::Io { path: path.display().to_string(), source }
        })
    }

    /// Writes a new keystore to `path`, which must not exist: a second
    /// writer (another process, another tab) gets [`KeystoreError::Exists`]
    /// and the first one's keys stay. Atomic as [`Self::write`] (the file is
    /// linked into place whole).
    pub fn write_new(&self, path: &Path) -> Result<(), KeystoreError> {
        let tmp = self.write_aside(path)?;
        let linked = std::fs::hard_link(&tmp, path);
        let _ = std::fs::remove_file(&tmp);
        let exists = || KeystoreError::Exists(path.display().to_string());
        let io = |source| KeystoreError::Io { path: path.display().to_string(), source };
        match linked {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(exists()),
            // A file system without hard links: created exclusively instead
            // (never over another; not atomic against a crash mid-write).
            Err(_) => {
                use std::io::Write;
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut file = options.open(path).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::AlreadyExists { exists() } else { io(e) }
                })?;
                file.write_all(&serde_json::to_vec_pretty(self).expect("json"))
                    .and_then(|()| file.sync_all())
                    .map_err(io)
            }
        }
    }

    /// The keystore in a fresh file beside `path` (see [`aside`]); returns
    /// that file's path.
    fn write_aside(&self, path: &Path) -> Result<std::path::PathBuf, KeystoreError> {
        aside(path, &serde_json::to_vec_pretty(self).expect("json"))
            .map_err(|(tmp, source)| KeystoreError::Io { path: tmp.display().to_string(), source })
    }

    /// The same keys under a new password (and fresh salt and nonce).
    pub fn change_password(&self, old: &str, new: &str, params: KdfParams) -> Result<Self, KeystoreError> {
        Self::seal(&self.open(old)?, new, params)
    }
}

/// `bytes` in a fresh file beside `path` (its own name, created owner-only,
/// flushed to disk); returns that file's path, or it and the error.
fn aside(path: &Path, bytes: &[u8]) -> Result<std::path::PathBuf, (std::path::PathBuf, std::io::Error)> {
    use std::io::Write;
    let name = path.file_name().map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", hex::encode(random::<8>())));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written =
        options.open(&tmp).and_then(|mut file| file.write_all(bytes).and_then(|()| file.sync_all()));
    match written {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err((tmp, e))
        }
    }
}

/// Writes `bytes` to `path`, readable by its owner only (a decrypted record
/// is nobody else's to read): a new or regular file is written whole beside
/// it, then renamed into place; anything else (a link, a pipe,
/// `/dev/stdout`) is written through as it is.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if std::fs::symlink_metadata(path).is_ok_and(|m| !m.is_file()) {
        return std::fs::write(path, bytes);
    }
    let tmp = aside(path, bytes).map_err(|(_, e)| e)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Hex (de)serialisation of byte strings.
pub(crate) mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(&s).map_err(|e| serde::de::Error::custom(format!("not hex: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    fn alice() -> &'static Identity {
        static A: OnceLock<Identity> = OnceLock::new();
        A.get_or_init(Identity::generate)
    }

    #[test]
    fn readers_keys_weaker_than_ours_are_refused() {
        // Public keys made with `openssl genrsa 1024` and `openssl genrsa -3 3072`.
        let weak = hex::decode("30819f300d06092a864886f70d010101050003818d00308189028181009a4fa66d2ed329b64cbf58d10667743a0af53c83a3f63bef6b37e9f53ae715321baa07262fc6b636e8540ef1d9fb2fde3efcb0e02ca87971ed30a47d7f1f6a8e9f2b6688dbfca5ab9f4f758acad769e6075831d4beeecf576dbcb6dfd02015ccc65c48d402586acc46f2721000f0f14e17ccecc4b11f362907787148a047a8050203010001").unwrap();
        let e3 = hex::decode("308201a0300d06092a864886f70d01010105000382018d00308201880282018100c587799d939c9bccfc799d9b85f324d47c9e9c34251e74fd7444ecd51406600e3ab9fd75332cacd3dd0aee51eab14eda05d86885406b86c2f58f93325e5188790ddc7801334ebb8d2281070f288e3a5433bc63533384f357e1a81ac3ae4caaff70a4e156e65d762a4afad78162e71b341af725c7aaa1c095665b7171ffd396fffad6a17677fb370f0b098a91cfda5f2de8117ab8d68660656b748df14bbaca117da634397f985d492559f7a7ce10fa8a331918e7d99dc770727b1b0d2bad022a86c5d1559e5babf42d32261742578aeebcfe9b2ea2da0b2b0e118429a6dffe06ef2242efbbe224334fce0941e785372e4880fc176382679953f7195a25b8f2c4061903ca684fcb5830332d307c2d7ea9c65c6464c84d52548c4ae5e7f7145ccb30e4a48d135a25efa31805759a9528a607f9613284f4e87228b03308ccff4b809759c444fa7090340c458a065f3a99b9043062c8f2872308be13447ae0c9918d4d22664d4a254b2e8b4447308d47e84dbb25eecd32494307cdf6ac192ef27321020103").unwrap();
        let public = |spki: Vec<u8>| PublicIdentity::new(alice().public().babyjub, spki);
        let e = public(weak).check().unwrap_err();
        assert!(e.to_string().contains("1024 bits; at least 3072"), "{e}");
        let e = public(e3).check().unwrap_err();
        assert!(e.to_string().contains("exponent is 0x03"), "{e}");
        alice().public().check().unwrap();
    }

    #[test]
    fn a_keystore_opens_with_its_password_only() {
        let ks = Keystore::seal(alice(), "correct horse", KdfParams::MIN).unwrap();
        let text = serde_json::to_string(&ks).unwrap();
        assert!(
            !text.contains(&hex::encode(alice().signing_key().to_bytes())),
            "the secret key is not in the file"
        );
        let back = Keystore::parse(&text).unwrap().open("correct horse").unwrap();
        assert_eq!(back.public(), alice().public());
        assert_eq!(back.signing_key().to_bytes(), alice().signing_key().to_bytes());
        assert!(matches!(ks.open("wrong horse"), Err(KeystoreError::WrongPassword)));
        assert!(matches!(Keystore::seal(alice(), "", KdfParams::MIN), Err(KeystoreError::Invalid(_))));
        let weak = KdfParams { memory_kib: 64, ..KdfParams::MIN };
        assert!(matches!(Keystore::seal(alice(), "pw", weak), Err(KeystoreError::Invalid(_))));
    }

    #[test]
    fn corruption_is_told_apart_from_a_wrong_password() {
        let ks = Keystore::seal(alice(), "pw", KdfParams::MIN).unwrap();
        let mut flipped = ks.clone();
        flipped.ciphertext[10] ^= 1;
        let e = flipped.open("pw").unwrap_err();
        assert!(matches!(e, KeystoreError::Corrupted(_)), "{e}");
        // Another user's public keys pasted in: caught by the hash check or
        // by the authenticated data.
        let mut swapped = ks.clone();
        swapped.public =
            Identity::from_parts(eddsa::PrivateKey::from_bytes([7; 32]), alice().rsa_key().clone()).public();
        assert!(matches!(swapped.open("pw"), Err(KeystoreError::Corrupted(_))));
        // Text-level damage.
        let text = serde_json::to_string(&ks).unwrap();
        let e = Keystore::parse(&text[..text.len() / 2]).unwrap_err();
        assert!(matches!(e, KeystoreError::Corrupted(ref m) if m.contains("not JSON")), "{e}");
        let e = Keystore::parse("{\"format\": \"something else\"}").unwrap_err();
        assert!(matches!(e, KeystoreError::Unsupported(_)), "{e}");
        let e =
            Keystore::parse(&text.replace("\"version\":1", "\"version\":9")).unwrap().open("pw").unwrap_err();
        assert!(e.to_string().contains("version 9"), "{e}");
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["public"]["rsa_key_hash"] = serde_json::json!("12345");
        let e = Keystore::parse(&v.to_string()).unwrap_err();
        assert!(e.to_string().contains("rsa_key_hash"), "{e}");
    }

    #[test]
    fn files_round_trip_and_passwords_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alice.keystore");
        Keystore::seal(alice(), "one", KdfParams::MIN).unwrap().write(&path).unwrap();
        let ks = Keystore::read(&path).unwrap();
        let changed = ks.change_password("one", "two", KdfParams::MIN).unwrap();
        assert!(matches!(changed.open("one"), Err(KeystoreError::WrongPassword)));
        assert_eq!(changed.open("two").unwrap().public(), alice().public());
        assert!(matches!(
            ks.change_password("nope", "two", KdfParams::MIN),
            Err(KeystoreError::WrongPassword)
        ));
        let e = Keystore::read(&dir.path().join("missing")).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }

    #[test]
    fn new_keystores_never_replace_one_that_exists_even_when_written_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.keystore");
        let stores: Vec<Keystore> = (0..8)
            .map(|i| Keystore::seal(alice(), &format!("password {i}"), KdfParams::MIN).unwrap())
            .collect();
        let results: Vec<Result<(), KeystoreError>> = std::thread::scope(|s| {
            let handles: Vec<_> = stores.iter().map(|ks| s.spawn(|| ks.write_new(&path))).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let winners: Vec<usize> = (0..8).filter(|&i| results[i].is_ok()).collect();
        assert_eq!(winners.len(), 1, "exactly one writer creates it: {results:?}");
        for r in &results {
            if let Err(e) = r {
                assert!(
                    matches!(e, KeystoreError::Exists(_))
                        && e.to_string().contains("nothing was overwritten")
                );
            }
        }
        // The file is the winner's, whole; no temporary file is left beside it.
        let on_disk = Keystore::read(&path).unwrap();
        assert!(on_disk.open(&format!("password {}", winners[0])).is_ok());
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("k.keystore")]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }

    #[test]
    fn the_registered_hash_is_poseidon_of_the_spki_digest() {
        let p = alice().public();
        let d: [u8; 32] = Sha256::digest(&p.rsa_spki).into();
        assert_eq!(
            p.rsa_key_hash,
            medrollup_circuits::poseidon::hash(&medrollup_circuits::field::digest_to_limbs(&d))
        );
        assert_ne!(rsa_key_hash(b"another key"), p.rsa_key_hash);
        assert!(format!("{:?}", alice()).contains("public"));
    }
}
