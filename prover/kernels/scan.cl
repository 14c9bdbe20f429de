/* Exclusive prefix sums of u32 arrays: each work-group of SCAN_THREADS threads
 * scans SCAN_THREADS * 4 elements and writes its total; the host scans the
 * totals (recursively) and adds them back with scan_add. SCAN_THREADS comes
 * from the Rust side. */

#define SCAN_BLOCK (SCAN_THREADS * 4)

KERNEL void scan_blocks(GLOBAL const u32* in, GLOBAL u32* out, GLOBAL u32* block_sums, u32 n) {
  LOCAL u32 tmp[SCAN_THREADS];
  u32 l = LOCAL_ID();
  u32 base = GROUP_ID() * SCAN_BLOCK + l * 4;
  u32 v[4];
  u32 total = 0;
  for (int j = 0; j < 4; j++) {
    v[j] = base + j < n ? in[base + j] : 0;
    total += v[j];
  }
  tmp[l] = total;
  BARRIER();
  for (u32 off = 1; off < SCAN_THREADS; off <<= 1) {
    u32 add = l >= off ? tmp[l - off] : 0;
    BARRIER();
    tmp[l] += add;
    BARRIER();
  }
  u32 acc = tmp[l] - total;
  for (int j = 0; j < 4; j++) {
    if (base + j < n) out[base + j] = acc;
    acc += v[j];
  }
  if (l == SCAN_THREADS - 1) block_sums[GROUP_ID()] = tmp[l];
}

KERNEL void scan_add(GLOBAL u32* out, GLOBAL const u32* block_offsets, u32 n) {
  u32 add = block_offsets[GROUP_ID()];
  u32 base = GROUP_ID() * SCAN_BLOCK + LOCAL_ID() * 4;
  for (int j = 0; j < 4; j++) {
    if (base + j < n) out[base + j] += add;
  }
}

KERNEL void fill_u32(GLOBAL u32* out, u32 value, u32 n) {
  u32 i = GLOBAL_ID();
  if (i < n) out[i] = value;
}

KERNEL void copy_u32(GLOBAL const u32* in, GLOBAL u32* out, u32 n) {
  u32 i = GLOBAL_ID();
  if (i < n) out[i] = in[i];
}
