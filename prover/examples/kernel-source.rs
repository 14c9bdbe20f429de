//! Prints the kernel source as a compiler sees it, or compiles its CUDA
//! dialect with NVRTC and reports the time and size, or ptxas's resource use
//! per kernel:
//! `cargo run -p medrollup-prover --example kernel-source -- [opencl|cuda|cuda-portable] [--compile ARCH | --resources sm_XY]`.

use medrollup_prover::gpu::source::{Dialect, source};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dialect = match args.first().map(String::as_str) {
        None | Some("opencl") => Dialect::OpenCl,
        Some("cuda") => Dialect::Cuda { portable: false },
        Some("cuda-portable") => Dialect::Cuda { portable: true },
        Some(other) => {
            eprintln!("unknown dialect {other:?}: use opencl, cuda or cuda-portable");
            std::process::exit(2);
        }
    };
    match (args.get(1).map(String::as_str), args.get(2)) {
        (Some("--compile"), Some(arch)) => {
            let portable = dialect == Dialect::Cuda { portable: true };
            let t = Instant::now();
            // Into the kernel cache ($MEDROLLUP_KERNEL_CACHE or the default),
            // where a device of that architecture will find it.
            let cache = medrollup_prover::gpu::default_cache_dir();
            match medrollup_prover::gpu::compile_kernels(portable, arch, cache.as_deref()) {
                Ok(code) => println!("{arch}: {} bytes in {:.1} s", code.len(), t.elapsed().as_secs_f64()),
                Err(e) => {
                    eprintln!("{e}");
                    std::process::exit(1);
                }
            }
        }
        (Some("--resources"), Some(arch)) => {
            let portable = dialect == Dialect::Cuda { portable: true };
            match medrollup_prover::gpu::resource_report(portable, arch) {
                Ok(log) => print!("{log}"),
                Err(e) => {
                    eprintln!("{e}");
                    std::process::exit(1);
                }
            }
        }
        _ => print!("{}", source(dialect)),
    }
}
