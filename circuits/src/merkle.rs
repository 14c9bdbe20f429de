//! Fixed-depth sparse Merkle trees of arity 4 over Poseidon, natively and as
//! R1CS gadgets (membership, and update of one leaf along a path whose
//! siblings the old and new leaf share).
//!
//! A node is `Poseidon(c0, c1, c2, c3)` of its four children; an empty leaf is
//! 0 and an empty subtree of height h hashes to `Z(h)` with `Z(0) = 0`,
//! `Z(h+1) = Poseidon(Z(h), Z(h), Z(h), Z(h))`. Leaf `i`'s path reads `i` in
//! base 4, least significant digit at the leaves. Arity 4 because one
//! Poseidon(4) costs 300 constraints for two bits of index where Poseidon(2)
//! costs 240 for one: a 2^24-leaf path costs 3.6k constraints instead of 5.8k.
//! circomlibjs recomputes any root with `poseidon([c0, c1, c2, c3])`.

use crate::field::Fr;
use crate::poseidon;
use ark_ff::Zero;
use ark_r1cs_std::{alloc::AllocVar, boolean::Boolean, fields::fp::FpVar};
use ark_relations::gr1cs::{ConstraintSystemRef, SynthesisError};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Children per node.
pub const ARITY: usize = 4;

/// Hashes of empty subtrees, `Z(0)..=Z(levels)`.
pub fn empty_hashes(levels: usize) -> Vec<Fr> {
    let mut z = vec![Fr::zero()];
    for h in 0..levels {
        let c = z[h];
        z.push(poseidon::hash(&[c, c, c, c]));
    }
    z
}

/// The four children of a node whose child at `pos` is `cur` and whose other
/// children are `sib` in order.
pub fn children(pos: usize, cur: Fr, sib: &[Fr; 3]) -> [Fr; 4] {
    let mut c = [Fr::zero(); 4];
    let mut s = sib.iter();
    for (i, ci) in c.iter_mut().enumerate() {
        *ci = if i == pos { cur } else { *s.next().expect("three siblings") };
    }
    c
}

/// The siblings of one leaf, from the leaves up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerklePath {
    /// Three siblings per level.
    #[serde(with = "siblings_serde")]
    pub siblings: Vec<[Fr; 3]>,
}

mod siblings_serde {
    use super::*;
    use crate::field::serde_fr;
    use serde::{Deserializer, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Level(#[serde(with = "serde_fr::array")] [Fr; 3]);

    pub fn serialize<S: Serializer>(v: &[[Fr; 3]], s: S) -> Result<S::Ok, S::Error> {
        v.iter().map(|l| Level(*l)).collect::<Vec<_>>().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<[Fr; 3]>, D::Error> {
        Ok(Vec::<Level>::deserialize(d)?.into_iter().map(|l| l.0).collect())
    }
}

impl MerklePath {
    /// An all-zero path of the given height (for disabled slots of a circuit).
    pub fn zeros(levels: usize) -> Self {
        Self { siblings: vec![[Fr::zero(); 3]; levels] }
    }

    /// The root this path gives for `leaf` at `index`.
    pub fn root(&self, index: u64, leaf: Fr) -> Fr {
        let mut cur = leaf;
        let mut idx = index;
        for sib in &self.siblings {
            cur = poseidon::hash(&children((idx % 4) as usize, cur, sib));
            idx /= 4;
        }
        cur
    }
}

/// A sparse tree with `4^levels` leaves that stores only non-empty nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SparseTree {
    levels: usize,
    zeros: Vec<Fr>,
    /// Non-empty nodes by (height, index at that height); height 0 holds leaves.
    nodes: HashMap<(usize, u64), Fr>,
}

impl SparseTree {
    /// An empty tree.
    pub fn new(levels: usize) -> Self {
        assert!((1..=31).contains(&levels), "1..=31 levels (at most 2^62 leaves)");
        Self { levels, zeros: empty_hashes(levels), nodes: HashMap::new() }
    }

    /// The tree holding `leaves` (index, value), built level by level: each
    /// non-empty node is hashed once, where setting the leaves one by one
    /// hashes every leaf's whole path. A later value for an index wins.
    ///
    /// # Panics
    /// When an index is not below the capacity.
    pub fn from_leaves(levels: usize, leaves: impl IntoIterator<Item = (u64, Fr)>) -> Self {
        let mut tree = Self::new(levels);
        let mut layer: HashMap<u64, Fr> = HashMap::new();
        for (index, value) in leaves {
            assert!(index < tree.capacity(), "leaf {index} outside the tree");
            layer.insert(index, value);
        }
        for h in 0..=levels {
            layer.retain(|_, v| *v != tree.zeros[h]);
            tree.nodes.extend(layer.iter().map(|(&i, &v)| ((h, i), v)));
            if h == levels {
                break;
            }
            let mut parents: Vec<u64> = layer.keys().map(|i| i / 4).collect();
            parents.sort_unstable();
            parents.dedup();
            let t = &tree;
            let hash = |&p: &u64| {
                let c: [Fr; 4] = core::array::from_fn(|j| t.node(h, 4 * p + j as u64));
                (p, poseidon::hash(&c))
            };
            // A level's nodes hash independently: on every core, once
            // there are enough of them to pay for it.
            layer = if parents.len() >= 256 {
                use rayon::prelude::*;
                parents.par_iter().map(hash).collect()
            } else {
                parents.iter().map(hash).collect()
            };
        }
        tree
    }

    /// Number of levels (the tree has `4^levels` leaves).
    pub fn levels(&self) -> usize {
        self.levels
    }

    /// Number of leaves.
    pub fn capacity(&self) -> u64 {
        1u64 << (2 * self.levels)
    }

    fn node(&self, height: usize, index: u64) -> Fr {
        self.nodes.get(&(height, index)).copied().unwrap_or(self.zeros[height])
    }

    /// The root.
    pub fn root(&self) -> Fr {
        self.node(self.levels, 0)
    }

    /// The leaf at `index` (0 when empty).
    ///
    /// # Panics
    /// When `index` is not below [`Self::capacity`].
    pub fn leaf(&self, index: u64) -> Fr {
        assert!(index < self.capacity(), "leaf {index} outside the tree");
        self.node(0, index)
    }

    /// The path of `index`.
    pub fn path(&self, index: u64) -> MerklePath {
        assert!(index < self.capacity(), "leaf {index} outside the tree");
        let mut siblings = Vec::with_capacity(self.levels);
        let mut idx = index;
        for h in 0..self.levels {
            let first = idx - idx % 4;
            let mut sib = [Fr::zero(); 3];
            let mut k = 0;
            for j in first..first + 4 {
                if j != idx {
                    sib[k] = self.node(h, j);
                    k += 1;
                }
            }
            siblings.push(sib);
            idx /= 4;
        }
        MerklePath { siblings }
    }

    /// Takes `other`'s leaf at `index` and every node on its path, hashing
    /// nothing: after `other` changed only leaves whose paths are copied so,
    /// the two trees are equal.
    ///
    /// # Panics
    /// When the heights differ or `index` is not below the capacity.
    pub fn copy_path_from(&mut self, other: &SparseTree, index: u64) {
        assert_eq!(self.levels, other.levels, "trees of one height");
        assert!(index < self.capacity(), "leaf {index} outside the tree");
        for h in 0..=self.levels {
            let at = (h, index >> (2 * h));
            match other.nodes.get(&at) {
                Some(v) => self.nodes.insert(at, *v),
                None => self.nodes.remove(&at),
            };
        }
    }

    /// Sets the leaf at `index` and rehashes its path.
    pub fn set(&mut self, index: u64, value: Fr) {
        assert!(index < self.capacity(), "leaf {index} outside the tree");
        let mut idx = index;
        let mut cur = value;
        for h in 0..=self.levels {
            if cur == self.zeros[h] {
                self.nodes.remove(&(h, idx));
            } else {
                self.nodes.insert((h, idx), cur);
            }
            if h == self.levels {
                break;
            }
            let first = idx - idx % 4;
            let c: [Fr; 4] = core::array::from_fn(|j| self.node(h, first + j as u64));
            cur = poseidon::hash(&c);
            idx /= 4;
        }
    }
}

/// A path as circuit variables: two index bits and three siblings per level.
#[derive(Clone, Debug)]
pub struct PathVar {
    /// Little-endian bits of the leaf index (two per level).
    pub index_bits: Vec<Boolean<Fr>>,
    /// Three siblings per level.
    pub siblings: Vec<[FpVar<Fr>; 3]>,
}

impl PathVar {
    /// Allocates a path and its index as witnesses.
    pub fn alloc(cs: ConstraintSystemRef<Fr>, index: u64, path: &MerklePath) -> Result<Self, SynthesisError> {
        let levels = path.siblings.len();
        let index_bits = (0..2 * levels)
            .map(|i| Boolean::new_witness(cs.clone(), || Ok((index >> i) & 1 == 1)))
            .collect::<Result<Vec<_>, _>>()?;
        let siblings = path
            .siblings
            .iter()
            .map(|s| -> Result<[FpVar<Fr>; 3], SynthesisError> {
                Ok([
                    FpVar::new_witness(cs.clone(), || Ok(s[0]))?,
                    FpVar::new_witness(cs.clone(), || Ok(s[1]))?,
                    FpVar::new_witness(cs.clone(), || Ok(s[2]))?,
                ])
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { index_bits, siblings })
    }

    /// The index as a field element (a linear combination of the bits, so it is
    /// below `4^levels` by construction).
    pub fn index(&self) -> Result<FpVar<Fr>, SynthesisError> {
        Boolean::le_bits_to_fp(&self.index_bits)
    }

    /// One-hot position selectors `e0..e3` for each level (one constraint each).
    fn selectors(&self) -> Vec<[FpVar<Fr>; 4]> {
        self.index_bits
            .chunks(2)
            .map(|b| {
                let both = FpVar::from(&b[0] & &b[1]);
                let (b0, b1) = (FpVar::from(b[0].clone()), FpVar::from(b[1].clone()));
                [FpVar::Constant(Fr::from(1u64)) - &b0 - &b1 + &both, b0 - &both, b1 - &both, both]
            })
            .collect()
    }

    fn children(e: &[FpVar<Fr>; 4], cur: &FpVar<Fr>, s: &[FpVar<Fr>; 3]) -> [FpVar<Fr>; 4] {
        [
            &s[0] + &e[0] * (cur - &s[0]),
            &s[1] + &e[0] * (&s[0] - &s[1]) + &e[1] * (cur - &s[1]),
            &s[1] + &e[2] * (cur - &s[1]) + &e[3] * (&s[2] - &s[1]),
            &s[2] + &e[3] * (cur - &s[2]),
        ]
    }

    /// The root for `leaf` (about 307 constraints per level).
    pub fn root(&self, leaf: &FpVar<Fr>) -> Result<FpVar<Fr>, SynthesisError> {
        let mut cur = leaf.clone();
        for (e, s) in self.selectors().iter().zip(&self.siblings) {
            cur = poseidon::hash_var(&Self::children(e, &cur, s))?;
        }
        Ok(cur)
    }

    /// The roots before and after replacing `old_leaf` by `new_leaf` (about 611
    /// constraints per level).
    pub fn update(
        &self,
        old_leaf: &FpVar<Fr>,
        new_leaf: &FpVar<Fr>,
    ) -> Result<(FpVar<Fr>, FpVar<Fr>), SynthesisError> {
        let (mut old, mut new) = (old_leaf.clone(), new_leaf.clone());
        for (e, s) in self.selectors().iter().zip(&self.siblings) {
            let c_old = Self::children(e, &old, s);
            let delta = &new - &old;
            let c_new: Vec<FpVar<Fr>> = c_old.iter().zip(e).map(|(c, ei)| c + ei * &delta).collect();
            old = poseidon::hash_var(&c_old)?;
            new = poseidon::hash_var(&c_new)?;
        }
        Ok((old, new))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ark_r1cs_std::{GR1CSVar, eq::EqGadget};
    use ark_relations::gr1cs::ConstraintSystem;
    use proptest::prelude::*;

    /// Root of a full tree computed level by level from all leaves: an
    /// independent reference for the sparse implementation.
    fn dense_root(levels: usize, leaves: &HashMap<u64, Fr>) -> Fr {
        let mut layer: Vec<Fr> =
            (0..1u64 << (2 * levels)).map(|i| leaves.get(&i).copied().unwrap_or_default()).collect();
        while layer.len() > 1 {
            layer = layer.chunks(4).map(poseidon::hash).collect();
        }
        layer[0]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]
        #[test]
        fn sparse_tree_matches_dense_and_gadgets_match_native(
            ops in proptest::collection::vec((0u64..64, 0u64..1000), 1..12)
        ) {
            let levels = 3;
            let mut tree = SparseTree::new(levels);
            let mut leaves = HashMap::new();
            for (idx, val) in &ops {
                let v = Fr::from(*val);
                let before = tree.root();
                let path = tree.path(*idx);
                let old_leaf = tree.leaf(*idx);
                prop_assert_eq!(path.root(*idx, old_leaf), before);
                tree.set(*idx, v);
                leaves.insert(*idx, v);
                prop_assert_eq!(path.root(*idx, v), tree.root(), "siblings are shared");

                let cs = ConstraintSystem::<Fr>::new_ref();
                let pv = PathVar::alloc(cs.clone(), *idx, &path).unwrap();
                let o = FpVar::new_witness(cs.clone(), || Ok(old_leaf)).unwrap();
                let n = FpVar::new_witness(cs.clone(), || Ok(v)).unwrap();
                let (ro, rn) = pv.update(&o, &n).unwrap();
                prop_assert_eq!(ro.value().unwrap(), before);
                prop_assert_eq!(rn.value().unwrap(), tree.root());
                prop_assert_eq!(pv.root(&n).unwrap().value().unwrap(), tree.root());
                prop_assert_eq!(pv.index().unwrap().value().unwrap(), Fr::from(*idx));
                prop_assert!(cs.is_satisfied().unwrap());
            }
            prop_assert_eq!(tree.root(), dense_root(levels, &leaves));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        #[test]
        fn a_tree_built_from_its_leaves_equals_one_set_leaf_by_leaf(
            ops in proptest::collection::vec((0u64..256, 0u64..4), 0..40)
        ) {
            // Values 0..4: zeros (removals) and repeats are common.
            let levels = 4;
            let mut tree = SparseTree::new(levels);
            for (i, v) in &ops {
                tree.set(*i, Fr::from(*v));
            }
            let built = SparseTree::from_leaves(levels, ops.iter().map(|(i, v)| (*i, Fr::from(*v))));
            prop_assert_eq!(built.root(), tree.root());
            prop_assert_eq!(&built.nodes, &tree.nodes, "the same non-empty nodes, no zero stored");
        }
    }

    /// Enough leaves that a level is hashed on every core.
    #[test]
    fn a_large_tree_built_from_its_leaves_equals_one_set_leaf_by_leaf() {
        let leaves: Vec<(u64, Fr)> = (0..3000u64).map(|i| (i * 7 % 4096, Fr::from(i + 1))).collect();
        let mut tree = SparseTree::new(6);
        for (i, v) in &leaves {
            tree.set(*i, *v);
        }
        let built = SparseTree::from_leaves(6, leaves);
        assert_eq!(built, tree);
    }

    /// Roots computed level by level with circomlibjs's poseidon (vectors file).
    #[test]
    fn roots_match_circomlibjs() {
        let v = crate::testdata::CircomlibVectors::load();
        assert!(v.merkle4.len() >= 3);
        for case in &v.merkle4 {
            let mut tree = SparseTree::new(case.levels);
            for (i, x) in &case.leaves {
                tree.set(*i, crate::field::parse_fr(x).unwrap());
            }
            assert_eq!(tree.root(), crate::field::parse_fr(&case.root).unwrap(), "leaves {:?}", case.leaves);
        }
    }

    #[test]
    fn empty_tree_root_is_the_empty_hash_chain() {
        let t = SparseTree::new(4);
        assert_eq!(t.root(), empty_hashes(4)[4]);
        assert_eq!(dense_root(2, &HashMap::new()), empty_hashes(2)[2]);
    }

    #[test]
    fn tampered_path_or_index_does_not_prove_membership() {
        let mut tree = SparseTree::new(3);
        for i in [1u64, 5, 17, 42] {
            tree.set(i, Fr::from(i * 1000 + 7));
        }
        let root = tree.root();
        let check = |index: u64, path: &MerklePath, leaf: Fr| {
            let cs = ConstraintSystem::<Fr>::new_ref();
            let pv = PathVar::alloc(cs.clone(), index, path).unwrap();
            let l = FpVar::new_witness(cs.clone(), || Ok(leaf)).unwrap();
            let r = FpVar::new_input(cs.clone(), || Ok(root)).unwrap();
            pv.root(&l).unwrap().enforce_equal(&r).unwrap();
            cs.is_satisfied().unwrap()
        };
        let good = tree.path(17);
        assert!(check(17, &good, Fr::from(17007u64)));
        let mut bad = good.clone();
        bad.siblings[1][2] += Fr::from(1u64);
        assert!(!check(17, &bad, Fr::from(17007u64)), "tampered sibling");
        assert!(!check(16, &good, Fr::from(17007u64)), "wrong index");
        assert!(!check(17, &good, Fr::from(17008u64)), "wrong leaf");
    }
}
