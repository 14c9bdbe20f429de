//! Content identifiers as IPFS makes them with `cid-version=1` and raw
//! leaves: CIDv1 with the `raw` codec (0x55) for content within one chunk
//! and for the leaves of larger content, `dag-pb` (0x70) for the UnixFS
//! nodes above them ([`crate::unixfs`]); sha2-256 multihash (0x12, 32
//! bytes); written in multibase base32 (`b…`, what Kubo prints) and read from
//! base32 or base58btc (`z…`, what js-ipfs prints).

use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// A CIDv1 (raw or dag-pb) with a sha2-256 multihash.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cid {
    codec: u8,
    digest: [u8; 32],
}

/// The longest text read as a CID.
const MAX_CID_TEXT: usize = 100;

/// The `raw` multicodec.
pub const RAW: u8 = 0x55;
/// The `dag-pb` multicodec.
pub const DAG_PB: u8 = 0x70;

impl Cid {
    /// The CID of `bytes` as one raw block.
    pub fn of(bytes: &[u8]) -> Self {
        Cid { codec: RAW, digest: Sha256::digest(bytes).into() }
    }

    /// The CID of an encoded dag-pb node.
    pub fn of_dag_pb(node: &[u8]) -> Self {
        Cid { codec: DAG_PB, digest: Sha256::digest(node).into() }
    }

    /// The raw CID whose sha256 digest is `digest` (what records carry on chain).
    pub fn from_digest(digest: [u8; 32]) -> Self {
        Cid { codec: RAW, digest }
    }

    /// The dag-pb CID whose sha256 digest is `digest` (the root of content
    /// larger than one chunk).
    pub fn dag_pb_from_digest(digest: [u8; 32]) -> Self {
        Cid { codec: DAG_PB, digest }
    }

    /// The two CIDs a record's on-chain digest can stand for: raw (content
    /// within one chunk), then dag-pb (a larger file's root).
    pub fn candidates(digest: [u8; 32]) -> [Self; 2] {
        [Self::from_digest(digest), Self::dag_pb_from_digest(digest)]
    }

    /// The block's sha256.
    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }

    /// The multicodec ([`RAW`] or [`DAG_PB`]).
    pub fn codec(&self) -> u8 {
        self.codec
    }

    /// The binary CID.
    pub fn to_bytes(&self) -> [u8; 36] {
        let mut b = [0u8; 36];
        b[..4].copy_from_slice(&[0x01, self.codec, 0x12, 0x20]);
        b[4..].copy_from_slice(&self.digest);
        b
    }

    /// Parses a binary CID.
    pub fn from_bytes(b: &[u8]) -> Result<Self, CidError> {
        if b.len() != 36 {
            return Err(CidError::Unsupported(format!("{} bytes, expected 36", b.len())));
        }
        if b[0] != 0x01 || !(b[1] == RAW || b[1] == DAG_PB) || b[2..4] != [0x12, 0x20] {
            return Err(CidError::Unsupported(format!(
                "prefix {} (only CIDv1, raw or dag-pb codec, sha2-256 are served)",
                hex::encode(&b[..4])
            )));
        }
        Ok(Cid { codec: b[1], digest: b[4..].try_into().expect("32 bytes") })
    }
}

/// A string that is not a CID this store serves.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidError {
    /// Not multibase base32 or base58btc.
    #[error("not a CID: {0}")]
    Encoding(String),
    /// A CID of another version, codec or hash.
    #[error("unsupported CID: {0}")]
    Unsupported(String),
}

const B32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
const B58: &[u8; 58] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

fn base32_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in bytes {
        acc = (acc << 8) | b as u32;
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(B32[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(B32[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

fn base32_decode(s: &str) -> Result<Vec<u8>, CidError> {
    let mut out = Vec::with_capacity(s.len() * 5 / 8);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = B32
            .iter()
            .position(|&x| x == c.to_ascii_lowercase())
            .ok_or_else(|| CidError::Encoding(format!("{:?} is not a base32 letter", c as char)))?;
        acc = (acc << 5) | v as u32;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

fn base58_decode(s: &str) -> Result<Vec<u8>, CidError> {
    // Big-endian base-58 to base-256, digit by digit.
    let mut out: Vec<u8> = Vec::new();
    for c in s.bytes() {
        let mut carry = B58
            .iter()
            .position(|&x| x == c)
            .ok_or_else(|| CidError::Encoding(format!("{:?} is not a base58btc letter", c as char)))?
            as u32;
        for byte in out.iter_mut().rev() {
            carry += *byte as u32 * 58;
            *byte = carry as u8;
            carry >>= 8;
        }
        while carry > 0 {
            out.insert(0, carry as u8);
            carry >>= 8;
        }
    }
    let zeros = s.bytes().take_while(|&c| c == b'1').count();
    let mut v = vec![0u8; zeros];
    v.extend(out);
    Ok(v)
}

impl fmt::Display for Cid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b{}", base32_encode(&self.to_bytes()))
    }
}

impl fmt::Debug for Cid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cid({self})")
    }
}

impl FromStr for Cid {
    type Err = CidError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().trim_start_matches("/ipfs/");
        // A CIDv1 of a sha2-256 multihash is 59 characters in base32 and
        // about 50 in base58; the decoders' work grows with the square of
        // the length, so a long string is refused before it is read.
        if s.len() > MAX_CID_TEXT {
            return Err(CidError::Encoding(format!(
                "{} characters is too long for a CID (at most {MAX_CID_TEXT}; a CIDv1 in base32 has 59)",
                s.len()
            )));
        }
        match s.as_bytes().first() {
            Some(b'b') => {
                let cid = Cid::from_bytes(&base32_decode(&s[1..])?)?;
                // One spelling per CID: no extra letters, no stray bits in the last one.
                if !cid.to_string().eq_ignore_ascii_case(s) {
                    return Err(CidError::Encoding(format!("{s:?} is not the base32 form of {cid}")));
                }
                Ok(cid)
            }
            Some(b'z') => Cid::from_bytes(&base58_decode(&s[1..])?),
            Some(b'Q') => {
                Err(CidError::Unsupported("CIDv0 (dag-pb); add with cid-version=1 and raw leaves".into()))
            }
            _ => {
                Err(CidError::Encoding(format!("{s:?} has no base32 (b) or base58btc (z) multibase prefix")))
            }
        }
    }
}

impl serde::Serialize for Cid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Cid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_content_matches_kubo() {
        // Kubo's `ipfs add --cid-version=1 --raw-leaves` of an empty file.
        let c = Cid::of(b"");
        assert_eq!(c.to_string(), "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku");
        assert_eq!("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku".parse::<Cid>().unwrap(), c);
    }

    #[test]
    fn base58_and_base32_read_the_same_cid() {
        // Encode the binary CID in base58btc by long division to cross-check the decoder.
        let c = Cid::of(b"hello medrollup");
        let mut n = c.to_bytes().to_vec();
        let mut digits = Vec::new();
        while n.iter().any(|&b| b != 0) {
            let mut rem = 0u32;
            for b in n.iter_mut() {
                let cur = rem * 256 + *b as u32;
                *b = (cur / 58) as u8;
                rem = cur % 58;
            }
            digits.push(B58[rem as usize]);
        }
        digits.reverse();
        let z = format!("z{}", String::from_utf8(digits).unwrap());
        assert_eq!(z.parse::<Cid>().unwrap(), c);
        assert_eq!(c.to_string().parse::<Cid>().unwrap(), c);
    }

    #[test]
    fn other_cids_are_refused_with_the_reason() {
        let v0 = "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH".parse::<Cid>().unwrap_err();
        assert!(v0.to_string().contains("CIDv0"), "{v0}");
        assert!(matches!("bafy!".parse::<Cid>(), Err(CidError::Encoding(_))));
        // dag-pb CIDv1 (codec 0x70) round-trips; dag-cbor (0x71) is refused.
        let cid_of = |codec: u8| {
            format!(
                "b{}",
                base32_encode(
                    &[0x01, codec, 0x12, 0x20].iter().chain([7u8; 32].iter()).copied().collect::<Vec<_>>()
                )
            )
        };
        let dag_pb: Cid = cid_of(0x70).parse().unwrap();
        assert_eq!(dag_pb.codec(), DAG_PB);
        assert_eq!(dag_pb.to_string(), cid_of(0x70));
        assert!(matches!(cid_of(0x71).parse::<Cid>(), Err(CidError::Unsupported(_))));
        assert!("".parse::<Cid>().is_err());
    }

    #[test]
    fn long_or_non_canonical_text_is_refused() {
        let c = Cid::of(b"a record");
        let text = c.to_string();
        assert_eq!(text.len(), 59);
        assert_eq!(format!("b{}", text[1..].to_uppercase()).parse::<Cid>().unwrap(), c, "either case");
        // One more letter decodes to the same bytes, but is not its CID's text.
        let e = format!("{text}a").parse::<Cid>().unwrap_err();
        assert!(e.to_string().contains("is not the base32 form of"), "{e}");
        // Nor is a last letter with stray low bits.
        let last = text.as_bytes()[58];
        let other = B32[(B32.iter().position(|&x| x == last).unwrap() + 1) % 32] as char;
        let e = format!("{}{other}", &text[..58]).parse::<Cid>().unwrap_err();
        assert!(e.to_string().contains("is not the base32 form of"), "{e}");
        // A long string is refused before it is decoded (quickly, whatever its length).
        let long = format!("z{}", "2".repeat(400_000));
        let t = std::time::Instant::now();
        let e = long.parse::<Cid>().unwrap_err();
        assert!(e.to_string().contains("400001 characters is too long for a CID"), "{e}");
        assert!(t.elapsed() < std::time::Duration::from_millis(100), "{:?}", t.elapsed());
    }
}
