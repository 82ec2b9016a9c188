//! The party (hospital agent) side of a round.

use std::collections::BTreeMap;
use std::sync::Arc;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use rand::CryptoRng;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::SecAggError;
use crate::keys::{agree, fresh_secret, open, seal};
use crate::prg::{MaskKey, Sign, apply_all};
use crate::round::{
    EncryptedShare, KeyAdvert, MaskedChunk, RoundConfig, Secret, SetStage, SignedSets, UnmaskResponse, pair_context,
    seed_commitment, self_context, share_commitment, share_context,
};
use crate::shamir::{SHARE_LEN, Share, split_at};

#[derive(Debug, Clone, Copy)]
struct PeerKeys {
    enc_pk: [u8; 32],
    mask_pk: [u8; 32],
}

/// One party's state for one round. Secrets (the mask key, the self-mask seed, the shares
/// it holds) are wiped when it is dropped.
pub struct Client {
    cfg: Arc<RoundConfig>,
    round_id: [u8; 32],
    me: u32,
    identity: SigningKey,
    enc_sk: StaticSecret,
    mask_sk: StaticSecret,
    self_seed: Zeroizing<[u8; 32]>,
    neighbours: Vec<u32>,
    peers: BTreeMap<u32, PeerKeys>,
    /// Registered verifying keys of the participants (from key sharing on).
    directory: Vec<VerifyingKey>,
    /// Shares this party holds, by owner: (self-mask seed share, mask key share); only
    /// shares that decrypted and matched their dealer's signed commitments.
    held: BTreeMap<u32, (Share, Share)>,
    /// Neighbours whose share to this party was unusable, and why.
    complaints: BTreeMap<u32, &'static str>,
    shared_keys: bool,
    survivors_of_sharing: Option<Vec<u32>>,
    answered: Option<[u8; 32]>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("party", &self.me).field("round", &self.cfg.round).finish_non_exhaustive()
    }
}

impl Client {
    /// Joins a round as party `me` (its index in the participant list), signing with the
    /// hospital's registered `identity` key.
    pub fn new(
        cfg: Arc<RoundConfig>,
        me: u32,
        identity: SigningKey,
        rng: &mut impl CryptoRng,
    ) -> Result<Self, SecAggError> {
        cfg.validate()?;
        if me >= cfg.parties() {
            return Err(SecAggError::UnknownParty(me));
        }
        let neighbours = cfg.graph().swap_remove(me as usize);
        let mut self_seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(self_seed.as_mut());
        Ok(Client {
            round_id: cfg.round_id(),
            cfg,
            me,
            identity,
            enc_sk: fresh_secret(rng),
            mask_sk: fresh_secret(rng),
            self_seed,
            neighbours,
            peers: BTreeMap::new(),
            directory: Vec::new(),
            held: BTreeMap::new(),
            complaints: BTreeMap::new(),
            shared_keys: false,
            survivors_of_sharing: None,
            answered: None,
        })
    }

    pub fn party(&self) -> u32 {
        self.me
    }

    pub fn neighbours(&self) -> &[u32] {
        &self.neighbours
    }

    pub fn round_id(&self) -> [u8; 32] {
        self.round_id
    }

    /// Neighbours whose share to this party failed to decrypt or to match its dealer's
    /// commitments (they were ignored; this party stays in the round).
    pub fn complaints(&self) -> &BTreeMap<u32, &'static str> {
        &self.complaints
    }

    /// Step 1: the signed public keys and seed commitment.
    pub fn advertise(&self) -> KeyAdvert {
        let enc_pk = PublicKey::from(&self.enc_sk).to_bytes();
        let mask_pk = PublicKey::from(&self.mask_sk).to_bytes();
        let seed_commitment = seed_commitment(&self.round_id, self.me, &self.self_seed);
        let signature = self
            .identity
            .sign(&KeyAdvert::signed_bytes(&self.round_id, self.me, &enc_pk, &mask_pk, &seed_commitment))
            .to_bytes();
        KeyAdvert { party: self.me, enc_pk, mask_pk, seed_commitment, signature }
    }

    /// Step 2: given the advertisements seen (any order, duplicates allowed), shares the
    /// self-mask seed and the mask key among the neighbours that advertised, each share
    /// encrypted to its recipient and committed to. `directory` gives each party's
    /// registered key. Advertisements that do not verify are skipped; of two valid but
    /// different ones of a party the first is kept (the aggregator evicts such a party, so
    /// it is not on the lists that follow).
    pub fn share_keys(
        &mut self,
        adverts: &[KeyAdvert],
        directory: &[VerifyingKey],
        rng: &mut impl CryptoRng,
    ) -> Result<Vec<EncryptedShare>, SecAggError> {
        if self.shared_keys {
            return Err(SecAggError::OutOfOrder("keys were already shared in this round"));
        }
        if directory.len() != self.cfg.participants.len() {
            return Err(SecAggError::BadConfig(format!(
                "{} verifying keys for {} participants",
                directory.len(),
                self.cfg.participants.len()
            )));
        }
        for a in adverts {
            if a.party == self.me || self.neighbours.binary_search(&a.party).is_err() {
                continue;
            }
            if a.verify(&self.round_id, &directory[a.party as usize]).is_err() {
                continue;
            }
            self.peers.entry(a.party).or_insert(PeerKeys { enc_pk: a.enc_pk, mask_pk: a.mask_pk });
        }
        self.directory = directory.to_vec();
        let recipients: Vec<u32> = self.peers.keys().copied().collect();
        let need = self.cfg.threshold as usize;
        if recipients.len() + 1 < need {
            return Err(SecAggError::TooFew { stage: "key sharing", have: recipients.len() + 1, need });
        }
        let mut xs: Vec<u32> = recipients.iter().map(|&j| j + 1).collect();
        xs.push(self.me + 1);
        let b_shares = split_at(&self.self_seed, &xs, self.cfg.threshold, rng)?;
        let s_bytes = Zeroizing::new(self.mask_sk.to_bytes());
        let s_shares = split_at(&s_bytes, &xs, self.cfg.threshold, rng)?;
        let mut out = Vec::with_capacity(recipients.len());
        for ((&to, b), s) in recipients.iter().zip(&b_shares).zip(&s_shares) {
            let mut plain = Zeroizing::new(Vec::with_capacity(2 * SHARE_LEN));
            plain.extend_from_slice(&b.to_bytes());
            plain.extend_from_slice(&s.to_bytes());
            let shared = agree(&self.enc_sk, &self.peers[&to].enc_pk, to)?;
            let ciphertext = seal(&shared, &share_context(&self.round_id, self.me, to), &plain);
            let commitments = [
                share_commitment(&self.round_id, self.me, to, Secret::SelfMaskSeed, b),
                share_commitment(&self.round_id, self.me, to, Secret::MaskKey, s),
            ];
            let mut share = EncryptedShare { from: self.me, to, ciphertext, commitments, signature: [0; 64] };
            share.sign(&self.round_id, &self.identity);
            out.push(share);
        }
        let own = recipients.len();
        self.held.insert(self.me, (b_shares[own].clone(), s_shares[own].clone()));
        self.shared_keys = true;
        Ok(out)
    }

    /// Step 3: takes the shares addressed to this party (others are skipped). A record that
    /// is not signed by the neighbour it names is ignored (someone else wrote it). A signed
    /// share that does not decrypt, is malformed or does not match its dealer's commitments
    /// is the dealer's fault: it is ignored and noted in [`Client::complaints`], and this
    /// party stays in the round. Of two valid shares from one dealer the first is kept.
    pub fn receive_shares(&mut self, shares: &[EncryptedShare]) -> Result<(), SecAggError> {
        if !self.shared_keys {
            return Err(SecAggError::OutOfOrder("receiving shares before sharing keys"));
        }
        for msg in shares.iter().filter(|m| m.to == self.me) {
            let Some(peer) = self.peers.get(&msg.from) else { continue };
            if self.held.contains_key(&msg.from)
                || msg.verify(&self.round_id, &self.directory[msg.from as usize]).is_err()
            {
                continue;
            }
            match self.open_share(peer.enc_pk, msg) {
                Ok(pair) => {
                    self.held.insert(msg.from, pair);
                    self.complaints.remove(&msg.from);
                }
                Err(why) => {
                    self.complaints.entry(msg.from).or_insert(why);
                }
            }
        }
        Ok(())
    }

    fn open_share(&self, enc_pk: [u8; 32], msg: &EncryptedShare) -> Result<(Share, Share), &'static str> {
        let shared = agree(&self.enc_sk, &enc_pk, msg.from).map_err(|_| "low-order key")?;
        let plain = open(&shared, &share_context(&self.round_id, msg.from, self.me), &msg.ciphertext, msg.from)
            .map_err(|_| "does not decrypt")?;
        if plain.len() != 2 * SHARE_LEN {
            return Err("wrong length");
        }
        let b = Share::from_bytes(&plain[..SHARE_LEN]).map_err(|_| "malformed")?;
        let s = Share::from_bytes(&plain[SHARE_LEN..]).map_err(|_| "malformed")?;
        if b.x() != self.me + 1 || s.x() != self.me + 1 {
            return Err("addressed to another holder");
        }
        if share_commitment(&self.round_id, msg.from, self.me, Secret::SelfMaskSeed, &b) != msg.commitments[0]
            || share_commitment(&self.round_id, msg.from, self.me, Secret::MaskKey, &s) != msg.commitments[1]
        {
            return Err("does not match the dealer's commitment");
        }
        Ok((b, s))
    }

    /// Step 4: after the aggregator closes key sharing (the signed list of parties whose
    /// shares were all delivered), the masks this party adds: its self mask and one
    /// pairwise mask per neighbour on that list.
    pub fn mask_terms(
        &mut self,
        closed: &SignedSets,
        aggregator: &VerifyingKey,
    ) -> Result<Vec<(MaskKey, Sign)>, SecAggError> {
        closed.verify(&self.round_id, SetStage::SharesClosed, aggregator)?;
        if !self.shared_keys {
            return Err(SecAggError::OutOfOrder("masking before sharing keys"));
        }
        if let Some(seen) = &self.survivors_of_sharing
            && *seen != closed.first
        {
            return Err(SecAggError::Equivocation { party: u32::MAX, what: "two different shares-closed lists" });
        }
        if closed.first.binary_search(&self.me).is_err() {
            return Err(SecAggError::Excluded(self.me));
        }
        let mut terms = vec![(MaskKey::derive(&self.self_seed, &self_context(&self.round_id, self.me)), Sign::Add)];
        for &j in &self.neighbours {
            if closed.first.binary_search(&j).is_err() {
                continue;
            }
            // Holding j's share is not needed to mask with j: if j's share to us was bad,
            // j's masks are recovered from the other holders' shares.
            let peer = self.peers.get(&j).ok_or(SecAggError::MissingShare { owner: j, holder: self.me })?;
            let shared = agree(&self.mask_sk, &peer.mask_pk, j)?;
            let sign = if self.me < j { Sign::Add } else { Sign::Sub };
            terms.push((MaskKey::derive(&shared, &pair_context(&self.round_id, self.me, j)), sign));
        }
        self.survivors_of_sharing = Some(closed.first.clone());
        Ok(terms)
    }

    /// Cuts a masked vector into the round's chunks, signed as one input by this party.
    pub fn chunks(&self, masked: &[u32]) -> Vec<MaskedChunk> {
        self.sign_chunks(self.cfg.chunk_words(masked))
    }

    /// Signs chunks given as their words in index order, as one input of this party (also
    /// how tests and the agent's misbehaviours build inputs the round does not expect).
    pub fn sign_chunks(&self, words: Vec<Vec<u32>>) -> Vec<MaskedChunk> {
        MaskedChunk::sign_input(&self.cfg, &self.round_id, self.me, words, &self.identity)
    }

    /// Masks a whole quantized vector in place (mask words from `offset`).
    pub fn mask(
        &mut self,
        closed: &SignedSets,
        aggregator: &VerifyingKey,
        vector: &mut [u32],
    ) -> Result<(), SecAggError> {
        let terms = self.mask_terms(closed, aggregator)?;
        apply_all(&terms, 0, vector);
        Ok(())
    }

    /// Step 5: answers the aggregator's signed unmask request. Refuses a request whose
    /// survivor and dropped sets overlap, that does not match the shares-closed list, that
    /// leaves fewer than t survivors, or that differs from one already answered.
    pub fn unmask(&mut self, request: &SignedSets, aggregator: &VerifyingKey) -> Result<UnmaskResponse, SecAggError> {
        request.verify(&self.round_id, SetStage::Unmask, aggregator)?;
        let digest = request.digest(&self.round_id);
        if let Some(seen) = self.answered
            && seen != digest
        {
            return Err(SecAggError::Equivocation { party: u32::MAX, what: "two different unmask requests" });
        }
        let shared = self.survivors_of_sharing.as_ref().ok_or(SecAggError::OutOfOrder("unmask before masking"))?;
        let (survivors, dropped) = (&request.first, &request.second);
        if survivors.iter().any(|p| dropped.binary_search(p).is_ok()) {
            return Err(SecAggError::Violation("a party is listed both as survivor and as dropped".into()));
        }
        let mut union: Vec<u32> = survivors.iter().chain(dropped).copied().collect();
        union.sort_unstable();
        if union != *shared || !survivors.is_sorted() || !dropped.is_sorted() {
            return Err(SecAggError::Violation("survivors and dropped do not partition the shares-closed list".into()));
        }
        if survivors.len() < self.cfg.threshold as usize {
            return Err(SecAggError::TooFew {
                stage: "unmasking",
                have: survivors.len(),
                need: self.cfg.threshold as usize,
            });
        }
        if survivors.binary_search(&self.me).is_err() {
            return Err(SecAggError::Excluded(self.me));
        }
        let (mut seeds, mut keys) = (Vec::new(), Vec::new());
        for (&owner, (b, s)) in &self.held {
            if survivors.binary_search(&owner).is_ok() {
                seeds.push((owner, b.clone()));
            } else if dropped.binary_search(&owner).is_ok() {
                keys.push((owner, s.clone()));
            }
        }
        self.answered = Some(digest);
        let complaints = self.complaints.keys().copied().collect();
        Ok(UnmaskResponse::sign(&self.round_id, self.me, seeds, keys, complaints, &self.identity))
    }
}
