//! `guardian agent encounters`: publishes encounters from a file, checked line by line (a
//! bad line is reported with its number and skipped, never silently), or from the seeded
//! synthetic generator (to Kafka or to an NDJSON file).

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use guardian_kafka::Producer;
use guardian_runtime::Shutdown;
use guardian_schemas::records::{Encounter, EncounterType};
use guardian_topics::TopicId;

use crate::cli::EncountersArgs;
use crate::common;
use guardian_runtime::now_ms;
use guardian_schemas::synth::Synth;

/// One CSV line into an encounter, by the header's column names.
fn from_csv(header: &[&str], line: &str) -> Result<Encounter, String> {
    let cells: Vec<&str> = line.split(',').map(str::trim).collect();
    if cells.len() != header.len() {
        return Err(format!("{} columns, the header has {}", cells.len(), header.len()));
    }
    let get = |name: &str| header.iter().position(|h| *h == name).map(|i| cells[i]);
    let need = |name: &str| get(name).filter(|v| !v.is_empty()).ok_or_else(|| format!("missing {name}"));
    let int = |name: &str| need(name)?.parse::<i64>().map_err(|_| format!("{name} is not a whole number"));
    let optional = |name: &str| match get(name) {
        None | Some("") => Ok(None),
        Some(v) => v.parse::<i64>().map(Some).map_err(|_| format!("{name} is not a whole number")),
    };
    let encounter_type = match get("encounter_type").unwrap_or("OTHER") {
        "OUTPATIENT" => EncounterType::Outpatient,
        "INPATIENT" => EncounterType::Inpatient,
        "EMERGENCY" => EncounterType::Emergency,
        "TELEHEALTH" => EncounterType::Telehealth,
        "OTHER" | "" => EncounterType::Other,
        other => return Err(format!("unknown encounter_type {other}")),
    };
    Ok(Encounter {
        event_id: need("event_id")?.to_string(),
        hospital_id: need("hospital_id")?.to_string(),
        encounter_ref: need("encounter_ref")?.to_string(),
        clinician_ref: need("clinician_ref")?.to_string(),
        occurred_at: int("occurred_at")?,
        encounter_type,
        soap_sections_expected: int("soap_sections_expected")? as i32,
        soap_sections_completed: int("soap_sections_completed")? as i32,
        generation_ms: int("generation_ms")?,
        physician_rating: optional("physician_rating")?.map(|r| r as i32),
        model_version: optional("model_version")?,
    })
}

/// Lines a file read refused: (line number, reason).
type Refused = Vec<(usize, String)>;

/// The encounters of a file, and the lines that were refused.
pub fn read_file(path: &std::path::Path) -> Result<(Vec<Encounter>, Refused)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let csv = path.extension().and_then(|e| e.to_str()) == Some("csv");
    let mut good = Vec::new();
    let mut bad = Vec::new();
    let mut header: Option<Vec<&str>> = None;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let parsed = if csv {
            match &header {
                None => {
                    header = Some(line.split(',').map(str::trim).collect());
                    continue;
                }
                Some(h) => from_csv(h, line),
            }
        } else {
            serde_json::from_str::<Encounter>(line).map_err(|e| e.to_string())
        };
        match parsed.and_then(|e| guardian_schemas::validate::encounter(&e).map(|_| e)) {
            Ok(e) => good.push(e),
            Err(why) => bad.push((n, why)),
        }
    }
    Ok((good, bad))
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
            let start = args.start_ms.unwrap_or_else(now_ms);
            let (step, late_every) = (args.step_ms, args.late_every);
            let mut n = 0u64;
            let generated = std::iter::from_fn(move || {
                let mut at = start + n as i64 * step;
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
    let catalogue = common::kafka_catalogue(&args.kafka)?;
    let admin = common::admin(&args.kafka).await?;
    common::require_topics(&admin, &catalogue, &[TopicId::Encounters]).await?;
    let topic = catalogue.topic(TopicId::Encounters)?;
    let producer = Producer::new(&common::settings(&args.kafka, "guardian-agent"))?;
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
        producer.send_batch_signed(&topic, batch.iter().map(|e| (e.hospital_id.as_str(), e)), signer.as_ref()).await?;
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
