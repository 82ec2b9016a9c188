//! `guardian agent encounters`: publishes encounters from a file, checked line by line (a
//! bad line is reported with its number and skipped, never silently), or from the seeded
//! synthetic generator (to Kafka or to an NDJSON file).

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use guardian_kafka::Producer;
use guardian_runtime::Shutdown;
use guardian_schemas::records::Encounter;
use guardian_topics::TopicId;

use crate::cli::EncountersArgs;
use guardian_runtime::now_ms;
use guardian_schemas::synth::Synth;
use tracing::Instrument;

/// Lines a file read refused: (line number, reason).
type Refused = Vec<(usize, String)>;

/// The encounters of a file (`.csv` with a header, else NDJSON), and the lines refused.
pub fn read_file(path: &std::path::Path) -> Result<(Vec<Encounter>, Refused)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let csv = path.extension().and_then(|e| e.to_str()) == Some("csv");
    Ok(guardian_schemas::encounter_file::parse(&text, csv))
}

pub async fn run(args: EncountersArgs) -> Result<ExitCode> {
    let (encounters, bad): (Box<dyn Iterator<Item = Encounter> + Send>, Refused) = match (&args.file, args.generate) {
        (Some(path), _) => {
            let (good, bad) = read_file(path)?;
            for (line, why) in &bad {
                eprintln!("{}:{line}: skipped: {why}", path.display());
            }
            (Box::new(good.into_iter()), bad)
        }
        (None, true) => {
            let mut synth = Synth::new(args.seed, args.hospitals);
            // Without --start-ms the event times never run ahead of the clock (consumers
            // dead-letter records dated past their timestamp plus a skew): a counted run
            // ends at the present, an endless one follows the clock.
            let (step, late_every) = (args.step_ms, args.late_every);
            let given = args.start_ms;
            let start = given.unwrap_or_else(|| {
                let span = args.count.map_or(0, |c| (c.saturating_sub(1) as i64).saturating_mul(step));
                now_ms().saturating_sub(span)
            });
            let mut n = 0u64;
            let generated = std::iter::from_fn(move || {
                let mut at = start.saturating_add((n as i64).saturating_mul(step));
                if given.is_none() {
                    at = at.min(now_ms());
                }
                if late_every > 0 && n % late_every == late_every - 1 {
                    at -= 180_000;
                }
                n += 1;
                Some(synth.next(at).0)
            });
            match args.count {
                Some(c) => (Box::new(generated.take(c as usize)), Vec::new()),
                None => (Box::new(generated), Vec::new()),
            }
        }
        (None, false) => bail!("give --file FILE or --generate"),
    };
    if let Some(out) = &args.out {
        if args.count.is_none() {
            bail!("--out needs --count");
        }
        let mut f =
            std::io::BufWriter::new(std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?);
        let mut n = 0;
        for e in encounters {
            serde_json::to_writer(&mut f, &e)?;
            f.write_all(b"\n")?;
            n += 1;
        }
        f.flush()?;
        println!("wrote {n} encounters to {}", out.display());
        return Ok(ExitCode::SUCCESS);
    }
    let catalogue = args.kafka.checked_catalogue(guardian_topics::ServiceId::Ops, &[TopicId::Encounters]).await?;
    let topic = catalogue.topic(TopicId::Encounters)?;
    let client = match &args.sign_as {
        Some(hospital) => guardian_topics::hospital_client(hospital, "encounters"),
        None => guardian_topics::ServiceId::Ops.client_for("encounters"),
    };
    let producer = Producer::new(&args.kafka.settings(&client))?;
    let signer = match (&args.identity, &args.sign_as) {
        (Some(path), Some(hospital)) => Some(guardian_kafka::signing::EventSigner::new(
            hospital.clone(),
            TopicId::Encounters.role(),
            guardian_federated::registry::load_identity(path)?,
        )),
        _ => None,
    };
    let shutdown = Shutdown::on_signals();
    let started = Instant::now();
    let mut sent = 0u64;
    let mut batch: Vec<Encounter> = Vec::with_capacity(1000);
    let mut last_report = Instant::now();
    let mut encounters = encounters.peekable();
    while encounters.peek().is_some() && !shutdown.is_triggered() {
        batch.clear();
        let chunk = if args.rate > 0.0 { (args.rate / 10.0).ceil().max(1.0) as usize } else { 1000 };
        batch.extend(encounters.by_ref().take(chunk));
        if let Some(s) = &signer
            && let Some(other) = batch.iter().find(|e| e.hospital_id != s.hospital)
        {
            bail!(
                "event {} is hospital {}'s: it cannot be signed as {} (sent so far: {sent})",
                other.event_id,
                other.hospital_id,
                s.hospital
            );
        }
        // One span per batch: its records carry its trace context, and the consumers'
        // spans of each record, the rollup's outbox record included, continue it.
        let span = tracing::info_span!("agent.publish", messaging.destination = %topic, records = batch.len());
        producer
            .send_batch_signed(&topic, batch.iter().map(|e| (e.hospital_id.as_str(), e)), signer.as_ref())
            .instrument(span)
            .await?;
        sent += batch.len() as u64;
        if args.rate > 0.0 {
            let due = Duration::from_secs_f64(sent as f64 / args.rate);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        if last_report.elapsed() > Duration::from_secs(2) {
            eprintln!("encounters: {sent} sent, {:.0}/s", sent as f64 / started.elapsed().as_secs_f64());
            last_report = Instant::now();
        }
    }
    println!("published {sent} encounters to {topic}; skipped {} bad lines", bad.len());
    Ok(if bad.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(2) })
}
