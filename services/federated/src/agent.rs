//! The hospital agent's side of federated rounds.
//!
//! On OPEN it checks its privacy budget (its own ledger of spends from `privacy.spend`,
//! and the accountant's status) and refuses a round that would take it past its limit;
//! otherwise it trains (DP-SGD on its data), runs the site's own trainer, or takes a
//! precomputed update (both HOSPITAL unit: clipped and noised here), quantizes, and runs the secure-aggregation client. Its
//! budget-spend event is published before the masked update leaves: a crash can only
//! over-count a spend, never under-count it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::error::{Context, Result, bail};
use ed25519_dalek::SigningKey;
use guardian_fl::data::Dataset;
use guardian_fl::model::{DpSgd, LocalTraining, dp_sgd_update, local_update};
use guardian_kafka::Producer;
use guardian_kafka::trace;
use guardian_objects::ObjectStore;
use guardian_privacy::{RdpAccountant, SampledGaussian};
use guardian_runtime::Shutdown;
use guardian_schemas::records::{
    BudgetLevel, BudgetSpend, BudgetStatus, DpUnit, Mechanism, RoundControl, RoundControlKind, RoundMessage,
    RoundMessageKind, RoundSettings,
};
use guardian_secagg::{Client, EncryptedShare, KeyAdvert, MaskedChunk, RoundConfig, SignedSets};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use tracing::{Instrument, info, warn};

use crate::FlTopics;
use crate::registry::Registry;
use crate::wire::{self, round_key};
use guardian_kafka::reader::{Start, Tail, read_range};

/// Where the agent's update comes from.
#[derive(Debug, Clone)]
pub enum UpdateSource {
    /// Train on these (standardised) rows.
    Data(Dataset),
    /// A precomputed update (`.npy`), e.g. from PyTorch; HOSPITAL-unit rounds only.
    File(Vec<f32>),
    /// The site's own trainer, run each round on the global model; HOSPITAL-unit rounds
    /// only.
    Command(crate::trainer::TrainCommand),
}

/// What a dishonest agent does (tests of the aggregator only: the CLI refuses it unless
/// [`MISBEHAVE_ENV`] is set to 1). Each is done with the agent's own key, as a hospital
/// that lies would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehave {
    /// Besides its own input, sends chunk 0 in the next participant's name.
    ForgeChunk,
    /// Right after its chunk 0, sends a second, different chunk 0.
    Equivocate,
    /// Sends an undecryptable share to its first neighbour.
    GarbageShares,
    /// Sends a chunk one word longer than the round's before its input.
    OversizedChunk,
    /// Joins and sends its update whatever its budget says (the accountant refuses the
    /// spend once it is over a limit; the aggregator must then leave the update out).
    RefusedSpend,
}

/// The spend a round costs a hospital that takes part: DP-SGD's steps at the record
/// sampling rate (patient unit), or one full Gaussian step (hospital unit: a sampled
/// round is charged in full, the sample being public; see [`crate::sampling`]).
pub fn charge(s: &RoundSettings) -> SampledGaussian {
    match s.dp_unit {
        DpUnit::Patient => SampledGaussian {
            sampling_rate: s.sampling_rate,
            noise_multiplier: s.noise_multiplier,
            count: s.local_steps.max(0) as u64,
        },
        DpUnit::Hospital => SampledGaussian { sampling_rate: 1.0, noise_multiplier: s.noise_multiplier, count: 1 },
    }
}

/// The variable that must be 1 for `--misbehave` to be accepted.
pub const MISBEHAVE_ENV: &str = "GUARDIAN_ALLOW_MISBEHAVE";

impl std::str::FromStr for Misbehave {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "forge-chunk" => Misbehave::ForgeChunk,
            "equivocate" => Misbehave::Equivocate,
            "garbage-shares" => Misbehave::GarbageShares,
            "oversized-chunk" => Misbehave::OversizedChunk,
            "refused-spend" => Misbehave::RefusedSpend,
            _ => {
                return Err(format!(
                    "unknown misbehaviour {s:?} (known: forge-chunk, equivocate, garbage-shares, oversized-chunk, refused-spend)"
                ));
            }
        })
    }
}

/// A point at which the agent aborts on purpose (chaos and dropout tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Abort after sharing keys, before sending the masked update of this round.
    BeforeInput(i64),
    /// A hospital on a slow link: each of its answers (key advertisement, shares, masked
    /// input, unmask shares) goes out this much later.
    Slow(Duration),
}

impl std::str::FromStr for Fault {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            Some(("before-input", r)) => {
                r.parse().map(Fault::BeforeInput).map_err(|_| format!("bad round number in fault {s:?}"))
            }
            Some(("slow", ms)) => ms
                .parse()
                .map(|ms| Fault::Slow(Duration::from_millis(ms)))
                .map_err(|_| format!("bad milliseconds in fault {s:?}")),
            _ => Err(format!("unknown fault {s:?} (known: before-input:<round>, slow:<ms>)")),
        }
    }
}

#[derive(Debug)]
pub struct Agent {
    pub hospital: String,
    pub kafka: guardian_kafka::KafkaSettings,
    pub topics: FlTopics,
    pub producer: Producer,
    pub store: ObjectStore,
    pub identity: SigningKey,
    pub registry: Registry,
    pub source: UpdateSource,
    /// The agent's own ε limit (the accountant's limit applies too).
    pub epsilon_limit: f64,
    pub fault: Option<Fault>,
    /// Misbehaviours, one per joined round in turn (tests only).
    pub misbehave: Vec<Misbehave>,
}

/// Summary of what the agent did, for its exit report and tests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentReport {
    pub rounds_joined: Vec<i64>,
    pub rounds_refused: Vec<(i64, String)>,
    pub epsilon_spent: f64,
}

struct Round {
    session: String,
    round: i64,
    settings: RoundSettings,
    cfg: std::sync::Arc<RoundConfig>,
    /// Registered keys of the round's participants.
    directory: Vec<ed25519_dalek::VerifyingKey>,
    client: Client,
    misbehave: Option<Misbehave>,
    quantized: Vec<u32>,
    spend: BudgetSpend,
    adverts: BTreeMap<u32, KeyAdvert>,
    shares: Vec<EncryptedShare>,
    keys_closed: Option<Vec<u32>>,
    shares_closed: Option<SignedSets>,
    unmask: Option<SignedSets>,
    shared: bool,
    masked: bool,
    answered: bool,
    /// The hospital's span of the round, child of the aggregator's (its OPEN record carries
    /// the trace); what the agent sends for the round carries it on.
    span: tracing::Span,
}

fn verifying(bytes: &[u8]) -> Result<ed25519_dalek::VerifyingKey> {
    let b: [u8; 32] = bytes.try_into().context("aggregator key must be 32 bytes")?;
    ed25519_dalek::VerifyingKey::from_bytes(&b).context("aggregator key")
}

impl Agent {
    /// This hospital's spends so far, from the spend topic (deduplicated by event id).
    async fn ledger(&self) -> Result<(RdpAccountant, BTreeSet<String>)> {
        let codec = self.producer.codec();
        let mut acc = RdpAccountant::default();
        let mut seen = BTreeSet::new();
        for m in
            read_range(&self.kafka, &format!("fl-agent-{}-ledger", self.hospital), &[&self.topics.spend], None).await?
        {
            if let Ok(s) = codec.decode::<BudgetSpend>(&m.payload)
                && s.hospital_id == self.hospital
                && seen.insert(s.event_id.clone())
            {
                acc.compose(&SampledGaussian {
                    sampling_rate: s.sampling_rate,
                    noise_multiplier: s.noise_multiplier,
                    count: s.steps.max(0) as u64,
                })?;
            }
        }
        Ok((acc, seen))
    }

    /// The accountant's latest status of this hospital's budget and of the federation's.
    async fn status(&self) -> Result<(Option<BudgetStatus>, Option<BudgetStatus>)> {
        let codec = self.producer.codec();
        let (mut own, mut federation) = (None, None);
        let name = format!("fl-agent-{}-status", self.hospital);
        for m in read_range(&self.kafka, &name, &[&self.topics.status], None).await? {
            if let Ok(s) = codec.decode::<BudgetStatus>(&m.payload) {
                match s.hospital_id.as_deref() {
                    Some(h) if h == self.hospital => own = Some(s),
                    None => federation = Some(s),
                    Some(_) => {}
                }
            }
        }
        Ok((own, federation))
    }

    /// Follows the round topics until `shutdown`.
    pub async fn run(&self, shutdown: &Shutdown, ready: impl Fn()) -> Result<AgentReport> {
        let t = &self.topics;
        let tail =
            Tail::open(&self.kafka, &format!("fl-agent-{}", self.hospital), &[&t.rounds, &t.keys], Start::End).await?;
        let (mut ledger, mut spent_ids) = self.ledger().await?;
        let mut report =
            AgentReport { epsilon_spent: ledger.epsilon(1e-5).map(|e| e.0).unwrap_or(0.0), ..Default::default() };
        let codec = self.producer.codec().clone();
        let mut current: Option<Round> = None;
        ready();
        info!(hospital = %self.hospital, "agent ready: waiting for rounds");
        while !shutdown.is_triggered() {
            let Some(m) = tail.next(Duration::from_millis(200)).await? else { continue };
            if m.topic == t.rounds {
                let Ok(c) = codec.decode::<RoundControl>(&m.payload) else {
                    warn!(offset = m.offset, "undecodable round control record skipped");
                    continue;
                };
                if c.kind == RoundControlKind::Open {
                    let Some(settings) = c.settings.clone() else { continue };
                    if !settings.participants.contains(&self.hospital) {
                        continue;
                    }
                    if let Some(old) = current.take() {
                        warn!(session = %old.session, round = old.round, "a new round opened before the last one ended: leaving it");
                    }
                    let misbehave = (!self.misbehave.is_empty())
                        .then(|| self.misbehave[report.rounds_joined.len() % self.misbehave.len()]);
                    let span = tracing::info_span!("fl.agent.round", session = %c.session_id, round = c.round, hospital = %self.hospital);
                    trace::continue_from(&span, trace::extract_pairs(&m.headers));
                    match self.join(&c, settings, &ledger, misbehave).instrument(span.clone()).await {
                        Ok(mut r) => {
                            r.span = span;
                            if let Some(m) = misbehave {
                                warn!(round = c.round, misbehaviour = ?m, "misbehaving in this round (test mode)");
                                r.misbehave = Some(m);
                            }
                            report.rounds_joined.push(c.round);
                            current = Some(r);
                        }
                        Err(e) => {
                            warn!(session = %c.session_id, round = c.round, error = %format!("{e:#}"), "not taking part in this round");
                            report.rounds_refused.push((c.round, format!("{e:#}")));
                        }
                    }
                } else if let Some(r) = current.as_mut()
                    && r.session == c.session_id
                    && r.round == c.round
                {
                    match c.kind {
                        RoundControlKind::KeysClosed => r.keys_closed = Some(wire::parties_of(&c.first)?),
                        RoundControlKind::SharesClosed => r.shares_closed = Some(wire::signed_sets_of(&c)?),
                        RoundControlKind::Unmask => r.unmask = Some(wire::signed_sets_of(&c)?),
                        RoundControlKind::Finished | RoundControlKind::Failed => {
                            info!(session = %r.session, round = r.round, outcome = ?c.kind, reason = ?c.reason, "round over");
                            current = None;
                            continue;
                        }
                        _ => {}
                    }
                }
            } else if m.topic == t.keys
                && let Some(r) = current.as_mut()
            {
                let Ok(msg) = codec.decode::<RoundMessage>(&m.payload) else { continue };
                if msg.session_id != r.session || msg.round != r.round {
                    continue;
                }
                match msg.kind {
                    // The first advertisement of a party that verifies, as the aggregator
                    // takes it (records of a round share a partition: same order).
                    RoundMessageKind::KeyAdvert => {
                        if let Ok(a) = wire::advert_of(&msg)
                            && let Some(key) = r.directory.get(a.party as usize)
                            && a.verify(&r.client.round_id(), key).is_ok()
                        {
                            r.adverts.entry(a.party).or_insert(a);
                        }
                    }
                    RoundMessageKind::EncryptedShare => {
                        // Only shares signed by the neighbour they name count as its.
                        if let Ok(s) = wire::share_of(&msg)
                            && s.to == r.client.party()
                            && let Some(key) = r.directory.get(s.from as usize)
                            && s.verify(&r.client.round_id(), key).is_ok()
                        {
                            r.shares.push(s);
                        }
                    }
                }
            }
            if let Some(r) = current.as_mut()
                && let Err(e) = {
                    let span = r.span.clone();
                    self.progress(r, &mut ledger, &mut spent_ids).instrument(span).await
                }
            {
                warn!(session = %r.session, round = r.round, error = %format!("{e:#}"), "leaving the round");
                current = None;
            }
            report.epsilon_spent = ledger.epsilon(1e-5).map(|e| e.0).unwrap_or(report.epsilon_spent);
        }
        Ok(report)
    }

    /// Checks a newly opened round, computes the quantized update and advertises keys.
    async fn join(
        &self,
        c: &RoundControl,
        settings: RoundSettings,
        ledger: &RdpAccountant,
        misbehave: Option<Misbehave>,
    ) -> Result<Round> {
        if verifying(&settings.aggregator_key)? != self.registry.aggregator {
            bail!("the round is signed by a key that is not the registered aggregator's");
        }
        let cfg = std::sync::Arc::new(wire::config_of(&c.session_id, c.round, &settings)?);
        let me = settings.participants.iter().position(|h| *h == self.hospital).context("not a participant")? as u32;
        if settings.dp_unit == DpUnit::Hospital {
            let model = settings.model_sha256.as_deref();
            if let Some(h) = settings
                .participants
                .iter()
                .find(|h| !crate::sampling::sampled(&c.session_id, c.round, model, settings.sampling_rate, h))
            {
                bail!("hospital {h} is listed but not sampled for this round at rate {}", settings.sampling_rate);
            }
        }
        // Hospital unit: the distributed discrete Gaussian, charged at what t parties'
        // noise actually gives (see `noise`).
        let distributed = (settings.dp_unit == DpUnit::Hospital)
            .then(|| crate::noise::DistributedNoise::for_round(&cfg))
            .transpose()?;
        // Budget: refuse a round that would take this hospital past its limit.
        let mut event = charge(&settings);
        if let Some(d) = &distributed {
            event.noise_multiplier = d.charged_multiplier;
        }
        let mut after = ledger.clone();
        after.compose(&event)?;
        // At the accountant's δ and limit when it has published them (it decides), else at
        // the round's δ and this agent's own limit.
        let (own, federation) = self.status().await?;
        let delta = own.as_ref().or(federation.as_ref()).map_or(settings.delta, |s| s.delta);
        let (eps_after, _) = after.epsilon(delta)?;
        let limit = own.as_ref().map_or(self.epsilon_limit, |s| s.epsilon_limit.min(self.epsilon_limit));
        let honest = misbehave != Some(Misbehave::RefusedSpend);
        if honest && own.as_ref().is_some_and(|s| s.level == BudgetLevel::Exhausted) {
            bail!("privacy budget exhausted (accountant status)");
        }
        if honest && federation.as_ref().is_some_and(|s| s.level == BudgetLevel::Exhausted) {
            bail!("the federation's privacy budget is exhausted (accountant status)");
        }
        if honest && eps_after > limit {
            bail!("the round would spend ε to {eps_after:.3} at δ={delta}, past the limit {limit}");
        }
        // The model to train from, checked against its recorded checksum.
        let global = match (&settings.model_uri, &settings.model_sha256) {
            (Some(uri), Some(sha)) => guardian_fl::npy::read(&self.store.get_verified(uri, sha).await?)?,
            (None, _) => vec![0f32; cfg.dimension as usize],
            (Some(_), None) => bail!("the round names a model without its checksum"),
        };
        crate::error::ensure!(
            global.len() as u64 == cfg.dimension,
            "model has {} parameters, the round {}",
            global.len(),
            cfg.dimension
        );
        let mut rng = ChaCha20Rng::from_os_rng();
        let update = match (&self.source, settings.dp_unit) {
            (UpdateSource::Data(ds), DpUnit::Patient) => {
                let dp = DpSgd {
                    steps: settings.local_steps.max(0) as u32,
                    sampling_rate: settings.sampling_rate,
                    clip_norm: settings.clip_norm,
                    noise_multiplier: settings.noise_multiplier,
                    learning_rate: settings.learning_rate,
                    l2: 1e-3,
                };
                dp_sgd_update(&global, ds, &dp, &mut rng)
            }
            (UpdateSource::Data(ds), DpUnit::Hospital) => {
                let lt = LocalTraining {
                    epochs: settings.local_steps.max(1) as u32,
                    learning_rate: settings.learning_rate,
                    ..LocalTraining::default()
                };
                let mut u = local_update(&global, ds, &lt, &mut rng);
                guardian_secagg::quantize::clip_l2(&mut u, settings.clip_norm);
                u
            }
            (UpdateSource::File(u), DpUnit::Hospital) => {
                crate::error::ensure!(
                    u.len() as u64 == cfg.dimension,
                    "update file has {} values, the round {}",
                    u.len(),
                    cfg.dimension
                );
                let mut u = u.clone();
                guardian_secagg::quantize::clip_l2(&mut u, settings.clip_norm);
                u
            }
            (UpdateSource::Command(trainer), DpUnit::Hospital) => {
                let id = crate::trainer::RoundId { session: &c.session_id, round: c.round, hospital: &self.hospital };
                let mut u = trainer.train(id, &global).await?;
                guardian_secagg::quantize::clip_l2(&mut u, settings.clip_norm);
                u
            }
            (UpdateSource::Command(_), DpUnit::Patient) => {
                bail!(
                    "a site's trainer cannot run DP-SGD for the agent: PATIENT-unit rounds need the agent's data (use a HOSPITAL-unit session with --train-cmd)"
                )
            }
            (UpdateSource::File(_), DpUnit::Patient) => {
                bail!(
                    "a precomputed update cannot be trained with DP-SGD here: PATIENT-unit rounds need the agent's data (use a HOSPITAL-unit session for update files)"
                )
            }
        };
        let mut quantized = vec![0u32; update.len()];
        cfg.quantizer()?.quantize(&update, &mut quantized, &mut rng)?;
        if let Some(d) = &distributed {
            d.add(&mut quantized, &mut rng);
        }
        let client = Client::new(cfg.clone(), me, self.identity.clone(), &mut rng)?;
        let directory = self.registry.directory(&settings.participants)?;
        let advert = client.advertise();
        let key = round_key(&c.session_id, c.round);
        self.lag().await;
        self.producer
            .send(&self.topics.keys, &key, &wire::advert_record(&c.session_id, c.round, &self.hospital, &advert))
            .await?;
        info!(session = %c.session_id, round = c.round, party = me, epsilon_after = eps_after, "joined the round");
        let spend = BudgetSpend {
            event_id: format!("{}/{}/{}", c.session_id, c.round, self.hospital),
            hospital_id: self.hospital.clone(),
            session_id: c.session_id.clone(),
            round: c.round,
            mechanism: Mechanism::SampledGaussian,
            sampling_rate: event.sampling_rate,
            noise_multiplier: event.noise_multiplier,
            steps: event.count as i64,
            delta: settings.delta,
            occurred_at: guardian_runtime::now_ms(),
        };
        Ok(Round {
            session: c.session_id.clone(),
            round: c.round,
            settings,
            cfg,
            directory,
            client,
            misbehave: None,
            quantized,
            spend,
            adverts: BTreeMap::new(),
            shares: Vec::new(),
            keys_closed: None,
            shares_closed: None,
            unmask: None,
            shared: false,
            masked: false,
            answered: false,
            span: tracing::Span::none(),
        })
    }

    /// The signed chunks of the masked update, each with the hospital its record names;
    /// with a misbehaviour, what a lying hospital would send instead.
    fn chunks_to_send(&self, r: &Round, masked: &[u32]) -> Vec<(String, MaskedChunk)> {
        let me = r.client.party();
        let mut out: Vec<(String, MaskedChunk)> =
            r.client.chunks(masked).into_iter().map(|c| (self.hospital.clone(), c)).collect();
        match r.misbehave {
            Some(Misbehave::ForgeChunk) => {
                let victim = (me + 1) % r.cfg.parties();
                let fake = r.cfg.chunk_words(&vec![7; r.cfg.dimension as usize]);
                let forged = MaskedChunk::sign_input(&r.cfg, &r.client.round_id(), victim, fake, &self.identity);
                out.insert(0, (r.cfg.participants[victim as usize].clone(), forged[0].clone()));
            }
            Some(Misbehave::Equivocate) => {
                let mut other = masked.to_vec();
                other[0] = other[0].wrapping_add(1);
                // Before the last genuine chunk: once an input is complete the stage may
                // close, and a record after that changes nothing.
                out.insert(1, (self.hospital.clone(), r.client.chunks(&other).swap_remove(0)));
            }
            Some(Misbehave::OversizedChunk) => {
                let mut words = r.cfg.chunk_words(masked);
                words[0].push(1);
                out.insert(0, (self.hospital.clone(), r.client.sign_chunks(words).swap_remove(0)));
            }
            Some(Misbehave::GarbageShares | Misbehave::RefusedSpend) | None => {}
        }
        out
    }

    /// The `slow` fault's delay before an answer.
    async fn lag(&self) {
        if let Some(Fault::Slow(d)) = self.fault {
            tokio::time::sleep(d).await;
        }
    }

    /// Takes every step the round's state allows.
    async fn progress(&self, r: &mut Round, ledger: &mut RdpAccountant, spent: &mut BTreeSet<String>) -> Result<()> {
        let key = round_key(&r.session, r.round);
        let aggregator = verifying(&r.settings.aggregator_key)?;
        if !r.shared
            && let Some(u1) = &r.keys_closed
        {
            let wanted: Vec<u32> =
                r.client.neighbours().iter().copied().filter(|j| u1.binary_search(j).is_ok()).collect();
            if wanted.iter().all(|j| r.adverts.contains_key(j)) {
                let adverts: Vec<KeyAdvert> = wanted.iter().map(|j| r.adverts[j].clone()).collect();
                let mut rng = ChaCha20Rng::from_os_rng();
                let mut shares = r.client.share_keys(&adverts, &r.directory, &mut rng)?;
                if r.misbehave == Some(Misbehave::GarbageShares)
                    && let Some(s) = shares.first_mut()
                {
                    rand::RngCore::fill_bytes(&mut rng, &mut s.ciphertext);
                    s.sign(&r.client.round_id(), &self.identity);
                }
                self.lag().await;
                for s in &shares {
                    self.producer
                        .send(&self.topics.keys, &key, &wire::share_record(&r.session, r.round, &self.hospital, s))
                        .await?;
                }
                r.shared = true;
            }
        }
        if r.shared
            && !r.masked
            && let Some(closed) = r.shares_closed.clone()
        {
            if closed.first.binary_search(&r.client.party()).is_err() {
                bail!("left out of the round by the aggregator (shares not delivered in time)");
            }
            let me = r.client.party();
            let from: BTreeSet<u32> = r.shares.iter().map(|s| s.from).collect();
            let needed = r.client.neighbours().iter().filter(|j| closed.first.binary_search(j).is_ok());
            if needed.clone().all(|j| from.contains(j)) {
                r.client.receive_shares(&r.shares)?;
                let mut masked = std::mem::take(&mut r.quantized);
                r.client.mask(&closed, &aggregator, &mut masked)?;
                if self.fault == Some(Fault::BeforeInput(r.round)) {
                    warn!(round = r.round, party = me, "fault injection: aborting before sending the masked update");
                    std::process::abort();
                }
                // Spend first: a crash after this over-counts, never under-counts.
                // Signed: an accountant that checks signatures takes it as this hospital's.
                let signer = guardian_kafka::signing::EventSigner::new(
                    self.hospital.clone(),
                    guardian_topics::TopicId::BudgetSpend.role(),
                    self.identity.clone(),
                );
                self.producer.send_signed(&self.topics.spend, &self.hospital, &r.spend, &signer).await?;
                if spent.insert(r.spend.event_id.clone()) {
                    ledger.compose(&SampledGaussian {
                        sampling_rate: r.spend.sampling_rate,
                        noise_multiplier: r.spend.noise_multiplier,
                        count: r.spend.steps as u64,
                    })?;
                }
                let chunks = self.chunks_to_send(r, &masked);
                self.lag().await;
                for (hospital, chunk) in &chunks {
                    let record = wire::chunk_record(&r.cfg, hospital, chunk);
                    self.producer.send(&self.topics.updates, &format!("{key}/{hospital}"), &record).await?;
                }
                r.masked = true;
            }
        }
        if r.masked
            && !r.answered
            && let Some(request) = r.unmask.clone()
        {
            let response = r.client.unmask(&request, &aggregator)?;
            self.lag().await;
            self.producer
                .send(&self.topics.unmask, &key, &wire::unmask_record(&r.session, r.round, &self.hospital, &response))
                .await?;
            r.answered = true;
        }
        Ok(())
    }
}
