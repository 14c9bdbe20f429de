//! The Groth16 batch circuit: B transaction slots over four trees of the same
//! height, with public inputs (old root, new root, transaction commitment,
//! timestamp). Every rule of [`crate::state::State::check`] is enforced here.
//!
//! Every slot has the same shape, whatever its transaction's kind: one update
//! of the signer's account, two reads, and one update of any tree (each a
//! Merkle path), an EdDSA-Poseidon verification, and the rules, each gated by
//! the kind's one-hot flag. The reads and the update choose their tree with
//! flags too, which is why all four trees share one height.

use crate::babyjub::{PointVar, to_bits_le_n};
use crate::batch::{BatchWitness, PublicInputs};
use crate::eddsa;
use crate::eddsa::Signature;
use crate::field::Fr;
use crate::merkle::PathVar;
use crate::poseidon;
use crate::state::{LEAF_WIDTH, Leaf, TxTrace, UnitTrace};
use crate::tx::{TX_ARGS, TxFields, TxKind};
use ark_ff::{Field, Zero};
use ark_r1cs_std::{
    GR1CSVar,
    alloc::AllocVar,
    boolean::Boolean,
    eq::EqGadget,
    fields::{FieldVar, fp::FpVar},
};
use ark_relations::gr1cs::{ConstraintSynthesizer, ConstraintSystemRef, SynthesisError};
use std::sync::{Arc, Mutex};

type V = FpVar<Fr>;

/// Constraint counts by component, filled while synthesising (for reports).
pub type Profile = Arc<Mutex<Vec<(&'static str, usize)>>>;

/// The batch circuit with its witness.
#[derive(Clone, Debug)]
pub struct BatchCircuit {
    /// The witness (its shape fixes the circuit: batch size and tree height).
    pub witness: BatchWitness,
    /// The public inputs to prove (those of the witness, unless a caller
    /// claims others, which then leave the system unsatisfied).
    pub public: PublicInputs,
    /// Where to record per-component constraint counts, if anywhere.
    pub profile: Option<Profile>,
    /// Raw field encodings and signatures to use instead of the typed
    /// transactions of some slots: what a cheating prover's own witness
    /// generator could supply (values no typed transaction can express). Empty
    /// outside soundness tests.
    #[doc(hidden)]
    pub raw_slots: Vec<(usize, TxFields, Signature)>,
}

impl BatchCircuit {
    /// A circuit for `witness`.
    pub fn new(witness: BatchWitness) -> Self {
        Self { public: witness.public_inputs(), witness, profile: None, raw_slots: Vec::new() }
    }
}

struct Meter {
    cs: ConstraintSystemRef<Fr>,
    profile: Option<Profile>,
    mark: usize,
}

impl Meter {
    fn lap(&mut self, name: &'static str) {
        let n = self.cs.num_constraints();
        if let Some(p) = &self.profile {
            let mut p = p.lock().expect("profile lock");
            match p.iter_mut().find(|(k, _)| *k == name) {
                Some((_, c)) => *c += n - self.mark,
                None => p.push((name, n - self.mark)),
            }
        }
        self.mark = n;
    }
}

fn witness(cs: &ConstraintSystemRef<Fr>, v: Fr) -> Result<V, SynthesisError> {
    V::new_witness(cs.clone(), || Ok(v))
}

fn konst(x: u64) -> V {
    V::Constant(Fr::from(x))
}

/// Enforces `a · b = 0`: "if a then b = 0" for a boolean `a`.
fn zero_product(a: &V, b: &V) -> Result<(), SynthesisError> {
    a.mul_equals(b, &V::zero())
}

/// Enforces `a ≠ 0` when `gate` is 1 (and nothing when it is 0): `a · inv = gate`.
fn nonzero_if(cs: &ConstraintSystemRef<Fr>, gate: &V, a: &V) -> Result<(), SynthesisError> {
    let inv = V::new_witness(cs.clone(), || {
        Ok(if gate.value()?.is_zero() { Fr::zero() } else { a.value()?.inverse().unwrap_or_default() })
    })?;
    a.mul_equals(&inv, gate)
}

/// Enforces `0 ≤ x < 2^64`.
fn range64(x: &V) -> Result<(), SynthesisError> {
    to_bits_le_n(x, 64).map(|_| ())
}

/// A leaf's fields and whether it is empty.
struct LeafVar {
    f: Vec<V>,
    empty: V,
}

impl LeafVar {
    fn alloc(cs: &ConstraintSystemRef<Fr>, leaf: &Leaf) -> Result<Self, SynthesisError> {
        let f = leaf.iter().map(|x| witness(cs, *x)).collect::<Result<Vec<_>, _>>()?;
        let empty = V::from(f[0].is_zero()?);
        // An empty leaf is all zeros, so reading any field of it gives 0.
        for fi in &f[1..] {
            zero_product(&empty, fi)?;
        }
        Ok(Self { f, empty })
    }

    fn hash(&self) -> Result<V, SynthesisError> {
        Ok((konst(1) - &self.empty) * poseidon::hash_var(&self.f)?)
    }
}

/// A tree operation's witness: path and old leaf.
struct Unit {
    path: PathVar,
    old: LeafVar,
}

impl Unit {
    fn alloc(cs: &ConstraintSystemRef<Fr>, t: &UnitTrace) -> Result<Self, SynthesisError> {
        Ok(Self { path: PathVar::alloc(cs.clone(), t.index, &t.path)?, old: LeafVar::alloc(cs, &t.old)? })
    }
}

/// The running state between slots.
struct Roots {
    trees: [V; 4],
    audit_count: V,
}

/// Chooses the tree root selected by one-hot flags (`sel[i]` for tree i).
fn selected_root(roots: &Roots, sel: &[V; 4]) -> V {
    sel.iter().zip(&roots.trees).fold(V::zero(), |acc, (s, r)| acc + s * r)
}

impl ConstraintSynthesizer<Fr> for BatchCircuit {
    fn generate_constraints(self, cs: ConstraintSystemRef<Fr>) -> Result<(), SynthesisError> {
        let w = &self.witness;
        let public = self.public;
        let mut meter = Meter { cs: cs.clone(), profile: self.profile.clone(), mark: cs.num_constraints() };

        let old_root = V::new_input(cs.clone(), || Ok(public.old_root))?;
        let new_root = V::new_input(cs.clone(), || Ok(public.new_root))?;
        let commitment = V::new_input(cs.clone(), || Ok(public.tx_commitment))?;
        let timestamp = V::new_input(cs.clone(), || Ok(Fr::from(public.timestamp)))?;
        range64(&timestamp)?;

        let instance = witness(&cs, w.instance)?;
        let mut roots = Roots {
            trees: [
                witness(&cs, w.old_roots[0])?,
                witness(&cs, w.old_roots[1])?,
                witness(&cs, w.old_roots[2])?,
                witness(&cs, w.old_roots[3])?,
            ],
            audit_count: witness(&cs, Fr::from(w.old_audit_count))?,
        };
        let state_root = |r: &Roots| {
            let mut inputs = vec![instance.clone()];
            inputs.extend(r.trees.iter().cloned());
            inputs.push(r.audit_count.clone());
            poseidon::hash_var(&inputs)
        };
        state_root(&roots)?.enforce_equal(&old_root)?;
        meter.lap("batch: roots, timestamp");

        let mut chain = V::zero();
        for (i, trace) in w.txs.iter().enumerate() {
            let (fields, sig) = match self.raw_slots.iter().find(|(j, _, _)| *j == i) {
                Some((_, f, s)) => (*f, *s),
                None => (trace.tx.tx.fields(), trace.tx.signature),
            };
            slot(&cs, &mut meter, &fields, &sig, trace, &instance, &timestamp, &mut roots, &mut chain)?;
        }
        chain.enforce_equal(&commitment)?;
        state_root(&roots)?.enforce_equal(&new_root)?;
        meter.lap("batch: roots, timestamp");
        Ok(())
    }
}

/// One transaction slot.
#[allow(clippy::too_many_arguments)]
fn slot(
    cs: &ConstraintSystemRef<Fr>,
    meter: &mut Meter,
    fields: &TxFields,
    sig: &Signature,
    trace: &TxTrace,
    instance: &V,
    ts: &V,
    roots: &mut Roots,
    chain: &mut V,
) -> Result<(), SynthesisError> {
    let kind_code = fields.kind as usize;

    // Kind: one-hot flags.
    let flags = TxKind::ALL
        .iter()
        .map(|k| Boolean::new_witness(cs.clone(), || Ok(*k as usize == kind_code)).map(V::from))
        .collect::<Result<Vec<_>, _>>()?;
    flags.iter().fold(V::zero(), |a, b| a + b).enforce_equal(&konst(1))?;
    let is = |k: TxKind| flags[k as usize].clone();
    let kind = flags.iter().enumerate().fold(V::zero(), |a, (i, b)| a + b * Fr::from(i as u64));
    let (noop, reg_patient, reg_doctor) =
        (is(TxKind::Noop), is(TxKind::RegisterPatient), is(TxKind::RegisterDoctor));
    let (add, update, delete) = (is(TxKind::AddRecord), is(TxKind::UpdateRecord), is(TxKind::DeleteRecord));
    let (grant, revoke) = (is(TxKind::Grant), is(TxKind::Revoke));
    let (log, emergency) = (is(TxKind::LogAccess), is(TxKind::EmergencyAccess));

    let signer = witness(cs, fields.signer)?;
    let nonce = witness(cs, fields.nonce)?;
    let a = fields.args.iter().map(|x| witness(cs, *x)).collect::<Result<Vec<_>, _>>()?;

    // Message and commitment.
    let mut msg_in = vec![instance.clone(), kind, signer.clone(), nonce.clone()];
    msg_in.extend(a.iter().cloned());
    let msg = poseidon::hash_var(&msg_in)?;
    *chain = poseidon::hash_var(&[chain.clone(), msg.clone()])?;
    meter.lap("message and commitment hashes");

    // Canonical encoding: unused arguments are 0 (layout in `Tx::fields`).
    let unused: [V; TX_ARGS] = [
        &noop + &reg_patient + &revoke,
        &noop + &delete + &revoke + &log + &emergency,
        &noop + &delete + &emergency,
        &noop + &delete + &revoke + &log,
        &noop + &reg_patient + &reg_doctor + &delete + &revoke + &log + &emergency,
        &noop + &reg_patient + &reg_doctor + &delete + &revoke + &log + &emergency,
        konst(1),
    ];
    for (gate, arg) in unused.iter().zip(&a) {
        zero_product(gate, arg)?;
    }
    zero_product(&noop, &signer)?;
    zero_product(&noop, &nonce)?;

    // ---- The signer's account: nonce bump, or creation by a patient. ----
    let sa = Unit::alloc(cs, &trace.signer)?;
    let signed = konst(1) - &noop;
    sa.path.index()?.enforce_equal(&signer)?;
    // Registration needs an empty leaf; every other signed kind an existing account.
    sa.old.empty.enforce_equal(&(&reg_patient + &noop))?;
    nonzero_if(cs, &reg_patient, &signer)?; // account 0 is reserved
    let o = &sa.old.f;
    nonce.enforce_equal(&o[4])?;
    let sa_new = [
        &o[0] + &reg_patient,
        &o[1] + &reg_patient * &a[1],
        &o[2] + &reg_patient * &a[2],
        &o[3] + &reg_patient * &a[3],
        &o[4] + Fr::ONE,
        o[5].clone(),
        o[6].clone(),
    ];
    range64(&sa_new[4])?;
    // Roles: hospital registers doctors; doctors add records and break the glass; patients grant.
    zero_product(&reg_doctor, &(&o[0] - konst(3)))?;
    zero_product(&(&add + &emergency), &(&o[0] - konst(2)))?;
    zero_product(&grant, &(&o[0] - konst(1)))?;
    let (ro, rn) = sa.path.update(&sa.old.hash()?, &poseidon::hash_var(&sa_new)?)?;
    zero_product(&signed, &(&ro - &roots.trees[0]))?;
    roots.trees[0] = &roots.trees[0] + &signed * (&rn - &ro);
    meter.lap("signer account update (Merkle)");

    // ---- Signature under the account's key (the identity for padding). ----
    let key = PointVar::new(sa_new[1].clone(), &sa_new[2] + &noop);
    key.enforce_on_curve()?;
    let r8 = PointVar::new(witness(cs, sig.r8x)?, witness(cs, sig.r8y)?);
    let s = witness(cs, sig.s_as_fr())?;
    let key8 = eddsa::verify_var(&key, &msg, &r8, &s)?;
    nonzero_if(cs, &signed, &key8.x)?; // no small-order keys
    meter.lap("EdDSA-Poseidon signature");

    // A registered doctor's key must be usable too; its id is not 0.
    let dkey = PointVar::new(&reg_doctor * &a[1], &reg_doctor * (&a[2] - konst(1)) + konst(1));
    dkey.enforce_on_curve()?;
    let dkey8 = dkey.double()?.double()?.double()?;
    nonzero_if(cs, &reg_doctor, &dkey8.x)?;
    nonzero_if(cs, &reg_doctor, &a[0])?;

    // Argument ranges: CID digest limbs are 128-bit; grant fields.
    let writes = &add + &update;
    to_bits_le_n(&(&writes * &a[3]), 128)?;
    to_bits_le_n(&(&writes * &a[4]), 128)?;
    let scope_gate = &grant * (&a[3] - konst(1));
    zero_product(&scope_gate, &(&a[3] - konst(2)))?;
    let all_gate = &grant * &a[4];
    zero_product(&all_gate, &(&a[4] - konst(1)))?;
    zero_product(&all_gate, &a[0])?;
    range64(&(&grant * &a[5]))?; // expiry is a u64 ...
    range64(&(&grant * (&a[5] - ts - konst(1))))?; // ... in the future

    // ---- Witnesses of the reads and the update. ----
    let r1 = Unit::alloc(cs, &trace.read1)?;
    let r2 = Unit::alloc(cs, &trace.read2)?;
    let up = Unit::alloc(cs, &trace.update)?;
    let rec = &up.old.f; // the record, for update/delete
    let owner_signs = V::from(rec[0].is_eq(&signer)?);
    let via_consent = &update * (konst(1) - &owner_signs);
    zero_product(&(&update * &owner_signs), &a[2])?; // an owner's update names no consent
    meter.lap("rules");

    // ---- Read 1: grantee account (grant) or consent (add, update by author, log). ----
    let consent_mode = &add + &log + &via_consent;
    let r1_sel = [grant.clone(), V::zero(), consent_mode.clone(), V::zero()];
    let r1_on = &grant + &consent_mode;
    r1.path.index()?.enforce_equal(&(&grant * &a[1] + &consent_mode * &a[2]))?;
    let r1_root = r1.path.root(&r1.old.hash()?)?;
    zero_product(&r1_on, &(&r1_root - selected_root(roots, &r1_sel)))?;
    meter.lap("read 1 (Merkle)");
    let c = &r1.old.f;
    let grantee_gate = &grant * (&c[0] - konst(2));
    zero_product(&grantee_gate, &(&c[0] - konst(3)))?; // grantee is a doctor or hospital
    // Invariants of every reachable state, enforced anyway: the consent exists
    // and its all-records flag is a bit.
    zero_product(&consent_mode, &r1.old.empty)?;
    zero_product(&(&consent_mode * &c[3]), &(&c[3] - konst(1)))?;
    zero_product(&consent_mode, &(&c[1] - &signer))?; // granted to the signer
    zero_product(&consent_mode, &c[6])?; // not revoked
    zero_product(&add, &(&c[0] - &a[1]))?; // by the record's patient ...
    zero_product(&via_consent, &(&c[0] - &rec[0]))?;
    zero_product(&log, &(&c[0] - &r2.old.f[0]))?;
    zero_product(&(&add + &via_consent), &(&c[2] - konst(2)))?; // write scope
    let covers_gate = &consent_mode * (konst(1) - &c[3]);
    zero_product(&covers_gate, &(&c[4] - &a[0]))?; // all records, or this one
    range64(&(&consent_mode * (&c[5] - ts - konst(1))))?; // not expired
    meter.lap("rules");

    // ---- Read 2: the record (grant of one record, log access, emergency access). ----
    let r2_on = &log + &emergency + &grant * (konst(1) - &a[4]);
    r2.path.index()?.enforce_equal(&(&r2_on * &a[0]))?;
    let r2_root = r2.path.root(&r2.old.hash()?)?;
    zero_product(&r2_on, &(&r2_root - &roots.trees[1]))?;
    meter.lap("read 2 (Merkle)");
    let r = &r2.old.f;
    zero_product(&r2_on, &r2.old.empty)?; // exists
    zero_product(&r2_on, &r[6])?; // not deleted
    zero_product(&(&grant * (konst(1) - &a[4])), &(&r[0] - &signer))?; // the granter owns it

    // ---- The update. ----
    let keep = &delete + &revoke;
    let to_audit = &log + &emergency;
    let up_sel = [reg_doctor.clone(), &add + &update + &delete, &grant + &revoke, to_audit.clone()];
    let expected_index = (&reg_doctor + &add + &update + &delete) * &a[0]
        + (&grant + &revoke) * &a[2]
        + &to_audit * &roots.audit_count;
    up.path.index()?.enforce_equal(&expected_index)?;
    let o = &up.old.f;
    zero_product(&(&reg_doctor + &add + &to_audit), &(konst(1) - &up.old.empty))?; // fresh leaf
    zero_product(&(&update + &keep), &up.old.empty)?; // existing leaf ...
    zero_product(&(&update + &keep), &o[6])?; // ... not deleted / revoked
    zero_product(&keep, &(&o[0] - &signer))?; // owner deletes / revokes
    zero_product(&(&grant * &o[0]), &(&o[0] - &signer))?; // a grant overwrites only the patient's own consent
    zero_product(&via_consent, &(&o[1] - &signer))?; // otherwise the author updates
    zero_product(&update, &(&a[1] - &o[5]))?; // replaces the version it names
    let version = &update * (&o[5] + konst(1));
    range64(&version)?;
    let new = [
        &reg_doctor * Fr::from(2u64)
            + &add * &a[1]
            + (&update + &keep) * &o[0]
            + &grant * &signer
            + &log
            + &emergency * Fr::from(2u64),
        &reg_doctor * &a[1]
            + &add * &signer
            + (&update + &keep) * &o[1]
            + &grant * &a[1]
            + &to_audit * &signer,
        &reg_doctor * &a[2] + &writes * &a[3] + &keep * &o[2] + &grant * &a[3] + &to_audit * &r[0],
        &reg_doctor * &a[3] + &writes * &a[4] + &keep * &o[3] + &grant * &a[4] + &to_audit * &a[0],
        &writes * &a[5] + &keep * &o[4] + &grant * &a[0] + &log * &a[2],
        add.clone() + &version + &keep * &o[5] + &grant * &a[5] + &emergency * &a[3],
        keep.clone() + &to_audit * ts,
    ];
    debug_assert_eq!(new.len(), LEAF_WIDTH);
    let (uo, un) = up.path.update(&up.old.hash()?, &poseidon::hash_var(&new)?)?;
    let up_on = up_sel.iter().fold(V::zero(), |acc, s| acc + s);
    zero_product(&up_on, &(&uo - selected_root(roots, &up_sel)))?;
    for (root, sel) in roots.trees.iter_mut().zip(&up_sel) {
        *root = &*root + sel * (&un - &uo);
    }
    roots.audit_count = &roots.audit_count + &to_audit;
    meter.lap("update (Merkle)");
    Ok(())
}

#[cfg(test)]
mod tests;
