//! The conformance suites, instantiated for the CPU backend.

medrollup_prover::msm_conformance!(cpu_msm, medrollup_prover::CpuBackend::new());
medrollup_prover::ntt_conformance!(cpu_ntt, medrollup_prover::CpuBackend::new());
// The portable path (arkworks' field arithmetic), which `new()` replaces on
// CPUs with AVX-512 IFMA: both stay tested on such machines.
medrollup_prover::msm_conformance!(cpu_portable_msm, medrollup_prover::CpuBackend::portable());
medrollup_prover::ntt_conformance!(cpu_portable_ntt, medrollup_prover::CpuBackend::portable());
