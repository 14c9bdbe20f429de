//! Property tests over random transaction sequences: the native rules and the
//! circuit agree. Accepted transactions give satisfied batches whose roots are
//! the native roots; refused ones, forced in by a cheating sequencer, give
//! unsatisfiable batches.

use ark_relations::gr1cs::{ConstraintSynthesizer, ConstraintSystem};
use medrollup_circuits::Fr;
use medrollup_circuits::batch::{BatchBuilder, BatchWitness, PushError};
use medrollup_circuits::circuit::BatchCircuit;
use medrollup_circuits::eddsa::PrivateKey;
use medrollup_circuits::sample::{self, NOW};
use medrollup_circuits::state::{RecordLeaf, State, TreeId, TxError};
use medrollup_circuits::tx::{ConsentTarget, Scope, SignedTx, Tx, TxBody};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const LEVELS: usize = 3; // 64 leaves per tree: collisions and edge cases are frequent

fn satisfied(w: &BatchWitness) -> bool {
    let cs = ConstraintSystem::<Fr>::new_ref();
    BatchCircuit::new(w.clone()).generate_constraints(cs.clone()).unwrap();
    cs.is_satisfied().unwrap()
}

/// Keys for ids 1..64, derived from the id.
fn key(id: u64) -> PrivateKey {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&id.to_le_bytes());
    b[31] = 0x5a;
    PrivateKey::from_bytes(b)
}

/// A random transaction, usually plausible, often invalid.
fn random_tx(rng: &mut ChaCha8Rng, st: &State) -> SignedTx {
    let id = |rng: &mut ChaCha8Rng| rng.gen_range(0..70u64); // some ids outside the tree
    let signer = rng.gen_range(1..24u64);
    let body = match rng.gen_range(0..9) {
        0 => TxBody::RegisterPatient {
            pubkey: key(signer).public(),
            rsa_key_hash: Fr::from(rng.r#gen::<u64>()),
        },
        1 => {
            let d = rng.gen_range(0..24u64);
            TxBody::RegisterDoctor { doctor: d, pubkey: key(d).public(), rsa_key_hash: Fr::from(7u64) }
        }
        2 => TxBody::AddRecord {
            record: id(rng) % 40,
            patient: rng.gen_range(1..24),
            consent: rng.gen_range(0..20),
            cid_digest: rng.r#gen(),
            meta_hash: Fr::from(rng.r#gen::<u64>()),
        },
        3 => {
            let record = rng.gen_range(0..40);
            let read = RecordLeaf::from_fields(&st.leaf(TreeId::Records, record)).map_or(0, |r| r.version);
            TxBody::UpdateRecord {
                record,
                // Usually the version there; sometimes one read before a write.
                version: if rng.gen_bool(0.8) { read } else { read.saturating_sub(1) },
                consent: if rng.gen_bool(0.5) { 0 } else { rng.gen_range(0..20) },
                cid_digest: rng.r#gen(),
                meta_hash: Fr::from(3u64),
            }
        }
        4 => TxBody::DeleteRecord { record: rng.gen_range(0..40) },
        5 => TxBody::Grant {
            consent: rng.gen_range(0..20),
            grantee: rng.gen_range(1..24),
            scope: if rng.gen_bool(0.5) { Scope::Read } else { Scope::ReadWrite },
            target: if rng.gen_bool(0.5) {
                ConsentTarget::AllRecords
            } else {
                ConsentTarget::Record(rng.gen_range(0..40))
            },
            expiry: NOW - 5 + rng.gen_range(0..400),
        },
        6 => TxBody::Revoke { consent: rng.gen_range(0..20) },
        7 => TxBody::LogAccess { record: rng.gen_range(0..40), consent: rng.gen_range(0..20) },
        _ => TxBody::EmergencyAccess { record: rng.gen_range(0..40), reason_hash: Fr::from(1u64) },
    };
    let mut nonce = st.account(signer).map_or(0, |a| a.nonce);
    if rng.gen_bool(0.05) {
        nonce += 1; // a stale or future nonce
    }
    let instance = if rng.gen_bool(0.03) { sample::INSTANCE + 1 } else { sample::INSTANCE };
    let signer_key = if rng.gen_bool(0.03) { key(signer + 1) } else { key(signer) };
    Tx { signer, nonce, body }.sign(&signer_key, Fr::from(instance))
}

fn genesis() -> State {
    let mut g = sample::genesis(LEVELS);
    g.hospitals = vec![
        medrollup_circuits::state::GenesisHospital {
            id: 1,
            pubkey: key(1).public(),
            rsa_key_hash: Fr::from(1u64),
        },
        medrollup_circuits::state::GenesisHospital {
            id: 2,
            pubkey: key(2).public(),
            rsa_key_hash: Fr::from(2u64),
        },
    ];
    State::genesis(&g).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]
    #[test]
    fn native_rules_and_circuit_agree(seed in any::<u64>()) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut st = genesis();
        let mut accepted = 0;
        let mut refused_checked = 0;
        for _round in 0..3 {
            let before = st.clone();
            let mut b = BatchBuilder::new(&mut st, 4, NOW);
            let mut refused: Vec<(SignedTx, TxError)> = Vec::new();
            for _ in 0..200 {
                if b.len() == 4 { break; }
                let tx = random_tx(&mut rng, &before);
                match b.push(&tx) {
                    Ok(()) => accepted += 1,
                    Err(PushError::Rejected(e)) => refused.push((tx, e)),
                    Err(PushError::Full(_)) => unreachable!(),
                }
            }
            let w = b.finish();
            prop_assert_eq!(w.public_inputs().new_root, st.root());
            prop_assert!(satisfied(&w), "an honest batch of random valid transactions");
            // A cheating sequencer forces refused transactions in: never satisfied.
            for (tx, _) in refused.iter().filter(|(_, e)| !matches!(e, TxError::IdOutOfRange { .. })).take(3) {
                // Refused earlier in the batch; judge it against the state it would now meet.
                let Err(err) = st.check(tx, NOW) else { continue };
                let mut cheat_state = st.clone();
                let mut cb = BatchBuilder::new(&mut cheat_state, 1, NOW);
                if cb.push_unchecked(tx).is_ok() {
                    prop_assert!(!satisfied(&cb.finish()), "circuit accepted a transaction the rules refuse: {}", err);
                    refused_checked += 1;
                }
            }
        }
        prop_assert!(accepted >= 3, "the generator produces valid transactions ({accepted})");
        prop_assert!(refused_checked >= 3, "and invalid ones ({refused_checked})");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]
    /// A copy of the leaves kept up to date from `written_by` after each batch
    /// is the state's own set of leaves, and rebuilds the same state.
    #[test]
    fn leaves_kept_from_written_by_rebuild_the_state(seed in any::<u64>()) {
        use std::collections::HashMap;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut st = genesis();
        let mut copy: HashMap<(TreeId, u64), medrollup_circuits::state::Leaf> =
            st.leaves().map(|(t, i, l)| ((t, i), *l)).collect();
        let mut total = 0;
        for _batch in 0..12 {
            let mut before = st.clone();
            let mut applied = Vec::new();
            for _ in 0..40 {
                let tx = random_tx(&mut rng, &st);
                if let Ok(trace) = st.apply(&tx, NOW) {
                    applied.push(trace);
                }
                if applied.len() == 4 {
                    break;
                }
            }
            total += applied.len();
            for (t, i, l) in st.written_by(&applied) {
                if l[0] == Fr::from(0u64) {
                    copy.remove(&(t, i));
                } else {
                    copy.insert((t, i), l);
                }
            }
            let own: HashMap<_, _> = st.leaves().map(|(t, i, l)| ((t, i), *l)).collect();
            prop_assert_eq!(&copy, &own);
            // The state before the batch, given the written leaves' paths.
            let written = st.written_by(&applied);
            before.copy_written_from(&st, written.iter().map(|(t, i, _)| (*t, *i)));
            prop_assert!(before == st, "the copy is the state itself, node for node");
            let rebuilt = State::from_leaves(
                st.instance(),
                LEVELS,
                copy.iter().map(|(&(t, i), l)| (t, i, *l)),
                st.audit_count(),
            )
            .unwrap();
            prop_assert_eq!(rebuilt.root(), st.root());
            prop_assert!(rebuilt == st, "node for node, indices included");
            // The indices against a look at every leaf.
            for account in 0..26u64 {
                let a = Fr::from(account);
                let scan = |tree: TreeId, cols: &[usize]| {
                    let mut v: Vec<u64> = st
                        .leaves()
                        .filter(|(t, _, l)| *t == tree && cols.iter().any(|&c| l[c] == a))
                        .map(|(_, i, _)| i)
                        .collect();
                    v.sort_unstable();
                    v
                };
                let idx = st.index_of(account);
                prop_assert_eq!(&idx.records, &scan(TreeId::Records, &[0, 1]));
                prop_assert_eq!(&idx.consents, &scan(TreeId::Consents, &[0, 1]));
                prop_assert_eq!(&idx.audit, &scan(TreeId::Audit, &[1, 2]));
            }
            for (t, i, l) in st.leaves() {
                if t == TreeId::Records {
                    let limbs = [l[2], l[3]];
                    let Some(digest) = medrollup_circuits::field::limbs_to_digest(limbs) else { continue };
                    let live = |r: &medrollup_circuits::state::Leaf| r[6] == Fr::from(0u64);
                    let first = st
                        .leaves()
                        .filter(|(t2, _, r)| *t2 == TreeId::Records && r[2] == l[2] && r[3] == l[3] && live(r))
                        .map(|(_, j, _)| j)
                        .min();
                    prop_assert_eq!(st.live_record_with_content(&digest), first, "record {}", i);
                }
            }
            for _ in 0..4 {
                let tree = TreeId::ALL[rng.gen_range(0..4)];
                let i = rng.gen_range(0..64);
                prop_assert_eq!(rebuilt.path(tree, i), st.path(tree, i));
                prop_assert_eq!(rebuilt.leaf(tree, i), st.leaf(tree, i));
            }
        }
        prop_assert!(total >= 12, "only {} transactions applied", total);
    }
}

/// Every kind of transaction (the sample's sequence has them all, audit
/// entries included), one batch at a time: the leaves `written_by` names are
/// the ones that changed.
#[test]
fn written_by_names_every_leaf_each_kind_of_transaction_writes() {
    let mut st = State::genesis(&sample::genesis(5)).unwrap();
    let mut kept: std::collections::HashMap<_, _> = st.leaves().map(|(t, i, l)| ((t, i), *l)).collect();
    let mut shadow = st.clone();
    let mut audits = 0;
    for tx in sample::transactions() {
        let trace = st.apply(&tx, NOW).unwrap();
        let written = st.written_by([&trace]);
        shadow.copy_written_from(&st, written.iter().map(|(t, i, _)| (*t, *i)));
        assert!(shadow == st, "a copy of the written paths after {:?}", tx.tx.body);
        // Built afresh from the leaves: the same trees and the same indices
        // as those kept write by write.
        let rebuilt =
            State::from_leaves(st.instance(), 5, st.leaves().map(|(t, i, l)| (t, i, *l)), st.audit_count())
                .unwrap();
        assert!(rebuilt == st, "rebuilt after {:?}", tx.tx.body);
        for (t, i, l) in &written {
            if l[0] == Fr::from(0u64) {
                kept.remove(&(*t, *i));
            } else {
                kept.insert((*t, *i), *l);
            }
            audits += usize::from(*t == TreeId::Audit);
        }
        let own: std::collections::HashMap<_, _> = st.leaves().map(|(t, i, l)| ((t, i), *l)).collect();
        assert_eq!(kept, own, "after {:?}", tx.tx.body);
    }
    assert!(audits >= 2, "the sample logs a read and an emergency access");
    assert!(st.audit_count() >= 2);
}

#[test]
fn a_stored_leaf_outside_the_trees_is_refused() {
    let st = genesis();
    let mut leaves: Vec<_> = st.leaves().map(|(t, i, l)| (t, i, *l)).collect();
    let ok = State::from_leaves(st.instance(), LEVELS, leaves.clone(), 0).unwrap();
    assert_eq!(ok.root(), st.root());
    let l = leaves[0].2;
    leaves.push((TreeId::Records, 64, l));
    let e = State::from_leaves(st.instance(), LEVELS, leaves, 0).unwrap_err();
    assert!(matches!(e, TxError::IdOutOfRange { id: 64, capacity: 64, .. }), "{e:?}");
    assert!(matches!(State::from_leaves(st.instance(), 0, [], 0), Err(TxError::TreeHeight(0))));
}
