//! An in-memory round between a server and its clients: the reference the property tests,
//! the benchmarks and the services' tests compare against. Messages pass as values; the
//! Kafka services move the same messages over topics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::{SigningKey, VerifyingKey};
use rand::CryptoRng;

use crate::{Client, EncryptedShare, MaskedChunk, RoundConfig, RoundSum, SecAggError, Server, UnmaskResponse};

/// When a party stops answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropout {
    /// Never advertises keys.
    BeforeKeys,
    /// Advertises keys, never shares them.
    BeforeShares,
    /// Shares keys, sends no input.
    BeforeInput,
    /// Sends only its first `n` chunks.
    MidInput(u32),
    /// Sends its input, never answers the unmask request.
    BeforeUnmask,
}

/// Signing keys for `n` parties and an aggregator, derived from `rng`.
pub fn identities(n: u32, rng: &mut impl CryptoRng) -> (Vec<SigningKey>, SigningKey) {
    let mut key = || {
        let mut b = [0u8; 32];
        rng.fill_bytes(&mut b);
        SigningKey::from_bytes(&b)
    };
    let parties = (0..n).map(|_| key()).collect();
    (parties, key())
}

/// Time the server spent in each stage of a round (the parties' work is not counted).
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerTimings {
    /// Checking key advertisements.
    pub keys: Duration,
    /// Recording relayed shares and signing the shares-closed list.
    pub shares: Duration,
    /// Adding masked chunks to the running sum.
    pub sum: Duration,
    /// Taking unmask shares, reconstructing secrets and removing the masks.
    pub unmask: Duration,
}

impl ServerTimings {
    pub fn total(&self) -> Duration {
        self.keys + self.shares + self.sum + self.unmask
    }
}

fn timed<T>(slot: &mut Duration, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    *slot += start.elapsed();
    out
}

/// How a dishonest party misbehaves. Each one is something a hospital can do with its own
/// key; none of it may change the honest parties' result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehave {
    /// Besides its own input, sends chunk 0 in `victim`'s name (signed with its own key).
    ForgeChunk { victim: u32 },
    /// After its input, sends a second, different chunk 0 (signed).
    Equivocate,
    /// Sends a chunk one word longer than the round's chunks (signed) before its input.
    OversizedChunk,
    /// Sends undecryptable shares (signed) to its first `count` neighbours.
    GarbageShares { count: u32 },
    /// Sends a share record in `victim`'s name to one of the victim's neighbours.
    ForgeShare { victim: u32 },
    /// Sends a second, different share record to its first neighbour (signed).
    EquivocateShares,
    /// Reveals altered shares at unmasking (signed).
    ForgeUnmask,
}

/// Runs a whole round. `inputs[i]` is party i's quantized vector; `dropouts` says who stops
/// where. Returns the server's result, or the error that failed the round.
pub fn run_round(
    cfg: &Arc<RoundConfig>,
    inputs: &[Vec<u32>],
    dropouts: &[(u32, Dropout)],
    rng: &mut impl CryptoRng,
) -> Result<RoundSum, SecAggError> {
    run_round_timed(cfg, inputs, dropouts, rng).map(|(sum, _)| sum)
}

/// [`run_round`], also returning the server's time per stage.
pub fn run_round_timed(
    cfg: &Arc<RoundConfig>,
    inputs: &[Vec<u32>],
    dropouts: &[(u32, Dropout)],
    rng: &mut impl CryptoRng,
) -> Result<(RoundSum, ServerTimings), SecAggError> {
    run_round_adversarial(cfg, inputs, dropouts, &[], rng)
}

/// [`run_round_timed`] with dishonest parties. Records the server refuses (forgeries)
/// are dropped as the aggregator service dead-letters them; everything else must go
/// through.
pub fn run_round_adversarial(
    cfg: &Arc<RoundConfig>,
    inputs: &[Vec<u32>],
    dropouts: &[(u32, Dropout)],
    dishonest: &[(u32, Misbehave)],
    rng: &mut impl CryptoRng,
) -> Result<(RoundSum, ServerTimings), SecAggError> {
    let mut time = ServerTimings::default();
    let n = cfg.parties();
    let round_id = cfg.round_id();
    let (ids, agg) = identities(n, rng);
    let directory: Vec<VerifyingKey> = ids.iter().map(SigningKey::verifying_key).collect();
    let agg_pk = agg.verifying_key();
    let mut server = Server::new(cfg.clone(), agg, directory.clone())?;
    let drop_of = |p: u32| dropouts.iter().find(|(q, _)| *q == p).map(|(_, d)| *d);
    let fault_of = |p: u32| dishonest.iter().find(|(q, _)| *q == p).map(|(_, m)| *m);
    let mut clients: Vec<Client> = Vec::new();
    for (p, id) in ids.iter().enumerate() {
        clients.push(Client::new(cfg.clone(), p as u32, id.clone(), rng)?);
    }
    let active = |c: &Client, stage: Dropout| match (drop_of(c.party()), stage) {
        (None, _) => true,
        (Some(Dropout::MidInput(_)), Dropout::BeforeUnmask) => false,
        (Some(Dropout::MidInput(_)), _) => true,
        (Some(d), s) => stage_rank(d) > stage_rank(s),
    };
    let adverts: Vec<_> = clients.iter().filter(|c| active(c, Dropout::BeforeKeys)).map(Client::advertise).collect();
    timed(&mut time.keys, || {
        for a in &adverts {
            server.receive_advert(a)?;
        }
        server.close_keys()
    })?;
    // (record, whether an honest party sent it)
    let mut shares: Vec<(EncryptedShare, bool)> = Vec::new();
    for c in clients.iter_mut().filter(|c| active(c, Dropout::BeforeShares)) {
        let p = c.party();
        let mut own = c.share_keys(&adverts, &directory, rng)?;
        let key = &ids[p as usize];
        let mut extra = Vec::new();
        match fault_of(p) {
            Some(Misbehave::GarbageShares { count }) => {
                for s in own.iter_mut().take(count as usize) {
                    rng.fill_bytes(&mut s.ciphertext);
                    s.sign(&round_id, key);
                }
            }
            Some(Misbehave::EquivocateShares) if !own.is_empty() => {
                let mut other = own[0].clone();
                other.ciphertext[0] ^= 1;
                other.sign(&round_id, key);
                extra.push(other);
            }
            Some(Misbehave::ForgeShare { victim }) if victim != p => {
                if let Some(&to) = cfg.graph()[victim as usize].first() {
                    let mut forged = EncryptedShare {
                        from: victim,
                        to,
                        ciphertext: vec![0; 2 * crate::shamir::SHARE_LEN + 16],
                        commitments: [[0; 32]; 2],
                        signature: [0; 64],
                    };
                    forged.sign(&round_id, key);
                    extra.push(forged);
                }
            }
            _ => {}
        }
        let honest = fault_of(p).is_none();
        shares.extend(own.into_iter().map(|s| (s, honest)));
        shares.extend(extra.into_iter().map(|s| (s, false)));
    }
    let closed = timed(&mut time.shares, || {
        for (s, honest) in &shares {
            let taken = server.receive_share(s);
            if *honest {
                taken?;
            }
        }
        server.close_shares()
    })?;
    let relayed: Vec<EncryptedShare> = shares.into_iter().map(|(s, _)| s).collect();
    for c in clients.iter_mut().filter(|c| closed.first.binary_search(&c.party()).is_ok()) {
        c.receive_shares(&relayed)?;
    }
    // Chunks of parties that may have to be taken out again (stopped part-way, dishonest).
    let mut sent: Vec<(MaskedChunk, bool)> = Vec::new();
    for c in clients.iter_mut().filter(|c| closed.first.binary_search(&c.party()).is_ok()) {
        let p = c.party();
        let limit = match drop_of(p) {
            Some(Dropout::BeforeInput) => continue,
            Some(Dropout::MidInput(k)) => k,
            _ => u32::MAX,
        };
        let keep = limit != u32::MAX || fault_of(p).is_some();
        let key = &ids[p as usize];
        let mut v = inputs[p as usize].clone();
        c.mask(&closed, &agg_pk, &mut v)?;
        let mut chunks: Vec<MaskedChunk> = c.chunks(&v).into_iter().take(limit as usize).collect();
        match fault_of(p) {
            Some(Misbehave::ForgeChunk { victim }) => {
                let fake = cfg.chunk_words(&vec![7; cfg.dimension as usize]);
                chunks.extend(MaskedChunk::sign_input(cfg, &round_id, victim, fake, key).into_iter().take(1));
            }
            Some(Misbehave::Equivocate) if !chunks.is_empty() => {
                v[0] = v[0].wrapping_add(1);
                chunks.extend(c.sign_chunks(cfg.chunk_words(&v)).into_iter().take(1));
            }
            Some(Misbehave::OversizedChunk) => {
                let mut words = cfg.chunk_words(&v);
                words[0].push(1);
                chunks.splice(0..0, c.sign_chunks(words).into_iter().take(1));
            }
            _ => {}
        }
        // One party's chunks as one batch, like a poll of the topic.
        let taken = timed(&mut time.sum, || server.receive_chunks(&chunks));
        for (chunk, result) in chunks.into_iter().zip(taken) {
            if chunk.party == p && fault_of(p).is_none() {
                result?;
            }
            if keep {
                sent.push((chunk, fault_of(p).is_none()));
            }
        }
    }
    let (request, partial) = timed(&mut time.sum, || server.close_inputs())?;
    timed(&mut time.unmask, || {
        for (chunk, honest) in sent.iter().filter(|(c, _)| partial.contains(&c.party)) {
            let taken = server.subtract_chunk(chunk);
            if *honest {
                taken?;
            }
        }
        Ok::<_, SecAggError>(())
    })?;
    for c in clients.iter_mut().filter(|c| request.first.binary_search(&c.party()).is_ok()) {
        let p = c.party();
        if drop_of(p) == Some(Dropout::BeforeUnmask) {
            continue;
        }
        let mut response = c.unmask(&request, &agg_pk)?;
        if fault_of(p) == Some(Misbehave::ForgeUnmask) {
            for (_, share) in response.self_mask_shares.iter_mut().chain(response.key_shares.iter_mut()) {
                *share = share.altered();
            }
            let UnmaskResponse { self_mask_shares, key_shares, complaints, .. } = response;
            response = UnmaskResponse::sign(&round_id, p, self_mask_shares, key_shares, complaints, &ids[p as usize]);
        }
        timed(&mut time.unmask, || server.receive_unmask(&response))?;
    }
    let sum = timed(&mut time.unmask, || server.finish())?;
    Ok((sum, time))
}

fn stage_rank(d: Dropout) -> u8 {
    match d {
        Dropout::BeforeKeys => 0,
        Dropout::BeforeShares => 1,
        Dropout::BeforeInput | Dropout::MidInput(_) => 2,
        Dropout::BeforeUnmask => 3,
    }
}
