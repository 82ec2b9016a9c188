//! The rollup tables and the effect that keeps them, exactly once.
//!
//! Each batch, in one transaction with the consumed offsets (guardian-pg): records whose
//! event id was seen before (per hospital and event day: [`dedup`]) change nothing (replays, mirrors, producer retries); every
//! other record is added to its hospital's minute, hour and day windows; a record that
//! arrives after its window closed (the hospital's newest event time is past the window's
//! end plus the allowed lateness) is still merged, through the correction path, and
//! counted in `late_corrections`; each changed window goes to the outbox, which sends it
//! to the compacted rollup topic after the commit.

use std::collections::BTreeMap;
use std::sync::Arc;

use guardian_kafka::ProcessError;
use guardian_pg::PgEffect;
use guardian_pg::outbox::Outbox;
use guardian_schemas::Codec;
use guardian_schemas::records::{Encounter, KpiRollup, SloEvent, SloKind, WindowSize};
use rdkafka::message::{Message, OwnedMessage};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};
use tokio::sync::Notify;

use crate::dedup;
pub use crate::dedup::Seen;
use guardian_rollups::window::{self, Acc, SIZES};

use guardian_rollups::tables::{ACC_COLUMNS, acc_from_row};
pub use guardian_rollups::tables::{AGGREGATE_VIEW, AGGREGATE_VIEW_DDL, DDL, day_windows};

pub const OUTBOX_TABLE: &str = "kpi_outbox";

pub fn outbox(rollups_topic: &str) -> Outbox {
    Outbox { table: OUTBOX_TABLE, routes: vec![("rollup", rollups_topic.to_string())] }
}

pub async fn migrate(pool: &PgPool, rollups_topic: &str) -> Result<(), sqlx::Error> {
    guardian_pg::apply_ddl(pool, DDL).await?;
    guardian_pg::apply_ddl(pool, dedup::DDL).await?;
    guardian_pg::apply_ddl(pool, &outbox(rollups_topic).ddl()).await
}

/// A decoded input record. Counted events carry the W3C `traceparent` of their record's
/// span when the producer traced it: the outbox rows they change keep it, so the rollup
/// record published later continues the event's trace.
#[derive(Debug, Clone)]
pub enum Item {
    Encounter(Encounter, Option<String>),
    /// An availability observation of a hospital.
    Slo(SloEvent, Option<String>),
    /// An SLO event that does not count towards a hospital's uptime (other objectives,
    /// platform-wide events): consumed, counted by the SLO monitor, not here.
    Ignored,
}

impl Item {
    fn id_and_hospital(&self) -> Option<(&str, &str, i64)> {
        match self {
            Item::Encounter(e, _) => Some((&e.event_id, &e.hospital_id, e.occurred_at)),
            Item::Slo(s, _) => Some((&s.event_id, s.hospital_id.as_deref()?, s.observed_at)),
            Item::Ignored => None,
        }
    }
}

pub use guardian_schemas::validate::encounter as validate;

#[derive(Debug)]
pub struct Rollups {
    pub codec: Codec,
    pub encounters_topic: String,
    pub lateness_ms: i64,
    /// How far an event time may run ahead of its record's timestamp
    /// ([`guardian_kafka::event_time`]).
    pub max_skew_ms: i64,
    /// When set, encounters and availability events must be signed by the hospital they
    /// name (the only records that move a hospital's watermark).
    pub signers: Option<guardian_kafka::signing::Signers>,
    pub outbox: Outbox,
    pub committed: Option<Arc<Notify>>,
    /// The event digests of recently used days (see [`dedup`]).
    pub seen: Seen,
    /// Days of digests kept behind each hospital's newest event (None: all). Older records
    /// cannot be told from replays once their day is pruned: they are dead-lettered.
    pub horizon_days: Option<i64>,
    /// Each hospital's newest event time as of the last commit (for `prepare`).
    pub newest: std::collections::HashMap<String, i64>,
    /// The newest times of the batch in flight, taken on at its commit.
    pub pending_newest: BTreeMap<String, i64>,
}

const DAY_MS: i64 = 86_400_000;

/// Whether an event at `at_ms` lies before the deduplication horizon of a hospital whose
/// newest event is at `newest_ms`.
pub fn expired(at_ms: i64, newest_ms: Option<i64>, horizon_days: i64) -> bool {
    newest_ms.is_some_and(|n| at_ms.div_euclid(DAY_MS) < n.div_euclid(DAY_MS) - horizon_days)
}

/// Each hospital's newest event time.
pub async fn watermarks(pool: &PgPool) -> Result<std::collections::HashMap<String, i64>, sqlx::Error> {
    Ok(sqlx::query("SELECT hospital_id, newest_ms FROM kpi_watermarks")
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

impl Rollups {
    /// Dead-letters a record past the deduplication horizon (see [`Rollups::horizon_days`]).
    fn check_horizon(&self, hospital: &str, at_ms: i64) -> Result<(), ProcessError> {
        match self.horizon_days {
            Some(h) if expired(at_ms, self.newest.get(hospital).copied(), h) => Err(ProcessError::poison(
                "expired",
                format!(
                    "event time {at_ms} is more than {h} days before {hospital}'s newest event: past the \
                     deduplication horizon, it cannot be told from a replay of an event already counted"
                ),
            )),
            _ => Ok(()),
        }
    }
}

impl PgEffect for Rollups {
    type Item = Item;

    fn prepare(&mut self, msg: &OwnedMessage) -> Result<Item, ProcessError> {
        let payload = msg.payload().ok_or_else(|| ProcessError::decode("empty record"))?;
        if msg.topic() == self.encounters_topic {
            let e: Encounter = self.codec.decode(payload)?;
            validate(&e).map_err(|why| ProcessError::poison("validation", why))?;
            if let Some(signers) = &self.signers {
                signers.check(msg, guardian_topics::TopicId::Encounters.role(), &e.hospital_id)?;
            }
            guardian_kafka::event_time::check(e.occurred_at, msg.timestamp().to_millis(), self.max_skew_ms)?;
            self.check_horizon(&e.hospital_id, e.occurred_at)?;
            Ok(Item::Encounter(e, guardian_kafka::trace::current_traceparent()))
        } else {
            let s: SloEvent = self.codec.decode(payload)?;
            match (&s.hospital_id, s.slo) {
                (Some(h), SloKind::Availability) => {
                    guardian_schemas::validate::slo(&s).map_err(|why| ProcessError::poison("validation", why))?;
                    // It moves the hospital's watermark: only the hospital itself may say so.
                    if let Some(signers) = &self.signers {
                        signers.check(msg, guardian_topics::TopicId::SloEvents.role(), h)?;
                    }
                    guardian_kafka::event_time::check(s.observed_at, msg.timestamp().to_millis(), self.max_skew_ms)?;
                    self.check_horizon(h, s.observed_at)?;
                    Ok(Item::Slo(s, guardian_kafka::trace::current_traceparent()))
                }
                _ => Ok(Item::Ignored),
            }
        }
    }

    fn committed(&mut self) {
        self.seen.committed();
        for (h, n) in std::mem::take(&mut self.pending_newest) {
            let e = self.newest.entry(h).or_insert(n);
            *e = (*e).max(n);
        }
        if let Some(wake) = &self.committed {
            wake.notify_one();
        }
    }

    async fn apply(&mut self, tx: &mut PgConnection, items: &[Item]) -> Result<(), sqlx::Error> {
        let keyed: Vec<(&str, i64, &Item, u128)> =
            items.iter().filter_map(|i| i.id_and_hospital().map(|(id, h, at)| (h, at, i, dedup::digest(id)))).collect();
        self.pending_newest.clear();
        if keyed.is_empty() {
            return Ok(());
        }
        // The hospitals' newest event times, locked first (one lock order for all).
        let mut hospitals: Vec<&str> = keyed.iter().map(|k| k.0).collect();
        hospitals.sort_unstable();
        hospitals.dedup();
        let mut newest: BTreeMap<String, i64> = sqlx::query(
            "SELECT hospital_id, newest_ms FROM kpi_watermarks WHERE hospital_id = ANY($1) ORDER BY hospital_id FOR UPDATE",
        )
        .bind(&hospitals)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
        // `prepare` dead-letters records past the deduplication horizon by the newest times
        // of the last commit; one that got through because another instance moved its
        // hospital on since is left out here (its day may be pruned), counted and logged.
        let keyed: Vec<(&str, i64, &Item, u128)> = match self.horizon_days {
            None => keyed,
            Some(h) => keyed
                .into_iter()
                .filter(|k| {
                    let out = expired(k.1, newest.get(k.0).copied(), h);
                    if out {
                        metrics::counter!(crate::metrics::EXPIRED_SKIPPED).increment(1);
                        tracing::warn!(hospital = k.0, at_ms = k.1, "record past the deduplication horizon left out");
                    }
                    !out
                })
                .collect(),
        };
        // Events seen before (in this batch or earlier) change nothing.
        let events: Vec<(&str, i64, u128)> =
            keyed.iter().map(|(h, at, _, digest)| (*h, window::start(*at, WindowSize::Day), *digest)).collect();
        let fresh = self.seen.admit(tx, &events).await?;
        let new: Vec<&(&str, i64, &Item, u128)> =
            keyed.iter().zip(&fresh).filter(|(_, f)| **f).map(|(k, _)| k).collect();
        if new.is_empty() {
            return Ok(());
        }
        // Deltas per (hospital, window size, window start), in input order.
        let mut deltas: foldhash::HashMap<(&str, &'static str, i64), Acc> = foldhash::HashMap::default();
        // Per window: the trace of the first traced event that changed it.
        let mut traces: foldhash::HashMap<(&str, &'static str, i64), &str> = foldhash::HashMap::default();
        for (hospital, at, item, _) in &new {
            let seen_newest = newest.get(*hospital).copied();
            for size in SIZES {
                let key = (*hospital, window::name(size), window::start(*at, size));
                let acc = deltas.entry(key).or_default();
                let trace = match item {
                    Item::Encounter(e, trace) => {
                        acc.add_encounter(e);
                        trace
                    }
                    Item::Slo(s, trace) => {
                        acc.add_slo(s.good);
                        trace
                    }
                    Item::Ignored => &None,
                };
                if let Some(t) = trace {
                    traces.entry(key).or_insert(t);
                }
                if window::is_late(*at, size, seen_newest, self.lateness_ms) {
                    acc.late_corrections += 1;
                }
            }
            match newest.get_mut(*hospital) {
                Some(n) => *n = (*n).max(*at),
                None => {
                    newest.insert(hospital.to_string(), *at);
                }
            }
        }
        let mut deltas: Vec<((&str, &'static str, i64), Acc)> = deltas.into_iter().collect();
        deltas.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        // Merge into the stored windows (locked in key order), write them back in one
        // statement and queue each changed one for the rollup topic.
        let hs: Vec<&str> = deltas.iter().map(|(k, _)| k.0).collect();
        let ws: Vec<&str> = deltas.iter().map(|(k, _)| k.1).collect();
        let ss: Vec<i64> = deltas.iter().map(|(k, _)| k.2).collect();
        let stored: Vec<PgRow> = sqlx::query(&format!(
            "SELECT r.hospital_id, r.window_size, r.window_start_ms, {ACC_COLUMNS}
             FROM kpi_rollups r JOIN unnest($1::text[], $2::text[], $3::bigint[]) AS x(h, w, s)
               ON r.hospital_id = x.h AND r.window_size = x.w AND r.window_start_ms = x.s
             ORDER BY r.hospital_id, r.window_size, r.window_start_ms FOR UPDATE OF r"
        ))
        .bind(&hs)
        .bind(&ws)
        .bind(&ss)
        .fetch_all(&mut *tx)
        .await?;
        let mut stored: BTreeMap<(&str, &str, i64), Acc> = stored
            .iter()
            .map(|r| ((r.get::<&str, _>(0), r.get::<&str, _>(1), r.get::<i64, _>(2)), acc_from_row(r, 3)))
            .collect();
        let mut rows = WindowRows::default();
        let mut keys = Vec::with_capacity(deltas.len());
        let mut payloads = Vec::with_capacity(deltas.len());
        let mut traceparents = Vec::with_capacity(deltas.len());
        for (key, delta) in &deltas {
            let (hospital, size_name, start) = key;
            traceparents.push(traces.get(key).map(|t| t.to_string()));
            let mut total = stored.remove(&(*hospital, *size_name, *start)).unwrap_or_default();
            total.merge(delta);
            let size: WindowSize = window::parse(size_name).expect("our own window names");
            let record = total.record(hospital, size, *start);
            rows.push(&total, &record);
            keys.push(format!("{hospital}/{size_name}/{start}"));
            payloads.push(self.codec.encode(&record).map_err(|e| sqlx::Error::Encode(Box::new(e)))?);
        }
        sqlx::query(
            "INSERT INTO kpi_rollups (hospital_id, window_size, window_start_ms, encounters, soap_expected,
                soap_completed, ratings, rating_sum, slo_good, slo_total, late_corrections, generation_sketch,
                generation_p50, generation_p95, generation_p99)
             SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[],
                $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $12::bytea[],
                $13::float8[], $14::float8[], $15::float8[])
             ON CONFLICT (hospital_id, window_size, window_start_ms) DO UPDATE SET
                encounters = excluded.encounters, soap_expected = excluded.soap_expected,
                soap_completed = excluded.soap_completed, ratings = excluded.ratings,
                rating_sum = excluded.rating_sum, slo_good = excluded.slo_good, slo_total = excluded.slo_total,
                late_corrections = excluded.late_corrections, generation_sketch = excluded.generation_sketch,
                generation_p50 = excluded.generation_p50, generation_p95 = excluded.generation_p95,
                generation_p99 = excluded.generation_p99, updated_at = now()",
        )
        .bind(&hs)
        .bind(&ws)
        .bind(&ss)
        .bind(&rows.encounters)
        .bind(&rows.soap_expected)
        .bind(&rows.soap_completed)
        .bind(&rows.ratings)
        .bind(&rows.rating_sum)
        .bind(&rows.slo_good)
        .bind(&rows.slo_total)
        .bind(&rows.late_corrections)
        .bind(&rows.sketches)
        .bind(&rows.p50)
        .bind(&rows.p95)
        .bind(&rows.p99)
        .execute(&mut *tx)
        .await?;
        self.outbox.push_many(tx, "rollup", &keys, &payloads, &traceparents).await?;
        let wh: Vec<&str> = newest.keys().map(String::as_str).collect();
        let wn: Vec<i64> = newest.values().copied().collect();
        sqlx::query(
            "INSERT INTO kpi_watermarks (hospital_id, newest_ms) SELECT * FROM unnest($1::text[], $2::bigint[])
             ON CONFLICT (hospital_id) DO UPDATE SET newest_ms = GREATEST(kpi_watermarks.newest_ms, excluded.newest_ms)",
        )
        .bind(&wh)
        .bind(&wn)
        .execute(&mut *tx)
        .await?;
        if let Some(h) = self.horizon_days {
            // Digests of days behind the horizon go: their records are dead-lettered now.
            for table in ["kpi_seen_blocks", "kpi_seen_days"] {
                sqlx::query(&format!(
                    "DELETE FROM {table} t USING kpi_watermarks w
                      WHERE w.hospital_id = ANY($1) AND t.hospital_id = w.hospital_id
                        AND t.day_start_ms < (div(w.newest_ms, $3) - $2) * $3"
                ))
                .bind(&wh)
                .bind(h)
                .bind(DAY_MS)
                .execute(&mut *tx)
                .await?;
            }
        }
        self.pending_newest = newest.iter().map(|(h, n)| (h.clone(), *n)).collect();
        Ok(())
    }
}

/// The columns of the windows a batch writes, one array each (one statement for all).
#[derive(Default)]
struct WindowRows {
    encounters: Vec<i64>,
    soap_expected: Vec<i64>,
    soap_completed: Vec<i64>,
    ratings: Vec<i64>,
    rating_sum: Vec<i64>,
    slo_good: Vec<i64>,
    slo_total: Vec<i64>,
    late_corrections: Vec<i64>,
    sketches: Vec<Vec<u8>>,
    p50: Vec<Option<f64>>,
    p95: Vec<Option<f64>>,
    p99: Vec<Option<f64>>,
}

impl WindowRows {
    fn push(&mut self, total: &Acc, record: &KpiRollup) {
        self.encounters.push(total.encounters);
        self.soap_expected.push(total.soap_expected);
        self.soap_completed.push(total.soap_completed);
        self.ratings.push(total.ratings);
        self.rating_sum.push(total.rating_sum);
        self.slo_good.push(total.slo_good);
        self.slo_total.push(total.slo_total);
        self.late_corrections.push(total.late_corrections);
        self.sketches.push(window::encode_sketch(&total.generation));
        self.p50.push(record.generation_ms_p50);
        self.p95.push(record.generation_ms_p95);
        self.p99.push(record.generation_ms_p99);
    }
}
