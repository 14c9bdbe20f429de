//! Circuit tests: honest batches satisfy the constraint system; for every
//! forbidden transition, the witness a cheating sequencer would build does not.
//! Each negative case has an honest twin that does satisfy it, so the failure
//! comes from the rule and not from a broken witness.

use super::*;
use crate::batch::{BatchBuilder, BatchWitness};
use crate::eddsa::PrivateKey;
use crate::sample::{self, NOW, Party};
use crate::state::{State, TreeId, TxError};
use crate::tx::{ConsentTarget, Scope, SignedTx, Tx, TxBody};
use ark_relations::gr1cs::ConstraintSystem;

const LEVELS: usize = 5;

fn satisfied_with(c: BatchCircuit) -> bool {
    let cs = ConstraintSystem::<Fr>::new_ref();
    c.generate_constraints(cs.clone()).unwrap();
    cs.is_satisfied().unwrap()
}

fn satisfied(w: &BatchWitness) -> bool {
    satisfied_with(BatchCircuit::new(w.clone()))
}

fn constraints(w: &BatchWitness) -> usize {
    let cs = ConstraintSystem::<Fr>::new_ref();
    BatchCircuit::new(w.clone()).generate_constraints(cs.clone()).unwrap();
    cs.num_constraints()
}

/// The sample state after its first `n` transactions.
fn state_after(n: usize) -> State {
    let mut st = State::genesis(&sample::genesis(LEVELS)).unwrap();
    for tx in &sample::transactions()[..n] {
        st.apply(tx, NOW).unwrap();
    }
    st
}

fn one_tx_batch(st: &State, tx: &SignedTx, honest: bool, now: u64) -> BatchWitness {
    let mut st = st.clone();
    let mut b = BatchBuilder::new(&mut st, 2, now);
    if honest {
        b.push(tx).unwrap()
    } else {
        b.push_unchecked(tx).unwrap()
    }
    b.finish()
}

/// Asserts that `tx` is refused natively with an error matching `expected`, and
/// that the batch a cheating sequencer builds with it anyway is unsatisfiable.
fn assert_cheat_refused(st: &State, tx: &SignedTx, now: u64, expected: impl Fn(&TxError) -> bool) {
    let err = st.check(tx, now).expect_err("the native rules refuse it");
    assert!(expected(&err), "unexpected native error: {err}");
    let w = one_tx_batch(st, tx, false, now);
    assert!(!satisfied(&w), "the circuit must refuse what the rules refuse ({err})");
}

/// Signs `body` as `who` with an explicit nonce and instance.
fn signed(who: &Party, nonce: u64, body: TxBody, instance: u64) -> SignedTx {
    Tx { signer: who.id, nonce, body }.sign(&who.key, Fr::from(instance))
}

fn nonce_of(st: &State, id: u64) -> u64 {
    st.account(id).map_or(0, |a| a.nonce)
}

#[test]
fn every_sample_batch_is_satisfied_and_slots_cost_the_same() {
    let txs = sample::transactions();
    let mut st = State::genesis(&sample::genesis(LEVELS)).unwrap();
    let mut sizes = Vec::new();
    for chunk in txs.chunks(4) {
        let before = st.root();
        let mut b = BatchBuilder::new(&mut st, 4, NOW);
        for tx in chunk {
            b.push(tx).unwrap();
        }
        let w = b.finish();
        let public = w.public_inputs();
        assert_eq!(public.old_root, before);
        assert_eq!(public.new_root, st.root());
        assert!(satisfied(&w));
        sizes.push(constraints(&w));
    }
    assert!(sizes.windows(2).all(|p| p[0] == p[1]), "same shape for every batch: {sizes:?}");
    let w = BatchBuilder::new(&mut st, 4, NOW).finish();
    assert!(satisfied(&w), "a padding-only batch");
    assert_eq!(constraints(&w), sizes[0]);
}

#[test]
fn bad_signature() {
    let st = state_after(4);
    let ps = sample::parties();
    let body = TxBody::AddRecord {
        record: 600,
        patient: 10,
        consent: 100,
        cid_digest: sample::cid("x"),
        meta_hash: Fr::from(1u64),
    };
    let mut tx = signed(&ps.doctors[0], nonce_of(&st, 20), body, sample::INSTANCE);
    assert!(satisfied(&one_tx_batch(&st, &tx, true, NOW)), "honest twin");
    tx.signature = PrivateKey::from_bytes([9; 32]).sign(tx.tx.message(Fr::from(sample::INSTANCE)));
    assert_cheat_refused(&st, &tx, NOW, |e| matches!(e, TxError::BadSignature(20)));
}

#[test]
fn replayed_nonce() {
    let st = state_after(5);
    let replay = sample::transactions()[4].clone(); // the add-record, already applied
    assert_cheat_refused(&st, &replay, NOW, |e| matches!(e, TxError::BadNonce { .. }));
}

#[test]
fn wrong_instance_id() {
    let st = state_after(5);
    let ps = sample::parties();
    let body = TxBody::EmergencyAccess { record: 500, reason_hash: Fr::from(1u64) };
    let d1 = &ps.doctors[0];
    let good = signed(d1, nonce_of(&st, 20), body.clone(), sample::INSTANCE);
    assert!(satisfied(&one_tx_batch(&st, &good, true, NOW)), "honest twin");
    let other = signed(d1, nonce_of(&st, 20), body, sample::INSTANCE + 1);
    assert_cheat_refused(&st, &other, NOW, |e| matches!(e, TxError::BadSignature(20)));
}

#[test]
fn wrong_role() {
    // A patient tries to register a doctor (only hospitals may).
    let st = state_after(1);
    let ps = sample::parties();
    let d = &ps.doctors[2];
    let body = TxBody::RegisterDoctor { doctor: d.id, pubkey: d.key.public(), rsa_key_hash: Fr::from(5u64) };
    let good = signed(&ps.hospitals[0], nonce_of(&st, 1), body.clone(), sample::INSTANCE);
    assert!(satisfied(&one_tx_batch(&st, &good, true, NOW)), "honest twin");
    let bad = signed(&ps.patients[0], nonce_of(&st, 10), body, sample::INSTANCE);
    assert_cheat_refused(&st, &bad, NOW, |e| matches!(e, TxError::WrongRole { .. }));
}

#[test]
fn grant_by_a_non_owner() {
    // Patient 2 grants access to patient 1's record 500.
    let st = state_after(6);
    let ps = sample::parties();
    let body = |consent, target| TxBody::Grant {
        consent,
        grantee: 21,
        scope: Scope::Read,
        target,
        expiry: NOW + 100,
    };
    let good =
        signed(&ps.patients[0], nonce_of(&st, 10), body(150, ConsentTarget::Record(500)), sample::INSTANCE);
    assert!(satisfied(&one_tx_batch(&st, &good, true, NOW)), "honest twin");
    let bad =
        signed(&ps.patients[1], nonce_of(&st, 11), body(151, ConsentTarget::Record(500)), sample::INSTANCE);
    assert_cheat_refused(&st, &bad, NOW, |e| matches!(e, TxError::NotOwner { what: "record", .. }));
    // ... nor may patient 2 overwrite patient 1's consent 100.
    let bad =
        signed(&ps.patients[1], nonce_of(&st, 11), body(100, ConsentTarget::AllRecords), sample::INSTANCE);
    assert_cheat_refused(&st, &bad, NOW, |e| matches!(e, TxError::NotOwner { what: "consent", .. }));
}

#[test]
fn read_without_consent() {
    // Doctor 1 holds consent 100 from patient 1; doctor 2 tries to use it.
    let st = state_after(6);
    let ps = sample::parties();
    let log = |consent| TxBody::LogAccess { record: 500, consent };
    let good = signed(&ps.doctors[0], nonce_of(&st, 20), log(100), sample::INSTANCE);
    assert!(satisfied(&one_tx_batch(&st, &good, true, NOW)), "honest twin");
    let bad = signed(&ps.doctors[1], nonce_of(&st, 21), log(100), sample::INSTANCE);
    assert_cheat_refused(&st, &bad, NOW, |e| matches!(e, TxError::ConsentMismatch { .. }));
    let none = signed(&ps.doctors[1], nonce_of(&st, 21), log(333), sample::INSTANCE);
    assert_cheat_refused(&st, &none, NOW, |e| matches!(e, TxError::UnknownConsent(333)));
}

#[test]
fn expired_consent() {
    // Consent 101 (doctor 2, record 500) lasts one hour from NOW.
    let st = state_after(7);
    let ps = sample::parties();
    let tx = signed(
        &ps.doctors[1],
        nonce_of(&st, 21),
        TxBody::LogAccess { record: 500, consent: 101 },
        sample::INSTANCE,
    );
    assert!(satisfied(&one_tx_batch(&st, &tx, true, NOW + 3_599)), "honest twin, one second before expiry");
    assert_cheat_refused(&st, &tx, NOW + 3_600, |e| matches!(e, TxError::ConsentExpired { .. }));
}

#[test]
fn revoked_consent() {
    let ps = sample::parties();
    let before = state_after(11);
    let after = state_after(12); // the 12th transaction revokes consent 101
    let tx = signed(
        &ps.doctors[1],
        nonce_of(&after, 21),
        TxBody::LogAccess { record: 500, consent: 101 },
        sample::INSTANCE,
    );
    assert!(satisfied(&one_tx_batch(&before, &tx, true, NOW)), "honest twin before the revocation");
    assert_cheat_refused(&after, &tx, NOW, |e| matches!(e, TxError::ConsentRevoked(101)));
}

#[test]
fn update_by_a_stranger() {
    let st = state_after(9);
    let ps = sample::parties();
    let body = |consent, label| TxBody::UpdateRecord {
        record: 500,
        version: 2,
        consent,
        cid_digest: sample::cid(label),
        meta_hash: Fr::from(6u64),
    };
    let good = signed(&ps.doctors[0], nonce_of(&st, 20), body(100, "fine"), sample::INSTANCE);
    assert!(satisfied(&one_tx_batch(&st, &good, true, NOW)), "honest twin by the author");
    // Doctor 2 holds read consent 101 but is not the author.
    let bad = signed(&ps.doctors[1], nonce_of(&st, 21), body(101, "evil"), sample::INSTANCE);
    assert_cheat_refused(&st, &bad, NOW, |e| matches!(e, TxError::NotAuthorized { .. }));
}

#[test]
fn update_of_a_stale_version() {
    // After step 9 record 500 is at version 2 (added, then updated once).
    let st = state_after(9);
    let ps = sample::parties();
    let body = |version| TxBody::UpdateRecord {
        record: 500,
        version,
        consent: 0,
        cid_digest: sample::cid("next"),
        meta_hash: Fr::from(7u64),
    };
    let owner = &ps.patients[0];
    let good = signed(owner, nonce_of(&st, owner.id), body(2), sample::INSTANCE);
    assert!(satisfied(&one_tx_batch(&st, &good, true, NOW)), "honest twin naming the version there");
    for named in [1, 3] {
        let stale = signed(owner, nonce_of(&st, owner.id), body(named), sample::INSTANCE);
        assert_cheat_refused(
            &st,
            &stale,
            NOW,
            |e| matches!(e, TxError::StaleVersion { record: 500, named: n, current: 2 } if *n == named),
        );
    }
}

#[test]
fn tampered_merkle_path() {
    let st = state_after(6);
    let ps = sample::parties();
    let tx = signed(
        &ps.doctors[0],
        nonce_of(&st, 20),
        TxBody::LogAccess { record: 500, consent: 100 },
        sample::INSTANCE,
    );
    let w = one_tx_batch(&st, &tx, true, NOW);
    assert!(satisfied(&w));
    for unit in 0..4 {
        let mut bad = w.clone();
        let t = &mut bad.txs[0];
        let u = match unit {
            0 => &mut t.signer,
            1 => &mut t.read1,
            2 => &mut t.read2,
            _ => &mut t.update,
        };
        u.path.siblings[1][0] += Fr::from(1u64);
        assert!(!satisfied(&bad), "tampered sibling in unit {unit}");
    }
    let mut bad = w.clone();
    bad.txs[0].read2.old[1] += Fr::from(1u64);
    assert!(!satisfied(&bad), "made-up record leaf");
}

#[test]
fn wrong_commitment_or_roots() {
    // A read: its audit entry records the batch time.
    let tx = sample::transactions()[7].clone();
    let st = state_after(7);
    let w = one_tx_batch(&st, &tx, true, NOW);
    assert!(satisfied(&w));
    let claim = |f: &dyn Fn(&mut PublicInputs)| {
        let mut c = BatchCircuit::new(w.clone());
        f(&mut c.public);
        satisfied_with(c)
    };
    assert!(!claim(&|p| p.tx_commitment += Fr::from(1u64)), "wrong commitment");
    assert!(!claim(&|p| p.old_root += Fr::from(1u64)), "wrong old root");
    assert!(!claim(&|p| p.new_root += Fr::from(1u64)), "wrong new root");
    assert!(!claim(&|p| p.timestamp += 1), "wrong timestamp (expiry and audit depend on it)");
    // The same transactions in another order (here a padding slot first, which
    // is a valid batch of its own) do not match the recorded commitment.
    let mut reordered = w.clone();
    reordered.txs.swap(0, 1);
    assert!(satisfied(&reordered));
    let mut c = BatchCircuit::new(reordered);
    c.public = w.public_inputs();
    assert!(!satisfied_with(c), "the commitment fixes the order of the batch data");
}

/// Whether the batch of `tx` alone satisfies the circuit when a cheating
/// prover's own witness generator puts `value` in argument `arg` of its
/// encoding (signed by `who` and committed as such), and in field `field`
/// of the leaf it writes in `tree` (when the argument is stored). Everything else is
/// the honest witness's: with the value the honest encoding has, it is
/// satisfied.
fn with_raw_arg(
    st: &State,
    tx: &SignedTx,
    who: &Party,
    arg: usize,
    value: Fr,
    field: Option<(TreeId, usize)>,
) -> bool {
    let honest = one_tx_batch(st, tx, true, NOW);
    let mut fields = tx.tx.fields();
    fields.args[arg] = value;
    let inst = Fr::from(sample::INSTANCE);
    let sig = who.key.sign(fields.message(inst));
    let mut claimed = st.clone();
    let trace = claimed.execute(tx, NOW).unwrap();
    if let Some((tree, f)) = field {
        let mut leaf = claimed.leaf(tree, trace.update.index);
        leaf[f] = value;
        claimed.force_leaf(tree, trace.update.index, leaf);
    }
    let mut w = honest;
    w.new_roots = claimed.roots();
    let mut c = BatchCircuit::new(w);
    let padding = SignedTx::noop().tx.message(inst);
    c.public.tx_commitment = poseidon::hash2(poseidon::hash2(Fr::zero(), fields.message(inst)), padding);
    c.raw_slots = vec![(0, fields, sig)];
    satisfied_with(c)
}

#[test]
fn grant_expiry_must_be_a_u64() {
    // An expiry of 2^64 + 5 would be a consent that never lapses.
    let st = state_after(6);
    let ps = sample::parties();
    let p1 = &ps.patients[0];
    let body = TxBody::Grant {
        consent: 130,
        grantee: 21,
        scope: Scope::Read,
        target: ConsentTarget::AllRecords,
        expiry: NOW + 5,
    };
    let tx = signed(p1, nonce_of(&st, 10), body, sample::INSTANCE);
    assert!(
        with_raw_arg(&st, &tx, p1, 5, Fr::from(NOW + 7), Some((TreeId::Consents, 5))),
        "control: a u64 expiry, the same path"
    );
    let beyond = Fr::from(u64::MAX) + Fr::from(6u64); // 2^64 + 5
    assert!(
        !with_raw_arg(&st, &tx, p1, 5, beyond, Some((TreeId::Consents, 5))),
        "an expiry of 2^64 + 5 is refused"
    );
}

#[test]
fn a_grant_encodes_its_scope_and_target_one_way() {
    let st = state_after(6);
    let ps = sample::parties();
    let p1 = &ps.patients[0];
    let grant =
        |target| TxBody::Grant { consent: 130, grantee: 21, scope: Scope::Read, target, expiry: NOW + 5 };
    let all = signed(p1, nonce_of(&st, 10), grant(ConsentTarget::AllRecords), sample::INSTANCE);
    // Scope (args[3], leaf[2]): read (1) or read-write (2), nothing else.
    assert!(
        with_raw_arg(&st, &all, p1, 3, Fr::from(2u64), Some((TreeId::Consents, 2))),
        "control: read-write"
    );
    for scope in [0u64, 3] {
        assert!(
            !with_raw_arg(&st, &all, p1, 3, Fr::from(scope), Some((TreeId::Consents, 2))),
            "scope {scope}"
        );
    }
    // All-records flag (args[4], leaf[3]): a bit; set, the record is 0.
    assert!(!with_raw_arg(&st, &all, p1, 4, Fr::from(2u64), Some((TreeId::Consents, 3))), "all = 2");
    assert!(
        !with_raw_arg(&st, &all, p1, 0, Fr::from(500u64), Some((TreeId::Consents, 4))),
        "all records, and record 500"
    );
    // The unused last argument is 0.
    assert!(with_raw_arg(&st, &all, p1, 6, Fr::zero(), None), "control: the honest encoding");
    assert!(!with_raw_arg(&st, &all, p1, 6, Fr::from(5u64), None), "args[6] = 5");
}

#[test]
fn record_content_digests_are_two_128_bit_halves() {
    let st = state_after(9);
    let ps = sample::parties();
    let p1 = &ps.patients[0];
    let body = TxBody::UpdateRecord {
        record: 500,
        version: 2,
        consent: 0,
        cid_digest: [0xff; 32],
        meta_hash: Fr::from(7u64),
    };
    let tx = signed(p1, nonce_of(&st, p1.id), body, sample::INSTANCE);
    let top = Fr::from(u128::MAX); // the largest half there is
    assert!(with_raw_arg(&st, &tx, p1, 3, top, Some((TreeId::Records, 2))), "control: 2^128 - 1");
    assert!(
        !with_raw_arg(&st, &tx, p1, 3, top + Fr::from(1u64), Some((TreeId::Records, 2))),
        "a high half of 2^128"
    );
    assert!(
        !with_raw_arg(&st, &tx, p1, 4, top + Fr::from(1u64), Some((TreeId::Records, 3))),
        "a low half of 2^128"
    );
    // An update's unused argument (args[6]) is 0 too.
    assert!(!with_raw_arg(&st, &tx, p1, 6, Fr::from(1u64), None), "args[6] = 1");
}
