//! BN254 scalar-field helpers: parsing and printing field elements, and the
//! integer encodings the rollup uses (u64 counters, 32-byte digests split in two
//! 128-bit limbs).

use ark_ff::{BigInteger, PrimeField};
use num_bigint::BigUint;
use std::str::FromStr;

/// The BN254 scalar field: Baby Jubjub's base field and Groth16's circuit field.
pub type Fr = ark_bn254::Fr;

/// A field element given as text was not a canonical element.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{text}` is not a field element: expected a decimal or 0x-hex integer below the BN254 scalar modulus"
)]
pub struct ParseFrError {
    /// The rejected text.
    pub text: String,
}

/// Parses a decimal or `0x`-prefixed hexadecimal integer below the modulus.
pub fn parse_fr(text: &str) -> Result<Fr, ParseFrError> {
    let err = || ParseFrError { text: text.to_owned() };
    let t = text.trim();
    let n = if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        BigUint::parse_bytes(hex.as_bytes(), 16).ok_or_else(err)?
    } else {
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        BigUint::from_str(t).map_err(|_| err())?
    };
    biguint_to_fr(&n).ok_or_else(err)
}

/// The canonical field element for `n`, or `None` when `n` is not below the modulus.
pub fn biguint_to_fr(n: &BigUint) -> Option<Fr> {
    let modulus: BigUint = Fr::MODULUS.into();
    (n < &modulus).then(|| Fr::from_le_bytes_mod_order(&n.to_bytes_le()))
}

/// The integer value of a field element.
pub fn fr_to_biguint(x: &Fr) -> BigUint {
    x.into_bigint().into()
}

/// Decimal text of a field element (the convention of circomlibjs and snarkjs).
pub fn fr_to_dec(x: &Fr) -> String {
    fr_to_biguint(x).to_str_radix(10)
}

/// The value as a u64, if it fits.
pub fn fr_to_u64(x: &Fr) -> Option<u64> {
    let b = x.into_bigint();
    (b.0[1] == 0 && b.0[2] == 0 && b.0[3] == 0).then_some(b.0[0])
}

/// Splits a 32-byte digest (big-endian, as sha256 prints it) into its high and
/// low 128-bit halves, each a field element.
pub fn digest_to_limbs(d: &[u8; 32]) -> [Fr; 2] {
    let hi = u128::from_be_bytes(d[..16].try_into().expect("16 bytes"));
    let lo = u128::from_be_bytes(d[16..].try_into().expect("16 bytes"));
    [Fr::from(hi), Fr::from(lo)]
}

/// Inverse of [`digest_to_limbs`]; `None` when a limb is 2^128 or more.
pub fn limbs_to_digest(limbs: [Fr; 2]) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    for (i, limb) in limbs.iter().enumerate() {
        let b = limb.into_bigint();
        if b.0[2] != 0 || b.0[3] != 0 {
            return None;
        }
        let v = (u128::from(b.0[1]) << 64) | u128::from(b.0[0]);
        out[16 * i..16 * (i + 1)].copy_from_slice(&v.to_be_bytes());
    }
    Some(out)
}

/// Little-endian 32-byte encoding (circomlibjs `F.toRprLE`).
pub fn fr_to_le32(x: &Fr) -> [u8; 32] {
    let bytes = x.into_bigint().to_bytes_le();
    bytes.try_into().expect("BN254 elements are 32 bytes")
}

/// The element whose little-endian encoding is `b`, if `b` is canonical
/// (below the modulus): the inverse of [`fr_to_le32`].
pub fn fr_from_le32(b: &[u8; 32]) -> Option<Fr> {
    let x = Fr::from_le_bytes_mod_order(b);
    (fr_to_le32(&x) == *b).then_some(x)
}

/// Serde adapters that write field elements as decimal strings and read
/// decimal or 0x-hex strings.
pub mod serde_fr {
    use super::*;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    /// Serialises one element.
    pub fn serialize<S: Serializer>(x: &Fr, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&fr_to_dec(x))
    }

    /// Deserialises one element.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Fr, D::Error> {
        let text = String::deserialize(d)?;
        parse_fr(&text).map_err(D::Error::custom)
    }

    /// The same for fixed-size arrays of elements.
    pub mod array {
        use super::*;
        use serde::ser::SerializeSeq;

        /// Serialises `[Fr; N]`.
        pub fn serialize<S: Serializer, const N: usize>(xs: &[Fr; N], s: S) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(N))?;
            for x in xs {
                seq.serialize_element(&fr_to_dec(x))?;
            }
            seq.end()
        }

        /// Deserialises `[Fr; N]`.
        pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(d: D) -> Result<[Fr; N], D::Error> {
            let texts = Vec::<String>::deserialize(d)?;
            if texts.len() != N {
                return Err(D::Error::custom(format!("expected {N} field elements, got {}", texts.len())));
            }
            let mut out = [Fr::from(0u64); N];
            for (o, t) in out.iter_mut().zip(&texts) {
                *o = parse_fr(t).map_err(D::Error::custom)?;
            }
            Ok(out)
        }
    }

    /// The same for vectors of elements.
    pub mod vec {
        use super::*;
        use serde::ser::SerializeSeq;

        /// Serialises `Vec<Fr>`.
        pub fn serialize<S: Serializer>(xs: &[Fr], s: S) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(xs.len()))?;
            for x in xs {
                seq.serialize_element(&fr_to_dec(x))?;
            }
            seq.end()
        }

        /// Deserialises `Vec<Fr>`.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Fr>, D::Error> {
            Vec::<String>::deserialize(d)?.iter().map(|t| parse_fr(t).map_err(D::Error::custom)).collect()
        }
    }
}

/// Serde adapter for 32-byte digests as 64 hex characters (an optional 0x prefix is accepted).
pub mod serde_hex32 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    /// Serialises a digest.
    pub fn serialize<S: Serializer>(d: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(d))
    }

    /// Deserialises a digest.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        let t = text.strip_prefix("0x").unwrap_or(&text);
        let bytes =
            hex::decode(t).map_err(|e| D::Error::custom(format!("digest `{text}` is not hex: {e}")))?;
        bytes
            .try_into()
            .map_err(|b: Vec<u8>| D::Error::custom(format!("digest must be 32 bytes, got {}", b.len())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn little_endian_bytes_round_trip_and_only_canonical_ones_read() {
        for x in [Fr::from(0u64), Fr::from(7u64), -Fr::from(1u64)] {
            assert_eq!(fr_from_le32(&fr_to_le32(&x)), Some(x));
        }
        // The modulus, little-endian (its value from arkworks' own encoding
        // of -1, plus one in the lowest byte, which is 0x00 there).
        let mut p = fr_to_le32(&-Fr::from(1u64));
        p[0] += 1;
        assert_eq!(fr_from_le32(&p), None, "the modulus is not canonical");
        assert_eq!(fr_from_le32(&[0xff; 32]), None);
    }

    #[test]
    fn parses_decimal_and_hex_and_rejects_junk() {
        assert_eq!(parse_fr("42").unwrap(), Fr::from(42u64));
        assert_eq!(parse_fr("0x2a").unwrap(), Fr::from(42u64));
        let p_minus_1 = "21888242871839275222246405745257275088548364400416034343698204186575808495616";
        assert_eq!(parse_fr(p_minus_1).unwrap(), -Fr::from(1u64));
        let p = "21888242871839275222246405745257275088548364400416034343698204186575808495617";
        assert!(parse_fr(p).is_err(), "the modulus itself is not canonical");
        for bad in ["", "-1", "1.5", "0xzz", "12a"] {
            assert!(parse_fr(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn digest_limbs_round_trip_and_reject_oversized_limbs() {
        let d: [u8; 32] = core::array::from_fn(|i| (i as u8).wrapping_mul(37));
        let limbs = digest_to_limbs(&d);
        assert_eq!(limbs_to_digest(limbs), Some(d));
        let too_big = Fr::from(u128::MAX) + Fr::from(1u64);
        assert_eq!(limbs_to_digest([too_big, Fr::from(0u64)]), None);
    }
}
