//! Key agreement and share encryption: X25519 → HKDF-SHA256 → ChaCha20-Poly1305.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use rand::CryptoRng;
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::SecAggError;

const SHARE_SALT: &[u8] = b"phoenix-guardian/secagg/share/v1";

/// A fresh X25519 secret drawn from `rng` (zeroized on drop by x25519-dalek).
pub fn fresh_secret(rng: &mut impl CryptoRng) -> StaticSecret {
    let mut bytes = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(bytes.as_mut());
    StaticSecret::from(*bytes)
}

/// The X25519 shared secret of `sk` and `pk`, refusing low-order public keys (they give
/// an all-zero secret an attacker could predict).
pub fn agree(sk: &StaticSecret, pk: &[u8; 32], party: u32) -> Result<Zeroizing<[u8; 32]>, SecAggError> {
    let shared = sk.diffie_hellman(&PublicKey::from(*pk));
    if !shared.was_contributory() {
        return Err(SecAggError::WeakKey { party });
    }
    Ok(Zeroizing::new(shared.to_bytes()))
}

fn share_cipher(shared: &[u8; 32], context: &[u8]) -> ChaCha20Poly1305 {
    let hk = Hkdf::<Sha256>::new(Some(SHARE_SALT), shared);
    let mut key = Zeroizing::new([0u8; 32]);
    hk.expand(context, key.as_mut()).expect("32 bytes is a valid HKDF-SHA256 output length");
    ChaCha20Poly1305::new(Key::from_slice(key.as_ref()))
}

/// Encrypts `plaintext` under a key used for exactly this (round, sender, recipient): the
/// context is both the HKDF info and the associated data, so the all-zero nonce is never
/// reused with one key.
pub fn seal(shared: &[u8; 32], context: &[u8], plaintext: &[u8]) -> Vec<u8> {
    share_cipher(shared, context)
        .encrypt(Nonce::from_slice(&[0u8; 12]), Payload { msg: plaintext, aad: context })
        .expect("ChaCha20-Poly1305 encryption of an in-memory buffer does not fail")
}

pub fn open(
    shared: &[u8; 32],
    context: &[u8],
    ciphertext: &[u8],
    from: u32,
) -> Result<Zeroizing<Vec<u8>>, SecAggError> {
    share_cipher(shared, context)
        .decrypt(Nonce::from_slice(&[0u8; 12]), Payload { msg: ciphertext, aad: context })
        .map(Zeroizing::new)
        .map_err(|_| SecAggError::Undecryptable { from })
}
