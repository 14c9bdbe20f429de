//! The CPU backend: the reference for every other backend and the fallback
//! when no device is usable.
//!
//! MSM: the bucket method with signed digits (buckets for 1..=2^(c-1) only),
//! windows and ranges of points processed side by side ([`plan`]), zero
//! digits skipped. NTT: iterative radix-2 with precomputed twiddles, stages
//! parallel over blocks or within a block.
//!
//! Two paths give the same results: the portable one on arkworks' field
//! arithmetic (the reference), and on x86-64 CPUs with AVX-512 IFMA a vector
//! one that does the MSM's batch-affine bucket additions and the NTT's
//! butterflies eight at a time (`field52`: 52-bit limbs, lazy Montgomery
//! arithmetic with R = 2^260; `msm52`, `ntt52`). Chosen at run time
//! ([`CpuBackend::new`]); the conformance suites run both.

use crate::backend::{BackendError, MsmBackend, NttBackend, NttDirection};
use ark_bn254::{Fr, G1Affine, G1Projective, G2Affine, G2Projective};
use ark_ec::short_weierstrass::{Affine, Projective, SWCurveConfig};
use ark_ec::{AffineRepr, CurveGroup, PrimeGroup};
use ark_ff::AdditiveGroup;
use ark_ff::{BigInteger, FftField, Field, PrimeField, Zero};
use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
mod field52;
#[cfg(target_arch = "x86_64")]
mod msm52;
#[cfg(target_arch = "x86_64")]
mod ntt52;

/// The CPU backend (all cores through rayon).
///
/// On x86-64 CPUs with AVX-512 IFMA the MSM's bucket additions run eight at a
/// time in vector registers ([`CpuBackend::vector`]); elsewhere, or with
/// `MEDROLLUP_CPU_VECTOR=0` in the environment, everything is portable Rust
/// on arkworks' field arithmetic. Both paths give the same results.
#[derive(Debug, Clone, Copy)]
pub struct CpuBackend {
    vector: bool,
}

impl Default for CpuBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl CpuBackend {
    /// The fastest CPU backend this machine runs.
    pub fn new() -> Self {
        let off = std::env::var("MEDROLLUP_CPU_VECTOR").is_ok_and(|v| v == "0");
        CpuBackend { vector: !off && vector_available() }
    }

    /// The portable backend (no vector instructions), the reference.
    pub fn portable() -> Self {
        CpuBackend { vector: false }
    }

    /// Whether this backend uses the AVX-512 IFMA paths.
    pub fn vector(&self) -> bool {
        self.vector
    }
}

/// Whether this CPU has the AVX-512 IFMA instructions the vector paths use.
pub fn vector_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        field52::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Largest window: digits must fit an `i16`.
const MAX_WINDOW: usize = 15;

/// How an MSM of `n` non-zero scalars is cut over `threads`: windows of `c`
/// bits, and `parts` contiguous ranges of the points. Each (part, window) is
/// one task, run side by side: it adds its part's points to the window's
/// buckets, then reduces them ([`weighted_sum`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plan {
    c: usize,
    parts: usize,
}

/// The plan minimising `⌈parts·windows / threads⌉ · (⌈n/parts⌉ + 2^(c-1))`:
/// rounds of tasks, each costing one bucket addition per point and one
/// reduction step per bucket (weighted alike: both are batch-affine
/// additions, and measurement picked the same sizes). Counting rounds is
/// what keeps threads busy: 17 windows of 15 bits over 16 threads would
/// take two rounds, one of them for a single window. Ties go to fewer parts
/// (fewer reductions, less memory), then to smaller windows.
fn plan(n: usize, threads: usize) -> Plan {
    let threads = threads.max(1);
    let mut best = (usize::MAX, Plan { c: 2, parts: 1 });
    for parts in 1..=threads.min(n.max(1)) {
        for c in 2..=MAX_WINDOW {
            let cost = plan_cost(n, threads, Plan { c, parts });
            if cost < best.0 {
                best = (cost, Plan { c, parts });
            }
        }
    }
    best.1
}

/// [`plan`]'s cost of `p`: rounds of tasks over `threads`, times a task's
/// bucket additions and reduction steps.
fn plan_cost(n: usize, threads: usize, p: Plan) -> usize {
    (p.parts * windows(p.c)).div_ceil(threads) * (n.div_ceil(p.parts) + (1 << (p.c - 1)))
}

/// Windows of `c` bits for [`signed_digits`]: a scalar's magnitude there is at
/// most (r-1)/2 < 2^253, and `c·windows ≥ 254` bits hold it with the top
/// window's carry (its raw bits stay below 2^(c-1), plus at most one).
fn windows(c: usize) -> usize {
    254usize.div_ceil(c)
}

/// `Σ_w 2^(c·w)·Σ_p task(p, w)` over `plan`'s windows and parts: the tasks
/// side by side when `parallel`.
fn sum_tasks<P: SWCurveConfig>(
    plan: Plan,
    parallel: bool,
    task: impl Fn(usize, usize) -> Projective<P> + Sync + Send,
) -> Projective<P> {
    let Plan { c, parts } = plan;
    let tasks = parts * windows(c);
    let run = |t: usize| task(t % parts, t / parts);
    let sums: Vec<Projective<P>> =
        if parallel { (0..tasks).into_par_iter().map(run).collect() } else { (0..tasks).map(run).collect() };
    sums.chunks(parts).rev().fold(Projective::zero(), |mut acc, window| {
        for _ in 0..c {
            acc.double_in_place();
        }
        acc + window.iter().sum::<Projective<P>>()
    })
}

/// The range of points of `part` when `n` are cut into `parts`.
fn part_range(n: usize, parts: usize, part: usize) -> std::ops::Range<usize> {
    let len = n.div_ceil(parts);
    (part * len).min(n)..((part + 1) * len).min(n)
}

/// Whether nearly all of (a sample of) the scalars are large.
fn dense(scalars: &[Fr]) -> bool {
    let step = (scalars.len() / 1024).max(1);
    let sample: Vec<&Fr> = scalars.iter().step_by(step).collect();
    let large = sample.iter().filter(|s| s.into_bigint().num_bits() > 128).count();
    large * 10 >= sample.len() * 9
}

/// Signed base-2^c digits of every scalar, `windows` per scalar, each in
/// `[-2^(c-1), 2^(c-1)]`. A scalar above (r-1)/2 is written as `-(r - s)`, so
/// the small negative values real witnesses hold cost as little as small
/// positive ones.
fn signed_digits(scalars: &[Fr], c: usize, windows: usize) -> Vec<i16> {
    let mut digits = vec![0i16; scalars.len() * windows];
    let half_r = Fr::MODULUS_MINUS_ONE_DIV_TWO;
    digits.par_chunks_mut(windows).zip(scalars.par_iter()).for_each(|(d, s)| {
        let mut b = s.into_bigint();
        let negate = b > half_r;
        if negate {
            let mut m = Fr::MODULUS;
            m.sub_with_borrow(&b);
            b = m;
        }
        let limbs = b.0;
        let half = 1i32 << (c - 1);
        let mask = (1u64 << c) - 1;
        let mut carry = 0i32;
        for (w, dw) in d.iter_mut().enumerate() {
            let start = w * c;
            let (limb, off) = (start / 64, start % 64);
            let mut bits = if limb < 4 { limbs[limb] >> off } else { 0 };
            if off + c > 64 && limb + 1 < 4 {
                bits |= limbs[limb + 1] << (64 - off);
            }
            let mut v = carry + (bits & mask) as i32;
            if v > half {
                v -= 1 << c;
                carry = 1;
            } else {
                carry = 0;
            }
            *dw = if negate { -v } else { v } as i16;
        }
        debug_assert_eq!(carry, 0);
    });
    digits
}

/// Inverts every element in place (Montgomery's trick; all must be non-zero).
fn batch_invert<F: Field>(v: &mut [F], scratch: &mut Vec<F>) {
    scratch.clear();
    let mut acc = F::one();
    for x in v.iter() {
        scratch.push(acc);
        acc *= x;
    }
    let mut inv = acc.inverse().expect("non-zero denominators");
    for (x, prefix) in v.iter_mut().zip(scratch.iter()).rev() {
        let next = inv * *x;
        *x = inv * prefix;
        inv = next;
    }
}

/// Additions waiting in one batch.
const BATCH: usize = 512;

/// Buckets in affine coordinates, filled by batched affine additions: one
/// field inversion per [`BATCH`] additions (about 6 multiplications each
/// instead of about 11 for a mixed projective addition).
struct AffineBuckets<P: SWCurveConfig> {
    /// Each bucket's `(x, y)`, side by side: one cache line per G1 bucket.
    xy: Vec<(P::BaseField, P::BaseField)>,
    full: Vec<bool>,
    /// Batch number in which each bucket last got a pending addition.
    stamp: Vec<u32>,
    epoch: u32,
    pending: Vec<(u32, P::BaseField, P::BaseField)>,
    denoms: Vec<P::BaseField>,
    scratch: Vec<P::BaseField>,
    /// Additions that met a bucket already busy in the current batch go here
    /// (projective), so hot buckets (the top window's few values) never stall.
    overflow: Vec<Projective<P>>,
}

impl<P: SWCurveConfig> AffineBuckets<P> {
    fn new(n: usize) -> Self {
        Self {
            xy: vec![(P::BaseField::zero(), P::BaseField::zero()); n],
            full: vec![false; n],
            stamp: vec![0; n],
            epoch: 1,
            pending: Vec::with_capacity(BATCH),
            denoms: Vec::with_capacity(BATCH),
            scratch: Vec::with_capacity(BATCH),
            overflow: vec![Projective::zero(); n],
        }
    }

    /// Adds `(px, py)` to bucket `b`.
    #[inline]
    fn add(&mut self, b: usize, px: P::BaseField, py: P::BaseField) {
        if self.stamp[b] == self.epoch {
            self.overflow[b] += Affine::<P>::new_unchecked(px, py);
            return;
        }
        if !self.full[b] {
            self.xy[b] = (px, py);
            self.full[b] = true;
            return;
        }
        self.stamp[b] = self.epoch;
        self.pending.push((b as u32, px, py));
        if self.pending.len() == BATCH {
            self.flush();
        }
    }

    /// Applies the pending additions. The buckets are read in one tight pass
    /// first (their cache misses overlap), equal x-coordinates (a doubling or a
    /// cancellation, rare) are done on their own, then one inversion serves
    /// all the others.
    fn flush(&mut self) {
        if !self.pending.is_empty() {
            self.denoms.clear();
            let mut special = false;
            for &(b, px, _) in &self.pending {
                let d = px - self.xy[b as usize].0;
                special |= d.is_zero();
                self.denoms.push(d);
            }
            if special {
                let mut k = 0;
                while k < self.pending.len() {
                    if self.denoms[k].is_zero() {
                        let (b, _, py) = self.pending.swap_remove(k);
                        self.denoms.swap_remove(k);
                        self.add_equal_x(b as usize, py);
                    } else {
                        k += 1;
                    }
                }
            }
            batch_invert(&mut self.denoms, &mut self.scratch);
            for ((b, px, py), inv) in self.pending.drain(..).zip(&self.denoms) {
                let b = b as usize;
                let (x1, y1) = self.xy[b];
                let lambda = (py - y1) * inv;
                let x3 = lambda.square() - x1 - px;
                self.xy[b] = (x3, lambda * (x1 - x3) - y1);
            }
        }
        self.epoch += 1;
    }

    /// Adds each bucket's projective overflow into its affine part: the
    /// overflows normalised together, then one batch of additions (each to
    /// another bucket).
    fn fold_overflow(&mut self) {
        let hot: Vec<usize> = (0..self.full.len()).filter(|&b| !self.overflow[b].is_zero()).collect();
        if hot.is_empty() {
            return;
        }
        let sums: Vec<Projective<P>> = hot.iter().map(|&b| std::mem::take(&mut self.overflow[b])).collect();
        for (&b, p) in hot.iter().zip(Projective::normalize_batch(&sums)) {
            if let Some((x, y)) = p.xy() {
                self.add(b, x, y);
            }
        }
        self.flush();
        debug_assert!(self.overflow.iter().all(Zero::is_zero));
    }

    /// Adds the point `(x_b, py)` to bucket `b`, whose x is the same: a
    /// doubling when the y-coordinates agree, otherwise the sum is zero.
    fn add_equal_x(&mut self, b: usize, py: P::BaseField) {
        let (x, y) = self.xy[b];
        if y == py && !py.is_zero() {
            let lambda = (x.square() * P::BaseField::from(3u64) + P::COEFF_A) / y.double();
            let x3 = lambda.square() - x.double();
            self.xy[b] = (x3, lambda * (x - x3) - y);
        } else {
            self.full[b] = false;
        }
    }
}

/// Running sums side by side in the window reduction: the buckets are cut
/// into this many segments.
const SEGMENTS: usize = 256;

/// The segments for `n` buckets: their length `s` and their number.
fn segments(n: usize) -> (usize, usize) {
    let s = n.div_ceil(SEGMENTS);
    (s, n.div_ceil(s))
}

/// The window's sum from its segments (see [`weighted_sum`]): `value(k)` is
/// `R_k` and `value(segments + k)` is `T_k`.
fn combine_segments<P: SWCurveConfig>(
    s: usize,
    segments: usize,
    value: impl Fn(usize) -> Projective<P>,
) -> Projective<P> {
    let (mut run, mut weighted, mut total) =
        (Projective::<P>::zero(), Projective::<P>::zero(), Projective::<P>::zero());
    for k in (0..segments).rev() {
        total += value(segments + k);
        if k > 0 {
            run += value(k);
            weighted += &run;
        }
    }
    total + weighted.mul_bigint([s as u64])
}

/// `Σ_b (b+1)·bucket_b`, the window's sum.
///
/// The usual running-sum reduction is sequential, one projective addition
/// after another. Here the buckets are cut into [`SEGMENTS`] segments of `s`
/// and each segment `k` keeps its own running sum `R_k` and sum of running
/// sums `T_k`, all advanced together by batch-affine additions (one inversion
/// per step for all the segments): after the `s` steps,
/// `T_k = Σ (b + 1 − k·s)·bucket_b` and `R_k = Σ bucket_b` over the segment,
/// so the window's sum is `Σ_k T_k + s·Σ_k k·R_k`, the last a running sum over
/// the segments only. The vector path does the same on its own buckets.
fn weighted_sum<P: SWCurveConfig>(buckets: &mut AffineBuckets<P>) -> Projective<P> {
    buckets.fold_overflow();
    let n = buckets.full.len();
    let (s, segments) = segments(n);
    // Buckets 0..segments hold R_k, segments..2·segments hold T_k.
    let mut acc = AffineBuckets::<P>::new(2 * segments);
    for j in (0..s).rev() {
        for k in 0..segments {
            let b = k * s + j;
            if b < n && buckets.full[b] {
                acc.add(k, buckets.xy[b].0, buckets.xy[b].1);
            }
        }
        acc.flush();
        for k in 0..segments {
            if acc.full[k] {
                acc.add(segments + k, acc.xy[k].0, acc.xy[k].1);
            }
        }
        acc.flush();
    }
    let value = |b: usize| {
        let mut p = acc.overflow[b];
        if acc.full[b] {
            p += Affine::<P>::new_unchecked(acc.xy[b].0, acc.xy[b].1);
        }
        p
    };
    combine_segments(s, segments, value)
}

/// `Σ scalars[i]·bases[i]` by the bucket method with signed digits and
/// batch-affine bucket accumulation.
///
/// Dense scalars (random-looking: the quotient's, or a benchmark's) fill
/// every window alike: their tasks are cut by [`plan`]. Witness scalars are
/// mostly 0 and 1, which loads window 0 alone: the points are then split into
/// one contiguous part per thread, each part doing all its windows.
pub fn msm<P: SWCurveConfig<ScalarField = Fr>>(bases: &[Affine<P>], scalars: &[Fr]) -> Projective<P> {
    let n = scalars.len().min(bases.len());
    let threads = rayon::current_num_threads();
    if threads == 1 || n < 1 << 12 || dense(&scalars[..n]) {
        return msm_part(&bases[..n], &scalars[..n], threads);
    }
    let part = n.div_ceil(threads);
    bases[..n]
        .par_chunks(part)
        .zip(scalars[..n].par_chunks(part))
        .map(|(b, s)| msm_part(b, s, 1))
        .reduce(Projective::zero, |a, b| a + b)
}

/// One part of an MSM, its tasks cut by [`plan`] over `threads` (one after
/// another when `threads` is 1).
fn msm_part<P: SWCurveConfig<ScalarField = Fr>>(
    bases: &[Affine<P>],
    scalars: &[Fr],
    threads: usize,
) -> Projective<P> {
    let nonzero = scalars.iter().filter(|s| !s.is_zero()).count();
    if nonzero == 0 {
        return Projective::zero();
    }
    msm_with(bases, scalars, plan(nonzero, threads), threads > 1)
}

/// An MSM by `plan`, its tasks side by side when `parallel`.
fn msm_with<P: SWCurveConfig<ScalarField = Fr>>(
    bases: &[Affine<P>],
    scalars: &[Fr],
    plan: Plan,
    parallel: bool,
) -> Projective<P> {
    let n = scalars.len().min(bases.len());
    let windows = windows(plan.c);
    let digits = signed_digits(&scalars[..n], plan.c, windows);
    let task = |part: usize, w: usize| {
        let mut buckets = AffineBuckets::<P>::new(1 << (plan.c - 1));
        for i in part_range(n, plan.parts, part) {
            let d = digits[i * windows + w];
            if d == 0 {
                continue;
            }
            let Some((x, y)) = bases[i].xy() else { continue };
            let y = if d < 0 { -y } else { y };
            buckets.add(d.unsigned_abs() as usize - 1, x, y);
        }
        buckets.flush();
        weighted_sum(&mut buckets)
    };
    sum_tasks(plan, parallel, task)
}

fn bit_reverse(a: &mut [Fr]) {
    let n = a.len();
    let log = n.trailing_zeros();
    if log == 0 {
        return;
    }
    for i in 0..n {
        let j = i.reverse_bits() >> (usize::BITS - log);
        if i < j {
            a.swap(i, j);
        }
    }
}

/// Stages whose butterflies stay within blocks of this many elements run
/// block by block (cache-resident, one task per block).
const NTT_BLOCK: usize = 1 << 11;

/// In-place radix-2 FFT with root `omega` of order `a.len()`: bit reversal,
/// then the first log2(NTT_BLOCK) stages block by block, then the remaining
/// stages across the whole array.
fn fft(a: &mut [Fr], omega: Fr) {
    let n = a.len();
    if n <= 1 {
        return;
    }
    bit_reverse(a);
    let half_n = n / 2;
    let mut twiddles = vec![Fr::ONE; half_n];
    {
        // Powers of omega, computed in parallel chunks.
        let chunk = 4096;
        twiddles.par_chunks_mut(chunk).enumerate().for_each(|(k, out)| {
            let mut p = omega.pow([(k * chunk) as u64]);
            for t in out {
                *t = p;
                p *= omega;
            }
        });
    }
    let butterfly = |lo: &mut [Fr], hi: &mut [Fr], tw: &[Fr], base: usize, stride: usize| {
        for (j, (u, v)) in lo.iter_mut().zip(hi.iter_mut()).enumerate() {
            let t = *v * tw[(base + j) * stride];
            *v = *u - t;
            *u += t;
        }
    };
    // Small stages, block by block, with compact per-stage twiddle tables.
    let block = NTT_BLOCK.min(n);
    let small: Vec<Vec<Fr>> = std::iter::successors(Some(2usize), |m| Some(m * 2))
        .take_while(|m| *m <= block)
        .map(|m| (0..m / 2).map(|j| twiddles[j * (n / m)]).collect())
        .collect();
    a.par_chunks_mut(block).for_each(|blk| {
        // The first stage's twiddle is 1: no multiplications.
        for pair in blk.chunks_exact_mut(2) {
            let (u, v) = (pair[0], pair[1]);
            pair[0] = u + v;
            pair[1] = u - v;
        }
        for (s, tw) in small.iter().enumerate().skip(1) {
            let m = 2 << s;
            for chunk in blk.chunks_mut(m) {
                let (lo, hi) = chunk.split_at_mut(m / 2);
                // Twiddle 1 first, without a multiplication.
                let t = hi[0];
                hi[0] = lo[0] - t;
                lo[0] += t;
                butterfly(&mut lo[1..], &mut hi[1..], &tw[1..], 0, 1);
            }
        }
    });
    // Large stages.
    let mut m = block * 2;
    while m <= n {
        let half = m / 2;
        let stride = n / m;
        if n / m >= rayon::current_num_threads() * 4 {
            a.par_chunks_mut(m).for_each(|chunk| {
                let (lo, hi) = chunk.split_at_mut(half);
                butterfly(lo, hi, &twiddles, 0, stride);
            });
        } else {
            for chunk in a.chunks_mut(m) {
                let (lo, hi) = chunk.split_at_mut(half);
                let piece = 4096.min(half);
                lo.par_chunks_mut(piece)
                    .zip(hi.par_chunks_mut(piece))
                    .enumerate()
                    .for_each(|(k, (l, h))| butterfly(l, h, &twiddles, k * piece, stride));
            }
        }
        m *= 2;
    }
}

fn scale_by_powers(a: &mut [Fr], g: Fr) {
    let block = 4096;
    a.par_chunks_mut(block).enumerate().for_each(|(k, chunk)| {
        let mut p = g.pow([(k * block) as u64]);
        for x in chunk {
            *x *= p;
            p *= g;
        }
    });
}

/// The NTT of [`NttBackend`], on the CPU (the portable path).
pub fn ntt_in_place(a: &mut [Fr], dir: NttDirection, coset: Option<Fr>) {
    ntt_with(a, dir, coset, false);
}

/// The NTT, with the vector FFT when `vector` (the CPU has AVX-512 IFMA).
fn ntt_with(a: &mut [Fr], dir: NttDirection, coset: Option<Fr>, vector: bool) {
    let n = a.len();
    if n == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    let vector = vector && n >= ntt52::MIN_LEN;
    let transform = |a: &mut [Fr], omega: Fr, scale: Option<Fr>| {
        #[cfg(target_arch = "x86_64")]
        if vector {
            return ntt52::fft(a, omega, scale);
        }
        let _ = vector;
        fft(a, omega);
        if let Some(s) = scale {
            a.par_iter_mut().for_each(|x| *x *= s);
        }
    };
    let omega = Fr::get_root_of_unity(n as u64).expect("size checked against the two-adicity");
    match dir {
        NttDirection::Forward => {
            if let Some(g) = coset {
                scale_by_powers(a, g);
            }
            transform(a, omega, None);
        }
        NttDirection::Inverse => {
            let n_inv = Fr::from(n as u64).inverse().expect("n < p");
            transform(a, omega.inverse().expect("roots of unity are invertible"), Some(n_inv));
            if let Some(g) = coset {
                let g_inv = g.inverse().expect("a coset generator is not zero");
                scale_by_powers(a, g_inv);
            }
        }
    }
}

/// Bases loaded by the CPU backend: arkworks' points for the portable path,
/// or only their 52-bit limbs (about the same size) for the vector path.
#[derive(Debug, Clone)]
pub struct CpuBases<P: SWCurveConfig> {
    repr: Repr<P>,
}

#[derive(Debug, Clone)]
enum Repr<P: SWCurveConfig> {
    Points(Vec<Affine<P>>),
    #[cfg(target_arch = "x86_64")]
    Limbs {
        limbs: Vec<u64>,
        /// Indices of the points at infinity.
        inf: Vec<u32>,
        len: usize,
    },
}

impl<P: SWCurveConfig> CpuBases<P> {
    /// Number of points.
    pub fn len(&self) -> usize {
        match &self.repr {
            Repr::Points(p) => p.len(),
            #[cfg(target_arch = "x86_64")]
            Repr::Limbs { len, .. } => *len,
        }
    }

    /// Whether there are no points.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl CpuBackend {
    fn load<P: SWCurveConfig, const E: usize>(&self, points: &[Affine<P>]) -> CpuBases<P>
    where
        P::BaseField: LimbsIfVector,
    {
        #[cfg(target_arch = "x86_64")]
        if self.vector {
            let limbs = msm52::convert::<P, E>(points);
            let inf = msm52::infinities::<E>(&limbs);
            return CpuBases { repr: Repr::Limbs { limbs, inf, len: points.len() } };
        }
        CpuBases { repr: Repr::Points(points.to_vec()) }
    }

    fn msm_on<P: SWCurveConfig<ScalarField = Fr>, const E: usize>(
        &self,
        bases: &CpuBases<P>,
        scalars: &[Fr],
    ) -> Projective<P>
    where
        P::BaseField: LimbsIfVector,
    {
        match &bases.repr {
            #[cfg(target_arch = "x86_64")]
            Repr::Points(points) if self.vector => {
                let limbs = msm52::convert::<P, E>(&points[..scalars.len().min(points.len())]);
                msm52::msm::<P, E>(&limbs, &msm52::infinities::<E>(&limbs), scalars)
            }
            Repr::Points(points) => msm(points, scalars),
            // Limbs exist only where the vector path runs.
            #[cfg(target_arch = "x86_64")]
            Repr::Limbs { limbs, inf, .. } => msm52::msm::<P, E>(limbs, inf, scalars),
        }
    }
}

/// The conversions the vector path needs (nothing elsewhere).
#[cfg(target_arch = "x86_64")]
trait LimbsIfVector: field52::Limbs {}
#[cfg(target_arch = "x86_64")]
impl<T: field52::Limbs> LimbsIfVector for T {}
#[cfg(not(target_arch = "x86_64"))]
trait LimbsIfVector {}
#[cfg(not(target_arch = "x86_64"))]
impl<T> LimbsIfVector for T {}

impl MsmBackend for CpuBackend {
    type G1Bases = CpuBases<ark_bn254::g1::Config>;
    type G2Bases = CpuBases<ark_bn254::g2::Config>;

    fn name(&self) -> String {
        if self.vector { "cpu-avx512ifma".into() } else { "cpu".into() }
    }
    fn load_g1(&self, points: &[G1Affine]) -> Result<Self::G1Bases, BackendError> {
        Ok(self.load::<_, 1>(points))
    }
    fn load_g2(&self, points: &[G2Affine]) -> Result<Self::G2Bases, BackendError> {
        Ok(self.load::<_, 2>(points))
    }
    fn g1_len(&self, bases: &Self::G1Bases) -> usize {
        bases.len()
    }
    fn g2_len(&self, bases: &Self::G2Bases) -> usize {
        bases.len()
    }
    fn msm_g1_unchecked(&self, bases: &Self::G1Bases, scalars: &[Fr]) -> Result<G1Projective, BackendError> {
        Ok(self.msm_on::<_, 1>(bases, scalars))
    }
    fn msm_g2_unchecked(&self, bases: &Self::G2Bases, scalars: &[Fr]) -> Result<G2Projective, BackendError> {
        Ok(self.msm_on::<_, 2>(bases, scalars))
    }
}

impl NttBackend for CpuBackend {
    fn name(&self) -> String {
        "cpu".into()
    }
    fn max_log_size(&self) -> u32 {
        Fr::TWO_ADICITY
    }
    fn ntt_unchecked(
        &self,
        data: &mut [Fr],
        dir: NttDirection,
        coset: Option<Fr>,
    ) -> Result<(), BackendError> {
        ntt_with(data, dir, coset, self.vector);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ark_bn254::{g1, g2};
    use ark_ff::One;
    use ark_std::UniformRand;

    /// Buckets holding `values` (`None`: empty) and `overflow`, reduced by
    /// [`weighted_sum`], against `Σ (b+1)·(value_b + overflow_b)` directly.
    fn check<P: SWCurveConfig>(values: &[Option<Affine<P>>], overflow: &[Projective<P>]) {
        let mut buckets = AffineBuckets::<P>::new(values.len());
        for (b, v) in values.iter().enumerate() {
            if let Some((x, y)) = v.and_then(|p| p.xy()) {
                (buckets.xy[b], buckets.full[b]) = ((x, y), true);
            }
        }
        buckets.overflow.copy_from_slice(overflow);
        let want = direct_weighted_sum(values, overflow);
        assert_eq!(weighted_sum(&mut buckets).into_affine(), want.into_affine(), "{} buckets", values.len());
    }

    /// `Σ (b+1)·(value_b + overflow_b)`, one scalar multiplication per bucket.
    pub(super) fn direct_weighted_sum<P: SWCurveConfig>(
        values: &[Option<Affine<P>>],
        overflow: &[Projective<P>],
    ) -> Projective<P> {
        values
            .iter()
            .zip(overflow)
            .enumerate()
            .map(|(b, (v, o))| {
                (v.map_or(Projective::zero(), Projective::from) + o).mul_bigint([b as u64 + 1])
            })
            .sum()
    }

    /// Random buckets, equal ones (running sums that double), alternating
    /// signs (running sums that cancel), and hot buckets' overflow.
    pub(super) fn reduction_cases<P: SWCurveConfig>(check: impl Fn(&[Option<Affine<P>>], &[Projective<P>])) {
        let mut rng = ark_std::test_rng();
        let q = Projective::<P>::rand(&mut rng).into_affine();
        for n in [1usize, 2, 7, 255, 256, 257, 1000, 4099] {
            let none = vec![Projective::<P>::zero(); n];
            let random: Vec<_> =
                (0..n).map(|b| (b % 3 != 1).then(|| Projective::<P>::rand(&mut rng).into_affine())).collect();
            check(&random, &none);
            check(&vec![Some(q); n], &none);
            let alternating: Vec<_> = (0..n).map(|b| Some(if b % 2 == 0 { q } else { -q })).collect();
            check(&alternating, &none);
            let mut overflow = none.clone();
            overflow[n / 2] = Projective::<P>::rand(&mut rng);
            overflow[n - 1] += Projective::<P>::from(q);
            // An overflow that cancels its bucket.
            overflow[0] = random[0].map_or(Projective::zero(), |p| -Projective::from(p));
            check(&random, &overflow);
        }
    }

    #[test]
    fn segmented_running_sums_equal_the_weighted_sum() {
        reduction_cases::<g1::Config>(check);
        reduction_cases::<g2::Config>(check);
    }

    /// The digits' edge cases: 0, ±1, (r-1)/2 (the largest magnitude) and
    /// its neighbours (one of which is written negated), ±2^252, then `random`
    /// random scalars.
    pub(super) fn edge_scalars(random: usize) -> Vec<Fr> {
        let mut rng = ark_std::test_rng();
        let half = Fr::from_bigint(Fr::MODULUS_MINUS_ONE_DIV_TWO).expect("below r");
        let top = Fr::from(2u64).pow([252]);
        let mut s =
            vec![Fr::zero(), Fr::one(), -Fr::one(), half, half + Fr::one(), half - Fr::one(), top, -top];
        s.extend((0..random).map(|_| Fr::rand(&mut rng)));
        s
    }

    #[test]
    fn signed_digits_rebuild_every_scalar_at_every_window_size() {
        let scalars = edge_scalars(64);
        for c in 2..=MAX_WINDOW {
            let w = windows(c);
            let digits = signed_digits(&scalars, c, w);
            let radix = Fr::from(1u64 << c);
            for (s, d) in scalars.iter().zip(digits.chunks(w)) {
                assert!(d.iter().all(|x| x.unsigned_abs() <= 1 << (c - 1)), "c = {c}: {d:?}");
                let rebuilt = d.iter().rev().fold(Fr::zero(), |acc, &x| acc * radix + Fr::from(x as i64));
                assert_eq!(rebuilt, *s, "c = {c}");
            }
        }
    }

    #[test]
    fn plans_keep_the_threads_busy() {
        // One thread: one part, windows that grow with the points.
        let mut c = 2;
        for log in 0..=24 {
            let p = plan(1 << log, 1);
            assert_eq!(p.parts, 1, "2^{log}");
            assert!(p.c >= c, "2^{log}: {p:?} after c = {c}");
            c = p.c;
        }
        // Never more parts than points.
        for n in 1..20 {
            assert!(plan(n, 64).parts <= n, "{n} points");
        }
        // Two threads, 2^17 points: 17 windows of 15 bits (9 rounds) beat 19
        // of 14 (10 rounds), as measured on the vector path.
        assert_eq!(plan(1 << 17, 2), Plan { c: 15, parts: 1 });
        // Sixteen threads, 2^20 points: one part would leave 17 windows for
        // two rounds, the second nearly idle; cutting the points costs less.
        let p = plan(1 << 20, 16);
        assert!(p.parts > 1, "{p:?}");
        let one_part =
            (2..=MAX_WINDOW).map(|c| plan_cost(1 << 20, 16, Plan { c, parts: 1 })).min().expect("sizes");
        assert!(plan_cost(1 << 20, 16, p) * 3 < one_part * 2, "{p:?}");
    }

    /// Points with the bucket additions' special cases (a point at infinity,
    /// a repeated point, its negation), and [`edge_scalars`], against the sum
    /// of scalar multiplications, for several plans, each run one task after
    /// another and side by side.
    pub(super) fn plan_cases<P: SWCurveConfig<ScalarField = Fr>>(
        msm: impl Fn(&[Affine<P>], &[Fr], Plan, bool) -> Projective<P>,
    ) {
        let mut rng = ark_std::test_rng();
        let mut bases: Vec<Affine<P>> =
            (0..300).map(|_| Projective::<P>::rand(&mut rng).into_affine()).collect();
        bases[5] = Affine::identity();
        bases[8] = bases[7];
        bases[9] = -bases[7];
        let mut scalars = edge_scalars(bases.len() - 8);
        scalars[20] = scalars[3];
        let want: Projective<P> = bases.iter().zip(&scalars).map(|(b, s)| *b * s).sum();
        for c in [2, 5, 13, 15] {
            for parts in [1, 2, 7] {
                for parallel in [false, true] {
                    let got = msm(&bases, &scalars, Plan { c, parts }, parallel);
                    assert_eq!(
                        got.into_affine(),
                        want.into_affine(),
                        "c = {c}, {parts} parts, parallel {parallel}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_plan_sums_the_same() {
        plan_cases::<g1::Config>(msm_with);
        plan_cases::<g2::Config>(msm_with);
    }
}
