//! Verifying keys, proofs and public inputs in snarkjs's JSON formats, so that
//! `snarkjs groth16 verify verification_key.json public.json proof.json`
//! checks our proofs. Numbers are decimal strings; points are projective
//! `[x, y, "1"]`; Fq2 elements are `[c0, c1]` (real part first).

use crate::field::{Fr, fr_to_dec};
use ark_bn254::{Bn254, Fq, Fq2, G1Affine, G2Affine};
use ark_ec::AffineRepr;
use ark_ff::PrimeField;
use ark_groth16::{Proof, VerifyingKey};
use num_bigint::BigUint;
use serde::{Deserialize, Serialize};

fn fq(x: &Fq) -> String {
    BigUint::from(x.into_bigint()).to_string()
}

fn g1(p: &G1Affine) -> [String; 3] {
    match p.xy() {
        None => ["0".into(), "1".into(), "0".into()],
        Some((x, y)) => [fq(&x), fq(&y), "1".into()],
    }
}

fn fq2(x: &Fq2) -> [String; 2] {
    [fq(&x.c0), fq(&x.c1)]
}

fn g2(p: &G2Affine) -> [[String; 2]; 3] {
    match p.xy() {
        None => [["0".into(), "0".into()], ["1".into(), "0".into()], ["0".into(), "0".into()]],
        Some((x, y)) => [fq2(&x), fq2(&y), ["1".into(), "0".into()]],
    }
}

/// `verification_key.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnarkjsVerifyingKey {
    /// "groth16".
    pub protocol: String,
    /// "bn128" (snarkjs's name for BN254).
    pub curve: String,
    /// Number of public inputs.
    #[serde(rename = "nPublic")]
    pub n_public: usize,
    /// α in G1.
    pub vk_alpha_1: [String; 3],
    /// β in G2.
    pub vk_beta_2: [[String; 2]; 3],
    /// γ in G2.
    pub vk_gamma_2: [[String; 2]; 3],
    /// δ in G2.
    pub vk_delta_2: [[String; 2]; 3],
    /// The input commitments (one more than the public inputs).
    #[serde(rename = "IC")]
    pub ic: Vec<[String; 3]>,
}

/// `proof.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnarkjsProof {
    /// A.
    pub pi_a: [String; 3],
    /// B.
    pub pi_b: [[String; 2]; 3],
    /// C.
    pub pi_c: [String; 3],
    /// "groth16".
    pub protocol: String,
    /// "bn128".
    pub curve: String,
}

/// The verifying key in snarkjs's format.
pub fn verifying_key(vk: &VerifyingKey<Bn254>) -> SnarkjsVerifyingKey {
    SnarkjsVerifyingKey {
        protocol: "groth16".into(),
        curve: "bn128".into(),
        n_public: vk.gamma_abc_g1.len() - 1,
        vk_alpha_1: g1(&vk.alpha_g1),
        vk_beta_2: g2(&vk.beta_g2),
        vk_gamma_2: g2(&vk.gamma_g2),
        vk_delta_2: g2(&vk.delta_g2),
        ic: vk.gamma_abc_g1.iter().map(g1).collect(),
    }
}

/// A proof in snarkjs's format.
pub fn proof(p: &Proof<Bn254>) -> SnarkjsProof {
    SnarkjsProof {
        pi_a: g1(&p.a),
        pi_b: g2(&p.b),
        pi_c: g1(&p.c),
        protocol: "groth16".into(),
        curve: "bn128".into(),
    }
}

/// `public.json`: the public inputs as decimal strings.
pub fn public_inputs(inputs: &[Fr]) -> Vec<String> {
    inputs.iter().map(fr_to_dec).collect()
}

/// A snarkjs file that does not hold what it should.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid snarkjs {what}: {reason}")]
pub struct ParseError {
    /// "proof" or "public inputs".
    pub what: &'static str,
    /// What is wrong.
    pub reason: String,
}

fn parse_fq(what: &'static str, s: &str) -> Result<Fq, ParseError> {
    let n: BigUint =
        s.parse().map_err(|_| ParseError { what, reason: format!("`{s}` is not a decimal integer") })?;
    if n >= BigUint::from(Fq::MODULUS) {
        return Err(ParseError { what, reason: format!("{s} is not below the base-field modulus") });
    }
    Ok(Fq::from(n))
}

fn parse_g1(what: &'static str, p: &[String; 3]) -> Result<G1Affine, ParseError> {
    if p[2] == "0" {
        return Ok(G1Affine::identity());
    }
    if p[2] != "1" {
        return Err(ParseError { what, reason: "points must be affine (z = \"1\")".into() });
    }
    let pt = G1Affine::new_unchecked(parse_fq(what, &p[0])?, parse_fq(what, &p[1])?);
    if !pt.is_on_curve() || !pt.is_in_correct_subgroup_assuming_on_curve() {
        return Err(ParseError { what, reason: "a G1 point is not on the curve".into() });
    }
    Ok(pt)
}

fn parse_g2(what: &'static str, p: &[[String; 2]; 3]) -> Result<G2Affine, ParseError> {
    if p[2][0] == "0" && p[2][1] == "0" {
        return Ok(G2Affine::identity());
    }
    if p[2][0] != "1" || p[2][1] != "0" {
        return Err(ParseError { what, reason: "points must be affine (z = [\"1\", \"0\"])".into() });
    }
    let f2 = |c: &[String; 2]| -> Result<Fq2, ParseError> {
        Ok(Fq2::new(parse_fq(what, &c[0])?, parse_fq(what, &c[1])?))
    };
    let pt = G2Affine::new_unchecked(f2(&p[0])?, f2(&p[1])?);
    if !pt.is_on_curve() || !pt.is_in_correct_subgroup_assuming_on_curve() {
        return Err(ParseError {
            what,
            reason: "the G2 point is not on the curve or not in the prime-order subgroup".into(),
        });
    }
    Ok(pt)
}

/// Reads a proof back from snarkjs's format, checking every point.
pub fn parse_proof(p: &SnarkjsProof) -> Result<Proof<Bn254>, ParseError> {
    Ok(Proof {
        a: parse_g1("proof", &p.pi_a)?,
        b: parse_g2("proof", &p.pi_b)?,
        c: parse_g1("proof", &p.pi_c)?,
    })
}

/// Reads public inputs back from `public.json`.
pub fn parse_public(xs: &[String]) -> Result<Vec<Fr>, ParseError> {
    xs.iter()
        .map(|s| {
            crate::field::parse_fr(s).map_err(|e| ParseError { what: "public inputs", reason: e.to_string() })
        })
        .collect()
}
