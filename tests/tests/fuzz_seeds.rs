//! Writes the seed corpora of the fuzz targets (`fuzz/corpus/<target>/`) from real data:
//! records of every schema read from the local stack's topics (after a test run they hold
//! every kind), MirrorMaker 2's checkpoint and offset-sync records from both regions, the
//! topic files, `.npy` weights, encounter files, archive segments and a manifest. Run
//! once with the stack up, then commit what it wrote (the fuzzers grow the corpora):
//!
//!   cargo test -p guardian-integration --test fuzz_seeds -- --ignored

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use guardian_schemas::Codec;
use guardian_schemas::Record;
use guardian_schemas::codec::SINGLE_OBJECT_HEADER_LEN;
use guardian_schemas::records::{
    ArchivedHeader, ArchivedRecord, Encounter, GradientUpdateChunk, RoundControl, RoundMessage, UnmaskShares,
};
use guardian_testkit::Stack;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

fn corpus(target: &str) -> PathBuf {
    let dir = Stack::get().repo.join("fuzz/corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `bytes` under its SHA-256 prefix (libFuzzer's naming), once.
fn seed(dir: &Path, bytes: &[u8]) {
    use sha2::Digest;
    let name: String = sha2::Sha256::digest(bytes).iter().take(10).map(|b| format!("{b:02x}")).collect();
    std::fs::write(dir.join(name), bytes).unwrap();
}

/// Up to `per_topic` (key, value) pairs of each topic of the cluster whose name `keep`
/// accepts, from at most `topics` of them that hold records.
fn records(
    bootstrap: &str,
    keep: impl Fn(&str) -> bool,
    topics: usize,
    per_topic: usize,
) -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "fuzz-seeds")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer.fetch_metadata(None, Duration::from_secs(10)).unwrap();
    let mut out = Vec::new();
    // The first `topics` that hold records.
    let held = |t: &rdkafka::metadata::MetadataTopic| {
        t.partitions()
            .iter()
            .any(|p| consumer.fetch_watermarks(t.name(), p.id(), Duration::from_secs(5)).is_ok_and(|(lo, hi)| hi > lo))
    };
    let chosen: Vec<_> = metadata.topics().iter().filter(|t| keep(t.name())).filter(|t| held(t)).take(topics).collect();
    for t in chosen {
        let mut tpl = TopicPartitionList::new();
        for p in t.partitions() {
            tpl.add_partition_offset(t.name(), p.id(), Offset::Beginning).unwrap();
        }
        consumer.assign(&tpl).unwrap();
        let (start, mut n) = (Instant::now(), 0);
        while n < per_topic && start.elapsed() < Duration::from_secs(2) {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                out.push((
                    t.name().to_string(),
                    m.key().unwrap_or_default().to_vec(),
                    m.payload().unwrap_or_default().to_vec(),
                ));
                n += 1;
            }
        }
    }
    out
}

#[test]
#[ignore = "writes the fuzz seed corpora; run by hand with the stack up"]
fn write_the_fuzz_seed_corpora() {
    let stack = Stack::get();
    let codec = Codec::embedded();

    // Avro records of every schema found, at most four each; round records also as
    // the round target's (selector byte, datum).
    let (avro, round) = (corpus("avro"), corpus("round_records"));
    let mut per_schema: BTreeMap<String, usize> = BTreeMap::new();
    let catalogue = guardian_topics::Catalogue::embedded(guardian_schemas::registry::Registry::embedded()).unwrap();
    let mut found = Vec::new();
    for spec in catalogue.specs() {
        // Every test run's copies of the topic (prefixed), a few of them.
        found.extend(records(&stack.kafka_bootstrap, |t| t.ends_with(&spec.base_name), 3, 20));
    }
    for (_, _, value) in found {
        let Ok((entry, _)) = codec.decode_value(&value) else { continue };
        let n = per_schema.entry(entry.name.clone()).or_default();
        if *n >= 4 {
            continue;
        }
        *n += 1;
        seed(&avro, &value);
        let datum = &value[SINGLE_OBJECT_HEADER_LEN..];
        let pick = [RoundMessage::SCHEMA, GradientUpdateChunk::SCHEMA, UnmaskShares::SCHEMA, RoundControl::SCHEMA]
            .iter()
            .position(|s| *s == entry.name);
        if let Some(pick) = pick {
            seed(&round, &[&[pick as u8][..], datum].concat());
        }
    }
    println!("avro seeds per schema: {per_schema:?}");
    assert!(per_schema.len() >= 10, "run the test suite first: the stack's topics hold too few schemas");

    // MirrorMaker 2's internal records, from both regions.
    let mm2 = corpus("mm2");
    let mut found = 0;
    for bootstrap in std::iter::once(&stack.kafka_bootstrap).chain(stack.kafka_dr_bootstrap.as_ref()) {
        for (_, key, value) in
            records(bootstrap, |t| t.contains("checkpoints.internal") || t.contains("offset-syncs"), 6, 8)
        {
            let split = (key.len() as u16).to_le_bytes();
            seed(&mm2, &[&split[..], &key, &value].concat());
            found += 1;
        }
    }
    println!("mm2 seeds: {found}");

    // Topic files.
    let topics = corpus("topic_file");
    for f in std::fs::read_dir(stack.repo.join("topics")).unwrap() {
        seed(&topics, &std::fs::read(f.unwrap().path()).unwrap());
    }

    // .npy: written by the project's writer, and a float64 header by hand.
    let npy = corpus("npy");
    seed(&npy, &guardian_fl::npy::write(&[0.5, -1.25, 3.0]));
    seed(&npy, &guardian_fl::npy::write(&[]));
    let mut f64_npy = b"\x93NUMPY\x01\x00".to_vec();
    let header = "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }";
    let padded = format!("{header:<117}\n");
    f64_npy.extend_from_slice(&(padded.len() as u16).to_le_bytes());
    f64_npy.extend_from_slice(padded.as_bytes());
    f64_npy.extend_from_slice(&1.5f64.to_le_bytes());
    f64_npy.extend_from_slice(&(-2.0f64).to_le_bytes());
    assert_eq!(guardian_fl::npy::read(&f64_npy).unwrap(), [1.5, -2.0]);
    seed(&npy, &f64_npy);

    // Encounter files: NDJSON of synthetic encounters, and the same as CSV.
    let files = corpus("encounter_file");
    let mut synth = guardian_schemas::synth::Synth::new(3, 3);
    let encounters: Vec<Encounter> = (0..4).map(|_| synth.next(1_764_000_000_000).0).collect();
    let ndjson: String = encounters.iter().map(|e| serde_json::to_string(e).unwrap() + "\n").collect();
    assert_eq!(guardian_schemas::encounter_file::parse(&ndjson, false).0.len(), 4, "the NDJSON seed parses");
    seed(&files, ndjson.as_bytes());
    let columns = [
        "event_id",
        "hospital_id",
        "encounter_ref",
        "clinician_ref",
        "occurred_at",
        "encounter_type",
        "soap_sections_expected",
        "soap_sections_completed",
        "generation_ms",
        "physician_rating",
        "model_version",
    ];
    let mut csv = columns.join(",") + "\n";
    for e in &encounters {
        let v = serde_json::to_value(e).unwrap();
        let cell = |c: &str| match &v[c] {
            serde_json::Value::Null => String::new(),
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        csv += &(columns.iter().map(|c| cell(c)).collect::<Vec<_>>().join(",") + "\n");
    }
    let parsed = guardian_schemas::encounter_file::parse(&csv, true);
    assert_eq!(parsed.0.len(), 4, "the CSV seed parses: {:?}", parsed.1);
    seed(&files, csv.as_bytes());

    // The archive: a segment, its key, the manifest (selector byte first).
    let archive = corpus("archive");
    let recs: Vec<ArchivedRecord> = (0..3)
        .map(|i| ArchivedRecord {
            topic: "privacy.spend".into(),
            partition: 1,
            offset: i,
            timestamp: Some(1_764_000_000_000 + i),
            key: Some(b"h001".to_vec()),
            value: (i != 1).then(|| vec![i as u8; 16]),
            headers: vec![ArchivedHeader { key: "guardian-signer".into(), value: Some(b"h001".to_vec()) }],
        })
        .collect();
    for r in &recs {
        seed(&avro, &codec.encode(r).unwrap()); // the one schema no topic carries
    }
    let key = guardian_archiver::segment::segment_key("archive/", "privacy.spend", 1, 0, 2);
    let bytes = guardian_archiver::segment::encode(&key, &recs).unwrap();
    assert_eq!(guardian_archiver::segment::decode(&bytes).unwrap(), recs);
    seed(&archive, &[&[0u8][..], &bytes].concat());
    seed(&archive, &[&[1u8][..], key.as_bytes()].concat());
    let mut manifest = guardian_archiver::segment::Manifest { topic: "privacy.spend".into(), segments: vec![] };
    manifest.segments.push(guardian_archiver::segment::SegmentInfo {
        key,
        partition: 1,
        first_offset: 0,
        last_offset: 2,
        records: 3,
        bytes: bytes.len() as u64,
        sha256: "00".repeat(32),
    });
    seed(&archive, &[&[2u8][..], &serde_json::to_vec(&manifest).unwrap()].concat());
}
