//! The medrollup prover engine: Groth16 on BN254 over two backend traits,
//! multi-scalar multiplication ([`MsmBackend`], G1 and G2) and the number-
//! theoretic transform ([`NttBackend`]), so that the same proof runs on a CPU
//! or on GPUs.
//!
//! - [`backend`]: the traits, bases that stay loaded between proofs, and the
//!   validating front end (checks once, then calls the unchecked fast path).
//! - [`cpu`]: the CPU backend, the reference for every other backend.
//! - [`gpu`]: the GPU backend: our BN254 MSM and NTT kernels for CUDA and
//!   OpenCL from one source, sharded across devices, the CPU as fallback.
//! - [`dual`]: a backend that runs two backends side by side and compares
//!   every result (a device against the CPU, inside the full prover).
//! - [`groth16`]: the prover: witness → QAP quotient through the NTT backend →
//!   the four G1 MSMs and the G2 MSM through the MSM backend, with per-stage
//!   times. With the same randomness its proofs equal ark-groth16's bit for bit.
//! - [`conformance`]: one test suite per trait that any backend instantiates
//!   with one line, comparing it with arkworks.
//! - [`worker`]: the hospital worker that proves the farm's jobs
//!   (`medrollup-prover worker`).

pub mod backend;
pub mod conformance;
pub mod cpu;
pub mod dual;
pub mod gpu;
pub mod groth16;
pub mod memory;
pub mod peak_alloc;
pub mod r1cs;
pub mod worker;

pub use backend::{BackendError, MsmBackend, NttBackend, NttDirection};
pub use cpu::CpuBackend;
pub use gpu::{GpuBackend, GpuConfig};
