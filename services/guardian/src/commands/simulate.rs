//! `guardian agent simulate`: synthetic hospitals for demos and load.
//!
//! The generator is seeded: the same seed and counts give the same events (ids, values),
//! only the event times follow the clock. Events carry pseudonymous references, never PHI.

use std::time::Duration;

use anyhow::Result;
use futures::stream::{FuturesUnordered, StreamExt};
use guardian_kafka::Producer;
use guardian_runtime::Shutdown;
use guardian_topics::TopicId;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::cli::SimulateArgs;

pub use guardian_runtime::now_ms;
pub use guardian_schemas::synth::Synth;

/// Counts of one simulation.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sent {
    pub encounters: u64,
    pub slo: u64,
    pub spends: u64,
    pub poison: u64,
}

pub async fn run(args: SimulateArgs, shutdown: Shutdown) -> Result<Sent> {
    anyhow::ensure!(args.rate > 0.0, "--rate must be positive");
    anyhow::ensure!((0.0..=1.0).contains(&args.poison_rate), "--poison-rate must be between 0 and 1");
    let needed = [TopicId::Encounters, TopicId::SloEvents, TopicId::BudgetSpend];
    let catalogue = args.kafka.checked_catalogue(guardian_topics::ServiceId::Ops, &needed).await?;
    let producer = Producer::new(&args.kafka.settings(&guardian_topics::ServiceId::Ops.client_for("simulate")))?;
    let encounters_topic = catalogue.topic(TopicId::Encounters)?;
    let slo_topic = catalogue.topic(TopicId::SloEvents)?;
    let spend_topic = catalogue.topic(TopicId::BudgetSpend)?;
    let mut synth = Synth::new(args.seed, args.hospitals);
    let mut poison_rng = StdRng::seed_from_u64(args.seed ^ 0x5eed);
    let tick = Duration::from_millis(20);
    let per_tick = args.rate * tick.as_secs_f64();
    let mut carry = 0.0;
    let mut interval = tokio::time::interval(tick);
    let mut sent = Sent::default();
    let mut in_flight = FuturesUnordered::new();
    let mut last_report = std::time::Instant::now();
    tracing::info!(hospitals = args.hospitals, rate = args.rate, seed = args.seed, "simulating hospitals");
    let stop = shutdown.wait();
    tokio::pin!(stop);
    'outer: loop {
        tokio::select! {
            biased;
            _ = &mut stop => break,
            _ = interval.tick() => {}
        }
        carry += per_tick;
        while carry >= 1.0 {
            carry -= 1.0;
            if args.count.is_some_and(|c| sent.encounters + sent.poison >= c) {
                break 'outer;
            }
            let now = now_ms();
            let (encounter, slo, spend) = synth.next(now);
            let p = producer.clone();
            if poison_rng.random_bool(args.poison_rate) {
                let (t, key) = (encounters_topic.clone(), encounter.hospital_id.clone());
                in_flight.push(tokio::spawn(async move {
                    p.send_bytes(&t, Some(key.as_bytes()), b"{\"not\": \"avro\"}", None).await.map(|_| ())
                }));
                sent.poison += 1;
                continue;
            }
            let has_spend = spend.is_some();
            let (t1, t2, t3) = (encounters_topic.clone(), slo_topic.clone(), spend_topic.clone());
            in_flight.push(tokio::spawn(async move {
                p.send(&t1, &encounter.hospital_id, &encounter).await?;
                p.send(&t2, "guardian-agent", &slo).await?;
                if let Some(spend) = spend {
                    p.send(&t3, &spend.hospital_id, &spend).await?;
                }
                Ok(())
            }));
            sent.encounters += 1;
            sent.slo += 1;
            sent.spends += u64::from(has_spend);
        }
        while in_flight.len() > 5000 {
            if let Some(r) = in_flight.next().await {
                r??;
            }
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            tracing::info!(encounters = sent.encounters, poison = sent.poison, "simulation progress");
            last_report = std::time::Instant::now();
        }
    }
    while let Some(r) = in_flight.next().await {
        r??;
    }
    Ok(sent)
}

/// An availability event keyed by its hospital.
fn by_hospital(e: &guardian_schemas::records::SloEvent) -> (&str, &guardian_schemas::records::SloEvent) {
    (e.hospital_id.as_deref().unwrap_or_default(), e)
}

/// The simulated hospitals' availability probes: every `every`, one availability SLO
/// event per hospital (`h001`...), failed once in 200 (seeded), until `shutdown`. Returns
/// how many were sent.
pub async fn availability(
    kafka: &guardian_kafka::KafkaArgs,
    hospitals: u32,
    every: Duration,
    seed: u64,
    shutdown: Shutdown,
) -> Result<u64> {
    let catalogue = kafka.checked_catalogue(guardian_topics::ServiceId::Ops, &[TopicId::SloEvents]).await?;
    let topic = catalogue.topic(TopicId::SloEvents)?;
    let producer = Producer::new(&kafka.settings(&guardian_topics::ServiceId::Ops.client_for("availability")))?;
    let mut rng = StdRng::seed_from_u64(seed ^ 0xa7a1);
    let mut interval = tokio::time::interval(every);
    let mut sent = 0u64;
    let stop = shutdown.wait();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => return Ok(sent),
            _ = interval.tick() => {}
        }
        let now = now_ms();
        let checks: Vec<guardian_schemas::records::SloEvent> = (1..=hospitals)
            .map(|h| guardian_schemas::records::SloEvent {
                event_id: format!("availability-{seed}-h{h:03}-{now}"),
                service: "guardian-agent".into(),
                hospital_id: Some(format!("h{h:03}")),
                slo: guardian_schemas::records::SloKind::Availability,
                good: !rng.random_bool(0.005),
                latency_ms: None,
                observed_at: now,
            })
            .collect();
        sent += producer.send_batch(&topic, checks.iter().map(by_hospital)).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_events() {
        let mut a = Synth::new(42, 3);
        let mut b = Synth::new(42, 3);
        for _ in 0..500 {
            let (ea, sa, pa) = a.next(1);
            let (eb, sb, pb) = b.next(1);
            assert_eq!(ea, eb);
            assert_eq!(sa, sb);
            assert_eq!(pa, pb);
        }
        assert_ne!(Synth::new(1, 3).next(1).0, Synth::new(2, 3).next(1).0);
    }

    #[test]
    fn every_hospital_spends_once_per_round() {
        let mut s = Synth::new(1, 5);
        let spends: Vec<_> = (0..5 * 100).filter_map(|_| s.next(0).2).collect();
        assert_eq!(spends.len(), 10);
        let ids: std::collections::BTreeSet<_> = spends.iter().map(|s| s.event_id.clone()).collect();
        assert_eq!(ids.len(), 10, "spend ids are unique");
    }
}
