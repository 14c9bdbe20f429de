/* Template: the point side of the MSM for POINT (G1, G2); see msm.cl. */

/* Bases times 2^(c*w) for every window w: thread i writes
 * bases[w * len + i] for w = 1 .. windows - 1 from bases[i]. */
KERNEL void POINT_precompute(GLOBAL POINT_affine* bases, u32 len, u32 c, u32 windows) {
  u32 i = GLOBAL_ID();
  if (i >= len) return;
  POINT_affine p = bases[i];
  if (POINT_affine_is_identity(p)) {
    for (u32 w = 1; w < windows; w++) bases[w * len + i] = p;
    return;
  }
  POINT_xyzz acc = POINT_madd(POINT_identity(), p.x, p.y);
  for (u32 w = 1; w < windows; w++) {
    for (u32 j = 0; j < c; j++) acc = POINT_dbl(acc);
    bases[w * len + i] = POINT_to_affine(acc);
  }
}

/* Level 1: segment s sums its (at most k) bases into one accumulator. With
 * precomputed bases (stride = their count, else 0), entry e names window
 * e / n, point e % n. */
KERNEL void POINT_bucket_acc(GLOBAL const POINT_affine* bases, u32 base_offset, u32 stride, u32 n,
                             GLOBAL const u32* entries, GLOBAL const u32* off, GLOBAL const u32* cnt,
                             GLOBAL const u32* seg_off, u32 buckets, u32 segments, u32 k,
                             GLOBAL POINT_xyzz* out) {
  u32 s = GLOBAL_ID();
  if (s >= segments) return;
  msm_range r = msm_segment(off, cnt, seg_off, buckets, s, k);
  POINT_xyzz acc = POINT_identity();
  for (u32 e = r.start; e < r.end; e++) {
    u32 entry = entries[e];
    u32 idx = entry & 0x7fffffffu;
    if (stride) {
      u32 w = idx / n;
      idx = w * stride + (idx - w * n);
    }
    POINT_affine p = bases[base_offset + idx];
    if (POINT_affine_is_identity(p)) continue;
    if (entry >> 31) p.y = FIELD_neg(p.y);
    acc = POINT_madd(acc, p.x, p.y);
  }
  out[s] = acc;
}

/* Later levels: the same over the previous level's accumulators. */
KERNEL void POINT_partial_acc(GLOBAL const POINT_xyzz* in, GLOBAL const u32* off, GLOBAL const u32* cnt,
                              GLOBAL const u32* seg_off, u32 buckets, u32 segments, u32 k,
                              GLOBAL POINT_xyzz* out) {
  u32 s = GLOBAL_ID();
  if (s >= segments) return;
  msm_range r = msm_segment(off, cnt, seg_off, buckets, s, k);
  POINT_xyzz acc = POINT_identity();
  for (u32 e = r.start; e < r.end; e++) acc = POINT_add(acc, in[e]);
  out[s] = acc;
}

/* Thread (w, t) of per_window threads reduces buckets [t*L, (t+1)*L) of
 * window w (bucket j holds the points with digit j + 1) to
 * sum_j (j + 1) * B_j, by a running sum from the top. */
KERNEL void POINT_window_reduce(GLOBAL const POINT_xyzz* sums, GLOBAL const u32* off, GLOBAL const u32* cnt,
                                u32 h, u32 per_window, u32 threads, GLOBAL POINT_xyzz* out) {
  u32 g = GLOBAL_ID();
  if (g >= threads) return;
  u32 w = g / per_window;
  u32 t = g % per_window;
  u32 len = h / per_window;
  u32 lo = t * len;
  POINT_xyzz running = POINT_identity();
  POINT_xyzz acc = POINT_identity();
  for (u32 j = lo + len; j-- > lo;) {
    u32 b = w * h + j;
    if (cnt[b] != 0) running = POINT_add(running, sums[off[b]]);
    acc = POINT_add(acc, running);
  }
  /* acc = sum_j (j - lo + 1) B_j; add lo * sum_j B_j. */
  out[g] = POINT_add(acc, POINT_mul_small(running, lo));
}

/* out[i] = in[i*g] + ... + in[i*g + g - 1] (the last group may be short). */
KERNEL void POINT_sum_groups(GLOBAL const POINT_xyzz* in, u32 count, u32 g, GLOBAL POINT_xyzz* out) {
  u32 i = GLOBAL_ID();
  u32 start = i * g;
  if (start >= count) return;
  u32 end = start + g < count ? start + g : count;
  POINT_xyzz acc = in[start];
  for (u32 e = start + 1; e < end; e++) acc = POINT_add(acc, in[e]);
  out[i] = acc;
}
