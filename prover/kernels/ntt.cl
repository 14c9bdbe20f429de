/* NTT over Fr: radix-2 decimation in time, several stages per launch in
 * work-group memory (NTT_MAX_LOG stages at most), the bit reversal folded
 * into the first pass's loads (NTT_MAX_LOG comes from the Rust side); and the pointwise steps of the Groth16
 * quotient, so the whole chain a, b, c -> h stays on the device. */

DEVICE u32 bit_reverse(u32 x, u32 bits) {
  x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
  x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
  x = ((x >> 4) & 0x0f0f0f0fu) | ((x & 0x0f0f0f0fu) << 4);
  x = ((x >> 8) & 0x00ff00ffu) | ((x & 0x00ff00ffu) << 8);
  x = (x >> 16) | (x << 16);
  return bits == 0 ? 0 : x >> (32 - bits);
}

/* out[i] = base^i for i < n; each thread makes a run of NTT_POW_RUN. */
#define NTT_POW_RUN 32
KERNEL void fr_powers(GLOBAL Fr* out, GLOBAL const Fr* base, u32 n) {
  u32 start = GLOBAL_ID() * NTT_POW_RUN;
  if (start >= n) return;
  Fr b = base[0];
  Fr x = Fr_pow(b, start);
  for (u32 i = start; i < start + NTT_POW_RUN && i < n; i++) {
    out[i] = x;
    x = Fr_mul(x, b);
  }
}

/* Stages s0 .. s0 + k - 1 of a transform of 2^log_n elements. Work-group g
 * owns the 2^k elements hi * 2^(s0+k) + t * 2^s0 + lo (lo = g mod 2^s0,
 * hi = g / 2^s0), one butterfly per thread per stage. tw[j] = omega^j. */
KERNEL void ntt_pass(GLOBAL const Fr* src, GLOBAL Fr* dst, GLOBAL const Fr* tw, u32 log_n, u32 s0, u32 k,
                     u32 bitrev) {
  LOCAL Fr buf[1 << NTT_MAX_LOG];
  u32 g = GROUP_ID();
  u32 l = LOCAL_ID();
  u32 lo = g & ((1u << s0) - 1);
  u32 hi = g >> s0;
  u32 mid = 1u << (k - 1);
  for (u32 e = l; e < 2 * mid; e += mid) {
    u32 idx = (hi << (s0 + k)) | (e << s0) | lo;
    buf[e] = src[bitrev ? bit_reverse(idx, log_n) : idx];
  }
  BARRIER();
  for (u32 j = 0; j < k; j++) {
    u32 m = 1u << j;
    u32 p = ((l >> j) << (j + 1)) | (l & (m - 1));
    u32 e = (((l & (m - 1)) << s0) | lo) << (log_n - 1 - s0 - j);
    Fr u = buf[p];
    Fr v = Fr_mul(buf[p + m], tw[e]);
    buf[p] = Fr_add(u, v);
    buf[p + m] = Fr_sub(u, v);
    BARRIER();
  }
  for (u32 e = l; e < 2 * mid; e += mid) {
    u32 idx = (hi << (s0 + k)) | (e << s0) | lo;
    dst[idx] = buf[e];
  }
}

KERNEL void fr_mul_table(GLOBAL Fr* data, GLOBAL const Fr* table, u32 n) {
  u32 i = GLOBAL_ID();
  if (i < n) data[i] = Fr_mul(data[i], table[i]);
}

KERNEL void fr_mul_const(GLOBAL Fr* data, GLOBAL const Fr* c, u32 n) {
  u32 i = GLOBAL_ID();
  if (i < n) data[i] = Fr_mul(data[i], c[0]);
}

/* a = (a * b - c) * z_inv: the quotient's numerator over the vanishing
 * polynomial, which is the constant z_inv^-1 on the coset. */
KERNEL void qap_pointwise(GLOBAL Fr* a, GLOBAL const Fr* b, GLOBAL const Fr* c, GLOBAL const Fr* z_inv, u32 n) {
  u32 i = GLOBAL_ID();
  if (i < n) a[i] = Fr_mul(Fr_sub(Fr_mul(a[i], b[i]), c[i]), z_inv[0]);
}
