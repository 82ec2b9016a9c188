//! Recomputes every model of a session from its topics and compares it with the version
//! the aggregator published: the proof that aggregation is a function of the topics.
//!
//! For each finished round it takes the OPEN settings, the recorded signed lists, the
//! survivors' key advertisements, chunks and unmask shares, runs a replaying
//! secure-aggregation server and applies the same model step. Reads whole topics into
//! memory: meant for audits and tests of sessions of modest size.

use std::collections::BTreeMap;

use crate::error::{Context, Result, bail};
use guardian_objects::ObjectStore;
use guardian_schemas::Codec;
use guardian_schemas::records::{GradientUpdateChunk, RoundMessage, RoundMessageKind, UnmaskShares};
use guardian_secagg::Server;

use crate::history::{SessionLog, published_models};
use crate::registry::Registry;
use crate::wire;
use crate::{FlTopics, model_bytes, next_model};
use guardian_kafka::reader::read_range;

/// One round's check.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundCheck {
    pub round: i64,
    pub version: i64,
    pub published_sha256: String,
    pub replayed_sha256: String,
}

impl RoundCheck {
    pub fn matches(&self) -> bool {
        self.published_sha256 == self.replayed_sha256
    }
}

/// Replays `session` and returns one check per published model version.
pub async fn replay_session(
    kafka: &guardian_kafka::KafkaSettings,
    topics: &FlTopics,
    store: &ObjectStore,
    registry: &Registry,
    codec: &Codec,
    session: &str,
) -> Result<Vec<RoundCheck>> {
    let read = |topic: &str| {
        let topic = topic.to_string();
        async move { read_range(kafka, "fl-replay", &[&topic], None).await }
    };
    let rounds = SessionLog::read(kafka, topics, codec, session).await?.rounds;
    if rounds.is_empty() {
        bail!("no rounds of session {session} on {}", topics.rounds);
    }
    let models = published_models(kafka, topics, codec, session).await?;
    let (mut adverts, mut shares): (BTreeMap<i64, Vec<RoundMessage>>, BTreeMap<i64, Vec<RoundMessage>>) =
        Default::default();
    for m in read(&topics.keys).await? {
        if let Ok(r) = codec.decode::<RoundMessage>(&m.payload)
            && r.session_id == session
        {
            match r.kind {
                RoundMessageKind::KeyAdvert => adverts.entry(r.round).or_default().push(r),
                RoundMessageKind::EncryptedShare => shares.entry(r.round).or_default().push(r),
            }
        }
    }
    let mut chunks: BTreeMap<i64, Vec<GradientUpdateChunk>> = BTreeMap::new();
    for m in read(&topics.updates).await? {
        if let Ok(c) = codec.decode::<GradientUpdateChunk>(&m.payload)
            && c.session_id == session
        {
            chunks.entry(c.round).or_default().push(c);
        }
    }
    let mut unmasks: BTreeMap<i64, Vec<UnmaskShares>> = BTreeMap::new();
    for m in read(&topics.unmask).await? {
        if let Ok(u) = codec.decode::<UnmaskShares>(&m.payload)
            && u.session_id == session
        {
            unmasks.entry(u.round).or_default().push(u);
        }
    }

    let mut checks = Vec::new();
    let mut model: Option<Vec<f32>> = None;
    for (round, log) in &rounds {
        if log.finished.is_none() {
            continue;
        }
        let settings = log.settings.as_ref().with_context(|| format!("round {round}: no OPEN record"))?;
        let cfg = std::sync::Arc::new(wire::config_of(session, *round, settings)?);
        let previous = match (&model, &settings.model_uri, &settings.model_sha256) {
            (Some(m), _, _) => m.clone(),
            (None, Some(uri), Some(sha)) => guardian_fl::npy::read(&store.get_verified(uri, sha).await?)?,
            (None, None, _) => vec![0f32; cfg.dimension as usize],
            (None, Some(_), None) => bail!("round {round}: model URI without checksum"),
        };
        if let (Some(sha), Some(_)) = (&settings.model_sha256, &model) {
            let ours = guardian_objects::sha256_hex(&model_bytes(&previous));
            if &ours != sha {
                bail!("round {round} trained from {sha}, the replayed previous model is {ours}");
            }
        }
        let key: [u8; 32] = settings.aggregator_key.as_slice().try_into().context("aggregator key")?;
        let aggregator = ed25519_dalek::VerifyingKey::from_bytes(&key)?;
        let mut server = Server::replay(cfg.clone(), aggregator, registry.directory(&settings.participants)?)?;
        let keys_closed =
            wire::parties_of(log.keys_closed.as_deref().with_context(|| format!("round {round}: no KEYS_CLOSED"))?)?;
        for r in adverts.get(round).into_iter().flatten() {
            // Records the aggregator refused at the time (dead-lettered) are skipped here too.
            if let Ok(a) = wire::advert_of(r)
                && keys_closed.contains(&a.party)
            {
                let _ = server.receive_advert(&a);
            }
        }
        server.adopt_keys_closed(&keys_closed)?;
        // The dealers' commitments, which the unmask shares are checked against.
        for r in shares.get(round).into_iter().flatten() {
            if let Ok(s) = wire::share_of(r) {
                let _ = server.receive_share(&s);
            }
        }
        let closed = wire::signed_sets_of(log.shares_closed.as_ref().context("no SHARES_CLOSED")?)?;
        server.adopt_shares_closed(&closed)?;
        let request = wire::signed_sets_of(log.unmask.as_ref().context("no UNMASK")?)?;
        for c in chunks.get(round).into_iter().flatten() {
            let Some(p) = settings.participants.iter().position(|h| *h == c.hospital_id) else { continue };
            // Forged records were refused at the time and are refused again here.
            if request.first.binary_search(&(p as u32)).is_ok()
                && let Ok(chunk) = wire::chunk_of(&cfg, p as u32, c)
            {
                let _ = server.receive_chunk(&chunk);
            }
        }
        server.adopt_unmask(&request)?;
        for u in unmasks.get(round).into_iter().flatten() {
            if let Ok(r) = wire::unmask_of(u) {
                let _ = server.receive_unmask(&r);
            }
        }
        let sum = server.finish()?;
        let next = next_model(&previous, &sum.sum, sum.survivors.len(), &cfg)?;
        let replayed_sha256 = guardian_objects::sha256_hex(&model_bytes(&next));
        let published =
            models.get(round).with_context(|| format!("round {round} finished but no model version was published"))?;
        checks.push(RoundCheck {
            round: *round,
            version: published.version,
            published_sha256: published.sha256.clone(),
            replayed_sha256,
        });
        model = Some(next);
    }
    Ok(checks)
}
