//! BN254 field arithmetic eight lanes at a time with AVX-512 IFMA
//! (`vpmadd52luq` / `vpmadd52huq`): five 52-bit limbs per element, one limb of
//! eight elements per 512-bit register.
//!
//! Elements are in Montgomery form with R = 2^260, which leaves six bits of
//! slack above the 254-bit moduli. That slack makes the arithmetic lazy: a
//! product of inputs `a < k1·p` and `b < k2·p` is below 2p whenever
//! `k1·k2 < R/p ≈ 84`, with no final subtraction, and sums and differences
//! stay unreduced until they are stored. The bounds each caller relies on are
//! written beside the call.
//!
//! Every limb fed to a multiplication must be below 2^52: the IFMA
//! instructions read only the low 52 bits of each lane. Additions and
//! subtractions therefore propagate their carries before they return.
//!
//! The scalar side ([`Limbs`]) converts between arkworks' elements (Montgomery
//! form with R = 2^256, four 64-bit limbs) and this representation.

// Limb loops index register arrays on purpose: closures (iterators,
// `array::from_fn`) do not inherit `target_feature`, and would not inline.
#![allow(clippy::needless_range_loop)]

use ark_bn254::{Fq, Fq2, Fr};
use ark_ff::{BigInt, BigInteger, PrimeField};
use std::arch::x86_64::*;

/// Mask of one 52-bit limb.
pub(crate) const MASK52: u64 = (1 << 52) - 1;

/// Whether this CPU can run the IFMA code paths.
pub(crate) fn available() -> bool {
    is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512ifma")
}

/// `m`'s little-endian 64-bit limbs as five 52-bit limbs (`m < 2^260`).
const fn split(m: [u64; 4]) -> [u64; 5] {
    [
        m[0] & MASK52,
        (m[0] >> 52 | m[1] << 12) & MASK52,
        (m[1] >> 40 | m[2] << 24) & MASK52,
        (m[2] >> 28 | m[3] << 36) & MASK52,
        m[3] >> 16,
    ]
}

/// Five 52-bit limbs as four 64-bit limbs (the value must be below 2^256).
const fn join(l: &[u64]) -> [u64; 4] {
    [l[0] | l[1] << 52, l[1] >> 12 | l[2] << 40, l[2] >> 24 | l[3] << 28, l[3] >> 36 | l[4] << 16]
}

/// `k·m` for a small power of two `k = 2^s` (`k·m < 2^256`).
const fn shl(m: [u64; 4], s: u32) -> [u64; 4] {
    [m[0] << s, m[1] << s | m[0] >> (64 - s), m[2] << s | m[1] >> (64 - s), m[3] << s | m[2] >> (64 - s)]
}

/// `-m^-1 mod 2^52` for odd `m0` (Newton's iteration doubles the correct bits).
const fn neg_inv52(m0: u64) -> u64 {
    let mut inv = 1u64;
    let mut i = 0;
    while i < 6 {
        inv = inv.wrapping_mul(2u64.wrapping_sub(m0.wrapping_mul(inv)));
        i += 1;
    }
    inv.wrapping_neg() & MASK52
}

/// A 254-bit prime modulus in the radix-2^52 form, with the small multiples
/// that lazy subtractions add.
pub(crate) trait Modulus {
    /// The arkworks field.
    type F: PrimeField<BigInt = BigInt<4>>;
    /// p.
    const P: [u64; 5];
    /// 2p.
    const P2: [u64; 5];
    /// 4p.
    const P4: [u64; 5];
    /// -p^-1 mod 2^52.
    const PINV: u64;
    /// arkworks' (Montgomery, R = 2^256) representation of `x`.
    fn repr(x: &Self::F) -> BigInt<4>;
    /// The element whose arkworks representation is `v` (`v < p`).
    fn from_repr(v: BigInt<4>) -> Self::F;
}

macro_rules! modulus {
    ($field:ty) => {
        impl Modulus for $field {
            type F = $field;
            const P: [u64; 5] = split(<$field as PrimeField>::MODULUS.0);
            const P2: [u64; 5] = split(shl(<$field as PrimeField>::MODULUS.0, 1));
            const P4: [u64; 5] = split(shl(<$field as PrimeField>::MODULUS.0, 2));
            const PINV: u64 = neg_inv52(<$field as PrimeField>::MODULUS.0[0]);
            fn repr(x: &$field) -> BigInt<4> {
                x.0
            }
            fn from_repr(v: BigInt<4>) -> $field {
                <$field>::new_unchecked(v)
            }
        }
    };
}
modulus!(Fq);
modulus!(Fr);

/// Eight elements: limb `k` of lane `j` is lane `j` of register `k`.
pub(crate) type V = [__m512i; 5];

/// A constant in every lane.
#[target_feature(enable = "avx512f,avx512ifma")]
#[inline]
pub(crate) fn splat(c: &[u64; 5]) -> V {
    let mut v = zero();
    for k in 0..5 {
        v[k] = _mm512_set1_epi64(c[k] as i64);
    }
    v
}

/// Zero in every lane.
#[target_feature(enable = "avx512f,avx512ifma")]
#[inline]
pub(crate) fn zero() -> V {
    [_mm512_setzero_si512(); 5]
}

/// Propagates the (signed) carries of `t` so that limbs 0..4 are below 2^52.
/// The value must be non-negative and below 2^260.
#[target_feature(enable = "avx512f,avx512ifma")]
#[inline]
fn carry(mut t: V) -> V {
    let mask = _mm512_set1_epi64(MASK52 as i64);
    for k in 0..4 {
        let c = _mm512_srai_epi64::<52>(t[k]);
        t[k] = _mm512_and_si512(t[k], mask);
        t[k + 1] = _mm512_add_epi64(t[k + 1], c);
    }
    t
}

/// `a + b`.
#[target_feature(enable = "avx512f,avx512ifma")]
#[inline]
pub(crate) fn add(a: &V, b: &V) -> V {
    let mut t = *a;
    for k in 0..5 {
        t[k] = _mm512_add_epi64(a[k], b[k]);
    }
    carry(t)
}

/// `a + off - b`, where `off` is a multiple of p at least `b` (so the result is
/// `a - b` modulo p, non-negative).
#[target_feature(enable = "avx512f,avx512ifma")]
#[inline]
pub(crate) fn sub(a: &V, b: &V, off: &V) -> V {
    let mut t = *a;
    for k in 0..5 {
        t[k] = _mm512_sub_epi64(_mm512_add_epi64(a[k], off[k]), b[k]);
    }
    carry(t)
}

/// `v - m` where `v ≥ m`, else `v` (one step of a reduction).
#[target_feature(enable = "avx512f,avx512ifma")]
#[inline]
pub(crate) fn reduce(v: &V, m: &V) -> V {
    let mut w = *v;
    for k in 0..5 {
        w[k] = _mm512_sub_epi64(v[k], m[k]);
    }
    let mut w = carry(w);
    let negative = _mm512_cmplt_epi64_mask(w[4], _mm512_setzero_si512());
    for k in 0..5 {
        w[k] = _mm512_mask_blend_epi64(negative, w[k], v[k]);
    }
    w
}

/// Montgomery product `a·b/2^260 mod p`, below 2p when `a < k1·p`, `b < k2·p`
/// and `k1·k2 ≤ 84`.
///
/// Schoolbook product into ten accumulators (low and high 52-bit halves of
/// each limb product), then five word-by-word Montgomery steps. Each
/// accumulator takes at most about twenty 52-bit terms: no overflow.
#[target_feature(enable = "avx512f,avx512ifma")]
#[inline]
pub(crate) fn mul<M: Modulus>(a: &V, b: &V) -> V {
    let z = _mm512_setzero_si512();
    let mut t = [z; 10];
    for i in 0..5 {
        for j in 0..5 {
            t[i + j] = _mm512_madd52lo_epu64(t[i + j], a[i], b[j]);
            t[i + j + 1] = _mm512_madd52hi_epu64(t[i + j + 1], a[i], b[j]);
        }
    }
    let p = splat(&M::P);
    let pinv = _mm512_set1_epi64(M::PINV as i64);
    for i in 0..5 {
        let m = _mm512_madd52lo_epu64(z, t[i], pinv);
        for j in 0..5 {
            t[i + j] = _mm512_madd52lo_epu64(t[i + j], m, p[j]);
            t[i + j + 1] = _mm512_madd52hi_epu64(t[i + j + 1], m, p[j]);
        }
        // The low 52 bits of t[i] are now zero.
        t[i + 1] = _mm512_add_epi64(t[i + 1], _mm512_srli_epi64::<52>(t[i]));
    }
    carry([t[5], t[6], t[7], t[8], t[9]])
}

/// Elements of Fq (`E = 1`) or Fq2 (`E = 2`, `u^2 = -1`), eight lanes each.
pub(crate) type X<const E: usize> = [V; E];

/// Constants for the extension-generic operations.
#[derive(Clone, Copy)]
pub(crate) struct Consts {
    pub(crate) p2: V,
    pub(crate) p4: V,
}

impl Consts {
    #[target_feature(enable = "avx512f,avx512ifma")]
    #[inline]
    pub(crate) fn fq() -> Self {
        Consts { p2: splat(&Fq::P2), p4: splat(&Fq::P4) }
    }
}

/// `a + b`, component-wise.
#[target_feature(enable = "avx512f,avx512ifma")]
#[inline]
pub(crate) fn xadd<const E: usize>(a: &X<E>, b: &X<E>) -> X<E> {
    let mut r = *a;
    for i in 0..E {
        r[i] = add(&a[i], &b[i]);
    }
    r
}

/// `a + off - b`, component-wise.
#[target_feature(enable = "avx512f,avx512ifma")]
#[inline]
pub(crate) fn xsub<const E: usize>(a: &X<E>, b: &X<E>, off: &V) -> X<E> {
    let mut r = *a;
    for i in 0..E {
        r[i] = sub(&a[i], &b[i], off);
    }
    r
}

/// One reduction step, component-wise.
#[target_feature(enable = "avx512f,avx512ifma")]
#[inline]
pub(crate) fn xreduce<const E: usize>(v: &X<E>, m: &V) -> X<E> {
    let mut r = *v;
    for i in 0..E {
        r[i] = reduce(&v[i], m);
    }
    r
}

/// Product in Fq or Fq2, below 2p per component when the components of `a` are
/// below 4p and those of `b` below 2p (or the reverse), or both below 2p.
/// Fq2 by Karatsuba: three Fq products, and the two sums reduced below 2p.
#[target_feature(enable = "avx512f,avx512ifma")]
#[inline]
pub(crate) fn xmul<const E: usize>(a: &X<E>, b: &X<E>, c: &Consts) -> X<E> {
    let mut r = *a;
    if E == 1 {
        r[0] = mul::<Fq>(&a[0], &b[0]);
        return r;
    }
    // Components below 4p and 2p: the sums are below 8p and 4p (32 < 84).
    let v0 = mul::<Fq>(&a[0], &b[0]);
    let v1 = mul::<Fq>(&a[1], &b[1]);
    let m = mul::<Fq>(&add(&a[0], &a[1]), &add(&b[0], &b[1]));
    let c0 = reduce(&sub(&v0, &v1, &c.p2), &c.p2); // < 4p, then < 2p
    let c1 = sub(&m, &add(&v0, &v1), &c.p4); // < 6p
    r[0] = c0;
    r[1] = reduce(&reduce(&c1, &c.p4), &c.p2);
    r
}

/// Square in Fq or Fq2 of `a` with components below 2p; below 2p per component.
#[target_feature(enable = "avx512f,avx512ifma")]
#[inline]
pub(crate) fn xsquare<const E: usize>(a: &X<E>, c: &Consts) -> X<E> {
    let mut r = *a;
    if E == 1 {
        r[0] = mul::<Fq>(&a[0], &a[0]);
        return r;
    }
    // (a0 + a1)(a0 - a1) and 2·a0·a1: factors below 4p and 4p, 4p and 2p.
    let c0 = mul::<Fq>(&add(&a[0], &a[1]), &sub(&a[0], &a[1], &c.p2));
    r[0] = c0;
    r[1] = mul::<Fq>(&add(&a[0], &a[0]), &a[1]);
    r
}

/// Scalar conversions between arkworks' elements and `5·E` 52-bit limbs.
pub(crate) trait Limbs: Copy {
    /// Components (1 for Fq, 2 for Fq2).
    const E: usize;
    /// Writes the canonical limbs of `self·2^260` (in 52-bit limbs) to `out`.
    fn write_limbs(&self, out: &mut [u64]);
    /// Reads limbs of a value below 4p per component.
    fn read_limbs(l: &[u64]) -> Self;
}

/// Canonical `x·2^256 mod p` (arkworks' representation) from limbs of
/// `x·2^260` below 4p (so below 2^256).
pub(crate) fn read_one<M: Modulus>(l: &[u64]) -> M::F {
    debug_assert!(l[4] >> 48 == 0, "below 2^256");
    let mut v = BigInt::<4>(join(l));
    let p = <M::F as PrimeField>::MODULUS;
    while v >= p {
        v.sub_with_borrow(&p);
    }
    // Halve four times modulo p: x·2^260 → x·2^256 (v + p < 2^255).
    for _ in 0..4 {
        if v.is_odd() {
            v.add_with_carry(&p);
        }
        v.div2();
    }
    M::from_repr(v)
}

/// The canonical limbs of `x·2^260 mod p` from arkworks' `x·2^256 mod p`.
pub(crate) fn write_one<M: Modulus>(x: &M::F, out: &mut [u64]) {
    let mut v = M::repr(x);
    let p = <M::F as PrimeField>::MODULUS;
    // Double four times modulo p (2v < 2^255).
    for _ in 0..4 {
        v.mul2();
        if v >= p {
            v.sub_with_borrow(&p);
        }
    }
    out[..5].copy_from_slice(&split(v.0));
}

impl Limbs for Fq {
    const E: usize = 1;
    fn write_limbs(&self, out: &mut [u64]) {
        write_one::<Fq>(self, out);
    }
    fn read_limbs(l: &[u64]) -> Self {
        read_one::<Fq>(l)
    }
}

impl Limbs for Fq2 {
    const E: usize = 2;
    fn write_limbs(&self, out: &mut [u64]) {
        self.c0.write_limbs(&mut out[..5]);
        self.c1.write_limbs(&mut out[5..10]);
    }
    fn read_limbs(l: &[u64]) -> Self {
        Fq2::new(Fq::read_limbs(&l[..5]), Fq::read_limbs(&l[5..10]))
    }
}

#[cfg(test)]
mod tests {
    #![allow(unsafe_code)]
    use super::*;
    use ark_ff::{AdditiveGroup, Field, UniformRand};
    use rand::SeedableRng;

    /// Eight elements as lanes (scalar; for tests).
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn pack<M: Modulus>(xs: &[M::F; 8]) -> V {
        let mut raw = [[0u64; 8]; 5];
        for (j, x) in xs.iter().enumerate() {
            let mut l = [0u64; 5];
            write_one::<M>(x, &mut l);
            for k in 0..5 {
                raw[k][j] = l[k];
            }
        }
        // SAFETY: 64 readable bytes each.
        raw.map(|r| unsafe { _mm512_loadu_si512(r.as_ptr().cast()) })
    }

    #[target_feature(enable = "avx512f,avx512ifma")]
    fn unpack<M: Modulus>(v: &V) -> [M::F; 8] {
        let mut raw = [[0u64; 8]; 5];
        for k in 0..5 {
            // SAFETY: 64 writable bytes.
            unsafe { _mm512_storeu_si512(raw[k].as_mut_ptr().cast(), v[k]) };
        }
        std::array::from_fn(|j| read_one::<M>(&raw.map(|r| r[j])))
    }

    #[target_feature(enable = "avx512f,avx512ifma")]
    fn check<M: Modulus>(seed: u64) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let edge = [M::F::ZERO, M::F::ONE, -M::F::ONE, M::F::from(2u64), -M::F::from(2u64)];
        for round in 0..200 {
            let a: [M::F; 8] =
                std::array::from_fn(|j| if round == 0 && j < 5 { edge[j] } else { M::F::rand(&mut rng) });
            let b: [M::F; 8] =
                std::array::from_fn(|j| if round == 1 && j < 5 { edge[4 - j] } else { M::F::rand(&mut rng) });
            let (va, vb) = (pack::<M>(&a), pack::<M>(&b));
            let (p2, p4) = (splat(&M::P2), splat(&M::P4));
            // Worst-case lazy inputs: sums near 4p times products below 2p.
            let sa = sub(&add(&va, &vb), &vb, &p4); // a + 4p: below 5p
            let prod = unpack::<M>(&mul::<M>(&reduce(&sa, &p4), &mul::<M>(&va, &vb)));
            let sum = unpack::<M>(&add(&va, &vb));
            let diff = unpack::<M>(&sub(&va, &vb, &p2));
            let sq = unpack::<M>(&mul::<M>(&va, &va));
            for j in 0..8 {
                assert_eq!(prod[j], a[j] * a[j] * b[j], "product, lane {j}");
                assert_eq!(sum[j], a[j] + b[j], "sum, lane {j}");
                assert_eq!(diff[j], a[j] - b[j], "difference, lane {j}");
                assert_eq!(sq[j], a[j].square(), "square, lane {j}");
            }
        }
    }

    #[test]
    fn lanes_agree_with_arkworks_in_both_fields() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX-512 IFMA (the portable path is tested instead)");
            return;
        }
        // SAFETY: checked just above.
        unsafe {
            check::<Fq>(1);
            check::<Fr>(2);
        }
    }
}
