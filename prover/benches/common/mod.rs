//! What the benchmarks share: inputs that are quick to make, the synthetic
//! circuit, the batch circuit's witness, medians and stage lines.
#![allow(dead_code)] // each bench binary uses its own part

use ark_bn254::{Fr, G1Affine, G1Projective, G2Affine, G2Projective};
use ark_ec::CurveGroup;
use ark_ff::UniformRand;
use ark_relations::gr1cs::{ConstraintSynthesizer, ConstraintSystemRef, SynthesisError};
use medrollup_prover::groth16::StageTimes;
use rand::SeedableRng;
use rayon::prelude::*;

pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// `n` random G2 points (one seeded generator each, in parallel).
pub fn random_g2(n: usize) -> Vec<G2Affine> {
    let p: Vec<G2Projective> = (0..n as u64)
        .into_par_iter()
        .map(|i| G2Projective::rand(&mut rand_chacha::ChaCha8Rng::seed_from_u64(i)))
        .collect();
    G2Projective::normalize_batch(&p)
}

/// `n` distinct points `R + i·G` (fast to make: one addition each).
pub fn random_g1(n: usize) -> Vec<G1Affine> {
    use ark_ec::PrimeGroup;
    let r = G1Projective::rand(&mut rand_chacha::ChaCha8Rng::seed_from_u64(9));
    let g = G1Projective::generator();
    let chunk = 4096;
    let p: Vec<G1Projective> = (0..n.div_ceil(chunk))
        .into_par_iter()
        .flat_map_iter(|k| {
            let mut acc = r + g * Fr::from((k * chunk) as u64);
            (0..chunk.min(n - k * chunk)).map(move |_| {
                acc += g;
                acc
            })
        })
        .collect();
    G1Projective::normalize_batch(&p)
}

pub fn random_scalars(n: usize, seed: u64) -> Vec<Fr> {
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| Fr::rand(&mut r)).collect()
}

/// A dense synthetic circuit: `x_{i+1} = x_i · x_i + i`, `n` constraints.
#[derive(Clone)]
pub struct Chain(pub usize);

impl Chain {
    /// The public input (x_0 = 3).
    pub fn public_inputs(&self) -> Vec<Fr> {
        vec![Fr::from(3u64)]
    }
}

impl ConstraintSynthesizer<Fr> for Chain {
    fn generate_constraints(self, cs: ConstraintSystemRef<Fr>) -> Result<(), SynthesisError> {
        use ark_r1cs_std::{GR1CSVar, alloc::AllocVar, eq::EqGadget, fields::fp::FpVar};
        let mut x = FpVar::new_input(cs.clone(), || Ok(Fr::from(3u64)))?;
        for i in 0..self.0 - 1 {
            x = &x * &x + Fr::from(i as u64);
        }
        let out = FpVar::new_witness(cs.clone(), || x.value())?;
        x.enforce_equal(&out)
    }
}

pub fn stages(t: &StageTimes) -> String {
    format!(
        "synthesis {:.2} s, witness map {:.2} s, NTT {:.2} s, MSM h {:.2} / l {:.2} / a {:.2} / b1 {:.2} / b2 {:.2} s",
        t.synthesis.as_secs_f64(),
        t.witness_map.as_secs_f64(),
        t.ntt.as_secs_f64(),
        t.msm_h.as_secs_f64(),
        t.msm_l.as_secs_f64(),
        t.msm_a.as_secs_f64(),
        t.msm_b_g1.as_secs_f64(),
        t.msm_b_g2.as_secs_f64()
    )
}
