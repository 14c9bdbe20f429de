//! The CPU side of a proof of the batch circuit (B = 16), timed: the
//! assignment-only synthesis alone, then the witness with the constraints'
//! values a, b, c (`R1cs::values`). A harness for `perf` and for before/after
//! comparisons.
//!
//! `cargo run --release -p medrollup-prover --example synth-profile`;
//! `ASSIGN=1` times the assignment only (30 times).

use ark_relations::gr1cs::{ConstraintSynthesizer, ConstraintSystem, OptimizationGoal, SynthesisMode};
use medrollup_circuits::circuit::BatchCircuit;
use medrollup_circuits::keys::CircuitShape;
use medrollup_circuits::sample::batch;
use medrollup_prover::r1cs::R1cs;
use std::time::Instant;

fn main() {
    let w = batch(CircuitShape { batch_size: 16, levels: medrollup_circuits::cli::DEFAULT_LEVELS });
    let r1cs = R1cs::from_circuit(BatchCircuit::new(w.clone())).expect("constraints");
    let n = (r1cs.num_constraints() + r1cs.num_instance()).next_power_of_two();
    let assign_only = std::env::var_os("ASSIGN").is_some();
    for _ in 0..if assign_only { 30 } else { 6 } {
        let t = Instant::now();
        let cs = ConstraintSystem::new_ref();
        cs.set_optimization_goal(OptimizationGoal::Constraints);
        cs.set_mode(SynthesisMode::Prove { construct_matrices: false, generate_lc_assignments: false });
        BatchCircuit::new(w.clone()).generate_constraints(cs).expect("synthesis");
        let assign = t.elapsed().as_secs_f64();
        if assign_only {
            println!("assignment {assign:.4} s");
            continue;
        }
        let t = Instant::now();
        let _ = std::hint::black_box(r1cs.values(BatchCircuit::new(w.clone()), n).expect("satisfied"));
        println!("assignment {assign:.3} s, witness and a, b, c {:.3} s", t.elapsed().as_secs_f64());
    }
}
