//! Properties of the secure aggregation protocol: exact sums under dropouts, clean failure
//! below the threshold, masked outputs and sub-threshold shares that look uniform, and the
//! aggregator's security rules.

use std::sync::Arc;

use ed25519_dalek::SigningKey;
use guardian_secagg::shamir::{self, split_at};
use guardian_secagg::sim::{Dropout, Misbehave, identities, run_round, run_round_adversarial};
use guardian_secagg::{Client, MaskedChunk, RoundConfig, SecAggError, Server, SetStage, SignedSets};
use proptest::prelude::*;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

fn config(n: u32, k: u32, t: u32, dimension: u64, chunk_len: u32, seed: u8) -> Arc<RoundConfig> {
    Arc::new(RoundConfig {
        session: "s-test".into(),
        round: 3,
        model_version: 2,
        participants: (0..n).map(|i| format!("h{i:03}")).collect(),
        threshold: t,
        neighbours: k,
        dimension,
        chunk_len,
        clipping_range: 1.0,
        quantization_levels: 1 << 16,
        clip_norm: 1.0,
        noise_multiplier: 1.0,
        graph_seed: [seed; 32],
    })
}

fn plain_sum(inputs: &[Vec<u32>], survivors: &[u32]) -> Vec<u32> {
    let mut sum = vec![0u32; inputs[0].len()];
    for &p in survivors {
        for (s, &w) in sum.iter_mut().zip(&inputs[p as usize]) {
            *s = s.wrapping_add(w);
        }
    }
    sum
}

fn dropout_kind(code: u8, chunks: u32) -> Dropout {
    match code % 5 {
        0 => Dropout::BeforeKeys,
        1 => Dropout::BeforeShares,
        2 => Dropout::BeforeInput,
        3 => Dropout::MidInput(u32::from(code) % chunks.max(1)),
        _ => Dropout::BeforeUnmask,
    }
}

/// Whether the dropout removes the party from the survivors (a party that stops only
/// before unmasking still counts: its input is in the sum).
fn removes_input(d: Dropout) -> bool {
    !matches!(d, Dropout::BeforeUnmask)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn unmasked_sum_equals_the_plain_sum(
        n in 3u32..14,
        k_frac in 0.0f64..1.0,
        dimension in 1u64..400,
        chunk_len in 1u32..97,
        seed in any::<u64>(),
        drop_codes in proptest::collection::vec(any::<u8>(), 14),
    ) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        // Even neighbour counts from 2 up to the complete graph.
        let k = (2 + 2 * ((k_frac * f64::from(n - 1)) as u32 / 2)).min(n - 1);
        let t = rng.random_range(2..=k + 1);
        let cfg = config(n, k, t, dimension, chunk_len, seed as u8);
        let inputs: Vec<Vec<u32>> = (0..n).map(|_| (0..dimension).map(|_| rng.random()).collect()).collect();
        // Drop at most n − t parties (the most a round can lose), at random stages.
        let max_drop = (n - t) as usize;
        let count = (drop_codes[0] as usize) % (max_drop + 1);
        let mut order: Vec<u32> = (0..n).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.random_range(0..=i));
        }
        let dropouts: Vec<(u32, Dropout)> =
            order.iter().take(count).zip(&drop_codes[1..]).map(|(&p, &c)| (p, dropout_kind(c, cfg.chunks()))).collect();
        match run_round(&cfg, &inputs, &dropouts, &mut rng) {
            Ok(result) => {
                let expected: Vec<u32> =
                    (0..n).filter(|p| dropouts.iter().all(|(q, d)| q != p || !removes_input(*d))).collect();
                prop_assert_eq!(&result.survivors, &expected);
                prop_assert_eq!(result.sum, plain_sum(&inputs, &result.survivors));
            }
            // With a sparse graph a party can lose so many neighbours that fewer than t
            // holders of its shares remain: the round must then fail, and say why.
            Err(e) => prop_assert!(e.fails_round() && k + 1 < n, "unexpected failure: {e}"),
        }
    }

    #[test]
    fn complete_graph_tolerates_any_n_minus_t_dropouts(
        n in 3u32..12,
        seed in any::<u64>(),
        drop_codes in proptest::collection::vec(any::<u8>(), 12),
    ) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let t = rng.random_range(2..=n);
        let cfg = config(n, n - 1, t, 37, 8, seed as u8);
        let inputs: Vec<Vec<u32>> = (0..n).map(|_| (0..37).map(|_| rng.random()).collect()).collect();
        let count = (drop_codes[0] as usize) % ((n - t) as usize + 1);
        let dropouts: Vec<(u32, Dropout)> =
            (0..count as u32).map(|p| (p, dropout_kind(drop_codes[p as usize + 1], cfg.chunks()))).collect();
        let result = run_round(&cfg, &inputs, &dropouts, &mut rng).expect("n − t dropouts are tolerated");
        prop_assert_eq!(result.sum, plain_sum(&inputs, &result.survivors));
    }

    #[test]
    fn fewer_than_t_survivors_fail_the_round(n in 3u32..10, seed in any::<u64>(), stage in 0u8..4) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let t = rng.random_range(2..=n);
        let cfg = config(n, n - 1, t, 16, 4, seed as u8);
        let inputs: Vec<Vec<u32>> = (0..n).map(|_| vec![1u32; 16]).collect();
        let kind = [Dropout::BeforeKeys, Dropout::BeforeShares, Dropout::BeforeInput, Dropout::MidInput(2)][stage as usize];
        let dropouts: Vec<(u32, Dropout)> = (0..n - t + 1).map(|p| (p, kind)).collect();
        let err = run_round(&cfg, &inputs, &dropouts, &mut rng).unwrap_err();
        prop_assert!(matches!(err, SecAggError::TooFew { need, .. } if need == t as usize), "{err}");
        prop_assert!(err.fails_round());
    }

    /// Up to n − t parties drop out or misbehave (forged chunks and shares, equivocation,
    /// oversized chunks, garbage shares, altered unmask shares). The round either finishes
    /// with exactly the sum of the inputs of its survivors, where every honest party that
    /// did not drop is a survivor and no evicted party is, or fails naming a dishonest
    /// dealer whose secret its own bad shares made unrecoverable.
    #[test]
    fn dishonest_parties_never_change_the_honest_sum(
        n in 4u32..11,
        seed in any::<u64>(),
        codes in proptest::collection::vec(any::<u8>(), 24),
    ) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let t = rng.random_range(2..n);
        let cfg = config(n, n - 1, t, 29, 8, seed as u8);
        let inputs: Vec<Vec<u32>> = (0..n).map(|_| (0..29).map(|_| rng.random()).collect()).collect();
        let mut order: Vec<u32> = (0..n).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.random_range(0..=i));
        }
        let bad = 1 + (codes[0] as usize) % (n - t) as usize;
        let (mut dropouts, mut dishonest) = (Vec::new(), Vec::new());
        for (i, &p) in order.iter().take(bad).enumerate() {
            let code = codes[i + 1];
            let other = order[(i + 1 + code as usize) % n as usize];
            match code % 9 {
                0 => dropouts.push((p, dropout_kind(codes[i + 12], cfg.chunks()))),
                1 => dishonest.push((p, Misbehave::ForgeChunk { victim: if other == p { (p + 1) % n } else { other } })),
                2 => dishonest.push((p, Misbehave::Equivocate)),
                3 => dishonest.push((p, Misbehave::OversizedChunk)),
                4 => dishonest.push((p, Misbehave::GarbageShares { count: 1 + u32::from(codes[i + 12]) % (n - 1) })),
                5 => dishonest.push((p, Misbehave::ForgeShare { victim: if other == p { (p + 1) % n } else { other } })),
                6 => dishonest.push((p, Misbehave::EquivocateShares)),
                _ => dishonest.push((p, Misbehave::ForgeUnmask)),
            }
        }
        let garbage_dealers: Vec<u32> =
            dishonest.iter().filter(|(_, m)| matches!(m, Misbehave::GarbageShares { .. })).map(|(p, _)| *p).collect();
        match run_round_adversarial(&cfg, &inputs, &dropouts, &dishonest, &mut rng) {
            Ok((result, _)) => {
                prop_assert_eq!(&result.sum, &plain_sum(&inputs, &result.survivors));
                for p in 0..n {
                    let dropped = dropouts.iter().any(|(q, d)| *q == p && removes_input(*d));
                    if !dropped && dishonest.iter().all(|(q, _)| *q != p) {
                        prop_assert!(result.survivors.contains(&p), "honest party {} left out: {:?}", p, result);
                    }
                }
                for e in &result.evicted {
                    prop_assert!(!result.survivors.contains(&e.party));
                    prop_assert!(dishonest.iter().any(|(q, _)| *q == e.party), "honest party evicted: {:?}", e);
                }
                for (p, m) in &dishonest {
                    let proven = matches!(
                        m,
                        Misbehave::Equivocate
                            | Misbehave::OversizedChunk
                            | Misbehave::EquivocateShares
                            | Misbehave::ForgeChunk { .. }
                    );
                    if proven {
                        prop_assert!(result.evicted.iter().any(|e| e.party == *p), "{:?} of {} not evicted", m, p);
                    }
                }
            }
            Err(SecAggError::Reconstruct { party, .. }) => {
                prop_assert!(garbage_dealers.contains(&party), "party {} named, dealers {:?}", party, garbage_dealers);
            }
            Err(e) => prop_assert!(false, "unexpected failure: {}", e),
        }
    }

    #[test]
    fn shamir_any_t_of_n_reconstruct(n in 2u32..40, seed in any::<u64>()) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let t = rng.random_range(1..=n);
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        let mut shares = shamir::split(&secret, n, t, &mut rng).unwrap();
        for i in (1..shares.len()).rev() {
            shares.swap(i, rng.random_range(0..=i));
        }
        prop_assert_eq!(*shamir::combine(&shares[..t as usize], t).unwrap(), secret);
        if t > 1 {
            let short = shamir::combine(&shares[..t as usize - 1], t).unwrap_err();
            prop_assert_eq!(short, shamir::ShamirError::NotEnoughShares { have: t as usize - 1, need: t as usize });
        }
    }
}

/// Pearson's χ² of byte counts against the uniform distribution over 256 values.
fn chi_square(counts: &[u64; 256]) -> f64 {
    let total: u64 = counts.iter().sum();
    let expected = total as f64 / 256.0;
    counts.iter().map(|&c| (c as f64 - expected).powi(2) / expected).sum()
}

/// χ² with 255 degrees of freedom exceeds 330 with probability about 1e-3 and 360 with
/// about 1e-5: a fixed-seed test that passes is well inside the uniform range, and a
/// leak of structure (an input word showing through) fails by orders of magnitude.
const CHI2_LIMIT: f64 = 360.0;

#[test]
fn masked_updates_look_uniform_and_never_equal_the_input() {
    let mut rng = ChaCha20Rng::seed_from_u64(99);
    let n = 5;
    let cfg = config(n, 4, 3, 1 << 16, 1 << 12, 1);
    let (ids, agg) = identities(n, &mut rng);
    let directory: Vec<_> = ids.iter().map(SigningKey::verifying_key).collect();
    let agg_pk = agg.verifying_key();
    let mut server = Server::new(cfg.clone(), agg, directory.clone()).unwrap();
    let mut clients: Vec<Client> =
        ids.into_iter().enumerate().map(|(p, id)| Client::new(cfg.clone(), p as u32, id, &mut rng).unwrap()).collect();
    let adverts: Vec<_> = clients.iter().map(Client::advertise).collect();
    adverts.iter().for_each(|a| assert_eq!(server.receive_advert(a).unwrap(), guardian_secagg::Accepted::New));
    server.close_keys().unwrap();
    let shares: Vec<_> =
        clients.iter_mut().flat_map(|c| c.share_keys(&adverts, &directory, &mut rng).unwrap()).collect();
    shares.iter().for_each(|s| {
        server.receive_share(s).unwrap();
    });
    let closed = server.close_shares().unwrap();
    // A maximally structured input: all zeros.
    for c in clients.iter_mut() {
        c.receive_shares(&shares).unwrap();
        let mut v = vec![0u32; 1 << 16];
        c.mask(&closed, &agg_pk, &mut v).unwrap();
        assert_ne!(v, vec![0u32; 1 << 16]);
        let mut counts = [0u64; 256];
        for w in &v {
            for b in w.to_le_bytes() {
                counts[b as usize] += 1;
            }
        }
        let chi2 = chi_square(&counts);
        assert!(chi2 < CHI2_LIMIT, "party {} masked zeros are not uniform: χ² = {chi2}", c.party());
    }
}

#[test]
fn fewer_than_t_shares_are_independent_of_the_secret() {
    // For two very different secrets, the bytes of t − 1 shares are uniform: they carry
    // no information about which secret was shared.
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let t = 4;
    let xs = [1u32, 2, 3, 4, 5, 6];
    for secret in [[0u8; 32], [0xffu8; 32]] {
        let mut counts = [0u64; 256];
        for _ in 0..4_000 {
            let shares = split_at(&secret, &xs, t, &mut rng).unwrap();
            for s in &shares[..t as usize - 1] {
                // Skip the first byte of each field element (p is just below 2^192, so
                // it is uniform too, but the rest is the bulk of the value).
                for b in &s.to_bytes()[5..28] {
                    counts[*b as usize] += 1;
                }
            }
        }
        let chi2 = chi_square(&counts);
        assert!(chi2 < CHI2_LIMIT, "shares of {:02x}.. are not uniform: χ² = {chi2}", secret[0]);
    }
}

/// A round run by hand up to the unmask request, to poke the security rules.
struct Harness {
    server: Server,
    clients: Vec<Client>,
    agg: SigningKey,
    request: SignedSets,
    round_id: [u8; 32],
}

/// A round run by hand until the masked inputs are ready (not yet sent).
fn masked_round() -> (Server, Vec<Client>, SigningKey, Vec<Vec<u32>>) {
    let mut rng = ChaCha20Rng::seed_from_u64(17);
    let n = 5;
    let cfg = config(n, 4, 3, 8, 4, 2);
    let (ids, agg) = identities(n, &mut rng);
    let directory: Vec<_> = ids.iter().map(SigningKey::verifying_key).collect();
    let mut server = Server::new(cfg.clone(), agg.clone(), directory.clone()).unwrap();
    let mut clients: Vec<Client> =
        ids.into_iter().enumerate().map(|(p, id)| Client::new(cfg.clone(), p as u32, id, &mut rng).unwrap()).collect();
    let adverts: Vec<_> = clients.iter().map(Client::advertise).collect();
    adverts.iter().for_each(|a| {
        server.receive_advert(a).unwrap();
    });
    server.close_keys().unwrap();
    let shares: Vec<_> =
        clients.iter_mut().flat_map(|c| c.share_keys(&adverts, &directory, &mut rng).unwrap()).collect();
    shares.iter().for_each(|s| {
        server.receive_share(s).unwrap();
    });
    let closed = server.close_shares().unwrap();
    let mut masked = Vec::new();
    for c in clients.iter_mut() {
        c.receive_shares(&shares).unwrap();
        let mut v = vec![7u32; 8];
        c.mask(&closed, &agg.verifying_key(), &mut v).unwrap();
        masked.push(v);
    }
    (server, clients, agg, masked)
}

/// Chunk `index` of the input `v` (two chunks of four words), signed by `c`.
fn chunk(c: &Client, index: u32, v: &[u32]) -> MaskedChunk {
    c.chunks(v).swap_remove(index as usize)
}

fn harness(drop_input_of: &[u32]) -> Harness {
    let (mut server, clients, agg, masked) = masked_round();
    for (p, v) in masked.iter().enumerate() {
        if !drop_input_of.contains(&(p as u32)) {
            for index in 0..2 {
                server.receive_chunk(&chunk(&clients[p], index, v)).unwrap();
            }
        }
    }
    let (request, _) = server.close_inputs().unwrap();
    let round_id = server.round_id();
    Harness { server, clients, agg, request, round_id }
}

/// A response changed by its party and signed again (the party's key is seed 17's).
fn resign(h: &Harness, party: u32, r: guardian_secagg::UnmaskResponse) -> guardian_secagg::UnmaskResponse {
    let key = identities(5, &mut ChaCha20Rng::seed_from_u64(17)).0.swap_remove(party as usize);
    guardian_secagg::UnmaskResponse::sign(&h.round_id, party, r.self_mask_shares, r.key_shares, r.complaints, &key)
}

#[test]
fn aggregator_never_takes_a_seed_share_and_a_key_share_of_one_party() {
    let mut h = harness(&[4]);
    let agg_pk = h.agg.verifying_key();
    let mut response = h.clients[0].unmask(&h.request, &agg_pk).unwrap();
    assert!(response.key_shares.iter().any(|(o, _)| *o == 4));
    // Party 0 tries to slip in its share of dropped party 4's self-mask seed as well.
    let (_, key_share) = response.key_shares[0].clone();
    response.self_mask_shares.push((4, key_share));
    let response = resign(&h, 0, response);
    let err = h.server.receive_unmask(&response).unwrap_err();
    assert!(matches!(err, SecAggError::Violation(ref m) if m.contains("not a survivor")), "{err}");
    // And a mask-key share of a survivor.
    let mut response = h.clients[1].unmask(&h.request, &agg_pk).unwrap();
    let (_, seed_share) = response.self_mask_shares[0].clone();
    response.key_shares.push((2, seed_share));
    let response = resign(&h, 1, response);
    let err = h.server.receive_unmask(&response).unwrap_err();
    assert!(matches!(err, SecAggError::Violation(ref m) if m.contains("not dropped")), "{err}");
}

#[test]
fn parties_refuse_overlapping_unsigned_or_changed_requests() {
    let mut h = harness(&[4]);
    let agg_pk = h.agg.verifying_key();
    // Survivor and dropped sets that overlap, properly signed by the aggregator.
    let overlap = SignedSets::sign(&h.round_id, SetStage::Unmask, vec![0, 1, 2, 3, 4], vec![4], vec![], &h.agg);
    let err = h.clients[0].unmask(&overlap, &agg_pk).unwrap_err();
    assert!(matches!(err, SecAggError::Violation(_)), "{err}");
    // A request signed by someone else.
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let (_, other) = identities(1, &mut rng);
    let forged = SignedSets::sign(&h.round_id, SetStage::Unmask, vec![0, 1, 2, 3], vec![4], vec![], &other);
    assert!(matches!(h.clients[0].unmask(&forged, &agg_pk).unwrap_err(), SecAggError::BadAggregatorSignature));
    // The honest request is answered; a different story afterwards is refused.
    h.clients[0].unmask(&h.request, &agg_pk).unwrap();
    let other_story = SignedSets::sign(&h.round_id, SetStage::Unmask, vec![0, 1, 2], vec![3, 4], vec![], &h.agg);
    let err = h.clients[0].unmask(&other_story, &agg_pk).unwrap_err();
    assert!(matches!(err, SecAggError::Equivocation { .. }), "{err}");
}

#[test]
fn forged_advertisements_and_foreign_chunks_are_refused() {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let cfg = config(4, 3, 3, 8, 8, 3);
    let (ids, agg) = identities(4, &mut rng);
    let directory: Vec<_> = ids.iter().map(SigningKey::verifying_key).collect();
    let mut server = Server::new(cfg.clone(), agg, directory).unwrap();
    // Party 1's keys signed with party 2's identity.
    let impostor = Client::new(cfg.clone(), 1, ids[2].clone(), &mut rng).unwrap();
    let err = server.receive_advert(&impostor.advertise()).unwrap_err();
    assert!(matches!(err, SecAggError::BadSignature { party: 1, .. }), "{err}");
    // A second, different advertisement of one party evicts it.
    let honest = Client::new(cfg.clone(), 0, ids[0].clone(), &mut rng).unwrap();
    let again = Client::new(cfg.clone(), 0, ids[0].clone(), &mut rng).unwrap();
    server.receive_advert(&honest.advertise()).unwrap();
    assert_eq!(server.receive_advert(&honest.advertise()).unwrap(), guardian_secagg::Accepted::Duplicate);
    assert_eq!(server.receive_advert(&again.advertise()).unwrap(), guardian_secagg::Accepted::Evicted(0));
    assert_eq!(server.evictions()[0].party, 0);
    assert!(server.advertised().is_empty());
    // Chunks before input collection are out of order.
    let err = server.receive_chunk(&honest.chunks(&[0; 8])[0]).unwrap_err();
    assert!(matches!(err, SecAggError::OutOfOrder(_)), "{err}");
}

#[test]
fn duplicate_chunks_count_once_and_forged_chunks_change_nothing() {
    let (mut server, mut clients, agg, masked) = masked_round();
    use guardian_secagg::Accepted::{Duplicate, New};
    for (p, v) in masked.iter().enumerate() {
        assert_eq!(server.receive_chunk(&chunk(&clients[p], 0, v)).unwrap(), New);
        assert_eq!(server.receive_chunk(&chunk(&clients[p], 0, v)).unwrap(), Duplicate);
        if p != 4 {
            assert_eq!(server.receive_chunk(&chunk(&clients[p], 1, v)).unwrap(), New);
        }
    }
    // Party 0 writes chunk 1 in party 4's name, with its own key, and with a copied
    // signature of party 4 over other words.
    let mut copied = chunk(&clients[4], 0, &masked[4]);
    copied.index = 1;
    let err = server.receive_chunk(&copied).unwrap_err();
    assert!(matches!(err, SecAggError::BadSignature { party: 4, .. }), "{err}");
    let key0 = identities(5, &mut ChaCha20Rng::seed_from_u64(17)).0.swap_remove(0);
    let cfg = config(5, 4, 3, 8, 4, 2);
    let mut lie = masked[4].clone();
    lie[5] ^= 1;
    let forged = MaskedChunk::sign_input(&cfg, &server.round_id(), 4, cfg.chunk_words(&lie), &key0).swap_remove(1);
    // Party 0's own signature proves the forgery: party 0 is evicted, party 4 untouched.
    assert_eq!(server.receive_chunk(&forged).unwrap(), guardian_secagg::Accepted::Evicted(0));
    assert_eq!(server.evictions()[0].party, 0);
    // Party 4 sent half its input: it is dropped, and the round cannot finish until its
    // half is taken back out.
    let (request, partial) = server.close_inputs().unwrap();
    assert_eq!((request.first.clone(), request.second.clone(), partial), (vec![1, 2, 3], vec![0, 4], vec![0, 4]));
    for c in clients.iter_mut().skip(1).take(3) {
        server.receive_unmask(&c.unmask(&request, &agg.verifying_key()).unwrap()).unwrap();
    }
    for (p, index) in [(4, 0), (0, 0), (0, 1)] {
        assert_eq!(server.subtract_chunk(&chunk(&clients[p], index, &masked[p])).unwrap(), New);
    }
    assert_eq!(server.subtract_chunk(&chunk(&clients[4], 0, &masked[4])).unwrap(), Duplicate);
    assert_eq!(server.finish().unwrap().sum, vec![21u32; 8]);
}

#[test]
fn a_flood_of_forged_chunks_is_traced_to_its_signer_only_so_many_times() {
    use guardian_secagg::Accepted::{Evicted, New};
    let (mut server, clients, _, masked) = masked_round();
    let keys = identities(5, &mut ChaCha20Rng::seed_from_u64(17)).0;
    let cfg = config(5, 4, 3, 8, 4, 2);
    let forge = |by: usize, victim: u32, salt: u32| {
        let mut lie = masked[victim as usize].clone();
        lie[0] = lie[0].wrapping_add(salt);
        MaskedChunk::sign_input(&cfg, &server.round_id(), victim, cfg.chunk_words(&lie), &keys[by]).swap_remove(0)
    };
    let forged: Vec<MaskedChunk> = (1..=10).map(|salt| forge(0, 4, salt)).collect();
    let late = forge(1, 3, 99);
    // The first forgery evicts party 0; the next nine are refused, each traced (5 parties:
    // 10 traces per round).
    assert_eq!(server.receive_chunk(&forged[0]).unwrap(), Evicted(0));
    for f in &forged[1..] {
        assert!(matches!(server.receive_chunk(f).unwrap_err(), SecAggError::BadSignature { party: 4, .. }));
    }
    // Traces spent: party 1's forgery is refused like any bad signature, not traced.
    assert!(matches!(server.receive_chunk(&late).unwrap_err(), SecAggError::BadSignature { party: 3, .. }));
    assert_eq!(server.evictions().len(), 1);
    // The victims' own chunks are taken.
    for p in [3usize, 4] {
        assert_eq!(server.receive_chunk(&chunk(&clients[p], 0, &masked[p])).unwrap(), New);
    }
}

#[test]
fn a_party_that_signs_two_inputs_or_a_misshapen_chunk_is_evicted() {
    use guardian_secagg::Accepted::{Evicted, Ignored, New};
    let (mut server, mut clients, agg, masked) = masked_round();
    for (p, v) in masked.iter().enumerate() {
        for index in 0..2 {
            assert_eq!(server.receive_chunk(&chunk(&clients[p], index, v)).unwrap(), New);
        }
    }
    let mut other = masked[1].clone();
    other[0] ^= 1;
    assert_eq!(server.receive_chunk(&chunk(&clients[1], 0, &other)).unwrap(), Evicted(1));
    assert_eq!(server.receive_chunk(&chunk(&clients[1], 0, &masked[1])).unwrap(), Ignored);
    // Party 2 signs a second input with a chunk one word too long: a second input.
    let mut misshapen = config(5, 4, 3, 8, 4, 2).chunk_words(&masked[2]);
    misshapen[1].push(0);
    assert_eq!(server.receive_chunk(&clients[2].sign_chunks(misshapen)[1]).unwrap(), Evicted(2));
    let (request, partial) = server.close_inputs().unwrap();
    assert_eq!((request.first.clone(), request.second.clone()), (vec![0, 3, 4], vec![1, 2]));
    assert_eq!(partial, vec![1, 2]);
    let reasons: Vec<(u32, String)> = request.evicted.iter().map(|e| (e.party, e.reason.clone())).collect();
    let two = "signed two different inputs".to_string();
    assert_eq!(reasons, vec![(1, two.clone()), (2, two)]);
    // Only the chunks that were added come back out: the altered one is not subtracted.
    assert_eq!(server.subtract_chunk(&chunk(&clients[1], 0, &other)).unwrap(), Ignored);
    for p in 1..3 {
        for index in 0..2 {
            assert_eq!(server.subtract_chunk(&chunk(&clients[p], index, &masked[p])).unwrap(), New);
        }
    }
    // The evicted parties' masks are recovered from shares like any dropout's.
    for c in [0, 3, 4] {
        server.receive_unmask(&clients[c].unmask(&request, &agg.verifying_key()).unwrap()).unwrap();
    }
    let result = server.finish().unwrap();
    assert_eq!(result.sum, vec![21u32; 8]);
    assert_eq!(result.evicted.len(), 2);
    // An input with a chunk of the wrong length evicts its party.
    let (mut server, clients, _, masked) = masked_round();
    let mut words = config(5, 4, 3, 8, 4, 2).chunk_words(&masked[3]);
    words[0].push(0);
    assert_eq!(server.receive_chunk(&clients[3].sign_chunks(words)[0]).unwrap(), Evicted(3));
    assert!(server.evictions()[0].reason.contains("wrong length"), "{:?}", server.evictions());
    // A chunk moved past the end belongs to no signed input: refused, its party untouched.
    let mut past = chunk(&clients[4], 1, &masked[4]);
    past.index = 9;
    let err = server.receive_chunk(&past).unwrap_err();
    assert!(matches!(err, SecAggError::BadSignature { party: 4, .. }), "{err}");
    assert_eq!(server.receive_chunk(&chunk(&clients[4], 1, &masked[4])).unwrap(), New);
    assert_eq!(server.evictions().len(), 1);
}

#[test]
fn forged_unmask_shares_are_left_out_and_the_secret_is_unchanged() {
    let mut h = harness(&[4]);
    let agg_pk = h.agg.verifying_key();
    // Party 0 reveals altered shares of every survivor's seed and of party 4's mask key.
    let honest = h.clients[0].unmask(&h.request, &agg_pk).unwrap();
    let alter = |list: &[(u32, shamir::Share)]| list.iter().map(|(o, s)| (*o, s.altered())).collect::<Vec<_>>();
    let lying = guardian_secagg::UnmaskResponse {
        self_mask_shares: alter(&honest.self_mask_shares),
        key_shares: alter(&honest.key_shares),
        ..honest.clone()
    };
    let lying = resign(&h, 0, lying);
    assert_eq!(h.server.receive_unmask(&lying).unwrap(), guardian_secagg::Accepted::New);
    // A second, different response of party 0 changes nothing either.
    assert_eq!(h.server.receive_unmask(&honest).unwrap(), guardian_secagg::Accepted::Ignored);
    for c in h.clients.iter_mut().skip(1).take(3) {
        h.server.receive_unmask(&c.unmask(&h.request, &agg_pk).unwrap()).unwrap();
    }
    let sum = h.server.finish().unwrap();
    assert_eq!(sum.sum, vec![28u32; 8], "the forged shares changed a reconstructed secret");
    assert!(sum.faults.iter().all(|f| f.party == 0) && sum.faults.len() >= 2, "{:?}", sum.faults);
}

#[test]
fn a_partial_input_left_in_the_sum_stops_the_round() {
    let (mut server, mut clients, agg, masked) = masked_round();
    for (p, v) in masked.iter().enumerate() {
        server.receive_chunk(&chunk(&clients[p], 0, v)).unwrap();
        if p != 4 {
            server.receive_chunk(&chunk(&clients[p], 1, v)).unwrap();
        }
    }
    let (request, _) = server.close_inputs().unwrap();
    for c in clients.iter_mut().take(4) {
        server.receive_unmask(&c.unmask(&request, &agg.verifying_key()).unwrap()).unwrap();
    }
    let err = server.finish().unwrap_err();
    assert!(matches!(err, SecAggError::Violation(ref m) if m.contains("not subtracted")), "{err}");
}
