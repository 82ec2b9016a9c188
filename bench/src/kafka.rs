//! `guardian-bench kafka`: produce and consume throughput of the Kafka library next to
//! kcat (librdkafka's own command-line client) on the same broker, in the same run.
//!
//! Both sides move the same number of records of the same size with the same producer
//! guarantees (idempotence, acks=all, linger.ms=5, no compression). The library's side
//! is the real path a service takes: typed record -> Avro single-object encoding ->
//! idempotent producer -> broker -> at-least-once consumer -> Avro decode into the typed
//! record -> offset stored. kcat sends the very same encoded bytes (newline-delimited
//! input, so any 0x0A byte is replaced by 0x0B: same sizes, no decoding on its side) and
//! consumes them (counted) without decoding. Each measurement uses a fresh topic; the
//! best and the median of `--repeat` runs are reported (this 2-core machine shares its
//! cores with the broker: single runs vary by a factor of two).
//!
//! A producer's first rows include its start-up, as kcat's do (it is a process): an
//! idempotent producer of librdkafka 2.x sends nothing until it holds a producer id, and
//! it asks for one on a 500 ms timer started at creation (`rd_kafka_idemp_init` →
//! `rd_kafka_idemp_start(rk, rd_false)` in `rdkafka_idempotence.c`). A service's producer
//! lives for days, so the "producer ready" rows time the same records through a producer
//! that already had a record acknowledged (on another topic), and the start-up is
//! reported on its own line.

use std::io::Write;
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use guardian_kafka::admin::Admin;
use guardian_kafka::dlq::DeadLetterSink;
use guardian_kafka::{AtLeastOnceConsumer, KafkaSettings, ProcessError, Producer, RecordHandler};
use guardian_runtime::Shutdown;
use guardian_schemas::Codec;
use guardian_schemas::records::{Encounter, EncounterType};
use guardian_schemas::validate::MAX_ID;
use guardian_topics::{Change, Plan};
use rdkafka::message::{BorrowedMessage, Message};

use crate::BenchKafkaArgs;

const PARTITIONS: i32 = 3;
/// Sends in flight at once on the library's side (librdkafka batches them).
const IN_FLIGHT: usize = 20_000;

/// An encounter whose encoding is `size` bytes (within a byte or two: varint lengths).
pub(super) fn record(i: u64, size: usize) -> Encounter {
    let mut e = Encounter {
        event_id: format!("bench-{i:012}"),
        hospital_id: format!("h{:03}", i % 10 + 1),
        encounter_ref: String::new(),
        clinician_ref: format!("{:016x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        occurred_at: 1_764_000_000_000 + i as i64,
        encounter_type: EncounterType::Outpatient,
        soap_sections_expected: 4,
        soap_sections_completed: 4,
        generation_ms: 1200 + (i % 1000) as i64,
        physician_rating: Some(5),
        model_version: Some(1),
    };
    // Padding goes into the two references, each kept within the bound every consumer
    // checks (`validate::MAX_ID`): a longer one would be dead-lettered, not rolled up.
    let codec = Codec::embedded();
    let len = |e: &Encounter| codec.encode(e).map(|b| b.len()).unwrap_or(0);
    let pad = size.saturating_sub(len(&e));
    let first = pad.min(MAX_ID);
    e.encounter_ref = "x".repeat(first);
    let room = MAX_ID - e.clinician_ref.len();
    e.clinician_ref.push_str(&"y".repeat((pad - first).min(room)));
    // Each string's length prefix grew by a byte past 63 characters: trim to the size.
    let over = len(&e).saturating_sub(size);
    for _ in 0..over {
        if e.clinician_ref.len() > 16 {
            e.clinician_ref.pop();
        } else {
            e.encounter_ref.pop();
        }
    }
    debug_assert!(guardian_schemas::validate::encounter(&e).is_ok());
    e
}

/// The largest record [`record`] builds within the references' bounds.
pub(super) fn largest_record() -> usize {
    let mut e = record(0, 0);
    e.encounter_ref = "x".repeat(MAX_ID);
    e.clinician_ref.push_str(&"y".repeat(MAX_ID - e.clinician_ref.len()));
    Codec::embedded().encode(&e).map(|b| b.len()).unwrap_or(0)
}

pub(super) async fn fresh_topic(admin: &Admin, base: &str) -> Result<String> {
    fresh_topic_with(admin, base, Default::default()).await
}

/// [`fresh_topic`] with topic configuration (e.g. compaction).
pub(super) async fn fresh_topic_with(
    admin: &Admin,
    base: &str,
    config: std::collections::BTreeMap<String, String>,
) -> Result<String> {
    let name = format!("bench.{base}.{:x}", rand::random::<u32>());
    let plan = Plan {
        changes: vec![Change::Create { name: name.clone(), partitions: PARTITIONS, replication_factor: 1, config }],
        ..Plan::default()
    };
    admin.apply(&plan).await?;
    Ok(name)
}

/// Seconds to encode every record, and to decode every encoded one, with `codec` on one core.
fn codec_seconds(codec: &Codec, records: &[Encounter], encoded: &[Vec<u8>]) -> Result<(f64, f64)> {
    let started = Instant::now();
    for r in records {
        std::hint::black_box(codec.encode(r)?);
    }
    let encode = started.elapsed().as_secs_f64();
    let started = Instant::now();
    for b in encoded {
        std::hint::black_box(codec.decode::<Encounter>(b)?);
    }
    Ok((encode, started.elapsed().as_secs_f64()))
}

/// Library, bulk: `Producer::send_batch` encodes and queues every record, then awaits
/// the acknowledgements.
/// With `warm`, a first record goes to that topic and is acknowledged before the timing;
/// the time from creation to that acknowledgement is returned beside.
async fn produce_library_batch(
    settings: &KafkaSettings,
    topic: &str,
    records: &[Encounter],
    warm: Option<&str>,
) -> Result<(Duration, Option<Duration>)> {
    let created = Instant::now();
    let producer = Producer::new(settings)?;
    let mut start_up = None;
    if let Some(warm) = warm {
        producer.send(warm, &records[0].hospital_id, &records[0]).await?;
        start_up = Some(created.elapsed());
    }
    let started = Instant::now();
    let delivered = producer.send_batch(topic, records.iter().map(|r| (r.hospital_id.as_str(), r))).await?;
    if delivered != records.len() as u64 {
        bail!("send_batch delivered {delivered} of {} records", records.len());
    }
    Ok((started.elapsed(), start_up))
}

/// Library, record by record: `Producer::send` per record, `IN_FLIGHT` awaited at once.
async fn produce_library_each(settings: &KafkaSettings, topic: &str, records: &[Encounter]) -> Result<Duration> {
    let producer = Producer::new(settings)?;
    let started = Instant::now();
    let mut sends = futures::stream::iter(records.iter().map(|r| {
        let producer = producer.clone();
        async move { producer.send(topic, &r.hospital_id, r).await }
    }))
    .buffer_unordered(IN_FLIGHT);
    while let Some(result) = sends.next().await {
        result?;
    }
    Ok(started.elapsed())
}

/// Counts decoded records; triggers shutdown once `target` were handled.
struct Counting {
    codec: Codec,
    handled: Arc<AtomicU64>,
    target: u64,
    done: Shutdown,
}

impl RecordHandler for Counting {
    async fn handle(&mut self, msg: &BorrowedMessage<'_>) -> Result<(), ProcessError> {
        let _e: Encounter = self.codec.decode(msg.payload().unwrap_or_default())?;
        if self.handled.fetch_add(1, Ordering::Relaxed) + 1 >= self.target {
            self.done.trigger();
        }
        Ok(())
    }
}

/// Library: subscribe from the start, decode every record, store offsets.
async fn consume_library(settings: &KafkaSettings, topic: &str, dead_letters: &str, records: u64) -> Result<Duration> {
    let group = format!("bench-consume-{:x}", rand::random::<u32>());
    let started = Instant::now();
    let sink = DeadLetterSink::new(Producer::new(settings)?, dead_letters, &group);
    let consumer = AtLeastOnceConsumer::new(settings, &group, &[topic], sink)?;
    let done = Shutdown::new();
    let handled = Arc::new(AtomicU64::new(0));
    let mut handler =
        Counting { codec: Codec::embedded(), handled: handled.clone(), target: records, done: done.clone() };
    let timeout = Duration::from_secs(300);
    let stats = tokio::time::timeout(timeout, consumer.run(&mut handler, done.wait()))
        .await
        .with_context(|| format!("library consumer did not finish in {timeout:?}"))??;
    eprintln!("bench:   library consumer: {} records in {} batches", stats.handled, stats.batches);
    let elapsed = started.elapsed();
    let n = handled.load(Ordering::Relaxed);
    if n < records {
        bail!("library consumer handled {n} of {records} records");
    }
    Ok(elapsed)
}

/// rust-rdkafka alone: the pre-encoded payloads through a `ThreadedProducer` with the
/// library's producer settings, delivery reports ignored, then a flush. With `warm`, one
/// record goes to that topic and is flushed first, outside the timing.
pub(super) fn produce_raw(
    settings: &KafkaSettings,
    topic: &str,
    records: &[Encounter],
    payloads: &[Vec<u8>],
    warm: Option<&str>,
) -> Result<Duration> {
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer as _, ThreadedProducer};
    let mut started = Instant::now();
    let producer: ThreadedProducer<DefaultProducerContext> = settings.producer().create()?;
    if let Some(warm) = warm {
        let first = BaseRecord::to(warm).key(records[0].hospital_id.as_str()).payload(payloads[0].as_slice());
        producer.send(first).map_err(|(e, _)| e)?;
        producer.flush(Duration::from_secs(60))?;
        started = Instant::now();
    }
    for (r, payload) in records.iter().zip(payloads) {
        let mut record = BaseRecord::to(topic).key(r.hospital_id.as_str()).payload(payload.as_slice());
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    back,
                )) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }
    producer.flush(Duration::from_secs(60))?;
    Ok(started.elapsed())
}

/// rust-rdkafka alone: a bare `StreamConsumer` loop over the same topic, no decoding, no
/// offsets stored: what the library's consumer is built on.
pub(super) async fn consume_raw(settings: &KafkaSettings, topic: &str, records: u64) -> Result<Duration> {
    Ok(consume_raw_timed(settings, topic, records).await?.0)
}

/// The raw consume loop, timed from the subscription and from the first record.
pub(super) async fn consume_raw_timed(
    settings: &KafkaSettings,
    topic: &str,
    records: u64,
) -> Result<(Duration, Duration)> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    let started = Instant::now();
    let mut first: Option<Instant> = None;
    let consumer: StreamConsumer = settings
        .manual_commit_consumer(&format!("bench-raw-{:x}", rand::random::<u32>()))
        .create()
        .context("creating the raw consumer")?;
    consumer.subscribe(&[topic])?;
    let mut n = 0u64;
    let mut bytes = 0usize;
    while n < records {
        let msg =
            tokio::time::timeout(Duration::from_secs(60), consumer.recv()).await.context("raw consumer stalled")??;
        bytes += msg.payload().map_or(0, <[u8]>::len);
        n += 1;
        first.get_or_insert_with(Instant::now);
    }
    std::hint::black_box(bytes);
    Ok((started.elapsed(), first.map_or(Duration::ZERO, |f| f.elapsed())))
}

fn kcat_common(kcat: &str, bootstrap: &str, topic: &str) -> std::process::Command {
    let mut c = std::process::Command::new(kcat);
    c.args(["-b", bootstrap, "-t", topic, "-q"]);
    c
}

/// kcat: produce newline-delimited records from a file, same producer settings.
fn produce_kcat(kcat: &str, bootstrap: &str, topic: &str, input: &std::path::Path) -> Result<Duration> {
    let started = Instant::now();
    let out = kcat_common(kcat, bootstrap, topic)
        .args(["-P", "-K", "\t", "-X", "enable.idempotence=true", "-X", "acks=all", "-X", "linger.ms=5"])
        .arg("-l")
        .arg(input)
        .stdout(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {kcat} (install it: tests/stack/stack.sh install)"))?;
    let elapsed = started.elapsed();
    if !out.status.success() {
        bail!("kcat produce failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(elapsed)
}

/// kcat: consume the topic from the beginning until `records` were printed. The output is
/// counted (one line per record: kcat's input had no newline bytes), so a short read is
/// an error, not a fast result.
fn consume_kcat(kcat: &str, bootstrap: &str, topic: &str, records: u64) -> Result<Duration> {
    let started = Instant::now();
    let mut child = kcat_common(kcat, bootstrap, topic)
        .args([
            "-C",
            "-o",
            "beginning",
            "-c",
            &records.to_string(),
            "-f",
            "%s\n",
            "-X",
            "isolation.level=read_committed",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {kcat}"))?;
    let mut lines = 0u64;
    let mut stdout = child.stdout.take().context("kcat stdout")?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = std::io::Read::read(&mut stdout, &mut buf)?;
        if n == 0 {
            break;
        }
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
    }
    let out = child.wait_with_output()?;
    let elapsed = started.elapsed();
    if !out.status.success() || lines != records {
        bail!("kcat consumed {lines} of {records} records: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(elapsed)
}

pub async fn run(args: BenchKafkaArgs) -> Result<ExitCode> {
    let kcat = args.kcat;
    let args = args.load;
    if args.records == 0 || args.repeat == 0 {
        bail!("--records and --repeat must be at least 1");
    }
    if args.record_size < 120 || args.record_size > largest_record() {
        bail!(
            "--record-size must be between 120 bytes (the encounter record's fixed fields) and {} (its references at their bound)",
            largest_record()
        );
    }
    // Metrics recorded as in a service, so their cost is measured too.
    let _metrics = guardian_runtime::http::install_metrics();
    let settings = args.kafka.settings(&crate::client("kafka"));
    let admin = args.kafka.admin(&crate::client("admin")).await?;
    let codec = Codec::embedded();
    eprintln!("bench: encoding {} records of {} bytes", args.records, args.record_size);
    let records: Vec<Encounter> = (0..args.records).map(|i| record(i, args.record_size)).collect();
    let encoded: Vec<Vec<u8>> = records.iter().map(|r| codec.encode(r)).collect::<Result<_, _>>()?;
    let bytes: u64 = encoded.iter().map(|b| b.len() as u64).sum();
    let (encode_secs, decode_secs) = codec_seconds(&codec, &records, &encoded)?;
    // The same records in Confluent framing (in memory: ids as a registry gives them).
    let mut ids = guardian_schemas::codec::SchemaIds::default();
    for (i, e) in guardian_schemas::Registry::embedded().entries().enumerate() {
        ids.insert(e.fingerprint, i as u32 + 1);
    }
    let confluent = Codec::new(
        guardian_schemas::Registry::embedded().clone(),
        guardian_schemas::WireFormat::Confluent(std::sync::Arc::new(ids)),
    );
    let framed: Vec<Vec<u8>> = records.iter().map(|r| confluent.encode(r)).collect::<Result<_, _>>()?;
    let (confluent_encode_secs, confluent_decode_secs) = codec_seconds(&confluent, &records, &framed)?;
    let input = std::env::temp_dir().join(format!("guardian-bench-{}.kcat", std::process::id()));
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&input).context("writing the kcat input file")?);
        for (r, payload) in records.iter().zip(&encoded) {
            let line: Vec<u8> = payload.iter().map(|&b| if b == b'\n' { 0x0b } else { b }).collect();
            f.write_all(r.hospital_id.as_bytes())?;
            f.write_all(b"\t")?;
            f.write_all(&line)?;
            f.write_all(b"\n")?;
        }
        f.flush()?;
    }
    let dead_letters = fresh_topic(&admin, "dead-letters").await?;

    // Rows of the table, each with the index of the row it is compared with.
    let rows: [(&str, usize); 9] = [
        ("produce: guardian-kafka send_batch", 3),
        ("produce: guardian-kafka send, per record", 3),
        ("produce: rust-rdkafka ThreadedProducer, bare loop", 3),
        ("produce: kcat", 3),
        ("produce: guardian-kafka send_batch, producer ready", 3),
        ("produce: rust-rdkafka ThreadedProducer, bare loop, producer ready", 3),
        ("consume: guardian-kafka", 7),
        ("consume: rust-rdkafka StreamConsumer, bare loop", 7),
        ("consume: kcat", 7),
    ];
    let warm = fresh_topic(&admin, "warm-up").await?;
    let mut start_ups = Vec::new();
    let mut seconds: Vec<Vec<f64>> = vec![Vec::new(); rows.len()];
    // Cores the whole machine kept busy (broker included) during each measurement.
    let mut cores: Vec<Vec<f64>> = vec![Vec::new(); rows.len()];
    let mut created = vec![dead_letters.clone(), warm.clone()];
    let bootstrap = args.kafka.bootstrap_servers.as_str();
    for round in 1..=args.repeat {
        eprintln!("bench: round {round}/{}", args.repeat);
        let topics = [
            fresh_topic(&admin, "batch").await?,
            fresh_topic(&admin, "each").await?,
            fresh_topic(&admin, "raw").await?,
            fresh_topic(&admin, "kcat").await?,
            fresh_topic(&admin, "batch-ready").await?,
            fresh_topic(&admin, "raw-ready").await?,
        ];
        created.extend(topics.iter().cloned());
        // The order rotates from round to round: whatever runs first after a topic is
        // created, or right after a heavy run, does not always fall on the same row.
        let mut times = [Duration::ZERO; 9];
        for k in 0..6 {
            let row = (k + round as usize) % 6;
            let busy = crate::cpu::Busy::start();
            times[row] = match row {
                0 => produce_library_batch(&settings, &topics[0], &records, None).await?.0,
                1 => produce_library_each(&settings, &topics[1], &records).await?,
                2 => produce_raw(&settings, &topics[2], &records, &encoded, None)?,
                3 => produce_kcat(&kcat, bootstrap, &topics[3], &input)?,
                4 => {
                    let (t, start_up) = produce_library_batch(&settings, &topics[4], &records, Some(&warm)).await?;
                    start_ups.extend(start_up.map(|d| d.as_secs_f64()));
                    t
                }
                _ => produce_raw(&settings, &topics[5], &records, &encoded, Some(&warm))?,
            };
            cores[row].push(busy.cores_over(times[row]));
        }
        for k in 0..3 {
            let row = 6 + (k + round as usize) % 3;
            let busy = crate::cpu::Busy::start();
            times[row] = match row {
                6 => consume_library(&settings, &topics[0], &dead_letters, args.records).await?,
                7 => consume_raw(&settings, &topics[1], args.records).await?,
                _ => consume_kcat(&kcat, bootstrap, &topics[3], args.records)?,
            };
            cores[row].push(busy.cores_over(times[row]));
        }
        for (row, t) in times.iter().enumerate() {
            seconds[row].push(t.as_secs_f64());
        }
        let line: Vec<String> =
            rows.iter().zip(&times).map(|((name, _), t)| format!("{name} {:.2}s", t.as_secs_f64())).collect();
        eprintln!("bench:   {}", line.join(" | "));
    }
    let _ = std::fs::remove_file(&input);
    if let Err(e) = admin.delete(&created).await {
        eprintln!("bench: could not delete the bench topics: {e}");
    }

    let best: Vec<f64> = seconds.iter().map(|s| s.iter().cloned().fold(f64::INFINITY, f64::min)).collect();
    let middle = |s: &Vec<f64>| {
        let mut s = s.clone();
        s.sort_by(f64::total_cmp);
        s[s.len() / 2]
    };
    let median: Vec<f64> = seconds.iter().map(middle).collect();
    let median_cores: Vec<f64> = cores.iter().map(middle).collect();
    let rate = |secs: f64| args.records as f64 / secs;
    println!();
    println!(
        "{} records of {} bytes ({:.1} MB), {} partitions, {} runs; Avro single-object in memory, one core: encode {:.0}/s, decode {:.0}/s",
        args.records,
        bytes / args.records,
        bytes as f64 / 1e6,
        PARTITIONS,
        args.repeat,
        args.records as f64 / encode_secs,
        args.records as f64 / decode_secs,
    );
    println!(
        "Confluent framing (00 + 4-byte registry id), in memory, one core: encode {:.0}/s, decode {:.0}/s",
        args.records as f64 / confluent_encode_secs,
        args.records as f64 / confluent_decode_secs,
    );
    start_ups.sort_by(f64::total_cmp);
    println!(
        "idempotent producer start-up (creation to its first acknowledgement): median {:.0} ms, best {:.0} ms",
        1e3 * start_ups[start_ups.len() / 2],
        1e3 * start_ups[0],
    );
    println!();
    println!(
        "peers: kcat for producing, the bare rust-rdkafka loop for consuming; cores busy: the whole machine's (broker included), median"
    );
    println!();
    println!(
        "| measurement | best records/s | best MB/s | median records/s | best vs peer | median vs peer | cores busy |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (row, (name, peer)) in rows.iter().enumerate() {
        println!(
            "| {name} | {:.0} | {:.1} | {:.0} | {:.0}% | {:.0}% | {:.2} |",
            rate(best[row]),
            bytes as f64 / 1e6 / best[row],
            rate(median[row]),
            100.0 * best[*peer] / best[row],
            100.0 * median[*peer] / median[row],
            median_cores[row],
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_have_the_size_asked_and_pass_the_consumers_checks() {
        for size in [120, 300, 400, largest_record()] {
            let e = record(7, size);
            assert_eq!(Codec::embedded().encode(&e).unwrap().len(), size, "size {size}");
            guardian_schemas::validate::encounter(&e).unwrap();
        }
    }
}
