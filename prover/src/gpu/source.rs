//! The kernel source: one text, in C with a thin macro layer
//! (`kernels/prelude.h`), compiled as OpenCL C or as CUDA C++ by NVRTC.
//!
//! The field, curve and MSM files are templates: the names `FIELD` and
//! `POINT` are replaced per instance (Fq and Fr; G1 over Fq, G2 over Fq2), as
//! filecoin's ec-gpu-gen does, and the constants come from arkworks, so the
//! kernels compute in exactly the fields the host does.

use ark_bn254::{Fq, Fr};
use ark_ff::{BigInt, Field, PrimeField};

const PRELUDE: &str = include_str!("../../kernels/prelude.h");
const FIELD: &str = include_str!("../../kernels/field.cl");
const FQ2: &str = include_str!("../../kernels/fq2.cl");
const EC: &str = include_str!("../../kernels/ec.cl");
const SCAN: &str = include_str!("../../kernels/scan.cl");
const MSM: &str = include_str!("../../kernels/msm.cl");
const MSM_CURVE: &str = include_str!("../../kernels/msm_curve.cl");
const NTT: &str = include_str!("../../kernels/ntt.cl");

/// log2 of the most NTT stages one pass runs in work-group memory (the
/// kernels' `NTT_MAX_LOG`).
pub(crate) const NTT_MAX_LOG: u32 = 10;
/// Threads of a scan work-group, and elements it scans (`SCAN_THREADS`, `SCAN_BLOCK`).
pub(crate) const SCAN_THREADS: usize = 256;
pub(crate) const SCAN_BLOCK: usize = SCAN_THREADS * 4;

/// Which compiler the source is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// OpenCL C (portable arithmetic).
    OpenCl,
    /// CUDA C++ through NVRTC; `portable` turns off the PTX carry-chain
    /// arithmetic (to compare the two).
    Cuda {
        /// Use the portable arithmetic instead of PTX.
        portable: bool,
    },
}

fn limbs32(b: BigInt<4>) -> String {
    let l: Vec<String> =
        b.0.iter().flat_map(|x| [*x as u32, (*x >> 32) as u32]).map(|x| format!("0x{x:08x}u")).collect();
    format!("{{{}}}", l.join(", "))
}

/// `-p^-1 mod 2^32` by Newton's iteration (each step doubles the correct bits).
fn neg_inv32(p0: u32) -> u32 {
    let mut x: u32 = 1;
    for _ in 0..5 {
        x = x.wrapping_mul(2u32.wrapping_sub(p0.wrapping_mul(x)));
    }
    x.wrapping_neg()
}

/// The field template for `name`, with modulus `p` and Montgomery's `R mod p`
/// (the limbs of one).
fn field(name: &str, p: BigInt<4>, r: BigInt<4>) -> String {
    // The carry bounds of field.cl need p < 2^254.
    assert!(p.0[3] >> 62 == 0, "{name}'s modulus must be below 2^254");
    format!(
        "#define {name}_MODULUS {}\n#define {name}_ONE {}\n#define {name}_INV 0x{:08x}u\n{}",
        limbs32(p),
        limbs32(r),
        neg_inv32(p.0[0] as u32),
        FIELD.replace("FIELD", name)
    )
}

fn curve(point: &str, field: &str) -> String {
    EC.replace("POINT", point).replace("FIELD", field)
}

fn msm_curve(point: &str, field: &str) -> String {
    MSM_CURVE.replace("POINT", point).replace("FIELD", field)
}

/// The whole kernel source for `dialect`.
pub fn source(dialect: Dialect) -> String {
    let mut s = String::new();
    match dialect {
        Dialect::OpenCl => {}
        Dialect::Cuda { portable } => {
            s.push_str("#define MEDROLLUP_CUDA\n");
            if portable {
                s.push_str("#define MEDROLLUP_PORTABLE\n");
            }
        }
    }
    s.push_str(PRELUDE);
    s.push_str(&field("Fq", Fq::MODULUS, Fq::ONE.0));
    s.push_str(&field("Fr", Fr::MODULUS, Fr::ONE.0));
    s.push_str(&format!("#define Fr_HALF {}\n", limbs32(Fr::MODULUS_MINUS_ONE_DIV_TWO)));
    s.push_str(FQ2);
    s.push_str(&curve("G1", "Fq"));
    s.push_str(&curve("G2", "Fq2"));
    s.push_str(&format!("#define SCAN_THREADS {SCAN_THREADS}\n"));
    s.push_str(SCAN);
    s.push_str(MSM);
    s.push_str(&msm_curve("G1", "Fq"));
    s.push_str(&msm_curve("G2", "Fq2"));
    s.push_str(&format!("#define NTT_MAX_LOG {NTT_MAX_LOG}\n"));
    s.push_str(NTT);
    s
}

/// Every kernel the source defines (for the compile checks).
pub const KERNELS: &[&str] = &[
    "scan_blocks",
    "scan_add",
    "fill_u32",
    "copy_u32",
    "msm_prepare",
    "msm_histogram",
    "msm_scatter",
    "msm_segments",
    "G1_precompute",
    "G1_bucket_acc",
    "G1_partial_acc",
    "G1_window_reduce",
    "G1_sum_groups",
    "G2_precompute",
    "G2_bucket_acc",
    "G2_partial_acc",
    "G2_window_reduce",
    "G2_sum_groups",
    "fr_powers",
    "ntt_pass",
    "fr_mul_table",
    "fr_mul_const",
    "qap_pointwise",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_constant_is_minus_p_inverse() {
        let p0 = Fq::MODULUS.0[0] as u32;
        assert_eq!(p0.wrapping_mul(neg_inv32(p0)), u32::MAX);
        let p0 = Fr::MODULUS.0[0] as u32;
        assert_eq!(p0.wrapping_mul(neg_inv32(p0)), u32::MAX);
    }

    #[test]
    fn every_template_name_is_instantiated() {
        for d in [Dialect::OpenCl, Dialect::Cuda { portable: false }] {
            let s = source(d);
            assert!(!s.contains("FIELD") && !s.contains("POINT"), "a template name is left");
            for k in KERNELS {
                assert!(s.contains(&format!(" {k}(")), "kernel {k} missing");
            }
        }
        assert!(source(Dialect::Cuda { portable: false }).starts_with("#define MEDROLLUP_CUDA\n"));
    }
}
