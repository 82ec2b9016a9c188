//! `guardian-bench fl-scale`: the aggregator (`guardian fl start`, a process of its own,
//! on the real stack's Kafka and S3) runs hospital-sampled rounds of a large federation
//! whose parties are simulated in this process with the real protocol: each sampled
//! hospital advertises signed keys, sends its encrypted Shamir shares, its masked update
//! as signed chunk records and its unmask answer over the same topics, in the same
//! records, as an agent. The parties exchange their shares among themselves in memory
//! (an agent reads them from `fl.keys`); nothing the aggregator reads is simulated.
//!
//! Per round it prints the sample, the dropouts, each stage's time (from the aggregator's
//! own records), the aggregator's CPU-seconds, the bytes on the wire per parameter and
//! the aggregator's peak memory (VmHWM), against the targets.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use ed25519_dalek::{SigningKey, VerifyingKey};
use guardian_federated::{FlTopics, registry, wire};
use guardian_kafka::Producer;
use guardian_kafka::reader::{Start, Tail};
use guardian_schemas::Codec;
use guardian_schemas::records::{GradientUpdateChunk, RoundControl, RoundControlKind as K, RoundSettings};
use guardian_secagg::{Client, EncryptedShare, KeyAdvert, RoundConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::{BenchFlScaleArgs, KillOnDrop, cpu};

/// One round as the bench saw it.
#[derive(Debug, Default)]
struct RoundSeen {
    sampled: usize,
    dropped: usize,
    outcome: String,
    /// The aggregator's record times (its clock, ms) by kind.
    at: BTreeMap<&'static str, i64>,
    /// The aggregator's CPU time when each record arrived here.
    cpu: BTreeMap<&'static str, Duration>,
    /// Bytes of the masked updates sent (encoded chunk records), and how many were sent.
    update_bytes: u64,
    inputs: u64,
    /// Bytes of every other record the parties sent (advertisements, shares, unmask answers).
    protocol_bytes: u64,
    /// Wall time the simulated parties spent computing (not counted as the server's).
    party_work: Duration,
}

struct Party {
    hospital: String,
    client: Client,
    inbox: Vec<EncryptedShare>,
    drops: bool,
}

struct Round {
    cfg: Arc<RoundConfig>,
    directory: Vec<VerifyingKey>,
    parties: Vec<Party>,
    adverts: BTreeMap<u32, KeyAdvert>,
}

/// Sends `records` to `topic` under `key`, each encoded once, and returns their bytes.
async fn send_all<T: guardian_schemas::records::Record>(
    producer: &Producer,
    codec: &Codec,
    topic: &str,
    key: &str,
    records: &[T],
) -> Result<u64> {
    let mut batch = producer.batch(topic);
    let mut bytes = 0;
    for r in records {
        let payload = codec.encode(r)?;
        bytes += payload.len() as u64;
        batch.push(None, Some(key.as_bytes()), Some(&payload), None).await?;
    }
    batch.finish().await?;
    Ok(bytes)
}

fn name(kind: K) -> &'static str {
    match kind {
        K::Open => "open",
        K::KeysClosed => "keys",
        K::SharesClosed => "shares",
        K::Unmask => "inputs",
        K::Finished => "finished",
        K::Failed => "failed",
        K::Stop => "stop",
    }
}

/// Peak resident memory of a process, from `/proc/<pid>/status`.
fn peak_memory(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb * 1024)
}

fn run_guardian(guardian: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(guardian).args(args).output().with_context(|| format!("running {}", guardian.display()))?;
    if !out.status.success() {
        bail!("guardian {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub async fn run(args: BenchFlScaleArgs) -> Result<ExitCode> {
    ensure!(
        args.hospitals >= 2 && args.expected >= 2 && args.expected <= args.hospitals,
        "need 2 ≤ --expected ≤ --hospitals"
    );
    ensure!((0.0..0.5).contains(&args.dropout), "--dropout must be in [0, 0.5)");
    let guardian = crate::guardian_binary()?;
    let tag = format!("{:08x}", rand::random::<u32>());
    let prefix = format!("bench-fl-{tag}.");
    let dir = std::env::temp_dir().join(format!("bench-fl-{tag}"));
    std::fs::create_dir_all(&dir)?;
    let bootstrap = args.kafka.bootstrap_servers.clone();
    let kafka_flags = ["--bootstrap-servers", bootstrap.as_str(), "--topic-prefix", prefix.as_str()];
    run_guardian(&guardian, &[&["topics", "apply"][..], &kafka_flags].concat())?;

    // Keys for the federation and the aggregator.
    let hospitals: Vec<String> = (0..args.hospitals).map(|i| format!("h{i:05}")).collect();
    let list = hospitals.join(",");
    run_guardian(
        &guardian,
        &["fl", "keygen", "--dir", dir.to_str().context("a UTF-8 temp path")?, "--hospitals", &list],
    )?;
    let reg = registry::Registry::load(&dir.join("registry.toml"))?;
    let identities: BTreeMap<String, SigningKey> = hospitals
        .iter()
        .map(|h| Ok((h.clone(), registry::load_identity(&dir.join(format!("{h}.key")))?)))
        .collect::<Result<_>>()?;
    let initial = dir.join("initial.npy");
    std::fs::write(&initial, guardian_fl::npy::write(&vec![0f32; args.parameters as usize]))?;
    let model_bytes = args.parameters * 4;

    let catalogue = guardian_kafka::connect::catalogue(None, &prefix)?;
    let topics = FlTopics::from_catalogue(&catalogue)?;
    let settings = args.kafka.settings(&crate::client("fl-scale"));
    let producer = Producer::new(&settings)?;
    let codec = Codec::embedded();
    let tail = Tail::open(&settings, "bench-fl-scale", &[&topics.rounds], Start::End).await?;

    let session = format!("bench-{tag}");
    let q = f64::from(args.expected) / f64::from(args.hospitals);
    let log = dir.join("aggregator.log");
    let mut aggregator = Command::new(&guardian);
    aggregator
        .args(["fl", "start"])
        .args(kafka_flags)
        .args(["--identity", dir.join("aggregator.key").to_str().unwrap_or_default()])
        .args(["--registry", dir.join("registry.toml").to_str().unwrap_or_default()])
        .args(["--session", &session, "--rounds", &args.rounds.to_string(), "--dp-unit", "hospital"])
        .args(["--hospital-sampling-rate", &q.to_string(), "--spend-decisions", "off", "--epsilon", "10"])
        .args([
            "--chunk-len",
            &args.chunk_len.to_string(),
            "--stage-timeout-secs",
            &args.stage_timeout_secs.to_string(),
        ])
        .args(["--initial-model", initial.to_str().unwrap_or_default()])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log)?);
    for (k, v) in &args.kafka.kafka_config {
        aggregator.arg("--kafka-config").arg(format!("{k}={v}"));
    }
    let child = KillOnDrop(aggregator.spawn().context("starting the aggregator")?);
    let pid = child.0.id();
    eprintln!(
        "bench: {} hospitals, rounds sampling {} expected, {} parameters, {:.0} % dropout; aggregator pid {pid} (log {})",
        args.hospitals,
        args.expected,
        args.parameters,
        args.dropout * 100.0,
        log.display()
    );

    let mut rng = ChaCha20Rng::seed_from_u64(args.seed);
    let mut seen: BTreeMap<i64, RoundSeen> = BTreeMap::new();
    let mut current: Option<(i64, Round)> = None;
    let mut peak = 0u64;
    let mut last = Instant::now();
    let aggregator_key = reg.aggregator;
    loop {
        peak = peak.max(peak_memory(pid).unwrap_or(0));
        if last.elapsed() > Duration::from_secs(args.stage_timeout_secs * 3 + 60) {
            bail!("no round record for too long (see {})", log.display());
        }
        let Some(m) = tail.next(Duration::from_millis(200)).await? else { continue };
        let Ok(c) = codec.decode::<RoundControl>(&m.payload) else { continue };
        if c.session_id != session {
            continue;
        }
        last = Instant::now();
        let cpu_now = cpu::process(pid).unwrap_or_default();
        let r = seen.entry(c.round).or_default();
        r.at.insert(name(c.kind), c.issued_at);
        r.cpu.insert(name(c.kind), cpu_now);
        let t0 = Instant::now();
        match c.kind {
            K::Open => {
                let s = c.settings.clone().context("OPEN without settings")?;
                let round = open(&c, &s, &identities, &reg, args.dropout, &mut rng)?;
                r.sampled = round.parties.len();
                r.dropped = round.parties.iter().filter(|p| p.drops).count();
                eprintln!(
                    "bench: round {} open: {} sampled, {} will drop after sharing",
                    c.round, r.sampled, r.dropped
                );
                for p in &round.parties {
                    let advert = p.client.advertise();
                    let record = wire::advert_record(&session, c.round, &p.hospital, &advert);
                    let key = wire::round_key(&session, c.round);
                    r.protocol_bytes += send_all(&producer, &codec, &topics.keys, &key, &[record]).await?;
                }
                current = Some((c.round, round));
            }
            K::KeysClosed => {
                let Some((_, round)) = current.as_mut().filter(|(n, _)| *n == c.round) else { continue };
                let u1 = wire::parties_of(&c.first)?;
                for p in round.parties.iter() {
                    let me = p.client.party();
                    if u1.binary_search(&me).is_ok() {
                        let advert = p.client.advertise();
                        round.adverts.insert(me, advert);
                    }
                }
                let mut outgoing = Vec::new();
                for i in 0..round.parties.len() {
                    let me = round.parties[i].client.party();
                    if u1.binary_search(&me).is_err() {
                        continue;
                    }
                    let wanted: Vec<KeyAdvert> = round.parties[i]
                        .client
                        .neighbours()
                        .iter()
                        .filter_map(|j| round.adverts.get(j).cloned())
                        .collect();
                    let shares = round.parties[i].client.share_keys(&wanted, &round.directory, &mut rng)?;
                    for s in shares {
                        outgoing.push((round.parties[i].hospital.clone(), s));
                    }
                }
                let key = wire::round_key(&session, c.round);
                let mut records = Vec::with_capacity(outgoing.len());
                for (hospital, s) in outgoing {
                    records.push(wire::share_record(&session, c.round, &hospital, &s));
                    if let Some(to) = round.parties.iter_mut().find(|p| p.client.party() == s.to) {
                        to.inbox.push(s);
                    }
                }
                r.protocol_bytes += send_all(&producer, &codec, &topics.keys, &key, &records).await?;
            }
            K::SharesClosed => {
                let Some((_, round)) = current.as_mut().filter(|(n, _)| *n == c.round) else { continue };
                let closed = wire::signed_sets_of(&c)?;
                let cfg = round.cfg.clone();
                let quantizer = cfg.quantizer()?;
                for p in round.parties.iter_mut() {
                    if p.drops || closed.first.binary_search(&p.client.party()).is_err() {
                        continue;
                    }
                    let inbox = std::mem::take(&mut p.inbox);
                    p.client.receive_shares(&inbox)?;
                    // An update of norm 1 in a random direction.
                    let mut update: Vec<f32> = (0..cfg.dimension).map(|_| rng.random_range(-1.0f32..1.0)).collect();
                    let norm = update.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt() as f32;
                    update.iter_mut().for_each(|v| *v /= norm);
                    let mut masked = vec![0u32; update.len()];
                    quantizer.quantize(&update, &mut masked, &mut rng)?;
                    drop(update);
                    p.client.mask(&closed, &aggregator_key, &mut masked)?;
                    let chunks = p.client.chunks(&masked);
                    drop(masked);
                    let records: Vec<GradientUpdateChunk> =
                        chunks.iter().map(|ch| wire::chunk_record(&cfg, &p.hospital, ch)).collect();
                    drop(chunks);
                    let key = format!("{}/{}", wire::round_key(&session, c.round), p.hospital);
                    r.update_bytes += send_all(&producer, &codec, &topics.updates, &key, &records).await?;
                    r.inputs += 1;
                }
            }
            K::Unmask => {
                let Some((_, round)) = current.as_mut().filter(|(n, _)| *n == c.round) else { continue };
                let request = wire::signed_sets_of(&c)?;
                let key = wire::round_key(&session, c.round);
                for p in round.parties.iter_mut() {
                    if request.first.binary_search(&p.client.party()).is_err() {
                        continue;
                    }
                    let response = p.client.unmask(&request, &aggregator_key)?;
                    let record = wire::unmask_record(&session, c.round, &p.hospital, &response);
                    r.protocol_bytes += send_all(&producer, &codec, &topics.unmask, &key, &[record]).await?;
                }
            }
            K::Finished | K::Failed => {
                r.outcome = match c.kind {
                    K::Finished => "finished".into(),
                    _ => format!("failed: {}", c.reason.clone().unwrap_or_default()),
                };
                eprintln!("bench: round {} {}", c.round, r.outcome);
                current = None;
                if c.round >= i64::from(args.rounds) {
                    break;
                }
            }
            K::Stop => {}
        }
        r.party_work += t0.elapsed();
    }
    peak = peak.max(peak_memory(pid).unwrap_or(0));
    let mut child = child;
    let mut table = String::new();
    if let Some(mut stdout) = child.0.stdout.take() {
        stdout.read_to_string(&mut table)?;
    }
    let status = child.0.wait()?;
    let admin = args.kafka.admin(&crate::client("admin")).await?;
    let names: Vec<String> = catalogue.specs().map(|s| catalogue.name_of(s)).collect();
    let _ = admin.delete(&names).await;
    let _ = std::fs::remove_dir_all(&dir);
    if !status.success() {
        bail!("the aggregator failed ({status}): {table}");
    }

    let ms = |r: &RoundSeen, a: &str, b: &str| match (r.at.get(a), r.at.get(b)) {
        (Some(x), Some(y)) => format!("{:.2}", (y - x) as f64 / 1000.0),
        _ => "-".into(),
    };
    let cpu_between = |r: &RoundSeen, a: &str, b: &str| match (r.cpu.get(a), r.cpu.get(b)) {
        (Some(x), Some(y)) => Some(y.saturating_sub(*x)),
        _ => None,
    };
    println!();
    println!(
        "federated rounds at scale: {} registered hospitals, sampling rate {q} (about {} a round), {} parameters ({:.0} MB), {:.0} % of each sample dropping after sharing, 1 aggregator instance",
        args.hospitals,
        args.expected,
        args.parameters,
        model_bytes as f64 / 1e6,
        args.dropout * 100.0
    );
    println!();
    println!(
        "| round | outcome | sampled | dropped | keys s | shares s | inputs s | unmask + sum + publish s | server CPU s | parties' work s | update bytes/parameter | other bytes/party |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut server = Vec::new();
    for (n, r) in &seen {
        let work = cpu_between(r, "open", "finished");
        if let Some(w) = work {
            server.push(w);
        }
        let senders = (r.sampled.max(1)) as f64;
        println!(
            "| {n} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {:.4} | {:.0} |",
            r.outcome,
            r.sampled,
            r.dropped,
            ms(r, "open", "keys"),
            ms(r, "keys", "shares"),
            ms(r, "shares", "inputs"),
            ms(r, "inputs", "finished"),
            work.map_or("-".into(), |w| format!("{:.2}", w.as_secs_f64())),
            r.party_work.as_secs_f64(),
            r.update_bytes as f64 / r.inputs.max(1) as f64 / args.parameters as f64,
            r.protocol_bytes as f64 / senders
        );
    }
    let target_memory = 2 * model_bytes + 200 * 1024 * 1024;
    let worst = server.iter().max().copied().unwrap_or_default();
    println!();
    println!(
        "server work per round (the aggregator's CPU from OPEN to FINISHED), worst: {:.2} s (target ≤ 10 s: {})",
        worst.as_secs_f64(),
        if worst <= Duration::from_secs(10) { "met" } else { "not met" }
    );
    println!(
        "aggregator peak memory (VmHWM): {:.0} MB (target ≤ 2 × model + 200 MB = {:.0} MB: {})",
        peak as f64 / 1048576.0,
        target_memory as f64 / 1048576.0,
        if peak <= target_memory { "met" } else { "not met" }
    );
    println!(
        "stage times are the aggregator's own record times; the input stage waits its timeout ({} s) for the dropouts; the simulated parties' work is not server work",
        args.stage_timeout_secs
    );
    Ok(ExitCode::SUCCESS)
}

/// The simulated parties of a newly opened round: every listed hospital joins; a seeded
/// `dropout` share of them will stop after sharing their keys.
fn open(
    c: &RoundControl,
    s: &RoundSettings,
    identities: &BTreeMap<String, SigningKey>,
    reg: &registry::Registry,
    dropout: f64,
    rng: &mut ChaCha20Rng,
) -> Result<Round> {
    let cfg = Arc::new(wire::config_of(&c.session_id, c.round, s)?);
    let n = s.participants.len();
    let drop_count = (n as f64 * dropout).round() as usize;
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
    let dropping: Vec<usize> = order[..drop_count].to_vec();
    let parties = s
        .participants
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let identity = identities.get(h).with_context(|| format!("no key for {h}"))?.clone();
            Ok(Party {
                hospital: h.clone(),
                client: Client::new(cfg.clone(), i as u32, identity, rng)?,
                inbox: Vec::new(),
                drops: dropping.contains(&i),
            })
        })
        .collect::<Result<_>>()?;
    Ok(Round { directory: reg.directory(&s.participants)?, cfg, parties, adverts: BTreeMap::new() })
}
