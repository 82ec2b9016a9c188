//! Between the secure-aggregation messages and the Avro records on the topics.

use crate::error::{Context, Result, bail, ensure};
use guardian_schemas::records::{
    Eviction as EvictionRecord, GradientUpdateChunk, RoundControl, RoundControlKind, RoundMessage, RoundMessageKind,
    RoundSettings, ShareOf, UnmaskShares,
};
use guardian_secagg::shamir::Share;
use guardian_secagg::{
    EncryptedShare, Eviction, KeyAdvert, MaskedChunk, RoundConfig, SetStage, SignedSets, UnmaskResponse,
};

/// Kafka key of every record of a round: its messages stay in one partition, in order.
pub fn round_key(session: &str, round: i64) -> String {
    format!("{session}/{round}")
}

fn array32(bytes: Option<&Vec<u8>>, what: &str) -> Result<[u8; 32]> {
    let b = bytes.with_context(|| format!("{what} is missing"))?;
    b.as_slice().try_into().with_context(|| format!("{what} must be 32 bytes, got {}", b.len()))
}

fn array64(bytes: Option<&Vec<u8>>, what: &str) -> Result<[u8; 64]> {
    let b = bytes.with_context(|| format!("{what} is missing"))?;
    b.as_slice().try_into().with_context(|| format!("{what} must be 64 bytes, got {}", b.len()))
}

fn party(p: i32) -> Result<u32> {
    u32::try_from(p).with_context(|| format!("party index {p} is negative"))
}

/// The secure-aggregation configuration of a round from its OPEN settings.
pub fn config_of(session: &str, round: i64, s: &RoundSettings) -> Result<RoundConfig> {
    let cfg = RoundConfig {
        session: session.to_string(),
        round: u64::try_from(round).context("negative round number")?,
        model_version: u64::try_from(s.model_version).context("negative model version")?,
        participants: s.participants.clone(),
        threshold: u32::try_from(s.threshold).context("negative threshold")?,
        neighbours: u32::try_from(s.neighbours).context("negative neighbour count")?,
        dimension: u64::try_from(s.dimension).context("negative dimension")?,
        chunk_len: u32::try_from(s.chunk_len).context("negative chunk length")?,
        clipping_range: s.clipping_range,
        quantization_levels: u32::try_from(s.quantization_levels).context("negative quantization levels")?,
        clip_norm: s.clip_norm,
        noise_multiplier: s.noise_multiplier,
        graph_seed: array32(Some(&s.graph_seed), "graph seed")?,
    };
    cfg.validate()?;
    Ok(cfg)
}

pub fn advert_record(session: &str, round: i64, hospital: &str, a: &KeyAdvert) -> RoundMessage {
    RoundMessage {
        session_id: session.into(),
        round,
        hospital_id: hospital.into(),
        party: a.party as i32,
        kind: RoundMessageKind::KeyAdvert,
        enc_pk: Some(a.enc_pk.to_vec()),
        mask_pk: Some(a.mask_pk.to_vec()),
        signature: Some(a.signature.to_vec()),
        to_party: None,
        ciphertext: None,
        seed_commitment: Some(a.seed_commitment.to_vec()),
        commitments: None,
    }
}

pub fn advert_of(m: &RoundMessage) -> Result<KeyAdvert> {
    ensure!(m.kind == RoundMessageKind::KeyAdvert, "not a key advertisement");
    Ok(KeyAdvert {
        party: party(m.party)?,
        enc_pk: array32(m.enc_pk.as_ref(), "enc_pk")?,
        mask_pk: array32(m.mask_pk.as_ref(), "mask_pk")?,
        seed_commitment: array32(m.seed_commitment.as_ref(), "seed_commitment")?,
        signature: array64(m.signature.as_ref(), "signature")?,
    })
}

pub fn share_record(session: &str, round: i64, hospital: &str, s: &EncryptedShare) -> RoundMessage {
    RoundMessage {
        session_id: session.into(),
        round,
        hospital_id: hospital.into(),
        party: s.from as i32,
        kind: RoundMessageKind::EncryptedShare,
        enc_pk: None,
        mask_pk: None,
        signature: Some(s.signature.to_vec()),
        to_party: Some(s.to as i32),
        ciphertext: Some(s.ciphertext.clone()),
        seed_commitment: None,
        commitments: Some(s.commitments.concat()),
    }
}

pub fn share_of(m: &RoundMessage) -> Result<EncryptedShare> {
    ensure!(m.kind == RoundMessageKind::EncryptedShare, "not an encrypted share");
    let c = m.commitments.as_ref().context("commitments are missing")?;
    ensure!(c.len() == 64, "commitments must be 64 bytes, got {}", c.len());
    Ok(EncryptedShare {
        from: party(m.party)?,
        to: party(m.to_party.context("to_party is missing")?)?,
        ciphertext: m.ciphertext.clone().context("ciphertext is missing")?,
        commitments: [c[..32].try_into().expect("32 bytes"), c[32..].try_into().expect("32 bytes")],
        signature: array64(m.signature.as_ref(), "signature")?,
    })
}

/// A signed masked chunk as a record.
pub fn chunk_record(cfg: &RoundConfig, hospital: &str, chunk: &MaskedChunk) -> GradientUpdateChunk {
    GradientUpdateChunk {
        session_id: cfg.session.clone(),
        round: cfg.round as i64,
        hospital_id: hospital.to_string(),
        model_version: cfg.model_version as i64,
        dimension: cfg.dimension as i64,
        chunk_index: chunk.index as i32,
        chunk_count: cfg.chunks() as i32,
        first_parameter: cfg.chunk_range(chunk.index).0 as i64,
        ring_bits: 32,
        values: chunk.words.iter().flat_map(|w| w.to_le_bytes()).collect(),
        signature: Some(chunk.signature.to_vec()),
        proof: chunk.proof.iter().map(|d| d.to_vec()).collect(),
    }
}

/// A chunk record back into a masked chunk of party `party`, checked against the round.
pub fn chunk_of(cfg: &RoundConfig, party: u32, c: &GradientUpdateChunk) -> Result<MaskedChunk> {
    ensure!(c.ring_bits == 32, "ring of {} bits (this aggregator sums in Z/2^32)", c.ring_bits);
    ensure!(
        c.dimension == cfg.dimension as i64,
        "dimension {} differs from the round's {}",
        c.dimension,
        cfg.dimension
    );
    ensure!(
        c.chunk_count == cfg.chunks() as i32,
        "chunk count {} differs from the round's {}",
        c.chunk_count,
        cfg.chunks()
    );
    ensure!(c.values.len().is_multiple_of(4), "values are not whole 32-bit words");
    let index = u32::try_from(c.chunk_index).context("negative chunk index")?;
    let signature = array64(c.signature.as_ref(), "signature")?;
    // A tree of 2^32 leaves is 32 deep: a longer proof cannot verify.
    ensure!(c.proof.len() <= 32, "proof of {} digests", c.proof.len());
    let proof = c
        .proof
        .iter()
        .map(|d| <[u8; 32]>::try_from(d.as_slice()).context("a proof digest is not 32 bytes"))
        .collect::<Result<_>>()?;
    let words = c.values.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    Ok(MaskedChunk { party, index, words, proof, signature })
}

fn shares(list: &[(u32, Share)]) -> Vec<ShareOf> {
    list.iter().map(|(owner, s)| ShareOf { owner: *owner as i32, share: s.to_bytes().to_vec() }).collect()
}

fn shares_of(list: &[ShareOf]) -> Result<Vec<(u32, Share)>> {
    list.iter().map(|s| Ok((party(s.owner)?, Share::from_bytes(&s.share).context("malformed share")?))).collect()
}

pub fn unmask_record(session: &str, round: i64, hospital: &str, r: &UnmaskResponse) -> UnmaskShares {
    UnmaskShares {
        session_id: session.into(),
        round,
        hospital_id: hospital.into(),
        party: r.party as i32,
        self_mask_shares: shares(&r.self_mask_shares),
        key_shares: shares(&r.key_shares),
        complaints: to_i32(&r.complaints),
        signature: Some(r.signature.to_vec()),
    }
}

pub fn unmask_of(u: &UnmaskShares) -> Result<UnmaskResponse> {
    Ok(UnmaskResponse {
        party: party(u.party)?,
        self_mask_shares: shares_of(&u.self_mask_shares)?,
        key_shares: shares_of(&u.key_shares)?,
        complaints: parties_of(&u.complaints)?,
        signature: array64(u.signature.as_ref(), "signature")?,
    })
}

pub fn control(session: &str, round: i64, kind: RoundControlKind) -> RoundControl {
    RoundControl {
        session_id: session.into(),
        round,
        kind,
        issued_at: guardian_runtime::now_ms(),
        settings: None,
        first: Vec::new(),
        second: Vec::new(),
        signature: None,
        reason: None,
        evicted: Vec::new(),
    }
}

fn to_i32(list: &[u32]) -> Vec<i32> {
    list.iter().map(|&p| p as i32).collect()
}

/// Evictions with the hospitals' names (`participants` is the round's list).
pub fn eviction_records(evicted: &[Eviction], participants: &[String]) -> Vec<EvictionRecord> {
    evicted
        .iter()
        .map(|e| EvictionRecord {
            party: e.party as i32,
            hospital_id: participants.get(e.party as usize).cloned().unwrap_or_default(),
            reason: e.reason.clone(),
        })
        .collect()
}

/// A control record carrying a signed list.
pub fn signed_control(session: &str, round: i64, sets: &SignedSets, participants: &[String]) -> RoundControl {
    let kind = match sets.stage {
        SetStage::SharesClosed => RoundControlKind::SharesClosed,
        SetStage::Unmask => RoundControlKind::Unmask,
    };
    RoundControl {
        first: to_i32(&sets.first),
        second: to_i32(&sets.second),
        signature: Some(sets.signature.to_vec()),
        evicted: eviction_records(&sets.evicted, participants),
        ..control(session, round, kind)
    }
}

pub fn parties_of(list: &[i32]) -> Result<Vec<u32>> {
    list.iter().map(|&p| party(p)).collect()
}

/// The signed list of a SHARES_CLOSED or UNMASK control record.
pub fn signed_sets_of(c: &RoundControl) -> Result<SignedSets> {
    let stage = match c.kind {
        RoundControlKind::SharesClosed => SetStage::SharesClosed,
        RoundControlKind::Unmask => SetStage::Unmask,
        other => bail!("{other:?} carries no signed list"),
    };
    Ok(SignedSets {
        stage,
        first: parties_of(&c.first)?,
        second: parties_of(&c.second)?,
        evicted: c
            .evicted
            .iter()
            .map(|e| Ok(Eviction { party: party(e.party)?, reason: e.reason.clone() }))
            .collect::<Result<_>>()?,
        signature: array64(c.signature.as_ref(), "signature")?,
    })
}
