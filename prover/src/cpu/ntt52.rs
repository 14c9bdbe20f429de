//! The radix-2 FFT of [`super::fft`], eight butterflies at a time on AVX-512
//! IFMA ([`super::field52`]).
//!
//! The data stay in arkworks' representation (`x·2^256 mod p`), only re-cut
//! into 52-bit limbs, eight consecutive elements per group; the twiddles are
//! in the vector path's own form (`w·2^260`). A Montgomery product with
//! R = 2^260 of the two is then `(x·w)·2^256`: arkworks' representation
//! again, so no conversion multiplies are needed on the way in or out.
//!
//! No reduction inside the transform: a stage adds at most 2p to a value
//! (`u + t`, `u + 2p - t` with the product `t < 2p`), so after the 28 stages of
//! the largest NTT a value is below 57p, still a valid input of a product
//! (57 < 84, see [`super::field52`]). The values are reduced once, on the way
//! out.
//!
//! The first three stages pair lanes of one group: two groups are shuffled
//! into a "top halves" and a "bottom halves" register, and back.

#![allow(unsafe_code)]
// target-feature calls, unaligned loads and stores
// Limb loops index register arrays on purpose: closures (iterators,
// `array::from_fn`) do not inherit `target_feature`, and would not inline.
#![allow(clippy::needless_range_loop)]

use super::field52::{self as f, MASK52, Modulus, V};
use ark_bn254::Fr;
use ark_ff::{BigInt, Field};
use rayon::prelude::*;
use std::arch::x86_64::*;

/// Stages whose butterflies stay within blocks of this many elements run
/// block by block (cache-resident, one task per block).
const BLOCK: usize = 1 << 11;

/// Smallest size taken by the vector path.
pub(crate) const MIN_LEN: usize = 64;

/// `l·2^s` in 52-bit limbs (carried; the result must fit 260 bits).
const fn shl52(l: [u64; 5], s: u32) -> [u64; 5] {
    let mut out = [0u64; 5];
    let mut carry = 0u64;
    let mut k = 0;
    while k < 5 {
        let v = (l[k] << s) + carry;
        out[k] = v & MASK52;
        carry = v >> 52;
        k += 1;
    }
    out
}

/// In-place FFT of `a` (bit reversal, then every stage) with root `omega` of
/// order `a.len()`, every output multiplied by `scale` when given. The caller
/// has checked [`f::available`] and that `a.len() ≥ MIN_LEN` is a power of two.
pub(crate) fn fft(a: &mut [Fr], omega: Fr, scale: Option<Fr>) {
    let n = a.len();
    debug_assert!(n >= MIN_LEN && n.is_power_of_two());
    super::bit_reverse(a);
    // omega^e for e < n/2, in 52-bit limbs (form w·2^260, canonical).
    let half = n / 2;
    let mut master = vec![[0u64; 5]; half];
    let chunk = 4096;
    master.par_chunks_mut(chunk).enumerate().for_each(|(k, out)| {
        let mut p = omega.pow([(k * chunk) as u64]);
        for t in out {
            f::write_one::<Fr>(&p, t);
            p *= omega;
        }
    });
    // SAFETY (all unsafe calls below): the caller checked AVX-512F and IFMA.
    let mut buf: Vec<V> = a.par_chunks(8).map(|c| unsafe { load_group(c) }).collect();
    let block = BLOCK.min(n);
    let small: Vec<Vec<V>> = std::iter::successors(Some(8usize), |h| Some(h * 2))
        .take_while(|h| 2 * h <= block)
        .map(|h| unsafe { stage_table(&master, n, h) })
        .collect();
    let lane_tw = |h: usize| -> [[u64; 5]; 8] { std::array::from_fn(|l| master[(l % h) * (n / (2 * h))]) };
    let (tw2, tw4) = (lane_tw(2), lane_tw(4));
    buf.par_chunks_mut(block / 8).for_each(|blk| unsafe { small_stages(blk, &tw2, &tw4, &small) });
    let mut h = block;
    while h < n {
        let table = unsafe { stage_table(&master, n, h) };
        let hg = h / 8;
        if n / (2 * h) >= rayon::current_num_threads() * 4 {
            buf.par_chunks_mut(2 * hg).for_each(|c| {
                let (lo, hi) = c.split_at_mut(hg);
                unsafe { butterflies(lo, hi, &table) }
            });
        } else {
            let piece = 512.min(hg);
            for c in buf.chunks_mut(2 * hg) {
                let (lo, hi) = c.split_at_mut(hg);
                lo.par_chunks_mut(piece)
                    .zip(hi.par_chunks_mut(piece))
                    .zip(table.par_chunks(piece))
                    .for_each(|((l, h), t)| unsafe { butterflies(l, h, t) });
            }
        }
        h *= 2;
    }
    let scale = scale.map(|s| {
        let mut l = [0u64; 5];
        f::write_one::<Fr>(&s, &mut l);
        l
    });
    a.par_chunks_mut(8 * 512)
        .zip(buf.par_chunks(512))
        .for_each(|(out, groups)| unsafe { store_groups(out, groups, scale.as_ref()) });
}

/// Eight elements (`c.len() == 8`) as one group, re-cut into 52-bit limbs.
#[target_feature(enable = "avx512f,avx512ifma")]
fn load_group(c: &[Fr]) -> V {
    let mut raw = [[0u64; 8]; 4];
    for (j, x) in c.iter().enumerate() {
        let r = <Fr as Modulus>::repr(x).0;
        for k in 0..4 {
            raw[k][j] = r[k];
        }
    }
    let mut w = [_mm512_setzero_si512(); 4];
    for k in 0..4 {
        // SAFETY: 64 readable bytes.
        w[k] = unsafe { _mm512_loadu_si512(raw[k].as_ptr().cast()) };
    }
    let m = _mm512_set1_epi64(MASK52 as i64);
    [
        _mm512_and_si512(w[0], m),
        _mm512_and_si512(_mm512_or_si512(_mm512_srli_epi64::<52>(w[0]), _mm512_slli_epi64::<12>(w[1])), m),
        _mm512_and_si512(_mm512_or_si512(_mm512_srli_epi64::<40>(w[1]), _mm512_slli_epi64::<24>(w[2])), m),
        _mm512_and_si512(_mm512_or_si512(_mm512_srli_epi64::<28>(w[2]), _mm512_slli_epi64::<36>(w[3])), m),
        _mm512_srli_epi64::<16>(w[3]),
    ]
}

/// Reduces the groups below p (they are below 64p), multiplies by `scale`
/// (in the vector form) when given, and writes them to `out` in arkworks'
/// representation.
#[target_feature(enable = "avx512f,avx512ifma")]
fn store_groups(out: &mut [Fr], groups: &[V], scale: Option<&[u64; 5]>) {
    let p = Fr::P;
    let mults: [V; 6] = [
        f::splat(&shl52(p, 5)),
        f::splat(&shl52(p, 4)),
        f::splat(&shl52(p, 3)),
        f::splat(&shl52(p, 2)),
        f::splat(&shl52(p, 1)),
        f::splat(&p),
    ];
    let scale = scale.map(|s| f::splat(s));
    for (o, g) in out.chunks_mut(8).zip(groups) {
        let mut v = *g;
        if let Some(s) = &scale {
            v = f::mul::<Fr>(&v, s); // below 2p
        }
        for m in &mults {
            v = f::reduce(&v, m);
        }
        let w = [
            _mm512_or_si512(v[0], _mm512_slli_epi64::<52>(v[1])),
            _mm512_or_si512(_mm512_srli_epi64::<12>(v[1]), _mm512_slli_epi64::<40>(v[2])),
            _mm512_or_si512(_mm512_srli_epi64::<24>(v[2]), _mm512_slli_epi64::<28>(v[3])),
            _mm512_or_si512(_mm512_srli_epi64::<36>(v[3]), _mm512_slli_epi64::<16>(v[4])),
        ];
        let mut raw = [[0u64; 8]; 4];
        for k in 0..4 {
            // SAFETY: 64 writable bytes.
            unsafe { _mm512_storeu_si512(raw[k].as_mut_ptr().cast(), w[k]) };
        }
        for (j, x) in o.iter_mut().enumerate() {
            *x = <Fr as Modulus>::from_repr(BigInt([raw[0][j], raw[1][j], raw[2][j], raw[3][j]]));
        }
    }
}

/// The twiddles of the stage with half-size `h ≥ 8`: group `j`, lane `l`
/// holds `omega^((8j + l)·n/(2h))`.
#[target_feature(enable = "avx512f,avx512ifma")]
fn stage_table(master: &[[u64; 5]], n: usize, h: usize) -> Vec<V> {
    let stride = n / (2 * h);
    (0..h / 8).map(|j| lanes(&std::array::from_fn(|l| master[(8 * j + l) * stride]))).collect()
}

/// Eight limb vectors as one group.
#[target_feature(enable = "avx512f,avx512ifma")]
fn lanes(x: &[[u64; 5]; 8]) -> V {
    let mut raw = [[0u64; 8]; 5];
    for j in 0..8 {
        for k in 0..5 {
            raw[k][j] = x[j][k];
        }
    }
    let mut v = f::zero();
    for k in 0..5 {
        // SAFETY: 64 readable bytes.
        v[k] = unsafe { _mm512_loadu_si512(raw[k].as_ptr().cast()) };
    }
    v
}

/// `(u, v) → (u + w·v, u - w·v)` on whole groups.
#[target_feature(enable = "avx512f,avx512ifma")]
fn butterflies(lo: &mut [V], hi: &mut [V], tw: &[V]) {
    let p2 = f::splat(&Fr::P2);
    for ((u, v), w) in lo.iter_mut().zip(hi.iter_mut()).zip(tw) {
        let t = f::mul::<Fr>(v, w);
        *v = f::sub(u, &t, &p2);
        *u = f::add(u, &t);
    }
}

/// Lane permutations of the in-group stages (`h` = 1, 2, 4): which lanes of
/// two groups form the top and the bottom halves, and the way back.
const SHUFFLES: [[[i64; 8]; 4]; 3] = [
    // h = 1
    [
        [0, 2, 4, 6, 8, 10, 12, 14],
        [1, 3, 5, 7, 9, 11, 13, 15],
        [0, 8, 1, 9, 2, 10, 3, 11],
        [4, 12, 5, 13, 6, 14, 7, 15],
    ],
    // h = 2
    [
        [0, 1, 4, 5, 8, 9, 12, 13],
        [2, 3, 6, 7, 10, 11, 14, 15],
        [0, 1, 8, 9, 2, 3, 10, 11],
        [4, 5, 12, 13, 6, 7, 14, 15],
    ],
    // h = 4
    [
        [0, 1, 2, 3, 8, 9, 10, 11],
        [4, 5, 6, 7, 12, 13, 14, 15],
        [0, 1, 2, 3, 8, 9, 10, 11],
        [4, 5, 6, 7, 12, 13, 14, 15],
    ],
];

/// The stages of one cache-resident block: the three in-group ones, then
/// whole-group ones up to the block's size.
#[target_feature(enable = "avx512f,avx512ifma")]
fn small_stages(blk: &mut [V], tw2: &[[u64; 5]; 8], tw4: &[[u64; 5]; 8], tables: &[Vec<V>]) {
    let p2 = f::splat(&Fr::P2);
    let idx: Vec<[__m512i; 4]> = SHUFFLES
        .iter()
        .map(|s| {
            let mut r = [_mm512_setzero_si512(); 4];
            for k in 0..4 {
                // SAFETY: 64 readable bytes.
                r[k] = unsafe { _mm512_loadu_si512(s[k].as_ptr().cast()) };
            }
            r
        })
        .collect();
    // The lane twiddles of the top halves: two groups' worth of one group's.
    let (w2, w4) = (lanes(tw2), lanes(tw4));
    for pair in blk.chunks_exact_mut(2) {
        let (a, b) = pair.split_at_mut(1);
        let (a, b) = (&mut a[0], &mut b[0]);
        for (s, ix) in idx.iter().enumerate() {
            let mut top = f::zero();
            let mut bottom = f::zero();
            for k in 0..5 {
                top[k] = _mm512_permutex2var_epi64(a[k], ix[0], b[k]);
                bottom[k] = _mm512_permutex2var_epi64(a[k], ix[1], b[k]);
            }
            let t = match s {
                0 => bottom, // twiddle 1
                1 => f::mul::<Fr>(&bottom, &w2),
                _ => f::mul::<Fr>(&bottom, &w4),
            };
            let u = f::add(&top, &t);
            let v = f::sub(&top, &t, &p2);
            for k in 0..5 {
                a[k] = _mm512_permutex2var_epi64(u[k], ix[2], v[k]);
                b[k] = _mm512_permutex2var_epi64(u[k], ix[3], v[k]);
            }
        }
    }
    let mut h = 8;
    for table in tables {
        let hg = h / 8;
        for c in blk.chunks_mut(2 * hg) {
            let (lo, hi) = c.split_at_mut(hg);
            butterflies(lo, hi, table);
        }
        h *= 2;
    }
}

#[cfg(test)]
mod tests {
    use super::super::{NttDirection, ntt_with};
    use ark_bn254::Fr;
    use ark_ff::{FftField, UniformRand};
    use rand::SeedableRng;

    #[test]
    fn vector_fft_equals_the_portable_one_at_every_stage_layout() {
        if !super::f::available() {
            eprintln!("skipped: this CPU has no AVX-512 IFMA (the portable path is tested instead)");
            return;
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        // 2^6: in-group stages only; 2^13: one whole-array stage split in
        // pieces; 2^16: whole-array stages over many blocks too.
        for log in [6u32, 13, 16] {
            let n = 1usize << log;
            let random: Vec<Fr> = (0..n).map(|_| Fr::rand(&mut rng)).collect();
            for input in [random, vec![-Fr::from(1u64); n]] {
                for (dir, coset) in [
                    (NttDirection::Forward, None),
                    (NttDirection::Inverse, None),
                    (NttDirection::Forward, Some(Fr::GENERATOR)),
                    (NttDirection::Inverse, Some(Fr::GENERATOR)),
                ] {
                    let (mut want, mut got) = (input.clone(), input.clone());
                    ntt_with(&mut want, dir, coset, false);
                    ntt_with(&mut got, dir, coset, true);
                    assert!(want == got, "2^{log} {dir:?} coset {}", coset.is_some());
                }
            }
        }
    }
}
