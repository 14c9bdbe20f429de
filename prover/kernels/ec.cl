/* Template: a short Weierstrass curve y^2 = x^3 + b (a = 0) over FIELD, with
 * affine bases and XYZZ accumulators (x = X/ZZ, y = Y/ZZZ, ZZ^3 = ZZZ^2).
 * The Rust side replaces POINT (G1, G2) and FIELD (Fq, Fq2).
 *
 * Formulas: Explicit-Formulas Database, "xyzz" coordinates for short
 * Weierstrass curves (madd-2008-s, mdbl-2008-s-1, add-2008-s, dbl-2008-s-1),
 * with a = 0. An affine point (0, 0) is the point at infinity (it is not on
 * the curve, since b != 0); an accumulator with ZZ = 0 is. */

typedef struct { FIELD x, y; } POINT_affine;
typedef struct { FIELD x, y, zz, zzz; } POINT_xyzz;

DEVICE POINT_xyzz POINT_identity(void) {
  POINT_xyzz r;
  r.x = FIELD_zero();
  r.y = FIELD_zero();
  r.zz = FIELD_zero();
  r.zzz = FIELD_zero();
  return r;
}

DEVICE bool POINT_is_identity(POINT_xyzz p) { return FIELD_is_zero(p.zz); }

DEVICE bool POINT_affine_is_identity(POINT_affine p) {
  return FIELD_is_zero(p.x) && FIELD_is_zero(p.y);
}

/* 2 * (x, y) for an affine point (mdbl-2008-s-1). */
DEVICE_NOINLINE POINT_xyzz POINT_dbl_affine(FIELD x, FIELD y) {
  FIELD u = FIELD_dbl(y);
  FIELD v = FIELD_sqr(u);
  FIELD w = FIELD_mul(u, v);
  FIELD s = FIELD_mul(x, v);
  FIELD x2 = FIELD_sqr(x);
  FIELD m = FIELD_add(FIELD_dbl(x2), x2);
  POINT_xyzz r;
  r.x = FIELD_sub(FIELD_sqr(m), FIELD_dbl(s));
  r.y = FIELD_sub(FIELD_mul(m, FIELD_sub(s, r.x)), FIELD_mul(w, y));
  r.zz = v;
  r.zzz = w;
  return r;
}

/* 2 * p (dbl-2008-s-1). */
DEVICE_NOINLINE POINT_xyzz POINT_dbl(POINT_xyzz p) {
  FIELD u = FIELD_dbl(p.y);
  FIELD v = FIELD_sqr(u);
  FIELD w = FIELD_mul(u, v);
  FIELD s = FIELD_mul(p.x, v);
  FIELD x2 = FIELD_sqr(p.x);
  FIELD m = FIELD_add(FIELD_dbl(x2), x2);
  POINT_xyzz r;
  r.x = FIELD_sub(FIELD_sqr(m), FIELD_dbl(s));
  r.y = FIELD_sub(FIELD_mul(m, FIELD_sub(s, r.x)), FIELD_mul(w, p.y));
  r.zz = FIELD_mul(v, p.zz);
  r.zzz = FIELD_mul(w, p.zzz);
  return r;
}

/* p + (x, y), (x, y) an affine point that is not the identity (madd-2008-s). */
DEVICE_NOINLINE POINT_xyzz POINT_madd(POINT_xyzz p, FIELD x, FIELD y) {
  if (POINT_is_identity(p)) {
    POINT_xyzz r;
    r.x = x;
    r.y = y;
    r.zz = FIELD_one();
    r.zzz = FIELD_one();
    return r;
  }
  FIELD pp_ = FIELD_sub(FIELD_mul(x, p.zz), p.x);
  FIELD rr = FIELD_sub(FIELD_mul(y, p.zzz), p.y);
  if (FIELD_is_zero(pp_)) {
    if (FIELD_is_zero(rr)) return POINT_dbl_affine(x, y);
    return POINT_identity();
  }
  FIELD pp = FIELD_sqr(pp_);
  FIELD ppp = FIELD_mul(pp_, pp);
  FIELD q = FIELD_mul(p.x, pp);
  POINT_xyzz r;
  r.x = FIELD_sub(FIELD_sub(FIELD_sqr(rr), ppp), FIELD_dbl(q));
  r.y = FIELD_sub(FIELD_mul(rr, FIELD_sub(q, r.x)), FIELD_mul(p.y, ppp));
  r.zz = FIELD_mul(p.zz, pp);
  r.zzz = FIELD_mul(p.zzz, ppp);
  return r;
}

/* p + q (add-2008-s). */
DEVICE_NOINLINE POINT_xyzz POINT_add(POINT_xyzz p, POINT_xyzz q) {
  if (POINT_is_identity(p)) return q;
  if (POINT_is_identity(q)) return p;
  FIELD u1 = FIELD_mul(p.x, q.zz);
  FIELD u2 = FIELD_mul(q.x, p.zz);
  FIELD s1 = FIELD_mul(p.y, q.zzz);
  FIELD s2 = FIELD_mul(q.y, p.zzz);
  FIELD pp_ = FIELD_sub(u2, u1);
  FIELD rr = FIELD_sub(s2, s1);
  if (FIELD_is_zero(pp_)) {
    if (FIELD_is_zero(rr)) return POINT_dbl(p);
    return POINT_identity();
  }
  FIELD pp = FIELD_sqr(pp_);
  FIELD ppp = FIELD_mul(pp_, pp);
  FIELD q2 = FIELD_mul(u1, pp);
  POINT_xyzz r;
  r.x = FIELD_sub(FIELD_sub(FIELD_sqr(rr), ppp), FIELD_dbl(q2));
  r.y = FIELD_sub(FIELD_mul(rr, FIELD_sub(q2, r.x)), FIELD_mul(s1, ppp));
  r.zz = FIELD_mul(FIELD_mul(p.zz, q.zz), pp);
  r.zzz = FIELD_mul(FIELD_mul(p.zzz, q.zzz), ppp);
  return r;
}

/* The affine form of p (one inversion: 1/ZZ = ZZ^2 / ZZZ^2, as ZZ^3 = ZZZ^2). */
DEVICE_NOINLINE POINT_affine POINT_to_affine(POINT_xyzz p) {
  POINT_affine r;
  if (POINT_is_identity(p)) {
    r.x = FIELD_zero();
    r.y = FIELD_zero();
    return r;
  }
  FIELD izzz = FIELD_inv(p.zzz);
  FIELD izz = FIELD_mul(FIELD_sqr(p.zz), FIELD_sqr(izzz));
  r.x = FIELD_mul(p.x, izz);
  r.y = FIELD_mul(p.y, izzz);
  return r;
}

/* k * p for a small k, by double-and-add from the top bit. */
DEVICE_NOINLINE POINT_xyzz POINT_mul_small(POINT_xyzz p, u32 k) {
  if (k == 0) return POINT_identity();
  int top = 31;
  while (((k >> top) & 1) == 0) top--;
  POINT_xyzz r = p;
  for (int i = top - 1; i >= 0; i--) {
    r = POINT_dbl(r);
    if ((k >> i) & 1) r = POINT_add(r, p);
  }
  return r;
}
