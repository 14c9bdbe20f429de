/* The scalar side of the bucket-method MSM, shared by G1 and G2:
 * 1. msm_prepare: Montgomery -> integer; a scalar above (r-1)/2 becomes
 *    r - s with the point negated (flag in bit 255), so that small negative
 *    witness values cost as little as small positive ones;
 * 2. msm_histogram / msm_scatter: signed base-2^c digits (each in
 *    [-2^(c-1), 2^(c-1)]), counted per bucket, then the point indices sorted
 *    by bucket (a counting sort: the host scans the counts in between);
 * 3. msm_segments: the buckets' work cut into segments of at most k
 *    entries, so that a bucket holding most of the points (witness scalars
 *    are mostly 0 and 1) is summed by many threads, level after level.
 *
 * Bucket key = window * 2^(c-1) + |digit| - 1; entry = point index, with the
 * sign of the point in bit 31. With precomputed bases (2^(c*w) * P stored for
 * every window w, see G1_precompute) the windows share one set of
 * buckets ("merged"): key = |digit| - 1, entry = w * n + point index. */

DEVICE u32 msm_bits(Fr s, u32 start, u32 c) {
  u32 limb = start >> 5;
  u32 off = start & 31;
  u32 bits = s.v[limb] >> off;
  if (off + c > 32 && limb < 7) bits |= s.v[limb + 1] << (32 - off);
  return bits & ((1u << c) - 1);
}

/* The signed digit of window w given the carry from window w - 1: its
 * magnitude, with bit 31 set when it is negative (which carries one into
 * window w + 1). Digits lie in [-2^(c-1), 2^(c-1)]. */
DEVICE u32 msm_digit(Fr s, u32 w, u32 c, u32 carry) {
  u32 d = msm_bits(s, w * c, c) + carry;
  return d > (1u << (c - 1)) ? ((1u << c) - d) | 0x80000000u : d;
}

KERNEL void msm_prepare(GLOBAL const Fr* in, GLOBAL Fr* out, u32 n) {
  u32 i = GLOBAL_ID();
  if (i >= n) return;
  const u32 mid_limbs[8] = Fr_HALF;
  Fr mid;
  for (int j = 0; j < 8; j++) mid.v[j] = mid_limbs[j];
  Fr s = Fr_from_mont(in[i]);
  u32 neg = 0;
  if (Fr_gt(s, mid)) {
    s = Fr_neg(s);
    neg = 1;
  }
  s.v[7] |= neg << 31;
  out[i] = s;
}

KERNEL void msm_histogram(GLOBAL const Fr* scalars, u32 n, u32 c, u32 windows, u32 merged, GLOBAL u32* counts) {
  u32 i = GLOBAL_ID();
  if (i >= n) return;
  Fr s = scalars[i];
  s.v[7] &= 0x7fffffffu;
  u32 mid = 1u << (c - 1);
  u32 carry = 0;
  for (u32 w = 0; w < windows; w++) {
    u32 digit = msm_digit(s, w, c, carry);
    u32 mag = digit & 0x7fffffffu;
    carry = digit >> 31;
    if (mag != 0) ATOMIC_INC(&counts[(merged ? 0 : w * mid) + mag - 1]);
  }
}

KERNEL void msm_scatter(GLOBAL const Fr* scalars, u32 n, u32 c, u32 windows, u32 merged, GLOBAL u32* cursor,
                        GLOBAL u32* entries) {
  u32 i = GLOBAL_ID();
  if (i >= n) return;
  Fr s = scalars[i];
  u32 neg = s.v[7] >> 31;
  s.v[7] &= 0x7fffffffu;
  u32 mid = 1u << (c - 1);
  u32 carry = 0;
  for (u32 w = 0; w < windows; w++) {
    u32 digit = msm_digit(s, w, c, carry);
    u32 mag = digit & 0x7fffffffu;
    carry = digit >> 31;
    if (mag != 0) {
      u32 pos = ATOMIC_INC(&cursor[(merged ? 0 : w * mid) + mag - 1]);
      entries[pos] = (merged ? w * n + i : i) | ((neg ^ carry) << 31);
    }
  }
}

KERNEL void msm_segments(GLOBAL const u32* cnt, GLOBAL u32* seg_cnt, u32 buckets, u32 k, GLOBAL u32* more) {
  u32 b = GLOBAL_ID();
  if (b >= buckets) return;
  u32 s = (cnt[b] + k - 1) / k;
  seg_cnt[b] = s;
  if (s > 1) *more = 1;
}

/* The bucket of segment s: the last b with seg_off[b] <= s (the bucket after
 * it starts later, so b holds segment s). */
DEVICE u32 msm_find_bucket(GLOBAL const u32* seg_off, u32 buckets, u32 s) {
  u32 lo = 0, hi = buckets;
  while (hi - lo > 1) {
    u32 mid = (lo + hi) >> 1;
    if (seg_off[mid] <= s) lo = mid;
    else hi = mid;
  }
  return lo;
}

/* The entries [start, end) that segment s sums: a bucket's segments take k
 * entries each, the last one what is left. */
typedef struct {
  u32 start, end;
} msm_range;

DEVICE msm_range msm_segment(GLOBAL const u32* off, GLOBAL const u32* cnt, GLOBAL const u32* seg_off, u32 buckets,
                             u32 s, u32 k) {
  u32 b = msm_find_bucket(seg_off, buckets, s);
  msm_range r;
  r.start = off[b] + (s - seg_off[b]) * k;
  r.end = off[b] + cnt[b];
  if (r.start + k < r.end) r.end = r.start + k;
  return r;
}
