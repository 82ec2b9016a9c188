//! The SecAgg+ communication graph: a random Harary graph. Parties are placed on a ring
//! in a random order drawn from the round's seed and each is joined to the k/2 nearest
//! on either side, so every party has k neighbours (the complete graph when k ≥ n − 1).
//! The graph is a pure function of (n, k, seed): every party and the aggregator compute
//! the same one.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha20Rng;

/// Neighbours of each party (sorted indices, never the party itself).
pub fn neighbours(n: u32, k: u32, seed: [u8; 32]) -> Vec<Vec<u32>> {
    let n_us = n as usize;
    if k + 1 >= n {
        return (0..n).map(|i| (0..n).filter(|&j| j != i).collect()).collect();
    }
    let mut order: Vec<u32> = (0..n).collect();
    order.shuffle(&mut ChaCha20Rng::from_seed(seed));
    let mut position = vec![0usize; n_us];
    for (p, &i) in order.iter().enumerate() {
        position[i as usize] = p;
    }
    let half = (k / 2).max(1) as usize;
    (0..n)
        .map(|i| {
            let p = position[i as usize];
            let mut out: Vec<u32> =
                (1..=half).flat_map(|d| [order[(p + d) % n_us], order[(p + n_us - d) % n_us]]).collect();
            out.sort_unstable();
            out.dedup();
            out
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_regular_and_deterministic() {
        let g = neighbours(50, 10, [4; 32]);
        for (i, ns) in g.iter().enumerate() {
            assert_eq!(ns.len(), 10);
            assert!(!ns.contains(&(i as u32)));
            for &j in ns {
                assert!(g[j as usize].contains(&(i as u32)), "{i}-{j} not symmetric");
            }
        }
        assert_eq!(g, neighbours(50, 10, [4; 32]));
        assert_ne!(g, neighbours(50, 10, [5; 32]));
        let full = neighbours(5, 4, [0; 32]);
        assert_eq!(full[2], vec![0, 1, 3, 4]);
    }
}
