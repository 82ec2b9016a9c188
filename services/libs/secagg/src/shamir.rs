//! Shamir secret sharing of 32-byte secrets over a prime field.
//!
//! The field is GF(p) with p = 2^192 − 2^64 − 1 (the NIST P-192 prime), so a round can
//! have up to 2^32 − 1 parties (share x-coordinates are the parties' indices + 1). A
//! 32-byte secret is split into two 16-byte chunks, each shared with its own random
//! polynomial of degree t − 1. Field arithmetic is `crypto-bigint`'s constant-modulus
//! Montgomery form; coefficients are wiped after use.
//!
//! Reconstruction takes any t shares with distinct x and interpolates at 0. A chunk that
//! interpolates to a value of 2^128 or more cannot come from `split`: it is reported as
//! [`ShamirError::Inconsistent`]. This catches mixed-up or randomly corrupted shares
//! (they land below 2^128 with probability about 2^−64), not a deliberate small edit; the
//! callers check reconstructed keys against their public keys for that.

use crypto_bigint::modular::ConstMontyForm;
use crypto_bigint::{Encoding, U192, impl_modulus};
use rand::CryptoRng;
use thiserror::Error;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

impl_modulus!(P192, U192, "fffffffffffffffffffffffffffffffeffffffffffffffff");
type Fe = ConstMontyForm<P192, { U192::LIMBS }>;

/// Length of a shared secret in bytes.
pub const SECRET_LEN: usize = 32;
const CHUNKS: usize = 2;
const CHUNK_LEN: usize = SECRET_LEN / CHUNKS;
const FE_LEN: usize = 24;
/// Length of an encoded share: x (4 bytes, big-endian) then one field element per chunk.
pub const SHARE_LEN: usize = 4 + CHUNKS * FE_LEN;

/// One Shamir share: the evaluation of each chunk's polynomial at `x`.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct Share {
    x: u32,
    y: [[u8; FE_LEN]; CHUNKS],
}

impl std::fmt::Debug for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Share").field("x", &self.x).finish_non_exhaustive()
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ShamirError {
    #[error("threshold {t} must be between 1 and the number of shares {n}")]
    BadThreshold { t: u32, n: u32 },
    #[error("{have} distinct shares, {need} needed")]
    NotEnoughShares { have: usize, need: usize },
    #[error("share x-coordinate 0 is not allowed")]
    ZeroX,
    #[error("two different shares have the same x-coordinate {0}")]
    DuplicateX(u32),
    #[error("a share is not a field element")]
    Malformed,
    #[error("the shares do not interpolate to a secret (tampered with or from different secrets)")]
    Inconsistent,
}

impl Share {
    /// The x-coordinate (1-based party index).
    pub fn x(&self) -> u32 {
        self.x
    }

    pub fn to_bytes(&self) -> [u8; SHARE_LEN] {
        let mut out = [0u8; SHARE_LEN];
        out[..4].copy_from_slice(&self.x.to_be_bytes());
        for (c, y) in self.y.iter().enumerate() {
            out[4 + c * FE_LEN..4 + (c + 1) * FE_LEN].copy_from_slice(y);
        }
        out
    }

    /// The same share with its value changed (a valid field element still): what a
    /// dishonest holder would reveal. For tests and simulations.
    pub fn altered(&self) -> Share {
        let mut y = self.y;
        // The top byte of a field element below p = 2^192 − 2^64 − 1 can be cleared
        // without leaving the field; flip a low bit too so the value always changes.
        y[0][0] = 0;
        y[0][FE_LEN - 1] ^= 1;
        Share { x: self.x, y }
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ShamirError> {
        if bytes.len() != SHARE_LEN {
            return Err(ShamirError::Malformed);
        }
        let x = u32::from_be_bytes(bytes[..4].try_into().expect("4 bytes"));
        if x == 0 {
            return Err(ShamirError::ZeroX);
        }
        let mut y = [[0u8; FE_LEN]; CHUNKS];
        for (c, yc) in y.iter_mut().enumerate() {
            yc.copy_from_slice(&bytes[4 + c * FE_LEN..4 + (c + 1) * FE_LEN]);
            if U192::from_be_bytes(*yc) >= *P192_MODULUS {
                return Err(ShamirError::Malformed);
            }
        }
        Ok(Share { x, y })
    }
}

static P192_MODULUS: std::sync::LazyLock<U192> =
    std::sync::LazyLock::new(|| *<P192 as crypto_bigint::modular::ConstMontyParams<{ U192::LIMBS }>>::MODULUS);

fn random_fe(rng: &mut impl CryptoRng) -> Fe {
    // Rejection sampling: uniform over [0, p). p is within 2^-64 of 2^192, so a retry
    // almost never happens.
    let mut bytes = Zeroizing::new([0u8; FE_LEN]);
    loop {
        rng.fill_bytes(bytes.as_mut());
        let v = U192::from_be_bytes(*bytes);
        if v < *P192_MODULUS {
            return Fe::new(&v);
        }
    }
}

fn fe_from_u32(v: u32) -> Fe {
    Fe::new(&U192::from_u32(v))
}

/// Splits `secret` into shares for the x-coordinates `xs` (distinct, non-zero), any
/// `t` of which reconstruct it and any t − 1 of which are independent of it.
pub fn split_at(
    secret: &[u8; SECRET_LEN],
    xs: &[u32],
    t: u32,
    rng: &mut impl CryptoRng,
) -> Result<Vec<Share>, ShamirError> {
    let n = u32::try_from(xs.len()).unwrap_or(u32::MAX);
    if t == 0 || t > n {
        return Err(ShamirError::BadThreshold { t, n });
    }
    check_distinct(xs)?;
    let mut shares: Vec<Share> = xs.iter().map(|&x| Share { x, y: [[0; FE_LEN]; CHUNKS] }).collect();
    let points: Vec<Fe> = xs.iter().map(|&x| fe_from_u32(x)).collect();
    let mut coeffs: Vec<Fe> = Vec::with_capacity(t as usize);
    for c in 0..CHUNKS {
        let mut chunk = Zeroizing::new([0u8; FE_LEN]);
        chunk[FE_LEN - CHUNK_LEN..].copy_from_slice(&secret[c * CHUNK_LEN..(c + 1) * CHUNK_LEN]);
        coeffs.clear();
        coeffs.push(Fe::new(&U192::from_be_bytes(*chunk)));
        for _ in 1..t {
            coeffs.push(random_fe(rng));
        }
        for (share, x) in shares.iter_mut().zip(&points) {
            // Horner's rule from the highest coefficient down.
            let mut acc = coeffs[coeffs.len() - 1];
            for k in (0..coeffs.len() - 1).rev() {
                acc = acc * x + coeffs[k];
            }
            share.y[c] = acc.retrieve().to_be_bytes();
        }
        for k in coeffs.iter_mut() {
            *k = Fe::ZERO;
        }
    }
    Ok(shares)
}

/// Splits `secret` into `n` shares at x = 1..=n.
pub fn split(secret: &[u8; SECRET_LEN], n: u32, t: u32, rng: &mut impl CryptoRng) -> Result<Vec<Share>, ShamirError> {
    let xs: Vec<u32> = (1..=n).collect();
    split_at(secret, &xs, t, rng)
}

fn check_distinct(xs: &[u32]) -> Result<(), ShamirError> {
    let mut sorted = xs.to_vec();
    sorted.sort_unstable();
    if sorted.first() == Some(&0) {
        return Err(ShamirError::ZeroX);
    }
    if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
        return Err(ShamirError::DuplicateX(w[0]));
    }
    Ok(())
}

/// Reconstructs the secret from the first `t` shares (after dropping exact duplicates).
pub fn combine(shares: &[Share], t: u32) -> Result<Zeroizing<[u8; SECRET_LEN]>, ShamirError> {
    let mut chosen: Vec<&Share> = Vec::with_capacity(t as usize);
    for s in shares {
        if s.x == 0 {
            return Err(ShamirError::ZeroX);
        }
        match chosen.iter().find(|c| c.x == s.x) {
            Some(c) if c.y == s.y => {}
            Some(_) => return Err(ShamirError::DuplicateX(s.x)),
            None if chosen.len() < t as usize => chosen.push(s),
            None => {}
        }
    }
    if t == 0 || chosen.len() < t as usize {
        return Err(ShamirError::NotEnoughShares { have: chosen.len(), need: t.max(1) as usize });
    }
    let xs: Vec<Fe> = chosen.iter().map(|s| fe_from_u32(s.x)).collect();
    // Lagrange basis at 0: λ_i = Π_{j≠i} x_j / (x_j − x_i); one inversion for all the
    // denominators (Montgomery's trick).
    let mut num = vec![Fe::ONE; xs.len()];
    let mut den = vec![Fe::ONE; xs.len()];
    for i in 0..xs.len() {
        for j in 0..xs.len() {
            if i != j {
                num[i] *= xs[j];
                den[i] *= xs[j] - xs[i];
            }
        }
    }
    let mut prefix = Vec::with_capacity(den.len());
    let mut acc = Fe::ONE;
    for d in &den {
        prefix.push(acc);
        acc *= d;
    }
    let mut inv = Option::<Fe>::from(acc.inv()).ok_or(ShamirError::Inconsistent)?;
    let mut lambda = vec![Fe::ZERO; xs.len()];
    for i in (0..xs.len()).rev() {
        lambda[i] = num[i] * (inv * prefix[i]);
        inv *= den[i];
    }
    let mut secret = Zeroizing::new([0u8; SECRET_LEN]);
    for c in 0..CHUNKS {
        let mut acc = Fe::ZERO;
        for (s, l) in chosen.iter().zip(&lambda) {
            let y = U192::from_be_bytes(s.y[c]);
            if y >= *P192_MODULUS {
                return Err(ShamirError::Malformed);
            }
            acc += Fe::new(&y) * l;
        }
        let bytes = Zeroizing::new(acc.retrieve().to_be_bytes());
        if bytes[..FE_LEN - CHUNK_LEN].iter().any(|&b| b != 0) {
            return Err(ShamirError::Inconsistent);
        }
        secret[c * CHUNK_LEN..(c + 1) * CHUNK_LEN].copy_from_slice(&bytes[FE_LEN - CHUNK_LEN..]);
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn any_t_shares_reconstruct() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let secret = [0xabu8; 32];
        let shares = split(&secret, 7, 4, &mut rng).unwrap();
        for start in 0..4 {
            let got = combine(&shares[start..start + 4], 4).unwrap();
            assert_eq!(*got, secret);
        }
        assert_eq!(combine(&shares[..3], 4).unwrap_err(), ShamirError::NotEnoughShares { have: 3, need: 4 });
    }

    #[test]
    fn round_trips_bytes_and_rejects_garbage() {
        let mut rng = ChaCha20Rng::seed_from_u64(8);
        let shares = split(&[1u8; 32], 3, 2, &mut rng).unwrap();
        let b = shares[1].to_bytes();
        assert_eq!(Share::from_bytes(&b).unwrap(), shares[1]);
        assert_eq!(Share::from_bytes(&b[..10]).unwrap_err(), ShamirError::Malformed);
        let mut zero_x = b;
        zero_x[..4].copy_from_slice(&[0; 4]);
        assert_eq!(Share::from_bytes(&zero_x).unwrap_err(), ShamirError::ZeroX);
        let mut big = b;
        big[4..28].copy_from_slice(&[0xff; 24]);
        assert_eq!(Share::from_bytes(&big).unwrap_err(), ShamirError::Malformed);
    }

    #[test]
    fn tampered_share_is_detected() {
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let mut shares = split(&[9u8; 32], 5, 3, &mut rng).unwrap();
        let mut random = [0u8; 24];
        rand::RngCore::fill_bytes(&mut rng, &mut random[1..]);
        shares[0].y[0] = random;
        assert_eq!(combine(&shares[..3], 3).unwrap_err(), ShamirError::Inconsistent);
    }

    #[test]
    fn thresholds_are_checked() {
        let mut rng = ChaCha20Rng::seed_from_u64(10);
        assert_eq!(split(&[0; 32], 3, 4, &mut rng).unwrap_err(), ShamirError::BadThreshold { t: 4, n: 3 });
        assert_eq!(split(&[0; 32], 3, 0, &mut rng).unwrap_err(), ShamirError::BadThreshold { t: 0, n: 3 });
        assert_eq!(split_at(&[0; 32], &[1, 2, 2], 2, &mut rng).unwrap_err(), ShamirError::DuplicateX(2));
    }

    #[test]
    fn more_than_255_parties() {
        let mut rng = ChaCha20Rng::seed_from_u64(11);
        let secret = [0x5au8; 32];
        let shares = split(&secret, 600, 301, &mut rng).unwrap();
        assert_eq!(*combine(&shares[299..], 301).unwrap(), secret);
    }
}
