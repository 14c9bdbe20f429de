//! EdDSA-Poseidon on Baby Jubjub exactly as circomlib/circomlibjs define it,
//! natively and as an R1CS gadget.
//!
//! Keys: `h = BLAKE-512(private key)`; the scalar `s` is `h[0..32]` pruned
//! (low 3 bits cleared, bit 255 cleared, bit 254 set) read little-endian, and
//! the public key is `A = (s >> 3)·B8`. Signing: `r = LE(BLAKE-512(h[32..64] ||
//! LE32(msg))) mod l`, `R8 = r·B8`, `S = r + Poseidon(R8, A, msg)·s mod l`.
//! Verification: `R8` and `A` on the curve, `S < l`, and
//! `S·B8 == R8 + 8·Poseidon(R8, A, msg)·A`.

use crate::babyjub::{self, Point, PointVar, Scalar};
use crate::field::{Fr, fr_to_biguint, fr_to_dec, fr_to_le32, parse_fr};
use crate::poseidon;
use ark_ec::AffineRepr;
use ark_ff::{BigInteger, PrimeField, Zero};
use ark_r1cs_std::{boolean::Boolean, convert::ToBitsGadget, fields::fp::FpVar};
use ark_relations::gr1cs::SynthesisError;
use blake_hash::{Blake512, Digest};
use num_bigint::BigUint;
use serde::{Deserialize, Serialize};

/// A problem with a key or a signature given as data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EddsaError {
    /// The coordinates are not a point of Baby Jubjub.
    #[error("({x}, {y}) is not a point of Baby Jubjub (168700·x² + y² = 1 + 168696·x²·y²)")]
    NotOnCurve {
        /// x coordinate, decimal.
        x: String,
        /// y coordinate, decimal.
        y: String,
    },
    /// `S` is not below the subgroup order, so the signature is malleable and refused.
    #[error("signature scalar S = {0} is not below the Baby Jubjub subgroup order")]
    ScalarTooLarge(String),
    /// A private key must be 32 bytes of hex (what was given is not
    /// repeated: it may be most of a real key).
    #[error("a private key is 64 hex characters (32 bytes); the text given is not ({0})")]
    BadPrivateKey(String),
}

/// BLAKE-512 (the SHA-3 finalist, not BLAKE2), as npm `blake-hash` computes it.
pub fn blake512(data: &[u8]) -> [u8; 64] {
    let out = Blake512::digest(data);
    let mut buf = [0u8; 64];
    buf.copy_from_slice(&out);
    buf
}

/// A public key: a Baby Jubjub point, checked to be on the curve when parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublicKey {
    /// x coordinate.
    pub x: Fr,
    /// y coordinate.
    pub y: Fr,
}

impl PublicKey {
    /// Checks the coordinates are on the curve.
    pub fn new(x: Fr, y: Fr) -> Result<Self, EddsaError> {
        if babyjub::on_curve(x, y) {
            Ok(Self { x, y })
        } else {
            Err(EddsaError::NotOnCurve { x: fr_to_dec(&x), y: fr_to_dec(&y) })
        }
    }

    /// The key as a curve point.
    pub fn point(&self) -> Point {
        Point::new_unchecked(self.x, self.y)
    }

    /// Whether `8·A` is the identity: such keys (the identity and the small-order
    /// points) would let anyone sign, so accounts may not register them.
    pub fn is_small_order(&self) -> bool {
        babyjub::mul_bigint(&self.point(), [8u64]).is_zero()
    }
}

impl Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        [fr_to_dec(&self.x), fr_to_dec(&self.y)].serialize(s)
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let [x, y] = <[String; 2]>::deserialize(d)?;
        let x = parse_fr(&x).map_err(D::Error::custom)?;
        let y = parse_fr(&y).map_err(D::Error::custom)?;
        PublicKey::new(x, y).map_err(D::Error::custom)
    }
}

/// A signature `(R8, S)`; `S < l` is guaranteed by the type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signature {
    /// The nonce point's x coordinate (not necessarily on the curve until verified).
    pub r8x: Fr,
    /// The nonce point's y coordinate.
    pub r8y: Fr,
    /// The response scalar.
    pub s: Scalar,
}

impl Signature {
    /// The placeholder used for unsigned padding transactions: `R8 = O`, `S = 0`,
    /// which the circuit checks against the identity key.
    pub fn padding() -> Self {
        Self { r8x: Fr::zero(), r8y: Fr::from(1u64), s: Scalar::zero() }
    }

    /// `S` as a BN254 field element (it is below l, hence below the modulus).
    pub fn s_as_fr(&self) -> Fr {
        Fr::from_le_bytes_mod_order(&self.s.into_bigint().to_bytes_le())
    }

    /// Parses `S` from decimal text, refusing values not below `l`.
    pub fn parse_s(text: &str) -> Result<Scalar, EddsaError> {
        let n: BigUint = text.trim().parse().map_err(|_| EddsaError::ScalarTooLarge(text.to_owned()))?;
        let l: BigUint = Scalar::MODULUS.into();
        if n >= l {
            return Err(EddsaError::ScalarTooLarge(text.to_owned()));
        }
        Ok(Scalar::from_le_bytes_mod_order(&n.to_bytes_le()))
    }
}

#[derive(Serialize, Deserialize)]
struct SignatureJson {
    r8: [String; 2],
    s: String,
}

impl Serialize for Signature {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        SignatureJson {
            r8: [fr_to_dec(&self.r8x), fr_to_dec(&self.r8y)],
            s: BigUint::from(self.s.into_bigint()).to_string(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let j = SignatureJson::deserialize(d)?;
        Ok(Signature {
            r8x: parse_fr(&j.r8[0]).map_err(D::Error::custom)?,
            r8y: parse_fr(&j.r8[1]).map_err(D::Error::custom)?,
            s: Signature::parse_s(&j.s).map_err(D::Error::custom)?,
        })
    }
}

/// A 32-byte private key (circomlibjs accepts any byte string; the rollup uses 32).
/// Wiped from memory when dropped.
#[derive(Clone)]
pub struct PrivateKey([u8; 32]);

impl Drop for PrivateKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrivateKey(..)")
    }
}

impl PrivateKey {
    /// From raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// From 64 hex characters.
    pub fn from_hex(text: &str) -> Result<Self, EddsaError> {
        let bytes = hex::decode(text.trim().trim_start_matches("0x"))
            .map_err(|e| EddsaError::BadPrivateKey(format!("not hex: {e}")))?;
        let bytes: [u8; 32] =
            bytes.try_into().map_err(|b: Vec<u8>| EddsaError::BadPrivateKey(format!("{} bytes", b.len())))?;
        Ok(Self(bytes))
    }

    /// A fresh random key.
    pub fn random<R: rand::RngCore>(rng: &mut R) -> Self {
        let mut b = [0u8; 32];
        rng.fill_bytes(&mut b);
        Self(b)
    }

    /// The raw bytes (keep them secret).
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    fn expand(&self) -> (BigUint, [u8; 32]) {
        let h = blake512(&self.0);
        let mut s = [0u8; 32];
        s.copy_from_slice(&h[..32]);
        s[0] &= 0xF8;
        s[31] &= 0x7F;
        s[31] |= 0x40;
        let mut prefix = [0u8; 32];
        prefix.copy_from_slice(&h[32..]);
        (BigUint::from_bytes_le(&s), prefix)
    }

    /// The public key `(s >> 3)·B8` (circomlibjs `prv2pub`).
    pub fn public(&self) -> PublicKey {
        let (s, _) = self.expand();
        let a = babyjub::mul_bigint(&babyjub::base8(), (s >> 3u32).to_u64_digits());
        PublicKey { x: a.x, y: a.y }
    }

    /// Signs a field element (circomlibjs `signPoseidon`).
    pub fn sign(&self, msg: Fr) -> Signature {
        let (s, prefix) = self.expand();
        let a = babyjub::mul_bigint(&babyjub::base8(), (&s >> 3u32).to_u64_digits());
        let mut compose = [0u8; 64];
        compose[..32].copy_from_slice(&prefix);
        compose[32..].copy_from_slice(&fr_to_le32(&msg));
        let r = Scalar::from_le_bytes_mod_order(&blake512(&compose));
        let r8: Point = (babyjub::base8() * r).into();
        let hm = poseidon::hash(&[r8.x, r8.y, a.x, a.y, msg]);
        let hm = Scalar::from_le_bytes_mod_order(&fr_to_biguint(&hm).to_bytes_le());
        let s = Scalar::from_le_bytes_mod_order(&s.to_bytes_le());
        Signature { r8x: r8.x, r8y: r8.y, s: r + hm * s }
    }
}

/// Verifies a signature (circomlibjs `verifyPoseidon`).
pub fn verify(key: &PublicKey, msg: Fr, sig: &Signature) -> bool {
    if !babyjub::on_curve(sig.r8x, sig.r8y) || !babyjub::on_curve(key.x, key.y) {
        return false;
    }
    let r8 = Point::new_unchecked(sig.r8x, sig.r8y);
    let hm = poseidon::hash(&[sig.r8x, sig.r8y, key.x, key.y, msg]);
    let hm8 = fr_to_biguint(&hm) * 8u32;
    let left = babyjub::base8() * sig.s;
    let right = r8 + babyjub::mul_bigint(&key.point(), hm8.to_u64_digits());
    left == right
}

/// The verification gadget: enforces that `(r8, s)` is a valid signature of
/// `msg` under `key`, exactly as [`verify`] decides it, given that `key` is on
/// the curve (callers check keys once, when they are registered). Returns `8·key`
/// so that callers can refuse small-order keys.
pub fn verify_var(
    key: &PointVar,
    msg: &FpVar<Fr>,
    r8: &PointVar,
    s: &FpVar<Fr>,
) -> Result<PointVar, SynthesisError> {
    r8.enforce_on_curve()?;
    let hm = poseidon::hash_var(&[r8.x.clone(), r8.y.clone(), key.x.clone(), key.y.clone(), msg.clone()])?;
    let hm_bits = hm.to_bits_le()?; // canonical: exactly the integer the native side uses
    let s_bits = babyjub::to_bits_le_n(s, 251)?;
    let mut l_minus_1 = Scalar::MODULUS;
    l_minus_1.sub_with_borrow(&1u64.into());
    Boolean::enforce_smaller_or_equal_than_le(&s_bits, l_minus_1)?;
    let a8 = key.double()?.double()?.double()?;
    let right = r8.add(&a8.scalar_mul_le(&hm_bits)?)?;
    let left = babyjub::fixed_base_mul_le(&s_bits)?;
    left.enforce_equal(&right)?;
    Ok(a8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::CircomlibVectors;
    use ark_r1cs_std::alloc::AllocVar;
    use ark_relations::gr1cs::ConstraintSystem;

    /// The bytes where a value of `T` lay, after its destructor ran there.
    #[allow(unsafe_code)] // reads memory the test owns, after the value in it was dropped
    fn bytes_after_drop<T>(value: T) -> Vec<u8> {
        let mut slot = std::mem::MaybeUninit::new(value);
        // SAFETY: `slot` holds an initialised `T`, dropped once here and
        // never used as a `T` again; its storage stays ours and initialised
        // (the destructor writes it), so reading it as bytes is sound.
        unsafe {
            std::ptr::drop_in_place(slot.as_mut_ptr());
            std::slice::from_raw_parts(slot.as_ptr().cast::<u8>(), std::mem::size_of::<T>()).to_vec()
        }
    }

    #[test]
    fn a_private_key_is_wiped_from_memory_when_dropped() {
        let key = PrivateKey::from_bytes([0x5a; 32]);
        assert_eq!(std::mem::size_of::<PrivateKey>(), 32);
        assert_eq!(bytes_after_drop(key), vec![0; 32]);
        // The same read of a value with no wiping destructor sees it intact.
        assert_eq!(bytes_after_drop([0x5au8; 32]), vec![0x5a; 32]);
    }

    #[test]
    fn a_malformed_private_key_is_refused_without_being_repeated() {
        let almost = "5a".repeat(31);
        for text in [format!("{almost}zz"), almost.clone(), format!("{almost}5a5a")] {
            let e = PrivateKey::from_hex(&text).unwrap_err().to_string();
            assert!(e.contains("64 hex characters") && !e.contains(&almost), "{e}");
        }
        assert!(PrivateKey::from_hex(&format!("0x{almost}5a")).is_ok());
    }

    fn vectors() -> Vec<(PrivateKey, Fr, PublicKey, Signature)> {
        CircomlibVectors::load()
            .eddsa
            .iter()
            .map(|c| {
                let key =
                    PublicKey::new(parse_fr(&c.r#pub[0]).unwrap(), parse_fr(&c.r#pub[1]).unwrap()).unwrap();
                let sig = Signature {
                    r8x: parse_fr(&c.r8[0]).unwrap(),
                    r8y: parse_fr(&c.r8[1]).unwrap(),
                    s: Signature::parse_s(&c.s).unwrap(),
                };
                (PrivateKey::from_hex(&c.prv).unwrap(), parse_fr(&c.msg).unwrap(), key, sig)
            })
            .collect()
    }

    #[test]
    fn blake512_matches_npm_blake_hash() {
        let v = CircomlibVectors::load();
        assert!(v.blake512.len() >= 2);
        for c in &v.blake512 {
            let input = hex::decode(&c.input_hex).unwrap();
            assert_eq!(hex::encode(blake512(&input)), c.output_hex, "input {}", c.input_hex);
        }
    }

    /// circomlibjs's own published case (test/eddsa.js in iden3/circomlibjs):
    /// key 0001…0001, message 0x09080706050403020100.
    #[test]
    fn circomlibjs_published_signature() {
        let prv =
            PrivateKey::from_hex("0001020304050607080900010203040506070809000102030405060708090001").unwrap();
        let msg = parse_fr("0x09080706050403020100").unwrap();
        let pk = prv.public();
        assert_eq!(
            fr_to_dec(&pk.x),
            "13277427435165878497778222415993513565335242147425444199013288855685581939618"
        );
        assert_eq!(
            fr_to_dec(&pk.y),
            "13622229784656158136036771217484571176836296686641868549125388198837476602820"
        );
        let sig = prv.sign(msg);
        assert_eq!(
            fr_to_dec(&sig.r8x),
            "11384336176656855268977457483345535180380036354188103142384839473266348197733"
        );
        assert_eq!(
            fr_to_dec(&sig.r8y),
            "15383486972088797283337779941324724402501462225528836549661220478783371668959"
        );
        assert_eq!(
            BigUint::from(sig.s.into_bigint()).to_string(),
            "1672775540645840396591609181675628451599263765380031905495115170613215233181"
        );
        assert!(verify(&pk, msg, &sig));
    }

    #[test]
    fn circomlibjs_signatures_verify_here_and_we_sign_identically() {
        for (prv, msg, pk, sig) in vectors() {
            assert_eq!(prv.public(), pk, "key derivation");
            assert_eq!(prv.sign(msg), sig, "deterministic signing");
            assert!(verify(&pk, msg, &sig));
            assert!(!verify(&pk, msg + Fr::from(1u64), &sig), "other message");
            let mut bad = sig;
            bad.s += Scalar::from(1u64);
            assert!(!verify(&pk, msg, &bad), "other S");
        }
    }

    fn alloc_point(cs: &ark_relations::gr1cs::ConstraintSystemRef<Fr>, x: Fr, y: Fr) -> PointVar {
        PointVar::new(
            FpVar::new_witness(cs.clone(), || Ok(x)).unwrap(),
            FpVar::new_witness(cs.clone(), || Ok(y)).unwrap(),
        )
    }

    fn gadget_accepts(pk: &PublicKey, msg: Fr, sig: &Signature) -> (bool, usize) {
        let cs = ConstraintSystem::<Fr>::new_ref();
        let key = alloc_point(&cs, pk.x, pk.y);
        let r8 = alloc_point(&cs, sig.r8x, sig.r8y);
        let m = FpVar::new_witness(cs.clone(), || Ok(msg)).unwrap();
        let s = FpVar::new_witness(cs.clone(), || Ok(sig.s_as_fr())).unwrap();
        verify_var(&key, &m, &r8, &s).unwrap();

        (cs.is_satisfied().unwrap(), cs.num_constraints())
    }

    #[test]
    fn gadget_accepts_valid_and_rejects_tampered_signatures() {
        let (_, msg, pk, sig) = vectors().remove(0);
        let (ok, n) = gadget_accepts(&pk, msg, &sig);
        assert!(ok, "valid circomlibjs signature");
        assert!(n < 6000, "EdDSA verification costs {n} constraints");
        assert!(!gadget_accepts(&pk, msg + Fr::from(1u64), &sig).0, "wrong message");
        let mut bad = sig;
        bad.s += Scalar::from(1u64);
        assert!(!gadget_accepts(&pk, msg, &bad).0, "wrong S");
        let other = PrivateKey::from_bytes([7u8; 32]).public();
        assert!(!gadget_accepts(&other, msg, &sig).0, "wrong key");
    }

    #[test]
    fn gadget_rejects_s_at_or_above_the_subgroup_order() {
        // S + l is the same scalar on B8 but is refused natively (parse) and
        // in the circuit. A vector whose S + l still fits the 251 bits S is
        // decomposed into: only the comparison with l refuses it.
        let l_big = BigUint::from(Scalar::MODULUS);
        let (_, msg, pk, sig) = vectors()
            .into_iter()
            .find(|(_, _, _, sig)| (BigUint::from(sig.s.into_bigint()) + &l_big).bits() <= 251)
            .expect("a vector with S + l < 2^251");
        let l = Fr::from_le_bytes_mod_order(&Scalar::MODULUS.to_bytes_le());
        let cs = ConstraintSystem::<Fr>::new_ref();
        let key = alloc_point(&cs, pk.x, pk.y);
        let r8 = alloc_point(&cs, sig.r8x, sig.r8y);
        let m = FpVar::new_witness(cs.clone(), || Ok(msg)).unwrap();
        let s = FpVar::new_witness(cs.clone(), || Ok(sig.s_as_fr() + l)).unwrap();
        verify_var(&key, &m, &r8, &s).unwrap();
        assert!(!cs.is_satisfied().unwrap());
        let text = (BigUint::from(sig.s.into_bigint()) + BigUint::from(Scalar::MODULUS)).to_string();
        assert!(Signature::parse_s(&text).is_err());
    }
}
