//! The bucket method of [`super::msm`] with its hot loop, the batch-affine
//! bucket additions, eight lanes at a time on AVX-512 IFMA ([`super::field52`]).
//!
//! Same algorithm and same result as the portable path: signed digits, affine
//! buckets filled in batches that share one inversion. What changes is the
//! representation (bases as 52-bit limbs, converted when they are loaded;
//! buckets as limbs) and the flush: the
//! pending additions are gathered eight at a time from the bucket and point
//! tables, Montgomery's trick runs in four interleaved chains per lane (so
//! that a multiplication's latency is hidden), the 32 chain products are
//! inverted with one scalar inversion, and the sums are scattered back.
//!
//! An addition whose bucket already has one pending in the batch waits for
//! the next batch (up to a batch of them; then it goes to a projective
//! overflow, as for the hot buckets of skewed inputs). Equal x-coordinates (a
//! doubling or a cancellation) show up as a zero chain product: that batch
//! then picks them out and does them in arkworks' arithmetic.
//!
//! The window's sum of its buckets, the running-sum reduction, runs on the
//! same batch-affine additions, with the buckets cut into segments whose
//! running sums advance side by side (as on the portable path:
//! [`super::weighted_sum`]).

// Gathers, scatters and unaligned loads; calls of target-feature functions.
#![allow(unsafe_code)]
// Limb loops index register arrays on purpose: closures (iterators,
// `array::from_fn`) do not inherit `target_feature`, and would not inline.
#![allow(clippy::needless_range_loop)]

use super::field52::{self as f, Consts, Limbs, V, X};
use super::{Plan, batch_invert, dense, part_range, plan, signed_digits, sum_tasks, windows};
use ark_bn254::Fr;
use ark_ec::short_weierstrass::{Affine, Projective, SWCurveConfig};
use ark_ec::{AffineRepr, CurveGroup};
use ark_ff::{One, Zero};
use rayon::prelude::*;
use std::arch::x86_64::*;

/// Most additions that share one inversion.
const MAX_BATCH: usize = 2048;
/// Independent product chains per lane in Montgomery's trick.
const CHAINS: usize = 4;
/// Bases as 52-bit limbs, `10·E` per point (x, then y), converted in parallel.
/// A point at infinity is all zeros: no point of BN254's G1 or G2 has
/// `x = y = 0` (`b ≠ 0`), so the encoding is unambiguous.
pub(crate) fn convert<P: SWCurveConfig, const E: usize>(bases: &[Affine<P>]) -> Vec<u64>
where
    P::BaseField: Limbs,
{
    assert_eq!(<P::BaseField as Limbs>::E, E, "extension degree");
    let stride = 10 * E;
    let mut out = vec![0u64; bases.len() * stride];
    out.par_chunks_mut(stride * 1024).zip(bases.par_chunks(1024)).for_each(|(o, b)| {
        for (o, p) in o.chunks_exact_mut(stride).zip(b) {
            if !p.is_zero() {
                p.x.write_limbs(&mut o[..5 * E]);
                p.y.write_limbs(&mut o[5 * E..]);
            }
        }
    });
    out
}

/// Indices of the points at infinity among [`convert`]ed bases.
pub(crate) fn infinities<const E: usize>(pts: &[u64]) -> Vec<u32> {
    pts.chunks_exact(10 * E)
        .enumerate()
        .filter(|(_, l)| l.iter().all(|&v| v == 0))
        .map(|(i, _)| i as u32)
        .collect()
}

/// `Σ scalars[i]·P_i` for the [`convert`]ed bases `pts`, of which those at
/// the indices `inf` are at infinity. The caller has checked
/// [`f::available`].
///
/// Dense scalars (random-looking: the quotient's, or a benchmark's) fill
/// every window alike: their tasks are cut by [`super::plan`]. Witness
/// scalars are mostly 0 and 1, which loads window 0 alone: the points are
/// then split into one contiguous part per thread, each part doing all its
/// windows.
pub(crate) fn msm<P: SWCurveConfig<ScalarField = Fr>, const E: usize>(
    pts: &[u64],
    inf: &[u32],
    scalars: &[Fr],
) -> Projective<P>
where
    P::BaseField: Limbs,
{
    let stride = 10 * E;
    let n = scalars.len().min(pts.len() / stride);
    let threads = rayon::current_num_threads();
    if threads == 1 || n < 1 << 12 || dense(&scalars[..n]) {
        return msm_part::<P, E>(&pts[..n * stride], inf, &scalars[..n], threads);
    }
    let part = n.div_ceil(threads);
    pts[..n * stride]
        .par_chunks(part * stride)
        .zip(scalars[..n].par_chunks(part))
        .enumerate()
        .map(|(k, (p, s))| {
            let (lo, hi) = ((k * part) as u32, (k * part + s.len()) as u32);
            let inf: Vec<u32> = inf.iter().filter(|&&i| i >= lo && i < hi).map(|i| i - lo).collect();
            msm_part::<P, E>(p, &inf, s, 1)
        })
        .reduce(Projective::zero, |a, b| a + b)
}

/// One part of an MSM, its tasks cut by [`super::plan`] over `threads` (one
/// after another when `threads` is 1).
fn msm_part<P: SWCurveConfig<ScalarField = Fr>, const E: usize>(
    pts: &[u64],
    inf: &[u32],
    scalars: &[Fr],
    threads: usize,
) -> Projective<P>
where
    P::BaseField: Limbs,
{
    let nonzero = scalars.iter().filter(|s| !s.is_zero()).count();
    if nonzero == 0 {
        return Projective::zero();
    }
    msm_with::<P, E>(pts, inf, scalars, plan(nonzero, threads), threads > 1)
}

/// An MSM by `plan`, its tasks side by side when `parallel`.
fn msm_with<P: SWCurveConfig<ScalarField = Fr>, const E: usize>(
    pts: &[u64],
    inf: &[u32],
    scalars: &[Fr],
    plan: Plan,
    parallel: bool,
) -> Projective<P>
where
    P::BaseField: Limbs,
{
    let stride = 10 * E;
    let n = scalars.len().min(pts.len() / stride);
    let windows = windows(plan.c);
    let mut digits = signed_digits(&scalars[..n], plan.c, windows);
    for &i in inf {
        if (i as usize) < n {
            digits[i as usize * windows..(i as usize + 1) * windows].fill(0);
        }
    }
    let task = |part: usize, w: usize| {
        let r = part_range(n, plan.parts, part);
        // SAFETY: the caller checked that the CPU has AVX-512F and IFMA.
        unsafe {
            window::<P, E>(
                &pts[r.start * stride..r.end * stride],
                &digits[r.start * windows..r.end * windows],
                windows,
                w,
                plan.c,
            )
        }
    };
    sum_tasks(plan, parallel, task)
}

/// Point `i` of the [`convert`]ed `pts` (not at infinity), in arkworks' form.
fn point<P: SWCurveConfig, const E: usize>(pts: &[u64], i: usize) -> Affine<P>
where
    P::BaseField: Limbs,
{
    let l = &pts[i * 10 * E..(i + 1) * 10 * E];
    Affine::new_unchecked(P::BaseField::read_limbs(&l[..5 * E]), P::BaseField::read_limbs(&l[5 * E..]))
}

/// The sum of window `w`: fill the buckets, then the running-sum reduction.
#[target_feature(enable = "avx512f,avx512ifma")]
fn window<P: SWCurveConfig, const E: usize>(
    pts: &[u64],
    digits: &[i16],
    windows: usize,
    w: usize,
    c: usize,
) -> Projective<P>
where
    P::BaseField: Limbs,
{
    let mut buckets = Buckets::<P, E>::new(1 << (c - 1));
    for (i, &d) in digits.iter().skip(w).step_by(windows).enumerate() {
        if d != 0 {
            buckets.add(d.unsigned_abs() as usize - 1, i, d < 0, pts);
        }
    }
    while !buckets.pending.is_empty() || !buckets.deferred.is_empty() {
        buckets.flush(pts);
    }
    weighted_sum(&mut buckets)
}

/// `Σ_b (b+1)·bucket_b`, the window's sum: the portable path's
/// [`super::weighted_sum`] (running sums in segments, side by side) on the
/// vector buckets.
#[target_feature(enable = "avx512f,avx512ifma")]
fn weighted_sum<P: SWCurveConfig, const E: usize>(buckets: &mut Buckets<P, E>) -> Projective<P>
where
    P::BaseField: Limbs,
{
    buckets.fold_overflow();
    let n = buckets.full.len();
    let stride = 10 * E;
    let (s, segments) = super::segments(n);
    // Buckets 0..segments hold R_k, segments..2·segments hold T_k; `running`
    // is a copy of the R_k for the T_k to add.
    let mut acc = Buckets::<P, E>::new(2 * segments);
    // Each step adds into distinct accumulators: one batch per step.
    acc.batch = segments.max(acc.batch);
    let mut running = vec![0u64; segments * stride];
    for j in (0..s).rev() {
        for k in 0..segments {
            let b = k * s + j;
            if b < n && buckets.full[b] {
                acc.add(k, b, false, &buckets.limbs);
            }
        }
        acc.flush(&buckets.limbs);
        // Distinct accumulators: nothing deferred to meet the other source.
        assert!(acc.pending.is_empty() && acc.deferred.is_empty());
        for k in 0..segments {
            if acc.full[k] {
                running[k * stride..(k + 1) * stride]
                    .copy_from_slice(&acc.limbs[k * stride..(k + 1) * stride]);
                acc.add(segments + k, k, false, &running);
            }
        }
        acc.flush(&running);
        assert!(acc.pending.is_empty() && acc.deferred.is_empty());
    }
    let value = |b: usize| {
        let mut p = acc.overflow[b];
        if acc.full[b] {
            p += point::<P, E>(&acc.limbs, b);
        }
        p
    };
    super::combine_segments(s, segments, value)
}

/// One pending addition: bucket, point, and whether the point is negated.
#[derive(Clone, Copy)]
struct Pending {
    bucket: u32,
    point: u32,
    negate: bool,
}

struct Buckets<P: SWCurveConfig, const E: usize> {
    /// `10·E` limbs per bucket: x, then y, each below 2p per component.
    limbs: Vec<u64>,
    full: Vec<bool>,
    /// Batch number in which each bucket last got a pending addition.
    stamp: Vec<u32>,
    epoch: u32,
    /// Additions per batch: a small fraction of the buckets, so that few
    /// additions meet a bucket that is already busy.
    batch: usize,
    pending: Vec<Pending>,
    /// Additions that met a bucket already busy in the current batch.
    deferred: Vec<Pending>,
    /// What no longer fits in `deferred` (a hot bucket), in projective form.
    overflow: Vec<Projective<P>>,
    // Scratch of the flush, one entry per group of eight.
    bucket_off: Vec<i64>,
    point_off: Vec<i64>,
    prefix: Vec<X<E>>,
    denom: Vec<X<E>>,
}

impl<P: SWCurveConfig, const E: usize> Buckets<P, E>
where
    P::BaseField: Limbs,
{
    fn new(n: usize) -> Self {
        let batch = (n / 8).clamp(64, MAX_BATCH);
        Self {
            batch,
            limbs: vec![0; n * 10 * E],
            full: vec![false; n],
            stamp: vec![0; n],
            epoch: 1,
            pending: Vec::with_capacity(batch + 8),
            deferred: Vec::with_capacity(batch),
            overflow: vec![Projective::zero(); n],
            bucket_off: Vec::with_capacity(batch + 8),
            point_off: Vec::with_capacity(batch + 8),
            prefix: Vec::with_capacity(batch / 8 + 1),
            denom: Vec::with_capacity(batch / 8 + 1),
        }
    }

    /// Adds point `i` (negated when `negate`) to bucket `b`.
    #[target_feature(enable = "avx512f,avx512ifma")]
    #[inline]
    fn add(&mut self, b: usize, i: usize, negate: bool, pts: &[u64]) {
        let entry = Pending { bucket: b as u32, point: i as u32, negate };
        if self.stamp[b] == self.epoch {
            if self.deferred.len() < self.batch {
                self.deferred.push(entry);
            } else {
                let p = point::<P, E>(pts, i);
                self.overflow[b] += if negate { -p } else { p };
            }
            return;
        }
        let stride = 10 * E;
        if !self.full[b] {
            let (dst, src) =
                (&mut self.limbs[b * stride..(b + 1) * stride], &pts[i * stride..(i + 1) * stride]);
            dst.copy_from_slice(src);
            if negate {
                let y = -P::BaseField::read_limbs(&src[5 * E..]);
                y.write_limbs(&mut dst[5 * E..]);
            }
            self.full[b] = true;
            return;
        }
        self.stamp[b] = self.epoch;
        self.pending.push(entry);
        if self.pending.len() == self.batch {
            self.flush(pts);
        }
    }

    /// Applies the pending additions, then queues the deferred ones.
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn flush(&mut self, pts: &[u64]) {
        if !self.pending.is_empty() {
            while !self.apply(pts) {
                self.take_equal_x(pts);
            }
            self.pending.clear();
        }
        self.epoch += 1;
        for e in std::mem::take(&mut self.deferred) {
            self.add(e.bucket as usize, e.point as usize, e.negate, pts);
        }
    }

    /// The batch-affine additions of `pending`; `false` (and nothing changed)
    /// when one has equal x-coordinates.
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn apply(&mut self, pts: &[u64]) -> bool {
        let len = self.pending.len();
        if len == 0 {
            return true;
        }
        let groups = len.div_ceil(8);
        let stride = 10 * E;
        // Offsets, padded to whole groups with copies of the first addition
        // (their results are not written back).
        self.bucket_off.clear();
        self.point_off.clear();
        for k in 0..groups * 8 {
            let e = self.pending[if k < len { k } else { 0 }];
            self.bucket_off.push((e.bucket as usize * stride) as i64);
            self.point_off.push((e.point as usize * stride) as i64);
        }
        let c = Consts::fq();
        let one = one::<P, E>();
        let mut acc = [one; CHAINS];
        self.prefix.clear();
        self.denom.clear();
        for g in 0..groups {
            let bo = load8(&self.bucket_off[g * 8..]);
            let po = load8(&self.point_off[g * 8..]);
            let x1 = gather::<E>(&self.limbs, bo, 0);
            let px = gather::<E>(pts, po, 0);
            let d = f::xsub(&px, &x1, &c.p2); // < 4p (points below 2p: bases, or buckets in the reduction)
            let k = g % CHAINS;
            self.prefix.push(acc[k]);
            self.denom.push(d);
            acc[k] = f::xmul(&d, &acc[k], &c);
        }
        // The 8·CHAINS chain products, inverted together.
        let mut products: Vec<P::BaseField> = Vec::with_capacity(8 * CHAINS);
        for a in &acc {
            products.extend(lanes::<P, E>(a));
        }
        if products.iter().any(|p| p.is_zero()) {
            return false;
        }
        let mut scratch = Vec::new();
        batch_invert(&mut products, &mut scratch);
        let mut inv: [X<E>; CHAINS] =
            std::array::from_fn(|k| from_lanes::<P, E>(&products[k * 8..k * 8 + 8]));
        let zero: X<E> = [f::zero(); E];
        for g in (0..groups).rev() {
            let k = g % CHAINS;
            let inv_d = f::xmul(&self.prefix[g], &inv[k], &c);
            inv[k] = f::xmul(&self.denom[g], &inv[k], &c);
            let bo = load8(&self.bucket_off[g * 8..]);
            let po = load8(&self.point_off[g * 8..]);
            let x1 = gather::<E>(&self.limbs, bo, 0);
            let y1 = gather::<E>(&self.limbs, bo, 5 * E);
            let px = gather::<E>(pts, po, 0);
            let py = gather::<E>(pts, po, 5 * E);
            let mut negate = 0u8;
            for j in 0..8 {
                if g * 8 + j < len && self.pending[g * 8 + j].negate {
                    negate |= 1 << j;
                }
            }
            let py_neg = f::xsub(&zero, &py, &c.p2); // 2p - py
            let mut py = py;
            for i in 0..E {
                py[i] = blend(negate, &py[i], &py_neg[i]);
            }
            let num = f::xsub(&py, &y1, &c.p2); // < 4p
            let lambda = f::xmul(&num, &inv_d, &c); // < 2p
            let l2 = f::xsquare(&lambda, &c);
            let x3 = f::xsub(&l2, &f::xadd(&x1, &px), &c.p4); // < 6p
            let x3 = f::xreduce(&f::xreduce(&x3, &c.p4), &c.p2); // < 2p
            let e = f::xsub(&x1, &x3, &c.p2); // < 4p
            let y3 = f::xsub(&f::xmul(&e, &lambda, &c), &y1, &c.p2); // < 4p
            let y3 = f::xreduce(&y3, &c.p2); // < 2p
            let live = if (g + 1) * 8 <= len { 0xff } else { (1u8 << (len - g * 8)) - 1 };
            scatter::<E>(&mut self.limbs, bo, 0, live, &x3);
            scatter::<E>(&mut self.limbs, bo, 5 * E, live, &y3);
        }
        true
    }

    /// Adds each bucket's projective overflow into its affine part: the
    /// overflows normalised together, then one batch of additions (each to
    /// another bucket).
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn fold_overflow(&mut self) {
        let hot: Vec<usize> = (0..self.full.len()).filter(|&b| !self.overflow[b].is_zero()).collect();
        if hot.is_empty() {
            return;
        }
        let sums: Vec<Projective<P>> = hot.iter().map(|&b| std::mem::take(&mut self.overflow[b])).collect();
        let stride = 10 * E;
        let mut pts = vec![0u64; hot.len() * stride];
        for (i, p) in Projective::normalize_batch(&sums).iter().enumerate() {
            if !p.is_zero() {
                p.x.write_limbs(&mut pts[i * stride..i * stride + 5 * E]);
                p.y.write_limbs(&mut pts[i * stride + 5 * E..(i + 1) * stride]);
            }
        }
        for (i, &b) in hot.iter().enumerate() {
            if pts[i * stride..(i + 1) * stride].iter().any(|&l| l != 0) {
                self.add(b, i, false, &pts);
            }
        }
        while !self.pending.is_empty() || !self.deferred.is_empty() {
            self.flush(&pts);
        }
        debug_assert!(self.overflow.iter().all(Zero::is_zero));
    }

    /// Moves the pending additions whose point has its bucket's x-coordinate
    /// out of the batch and does them in arkworks' arithmetic: a doubling, or
    /// a cancellation that empties the bucket.
    fn take_equal_x(&mut self, pts: &[u64]) {
        let stride = 10 * E;
        let mut k = 0;
        let mut found = false;
        while k < self.pending.len() {
            let e = self.pending[k];
            let b = e.bucket as usize;
            let l = &self.limbs[b * stride..(b + 1) * stride];
            let x = P::BaseField::read_limbs(&l[..5 * E]);
            let p = point::<P, E>(pts, e.point as usize);
            if x != p.x {
                k += 1;
                continue;
            }
            found = true;
            self.pending.swap_remove(k);
            let y = P::BaseField::read_limbs(&l[5 * E..]);
            let q = if e.negate { -p } else { p };
            let sum = Affine::<P>::new_unchecked(x, y) + q;
            let sum: Affine<P> = sum.into();
            if sum.is_zero() {
                self.full[b] = false;
            } else {
                let l = &mut self.limbs[b * stride..(b + 1) * stride];
                sum.x.write_limbs(&mut l[..5 * E]);
                sum.y.write_limbs(&mut l[5 * E..]);
            }
        }
        assert!(found, "a zero denominator without equal x-coordinates");
    }
}

/// One, in every lane.
#[target_feature(enable = "avx512f,avx512ifma")]
#[inline]
fn one<P: SWCurveConfig, const E: usize>() -> X<E>
where
    P::BaseField: Limbs,
{
    let mut l = vec![0u64; 5 * E];
    P::BaseField::one().write_limbs(&mut l);
    std::array::from_fn(|i| f::splat(&std::array::from_fn(|k| l[i * 5 + k])))
}

/// The eight lanes of `v` as field elements.
#[target_feature(enable = "avx512f,avx512ifma")]
fn lanes<P: SWCurveConfig, const E: usize>(v: &X<E>) -> [P::BaseField; 8]
where
    P::BaseField: Limbs,
{
    let mut raw = [[0u64; 8]; 10];
    for i in 0..E {
        for k in 0..5 {
            // SAFETY: `raw[..]` is 64 writable bytes.
            unsafe { _mm512_storeu_si512(raw[i * 5 + k].as_mut_ptr().cast(), v[i][k]) };
        }
    }
    std::array::from_fn(|j| {
        let l: [u64; 10] = std::array::from_fn(|k| raw[k][j]);
        P::BaseField::read_limbs(&l[..5 * E])
    })
}

/// Eight field elements as lanes.
#[target_feature(enable = "avx512f,avx512ifma")]
fn from_lanes<P: SWCurveConfig, const E: usize>(xs: &[P::BaseField]) -> X<E>
where
    P::BaseField: Limbs,
{
    let mut raw = [[0u64; 8]; 10];
    for (j, x) in xs.iter().enumerate() {
        let mut l = [0u64; 10];
        x.write_limbs(&mut l[..5 * E]);
        for k in 0..5 * E {
            raw[k][j] = l[k];
        }
    }
    std::array::from_fn(|i| std::array::from_fn(|k| load8u(&raw[i * 5 + k])))
}

/// Eight `i64` from the start of `s` (at least eight long).
#[target_feature(enable = "avx512f,avx512ifma")]
#[inline]
fn load8(s: &[i64]) -> __m512i {
    assert!(s.len() >= 8);
    // SAFETY: eight readable i64 (checked above).
    unsafe { _mm512_loadu_si512(s.as_ptr().cast()) }
}

#[target_feature(enable = "avx512f,avx512ifma")]
#[inline]
fn load8u(s: &[u64; 8]) -> __m512i {
    // SAFETY: 64 readable bytes.
    unsafe { _mm512_loadu_si512(s.as_ptr().cast()) }
}

/// `5·E` limbs per lane from `table[off + at ..]`.
#[target_feature(enable = "avx512f,avx512ifma")]
#[inline]
fn gather<const E: usize>(table: &[u64], off: __m512i, at: usize) -> X<E> {
    debug_assert!(at + 5 * E <= 10 * E);
    let base = table.as_ptr().cast::<i64>();
    let mut r = [f::zero(); E];
    for i in 0..E {
        for k in 0..5 {
            // SAFETY: every offset is the start of a 10·E-limb record inside
            // `table` (a bucket or a point index times the stride), and
            // `at + i·5 + k < 10·E`.
            r[i][k] = unsafe { _mm512_i64gather_epi64::<8>(off, base.add(at + i * 5 + k)) };
        }
    }
    r
}

/// Writes the lanes of `v` selected by `mask` to `table[off + at ..]`.
#[target_feature(enable = "avx512f,avx512ifma")]
#[inline]
fn scatter<const E: usize>(table: &mut [u64], off: __m512i, at: usize, mask: u8, v: &X<E>) {
    let base = table.as_mut_ptr().cast::<i64>();
    for i in 0..E {
        for k in 0..5 {
            // SAFETY: as in `gather`; the selected lanes name distinct buckets.
            unsafe { _mm512_mask_i64scatter_epi64::<8>(base.add(at + i * 5 + k), mask, off, v[i][k]) };
        }
    }
}

/// `b` in the lanes selected by `mask`, else `a`.
#[target_feature(enable = "avx512f,avx512ifma")]
#[inline]
fn blend(mask: u8, a: &V, b: &V) -> V {
    let mut r = *a;
    for k in 0..5 {
        r[k] = _mm512_mask_blend_epi64(mask, a[k], b[k]);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use ark_bn254::{g1, g2};
    use ark_ec::CurveGroup;

    /// Buckets holding `values` (`None`: empty) and `overflow`, reduced by
    /// [`weighted_sum`], against `Σ (b+1)·(value_b + overflow_b)` directly.
    fn check<P: SWCurveConfig, const E: usize>(values: &[Option<Affine<P>>], overflow: &[Projective<P>])
    where
        P::BaseField: Limbs,
    {
        let mut buckets = Buckets::<P, E>::new(values.len());
        let stride = 10 * E;
        for (b, v) in values.iter().enumerate() {
            if let Some(p) = v.filter(|p| !p.is_zero()) {
                p.x.write_limbs(&mut buckets.limbs[b * stride..b * stride + 5 * E]);
                p.y.write_limbs(&mut buckets.limbs[b * stride + 5 * E..(b + 1) * stride]);
                buckets.full[b] = true;
            }
        }
        buckets.overflow.copy_from_slice(overflow);
        let want = super::super::tests::direct_weighted_sum(values, overflow);
        // SAFETY: the callers checked that the CPU has AVX-512F and IFMA.
        let got = unsafe { weighted_sum(&mut buckets) };
        assert_eq!(got.into_affine(), want.into_affine(), "{} buckets", values.len());
    }

    /// Whether this CPU runs the vector path; if not, says why the test skips.
    fn vector_or_skip() -> bool {
        let yes = super::super::vector_available();
        if !yes {
            eprintln!("skipped: this CPU has no AVX-512 IFMA (the portable path's twin is cpu::tests)");
        }
        yes
    }

    #[test]
    fn segmented_running_sums_equal_the_weighted_sum() {
        if !vector_or_skip() {
            return;
        }
        super::super::tests::reduction_cases::<g1::Config>(check::<g1::Config, 1>);
        super::super::tests::reduction_cases::<g2::Config>(check::<g2::Config, 2>);
    }

    /// [`msm_with`] on the bases converted to limbs.
    fn by_plan<P: SWCurveConfig<ScalarField = Fr>, const E: usize>(
        bases: &[Affine<P>],
        scalars: &[Fr],
        plan: Plan,
        parallel: bool,
    ) -> Projective<P>
    where
        P::BaseField: Limbs,
    {
        let pts = convert::<P, E>(bases);
        msm_with::<P, E>(&pts, &infinities::<E>(&pts), scalars, plan, parallel)
    }

    #[test]
    fn every_plan_sums_the_same() {
        if !vector_or_skip() {
            return;
        }
        super::super::tests::plan_cases::<g1::Config>(by_plan::<g1::Config, 1>);
        super::super::tests::plan_cases::<g2::Config>(by_plan::<g2::Config, 2>);
    }
}
