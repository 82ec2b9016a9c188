//! The aggregator side of a round. It sees public keys, ciphertexts it cannot open,
//! masked chunks and, at the end, exactly the shares needed to remove the masks: the sum
//! is all it learns.
//!
//! Memory is O(model size): chunks are added to one running sum as they arrive. A party
//! that delivered only part of its chunks is dropped, and its partial chunks must be
//! subtracted again ([`Server::subtract_chunk`], fed from the topic) before the round
//! can finish.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use ed25519_dalek::{SigningKey, VerifyingKey};
use x25519_dalek::{PublicKey, StaticSecret};

use crate::SecAggError;
use crate::keys::agree;
use crate::prg::{MaskKey, Sign, apply_all};
use crate::round::{
    EncryptedShare, KeyAdvert, MaskedChunk, RoundConfig, SetStage, SignedSets, UnmaskResponse, pair_context,
    self_context,
};
use crate::shamir::{Share, combine};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Keys,
    Shares,
    Inputs,
    Unmask,
}

/// The outcome of a finished round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundSum {
    /// The sum over the survivors of their quantized updates, in the ring Z/2^32.
    pub sum: Vec<u32>,
    pub survivors: Vec<u32>,
    pub dropped: Vec<u32>,
}

/// Whether a message changed the state or was a duplicate of one already taken (replays
/// and redeliveries are ignored, never double-counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    New,
    Duplicate,
}

pub struct Server {
    cfg: Arc<RoundConfig>,
    round_id: [u8; 32],
    /// None when replaying: the lists come signed from the topic instead.
    identity: Option<SigningKey>,
    aggregator: VerifyingKey,
    directory: Vec<VerifyingKey>,
    graph: Vec<Vec<u32>>,
    stage: Stage,
    adverts: BTreeMap<u32, KeyAdvert>,
    advertised: Vec<u32>,
    share_routes: BTreeMap<u32, BTreeSet<u32>>,
    shares_closed: Vec<u32>,
    sum: Vec<u32>,
    /// Per party of the shares-closed list: which chunks were added to the sum.
    chunks: BTreeMap<u32, Vec<bool>>,
    survivors: Vec<u32>,
    dropped: Vec<u32>,
    responded: BTreeSet<u32>,
    seed_shares: BTreeMap<u32, Vec<Share>>,
    key_shares: BTreeMap<u32, Vec<Share>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("round", &self.cfg.round).field("stage", &self.stage).finish_non_exhaustive()
    }
}

impl Server {
    /// Opens a round. `directory[i]` is participant i's registered verifying key;
    /// `identity` signs the aggregator's lists.
    pub fn new(cfg: Arc<RoundConfig>, identity: SigningKey, directory: Vec<VerifyingKey>) -> Result<Self, SecAggError> {
        let aggregator = identity.verifying_key();
        Self::build(cfg, Some(identity), aggregator, directory)
    }

    /// A server that recomputes a recorded round: instead of deciding when each stage
    /// closes, it adopts the lists the aggregator signed at the time
    /// ([`Server::adopt_keys_closed`], [`Server::adopt_shares_closed`],
    /// [`Server::adopt_unmask`]), so the result is the recorded round's, bit for bit.
    pub fn replay(
        cfg: Arc<RoundConfig>,
        aggregator: VerifyingKey,
        directory: Vec<VerifyingKey>,
    ) -> Result<Self, SecAggError> {
        Self::build(cfg, None, aggregator, directory)
    }

    fn build(
        cfg: Arc<RoundConfig>,
        identity: Option<SigningKey>,
        aggregator: VerifyingKey,
        directory: Vec<VerifyingKey>,
    ) -> Result<Self, SecAggError> {
        cfg.validate()?;
        if directory.len() != cfg.participants.len() {
            return Err(SecAggError::BadConfig(format!(
                "{} verifying keys for {} participants",
                directory.len(),
                cfg.participants.len()
            )));
        }
        Ok(Server {
            round_id: cfg.round_id(),
            graph: cfg.graph(),
            sum: vec![0; cfg.dimension as usize],
            cfg,
            identity,
            aggregator,
            directory,
            stage: Stage::Keys,
            adverts: BTreeMap::new(),
            advertised: Vec::new(),
            share_routes: BTreeMap::new(),
            shares_closed: Vec::new(),
            chunks: BTreeMap::new(),
            survivors: Vec::new(),
            dropped: Vec::new(),
            responded: BTreeSet::new(),
            seed_shares: BTreeMap::new(),
            key_shares: BTreeMap::new(),
        })
    }

    pub fn config(&self) -> &RoundConfig {
        &self.cfg
    }

    pub fn round_id(&self) -> [u8; 32] {
        self.round_id
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.aggregator
    }

    fn signer(&self) -> Result<&SigningKey, SecAggError> {
        self.identity
            .as_ref()
            .ok_or(SecAggError::OutOfOrder("a replaying server adopts recorded lists, it does not sign"))
    }

    /// Parties whose key advertisement was taken.
    pub fn advertised(&self) -> Vec<u32> {
        self.adverts.keys().copied().collect()
    }

    /// True when every participant has advertised its keys.
    pub fn keys_complete(&self) -> bool {
        self.adverts.len() == self.cfg.participants.len()
    }

    /// True when every advertised party has sent a share to each advertised neighbour.
    pub fn shares_complete(&self) -> bool {
        self.stage == Stage::Shares && self.advertised.iter().all(|&i| self.sent_all_shares(i))
    }

    /// True when party `i` sent a share to every neighbour that advertised keys, and those
    /// neighbours are enough (with `i` itself) to hold t shares. A party short of
    /// neighbours cannot share (its client refuses), and with none to send to, "sent all"
    /// would otherwise hold for a party that never took part in the stage.
    fn sent_all_shares(&self, i: u32) -> bool {
        let sent = self.share_routes.get(&i);
        let holders: Vec<&u32> =
            self.graph[i as usize].iter().filter(|j| self.advertised.binary_search(j).is_ok()).collect();
        holders.len() + 1 >= self.cfg.threshold as usize && holders.iter().all(|j| sent.is_some_and(|s| s.contains(j)))
    }

    /// True when every party on the shares-closed list has sent all its chunks.
    pub fn inputs_complete(&self) -> bool {
        self.stage == Stage::Inputs && self.chunks.values().all(|seen| seen.iter().all(|&s| s))
    }

    /// True when every survivor has answered the unmask request.
    pub fn unmask_complete(&self) -> bool {
        self.stage == Stage::Unmask && self.responded.len() == self.survivors.len()
    }

    /// Adopts a recorded keys-closed list (replay).
    pub fn adopt_keys_closed(&mut self, parties: &[u32]) -> Result<(), SecAggError> {
        self.expect(Stage::Keys)?;
        let mut list = parties.to_vec();
        list.sort_unstable();
        list.dedup();
        if let Some(p) = list.iter().find(|p| !self.adverts.contains_key(p)) {
            return Err(SecAggError::Violation(format!(
                "recorded keys-closed list names party {p}, whose keys are missing"
            )));
        }
        self.need("key advertisement", list.len())?;
        self.advertised = list;
        self.stage = Stage::Shares;
        Ok(())
    }

    /// Adopts a recorded, signed shares-closed list (replay).
    pub fn adopt_shares_closed(&mut self, closed: &SignedSets) -> Result<(), SecAggError> {
        self.expect(Stage::Shares)?;
        closed.verify(&self.round_id, SetStage::SharesClosed, &self.aggregator)?;
        if let Some(p) = closed.first.iter().find(|p| self.advertised.binary_search(p).is_err()) {
            return Err(SecAggError::Violation(format!(
                "recorded shares-closed list names party {p}, which did not advertise"
            )));
        }
        self.need("key sharing", closed.first.len())?;
        let chunks = self.cfg.chunks() as usize;
        self.chunks = closed.first.iter().map(|&p| (p, vec![false; chunks])).collect();
        self.shares_closed = closed.first.clone();
        self.stage = Stage::Inputs;
        Ok(())
    }

    /// Adopts a recorded, signed unmask request (replay). Survivors must have every chunk
    /// in the sum and dropped parties none (a replay only feeds the survivors' chunks).
    pub fn adopt_unmask(&mut self, request: &SignedSets) -> Result<(), SecAggError> {
        self.expect(Stage::Inputs)?;
        request.verify(&self.round_id, SetStage::Unmask, &self.aggregator)?;
        let mut union: Vec<u32> = request.first.iter().chain(&request.second).copied().collect();
        union.sort_unstable();
        if union != self.shares_closed || request.first.iter().any(|p| request.second.binary_search(p).is_ok()) {
            return Err(SecAggError::Violation(
                "recorded survivors and dropped do not partition the shares-closed list".into(),
            ));
        }
        for (p, seen) in &self.chunks {
            let survivor = request.first.binary_search(p).is_ok();
            if survivor && !seen.iter().all(|&s| s) {
                return Err(SecAggError::Violation(format!(
                    "survivor {p}'s input is incomplete in the replayed topic"
                )));
            }
            if !survivor && seen.iter().any(|&s| s) {
                return Err(SecAggError::Violation(format!("dropped party {p}'s chunks were fed to the replay")));
            }
        }
        self.need("masked input", request.first.len())?;
        self.survivors = request.first.clone();
        self.dropped = request.second.clone();
        self.stage = Stage::Unmask;
        Ok(())
    }

    fn expect(&self, stage: Stage) -> Result<(), SecAggError> {
        if self.stage != stage {
            return Err(SecAggError::OutOfOrder(match stage {
                Stage::Keys => "key advertisements are closed",
                Stage::Shares => "not collecting shares",
                Stage::Inputs => "not collecting masked inputs",
                Stage::Unmask => "not collecting unmask shares",
            }));
        }
        Ok(())
    }

    fn need(&self, stage: &'static str, have: usize) -> Result<(), SecAggError> {
        let need = self.cfg.threshold as usize;
        if have < need { Err(SecAggError::TooFew { stage, have, need }) } else { Ok(()) }
    }

    pub fn receive_advert(&mut self, advert: &KeyAdvert) -> Result<Accepted, SecAggError> {
        self.expect(Stage::Keys)?;
        let key = self.directory.get(advert.party as usize).ok_or(SecAggError::UnknownParty(advert.party))?;
        advert.verify(&self.round_id, key)?;
        match self.adverts.get(&advert.party) {
            Some(seen) if seen == advert => Ok(Accepted::Duplicate),
            Some(_) => Err(SecAggError::Equivocation { party: advert.party, what: "two different key advertisements" }),
            None => {
                self.adverts.insert(advert.party, advert.clone());
                Ok(Accepted::New)
            }
        }
    }

    /// Ends key advertisement (at the deadline or when every party advertised).
    pub fn close_keys(&mut self) -> Result<Vec<u32>, SecAggError> {
        self.expect(Stage::Keys)?;
        self.need("key advertisement", self.adverts.len())?;
        self.advertised = self.adverts.keys().copied().collect();
        self.stage = Stage::Shares;
        Ok(self.advertised.clone())
    }

    /// Records an encrypted share on its way from one party to a neighbour (the transport
    /// delivers it; the aggregator cannot read it).
    pub fn receive_share(&mut self, share: &EncryptedShare) -> Result<Accepted, SecAggError> {
        self.expect(Stage::Shares)?;
        for p in [share.from, share.to] {
            if self.advertised.binary_search(&p).is_err() {
                return Err(SecAggError::UnknownParty(p));
            }
        }
        if self.graph[share.from as usize].binary_search(&share.to).is_err() {
            return Err(SecAggError::NotNeighbour { from: share.from, to: share.to });
        }
        let fresh = self.share_routes.entry(share.from).or_default().insert(share.to);
        Ok(if fresh { Accepted::New } else { Accepted::Duplicate })
    }

    /// Ends key sharing: the parties that delivered a share to every advertised neighbour
    /// may contribute. Returns the signed list the parties mask against.
    pub fn close_shares(&mut self) -> Result<SignedSets, SecAggError> {
        self.expect(Stage::Shares)?;
        let signer = self.signer()?.clone();
        let complete: Vec<u32> = self.advertised.iter().copied().filter(|&i| self.sent_all_shares(i)).collect();
        self.need("key sharing", complete.len())?;
        let chunks = self.cfg.chunks() as usize;
        self.chunks = complete.iter().map(|&p| (p, vec![false; chunks])).collect();
        self.shares_closed = complete.clone();
        self.stage = Stage::Inputs;
        Ok(SignedSets::sign(&self.round_id, SetStage::SharesClosed, complete, Vec::new(), &signer))
    }

    fn check_chunk(&self, chunk: &MaskedChunk) -> Result<std::ops::Range<usize>, SecAggError> {
        if !self.chunks.contains_key(&chunk.party) {
            return Err(SecAggError::Excluded(chunk.party));
        }
        if chunk.index >= self.cfg.chunks() {
            return Err(SecAggError::BadChunk { party: chunk.party, index: chunk.index, why: "index past the end" });
        }
        let (start, len) = self.cfg.chunk_range(chunk.index);
        if chunk.words.len() != len {
            return Err(SecAggError::BadChunk { party: chunk.party, index: chunk.index, why: "wrong length" });
        }
        Ok(start as usize..start as usize + len)
    }

    /// Adds a masked chunk to the running sum (once per party and chunk).
    pub fn receive_chunk(&mut self, chunk: &MaskedChunk) -> Result<Accepted, SecAggError> {
        self.expect(Stage::Inputs)?;
        let range = self.check_chunk(chunk)?;
        let seen = &mut self.chunks.get_mut(&chunk.party).expect("checked")[chunk.index as usize];
        if *seen {
            return Ok(Accepted::Duplicate);
        }
        *seen = true;
        for (s, &w) in self.sum[range].iter_mut().zip(&chunk.words) {
            *s = s.wrapping_add(w);
        }
        Ok(Accepted::New)
    }

    /// Ends input collection. Returns the signed unmask request and the parties whose
    /// chunks arrived only in part: each of their chunks must go through
    /// [`Server::subtract_chunk`] before [`Server::finish`].
    pub fn close_inputs(&mut self) -> Result<(SignedSets, Vec<u32>), SecAggError> {
        self.expect(Stage::Inputs)?;
        let signer = self.signer()?.clone();
        let mut survivors = Vec::new();
        let mut dropped = Vec::new();
        let mut partial = Vec::new();
        for (&p, seen) in &self.chunks {
            if seen.iter().all(|&s| s) {
                survivors.push(p);
            } else {
                dropped.push(p);
                if seen.iter().any(|&s| s) {
                    partial.push(p);
                }
            }
        }
        self.need("masked input", survivors.len())?;
        self.survivors = survivors.clone();
        self.dropped = dropped.clone();
        self.stage = Stage::Unmask;
        Ok((SignedSets::sign(&self.round_id, SetStage::Unmask, survivors, dropped, &signer), partial))
    }

    /// Takes back a chunk of a party that dropped after sending part of its input.
    pub fn subtract_chunk(&mut self, chunk: &MaskedChunk) -> Result<Accepted, SecAggError> {
        self.expect(Stage::Unmask)?;
        if self.dropped.binary_search(&chunk.party).is_err() {
            return Err(SecAggError::Violation(format!("party {} is not dropped: its input stays", chunk.party)));
        }
        let range = self.check_chunk(chunk)?;
        let seen = &mut self.chunks.get_mut(&chunk.party).expect("checked")[chunk.index as usize];
        if !*seen {
            return Ok(Accepted::Duplicate);
        }
        *seen = false;
        for (s, &w) in self.sum[range].iter_mut().zip(&chunk.words) {
            *s = s.wrapping_sub(w);
        }
        Ok(Accepted::New)
    }

    /// Takes a survivor's unmask shares. The whole response is refused if it offers a
    /// self-mask share of a dropped party or a key share of a survivor (the two sets are
    /// disjoint, so no party ever has both revealed), a share for a party that is not the
    /// responder's neighbour, or a share not held by the responder.
    pub fn receive_unmask(&mut self, response: &UnmaskResponse) -> Result<Accepted, SecAggError> {
        self.expect(Stage::Unmask)?;
        let from = response.party;
        if self.survivors.binary_search(&from).is_err() {
            return Err(SecAggError::Excluded(from));
        }
        let related = |owner: u32| owner == from || self.graph[from as usize].binary_search(&owner).is_ok();
        for (owner, share) in &response.self_mask_shares {
            if self.survivors.binary_search(owner).is_err() {
                return Err(SecAggError::Violation(format!(
                    "party {from} offered a self-mask share of party {owner}, which is not a survivor"
                )));
            }
            if !related(*owner) || share.x() != from + 1 {
                return Err(SecAggError::Violation(format!("party {from} offered a share of {owner} it cannot hold")));
            }
        }
        for (owner, share) in &response.key_shares {
            if self.dropped.binary_search(owner).is_err() {
                return Err(SecAggError::Violation(format!(
                    "party {from} offered a mask-key share of party {owner}, which is not dropped"
                )));
            }
            if !related(*owner) || *owner == from || share.x() != from + 1 {
                return Err(SecAggError::Violation(format!("party {from} offered a share of {owner} it cannot hold")));
            }
        }
        if !self.responded.insert(from) {
            return Ok(Accepted::Duplicate);
        }
        for (owner, share) in &response.self_mask_shares {
            self.seed_shares.entry(*owner).or_default().push(share.clone());
        }
        for (owner, share) in &response.key_shares {
            self.key_shares.entry(*owner).or_default().push(share.clone());
        }
        Ok(Accepted::New)
    }

    /// How many survivors have answered the unmask request.
    pub fn unmask_responses(&self) -> usize {
        self.responded.len()
    }

    /// Reconstructs the secrets, removes every mask and returns the sum.
    pub fn finish(mut self) -> Result<RoundSum, SecAggError> {
        self.expect(Stage::Unmask)?;
        if let Some((&p, _)) =
            self.chunks.iter().find(|(p, seen)| self.dropped.binary_search(p).is_ok() && seen.iter().any(|&s| s))
        {
            return Err(SecAggError::Violation(format!("partial input of dropped party {p} was not subtracted")));
        }
        let t = self.cfg.threshold;
        let mut terms: Vec<(MaskKey, Sign)> = Vec::new();
        for &p in &self.survivors {
            let shares = self.seed_shares.get(&p).map_or(&[][..], Vec::as_slice);
            let seed = combine(shares, t).map_err(|e| SecAggError::Reconstruct {
                party: p,
                secret: "self-mask seed",
                source: e,
            })?;
            terms.push((MaskKey::derive(&seed, &self_context(&self.round_id, p)), Sign::Sub));
        }
        for &d in &self.dropped {
            let shares = self.key_shares.get(&d).map_or(&[][..], Vec::as_slice);
            let bytes =
                combine(shares, t).map_err(|e| SecAggError::Reconstruct { party: d, secret: "mask key", source: e })?;
            let sk = StaticSecret::from(*bytes);
            if PublicKey::from(&sk).to_bytes() != self.adverts[&d].mask_pk {
                return Err(SecAggError::Reconstruct {
                    party: d,
                    secret: "mask key",
                    source: crate::shamir::ShamirError::Inconsistent,
                });
            }
            for &k in &self.graph[d as usize] {
                if self.survivors.binary_search(&k).is_err() {
                    continue;
                }
                // Survivor k added its pairwise mask with d (d was on the shares-closed
                // list); take it back out.
                let shared = agree(&sk, &self.adverts[&k].mask_pk, k)?;
                let added = if k < d { Sign::Add } else { Sign::Sub };
                terms.push((MaskKey::derive(&shared, &pair_context(&self.round_id, k, d)), added.flip()));
            }
        }
        apply_all(&terms, 0, &mut self.sum);
        Ok(RoundSum { sum: self.sum, survivors: self.survivors, dropped: self.dropped })
    }
}
