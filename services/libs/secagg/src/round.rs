//! A round's configuration and the messages of the protocol, with the bytes each
//! signature covers.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::SecAggError;
use crate::merkle;
use crate::quantize::Quantizer;
use crate::shamir::Share;

/// Everything the parties agree on before a round starts. The round id (a hash of all of
/// it) is bound into every key derivation and signature, so no message of one round is
/// accepted in another.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundConfig {
    pub session: String,
    pub round: u64,
    pub model_version: u64,
    /// Hospital ids; a party's index is its position here.
    pub participants: Vec<String>,
    /// Shamir threshold t, and the fewest survivors a round may finish with.
    pub threshold: u32,
    /// Neighbours per party in the SecAgg+ graph (n − 1 gives the complete graph).
    pub neighbours: u32,
    /// Length of the update vector, and the words per streamed chunk.
    pub dimension: u64,
    pub chunk_len: u32,
    pub clipping_range: f32,
    pub quantization_levels: u32,
    /// Differential privacy applied by the agents: L2 clip norm and noise multiplier.
    pub clip_norm: f64,
    pub noise_multiplier: f64,
    /// Seed of the neighbour graph.
    pub graph_seed: [u8; 32],
}

impl RoundConfig {
    pub fn parties(&self) -> u32 {
        self.participants.len() as u32
    }

    pub fn chunks(&self) -> u32 {
        self.dimension.div_ceil(u64::from(self.chunk_len)) as u32
    }

    /// Offset and length of chunk `index`.
    pub fn chunk_range(&self, index: u32) -> (u64, usize) {
        let start = u64::from(index) * u64::from(self.chunk_len);
        let len = (self.dimension - start).min(u64::from(self.chunk_len)) as usize;
        (start, len)
    }

    /// A whole vector cut into the round's chunks (`v` is `dimension` words long).
    pub fn chunk_words(&self, v: &[u32]) -> Vec<Vec<u32>> {
        (0..self.chunks())
            .map(|index| {
                let (start, len) = self.chunk_range(index);
                v[start as usize..start as usize + len].to_vec()
            })
            .collect()
    }

    pub fn quantizer(&self) -> Result<Quantizer, SecAggError> {
        Ok(Quantizer::new(self.clipping_range, self.quantization_levels, u64::from(self.parties()))?)
    }

    /// Checks the settings that would make a round unsafe or impossible.
    pub fn validate(&self) -> Result<(), SecAggError> {
        let n = self.parties();
        let bad = |why: String| Err(SecAggError::BadConfig(why));
        if n < 2 {
            return bad(format!("a round needs at least 2 participants, got {n}"));
        }
        let mut ids = self.participants.clone();
        ids.sort();
        if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
            return bad(format!("participant {} is listed twice", w[0]));
        }
        let k = self.neighbours.min(n - 1);
        if k < 2 && n > 2 {
            return bad(format!("{} neighbours is too few (at least 2)", self.neighbours));
        }
        if self.threshold < 2 || self.threshold > k + 1 {
            return bad(format!(
                "threshold {} must be between 2 and neighbours + 1 = {} (a party's secrets are shared among its neighbours and itself)",
                self.threshold,
                k + 1
            ));
        }
        if self.dimension == 0 || self.chunk_len == 0 {
            return bad("dimension and chunk length must be positive".into());
        }
        if !(self.clip_norm.is_finite() && self.clip_norm > 0.0) {
            return bad(format!("clip norm must be positive, got {}", self.clip_norm));
        }
        if !(self.noise_multiplier.is_finite() && self.noise_multiplier >= 0.0) {
            return bad(format!("noise multiplier must be non-negative, got {}", self.noise_multiplier));
        }
        self.quantizer()?;
        Ok(())
    }

    /// SHA-256 over a length-prefixed encoding of every field.
    pub fn round_id(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"phoenix-guardian/secagg/round/v1");
        let mut field = |bytes: &[u8]| {
            h.update((bytes.len() as u64).to_be_bytes());
            h.update(bytes);
        };
        field(self.session.as_bytes());
        field(&self.round.to_be_bytes());
        field(&self.model_version.to_be_bytes());
        field(&(self.participants.len() as u64).to_be_bytes());
        for p in &self.participants {
            field(p.as_bytes());
        }
        field(&self.threshold.to_be_bytes());
        field(&self.neighbours.to_be_bytes());
        field(&self.dimension.to_be_bytes());
        field(&self.chunk_len.to_be_bytes());
        field(&self.clipping_range.to_be_bytes());
        field(&self.quantization_levels.to_be_bytes());
        field(&self.clip_norm.to_be_bytes());
        field(&self.noise_multiplier.to_be_bytes());
        field(&self.graph_seed);
        h.finalize().into()
    }

    /// The neighbour graph of the round.
    pub fn graph(&self) -> Vec<Vec<u32>> {
        crate::graph::neighbours(self.parties(), self.neighbours, self.graph_seed)
    }
}

/// A party's two X25519 public keys (share encryption, pairwise masks) and a commitment
/// to its self-mask seed, signed with its registered Ed25519 key. The commitment is what
/// a reconstructed seed is checked against: shares that interpolate to anything else are
/// the dealer's fault, never silently used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyAdvert {
    pub party: u32,
    pub enc_pk: [u8; 32],
    pub mask_pk: [u8; 32],
    pub seed_commitment: [u8; 32],
    pub signature: [u8; 64],
}

impl KeyAdvert {
    pub(crate) fn signed_bytes(
        round_id: &[u8; 32],
        party: u32,
        enc_pk: &[u8; 32],
        mask_pk: &[u8; 32],
        seed_commitment: &[u8; 32],
    ) -> Vec<u8> {
        let mut m = Vec::with_capacity(160);
        m.extend_from_slice(b"secagg/advert/v2");
        m.extend_from_slice(round_id);
        m.extend_from_slice(&party.to_be_bytes());
        m.extend_from_slice(enc_pk);
        m.extend_from_slice(mask_pk);
        m.extend_from_slice(seed_commitment);
        m
    }

    pub fn verify(&self, round_id: &[u8; 32], key: &VerifyingKey) -> Result<(), SecAggError> {
        let m = Self::signed_bytes(round_id, self.party, &self.enc_pk, &self.mask_pk, &self.seed_commitment);
        verify(key, &m, &self.signature, "key advertisement", self.party)
    }
}

fn verify(
    key: &VerifyingKey,
    message: &[u8],
    signature: &[u8; 64],
    what: &'static str,
    party: u32,
) -> Result<(), SecAggError> {
    key.verify(message, &Signature::from_bytes(signature)).map_err(|_| SecAggError::BadSignature { what, party })
}

/// SHA-256 over a domain string and length-prefixed fields.
pub(crate) fn digest(domain: &[u8], fields: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(domain);
    for f in fields {
        h.update((f.len() as u64).to_be_bytes());
        h.update(f);
    }
    h.finalize().into()
}

/// The commitment to a party's self-mask seed published in its advertisement. The seed is
/// 32 uniformly random bytes, so the hash reveals nothing about it.
pub fn seed_commitment(round_id: &[u8; 32], party: u32, seed: &[u8; 32]) -> [u8; 32] {
    digest(b"secagg/seed-commitment/v1", &[round_id, &party.to_be_bytes(), seed])
}

/// Which of a party's two secrets a share belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secret {
    SelfMaskSeed,
    MaskKey,
}

/// The commitment to one share, signed by its dealer in the share record: the recipient
/// checks what it decrypts against it, and the aggregator checks what the recipient
/// reveals at unmasking. A share's coordinates are uniform field elements (t ≥ 2), so the
/// hash reveals nothing about the secret.
pub fn share_commitment(round_id: &[u8; 32], owner: u32, holder: u32, secret: Secret, share: &Share) -> [u8; 32] {
    let which: &[u8] = match secret {
        Secret::SelfMaskSeed => b"seed",
        Secret::MaskKey => b"key",
    };
    digest(
        b"secagg/share-commitment/v1",
        &[round_id, &owner.to_be_bytes(), &holder.to_be_bytes(), which, &share.to_bytes()],
    )
}

/// Shares of a party's self-mask seed and mask key, encrypted to one neighbour, with the
/// dealer's commitments to both shares, signed by the dealer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedShare {
    pub from: u32,
    pub to: u32,
    pub ciphertext: Vec<u8>,
    /// Commitments to the seed share and the mask-key share ([`share_commitment`]).
    pub commitments: [[u8; 32]; 2],
    pub signature: [u8; 64],
}

impl EncryptedShare {
    pub(crate) fn signed_bytes(
        round_id: &[u8; 32],
        from: u32,
        to: u32,
        commitments: &[[u8; 32]; 2],
        ciphertext: &[u8],
    ) -> [u8; 32] {
        let ct = Sha256::digest(ciphertext);
        digest(
            b"secagg/share/v1",
            &[round_id, &from.to_be_bytes(), &to.to_be_bytes(), &commitments[0], &commitments[1], &ct],
        )
    }

    /// Signs the record as it stands with `key` (a dealer after building it; tests and
    /// fault injection after changing it).
    pub fn sign(&mut self, round_id: &[u8; 32], key: &SigningKey) {
        let m = Self::signed_bytes(round_id, self.from, self.to, &self.commitments, &self.ciphertext);
        self.signature = key.sign(&m).to_bytes();
    }

    pub fn verify(&self, round_id: &[u8; 32], dealer: &VerifyingKey) -> Result<(), SecAggError> {
        let m = Self::signed_bytes(round_id, self.from, self.to, &self.commitments, &self.ciphertext);
        verify(dealer, &m, &self.signature, "encrypted share", self.from)
    }
}

/// One chunk of a party's masked, quantized update. The party signs its whole input once:
/// the root of the hash tree over its chunks ([`crate::merkle`]), bound to the round, the
/// party, the chunk count and the dimension. Each chunk carries that signature and the
/// proof from its own leaf to the root, so it is checked on its own, in any order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskedChunk {
    pub party: u32,
    pub index: u32,
    pub words: Vec<u32>,
    /// Sibling digests from this chunk's leaf up to the root.
    pub proof: Vec<merkle::Digest>,
    pub signature: [u8; 64],
}

/// What a chunk's words and proof hash to: its leaf, and the root its proof leads to
/// (None when the proof cannot belong to the round's tree). Computed without the
/// aggregator's state, so it can be done for many chunks at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proven {
    pub leaf: merkle::Digest,
    pub root: Option<merkle::Digest>,
}

impl MaskedChunk {
    /// What the party signs: the root of its input tree in the round's context.
    pub(crate) fn signed_bytes(cfg: &RoundConfig, round_id: &[u8; 32], party: u32, root: &merkle::Digest) -> [u8; 32] {
        digest(
            b"secagg/input/v2",
            &[round_id, &party.to_be_bytes(), &cfg.chunks().to_be_bytes(), &cfg.dimension.to_be_bytes(), root],
        )
    }

    /// Signs a party's whole input, given as its chunks' words in index order (what a
    /// client does; also how tests build forgeries and malformed inputs): one signature
    /// over the root, a proof per chunk. A tree of another size than the round's chunk
    /// count yields proofs the aggregator refuses.
    pub fn sign_input(
        cfg: &RoundConfig,
        round_id: &[u8; 32],
        party: u32,
        chunks: Vec<Vec<u32>>,
        key: &SigningKey,
    ) -> Vec<Self> {
        let leaves: Vec<merkle::Digest> = chunks.iter().map(|w| merkle::leaf(w)).collect();
        let (root, proofs) = merkle::tree(&leaves);
        let signature = key.sign(&Self::signed_bytes(cfg, round_id, party, &root)).to_bytes();
        chunks
            .into_iter()
            .zip(proofs)
            .enumerate()
            .map(|(index, (words, proof))| MaskedChunk { party, index: index as u32, words, proof, signature })
            .collect()
    }

    /// Hashes the words and walks the proof (the costly part of checking a chunk).
    pub fn prove(&self, cfg: &RoundConfig) -> Proven {
        let leaf = merkle::leaf(&self.words);
        Proven { leaf, root: merkle::root_from(self.index, cfg.chunks(), &leaf, &self.proof) }
    }

    /// Checks that the chunk belongs to an input signed by `key` for this round and party.
    pub fn verify(&self, cfg: &RoundConfig, round_id: &[u8; 32], key: &VerifyingKey) -> Result<(), SecAggError> {
        let root =
            self.prove(cfg).root.ok_or(SecAggError::BadSignature { what: "update chunk proof", party: self.party })?;
        self.verify_root(cfg, round_id, &root, key)
    }

    /// Checks the chunk's signature over `root` (from [`MaskedChunk::prove`]).
    pub fn verify_root(
        &self,
        cfg: &RoundConfig,
        round_id: &[u8; 32],
        root: &merkle::Digest,
        key: &VerifyingKey,
    ) -> Result<(), SecAggError> {
        let m = Self::signed_bytes(cfg, round_id, self.party, root);
        verify(key, &m, &self.signature, "update chunk", self.party)
    }
}

/// Why the aggregator put a party out of a round: a record signed by that party that
/// contradicts another it signed for the same slot, or that breaks the round's rules.
/// Listed in the aggregator's signed lists, so the evidence is part of the round's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eviction {
    pub party: u32,
    pub reason: String,
}

/// A list of parties the aggregator commits to, signed by it: who shared keys (U2), or who
/// survived and who dropped (U3 and U2 \ U3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedSets {
    pub stage: SetStage,
    pub first: Vec<u32>,
    pub second: Vec<u32>,
    /// Parties put out of the round so far, and why.
    pub evicted: Vec<Eviction>,
    pub signature: [u8; 64],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetStage {
    /// `first` = parties whose shares were all delivered; `second` empty.
    SharesClosed,
    /// `first` = survivors, `second` = dropped after sharing keys.
    Unmask,
}

impl SignedSets {
    fn bytes(round_id: &[u8; 32], stage: SetStage, first: &[u32], second: &[u32], evicted: &[Eviction]) -> Vec<u8> {
        let mut m = Vec::with_capacity(64 + 4 * (first.len() + second.len()));
        m.extend_from_slice(match stage {
            SetStage::SharesClosed => b"secagg/shares-closed/v2",
            SetStage::Unmask => b"secagg/unmask-request/v2",
        });
        m.extend_from_slice(round_id);
        for list in [first, second] {
            m.extend_from_slice(&(list.len() as u32).to_be_bytes());
            for p in list {
                m.extend_from_slice(&p.to_be_bytes());
            }
        }
        m.extend_from_slice(&(evicted.len() as u32).to_be_bytes());
        for e in evicted {
            m.extend_from_slice(&e.party.to_be_bytes());
            m.extend_from_slice(&(e.reason.len() as u64).to_be_bytes());
            m.extend_from_slice(e.reason.as_bytes());
        }
        m
    }

    pub fn sign(
        round_id: &[u8; 32],
        stage: SetStage,
        first: Vec<u32>,
        second: Vec<u32>,
        evicted: Vec<Eviction>,
        key: &SigningKey,
    ) -> Self {
        let signature = key.sign(&Self::bytes(round_id, stage, &first, &second, &evicted)).to_bytes();
        SignedSets { stage, first, second, evicted, signature }
    }

    pub fn verify(&self, round_id: &[u8; 32], stage: SetStage, key: &VerifyingKey) -> Result<(), SecAggError> {
        if self.stage != stage {
            return Err(SecAggError::WrongStage { expected: stage_name(stage), got: stage_name(self.stage) });
        }
        let m = Self::bytes(round_id, stage, &self.first, &self.second, &self.evicted);
        key.verify(&m, &Signature::from_bytes(&self.signature)).map_err(|_| SecAggError::BadAggregatorSignature)
    }

    /// Digest of the signed content, to recognise the same request seen twice.
    pub(crate) fn digest(&self, round_id: &[u8; 32]) -> [u8; 32] {
        Sha256::digest(Self::bytes(round_id, self.stage, &self.first, &self.second, &self.evicted)).into()
    }
}

fn stage_name(s: SetStage) -> &'static str {
    match s {
        SetStage::SharesClosed => "shares-closed",
        SetStage::Unmask => "unmask-request",
    }
}

/// A survivor's answer to the unmask request: for each neighbour that survived, its share
/// of that neighbour's self-mask seed; for each neighbour that dropped, its share of that
/// neighbour's mask key. Never both for one neighbour. Signed by the survivor, bound to the
/// round (a survivor answers one unmask request per round).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnmaskResponse {
    pub party: u32,
    pub self_mask_shares: Vec<(u32, Share)>,
    pub key_shares: Vec<(u32, Share)>,
    /// Neighbours whose share to this party was unusable (see [`crate::Client::complaints`]).
    pub complaints: Vec<u32>,
    pub signature: [u8; 64],
}

impl UnmaskResponse {
    pub(crate) fn signed_bytes(
        round_id: &[u8; 32],
        party: u32,
        self_mask_shares: &[(u32, Share)],
        key_shares: &[(u32, Share)],
        complaints: &[u32],
    ) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"secagg/unmask-response/v1");
        h.update(round_id);
        h.update(party.to_be_bytes());
        for list in [self_mask_shares, key_shares] {
            h.update((list.len() as u32).to_be_bytes());
            for (owner, share) in list {
                h.update(owner.to_be_bytes());
                h.update(share.to_bytes());
            }
        }
        h.update((complaints.len() as u32).to_be_bytes());
        for c in complaints {
            h.update(c.to_be_bytes());
        }
        h.finalize().into()
    }

    pub fn sign(
        round_id: &[u8; 32],
        party: u32,
        self_mask_shares: Vec<(u32, Share)>,
        key_shares: Vec<(u32, Share)>,
        complaints: Vec<u32>,
        key: &SigningKey,
    ) -> Self {
        let m = Self::signed_bytes(round_id, party, &self_mask_shares, &key_shares, &complaints);
        let signature = key.sign(&m).to_bytes();
        UnmaskResponse { party, self_mask_shares, key_shares, complaints, signature }
    }

    pub fn verify(&self, round_id: &[u8; 32], key: &VerifyingKey) -> Result<(), SecAggError> {
        let m = Self::signed_bytes(round_id, self.party, &self.self_mask_shares, &self.key_shares, &self.complaints);
        verify(key, &m, &self.signature, "unmask response", self.party)
    }
}

/// Context strings of the key derivations.
pub(crate) fn pair_context(round_id: &[u8; 32], a: u32, b: u32) -> Vec<u8> {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    let mut c = b"pair".to_vec();
    c.extend_from_slice(round_id);
    c.extend_from_slice(&lo.to_be_bytes());
    c.extend_from_slice(&hi.to_be_bytes());
    c
}

pub(crate) fn self_context(round_id: &[u8; 32], party: u32) -> Vec<u8> {
    let mut c = b"self".to_vec();
    c.extend_from_slice(round_id);
    c.extend_from_slice(&party.to_be_bytes());
    c
}

pub(crate) fn share_context(round_id: &[u8; 32], from: u32, to: u32) -> Vec<u8> {
    let mut c = b"share".to_vec();
    c.extend_from_slice(round_id);
    c.extend_from_slice(&from.to_be_bytes());
    c.extend_from_slice(&to.to_be_bytes());
    c
}
