//! `guardian tail`: a topic's records as JSON lines, decoded with the registered schemas.
//! Undecodable records are printed with their error, never skipped silently. Reads with
//! a throwaway group and commits nothing.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use guardian_schemas::Codec;
use guardian_topics::TopicId;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::cli::TailArgs;
use crate::common;

pub async fn run(args: TailArgs) -> Result<ExitCode> {
    let catalogue = common::kafka_catalogue(&args.kafka)?;
    // Confluent-framed records decode with the registry's ids.
    args.kafka.use_wire_format(&catalogue).await?;
    let topic = match TopicId::ALL.iter().find(|id| id.role() == args.topic) {
        Some(id) => catalogue.topic(*id)?,
        None => args.topic.clone(),
    };
    let admin = common::admin(&args.kafka).await?;
    let view = admin.observe(std::slice::from_ref(&topic)).await?;
    let observed = view.topics.get(&topic).with_context(|| format!("topic {topic} does not exist"))?;
    let settings = args.kafka.settings(&guardian_topics::ServiceId::Ops.client_for("tail"));
    let consumer: StreamConsumer = settings
        .manual_commit_consumer(&guardian_topics::ServiceId::Ops.group_for(&format!("tail-{}", std::process::id())))
        .create()
        .context("creating the consumer")?;
    let mut tpl = TopicPartitionList::new();
    let start = if args.from_beginning { Offset::Beginning } else { Offset::End };
    for p in 0..observed.partitions {
        tpl.add_partition_offset(&topic, p, start)?;
    }
    consumer.assign(&tpl)?;
    let codec = Codec::embedded();
    let mut seen = 0u64;
    let idle = args.idle_exit_secs.map(Duration::from_secs).unwrap_or(Duration::MAX);
    loop {
        if args.count.is_some_and(|c| seen >= c) {
            break;
        }
        let msg = match tokio::time::timeout(idle, consumer.recv()).await {
            Err(_) => break,
            Ok(msg) => msg?,
        };
        let key = msg.key().map(|k| String::from_utf8_lossy(k).into_owned());
        let mut line = serde_json::json!({"partition": msg.partition(), "offset": msg.offset(), "key": key});
        match msg.payload().map(|p| codec.decode_value(p)) {
            Some(Ok((entry, value))) => {
                line["schema"] = entry.name.clone().into();
                line["value"] = serde_json::Value::try_from(value).unwrap_or_else(|e| e.to_string().into());
            }
            Some(Err(e)) => line["error"] = e.to_string().into(),
            None => line["value"] = serde_json::Value::Null,
        }
        // A closed pipe (`| head`) ends the command; main treats it as success.
        writeln!(std::io::stdout(), "{line}")?;
        seen += 1;
    }
    Ok(ExitCode::SUCCESS)
}
