/* Template: a prime field of 256-bit integers in Montgomery form (R = 2^256),
 * eight 32-bit limbs, least significant first: the same bytes as arkworks'
 * `Fp<MontBackend<_, 4>>` on a little-endian host, so values move between
 * host and device without conversion.
 *
 * The Rust side replaces the name FIELD (Fq, Fr) and defines, before this
 * text, FIELD_MODULUS and FIELD_ONE (brace lists of limbs) and FIELD_INV
 * (-p^-1 mod 2^32). The moduli here are below 2^254, which the carry bounds
 * below rely on (checked on the Rust side). */

typedef struct ALIGN16 { u32 v[8]; } FIELD;

DEVICE FIELD FIELD_zero(void) {
  FIELD r;
#pragma unroll
  for (int i = 0; i < 8; i++) r.v[i] = 0;
  return r;
}

DEVICE FIELD FIELD_one(void) {
  const u32 one[8] = FIELD_ONE;
  FIELD r;
#pragma unroll
  for (int i = 0; i < 8; i++) r.v[i] = one[i];
  return r;
}

DEVICE bool FIELD_is_zero(FIELD a) {
  u32 x = 0;
#pragma unroll
  for (int i = 0; i < 8; i++) x |= a.v[i];
  return x == 0;
}

DEVICE bool FIELD_eq(FIELD a, FIELD b) {
  u32 x = 0;
#pragma unroll
  for (int i = 0; i < 8; i++) x |= a.v[i] ^ b.v[i];
  return x == 0;
}

/* a > b as integers. */
DEVICE bool FIELD_gt(FIELD a, FIELD b) {
#pragma unroll
  for (int i = 7; i >= 0; i--) {
    if (a.v[i] > b.v[i]) return true;
    if (a.v[i] < b.v[i]) return false;
  }
  return false;
}

#ifdef MEDROLLUP_PTX

/* r = a - b over eight limbs; borrow = 0xffffffff when a < b, else 0. */
#define FIELD_SUB_CHAIN(r, a, b, borrow)                                                     \
  asm("sub.cc.u32 %0, %9, %17;\n\t"                                                         \
      "subc.cc.u32 %1, %10, %18;\n\t"                                                       \
      "subc.cc.u32 %2, %11, %19;\n\t"                                                       \
      "subc.cc.u32 %3, %12, %20;\n\t"                                                       \
      "subc.cc.u32 %4, %13, %21;\n\t"                                                       \
      "subc.cc.u32 %5, %14, %22;\n\t"                                                       \
      "subc.cc.u32 %6, %15, %23;\n\t"                                                       \
      "subc.cc.u32 %7, %16, %24;\n\t"                                                       \
      "subc.u32 %8, 0, 0;"                                                                   \
      : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]), "=r"(r[4]), "=r"(r[5]), "=r"(r[6]),  \
        "=r"(r[7]), "=r"(borrow)                                                             \
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(a[4]), "r"(a[5]), "r"(a[6]),         \
        "r"(a[7]), "r"(b[0]), "r"(b[1]), "r"(b[2]), "r"(b[3]), "r"(b[4]), "r"(b[5]),         \
        "r"(b[6]), "r"(b[7]))

/* a - p if a >= p (a < 2p). */
DEVICE FIELD FIELD_sub_p_if_needed(FIELD a) {
  const u32 p[8] = FIELD_MODULUS;
  FIELD s;
  u32 borrow;
  FIELD_SUB_CHAIN(s.v, a.v, p, borrow);
  return borrow ? a : s;
}

DEVICE FIELD FIELD_add(FIELD a, FIELD b) {
  FIELD r;
  asm("add.cc.u32 %0, %8, %16;\n\t"
      "addc.cc.u32 %1, %9, %17;\n\t"
      "addc.cc.u32 %2, %10, %18;\n\t"
      "addc.cc.u32 %3, %11, %19;\n\t"
      "addc.cc.u32 %4, %12, %20;\n\t"
      "addc.cc.u32 %5, %13, %21;\n\t"
      "addc.cc.u32 %6, %14, %22;\n\t"
      "addc.u32 %7, %15, %23;"
      : "=r"(r.v[0]), "=r"(r.v[1]), "=r"(r.v[2]), "=r"(r.v[3]), "=r"(r.v[4]), "=r"(r.v[5]), "=r"(r.v[6]), "=r"(r.v[7])
      : "r"(a.v[0]), "r"(a.v[1]), "r"(a.v[2]), "r"(a.v[3]), "r"(a.v[4]), "r"(a.v[5]), "r"(a.v[6]), "r"(a.v[7]),
        "r"(b.v[0]), "r"(b.v[1]), "r"(b.v[2]), "r"(b.v[3]), "r"(b.v[4]), "r"(b.v[5]), "r"(b.v[6]), "r"(b.v[7]));
  /* a + b < 2p < 2^256: no carry out. */
  return FIELD_sub_p_if_needed(r);
}

DEVICE FIELD FIELD_sub(FIELD a, FIELD b) {
  const u32 p[8] = FIELD_MODULUS;
  FIELD r;
  u32 borrow;
  FIELD_SUB_CHAIN(r.v, a.v, b.v, borrow);
  /* On a borrow, add p back (masked, without a branch). */
  u32 m[8];
#pragma unroll
  for (int i = 0; i < 8; i++) m[i] = p[i] & borrow;
  asm("add.cc.u32 %0, %0, %8;\n\t"
      "addc.cc.u32 %1, %1, %9;\n\t"
      "addc.cc.u32 %2, %2, %10;\n\t"
      "addc.cc.u32 %3, %3, %11;\n\t"
      "addc.cc.u32 %4, %4, %12;\n\t"
      "addc.cc.u32 %5, %5, %13;\n\t"
      "addc.cc.u32 %6, %6, %14;\n\t"
      "addc.u32 %7, %7, %15;"
      : "+r"(r.v[0]), "+r"(r.v[1]), "+r"(r.v[2]), "+r"(r.v[3]), "+r"(r.v[4]), "+r"(r.v[5]), "+r"(r.v[6]), "+r"(r.v[7])
      : "r"(m[0]), "r"(m[1]), "r"(m[2]), "r"(m[3]), "r"(m[4]), "r"(m[5]), "r"(m[6]), "r"(m[7]));
  return r;
}

/* t[0..8] += lo(a[j] * b) << 32j, the carry out of limb 7 into t[8]. */
#define FIELD_MAD_LO_CHAIN(t, a, b)                                                        \
  asm("mad.lo.cc.u32 %0, %9, %17, %0;\n\t"                                                 \
      "madc.lo.cc.u32 %1, %10, %17, %1;\n\t"                                               \
      "madc.lo.cc.u32 %2, %11, %17, %2;\n\t"                                               \
      "madc.lo.cc.u32 %3, %12, %17, %3;\n\t"                                               \
      "madc.lo.cc.u32 %4, %13, %17, %4;\n\t"                                               \
      "madc.lo.cc.u32 %5, %14, %17, %5;\n\t"                                               \
      "madc.lo.cc.u32 %6, %15, %17, %6;\n\t"                                               \
      "madc.lo.cc.u32 %7, %16, %17, %7;\n\t"                                               \
      "addc.u32 %8, %8, 0;"                                                                \
      : "+r"(t[0]), "+r"(t[1]), "+r"(t[2]), "+r"(t[3]), "+r"(t[4]), "+r"(t[5]), "+r"(t[6]), \
        "+r"(t[7]), "+r"(t[8])                                                             \
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(a[4]), "r"(a[5]), "r"(a[6]),       \
        "r"(a[7]), "r"(b))

/* t[1..8] += hi(a[j] * b) << 32(j+1). No carry leaves t[8]: the moduli are
 * below 2^254, so every intermediate sum stays below 2^288. */
#define FIELD_MAD_HI_CHAIN(t, a, b)                                                        \
  asm("mad.hi.cc.u32 %1, %9, %17, %1;\n\t"                                                 \
      "madc.hi.cc.u32 %2, %10, %17, %2;\n\t"                                               \
      "madc.hi.cc.u32 %3, %11, %17, %3;\n\t"                                               \
      "madc.hi.cc.u32 %4, %12, %17, %4;\n\t"                                               \
      "madc.hi.cc.u32 %5, %13, %17, %5;\n\t"                                               \
      "madc.hi.cc.u32 %6, %14, %17, %6;\n\t"                                               \
      "madc.hi.cc.u32 %7, %15, %17, %7;\n\t"                                               \
      "madc.hi.u32 %8, %16, %17, %8;"                                                      \
      : "+r"(t[0]), "+r"(t[1]), "+r"(t[2]), "+r"(t[3]), "+r"(t[4]), "+r"(t[5]), "+r"(t[6]), \
        "+r"(t[7]), "+r"(t[8])                                                             \
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(a[4]), "r"(a[5]), "r"(a[6]),       \
        "r"(a[7]), "r"(b))

/* Montgomery multiplication, CIOS, with PTX carry chains. */
DEVICE FIELD FIELD_mul(FIELD a, FIELD b) {
  const u32 p[8] = FIELD_MODULUS;
  u32 t[9];
#pragma unroll
  for (int i = 0; i < 9; i++) t[i] = 0;
#pragma unroll
  for (int i = 0; i < 8; i++) {
    FIELD_MAD_LO_CHAIN(t, a.v, b.v[i]);
    FIELD_MAD_HI_CHAIN(t, a.v, b.v[i]);
    u32 m = t[0] * FIELD_INV;
    FIELD_MAD_LO_CHAIN(t, p, m);
    FIELD_MAD_HI_CHAIN(t, p, m);
    /* t[0] is now zero: shift down one limb. */
#pragma unroll
    for (int j = 0; j < 8; j++) t[j] = t[j + 1];
    t[8] = 0;
  }
  FIELD r;
#pragma unroll
  for (int i = 0; i < 8; i++) r.v[i] = t[i];
  /* r < 2p: one conditional subtraction. */
  return FIELD_sub_p_if_needed(r);
}

#else /* portable */

DEVICE FIELD FIELD_sub_p_if_needed(FIELD a) {
  const u32 p[8] = FIELD_MODULUS;
  FIELD s;
  u32 borrow = 0;
#pragma unroll
  for (int i = 0; i < 8; i++) {
    u64 d = (u64)a.v[i] - p[i] - borrow;
    s.v[i] = (u32)d;
    borrow = (u32)(d >> 63);
  }
  return borrow ? a : s;
}

DEVICE FIELD FIELD_add(FIELD a, FIELD b) {
  FIELD r;
  u64 carry = 0;
#pragma unroll
  for (int i = 0; i < 8; i++) {
    u64 s = (u64)a.v[i] + b.v[i] + carry;
    r.v[i] = (u32)s;
    carry = s >> 32;
  }
  /* a + b < 2p < 2^256: no carry out. */
  return FIELD_sub_p_if_needed(r);
}

DEVICE FIELD FIELD_sub(FIELD a, FIELD b) {
  const u32 p[8] = FIELD_MODULUS;
  FIELD r;
  u32 borrow = 0;
#pragma unroll
  for (int i = 0; i < 8; i++) {
    u64 d = (u64)a.v[i] - b.v[i] - borrow;
    r.v[i] = (u32)d;
    borrow = (u32)(d >> 63);
  }
  u32 mask = 0u - borrow;
  u64 carry = 0;
#pragma unroll
  for (int i = 0; i < 8; i++) {
    u64 s = (u64)r.v[i] + (p[i] & mask) + carry;
    r.v[i] = (u32)s;
    carry = s >> 32;
  }
  return r;
}

/* Montgomery multiplication, CIOS (Koc, Acar, Kaliski 1996). */
DEVICE FIELD FIELD_mul(FIELD a, FIELD b) {
  const u32 p[8] = FIELD_MODULUS;
  u32 t[9];
#pragma unroll
  for (int i = 0; i < 9; i++) t[i] = 0;
#pragma unroll
  for (int i = 0; i < 8; i++) {
    u64 c = 0;
#pragma unroll
    for (int j = 0; j < 8; j++) {
      c += (u64)a.v[j] * b.v[i] + t[j];
      t[j] = (u32)c;
      c >>= 32;
    }
    t[8] += (u32)c;
    u32 m = t[0] * FIELD_INV;
    c = ((u64)m * p[0] + t[0]) >> 32;
#pragma unroll
    for (int j = 1; j < 8; j++) {
      c += (u64)m * p[j] + t[j];
      t[j - 1] = (u32)c;
      c >>= 32;
    }
    c += t[8];
    t[7] = (u32)c;
    t[8] = (u32)(c >> 32);
  }
  FIELD r;
#pragma unroll
  for (int i = 0; i < 8; i++) r.v[i] = t[i];
  return FIELD_sub_p_if_needed(r);
}

#endif

DEVICE FIELD FIELD_sqr(FIELD a) { return FIELD_mul(a, a); }
DEVICE FIELD FIELD_dbl(FIELD a) { return FIELD_add(a, a); }
DEVICE FIELD FIELD_neg(FIELD a) { return FIELD_sub(FIELD_zero(), a); }

/* Montgomery form -> the integer (a * R^-1). */
DEVICE FIELD FIELD_from_mont(FIELD a) {
  FIELD one = FIELD_zero();
  one.v[0] = 1;
  return FIELD_mul(a, one);
}

/* a^-1 = a^(p-2) (Fermat); 0 for 0. */
DEVICE FIELD FIELD_inv(FIELD a) {
  const u32 p[8] = FIELD_MODULUS;
  FIELD r = FIELD_one();
  for (int i = 255; i >= 0; i--) {
    r = FIELD_sqr(r);
    u32 e = p[i >> 5] - (i < 32 ? 2u : 0u); /* p is odd: no borrow from limb 0 */
    if ((e >> (i & 31)) & 1) r = FIELD_mul(r, a);
  }
  return r;
}

/* a^e for a small exponent. */
DEVICE FIELD FIELD_pow(FIELD a, u32 e) {
  FIELD r = FIELD_one();
  while (e) {
    if (e & 1) r = FIELD_mul(r, a);
    a = FIELD_sqr(a);
    e >>= 1;
  }
  return r;
}
