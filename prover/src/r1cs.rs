//! A circuit's constraints, built once per proving key, and the fast path
//! from a circuit to the QAP's a, b and c.
//!
//! For every proof, ark-relations with matrices on builds each linear
//! combination as a vector, interns its coefficients in a hash map and
//! records every constraint: for a 2^20-constraint circuit that bookkeeping
//! is most of a second on one core, several times the rest of a GPU proof.
//! The constraints of a circuit shape are the same in every proof, so they
//! are built once ([`R1cs::build`]) and kept with the key. Every later proof
//! synthesises with matrices and linear-combination values off ([`assign`]):
//! the r1cs-std gadgets still compute every witness value (each variable
//! carries its value), and ark-relations keeps just the instance and witness
//! assignments (it does not even count the constraints).
//!
//! The kept form is ark-relations' own, before inlining: the symbolic linear
//! combinations the gadgets created, each over variables and earlier
//! combinations, and each constraint's a, b and c as one variable or
//! combination. Inlining (what ark-groth16 does for its matrices) would
//! multiply the terms: the batch circuit's Poseidon rounds have 3.2 M terms
//! as combinations and 11.9 M inlined. The combinations are grouped by depth
//! (a combination of depth d refers only to shallower ones), so
//! [`R1cs::evaluate`] computes them one depth at a time, each depth in
//! parallel, then reads every constraint's a, b and c. Then a∘b = c is
//! checked ([`first_unsatisfied`]), so a witness that does not satisfy the
//! key's constraints, whether the witness or the circuit is wrong, is refused
//! before any MSM.

use crate::groth16::ProveError;
use ark_bn254::Fr;
use ark_ff::{One, Zero};
use ark_relations::gr1cs::{
    ConstraintSynthesizer, ConstraintSystem, ConstraintSystemRef, OptimizationGoal, R1CS_PREDICATE_LABEL,
    SynthesisError, SynthesisMode, Variable,
};
use rayon::prelude::*;
use std::collections::HashMap;

/// A circuit's assignment: z = (1, public inputs, witness).
#[derive(Debug)]
pub(crate) struct Assignment {
    /// The full assignment, the constant one first.
    pub z: Vec<Fr>,
    /// Instance variables, the constant one included.
    pub num_instance: usize,
}

/// One term of a linear combination: an operand and the id of its
/// coefficient. An operand below the number of variables is a column of z
/// (0 is the constant one); above, it is a linear combination (its index plus
/// the number of variables).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Term {
    operand: u32,
    coeff: u32,
}

/// The coefficient ids of one and minus one (the most common coefficients:
/// these terms need no multiplication).
const ONE: u32 = 0;
const MINUS_ONE: u32 = 1;

/// Linear combinations evaluated per chunk of this many.
const CHUNK: usize = 1 << 10;

/// The R1CS of one circuit shape over z = (1, inputs, witness).
#[derive(Debug)]
pub struct R1cs {
    num_instance: usize,
    num_witness: usize,
    /// The symbolic linear combinations, depth by depth: combination k's
    /// terms are `terms[starts[k]..starts[k + 1]]`.
    starts: Vec<u32>,
    terms: Vec<Term>,
    /// Depth d's combinations are `depths[d]..depths[d + 1]`.
    depths: Vec<u32>,
    /// Each constraint's a, b and c, one operand each.
    constraints: [Vec<u32>; 3],
    /// Distinct coefficients; ids [`ONE`] and [`MINUS_ONE`] first.
    coeffs: Vec<Fr>,
}

fn new_cs(construct_matrices: bool) -> ConstraintSystemRef<Fr> {
    let cs = ConstraintSystem::<Fr>::new_ref();
    // ark-groth16's setup optimises for constraints; some gadgets choose
    // their constraints by the goal, so the prover must set the same one.
    cs.set_optimization_goal(OptimizationGoal::Constraints);
    cs.set_mode(SynthesisMode::Prove { construct_matrices, generate_lc_assignments: false });
    cs
}

/// Moves the assignment out of a synthesised constraint system.
fn take_assignment(cs: &ConstraintSystemRef<Fr>) -> Result<Assignment, ProveError> {
    let mut inner = cs.borrow_mut().ok_or(SynthesisError::MissingCS)?;
    let num_instance = inner.num_instance_variables();
    let witness = std::mem::take(&mut inner.assignments.witness_assignment);
    let instance = std::mem::take(&mut inner.assignments.instance_assignment);
    let mut z = Vec::with_capacity(instance.len() + witness.len());
    z.extend_from_slice(&instance);
    z.extend_from_slice(&witness);
    Ok(Assignment { z, num_instance })
}

/// Synthesises `circuit` for its assignment only (no linear combination is
/// built, no constraint recorded).
pub(crate) fn assign<C: ConstraintSynthesizer<Fr>>(circuit: C) -> Result<Assignment, ProveError> {
    let cs = new_cs(false);
    circuit.generate_constraints(cs.clone())?;
    take_assignment(&cs)
}

fn too_large(what: &str) -> ProveError {
    ProveError::KeyMismatch(format!("the circuit has more than 2^32 {what}"))
}

impl R1cs {
    /// Synthesises `circuit` with its constraints and returns its assignment
    /// and its R1CS.
    pub(crate) fn build<C: ConstraintSynthesizer<Fr>>(circuit: C) -> Result<(Assignment, Self), ProveError> {
        let cs = new_cs(true);
        circuit.generate_constraints(cs.clone())?;
        let r1cs = {
            let inner = cs.borrow().ok_or(SynthesisError::MissingCS)?;
            if inner.num_constraints()
                != inner.get_predicate_num_constraints(R1CS_PREDICATE_LABEL).unwrap_or(0)
            {
                return Err(ProveError::KeyMismatch(
                    "the circuit enforces constraints other than R1CS; Groth16 takes R1CS only".into(),
                ));
            }
            Self::from_cs(&inner)?
        };
        let assignment = take_assignment(&cs)?;
        Ok((assignment, r1cs))
    }

    /// The R1CS of `circuit` (any satisfied instance of its shape).
    pub fn from_circuit<C: ConstraintSynthesizer<Fr>>(circuit: C) -> Result<Self, ProveError> {
        Ok(Self::build(circuit)?.1)
    }

    /// Synthesises `circuit` for its assignment only and returns z and the
    /// constraints' values A·z, B·z and C·z, each padded with zeros to `len`;
    /// refuses a circuit of another shape or a witness that does not satisfy
    /// the constraints.
    pub fn values<C: ConstraintSynthesizer<Fr>>(
        &self,
        circuit: C,
        len: usize,
    ) -> Result<(Vec<Fr>, [Vec<Fr>; 3]), ProveError> {
        let assignment = assign(circuit)?;
        self.check_shape(&assignment)?;
        let abc = self.satisfied_values(&assignment.z, len.max(self.num_constraints()))?;
        Ok((assignment.z, abc))
    }

    /// [`Self::evaluate`], refusing a witness that does not satisfy a·b = c.
    pub(crate) fn satisfied_values(&self, z: &[Fr], len: usize) -> Result<[Vec<Fr>; 3], ProveError> {
        let m = self.num_constraints();
        let [a, b, c] = self.evaluate(z, len);
        if let Some(i) = first_unsatisfied(&a, &b, &c, m) {
            return Err(ProveError::Unsatisfied { constraint: i, of: m });
        }
        Ok([a, b, c])
    }

    fn from_cs(cs: &ConstraintSystem<Fr>) -> Result<Self, ProveError> {
        let num_instance = cs.num_instance_variables();
        let nv = cs.num_variables();
        let num_lcs = cs.lc_map.num_lcs();
        if nv + num_lcs > u32::MAX as usize {
            return Err(too_large("variables and linear combinations"));
        }
        let operand = |var: Variable| -> Result<u32, ProveError> {
            match (var.get_variable_index(num_instance), var.get_lc_index()) {
                (Some(column), _) => Ok(column as u32),
                (None, Some(k)) => Ok((nv + k) as u32),
                // The zero variable: ark-relations' combination 0 is the empty one.
                (None, None) => Ok(nv as u32),
            }
        };

        // The combinations in creation order, with their depths.
        let mut ids: HashMap<Fr, u32> = HashMap::from([(Fr::one(), ONE), (-Fr::one(), MINUS_ONE)]);
        let mut coeffs = vec![Fr::one(), -Fr::one()];
        let mut starts = Vec::with_capacity(num_lcs + 1);
        starts.push(0u32);
        let mut terms = Vec::new();
        let mut depth = Vec::<u32>::with_capacity(num_lcs);
        for k in 0..num_lcs {
            let mut d = 0;
            for (c, var) in cs.get_lc(Variable::symbolic_lc(k)).0 {
                if c.is_zero() || var.is_zero() {
                    continue;
                }
                if let Some(j) = var.get_lc_index() {
                    let dj = *depth.get(j).ok_or_else(|| {
                        ProveError::KeyMismatch(format!("linear combination {k} refers to a later one, {j}"))
                    })?;
                    d = d.max(dj + 1);
                }
                let next = coeffs.len() as u32;
                let coeff = *ids.entry(c).or_insert_with(|| {
                    coeffs.push(c);
                    next
                });
                terms.push(Term { operand: operand(var)?, coeff });
            }
            depth.push(d);
            starts.push(u32::try_from(terms.len()).map_err(|_| too_large("linear-combination terms"))?);
        }

        // Renumber depth by depth (a counting sort, stable within a depth).
        let max_depth = depth.iter().copied().max().map_or(0, |d| d as usize + 1);
        let mut depths = vec![0u32; max_depth + 1];
        for &d in &depth {
            depths[d as usize + 1] += 1;
        }
        for d in 0..max_depth {
            depths[d + 1] += depths[d];
        }
        let mut next = depths.clone();
        let new_index: Vec<u32> = depth
            .iter()
            .map(|&d| {
                let slot = next[d as usize];
                next[d as usize] += 1;
                slot
            })
            .collect();
        let mut order = vec![0u32; num_lcs];
        for (k, &slot) in new_index.iter().enumerate() {
            order[slot as usize] = k as u32;
        }
        let renumber = |op: u32| -> u32 {
            match (op as usize).checked_sub(nv) {
                Some(k) => (nv as u32) + new_index[k],
                None => op,
            }
        };
        let mut sorted_starts = Vec::with_capacity(num_lcs + 1);
        sorted_starts.push(0u32);
        let mut sorted_terms = Vec::with_capacity(terms.len());
        for &k in &order {
            let (s, e) = (starts[k as usize] as usize, starts[k as usize + 1] as usize);
            sorted_terms
                .extend(terms[s..e].iter().map(|t| Term { operand: renumber(t.operand), coeff: t.coeff }));
            sorted_starts.push(sorted_terms.len() as u32);
        }

        let Some(predicate) = cs.predicate_constraint_systems.get(R1CS_PREDICATE_LABEL) else {
            return Err(ProveError::KeyMismatch("the circuit has no R1CS predicate".into()));
        };
        let mut constraints: [Vec<u32>; 3] = Default::default();
        for (out, vars) in constraints.iter_mut().zip(predicate.get_constraints()) {
            *out = vars.iter().map(|&v| operand(v).map(renumber)).collect::<Result<_, _>>()?;
        }
        Ok(Self {
            num_instance,
            num_witness: cs.num_witness_variables(),
            starts: sorted_starts,
            terms: sorted_terms,
            depths,
            constraints,
            coeffs,
        })
    }

    /// Constraints.
    pub fn num_constraints(&self) -> usize {
        self.constraints[0].len()
    }

    /// Instance variables, the constant one included.
    pub fn num_instance(&self) -> usize {
        self.num_instance
    }

    /// Witness variables.
    pub fn num_witness(&self) -> usize {
        self.num_witness
    }

    /// Symbolic linear combinations.
    pub fn num_linear_combinations(&self) -> usize {
        self.starts.len() - 1
    }

    /// Their terms, all together.
    pub fn num_terms(&self) -> usize {
        self.terms.len()
    }

    /// The longest chain of combinations built on combinations (the number
    /// of sequential steps of [`Self::evaluate`]).
    pub fn depth(&self) -> usize {
        self.depths.len() - 1
    }

    /// Refuses an assignment of another shape.
    pub(crate) fn check_shape(&self, a: &Assignment) -> Result<(), ProveError> {
        let (ni, nw) = (a.num_instance, a.z.len() - a.num_instance);
        if (ni, nw) != (self.num_instance, self.num_witness) {
            return Err(ProveError::KeyMismatch(format!(
                "the circuit has {ni} instance and {nw} witness variables, the key's {} and {}",
                self.num_instance, self.num_witness
            )));
        }
        Ok(())
    }

    /// A·z, B·z and C·z, each padded with zeros to `len` (at least the number
    /// of constraints).
    pub(crate) fn evaluate(&self, z: &[Fr], len: usize) -> [Vec<Fr>; 3] {
        let nv = self.num_instance + self.num_witness;
        assert_eq!(z.len(), nv, "an assignment of the R1CS's shape");
        assert!(len >= self.num_constraints());
        let mut lcs = crate::memory::zeros(self.num_linear_combinations());
        for w in self.depths.windows(2) {
            let (s, e) = (w[0] as usize, w[1] as usize);
            let (done, todo) = lcs.split_at_mut(s);
            let done = &*done;
            todo[..e - s].par_chunks_mut(CHUNK).enumerate().for_each(|(c, chunk)| {
                for (i, o) in chunk.iter_mut().enumerate() {
                    let k = s + c * CHUNK + i;
                    *o = self.dot(k, z, done);
                }
            });
        }
        let lcs = &lcs;
        self.constraints.each_ref().map(|ops| {
            let mut out = crate::memory::zeros(len);
            out[..ops.len()].par_iter_mut().zip(ops.par_iter()).for_each(|(o, &op)| {
                *o = match (op as usize).checked_sub(nv) {
                    Some(k) => lcs[k],
                    None => z[op as usize],
                };
            });
            out
        })
    }

    /// Combination k's value, from z and the values of shallower combinations.
    #[inline]
    fn dot(&self, k: usize, z: &[Fr], lcs: &[Fr]) -> Fr {
        let nv = z.len();
        let mut acc = Fr::zero();
        for t in &self.terms[self.starts[k] as usize..self.starts[k + 1] as usize] {
            let op = t.operand as usize;
            // Operand 0 is the constant one.
            if op == 0 {
                acc += self.coeffs[t.coeff as usize];
                continue;
            }
            let v = if op < nv { z[op] } else { lcs[op - nv] };
            match t.coeff {
                ONE => acc += v,
                MINUS_ONE => acc -= v,
                id => acc += self.coeffs[id as usize] * v,
            }
        }
        acc
    }
}

/// The first constraint among the first `m` rows with a·b ≠ c, if any.
pub(crate) fn first_unsatisfied(a: &[Fr], b: &[Fr], c: &[Fr], m: usize) -> Option<usize> {
    (0..m).into_par_iter().find_first(|&i| a[i] * b[i] != c[i])
}

#[cfg(test)]
mod tests {
    use super::*;
    use ark_relations::gr1cs::{LinearCombination, Variable};
    use ark_relations::lc;

    /// x^3 + x + 5 = out with a few symbolic linear combinations and repeated
    /// and cancelling terms; `cheat` breaks the last constraint's witness.
    #[derive(Clone, Copy)]
    struct Cubic {
        x: u64,
        cheat: bool,
    }

    impl ConstraintSynthesizer<Fr> for Cubic {
        fn generate_constraints(self, cs: ConstraintSystemRef<Fr>) -> Result<(), SynthesisError> {
            let x = Fr::from(self.x);
            let out = cs.new_input_variable(|| Ok(x * x * x + x + Fr::from(5u64)))?;
            let xv = cs.new_witness_variable(|| Ok(x))?;
            let sq = cs.new_witness_variable(|| Ok(x * x))?;
            let cube =
                cs.new_witness_variable(|| Ok(x * x * x + if self.cheat { Fr::one() } else { Fr::zero() }))?;
            cs.enforce_r1cs_constraint(|| lc!() + xv, || lc!() + xv, || lc!() + sq)?;
            // sq + sq - sq: a repeated and a cancelling term.
            let s = cs.new_lc(|| lc!() + sq + sq - sq)?;
            cs.enforce_r1cs_constraint(|| lc!() + s, || lc!() + xv, || lc!() + cube)?;
            let sum = cs.new_lc(|| lc!() + cube + xv + (Fr::from(5u64), Variable::One))?;
            let twice = cs.new_lc(|| LinearCombination::from((Fr::from(2u64), sum)))?;
            cs.enforce_r1cs_constraint(|| lc!() + twice, || lc!() + Variable::One, || lc!() + out + out)
        }
    }

    #[test]
    fn the_matrices_give_the_constraints_values_and_the_fast_assignment_equals_the_full_one() {
        let (full, r1cs) = R1cs::build(Cubic { x: 3, cheat: false }).unwrap();
        assert_eq!((r1cs.num_instance(), r1cs.num_witness(), r1cs.num_constraints()), (2, 3, 3));
        assert_eq!(full.z, [1u64, 35, 3, 9, 27].map(Fr::from));
        let fast = assign(Cubic { x: 3, cheat: false }).unwrap();
        assert_eq!(fast.z, full.z);
        assert_eq!(fast.num_instance, 2);
        r1cs.check_shape(&fast).unwrap();

        let [a, b, c] = r1cs.evaluate(&fast.z, 4);
        assert_eq!(a, [3u64, 9, 70, 0].map(Fr::from));
        assert_eq!(b, [3u64, 3, 1, 0].map(Fr::from));
        assert_eq!(c, [9u64, 27, 70, 0].map(Fr::from));
        assert_eq!(first_unsatisfied(&a, &b, &c, 3), None);

        let bad = assign(Cubic { x: 3, cheat: true }).unwrap();
        let [a, b, c] = r1cs.evaluate(&bad.z, 3);
        assert_eq!(first_unsatisfied(&a, &b, &c, 3), Some(1));
    }

    #[test]
    fn the_batch_circuit_evaluates_as_arkworks_inlined_matrices_do() {
        use medrollup_circuits::{circuit::BatchCircuit, keys::CircuitShape, sample::batch};
        let w = batch(CircuitShape { batch_size: 1, levels: 3 });
        let (full, r1cs) = R1cs::build(BatchCircuit::new(w.clone())).unwrap();
        assert!(r1cs.depth() > 10, "Poseidon's partial rounds chain combinations: depth {}", r1cs.depth());
        assert_eq!(assign(BatchCircuit::new(w.clone())).unwrap().z, full.z);
        let m = r1cs.num_constraints();
        let ours = r1cs.evaluate(&full.z, m);
        assert_eq!(first_unsatisfied(&ours[0], &ours[1], &ours[2], m), None);

        // arkworks' way: inline every combination, then one matrix row per constraint.
        let cs = ConstraintSystem::<Fr>::new_ref();
        cs.set_optimization_goal(OptimizationGoal::Constraints);
        BatchCircuit::new(w).generate_constraints(cs.clone()).unwrap();
        cs.finalize();
        assert_eq!(cs.num_constraints(), m);
        let matrices = &cs.to_matrices().unwrap()[R1CS_PREDICATE_LABEL];
        for (values, matrix) in ours.iter().zip(matrices) {
            let theirs: Vec<Fr> =
                matrix.iter().map(|row| row.iter().map(|(c, i)| *c * full.z[*i]).sum()).collect();
            assert!(&theirs == values);
        }
        assert!(r1cs.num_terms() < matrices.iter().flatten().map(Vec::len).sum::<usize>());
    }

    #[test]
    fn an_assignment_of_another_shape_is_refused() {
        let (_, r1cs) = R1cs::build(Cubic { x: 2, cheat: false }).unwrap();
        let mut other = assign(Cubic { x: 2, cheat: false }).unwrap();
        other.z.push(Fr::one());
        let err = r1cs.check_shape(&other).unwrap_err();
        assert!(err.to_string().contains("2 instance and 4 witness variables, the key's 2 and 3"), "{err}");
    }
}
