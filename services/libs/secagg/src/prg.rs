//! Mask expansion: a 32-byte seed → HKDF-SHA256 → AES-128-CTR keystream read as
//! little-endian u32 words, uniform over the ring Z/2^32.
//!
//! The keystream is seekable, so a mask can be applied to any chunk of a vector on its
//! own (word `offset` of the mask is word `offset` of the keystream): the aggregator
//! unmasks chunk by chunk and large vectors are split over threads.

use aes::Aes128;
use ctr::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

type Aes128Ctr = ctr::Ctr128BE<Aes128>;

const SALT: &[u8] = b"phoenix-guardian/secagg/mask/v1";
/// Words per keystream block handed to the cipher at once (16 KiB).
const BLOCK_WORDS: usize = 4096;
/// Vectors shorter than this are masked on the calling thread.
const PARALLEL_MIN_WORDS: usize = 1 << 16;

/// Whether a mask is added to or subtracted from the vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sign {
    Add,
    Sub,
}

impl Sign {
    pub fn flip(self) -> Self {
        match self {
            Sign::Add => Sign::Sub,
            Sign::Sub => Sign::Add,
        }
    }
}

/// The AES key and counter block of one mask, derived from a seed and a context that
/// names the round and the parties.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MaskKey {
    key: [u8; 16],
    iv: [u8; 16],
}

impl std::fmt::Debug for MaskKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MaskKey(..)")
    }
}

impl MaskKey {
    /// Derives a mask key from `seed` (a self-mask seed or an X25519 shared secret) and
    /// `context` (round id and party indices).
    pub fn derive(seed: &[u8; 32], context: &[u8]) -> Self {
        let hk = Hkdf::<Sha256>::new(Some(SALT), seed);
        let mut okm = [0u8; 32];
        hk.expand(context, &mut okm).expect("32 bytes is a valid HKDF-SHA256 output length");
        let mut key = MaskKey { key: [0; 16], iv: [0; 16] };
        key.key.copy_from_slice(&okm[..16]);
        key.iv.copy_from_slice(&okm[16..]);
        okm.zeroize();
        key
    }

    /// Adds (or subtracts) the mask words `offset .. offset + out.len()` to `out`.
    pub fn apply(&self, offset: u64, out: &mut [u32], sign: Sign) {
        let mut cipher = Aes128Ctr::new(&self.key.into(), &self.iv.into());
        cipher.seek(offset * 4);
        let mut buf = [0u8; BLOCK_WORDS * 4];
        for part in out.chunks_mut(BLOCK_WORDS) {
            let bytes = &mut buf[..part.len() * 4];
            bytes.fill(0);
            cipher.apply_keystream(bytes);
            match sign {
                Sign::Add => {
                    for (w, k) in part.iter_mut().zip(bytes.chunks_exact(4)) {
                        *w = w.wrapping_add(u32::from_le_bytes([k[0], k[1], k[2], k[3]]));
                    }
                }
                Sign::Sub => {
                    for (w, k) in part.iter_mut().zip(bytes.chunks_exact(4)) {
                        *w = w.wrapping_sub(u32::from_le_bytes([k[0], k[1], k[2], k[3]]));
                    }
                }
            }
        }
        buf.zeroize();
    }
}

/// Applies every mask in `terms` to `out` (mask words `offset ..`), splitting long
/// vectors over the machine's cores.
pub fn apply_all(terms: &[(MaskKey, Sign)], offset: u64, out: &mut [u32]) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads == 1 || out.len() < PARALLEL_MIN_WORDS || terms.is_empty() {
        for (key, sign) in terms {
            key.apply(offset, out, *sign);
        }
        return;
    }
    let per = out.len().div_ceil(threads);
    std::thread::scope(|scope| {
        for (i, part) in out.chunks_mut(per).enumerate() {
            let start = offset + (i * per) as u64;
            scope.spawn(move || {
                for (key, sign) in terms {
                    key.apply(start, part, *sign);
                }
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_and_threads_see_the_same_mask() {
        let key = MaskKey::derive(&[3; 32], b"ctx");
        let mut whole = vec![0u32; 200_003];
        key.apply(0, &mut whole, Sign::Add);
        let mut pieces = vec![0u32; 200_003];
        for (i, part) in pieces.chunks_mut(1_000).enumerate() {
            key.apply(i as u64 * 1_000, part, Sign::Add);
        }
        assert_eq!(whole, pieces);
        let mut threaded = vec![0u32; 200_003];
        apply_all(&[(key.clone(), Sign::Add)], 0, &mut threaded);
        assert_eq!(whole, threaded);
        apply_all(&[(key, Sign::Sub)], 0, &mut threaded);
        assert!(threaded.iter().all(|&w| w == 0));
    }

    #[test]
    fn contexts_separate_masks() {
        let mut a = vec![0u32; 64];
        let mut b = vec![0u32; 64];
        MaskKey::derive(&[3; 32], b"ctx-a").apply(0, &mut a, Sign::Add);
        MaskKey::derive(&[3; 32], b"ctx-b").apply(0, &mut b, Sign::Add);
        assert_ne!(a, b);
    }
}
