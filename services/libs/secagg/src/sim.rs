//! An in-memory round between a server and its clients: the reference the property tests,
//! the benchmarks and the services' tests compare against. Messages pass as values; the
//! Kafka services move the same messages over topics.

use std::sync::Arc;

use ed25519_dalek::{SigningKey, VerifyingKey};
use rand::{CryptoRng, RngCore};

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
pub fn identities(n: u32, rng: &mut (impl RngCore + CryptoRng)) -> (Vec<SigningKey>, SigningKey) {
    let mut key = || {
        let mut b = [0u8; 32];
        rng.fill_bytes(&mut b);
        SigningKey::from_bytes(&b)
    };
    let parties = (0..n).map(|_| key()).collect();
    (parties, key())
}

/// Runs a whole round. `inputs[i]` is party i's quantized vector; `dropouts` says who stops
/// where. Returns the server's result, or the error that failed the round.
pub fn run_round(
    cfg: &Arc<RoundConfig>,
    inputs: &[Vec<u32>],
    dropouts: &[(u32, Dropout)],
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<RoundSum, SecAggError> {
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
    for a in &adverts {
        server.receive_advert(a)?;
    }
    server.close_keys()?;
    let mut shares = Vec::new();
    for c in clients.iter_mut().filter(|c| active(c, Dropout::BeforeShares)) {
        shares.extend(c.share_keys(&adverts, &directory, rng)?);
    }
    for s in &shares {
        server.receive_share(s)?;
    }
    let closed = server.close_shares()?;
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
            let chunk = MaskedChunk { party: c.party(), index, words: v[start as usize..start as usize + len].to_vec() };
            server.receive_chunk(&chunk)?;
            sent.push(chunk);
        }
    }
    let (request, partial) = server.close_inputs()?;
    for chunk in sent.iter().filter(|c| partial.contains(&c.party)) {
        server.subtract_chunk(chunk)?;
    }
    for c in clients.iter_mut().filter(|c| request.first.binary_search(&c.party()).is_ok()) {
        if drop_of(c.party()) == Some(Dropout::BeforeUnmask) {
            continue;
        }
        server.receive_unmask(&c.unmask(&request, &agg_pk)?)?;
    }
    server.finish()
}

fn stage_rank(d: Dropout) -> u8 {
    match d {
        Dropout::BeforeKeys => 0,
        Dropout::BeforeShares => 1,
        Dropout::BeforeInput | Dropout::MidInput(_) => 2,
        Dropout::BeforeUnmask => 3,
    }
}
