//! The conformance suites, instantiated for the CPU backend.

medrollup_prover::msm_conformance!(cpu_msm, medrollup_prover::CpuBackend::new());
medrollup_prover::ntt_conformance!(cpu_ntt, medrollup_prover::CpuBackend::new());
