//! An in-memory round between a server and its clients: the reference the property tests,
//! the benchmarks and the services' tests compare against. Messages pass as values; the
//! Kafka services move the same messages over topics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::{SigningKey, VerifyingKey};
use rand::CryptoRng;

use crate::{Client, MaskedChunk, RoundConfig, RoundSum, SecAggError, Server};

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
    let mut time = ServerTimings::default();
    let n = cfg.parties();
    let (ids, agg) = identities(n, rng);
    let directory: Vec<VerifyingKey> = ids.iter().map(SigningKey::verifying_key).collect();
    let agg_pk = agg.verifying_key();
    let mut server = Server::new(cfg.clone(), agg, directory.clone())?;
    let drop_of = |p: u32| dropouts.iter().find(|(q, _)| *q == p).map(|(_, d)| *d);
    let mut clients: Vec<Client> = Vec::new();
    for (p, id) in ids.into_iter().enumerate() {
        clients.push(Client::new(cfg.clone(), p as u32, id, rng)?);
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
    let mut shares = Vec::new();
    for c in clients.iter_mut().filter(|c| active(c, Dropout::BeforeShares)) {
        shares.extend(c.share_keys(&adverts, &directory, rng)?);
    }
    let closed = timed(&mut time.shares, || {
        for s in &shares {
            server.receive_share(s)?;
        }
        server.close_shares()
    })?;
    for c in clients.iter_mut().filter(|c| closed.first.binary_search(&c.party()).is_ok()) {
        c.receive_shares(&shares)?;
    }
    let mut sent: Vec<MaskedChunk> = Vec::new();
    for c in clients.iter_mut().filter(|c| closed.first.binary_search(&c.party()).is_ok()) {
        let limit = match drop_of(c.party()) {
            Some(Dropout::BeforeInput) => continue,
            Some(Dropout::MidInput(k)) => k,
            _ => u32::MAX,
        };
        let mut v = inputs[c.party() as usize].clone();
        c.mask(&closed, &agg_pk, &mut v)?;
        for index in 0..cfg.chunks().min(limit) {
            let (start, len) = cfg.chunk_range(index);
            let chunk =
                MaskedChunk { party: c.party(), index, words: v[start as usize..start as usize + len].to_vec() };
            timed(&mut time.sum, || server.receive_chunk(&chunk))?;
            if limit != u32::MAX {
                sent.push(chunk);
            }
        }
    }
    let (request, partial) = timed(&mut time.sum, || server.close_inputs())?;
    timed(&mut time.unmask, || {
        for chunk in sent.iter().filter(|c| partial.contains(&c.party)) {
            server.subtract_chunk(chunk)?;
        }
        Ok::<_, SecAggError>(())
    })?;
    for c in clients.iter_mut().filter(|c| request.first.binary_search(&c.party()).is_ok()) {
        if drop_of(c.party()) == Some(Dropout::BeforeUnmask) {
            continue;
        }
        let response = c.unmask(&request, &agg_pk)?;
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
