//! Every rule, natively: a transaction that follows it passes, one that breaks
//! it is refused with the typed error that names the problem. And every
//! refusal carries over to the circuit: the batch a cheating sequencer builds
//! with the refused transaction does not satisfy the constraint system, while
//! the passing twin does.

use ark_relations::gr1cs::{ConstraintSynthesizer, ConstraintSystem};
use medrollup_circuits::Fr;
use medrollup_circuits::batch::{BatchBuilder, BatchWitness};
use medrollup_circuits::circuit::BatchCircuit;
use medrollup_circuits::eddsa::{PrivateKey, PublicKey, Signature};
use medrollup_circuits::sample::{self, NOW, Party};
use medrollup_circuits::state::{Genesis, GenesisHospital, RecordLeaf, Role, State, TreeId, TxError};
use medrollup_circuits::tx::{ConsentTarget, Scope, SignedTx, Tx, TxBody};

const LEVELS: usize = 5;

fn satisfied(w: BatchWitness) -> bool {
    let cs = ConstraintSystem::<Fr>::new_ref();
    BatchCircuit::new(w).generate_constraints(cs.clone()).unwrap();
    cs.is_satisfied().unwrap()
}

/// The sample state after its first `n` transactions.
fn after(n: usize) -> State {
    let mut st = State::genesis(&sample::genesis(LEVELS)).unwrap();
    for tx in &sample::transactions()[..n] {
        st.apply(tx, NOW).unwrap();
    }
    st
}

fn ps() -> sample::Parties {
    sample::parties()
}

/// Signed by `who` with its current nonce.
fn tx(st: &State, who: &Party, body: TxBody) -> SignedTx {
    let nonce = st.account(who.id).map_or(0, |a| a.nonce);
    Tx { signer: who.id, nonce, body }.sign(&who.key, Fr::from(sample::INSTANCE))
}

fn batch(st: &State, t: &SignedTx, honest: bool, now: u64) -> BatchWitness {
    let mut st = st.clone();
    let mut b = BatchBuilder::new(&mut st, 1, now);
    if honest {
        b.push(t).unwrap()
    } else {
        b.push_unchecked(t).unwrap()
    }
    b.finish()
}

fn pass_at(st: &State, t: &SignedTx, now: u64) {
    st.check(t, now).unwrap_or_else(|e| panic!("should pass: {e}"));
    assert!(satisfied(batch(st, t, true, now)), "the circuit accepts it");
}

fn pass(st: &State, t: &SignedTx) {
    pass_at(st, t, NOW)
}

fn fail_at(st: &State, t: &SignedTx, now: u64, expected: impl Fn(&TxError) -> bool) {
    let err = st.check(t, now).expect_err("should be refused");
    assert!(expected(&err), "wrong error: {err}");
    assert!(!err.to_string().is_empty());
    assert!(!satisfied(batch(st, t, false, now)), "the circuit refuses it too ({err})");
}

fn fail(st: &State, t: &SignedTx, expected: impl Fn(&TxError) -> bool) {
    fail_at(st, t, NOW, expected)
}

fn rec_body(record: u64, patient: u64, consent: u64) -> TxBody {
    TxBody::AddRecord { record, patient, consent, cid_digest: sample::cid("r"), meta_hash: Fr::from(1u64) }
}

/// The record's version in `st` (0 when there is no such record).
fn version(st: &State, record: u64) -> u64 {
    RecordLeaf::from_fields(&st.leaf(TreeId::Records, record)).map_or(0, |r| r.version)
}

/// An update of `record` as `st` shows it.
fn upd_body(st: &State, record: u64, consent: u64) -> TxBody {
    upd_body_of(record, version(st, record), consent)
}

fn upd_body_of(record: u64, version: u64, consent: u64) -> TxBody {
    TxBody::UpdateRecord { record, version, consent, cid_digest: sample::cid("u"), meta_hash: Fr::from(2u64) }
}

fn grant_body(consent: u64, grantee: u64, target: ConsentTarget, expiry: u64) -> TxBody {
    TxBody::Grant { consent, grantee, scope: Scope::Read, target, expiry }
}

/// A point of order 2: on the curve, but anyone can "sign" for it.
fn small_order_key() -> PublicKey {
    PublicKey::new(Fr::from(0u64), -Fr::from(1u64)).unwrap()
}

#[test]
fn register_patient() {
    let st = after(0);
    let p = &ps().patients[0];
    let body = |k: PublicKey| TxBody::RegisterPatient { pubkey: k, rsa_key_hash: Fr::from(9u64) };
    pass(&st, &tx(&st, p, body(p.key.public())));
    let st1 = after(1);
    fail(&st1, &tx(&st1, p, body(p.key.public())), |e| matches!(e, TxError::AccountExists(10)));
    let zero = Party { id: 0, key: p.key.clone() };
    fail(&st, &tx(&st, &zero, body(p.key.public())), |e| matches!(e, TxError::ReservedAccountId));
    fail(&st, &tx(&st, p, body(small_order_key())), |e| matches!(e, TxError::InvalidPublicKey(_)));
    // A small-order key needs no secret: 8·A is the identity, so S·B8 = R8
    // verifies for any S. Only the key check refuses such a signature.
    let r8 = medrollup_circuits::babyjub::base8(); // 1·B8
    let keyless = SignedTx {
        tx: Tx { signer: p.id, nonce: 0, body: body(small_order_key()) },
        signature: Signature { r8x: r8.x, r8y: r8.y, s: medrollup_circuits::babyjub::Scalar::from(1u64) },
    };
    fail(&st, &keyless, |e| matches!(e, TxError::InvalidPublicKey(_)));
    let mut stale = tx(&st, p, body(p.key.public()));
    stale.tx.nonce = 1;
    stale = stale.tx.sign(&p.key, Fr::from(sample::INSTANCE));
    fail(&st, &stale, |e| matches!(e, TxError::BadNonce { expected: 0, got: 1, .. }));
    let other_key = PrivateKey::from_bytes([1; 32]);
    let forged =
        Tx { signer: 10, nonce: 0, body: body(p.key.public()) }.sign(&other_key, Fr::from(sample::INSTANCE));
    fail(&st, &forged, |e| matches!(e, TxError::BadSignature(10)));
}

#[test]
fn register_doctor() {
    let st = after(3);
    let p = ps();
    let d = &p.doctors[2];
    let body =
        |id, k: PublicKey| TxBody::RegisterDoctor { doctor: id, pubkey: k, rsa_key_hash: Fr::from(3u64) };
    pass(&st, &tx(&st, &p.hospitals[1], body(d.id, d.key.public())));
    fail(&st, &tx(&st, &p.patients[0], body(d.id, d.key.public())), |e| {
        matches!(e, TxError::WrongRole { actual: Role::Patient, .. })
    });
    fail(&st, &tx(&st, &p.doctors[0], body(d.id, d.key.public())), |e| {
        matches!(e, TxError::WrongRole { actual: Role::Doctor, .. })
    });
    fail(&st, &tx(&st, &p.hospitals[1], body(20, d.key.public())), |e| {
        matches!(e, TxError::AccountExists(20))
    });
    fail(&st, &tx(&st, &p.hospitals[1], body(0, d.key.public())), |e| {
        matches!(e, TxError::ReservedAccountId)
    });
    fail(&st, &tx(&st, &p.hospitals[1], body(d.id, small_order_key())), |e| {
        matches!(e, TxError::InvalidPublicKey(_))
    });
    let ghost = Party { id: 30, key: d.key.clone() };
    fail(&st, &tx(&st, &ghost, body(31, d.key.public())), |e| matches!(e, TxError::UnknownAccount(30)));
}

#[test]
fn add_record() {
    let st = after(7); // consent 100: d1 read-write all of p1; consent 101: d2 read of record 500
    let p = ps();
    let (d1, d2) = (&p.doctors[0], &p.doctors[1]);
    pass(&st, &tx(&st, d1, rec_body(502, 10, 100)));
    fail(&st, &tx(&st, d1, rec_body(500, 10, 100)), |e| matches!(e, TxError::RecordExists(500)));
    fail(&st, &tx(&st, d1, rec_body(502, 10, 7)), |e| matches!(e, TxError::UnknownConsent(7)));
    fail(&st, &tx(&st, d2, rec_body(502, 10, 100)), |e| matches!(e, TxError::ConsentMismatch { .. }));
    fail(&st, &tx(&st, d2, rec_body(500, 10, 101)), |e| {
        matches!(e, TxError::ConsentMismatch { .. } | TxError::RecordExists(_))
    });
    // Write scope alone: a read-only consent over all records does not let
    // its doctor add one; the same consent read-write does.
    let p1 = &p.patients[0];
    for (scope, ok) in [(Scope::Read, false), (Scope::ReadWrite, true)] {
        let mut st = st.clone();
        st.apply(
            &tx(
                &st,
                p1,
                TxBody::Grant {
                    consent: 140,
                    grantee: d2.id,
                    scope,
                    target: ConsentTarget::AllRecords,
                    expiry: NOW + 60,
                },
            ),
            NOW,
        )
        .unwrap();
        let add = tx(&st, d2, rec_body(503, 10, 140));
        if ok {
            pass(&st, &add);
        } else {
            fail(
                &st,
                &add,
                |e| matches!(e, TxError::ConsentMismatch { reason, .. } if reason.contains("read-only")),
            );
        }
    }
    fail(&st, &tx(&st, d2, rec_body(503, 10, 101)), |e| {
        matches!(e, TxError::ConsentMismatch { reason: "it is read-only", .. })
    });
    fail(&st, &tx(&st, d1, rec_body(502, 11, 100)), |e| {
        matches!(e, TxError::ConsentMismatch { reason: "it was granted by another patient", .. })
    });
    fail(&st, &tx(&st, &p.patients[0], rec_body(502, 10, 100)), |e| matches!(e, TxError::WrongRole { .. }));
    fail_at(&st, &tx(&st, d1, rec_body(502, 10, 100)), NOW + 86_400, |e| {
        matches!(e, TxError::ConsentExpired { .. })
    });
}

#[test]
fn update_record() {
    let st = after(8);
    let p = ps();
    let (p1, d1, d2) = (&p.patients[0], &p.doctors[0], &p.doctors[1]);
    pass(&st, &tx(&st, d1, upd_body(&st, 500, 100)));
    pass(&st, &tx(&st, p1, upd_body(&st, 500, 0)));
    fail(&st, &tx(&st, p1, upd_body(&st, 500, 100)), |e| matches!(e, TxError::NonCanonical(_)));
    fail(&st, &tx(&st, d2, upd_body(&st, 500, 101)), |e| matches!(e, TxError::NotAuthorized { .. }));
    fail(&st, &tx(&st, d1, upd_body(&st, 499, 100)), |e| matches!(e, TxError::UnknownRecord(499)));
    // The author alone: another doctor with read-write consent over all the
    // patient's records may not overwrite what doctor 1 wrote.
    let mut rw = st.clone();
    let grant = TxBody::Grant {
        consent: 141,
        grantee: d2.id,
        scope: Scope::ReadWrite,
        target: ConsentTarget::AllRecords,
        expiry: NOW + 60,
    };
    rw.apply(&tx(&rw, p1, grant), NOW).unwrap();
    fail(&rw, &tx(&rw, d2, upd_body(&rw, 500, 141)), |e| {
        matches!(e, TxError::NotAuthorized { account: 21, record: 500 })
    });
    pass(&rw, &tx(&rw, d2, rec_body(504, 10, 141)));
    let deleted = after(16);
    fail(&deleted, &tx(&deleted, p1, upd_body(&deleted, 500, 0)), |e| {
        matches!(e, TxError::RecordDeleted(500))
    });

    // An update names the version it replaces: one read before another
    // write (or a version that is not there yet) is refused, by the owner
    // and by the author alike.
    let v = version(&st, 500);
    assert!(v >= 1, "record 500 has a version ({v})");
    for (who, consent) in [(p1, 0), (d1, 100)] {
        for named in [v - 1, v + 1, 0] {
            fail(
                &st,
                &tx(&st, who, upd_body_of(500, named, consent)),
                |e| matches!(e, TxError::StaleVersion { record: 500, named: n, current } if *n == named && *current == v),
            );
        }
    }

    // The last version: a state no transaction reaches in practice, set up directly.
    let mut full = st.clone();
    let mut leaf = full.leaf(TreeId::Records, 500);
    leaf[5] = Fr::from(u64::MAX);
    full.force_leaf(TreeId::Records, 500, leaf);
    fail(&full, &tx(&full, p1, upd_body(&full, 500, 0)), |e| matches!(e, TxError::VersionOverflow(500)));
}

#[test]
fn delete_record() {
    let st = after(8);
    let p = ps();
    pass(&st, &tx(&st, &p.patients[0], TxBody::DeleteRecord { record: 500 }));
    fail(&st, &tx(&st, &p.doctors[0], TxBody::DeleteRecord { record: 500 }), |e| {
        matches!(e, TxError::NotOwner { what: "record", .. })
    });
    fail(&st, &tx(&st, &p.patients[0], TxBody::DeleteRecord { record: 9 }), |e| {
        matches!(e, TxError::UnknownRecord(9))
    });
    let deleted = after(16);
    fail(&deleted, &tx(&deleted, &p.patients[0], TxBody::DeleteRecord { record: 500 }), |e| {
        matches!(e, TxError::RecordDeleted(500))
    });
}

#[test]
fn grant() {
    let st = after(6);
    let p = ps();
    let (p1, p2) = (&p.patients[0], &p.patients[1]);
    pass(&st, &tx(&st, p1, grant_body(120, 21, ConsentTarget::AllRecords, NOW + 1)));
    pass(&st, &tx(&st, p1, grant_body(100, 20, ConsentTarget::AllRecords, NOW + 10))); // renewal
    pass(&st, &tx(&st, p1, grant_body(121, 1, ConsentTarget::Record(500), NOW + 10))); // to a hospital
    fail(&st, &tx(&st, p1, grant_body(120, 21, ConsentTarget::AllRecords, NOW)), |e| {
        matches!(e, TxError::ExpiryNotInFuture { .. })
    });
    fail(&st, &tx(&st, p1, grant_body(120, 11, ConsentTarget::AllRecords, NOW + 9)), |e| {
        matches!(e, TxError::InvalidGrantee(11))
    });
    fail(&st, &tx(&st, p1, grant_body(120, 25, ConsentTarget::AllRecords, NOW + 9)), |e| {
        matches!(e, TxError::UnknownAccount(25))
    });
    fail(&st, &tx(&st, p1, grant_body(120, 21, ConsentTarget::Record(777), NOW + 9)), |e| {
        matches!(e, TxError::UnknownRecord(777))
    });
    fail(&st, &tx(&st, p2, grant_body(120, 21, ConsentTarget::Record(500), NOW + 9)), |e| {
        matches!(e, TxError::NotOwner { what: "record", .. })
    });
    fail(&st, &tx(&st, p2, grant_body(100, 21, ConsentTarget::AllRecords, NOW + 9)), |e| {
        matches!(e, TxError::NotOwner { what: "consent", .. })
    });
    fail(&st, &tx(&st, &p.doctors[0], grant_body(120, 21, ConsentTarget::AllRecords, NOW + 9)), |e| {
        matches!(e, TxError::WrongRole { .. })
    });
}

#[test]
fn revoke() {
    let st = after(7);
    let p = ps();
    pass(&st, &tx(&st, &p.patients[0], TxBody::Revoke { consent: 101 }));
    fail(&st, &tx(&st, &p.patients[1], TxBody::Revoke { consent: 101 }), |e| {
        matches!(e, TxError::NotOwner { what: "consent", .. })
    });
    fail(&st, &tx(&st, &p.patients[0], TxBody::Revoke { consent: 55 }), |e| {
        matches!(e, TxError::UnknownConsent(55))
    });
    let revoked = after(12);
    fail(&revoked, &tx(&revoked, &p.patients[0], TxBody::Revoke { consent: 101 }), |e| {
        matches!(e, TxError::ConsentRevoked(101))
    });
}

#[test]
fn log_access() {
    let st = after(15); // records 500 and 501 live; consent 101 (record 500 only) revoked
    let p = ps();
    let (d1, d2) = (&p.doctors[0], &p.doctors[1]);
    let log = |record, consent| TxBody::LogAccess { record, consent };
    pass(&st, &tx(&st, d1, log(501, 100)));
    fail(&st, &tx(&st, d2, log(500, 101)), |e| matches!(e, TxError::ConsentRevoked(101)));
    let st7 = after(7);
    pass(&st7, &tx(&st7, d2, log(500, 101)));
    fail(&st7, &tx(&st7, d2, log(501, 101)), |e| matches!(e, TxError::UnknownRecord(501)));
    let st14 = after(15);
    let mut unrevoked = st14.clone();
    let mut c = unrevoked.leaf(TreeId::Consents, 101);
    c[6] = Fr::from(0u64);
    unrevoked.force_leaf(TreeId::Consents, 101, c);
    fail(&unrevoked, &tx(&unrevoked, d2, log(501, 101)), |e| {
        matches!(e, TxError::ConsentMismatch { reason: "it covers another record", .. })
    });
    fail_at(&st, &tx(&st, d1, log(501, 100)), NOW + 86_400, |e| matches!(e, TxError::ConsentExpired { .. }));
}

#[test]
fn emergency_access_and_the_audit_log() {
    let st = after(10);
    let p = ps();
    let em = |record| TxBody::EmergencyAccess { record, reason_hash: Fr::from(42u64) };
    pass(&st, &tx(&st, &p.doctors[2], em(500)));
    fail(&st, &tx(&st, &p.patients[0], em(500)), |e| matches!(e, TxError::WrongRole { .. }));
    fail(&st, &tx(&st, &p.doctors[2], em(8)), |e| matches!(e, TxError::UnknownRecord(8)));

    // The patient lists and proves their audit entries against the audit root.
    let st = after(16);
    let entries = st.audit_entries_of(10);
    assert_eq!(entries.len(), 2, "one read (log_access) and one emergency access");
    assert_eq!(entries[0].1.kind, medrollup_circuits::state::AUDIT_READ);
    assert_eq!(entries[1].1.kind, medrollup_circuits::state::AUDIT_EMERGENCY);
    assert_eq!(entries[1].1.actor, 22);
    for (index, entry, path) in &entries {
        let leaf = medrollup_circuits::state::leaf_hash(&entry.fields());
        assert_eq!(path.root(*index, leaf), st.roots()[TreeId::Audit as usize]);
        assert_ne!(path.root(*index + 1, leaf), st.roots()[TreeId::Audit as usize]);
    }
    assert!(st.audit_entries_of(11).is_empty());
}

#[test]
fn noop_nonce_and_ranges() {
    let st = after(3);
    pass(&st, &SignedTx::noop());
    let mut bad = SignedTx::noop();
    bad.tx.signer = 1;
    fail(&st, &bad, |e| matches!(e, TxError::NonCanonical(_)));
    // A padding transaction with a junk signature would make the batch unprovable.
    let mut junk = SignedTx::noop();
    junk.signature.r8x = Fr::from(1u64);
    fail(&st, &junk, |e| matches!(e, TxError::NonCanonical(_)));

    let p = ps();
    // An id outside the trees: refused natively; no witness can even be built.
    let far = tx(&st, &p.doctors[0], rec_body(4u64.pow(LEVELS as u32), 10, 100));
    assert!(matches!(st.check(&far, NOW), Err(TxError::IdOutOfRange { what: "record", .. })));

    // The last nonce.
    let mut worn = st.clone();
    let mut acc = worn.leaf(TreeId::Accounts, 20);
    acc[4] = Fr::from(u64::MAX);
    worn.force_leaf(TreeId::Accounts, 20, acc);
    fail(&worn, &tx(&worn, &p.doctors[0], rec_body(502, 10, 100)), |e| {
        matches!(e, TxError::NonceOverflow(20))
    });
}

#[test]
fn audit_log_full_is_refused() {
    let h = PrivateKey::from_bytes([1; 32]);
    let g = Genesis {
        instance: Fr::from(5u64),
        levels: 1,
        hospitals: vec![GenesisHospital { id: 1, pubkey: h.public(), rsa_key_hash: Fr::from(0u64) }],
    };
    let mut st = State::genesis(&g).unwrap();
    let inst = Fr::from(5u64);
    let d = PrivateKey::from_bytes([2; 32]);
    let p = PrivateKey::from_bytes([3; 32]);
    // A copy kept up to date by the leaves each transaction wrote, as the
    // coordinator's sealed state is: the entry that fills the log included.
    let shadow = std::cell::RefCell::new(st.clone());
    let apply = |st: &mut State, t: SignedTx| {
        let trace = st.apply(&t, NOW)?;
        let written = st.written_by([&trace]);
        let mut sh = shadow.borrow_mut();
        sh.copy_written_from(st, written.iter().map(|(t, i, _)| (*t, *i)));
        assert!(*sh == *st, "the copy follows {:?}", t.tx.body);
        Ok(())
    };
    let t = |signer, nonce, body| Tx { signer, nonce, body };
    apply(
        &mut st,
        t(1, 0, TxBody::RegisterDoctor { doctor: 2, pubkey: d.public(), rsa_key_hash: Fr::from(0u64) })
            .sign(&h, inst),
    )
    .unwrap();
    apply(
        &mut st,
        t(3, 0, TxBody::RegisterPatient { pubkey: p.public(), rsa_key_hash: Fr::from(0u64) }).sign(&p, inst),
    )
    .unwrap();
    apply(
        &mut st,
        t(
            3,
            1,
            TxBody::Grant {
                consent: 0,
                grantee: 2,
                scope: Scope::ReadWrite,
                target: ConsentTarget::AllRecords,
                expiry: NOW + 9,
            },
        )
        .sign(&p, inst),
    )
    .unwrap();
    apply(&mut st, t(2, 0, rec_body(0, 3, 0)).sign(&d, inst)).unwrap();
    for n in 1..=4 {
        apply(
            &mut st,
            t(2, n, TxBody::EmergencyAccess { record: 0, reason_hash: Fr::from(1u64) }).sign(&d, inst),
        )
        .unwrap();
    }
    assert_eq!(st.audit_count(), 4);
    let err = apply(
        &mut st,
        t(2, 5, TxBody::EmergencyAccess { record: 0, reason_hash: Fr::from(1u64) }).sign(&d, inst),
    );
    assert_eq!(err, Err(TxError::AuditLogFull));
}

/// The leaf views clients read (records, consents) say what the rules
/// enforce: `ConsentLeaf::allows` agrees with `State::check` on every consent
/// and record of the sample state, and the index finds an account's leaves.
#[test]
fn leaf_views_and_the_account_index_agree_with_the_rules() {
    use medrollup_circuits::state::{AuditEntry, ConsentLeaf, RecordLeaf};
    let st = after(sample::transactions().len());
    let consents: Vec<u64> =
        (0..1024).filter(|&c| ConsentLeaf::from_fields(&st.leaf(TreeId::Consents, c)).is_some()).collect();
    let records: Vec<u64> =
        (0..1024).filter(|&r| RecordLeaf::from_fields(&st.leaf(TreeId::Records, r)).is_some()).collect();
    assert!(!consents.is_empty() && !records.is_empty());
    let mut seen = [0usize; 2];
    for &c in &consents {
        let view = ConsentLeaf::from_fields(&st.leaf(TreeId::Consents, c)).unwrap();
        for &r in &records {
            let rec = RecordLeaf::from_fields(&st.leaf(TreeId::Records, r)).unwrap();
            let grantee = ps().doctors.into_iter().find(|d| d.id == view.grantee).unwrap();
            let log = tx(&st, &grantee, TxBody::LogAccess { record: r, consent: c });
            let ruled = st.check(&log, NOW).is_ok();
            assert_eq!(
                view.allows(rec.owner, r, false, NOW) && !rec.deleted,
                ruled,
                "consent {c}, record {r}"
            );
            seen[usize::from(ruled)] += 1;
        }
        assert!(!view.allows(view.patient, 0, false, view.expiry), "expired at its expiry");
    }
    assert!(seen[0] > 0 && seen[1] > 0, "both outcomes occur: {seen:?}");
    for p in ps().patients.iter().chain(&ps().doctors) {
        let idx = st.index_of(p.id);
        for &r in &idx.records {
            let rec = RecordLeaf::from_fields(&st.leaf(TreeId::Records, r)).unwrap();
            assert!(rec.owner == p.id || rec.author == p.id);
        }
        let owned = records.iter().filter(|&&r| {
            let rec = RecordLeaf::from_fields(&st.leaf(TreeId::Records, r)).unwrap();
            rec.owner == p.id || rec.author == p.id
        });
        assert_eq!(owned.count(), idx.records.len(), "account {}", p.id);
        for &c in &idx.consents {
            let v = ConsentLeaf::from_fields(&st.leaf(TreeId::Consents, c)).unwrap();
            assert!(v.patient == p.id || v.grantee == p.id);
        }
        let audit: Vec<u64> = (0..st.audit_count())
            .filter(|&i| {
                let e = AuditEntry::from_fields(&st.leaf(TreeId::Audit, i));
                e.actor == p.id || e.patient == p.id
            })
            .collect();
        assert_eq!(idx.audit, audit, "account {}", p.id);
    }
    assert!(st.index_of(999).records.is_empty() && st.index_of(999).audit.is_empty());
    // Content lookup: each live record by its current content, a deleted
    // one and unknown content by none.
    let mut deleted = 0;
    for &r in &records {
        let rec = RecordLeaf::from_fields(&st.leaf(TreeId::Records, r)).unwrap();
        let found = st.live_record_with_content(&rec.cid_digest);
        if rec.deleted {
            deleted += 1;
            assert_eq!(found, None, "record {r} is deleted");
        } else {
            assert_eq!(found, Some(r), "record {r}");
        }
    }
    assert!(deleted > 0, "the sample deletes a record");
    assert_eq!(st.live_record_with_content(&[7u8; 32]), None);
}

#[test]
fn a_genesis_with_trees_of_no_supported_height_is_refused() {
    for levels in [0, 32, 1000] {
        let g = Genesis { instance: Fr::from(5u64), levels, hospitals: vec![] };
        let e = State::genesis(&g).map(|_| ()).expect_err("refused");
        assert!(matches!(e, TxError::TreeHeight(l) if l == levels), "{e}");
        assert!(e.to_string().contains(&format!("{levels} levels is not supported: 1 to 31")), "{e}");
    }
    for levels in [1, 31] {
        let g = Genesis { instance: Fr::from(5u64), levels, hospitals: vec![] };
        assert_eq!(State::genesis(&g).unwrap().levels(), levels);
    }
}
