//! The aggregator side of a round. It sees public keys, ciphertexts it cannot open,
//! masked chunks and, at the end, exactly the shares needed to remove the masks: the sum
//! is all it learns.
//!
//! Every record it takes is signed by the party it names, over the round and the record's
//! slot (a chunk through its proof up to its party's signed input root); a record that
//! does not verify is refused and changes nothing. A party that signs two different
//! records for one slot, or an input with a chunk of the wrong length, is evicted: it
//! leaves the round like a dropout (its masks are recovered from the other parties'
//! shares) and the reason is listed in the aggregator's next signed list. Shares
//! revealed at unmasking are checked against their dealer's signed commitments, and a
//! reconstructed secret against the dealer's advertisement, so no party can change
//! another's secret.
//!
//! Memory is O(model size): chunks are added to one running sum as they arrive. A party
//! that is dropped after some of its chunks were added (it stopped part-way, or it was
//! evicted) must have those chunks subtracted again ([`Server::subtract_chunk`], fed from
//! the topic) before the round can finish.

use std::collections::BTreeMap;
use std::sync::Arc;

use ed25519_dalek::{SigningKey, VerifyingKey};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::SecAggError;
use crate::keys::agree;
use crate::merkle;
use crate::prg::{MaskKey, Sign, apply_all};
use crate::round::{
    EncryptedShare, Eviction, KeyAdvert, MaskedChunk, Proven, RoundConfig, Secret, SetStage, SignedSets,
    UnmaskResponse, pair_context, seed_commitment, self_context, share_commitment,
};
use crate::shamir::{ShamirError, Share, combine};

/// The stages of a round, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
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
    /// Parties put out of the round for records that contradict each other or break its
    /// rules (they are among `dropped`, or never reached the shares-closed list).
    pub evicted: Vec<Eviction>,
    /// Survivors that misbehaved at unmasking (their bad shares were left out; their
    /// input had been summed by then and stays), and dealers whose shares a survivor
    /// reported unusable (unproven: only the recipient sees a share).
    pub faults: Vec<Eviction>,
}

/// What a record did to the round. Replays and redeliveries are duplicates, never
/// double-counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    New,
    Duplicate,
    /// The record put this party, its signer, out of the round.
    Evicted(u32),
    /// The sender was already out of the round: the record changes nothing.
    Ignored,
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
    /// Per (dealer, holder): the share record taken.
    shares: BTreeMap<(u32, u32), Relayed>,
    shares_closed: Vec<u32>,
    sum: Vec<u32>,
    /// Per party of the shares-closed list: the leaf of each chunk added to the sum.
    chunks: BTreeMap<u32, Vec<Option<merkle::Digest>>>,
    /// Per party: the root of the first input it signed (the one summed).
    roots: BTreeMap<u32, merkle::Digest>,
    evicted: BTreeMap<u32, String>,
    faults: Vec<Eviction>,
    survivors: Vec<u32>,
    dropped: Vec<u32>,
    /// Per survivor that answered: the signature of its response.
    responded: BTreeMap<u32, [u8; 64]>,
    /// Shares checked against their dealer's commitment, by owner.
    seed_shares: BTreeMap<u32, Vec<Share>>,
    key_shares: BTreeMap<u32, Vec<Share>>,
    /// A survivor's own share of its seed (no record commits to it; the reconstructed
    /// seed is checked against the advertised commitment instead).
    own_seed_shares: BTreeMap<u32, Share>,
    /// Per dealer: the survivors that said its share to them was unusable.
    complaints: BTreeMap<u32, Vec<u32>>,
    /// Forged chunks whose signer was looked for (each look tries every key): at most
    /// [`FORGER_SEARCHES_PER_PARTY`] × n per round, so a flood of forgeries costs the
    /// aggregator one signature check each once that is spent.
    forger_searches: u32,
}

/// How many forged chunks per participant the aggregator traces to their signer in a round.
const FORGER_SEARCHES_PER_PARTY: u32 = 2;

/// What the aggregator keeps of a relayed share: its signature (to tell a redelivery from
/// a different record) and the dealer's commitments to the two shares.
struct Relayed {
    signature: [u8; 64],
    commitments: [[u8; 32]; 2],
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("round", &self.cfg.round).field("stage", &self.stage).finish_non_exhaustive()
    }
}

/// Reconstructs a secret from shares checked against commitments (`own`, the dealer's
/// own share, only if they are too few), then checks it against the dealer's public
/// commitment. A mismatch can only come from the dealer: every share used is one it
/// signed a commitment to.
fn reconstruct(
    verified: &[Share],
    own: Option<&Share>,
    t: u32,
    matches: impl Fn(&[u8; 32]) -> bool,
) -> Result<Zeroizing<[u8; 32]>, ShamirError> {
    let need = t as usize;
    let mut pick: Vec<Share> = verified.iter().take(need).cloned().collect();
    if pick.len() < need
        && let Some(o) = own
    {
        pick.push(o.clone());
    }
    let secret = combine(&pick, t)?;
    if !matches(&secret) {
        return Err(ShamirError::Inconsistent);
    }
    Ok(secret)
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
            shares: BTreeMap::new(),
            shares_closed: Vec::new(),
            chunks: BTreeMap::new(),
            roots: BTreeMap::new(),
            evicted: BTreeMap::new(),
            faults: Vec::new(),
            survivors: Vec::new(),
            dropped: Vec::new(),
            responded: BTreeMap::new(),
            seed_shares: BTreeMap::new(),
            key_shares: BTreeMap::new(),
            own_seed_shares: BTreeMap::new(),
            complaints: BTreeMap::new(),
            forger_searches: 0,
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
        if self.evicted.contains_key(&i) {
            return false;
        }
        let holders: Vec<&u32> =
            self.graph[i as usize].iter().filter(|j| self.advertised.binary_search(j).is_ok()).collect();
        holders.len() + 1 >= self.cfg.threshold as usize && holders.iter().all(|&&j| self.shares.contains_key(&(i, j)))
    }

    /// Parties evicted so far, with the reason.
    pub fn evictions(&self) -> Vec<Eviction> {
        self.evicted.iter().map(|(&party, reason)| Eviction { party, reason: reason.clone() }).collect()
    }

    fn evict(&mut self, party: u32, reason: String) -> Accepted {
        self.evicted.entry(party).or_insert(reason);
        if self.stage == Stage::Keys {
            self.adverts.remove(&party);
        }
        Accepted::Evicted(party)
    }

    fn key_of(&self, party: u32) -> Result<&VerifyingKey, SecAggError> {
        self.directory.get(party as usize).ok_or(SecAggError::UnknownParty(party))
    }

    /// True when every party on the shares-closed list has sent all its chunks.
    pub fn inputs_complete(&self) -> bool {
        self.stage == Stage::Inputs
            && self.chunks.iter().all(|(p, seen)| self.evicted.contains_key(p) || seen.iter().all(Option::is_some))
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
        self.chunks = closed.first.iter().map(|&p| (p, vec![None; chunks])).collect();
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
            if survivor && !seen.iter().all(Option::is_some) {
                return Err(SecAggError::Violation(format!(
                    "survivor {p}'s input is incomplete in the replayed topic"
                )));
            }
            if !survivor && seen.iter().any(Option::is_some) {
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

    /// Takes a key advertisement signed by the party it names. A second, different one of
    /// the same party evicts it (it is left off the keys-closed list).
    pub fn receive_advert(&mut self, advert: &KeyAdvert) -> Result<Accepted, SecAggError> {
        self.expect(Stage::Keys)?;
        advert.verify(&self.round_id, self.key_of(advert.party)?)?;
        if self.evicted.contains_key(&advert.party) {
            return Ok(Accepted::Ignored);
        }
        match self.adverts.get(&advert.party) {
            Some(seen) if seen == advert => Ok(Accepted::Duplicate),
            Some(_) => Ok(self.evict(advert.party, "signed two different key advertisements".into())),
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
    /// delivers it; the aggregator cannot read it, it keeps the dealer's commitments). A
    /// second, different share record for the same recipient evicts the dealer.
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
        share.verify(&self.round_id, self.key_of(share.from)?)?;
        if self.evicted.contains_key(&share.from) {
            return Ok(Accepted::Ignored);
        }
        match self.shares.get(&(share.from, share.to)) {
            Some(seen) if seen.signature == share.signature => Ok(Accepted::Duplicate),
            Some(_) => Ok(self.evict(share.from, format!("signed two different shares for party {}", share.to))),
            None => {
                self.shares.insert(
                    (share.from, share.to),
                    Relayed { signature: share.signature, commitments: share.commitments },
                );
                Ok(Accepted::New)
            }
        }
    }

    /// Ends key sharing: the parties that delivered a share to every advertised neighbour
    /// (and were not evicted) may contribute. Returns the signed list the parties mask
    /// against.
    pub fn close_shares(&mut self) -> Result<SignedSets, SecAggError> {
        self.expect(Stage::Shares)?;
        let signer = self.signer()?.clone();
        let complete: Vec<u32> = self.advertised.iter().copied().filter(|&i| self.sent_all_shares(i)).collect();
        self.need("key sharing", complete.len())?;
        let chunks = self.cfg.chunks() as usize;
        self.chunks = complete.iter().map(|&p| (p, vec![None; chunks])).collect();
        self.shares_closed = complete.clone();
        self.stage = Stage::Inputs;
        Ok(SignedSets::sign(&self.round_id, SetStage::SharesClosed, complete, Vec::new(), self.evictions(), &signer))
    }

    /// Parties on the shares-closed list that are still in the round.
    pub fn contributors(&self) -> Vec<u32> {
        self.shares_closed.iter().copied().filter(|p| !self.evicted.contains_key(p)).collect()
    }

    /// Puts a party out of the round before inputs close, for a reason decided outside
    /// the protocol (its privacy spend was refused): it is dropped like an evicted party,
    /// its chunks taken back out, and the reason listed in the signed unmask request.
    pub fn exclude(&mut self, party: u32, reason: String) -> Result<(), SecAggError> {
        self.expect(Stage::Inputs)?;
        if !self.chunks.contains_key(&party) {
            return Err(SecAggError::Excluded(party));
        }
        self.evict(party, reason);
        Ok(())
    }

    /// Checks that `chunk` belongs to an input its party signed: its root is the one
    /// already taken for the party, or the chunk's signature over it verifies. A valid
    /// signature over a second root is the party's equivocation; a chunk signed by another
    /// participant in the party's name is that participant's forgery, proven by its own
    /// signature. `Ok(Some(_))` is the decision when the chunk goes no further.
    fn authentic(&mut self, chunk: &MaskedChunk, proven: &Proven) -> Result<Option<Accepted>, SecAggError> {
        let p = chunk.party;
        let key = *self.key_of(p)?;
        let root = proven.root.ok_or(SecAggError::BadSignature { what: "update chunk proof", party: p })?;
        if self.roots.get(&p) == Some(&root) {
            return Ok(None);
        }
        if let Err(e) = chunk.verify_root(&self.cfg, &self.round_id, &root, &key) {
            if self.forger_searches >= FORGER_SEARCHES_PER_PARTY * self.cfg.parties() {
                return Err(e);
            }
            self.forger_searches += 1;
            if let Some(forger) = self.signer_of(chunk, &root)
                && self.chunks.contains_key(&forger)
                && !self.evicted.contains_key(&forger)
            {
                return Ok(Some(self.evict(forger, format!("signed a chunk in party {p}'s name"))));
            }
            return Err(e);
        }
        if !self.chunks.contains_key(&p) {
            return Err(SecAggError::Excluded(p));
        }
        if self.roots.contains_key(&p) {
            if self.evicted.contains_key(&p) {
                return Ok(Some(Accepted::Ignored));
            }
            return Ok(Some(self.evict(p, "signed two different inputs".into())));
        }
        self.roots.insert(p, root);
        Ok(None)
    }

    /// The participant other than the named party whose key signed `root` for it, if any.
    fn signer_of(&self, chunk: &MaskedChunk, root: &merkle::Digest) -> Option<u32> {
        let m = MaskedChunk::signed_bytes(&self.cfg, &self.round_id, chunk.party, root);
        let signature = ed25519_dalek::Signature::from_bytes(&chunk.signature);
        (0..self.directory.len() as u32)
            .filter(|&p| p != chunk.party)
            .find(|&p| ed25519_dalek::Verifier::verify(&self.directory[p as usize], &m, &signature).is_ok())
    }

    /// Adds a masked chunk to the running sum (once per party and chunk). A chunk whose
    /// proof and signature do not lead to an input signed by the party it names is
    /// refused. A party that signs two different inputs, or an input with a chunk of the
    /// wrong length, is evicted; so is a participant that signs a chunk in another's name.
    pub fn receive_chunk(&mut self, chunk: &MaskedChunk) -> Result<Accepted, SecAggError> {
        self.expect(Stage::Inputs)?;
        let proven = chunk.prove(&self.cfg);
        self.receive_proven(chunk, &proven)
    }

    /// [`Server::receive_chunk`] for a batch, in order, with the chunks' hashing (most of
    /// the work) spread over the machine's cores.
    pub fn receive_chunks(&mut self, chunks: &[MaskedChunk]) -> Vec<Result<Accepted, SecAggError>> {
        if self.stage != Stage::Inputs {
            return chunks.iter().map(|c| self.receive_chunk(c)).collect();
        }
        let proven = prove_all(&self.cfg, chunks);
        chunks.iter().zip(&proven).map(|(c, p)| self.receive_proven(c, p)).collect()
    }

    fn receive_proven(&mut self, chunk: &MaskedChunk, proven: &Proven) -> Result<Accepted, SecAggError> {
        if let Some(decided) = self.authentic(chunk, proven)? {
            return Ok(decided);
        }
        let p = chunk.party;
        if self.evicted.contains_key(&p) {
            return Ok(Accepted::Ignored);
        }
        if chunk.words.len() != self.cfg.chunk_range(chunk.index).1 {
            return Ok(self.evict(p, format!("signed a malformed chunk {}: wrong length", chunk.index)));
        }
        match self.chunks[&p][chunk.index as usize] {
            Some(seen) if seen == proven.leaf => return Ok(Accepted::Duplicate),
            // Unreachable without a hash collision: one root, one leaf per index.
            Some(_) => return Ok(self.evict(p, format!("signed two different chunks for index {}", chunk.index))),
            None => {}
        }
        self.chunks.get_mut(&p).expect("checked")[chunk.index as usize] = Some(proven.leaf);
        let (start, len) = self.cfg.chunk_range(chunk.index);
        for (s, &w) in self.sum[start as usize..start as usize + len].iter_mut().zip(&chunk.words) {
            *s = s.wrapping_add(w);
        }
        Ok(Accepted::New)
    }

    /// Ends input collection. Returns the signed unmask request and the parties some of
    /// whose chunks are in the sum although they are dropped (they stopped part-way or
    /// were evicted): each of their chunks must go through [`Server::subtract_chunk`]
    /// before [`Server::finish`].
    pub fn close_inputs(&mut self) -> Result<(SignedSets, Vec<u32>), SecAggError> {
        self.expect(Stage::Inputs)?;
        let signer = self.signer()?.clone();
        let mut survivors = Vec::new();
        let mut dropped = Vec::new();
        let mut partial = Vec::new();
        for (&p, seen) in &self.chunks {
            if !self.evicted.contains_key(&p) && seen.iter().all(Option::is_some) {
                survivors.push(p);
            } else {
                dropped.push(p);
                if seen.iter().any(Option::is_some) {
                    partial.push(p);
                }
            }
        }
        self.need("masked input", survivors.len())?;
        self.survivors = survivors.clone();
        self.dropped = dropped.clone();
        self.stage = Stage::Unmask;
        let request = SignedSets::sign(&self.round_id, SetStage::Unmask, survivors, dropped, self.evictions(), &signer);
        Ok((request, partial))
    }

    /// Takes back a chunk of a dropped party: only a chunk of the input that was summed
    /// for it (same root, same leaf), once. Anything else changes nothing.
    pub fn subtract_chunk(&mut self, chunk: &MaskedChunk) -> Result<Accepted, SecAggError> {
        self.expect(Stage::Unmask)?;
        if self.dropped.binary_search(&chunk.party).is_err() {
            return Err(SecAggError::Violation(format!("party {} is not dropped: its input stays", chunk.party)));
        }
        let proven = chunk.prove(&self.cfg);
        if proven.root.is_none() || self.roots.get(&chunk.party) != proven.root.as_ref() {
            return Ok(Accepted::Ignored);
        }
        let slot = &mut self.chunks.get_mut(&chunk.party).expect("a root is only taken for listed parties")
            [chunk.index as usize];
        if *slot != Some(proven.leaf) {
            return Ok(Accepted::Duplicate);
        }
        *slot = None;
        let (start, len) = self.cfg.chunk_range(chunk.index);
        for (s, &w) in self.sum[start as usize..start as usize + len].iter_mut().zip(&chunk.words) {
            *s = s.wrapping_sub(w);
        }
        Ok(Accepted::New)
    }

    /// Takes a survivor's signed unmask shares. The whole response is refused if it offers
    /// a self-mask share of a dropped party or a key share of a survivor (the two sets are
    /// disjoint, so no party ever has both revealed), or a share for a party that is not
    /// the responder's neighbour. Each share is then checked against its dealer's signed
    /// commitment: one that does not match is left out and noted as the responder's fault.
    /// A second, different response of the same party is noted and ignored.
    pub fn receive_unmask(&mut self, response: &UnmaskResponse) -> Result<Accepted, SecAggError> {
        self.expect(Stage::Unmask)?;
        let from = response.party;
        response.verify(&self.round_id, self.key_of(from)?)?;
        if self.survivors.binary_search(&from).is_err() {
            return Err(SecAggError::Excluded(from));
        }
        if let Some(seen) = self.responded.get(&from) {
            if *seen == response.signature {
                return Ok(Accepted::Duplicate);
            }
            self.faults.push(Eviction { party: from, reason: "signed two different unmask responses".into() });
            return Ok(Accepted::Ignored);
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
        self.responded.insert(from, response.signature);
        for &dealer in &response.complaints {
            if self.shares.contains_key(&(dealer, from)) {
                self.complaints.entry(dealer).or_default().push(from);
            }
        }
        let lists = [(Secret::SelfMaskSeed, &response.self_mask_shares), (Secret::MaskKey, &response.key_shares)];
        for (secret, list) in lists {
            for (owner, share) in list {
                if *owner == from {
                    self.own_seed_shares.insert(from, share.clone());
                    continue;
                }
                let committed = self.shares.get(&(*owner, from)).map(|r| match secret {
                    Secret::SelfMaskSeed => r.commitments[0],
                    Secret::MaskKey => r.commitments[1],
                });
                if committed != Some(share_commitment(&self.round_id, *owner, from, secret, share)) {
                    self.faults.push(Eviction {
                        party: from,
                        reason: format!("revealed a share of party {owner} that its dealer did not commit to"),
                    });
                    continue;
                }
                let into = match secret {
                    Secret::SelfMaskSeed => &mut self.seed_shares,
                    Secret::MaskKey => &mut self.key_shares,
                };
                into.entry(*owner).or_default().push(share.clone());
            }
        }
        Ok(Accepted::New)
    }

    /// Survivors that said `dealer`'s share to them was unusable. Unproven (a share's
    /// plaintext is only its recipient's to see): use it to explain a failure, not to
    /// decide a round.
    pub fn complaints_about(&self, dealer: u32) -> &[u32] {
        self.complaints.get(&dealer).map_or(&[], Vec::as_slice)
    }

    /// How many survivors have answered the unmask request.
    pub fn unmask_responses(&self) -> usize {
        self.responded.len()
    }

    /// Reconstructs the secrets from verified shares, checks each against its dealer's
    /// commitment, removes every mask and returns the sum.
    pub fn finish(mut self) -> Result<RoundSum, SecAggError> {
        self.expect(Stage::Unmask)?;
        if let Some((&p, _)) = self
            .chunks
            .iter()
            .find(|(p, seen)| self.dropped.binary_search(p).is_ok() && seen.iter().any(Option::is_some))
        {
            return Err(SecAggError::Violation(format!("partial input of dropped party {p} was not subtracted")));
        }
        let t = self.cfg.threshold;
        let none: &[Share] = &[];
        let mut terms: Vec<(MaskKey, Sign)> = Vec::new();
        for &p in &self.survivors {
            let shares = self.seed_shares.get(&p).map_or(none, Vec::as_slice);
            let committed = self.adverts[&p].seed_commitment;
            let seed = reconstruct(shares, self.own_seed_shares.get(&p), t, |s| {
                seed_commitment(&self.round_id, p, s) == committed
            })
            .map_err(|e| SecAggError::Reconstruct { party: p, secret: "self-mask seed", source: e })?;
            terms.push((MaskKey::derive(&seed, &self_context(&self.round_id, p)), Sign::Sub));
        }
        for &d in &self.dropped {
            let shares = self.key_shares.get(&d).map_or(none, Vec::as_slice);
            let mask_pk = self.adverts[&d].mask_pk;
            let bytes =
                reconstruct(shares, None, t, |s| PublicKey::from(&StaticSecret::from(*s)).to_bytes() == mask_pk)
                    .map_err(|e| SecAggError::Reconstruct { party: d, secret: "mask key", source: e })?;
            let sk = StaticSecret::from(*bytes);
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
        for (dealer, holders) in &self.complaints {
            for holder in holders {
                self.faults.push(Eviction {
                    party: *dealer,
                    reason: format!("sent party {holder} a share it could not use (reported by party {holder})"),
                });
            }
        }
        let evicted = self.evictions();
        Ok(RoundSum { sum: self.sum, survivors: self.survivors, dropped: self.dropped, evicted, faults: self.faults })
    }
}

/// The proofs of a batch of chunks, hashed on every core.
fn prove_all(cfg: &RoundConfig, chunks: &[MaskedChunk]) -> Vec<Proven> {
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get).min(chunks.len());
    if threads <= 1 {
        return chunks.iter().map(|c| c.prove(cfg)).collect();
    }
    std::thread::scope(|s| {
        let parts: Vec<_> = chunks
            .chunks(chunks.len().div_ceil(threads))
            .map(|part| s.spawn(move || part.iter().map(|c| c.prove(cfg)).collect::<Vec<_>>()))
            .collect();
        parts.into_iter().flat_map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    })
}
