//! The aggregator: runs a session of federated rounds with secure aggregation over Kafka.
//!
//! Each stage closes when every party has answered or at the stage deadline, whichever
//! comes first; the decision goes to `fl.rounds` as a signed list, so a replay of the
//! topics reaches the same model without any clock. A round with fewer than t parties at
//! any stage fails cleanly (FAILED with the reason) and the session goes on with the next
//! round from the same model.

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use crate::error::{Context, Result, bail};
use ed25519_dalek::SigningKey;
use guardian_fl::data::Dataset;
use guardian_kafka::Producer;
use guardian_kafka::dlq::DeadLetterSink;
use guardian_objects::ObjectStore;
use guardian_runtime::Shutdown;
use guardian_schemas::Codec;
use guardian_schemas::records::{
    BudgetLevel, BudgetStatus, DpUnit, GradientUpdateChunk, ModelVersion, RoundControl, RoundControlKind, RoundMessage,
    RoundMessageKind, RoundSettings, SpendDecision, UnmaskShares,
};
use guardian_secagg::shamir::ShamirError;
use guardian_secagg::{Accepted, RoundConfig, SecAggError, Server, Stage};
use guardian_topics::ServiceId;
use rand::TryRngCore;
use tracing::Instrument;
use tracing::{info, warn};

use crate::history::{RoundLog, SessionLog, published_models};
use crate::registry::Registry;
use crate::wire;
use crate::{FlTopics, model_bytes, next_model};
use guardian_kafka::reader::{
    Incoming, Positions, RangeReader, Start, Tail, positions_at_time, read_range, topic_watermarks,
};

/// A session's settings (the CLI's `fl start`).
#[derive(Debug, Clone)]
pub struct SessionPlan {
    pub session: String,
    /// `--resume`: the session must already be recorded.
    pub resume_only: bool,
    pub hospitals: Vec<String>,
    pub rounds: u32,
    pub threshold: u32,
    pub neighbours: u32,
    pub dp_unit: DpUnit,
    pub clip_norm: f64,
    pub noise_multiplier: f64,
    pub sampling_rate: f64,
    pub delta: f64,
    pub local_steps: u32,
    pub learning_rate: f32,
    pub chunk_len: u32,
    pub clipping_range: f32,
    pub quantization_levels: u32,
    pub stage_timeout: Duration,
    pub initial_model: Vec<f32>,
    /// Held-out data to report each version's accuracy on (the demo's test split).
    pub evaluate_on: Option<Dataset>,
    /// Sum a hospital's update only once the accountant accepted its spend.
    pub spend_gate: bool,
}

/// What happened to one round.
#[derive(Debug, Clone, PartialEq)]
pub enum RoundOutcome {
    Finished {
        version: i64,
        survivors: Vec<String>,
        dropped: Vec<String>,
        /// Hospitals put out of the round, with the reason ("h003: signed two ...").
        evicted: Vec<String>,
        accuracy: Option<f64>,
        sha256: String,
    },
    /// `named`: hospitals whose own records made the round fail; the session goes on
    /// without them.
    Failed { reason: String, named: Vec<String> },
}

/// Everything the coordinator talks to.
#[derive(Debug)]
pub struct Coordinator {
    pub kafka: guardian_kafka::KafkaSettings,
    pub topics: FlTopics,
    pub producer: Producer,
    pub dead_letters: DeadLetterSink,
    pub store: ObjectStore,
    pub identity: SigningKey,
    pub registry: Registry,
}

/// The model the next round trains from.
#[derive(Debug, Clone)]
struct Current {
    weights: Vec<f32>,
    /// (URI, SHA-256) once stored.
    stored: Option<(String, String)>,
    version: i64,
}

/// What the aggregator's transactional id and lease group are scoped by: one session.
pub const SESSION_SCOPE: &str = "fl-session";

/// Dead-letter kinds of round records: a record that is not its named hospital's, one
/// that put its (signing) sender out of the round, any other refusal.
pub const FORGED: &str = guardian_kafka::signing::FORGED;
pub const EVICTED: &str = "evicted";
pub const REFUSED: &str = "round-record";

/// The most bytes the aggregator's readers fetch ahead.
const READ_AHEAD: usize = 16 << 20;

/// The most update chunks read ahead and checked together (64 chunks of 2^16 words are
/// 16 MiB).
const CHUNK_BATCH: usize = 64;

/// A round record the aggregator did not take, and the dead-letter kind.
struct Refused {
    kind: &'static str,
    error: String,
}

impl Refused {
    fn malformed(e: impl std::fmt::Display) -> Self {
        Refused { kind: REFUSED, error: e.to_string() }
    }

    fn forged(error: String) -> Self {
        Refused { kind: FORGED, error }
    }
}

impl From<SecAggError> for Refused {
    fn from(e: SecAggError) -> Self {
        let kind = if matches!(e, SecAggError::BadSignature { .. }) { FORGED } else { REFUSED };
        Refused { kind, error: e.to_string() }
    }
}

/// How long before a round's OPEN a resume starts reading the hospitals' records of the
/// round: their timestamps come from the hospitals' clocks. A record stamped earlier than
/// this by a hospital's clock may be missed by a resume (only that hospital's, as reading
/// starts at the first record stamped after the bound).
pub const RESUME_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);

/// Hospitals that were in their last finished round but not among its survivors (they
/// missed a stage). The next round waits for them only briefly; one that advertises its
/// keys in time takes part, and once it survives a round it is awaited again.
#[derive(Debug, Clone, Default)]
pub struct Absentees(std::collections::BTreeSet<String>);

impl Absentees {
    /// A round finished with `survivors` out of `participants`.
    pub fn observe(&mut self, participants: &[String], survivors: &[String]) {
        for h in participants {
            if survivors.contains(h) {
                self.0.remove(h);
            } else {
                self.0.insert(h.clone());
            }
        }
    }

    pub fn is_absent(&self, hospital: &str) -> bool {
        self.0.contains(hospital)
    }
}

/// Where a session stands: the model the next round trains from, the outcomes so far, the
/// hospitals left out for their own records, the absentees.
struct Progress {
    current: Current,
    outcomes: Vec<RoundOutcome>,
    excluded: Vec<String>,
    absentees: Absentees,
}

impl Progress {
    /// Takes a round's outcome; `participants` is the round's list (empty for a round that
    /// failed before it opened), `next` the model it made.
    fn settle(&mut self, session: &str, participants: &[String], outcome: RoundOutcome, next: Option<Current>) {
        if let Some(next) = next {
            self.current = next;
        }
        match &outcome {
            RoundOutcome::Finished { version, survivors, evicted, accuracy, .. } => {
                crate::metrics::round_finished(session, *version, survivors.len(), evicted.len(), *accuracy);
                self.absentees.observe(participants, survivors);
            }
            RoundOutcome::Failed { named, .. } => {
                crate::metrics::round_failed(session);
                if !named.is_empty() {
                    warn!(session, ?named, "left out of the rest of the session: their records failed a round");
                    self.excluded.extend(named.iter().cloned());
                }
            }
        }
        self.outcomes.push(outcome);
    }
}

/// A recorded round's participants (none if it failed before it opened).
fn participants_of(r: &RoundLog) -> &[String] {
    r.settings.as_ref().map(|s| s.participants.as_slice()).unwrap_or_default()
}

/// Why the coordinator stopped reading a stage.
enum StageEnd {
    Complete,
    Deadline,
    Stopped,
}

struct RoundRun<'a> {
    c: &'a Coordinator,
    tail: &'a Tail,
    codec: &'a Codec,
    cfg: Arc<RoundConfig>,
    server: Server,
    session: String,
    round: i64,
    stop: &'a mut bool,
    /// The accountant's decision on each party's spend for this round: (accepted, reason).
    decisions: std::collections::BTreeMap<u32, (bool, Option<String>)>,
}

impl RoundRun<'_> {
    fn party_of(&self, hospital: &str, claimed: Option<i32>) -> Result<u32, String> {
        let index = self
            .cfg
            .participants
            .iter()
            .position(|h| h == hospital)
            .ok_or_else(|| format!("hospital {hospital} is not a participant of round {}", self.round))?;
        match claimed {
            Some(p) if p != index as i32 => Err(format!("hospital {hospital} claims party {p}, it is party {index}")),
            _ => Ok(index as u32),
        }
    }

    /// Feeds one record to the server. Records of other rounds are skipped. A record that
    /// is not signed by the hospital it names is dead-lettered (kind `forged`), any other
    /// refused record with its reason (kind `round-record`); neither changes the round.
    /// A signed record that puts its sender out of the round is dead-lettered too (kind
    /// `evicted`): the round goes on without that hospital.
    async fn handle(&mut self, m: &Incoming) -> Result<()> {
        let t = &self.c.topics;
        let outcome: Result<Option<Accepted>, Refused> = if m.topic == t.keys {
            match self.codec.decode::<RoundMessage>(&m.payload) {
                Err(e) => Err(Refused::malformed(format!("undecodable round message: {e}"))),
                Ok(r) if r.session_id != self.session || r.round != self.round => Ok(None),
                Ok(r) => {
                    self.party_of(&r.hospital_id, Some(r.party)).map_err(Refused::forged).and_then(|_| match r.kind {
                        RoundMessageKind::KeyAdvert => wire::advert_of(&r)
                            .map_err(Refused::malformed)
                            .and_then(|a| self.server.receive_advert(&a).map_err(Refused::from))
                            .map(Some),
                        RoundMessageKind::EncryptedShare => wire::share_of(&r)
                            .map_err(Refused::malformed)
                            .and_then(|s| self.server.receive_share(&s).map_err(Refused::from))
                            .map(Some),
                    })
                }
            }
        } else if m.topic == t.updates {
            self.take_chunks(std::slice::from_ref(m)).pop().expect("one outcome per record")
        } else if m.topic == t.unmask {
            match self.codec.decode::<UnmaskShares>(&m.payload) {
                Err(e) => Err(Refused::malformed(format!("undecodable unmask shares: {e}"))),
                Ok(u) if u.session_id != self.session || u.round != self.round => Ok(None),
                Ok(u) => self.party_of(&u.hospital_id, Some(u.party)).map_err(Refused::forged).and_then(|_| {
                    wire::unmask_of(&u)
                        .map_err(Refused::malformed)
                        .and_then(|r| self.server.receive_unmask(&r).map_err(Refused::from))
                        .map(Some)
                }),
            }
        } else if m.topic == t.decisions {
            // Written by the accountant only (ACLs); the first decision per event id counts.
            if let Ok(d) = self.codec.decode::<SpendDecision>(&m.payload)
                && d.session_id == self.session
                && d.round == self.round
                && let Ok(p) = self.party_of(&d.hospital_id, None)
            {
                self.decisions.entry(p).or_insert((d.accepted, d.reason));
            }
            Ok(None)
        } else if m.topic == t.rounds {
            if let Ok(ctl) = self.codec.decode::<RoundControl>(&m.payload)
                && ctl.kind == RoundControlKind::Stop
                && ctl.session_id == self.session
            {
                info!(session = %self.session, "stop requested: the session ends after this round");
                *self.stop = true;
            }
            Ok(None)
        } else {
            Ok(None)
        };
        self.settle(m, outcome).await
    }

    /// Feeds a batch of records in order: each run of update chunks goes to the server
    /// at once (their hashing spread over the cores), every other record on its own.
    async fn handle_all(&mut self, batch: &[Incoming]) -> Result<()> {
        let mut rest = batch;
        while let Some(first) = rest.first() {
            if first.topic != self.c.topics.updates {
                self.handle(first).await?;
                rest = &rest[1..];
                continue;
            }
            let run = rest.iter().position(|m| m.topic != self.c.topics.updates).unwrap_or(rest.len());
            let outcomes = self.take_chunks(&rest[..run]);
            for (m, outcome) in rest[..run].iter().zip(outcomes) {
                self.settle(m, outcome).await?;
            }
            rest = &rest[run..];
        }
        Ok(())
    }

    /// What becomes of each update chunk record: decoded, checked against the round and
    /// given to the server together.
    fn take_chunks(&mut self, records: &[Incoming]) -> Vec<Result<Option<Accepted>, Refused>> {
        let mut outcomes = Vec::with_capacity(records.len());
        let (mut chunks, mut at) = (Vec::new(), Vec::new());
        for m in records {
            let chunk = match self.codec.decode::<GradientUpdateChunk>(&m.payload) {
                Err(e) => Err(Refused::malformed(format!("undecodable update chunk: {e}"))),
                Ok(c) if c.session_id != self.session || c.round != self.round => Ok(None),
                Ok(c) => self
                    .party_of(&c.hospital_id, None)
                    .map_err(Refused::forged)
                    .and_then(|p| wire::chunk_of(&self.cfg, p, &c).map_err(Refused::malformed).map(Some)),
            };
            match chunk {
                Ok(Some(chunk)) => {
                    at.push(outcomes.len());
                    chunks.push(chunk);
                    outcomes.push(Ok(None));
                }
                other => outcomes.push(other.map(|_| None)),
            }
        }
        for (i, taken) in at.into_iter().zip(self.server.receive_chunks(&chunks)) {
            outcomes[i] = taken.map(Some).map_err(Refused::from);
        }
        outcomes
    }

    /// Dead-letters a record the round did not take, or that evicted its sender.
    async fn settle(&mut self, m: &Incoming, outcome: Result<Option<Accepted>, Refused>) -> Result<()> {
        let (kind, error) = match outcome {
            Ok(Some(Accepted::Evicted(party))) => {
                let why = self.server.evictions().into_iter().find(|e| e.party == party);
                let reason = why.map_or_else(|| "evicted".to_string(), |e| e.reason);
                let hospital = self.cfg.participants.get(party as usize).cloned().unwrap_or_default();
                warn!(session = %self.session, round = self.round, %hospital, %reason, "a hospital is out of the round");
                (EVICTED, format!("hospital {hospital} (party {party}) {reason}"))
            }
            Ok(_) => return Ok(()),
            Err(Refused { kind, error }) => {
                warn!(topic = %m.topic, offset = m.offset, %error, "refused a round record");
                (kind, error)
            }
        };
        {
            let msg = rdkafka::message::OwnedMessage::new(
                Some(m.payload.clone()),
                m.key.clone(),
                m.topic.clone(),
                rdkafka::Timestamp::NotAvailable,
                m.partition,
                m.offset,
                None,
            );
            self.c.dead_letters.send(&msg, kind, &error).await.context("dead-lettering a round record")?;
        }
        Ok(())
    }

    async fn collect(&mut self, deadline: Instant, done: impl Fn(&Server) -> bool) -> Result<StageEnd> {
        loop {
            if done(&self.server) {
                return Ok(StageEnd::Complete);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(StageEnd::Deadline);
            }
            let wait = (deadline - now).min(Duration::from_millis(200));
            if let Some(m) = self.tail.next(wait).await? {
                // Update chunks already fetched are taken together.
                let mut batch = vec![m];
                while batch.len() < CHUNK_BATCH && batch.last().is_some_and(|m| m.topic == self.c.topics.updates) {
                    match self.tail.next(Duration::ZERO).await? {
                        Some(m) => batch.push(m),
                        None => break,
                    }
                }
                self.handle_all(&batch).await?;
            }
            if *self.stop && done(&self.server) {
                return Ok(StageEnd::Stopped);
            }
        }
    }
}

impl Coordinator {
    /// The aggregator of `session`: its decisions go out through a transactional producer
    /// under the session's transactional id, whose initialisation fences any earlier
    /// aggregator of the session (its open transaction aborted, its later ones refused).
    pub async fn new(
        kafka: guardian_kafka::KafkaSettings,
        topics: FlTopics,
        store: ObjectStore,
        identity: SigningKey,
        registry: Registry,
        session: &str,
    ) -> Result<Self> {
        let id = ServiceId::Aggregator.transactional_id(&format!("{SESSION_SCOPE}-{session}"));
        let producer = Producer::transactional(&kafka, &id).await?;
        let dead_letters =
            DeadLetterSink::new(Producer::new(&kafka)?, topics.dead_letter.clone(), ServiceId::Aggregator.group());
        Ok(Coordinator { kafka, topics, producer, dead_letters, store, identity, registry })
    }

    /// The settings its readers use: update chunks are large (256 KB each by default),
    /// and read-ahead beyond a few of them only costs memory.
    fn reading(&self) -> guardian_kafka::KafkaSettings {
        self.kafka.with_fetch_buffer(READ_AHEAD)
    }

    /// Publishes one record in a transaction of its own. A fenced aggregator (another
    /// took the session over) fails here, and nothing it sent is seen.
    async fn publish_to<T: guardian_schemas::records::Record>(&self, topic: &str, key: &str, record: &T) -> Result<()> {
        self.producer.begin()?;
        let sent = match self.producer.send(topic, key, record).await {
            Ok(_) => self.producer.commit().await,
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            let _ = self.producer.abort().await;
            return Err(e.into());
        }
        Ok(())
    }

    async fn publish(&self, c: &RoundControl) -> Result<()> {
        self.publish_to(&self.topics.rounds, &c.session_id, c).await.context("publishing round control")
    }

    async fn fail(&self, session: &str, round: i64, reason: String) -> Result<RoundOutcome> {
        self.fail_naming(session, round, reason, Vec::new()).await
    }

    /// Publishes FAILED with the reason and the hospitals the failure names.
    async fn fail_naming(
        &self,
        session: &str,
        round: i64,
        reason: String,
        named: Vec<guardian_schemas::records::Eviction>,
    ) -> Result<RoundOutcome> {
        warn!(session, round, %reason, "round failed");
        let names = named.iter().map(|e| e.hospital_id.clone()).collect();
        self.publish(&RoundControl {
            reason: Some(reason.clone()),
            evicted: named,
            ..wire::control(session, round, RoundControlKind::Failed)
        })
        .await?;
        Ok(RoundOutcome::Failed { reason, named: names })
    }

    /// Hospitals whose budget allows another round, from the compacted status topic (none
    /// once the federation's budget is exhausted).
    async fn eligible(&self, hospitals: &[String]) -> Result<(Vec<String>, Vec<String>)> {
        let codec = self.producer.codec();
        let records = read_range(&self.kafka, "fl-aggregator-status", &[&self.topics.status], None).await?;
        let mut latest = std::collections::BTreeMap::new();
        let mut federation_exhausted = false;
        for m in records {
            if let Ok(s) = codec.decode::<BudgetStatus>(&m.payload) {
                match s.hospital_id.clone() {
                    Some(h) => {
                        latest.insert(h, s);
                    }
                    None => federation_exhausted = s.level == BudgetLevel::Exhausted,
                }
            }
        }
        if federation_exhausted {
            return Ok((Vec::new(), hospitals.to_vec()));
        }
        let (mut ok, mut refused) = (Vec::new(), Vec::new());
        for h in hospitals {
            match latest.get(h) {
                Some(s) if s.level == BudgetLevel::Exhausted || s.rounds_left == Some(0) => refused.push(h.clone()),
                _ => ok.push(h.clone()),
            }
        }
        Ok((ok, refused))
    }

    /// The topics the aggregator follows during a round.
    fn followed(&self) -> [&str; 5] {
        let t = &self.topics;
        [&t.keys, &t.updates, &t.unmask, &t.rounds, &t.decisions]
    }

    /// Runs the session; returns each round's outcome. A session the topics already
    /// record is resumed: rounds that ended are reported from their records, the round in
    /// flight carries on from the stage it was in, and the next round takes the next
    /// number.
    pub async fn run(&self, plan: &SessionPlan, shutdown: &Shutdown) -> Result<Vec<RoundOutcome>> {
        self.store.ensure_bucket().await?;
        let codec = self.producer.codec().clone();
        let log = SessionLog::read(&self.kafka, &self.topics, &codec, &plan.session).await?;
        if plan.resume_only && log.is_empty() {
            bail!(
                "nothing is recorded of session {} on {}: there is nothing to resume",
                plan.session,
                self.topics.rounds
            );
        }
        let mut progress = Progress {
            current: Current { weights: plan.initial_model.clone(), stored: None, version: 0 },
            outcomes: Vec::new(),
            excluded: Vec::new(),
            absentees: Absentees::default(),
        };
        let session = plan.session.as_str();
        let mut stop = log.stop_requested;
        let mut resumed = None;
        let tail = if log.is_empty() {
            Tail::open(&self.reading(), "fl-aggregator", &self.followed(), Start::End).await?
        } else {
            let models = published_models(&self.kafka, &self.topics, &codec, session).await?;
            for (round, r) in &log.rounds {
                if let Some(o) = recorded_outcome(r, models.get(round)) {
                    progress.settle(session, participants_of(r), o, None);
                }
            }
            if let Some((round, m)) = log
                .rounds
                .iter()
                .filter(|(_, r)| r.finished.is_some())
                .filter_map(|(n, _)| models.get(n).map(|m| (n, m)))
                .next_back()
            {
                let weights = guardian_fl::npy::read(&self.store.get_verified(&m.object_uri, &m.sha256).await?)
                    .with_context(|| format!("the model of round {round}"))?;
                progress.current =
                    Current { weights, stored: Some((m.object_uri.clone(), m.sha256.clone())), version: m.version };
            }
            match log.in_flight() {
                Some((round, r)) => {
                    let opened = r.opened_at.unwrap_or(0);
                    let from = opened.saturating_sub(RESUME_CLOCK_SKEW.as_millis() as i64);
                    let followed = self.followed();
                    let start = positions_at_time(&self.kafka, "fl-aggregator-resume", &followed, from).await?;
                    let ends: Positions = topic_watermarks(&self.kafka, "fl-aggregator-resume", &followed)
                        .await?
                        .into_iter()
                        .map(|(tp, (_, hi))| (tp, hi))
                        .collect();
                    info!(session, round, "resuming the session: the round in flight carries on");
                    let tail = Tail::open_at(&self.reading(), "fl-aggregator", &ends)?;
                    resumed = Some((round, r.clone(), start, ends, models.get(&round).cloned()));
                    tail
                }
                None => {
                    info!(session, next = log.last_round() + 1, "resuming the session: between rounds");
                    Tail::open(&self.reading(), "fl-aggregator", &self.followed(), Start::End).await?
                }
            }
        };
        if let Some((round, log, start, ends, published)) = resumed {
            let (outcome, next) = self
                .resume_round(
                    plan,
                    round,
                    &log,
                    &progress,
                    &tail,
                    &codec,
                    &mut stop,
                    (&start, &ends),
                    published.as_ref(),
                )
                .instrument(tracing::info_span!("fl.round", session = %session, round, resumed = true))
                .await?;
            progress.settle(session, participants_of(&log), outcome, next);
        }
        for round in log.last_round() + 1..=i64::from(plan.rounds) {
            if stop || shutdown.is_triggered() {
                info!(session, round, "session stopped before this round");
                break;
            }
            let t0 = Instant::now();
            let (mut participants, refused) = self.eligible(&plan.hospitals).await?;
            participants.retain(|h| !progress.excluded.contains(h));
            let eligible = participants.len();
            if (eligible as u32) < plan.threshold {
                let reason = format!(
                    "only {eligible} hospitals may still spend privacy budget, the threshold is {}: the session ends",
                    plan.threshold
                );
                progress.settle(session, &[], self.fail(session, round, reason).await?, None);
                break;
            }
            if plan.dp_unit == DpUnit::Hospital && plan.sampling_rate < 1.0 {
                let model = progress.current.stored.as_ref().map(|(_, sha)| sha.as_str());
                participants.retain(|h| crate::sampling::sampled(session, round, model, plan.sampling_rate, h));
                if (participants.len() as u32) < plan.threshold {
                    let reason = format!(
                        "{} of {eligible} eligible hospitals sampled at rate {}, fewer than the threshold {}",
                        participants.len(),
                        plan.sampling_rate,
                        plan.threshold
                    );
                    progress.settle(session, &[], self.fail(session, round, reason).await?, None);
                    continue;
                }
            }
            tracing::debug!(elapsed = ?t0.elapsed(), "budget statuses read");
            if !refused.is_empty() {
                warn!(?refused, "privacy budget exhausted: these hospitals sit the round out");
            }
            // The round's trace: its records carry it to the agents, whose round spans continue it.
            let span = tracing::info_span!("fl.round", session = %session, round);
            let (outcome, next) = self
                .run_round(plan, round, participants.clone(), &progress, &tail, &codec, &mut stop)
                .instrument(span)
                .await?;
            progress.settle(session, &participants, outcome, next);
        }
        Ok(progress.outcomes)
    }

    /// Opens a new round and runs it.
    #[allow(clippy::too_many_arguments)]
    async fn run_round(
        &self,
        plan: &SessionPlan,
        round: i64,
        participants: Vec<String>,
        progress: &Progress,
        tail: &Tail,
        codec: &Codec,
        stop: &mut bool,
    ) -> Result<(RoundOutcome, Option<Current>)> {
        let session = plan.session.as_str();
        let current = &progress.current;
        let n = participants.len() as u32;
        let mut graph_seed = vec![0u8; 32];
        rand::rngs::OsRng.try_fill_bytes(&mut graph_seed).context("the OS random number generator")?;
        let settings = RoundSettings {
            model_version: current.version,
            model_uri: current.stored.as_ref().map(|(uri, _)| uri.clone()),
            model_sha256: current.stored.as_ref().map(|(_, sha)| sha.clone()),
            participants: participants.clone(),
            threshold: plan.threshold as i32,
            neighbours: plan.neighbours.min(n - 1) as i32,
            dimension: current.weights.len() as i64,
            chunk_len: plan.chunk_len as i32,
            clipping_range: plan.clipping_range,
            quantization_levels: plan.quantization_levels as i32,
            dp_unit: plan.dp_unit,
            clip_norm: plan.clip_norm,
            noise_multiplier: plan.noise_multiplier,
            sampling_rate: plan.sampling_rate,
            delta: plan.delta,
            graph_seed,
            aggregator_key: self.identity.verifying_key().to_bytes().to_vec(),
            stage_timeout_ms: plan.stage_timeout.as_millis() as i64,
            local_steps: plan.local_steps as i32,
            learning_rate: plan.learning_rate,
        };
        let cfg = Arc::new(wire::config_of(session, round, &settings)?);
        let server = Server::new(cfg.clone(), self.identity.clone(), self.registry.directory(&participants)?)?;
        // Where this round's chunks start: a party that sends part of its input and drops
        // has its chunks read back from here and taken out of the sum.
        let updates_from: Positions = tail.ends(&[&self.topics.updates]).await?;
        self.publish(&RoundControl {
            settings: Some(settings),
            ..wire::control(session, round, RoundControlKind::Open)
        })
        .await?;
        info!(session, round, parties = n, threshold = plan.threshold, "round open");
        let run = RoundRun {
            c: self,
            tail,
            codec,
            cfg,
            server,
            session: session.into(),
            round,
            stop,
            decisions: Default::default(),
        };
        self.drive(plan, run, Stage::Keys, &updates_from, progress, None, Vec::new()).await
    }

    /// Carries on with a round the topics record as open: rebuilds the server from the
    /// round's records (the stages already closed take their recorded, signed lists; the
    /// open stage takes what was received through the live path) and runs it from there.
    #[allow(clippy::too_many_arguments)]
    async fn resume_round(
        &self,
        plan: &SessionPlan,
        round: i64,
        log: &RoundLog,
        progress: &Progress,
        tail: &Tail,
        codec: &Codec,
        stop: &mut bool,
        (start, ends): (&Positions, &Positions),
        published: Option<&ModelVersion>,
    ) -> Result<(RoundOutcome, Option<Current>)> {
        let session = plan.session.as_str();
        let current = &progress.current;
        let settings = log.settings.clone().with_context(|| format!("round {round}: no OPEN record"))?;
        if settings.aggregator_key != self.identity.verifying_key().to_bytes() {
            bail!("round {round} of session {session} was opened under another aggregator key");
        }
        let trained_from = current.stored.as_ref().map(|(_, sha)| sha.as_str());
        if settings.model_sha256.as_deref() != trained_from || settings.model_version != current.version {
            bail!(
                "round {round} trains from version {} ({:?}), the last finished round left version {} ({trained_from:?})",
                settings.model_version,
                settings.model_sha256,
                current.version
            );
        }
        let cfg = Arc::new(wire::config_of(session, round, &settings)?);
        let server = Server::new(cfg.clone(), self.identity.clone(), self.registry.directory(&settings.participants)?)?;
        let mut run = RoundRun {
            c: self,
            tail,
            codec,
            cfg: cfg.clone(),
            server,
            session: session.into(),
            round,
            stop,
            decisions: Default::default(),
        };
        let t = &self.topics;
        let records = |topics: &[&str]| -> Result<RangeReader> {
            let ranges: BTreeMap<(String, i32), (i64, i64)> = ends
                .iter()
                .filter(|((topic, _), _)| topics.contains(&topic.as_str()))
                .map(|(tp, &end)| (tp.clone(), (start.get(tp).copied().unwrap_or(end).min(end), end)))
                .collect();
            Ok(RangeReader::open(&self.reading(), "fl-aggregator-resume", &ranges)?)
        };
        let this_round = |r: &RoundMessage| r.session_id == session && r.round == round;
        // The stages the records close, each with the signed list the aggregator
        // published: adopted, never decided again.
        let mut stage = Stage::Keys;
        let mut dropped = Vec::new();
        if let Some(list) = &log.keys_closed {
            let list = wire::parties_of(list)?;
            let (mut adverts, mut shares) = (Vec::new(), Vec::new());
            let mut reader = records(&[&t.keys])?;
            while let Some(m) = reader.next().await? {
                match codec.decode::<RoundMessage>(&m.payload) {
                    Ok(r) if this_round(&r) && r.kind == RoundMessageKind::KeyAdvert => adverts.push(r),
                    Ok(r) if this_round(&r) => shares.push(r),
                    _ => {}
                }
            }
            for r in &adverts {
                if let Ok(a) = wire::advert_of(r)
                    && list.contains(&a.party)
                {
                    let _ = run.server.receive_advert(&a);
                }
            }
            run.server.adopt_keys_closed(&list)?;
            stage = Stage::Shares;
            if let Some(closed) = &log.shares_closed {
                for r in &shares {
                    if let Ok(s) = wire::share_of(r) {
                        let _ = run.server.receive_share(&s);
                    }
                }
                run.server.adopt_shares_closed(&wire::signed_sets_of(closed)?)?;
                stage = Stage::Inputs;
                if let Some(unmask) = &log.unmask {
                    let request = wire::signed_sets_of(unmask)?;
                    let mut reader = records(&[&t.updates])?;
                    let mut batch = Vec::new();
                    loop {
                        let m = reader.next().await?;
                        if let Some(m) = &m
                            && let Ok(c) = codec.decode::<GradientUpdateChunk>(&m.payload)
                            && c.session_id == session
                            && c.round == round
                            && let Some(p) = settings.participants.iter().position(|h| *h == c.hospital_id)
                            && request.first.binary_search(&(p as u32)).is_ok()
                            && let Ok(chunk) = wire::chunk_of(&cfg, p as u32, &c)
                        {
                            batch.push(chunk);
                        }
                        if batch.len() >= CHUNK_BATCH || (m.is_none() && !batch.is_empty()) {
                            let _ = run.server.receive_chunks(&std::mem::take(&mut batch));
                        }
                        if m.is_none() {
                            break;
                        }
                    }
                    run.server.adopt_unmask(&request)?;
                    dropped = request.second.iter().map(|&p| settings.participants[p as usize].clone()).collect();
                    stage = Stage::Unmask;
                }
            }
        }
        info!(session, round, ?stage, "resuming the round in the stage it was in");
        // What the open stage had received goes through the live path, as it would have.
        let live: Vec<&str> = match stage {
            Stage::Keys | Stage::Shares => vec![&t.keys, &t.updates, &t.unmask, &t.decisions],
            Stage::Inputs => vec![&t.updates, &t.unmask, &t.decisions],
            Stage::Unmask => vec![&t.unmask],
        };
        let mut reader = records(&live)?;
        let mut batch = Vec::new();
        loop {
            let m = reader.next().await?;
            let end = m.is_none();
            if let Some(m) = m {
                // Advertisements were adopted with the keys-closed list.
                let adopted = stage > Stage::Keys
                    && m.topic == t.keys
                    && codec.decode::<RoundMessage>(&m.payload).is_ok_and(|r| r.kind == RoundMessageKind::KeyAdvert);
                if !adopted {
                    batch.push(m);
                }
            }
            if batch.len() >= CHUNK_BATCH || (end && !batch.is_empty()) {
                run.handle_all(&std::mem::take(&mut batch)).await?;
            }
            if end {
                break;
            }
        }
        self.drive(plan, run, stage, start, progress, published, dropped).await
    }

    /// Runs a round from `from` to its outcome: each stage collects until complete or its
    /// deadline, closes and publishes its signed list; the last sums, stores the model
    /// and publishes it (unless `published` already records it: then it must match).
    #[allow(clippy::too_many_arguments)]
    async fn drive(
        &self,
        plan: &SessionPlan,
        mut run: RoundRun<'_>,
        from: Stage,
        updates_from: &Positions,
        progress: &Progress,
        published: Option<&ModelVersion>,
        mut dropped_names: Vec<String>,
    ) -> Result<(RoundOutcome, Option<Current>)> {
        let session = plan.session.as_str();
        let (current, absentees) = (&progress.current, &progress.absentees);
        let round = run.round;
        let cfg = run.cfg.clone();
        let participants = cfg.participants.clone();
        let n = participants.len() as u32;
        let codec = run.codec;
        let timeout = plan.stage_timeout;

        if from <= Stage::Keys {
            // Hospitals absent from their last round are waited for a tenth of the stage
            // past the moment everyone else has advertised (with the threshold met).
            let absent: Vec<u32> = (0..n).filter(|&p| absentees.is_absent(&participants[p as usize])).collect();
            if !absent.is_empty() {
                let names: Vec<&str> = absent.iter().map(|&p| participants[p as usize].as_str()).collect();
                info!(session, round, absent = ?names, "absent from their last round: waiting for them briefly only");
            }
            let threshold = cfg.threshold as usize;
            let others_in = std::sync::OnceLock::new();
            let done = |s: &Server| {
                let advertised = s.advertised();
                if s.keys_complete() {
                    return true;
                }
                if advertised.len() < threshold || (0..n).any(|p| !absent.contains(&p) && !advertised.contains(&p)) {
                    return false;
                }
                others_in.get_or_init(Instant::now).elapsed() >= timeout / 10
            };
            run.collect(Instant::now() + timeout, done).await?;
            let advertised = match run.server.close_keys() {
                Ok(a) => a,
                Err(e) => return Ok((self.fail(session, round, e.to_string()).await?, None)),
            };
            self.publish(&RoundControl {
                first: advertised.iter().map(|&p| p as i32).collect(),
                ..wire::control(session, round, RoundControlKind::KeysClosed)
            })
            .await?;
        }

        if from <= Stage::Shares {
            run.collect(Instant::now() + timeout, Server::shares_complete).await?;
            let closed = match run.server.close_shares() {
                Ok(c) => c,
                Err(e) => return Ok((self.fail(session, round, e.to_string()).await?, None)),
            };
            self.publish(&wire::signed_control(session, round, &closed, &participants)).await?;
        }

        if from <= Stage::Inputs {
            // Inputs close when every contributor's input is in and, with the spend gate,
            // the accountant has decided on every contributor's spend (or at the deadline).
            let gate = plan.spend_gate;
            let deadline = Instant::now() + timeout;
            loop {
                let decided =
                    |r: &RoundRun<'_>| !gate || r.server.contributors().iter().all(|p| r.decisions.contains_key(p));
                // A stop request ends the session after this round: it still waits for decisions.
                if matches!(run.collect(deadline, Server::inputs_complete).await?, StageEnd::Deadline)
                    || decided(&run)
                    || Instant::now() >= deadline
                {
                    break;
                }
                // Inputs are in, decisions are not: read on until they are or the deadline.
                let wait = deadline.saturating_duration_since(Instant::now()).min(Duration::from_millis(200));
                if let Some(m) = run.tail.next(wait).await? {
                    run.handle(&m).await?;
                }
            }
            if gate {
                for p in run.server.contributors() {
                    let reason = match run.decisions.get(&p) {
                        Some((true, _)) => continue,
                        Some((false, why)) => {
                            format!("its privacy spend was refused: {}", why.as_deref().unwrap_or("no reason given"))
                        }
                        None => "no decision on its privacy spend by the deadline".to_string(),
                    };
                    warn!(session, round, hospital = %participants[p as usize], %reason, "update left out of the sum");
                    run.server.exclude(p, reason)?;
                }
            }
            let (request, partial) = match run.server.close_inputs() {
                Ok(r) => r,
                Err(e) => return Ok((self.fail(session, round, e.to_string()).await?, None)),
            };
            if !partial.is_empty() {
                warn!(?partial, "parties dropped in the middle of their input: taking their chunks back out");
                let records =
                    read_range(&self.reading(), "fl-aggregator-partial", &[&self.topics.updates], Some(updates_from))
                        .await?;
                for m in records {
                    let Ok(c) = codec.decode::<GradientUpdateChunk>(&m.payload) else { continue };
                    if c.session_id != session || c.round != round {
                        continue;
                    }
                    // Forged records and chunks other than the ones summed change nothing.
                    if let Ok(p) = run.party_of(&c.hospital_id, None)
                        && partial.contains(&p)
                        && let Ok(chunk) = wire::chunk_of(&cfg, p, &c)
                    {
                        let _ = run.server.subtract_chunk(&chunk);
                    }
                }
            }
            self.publish(&wire::signed_control(session, round, &request, &participants)).await?;
            dropped_names = request.second.iter().map(|&p| participants[p as usize].clone()).collect();
        }
        if !dropped_names.is_empty() {
            info!(session, round, dropped = ?dropped_names, "recovering the dropped parties' masks from shares");
        }

        run.collect(Instant::now() + timeout, Server::unmask_complete).await?;
        let server = run.server;
        let complaints: BTreeMap<u32, usize> = (0..n).map(|p| (p, server.complaints_about(p).len())).collect();
        let mut sum = match server.finish() {
            Ok(sum) => sum,
            Err(e @ SecAggError::Reconstruct { party, source: ShamirError::Inconsistent, .. }) => {
                // Every share used matched its dealer's signed commitment: the dealer's
                // own shares do not open to what it advertised.
                let named = wire::eviction_records(
                    &[guardian_secagg::Eviction { party, reason: "its shares do not open to its commitment".into() }],
                    &participants,
                );
                return Ok((self.fail_naming(session, round, e.to_string(), named).await?, None));
            }
            Err(e @ SecAggError::Reconstruct { party, .. }) if complaints.get(&party).is_some_and(|&c| c > 0) => {
                let named = wire::eviction_records(
                    &[guardian_secagg::Eviction { party, reason: "sent shares its neighbours could not use".into() }],
                    &participants,
                );
                return Ok((self.fail_naming(session, round, e.to_string(), named).await?, None));
            }
            Err(e @ (SecAggError::TooFew { .. } | SecAggError::Reconstruct { .. })) => {
                return Ok((self.fail(session, round, e.to_string()).await?, None));
            }
            Err(e) => return Err(e.into()),
        };
        let weights = next_model(&current.weights, &sum.sum, sum.survivors.len(), &cfg)?;
        // The ring sum is spent: free it before the model's bytes are made.
        drop(std::mem::take(&mut sum.sum));
        let bytes = model_bytes(&weights);
        let stored = self.store.put_content_addressed(&format!("models/{session}"), "npy", bytes).await?;
        let accuracy = plan.evaluate_on.as_ref().map(|test| guardian_fl::model::accuracy(&weights, test));
        let survivors: Vec<String> = sum.survivors.iter().map(|&p| participants[p as usize].clone()).collect();
        let version = current.version + 1;
        match published {
            Some(p) if p.sha256 != stored.sha256 || p.version != version => bail!(
                "round {round} of session {session} published version {} ({}), resuming it computed version {version} ({})",
                p.version,
                p.sha256,
                stored.sha256
            ),
            Some(_) => info!(session, round, version, "the model version was published before the restart"),
            None => {
                let record = ModelVersion {
                    session_id: session.into(),
                    version,
                    round,
                    parent_version: (current.version > 0).then_some(current.version),
                    object_uri: stored.uri.clone(),
                    sha256: stored.sha256.clone(),
                    parameters: weights.len() as i64,
                    participants: survivors.clone(),
                    accuracy,
                };
                self.publish_to(&self.topics.models, &format!("{session}/{version}"), &record)
                    .await
                    .context("publishing the model version")?;
            }
        }
        // The round's record names every hospital that misbehaved: those evicted (also in
        // the signed UNMASK list) and survivors whose unmask shares were refused.
        let named = wire::eviction_records(&[sum.evicted.clone(), sum.faults.clone()].concat(), &participants);
        let evicted: Vec<String> = named.iter().map(|e| format!("{}: {}", e.hospital_id, e.reason)).collect();
        self.publish(&RoundControl { evicted: named, ..wire::control(session, round, RoundControlKind::Finished) })
            .await?;
        info!(session, round, version, survivors = survivors.len(), accuracy, sha256 = %stored.sha256, "round finished");
        let outcome = RoundOutcome::Finished {
            version,
            survivors,
            dropped: dropped_names,
            evicted,
            accuracy,
            sha256: stored.sha256.clone(),
        };
        Ok((outcome, Some(Current { weights, stored: Some((stored.uri, stored.sha256)), version })))
    }
}

/// A round's outcome as its records tell it (a resumed session reports the rounds that
/// ended before it started this way).
fn recorded_outcome(r: &RoundLog, model: Option<&ModelVersion>) -> Option<RoundOutcome> {
    if let Some(f) = &r.failed {
        return Some(RoundOutcome::Failed {
            reason: f.reason.clone().unwrap_or_default(),
            named: f.evicted.iter().map(|e| e.hospital_id.clone()).collect(),
        });
    }
    let (finished, model) = (r.finished.as_ref()?, model?);
    let participants = participants_of(r);
    let dropped = r
        .unmask
        .iter()
        .flat_map(|u| &u.second)
        .filter_map(|&p| participants.get(usize::try_from(p).ok()?).cloned())
        .collect();
    Some(RoundOutcome::Finished {
        version: model.version,
        survivors: model.participants.clone(),
        dropped,
        evicted: finished.evicted.iter().map(|e| format!("{}: {}", e.hospital_id, e.reason)).collect(),
        accuracy: model.accuracy,
        sha256: model.sha256.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hospital_is_absent_from_missing_a_round_until_it_survives_one() {
        let all: Vec<String> = ["h1", "h2", "h3"].map(String::from).to_vec();
        let mut a = Absentees::default();
        a.observe(&all, &all[..2]);
        assert!(a.is_absent("h3") && !a.is_absent("h1"));
        // Not sampled into a round: its standing is unchanged.
        a.observe(&all[..2], &all[..2]);
        assert!(a.is_absent("h3"));
        a.observe(&all, &all);
        assert!(!a.is_absent("h3"));
    }
}
