//! How values are laid out in device memory, and the conversions.
//!
//! Field elements keep arkworks' own representation: four little-endian
//! 64-bit limbs of the Montgomery form, which are the eight 32-bit limbs the
//! kernels use. Scalars (the hot path: megabytes per proof) are therefore
//! reinterpreted in place, without a copy; [`check_field_layout`] proves at
//! start-up that the reinterpretation is sound on this build. Points are
//! repacked once, when bases are loaded: an affine point is `x ‖ y` (the point
//! at infinity is all zeros, which is not on the curve), an accumulator is
//! XYZZ (`x = X/ZZ`, `y = Y/ZZZ`, `ZZ = 0` at infinity).
#![allow(unsafe_code)]

use ark_bn254::{Fq, Fq2, Fr, G1Affine, G1Projective, G2Affine, G2Projective};
use ark_ec::AffineRepr;
use ark_ec::short_weierstrass::{Projective, SWCurveConfig};
use ark_ff::{BigInt, Field, Zero};

/// Bytes of one field element.
pub(crate) const FIELD_BYTES: usize = 32;

const _: () = {
    assert!(std::mem::size_of::<Fr>() == FIELD_BYTES);
    assert!(std::mem::size_of::<Fq>() == FIELD_BYTES);
    assert!(std::mem::align_of::<Fr>() == 8);
    assert!(cfg!(target_endian = "little"));
};

/// Checks, once, that an `Fr` is exactly its 32 Montgomery limb bytes (the
/// compile-time assertions above fix size and alignment; this fixes where
/// the limbs are).
pub(crate) fn check_field_layout() -> Result<(), String> {
    let probe = [Fr::from(1u64), -Fr::from(7u64)];
    let mut want = Vec::with_capacity(64);
    for x in &probe {
        for limb in x.0.0 {
            want.extend_from_slice(&limb.to_le_bytes());
        }
    }
    if fr_bytes(&probe) == want.as_slice() {
        Ok(())
    } else {
        Err("this build lays out Fr differently from its 32 Montgomery limb bytes; \
             the device kernels cannot read it"
            .into())
    }
}

/// The bytes of `v`, without a copy.
pub(crate) fn fr_bytes(v: &[Fr]) -> &[u8] {
    // SAFETY: `Fr` is 32 bytes with alignment 8 (asserted above), made of
    // `[u64; 4]` and a zero-sized marker, with no padding and no invalid bit
    // patterns of u8; the slice covers exactly `v`'s memory.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}

/// The bytes of `v`, mutable, without a copy. Only ever written with reduced
/// Montgomery limbs (what the kernels produce), which are valid `Fr`s.
pub(crate) fn fr_bytes_mut(v: &mut [Fr]) -> &mut [u8] {
    // SAFETY: as in `fr_bytes`; the caller writes valid field elements.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}

fn put_fq(out: &mut Vec<u8>, x: &Fq) {
    for limb in x.0.0 {
        out.extend_from_slice(&limb.to_le_bytes());
    }
}

fn fq_at(b: &[u8]) -> Fq {
    let mut limbs = [0u64; 4];
    for (i, l) in limbs.iter_mut().enumerate() {
        *l = u64::from_le_bytes(b[8 * i..8 * i + 8].try_into().expect("8 bytes"));
    }
    Fq::new_unchecked(BigInt(limbs))
}

fn fq2_at(b: &[u8]) -> Fq2 {
    Fq2::new(fq_at(&b[..32]), fq_at(&b[32..64]))
}

/// XYZZ to arkworks' Jacobian coordinates (x = X/Z², y = Y/Z³) without an
/// inversion: with ZZ = z², ZZZ = z³, the point (X·ZZ², Y·ZZ³, ZZZ) is the
/// same (X·ZZ²/ZZZ² = X/ZZ and Y·ZZ³/ZZZ³ = Y/ZZZ). ZZ = 0 gives Z = 0, the
/// point at infinity.
fn jacobian<P: SWCurveConfig>(
    x: P::BaseField,
    y: P::BaseField,
    zz: P::BaseField,
    zzz: P::BaseField,
) -> Projective<P> {
    if zz.is_zero() {
        return Projective::zero();
    }
    let zz2 = zz.square();
    Projective::new_unchecked(x * zz2, y * zz2 * zz, zzz)
}

/// A curve whose points the kernels handle.
pub(crate) trait DeviceCurve: Send + Sync + 'static {
    /// Affine bases on the host.
    type Affine: AffineRepr + Send + Sync;
    /// Results on the host.
    type Projective: Send + Sync + Copy + std::ops::Add<Output = Self::Projective> + Zero;
    /// The kernels' prefix ("G1", "G2").
    const NAME: &'static str;
    /// Bytes of one affine point on the device.
    const AFFINE_BYTES: usize;
    /// Bytes of one XYZZ accumulator.
    const XYZZ_BYTES: usize = 2 * Self::AFFINE_BYTES;
    /// Relative cost of one addition (G1 = 1).
    const WEIGHT: usize;
    /// Appends the device form of `points`.
    fn pack(points: &[Self::Affine]) -> Vec<u8>;
    /// An accumulator from its device bytes.
    fn from_xyzz(b: &[u8]) -> Self::Projective;
    /// `2^k · p`.
    fn double_k(p: Self::Projective, k: usize) -> Self::Projective;
}

/// BN254's G1.
#[derive(Debug)]
pub(crate) struct G1;
/// BN254's G2.
#[derive(Debug)]
pub(crate) struct G2;

impl DeviceCurve for G1 {
    type Affine = G1Affine;
    type Projective = G1Projective;
    const NAME: &'static str = "G1";
    const AFFINE_BYTES: usize = 64;
    const WEIGHT: usize = 1;

    fn pack(points: &[G1Affine]) -> Vec<u8> {
        let mut out = Vec::with_capacity(points.len() * Self::AFFINE_BYTES);
        for p in points {
            let (x, y) = p.xy().unwrap_or((Fq::zero(), Fq::zero()));
            put_fq(&mut out, &x);
            put_fq(&mut out, &y);
        }
        out
    }

    fn from_xyzz(b: &[u8]) -> G1Projective {
        let (x, y, zz, zzz) = (fq_at(&b[0..]), fq_at(&b[32..]), fq_at(&b[64..]), fq_at(&b[96..]));
        jacobian(x, y, zz, zzz)
    }

    fn double_k(mut p: G1Projective, k: usize) -> G1Projective {
        use ark_ec::AdditiveGroup;
        for _ in 0..k {
            p.double_in_place();
        }
        p
    }
}

impl DeviceCurve for G2 {
    type Affine = G2Affine;
    type Projective = G2Projective;
    const NAME: &'static str = "G2";
    const AFFINE_BYTES: usize = 128;
    // Three Fq multiplications for one in Fq2, and the Fq2 additions.
    const WEIGHT: usize = 3;

    fn pack(points: &[G2Affine]) -> Vec<u8> {
        let mut out = Vec::with_capacity(points.len() * Self::AFFINE_BYTES);
        for p in points {
            let (x, y) = p.xy().unwrap_or((Fq2::zero(), Fq2::zero()));
            for c in [x.c0, x.c1, y.c0, y.c1] {
                put_fq(&mut out, &c);
            }
        }
        out
    }

    fn from_xyzz(b: &[u8]) -> G2Projective {
        let (x, y, zz, zzz) = (fq2_at(&b[0..]), fq2_at(&b[64..]), fq2_at(&b[128..]), fq2_at(&b[192..]));
        jacobian(x, y, zz, zzz)
    }

    fn double_k(mut p: G2Projective, k: usize) -> G2Projective {
        use ark_ec::AdditiveGroup;
        for _ in 0..k {
            p.double_in_place();
        }
        p
    }
}

/// Reads field elements from device bytes.
#[cfg(test)]
pub(crate) fn fr_from_bytes(b: &[u8]) -> Vec<Fr> {
    let n = b.len() / FIELD_BYTES;
    let mut v = vec![Fr::zero(); n];
    fr_bytes_mut(&mut v).copy_from_slice(&b[..n * FIELD_BYTES]);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use ark_ec::CurveGroup;
    use ark_ff::UniformRand;

    #[test]
    fn field_layout_is_the_montgomery_limbs() {
        check_field_layout().unwrap();
        let mut r = ark_std::test_rng();
        let v: Vec<Fr> = (0..5).map(|_| Fr::rand(&mut r)).collect();
        assert_eq!(fr_from_bytes(fr_bytes(&v)), v);
    }

    #[test]
    fn xyzz_with_unit_z_reads_back_as_the_point() {
        let mut r = ark_std::test_rng();
        let p = G2Projective::rand(&mut r).into_affine();
        let mut b = G2::pack(&[p]);
        let mut one = Vec::new();
        for c in [Fq::ONE, Fq::zero()] {
            put_fq(&mut one, &c);
        }
        b.extend_from_slice(&one);
        b.extend_from_slice(&one);
        assert_eq!(G2::from_xyzz(&b).into_affine(), p);
        // ZZ = 0 is the point at infinity, whatever X and Y hold.
        let zero = vec![0u8; G2::XYZZ_BYTES];
        assert!(G2::from_xyzz(&zero).is_zero());
        assert_eq!(G1::pack(&[G1Affine::identity()]), vec![0u8; 64]);
    }
}
