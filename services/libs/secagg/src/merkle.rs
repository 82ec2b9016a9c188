//! The hash tree over a party's masked input: one Ed25519 signature over its root
//! authenticates every chunk, each chunk carrying the sibling digests from its leaf to the
//! root (its proof), so the aggregator verifies one signature per party and round instead
//! of one per chunk.
//!
//! Leaves are BLAKE3 digests of a chunk's words (little-endian), nodes BLAKE3 of their two
//! children, each under its own derived key so a node can never pass for a leaf. The
//! shape is RFC 6962's (Certificate Transparency): a tree of n leaves splits at the largest
//! power of two below n. With n fixed by the round (and signed with the root), a proof
//! binds its leaf to one index.

/// A leaf, node or root of the tree.
pub type Digest = [u8; 32];

const LEAF_CONTEXT: &str = "phoenix-guardian secagg 2026-12 masked chunk words";
const NODE_CONTEXT: &str = "phoenix-guardian secagg 2026-12 input tree node";

/// The leaf of a chunk: BLAKE3 of its words as little-endian bytes.
pub fn leaf(words: &[u32]) -> Digest {
    let mut h = blake3::Hasher::new_derive_key(LEAF_CONTEXT);
    if cfg!(target_endian = "little") {
        h.update(bytemuck::cast_slice(words));
    } else {
        for w in words {
            h.update(&w.to_le_bytes());
        }
    }
    *h.finalize().as_bytes()
}

fn node(left: &Digest, right: &Digest) -> Digest {
    let mut h = blake3::Hasher::new_derive_key(NODE_CONTEXT);
    h.update(left);
    h.update(right);
    *h.finalize().as_bytes()
}

/// The largest power of two strictly below `n` (n ≥ 2).
fn split(n: usize) -> usize {
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// The root of the tree over `leaves` and the proof of each leaf (siblings from the leaf
/// up). `leaves` must not be empty.
pub fn tree(leaves: &[Digest]) -> (Digest, Vec<Vec<Digest>>) {
    assert!(!leaves.is_empty(), "a tree needs at least one leaf");
    let mut proofs = vec![Vec::new(); leaves.len()];
    let root = build(leaves, &mut proofs);
    (root, proofs)
}

fn build(leaves: &[Digest], proofs: &mut [Vec<Digest>]) -> Digest {
    if leaves.len() == 1 {
        return leaves[0];
    }
    let k = split(leaves.len());
    let (left_proofs, right_proofs) = proofs.split_at_mut(k);
    let left = build(&leaves[..k], left_proofs);
    let right = build(&leaves[k..], right_proofs);
    left_proofs.iter_mut().for_each(|p| p.push(right));
    right_proofs.iter_mut().for_each(|p| p.push(left));
    node(&left, &right)
}

/// The root that `proof` leads to from `leaf` at `index` of a tree of `count` leaves, or
/// None when the proof cannot belong to such a tree (index past the end, too few or too
/// many siblings). Never reads more siblings than the tree is deep.
pub fn root_from(index: u32, count: u32, leaf: &Digest, proof: &[Digest]) -> Option<Digest> {
    fn walk(m: usize, n: usize, leaf: &Digest, proof: &[Digest]) -> Option<Digest> {
        if n == 1 {
            return proof.is_empty().then_some(*leaf);
        }
        let (sibling, below) = proof.split_last()?;
        let k = split(n);
        Some(if m < k {
            node(&walk(m, k, leaf, below)?, sibling)
        } else {
            node(sibling, &walk(m - k, n - k, leaf, below)?)
        })
    }
    (index < count).then(|| walk(index as usize, count as usize, leaf, proof)).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Digest> {
        (0..n as u32).map(|i| leaf(&[i, i * 7, 3])).collect()
    }

    #[test]
    fn every_proof_leads_to_the_root_and_only_from_its_own_index() {
        for n in 1..=40usize {
            let ls = leaves(n);
            let (root, proofs) = tree(&ls);
            for (i, (l, p)) in ls.iter().zip(&proofs).enumerate() {
                assert!(p.len() <= 6, "n={n}: proof of {} siblings", p.len());
                assert_eq!(root_from(i as u32, n as u32, l, p), Some(root), "n={n} i={i}");
                for j in (0..n).filter(|&j| j != i) {
                    assert_ne!(root_from(j as u32, n as u32, l, p), Some(root), "n={n}: leaf {i} passes as {j}");
                }
                assert_eq!(root_from(n as u32, n as u32, l, p), None);
                let mut longer = p.clone();
                longer.push(root);
                assert_ne!(root_from(i as u32, n as u32, l, &longer), Some(root));
                if let Some((_, shorter)) = p.split_last() {
                    assert_ne!(root_from(i as u32, n as u32, l, shorter), Some(root));
                }
                if n > 1 {
                    let other = leaf(&[9, 9, 9]);
                    assert_ne!(root_from(i as u32, n as u32, &other, p), Some(root));
                }
            }
        }
    }

    #[test]
    fn the_shape_is_rfc_6962s() {
        // Five leaves: ((l0 l1) (l2 l3)) l4.
        let ls = leaves(5);
        let expected = node(&node(&node(&ls[0], &ls[1]), &node(&ls[2], &ls[3])), &ls[4]);
        assert_eq!(tree(&ls).0, expected);
        assert_eq!(tree(&ls[..1]).0, ls[0]);
        assert_eq!(tree(&ls).1[4], vec![node(&node(&ls[0], &ls[1]), &node(&ls[2], &ls[3]))]);
    }

    #[test]
    fn a_leaf_digest_depends_on_every_word_and_its_order() {
        let words: Vec<u32> = (0..70_000).collect();
        let d = leaf(&words);
        let mut changed = words.clone();
        changed[69_999] ^= 1;
        assert_ne!(leaf(&changed), d);
        changed = words.clone();
        changed.swap(0, 1);
        assert_ne!(leaf(&changed), d);
        assert_ne!(leaf(&words[..69_999]), d);
        // Reference: the derived-key BLAKE3 of the little-endian bytes.
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        assert_eq!(d, blake3::derive_key(LEAF_CONTEXT, &bytes));
    }
}
