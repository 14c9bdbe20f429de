/* BN254's Fq2 = Fq[u] / (u^2 + 1), for G2: the same layout as arkworks'
 * `Fq2` (c0, then c1), and the same function names as the field template,
 * so the curve template instantiates over it unchanged. */

typedef struct { Fq c0, c1; } Fq2;

DEVICE Fq2 Fq2_zero(void) {
  Fq2 r;
  r.c0 = Fq_zero();
  r.c1 = Fq_zero();
  return r;
}

DEVICE Fq2 Fq2_one(void) {
  Fq2 r;
  r.c0 = Fq_one();
  r.c1 = Fq_zero();
  return r;
}

DEVICE bool Fq2_is_zero(Fq2 a) { return Fq_is_zero(a.c0) && Fq_is_zero(a.c1); }
DEVICE bool Fq2_eq(Fq2 a, Fq2 b) { return Fq_eq(a.c0, b.c0) && Fq_eq(a.c1, b.c1); }

DEVICE Fq2 Fq2_add(Fq2 a, Fq2 b) {
  Fq2 r;
  r.c0 = Fq_add(a.c0, b.c0);
  r.c1 = Fq_add(a.c1, b.c1);
  return r;
}

DEVICE Fq2 Fq2_sub(Fq2 a, Fq2 b) {
  Fq2 r;
  r.c0 = Fq_sub(a.c0, b.c0);
  r.c1 = Fq_sub(a.c1, b.c1);
  return r;
}

DEVICE Fq2 Fq2_dbl(Fq2 a) { return Fq2_add(a, a); }

DEVICE Fq2 Fq2_neg(Fq2 a) {
  Fq2 r;
  r.c0 = Fq_neg(a.c0);
  r.c1 = Fq_neg(a.c1);
  return r;
}

/* Karatsuba: three Fq multiplications. */
DEVICE Fq2 Fq2_mul(Fq2 a, Fq2 b) {
  Fq v0 = Fq_mul(a.c0, b.c0);
  Fq v1 = Fq_mul(a.c1, b.c1);
  Fq2 r;
  r.c0 = Fq_sub(v0, v1);
  r.c1 = Fq_sub(Fq_sub(Fq_mul(Fq_add(a.c0, a.c1), Fq_add(b.c0, b.c1)), v0), v1);
  return r;
}

/* (a0 + a1 u)^2 = (a0 + a1)(a0 - a1) + 2 a0 a1 u: two multiplications. */
DEVICE Fq2 Fq2_sqr(Fq2 a) {
  Fq2 r;
  Fq ab = Fq_mul(a.c0, a.c1);
  r.c0 = Fq_mul(Fq_add(a.c0, a.c1), Fq_sub(a.c0, a.c1));
  r.c1 = Fq_dbl(ab);
  return r;
}

/* (c0 + c1 u)^-1 = (c0 - c1 u) / (c0^2 + c1^2). */
DEVICE Fq2 Fq2_inv(Fq2 a) {
  Fq t = Fq_inv(Fq_add(Fq_sqr(a.c0), Fq_sqr(a.c1)));
  Fq2 r;
  r.c0 = Fq_mul(a.c0, t);
  r.c1 = Fq_neg(Fq_mul(a.c1, t));
  return r;
}
