//! The rollup tables and the effect that keeps them, exactly once.
//!
//! Each batch, in one transaction with the consumed offsets (guardian-pg): records whose
//! event id was seen before change nothing (replays, mirrors, producer retries); every
//! other record is added to its hospital's minute, hour and day windows; a record that
//! arrives after its window closed (the hospital's newest event time is past the window's
//! end plus the allowed lateness) is still merged, through the correction path, and
//! counted in `late_corrections`; each changed window goes to the outbox, which sends it
//! to the compacted rollup topic after the commit.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use guardian_kafka::ProcessError;
use guardian_pg::PgEffect;
use guardian_pg::outbox::Outbox;
use guardian_schemas::Codec;
use guardian_schemas::records::{Encounter, SloEvent, SloKind, WindowSize};
use rdkafka::message::{Message, OwnedMessage};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};
use tokio::sync::Notify;

use crate::window::{self, Acc, SIZES};

pub const DDL: &str = "
CREATE TABLE IF NOT EXISTS kpi_rollups (
    hospital_id       text   NOT NULL,
    window_size       text   NOT NULL,
    window_start_ms   bigint NOT NULL,
    encounters        bigint NOT NULL,
    soap_expected     bigint NOT NULL,
    soap_completed    bigint NOT NULL,
    ratings           bigint NOT NULL,
    rating_sum        bigint NOT NULL,
    slo_good          bigint NOT NULL,
    slo_total         bigint NOT NULL,
    late_corrections  bigint NOT NULL,
    generation_sketch bytea  NOT NULL,
    generation_p50    float8,
    generation_p95    float8,
    generation_p99    float8,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (hospital_id, window_size, window_start_ms)
);
CREATE TABLE IF NOT EXISTS kpi_seen (
    event_id    text PRIMARY KEY,
    hospital_id text NOT NULL,
    seen_at     timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS kpi_watermarks (
    hospital_id text PRIMARY KEY,
    newest_ms   bigint NOT NULL
);";

/// What the aggregate role may read (see `guardian_pg::tenancy`): daily KPIs per region
/// across hospitals, only for groups of at least 3 hospitals (k-anonymity), never a
/// hospital's own row. The view runs with its owner's rights, so row-level security on
/// the tables does not hide the other hospitals' rows from the sums.
pub const AGGREGATE_VIEW: &str = "kpi_aggregate_daily";
pub const AGGREGATE_VIEW_DDL: &str = "
CREATE OR REPLACE VIEW kpi_aggregate_daily WITH (security_barrier) AS
SELECT h.region,
       r.window_start_ms                                               AS day_start_ms,
       count(DISTINCT r.hospital_id)                                   AS hospitals,
       sum(r.encounters)::bigint                                       AS encounters,
       sum(r.soap_completed)::float8 / NULLIF(sum(r.soap_expected), 0) AS soap_completeness,
       sum(r.rating_sum)::float8 / NULLIF(sum(r.ratings), 0)           AS satisfaction,
       sum(r.slo_good)::float8 / NULLIF(sum(r.slo_total), 0)           AS uptime
  FROM kpi_rollups r JOIN kpi_hospitals h USING (hospital_id)
 WHERE r.window_size = 'DAY'
 GROUP BY h.region, r.window_start_ms
HAVING count(DISTINCT r.hospital_id) >= 3";

pub const OUTBOX_TABLE: &str = "kpi_outbox";

/// The columns of a stored window that [`acc_from_row`] reads, in its order.
const ACC_COLUMNS: &str = "encounters, soap_expected, soap_completed, ratings, rating_sum, slo_good, slo_total, late_corrections, generation_sketch";

/// A stored window read back from [`ACC_COLUMNS`] starting at column `first`.
fn acc_from_row(r: &PgRow, first: usize) -> Acc {
    let sketch: Vec<u8> = r.get(first + 8);
    Acc {
        encounters: r.get(first),
        soap_expected: r.get(first + 1),
        soap_completed: r.get(first + 2),
        ratings: r.get(first + 3),
        rating_sum: r.get(first + 4),
        slo_good: r.get(first + 5),
        slo_total: r.get(first + 6),
        late_corrections: r.get(first + 7),
        generation: window::decode_sketch(&sketch).unwrap_or_else(window::new_sketch),
    }
}

/// Each hospital's DAY windows of [from_ms, to_ms) merged into one (sketches included).
pub async fn day_windows(pool: &PgPool, from_ms: i64, to_ms: i64) -> Result<BTreeMap<String, Acc>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT hospital_id, {ACC_COLUMNS} FROM kpi_rollups
         WHERE window_size = 'DAY' AND window_start_ms >= $1 AND window_start_ms < $2"
    ))
    .bind(from_ms)
    .bind(to_ms)
    .fetch_all(pool)
    .await?;
    let mut merged: BTreeMap<String, Acc> = BTreeMap::new();
    for r in &rows {
        merged.entry(r.get(0)).or_default().merge(&acc_from_row(r, 1));
    }
    Ok(merged)
}

pub fn outbox(rollups_topic: &str) -> Outbox {
    Outbox { table: OUTBOX_TABLE, routes: vec![("rollup", rollups_topic.to_string())] }
}

pub async fn migrate(pool: &PgPool, rollups_topic: &str) -> Result<(), sqlx::Error> {
    guardian_pg::apply_ddl(pool, DDL).await?;
    guardian_pg::apply_ddl(pool, &outbox(rollups_topic).ddl()).await
}

/// A decoded input record.
#[derive(Debug, Clone)]
pub enum Item {
    Encounter(Encounter),
    /// An availability observation of a hospital.
    Slo(SloEvent),
    /// An SLO event that does not count towards a hospital's uptime (other objectives,
    /// platform-wide events): consumed, counted by the SLO monitor, not here.
    Ignored,
}

impl Item {
    fn id_and_hospital(&self) -> Option<(&str, &str, i64)> {
        match self {
            Item::Encounter(e) => Some((&e.event_id, &e.hospital_id, e.occurred_at)),
            Item::Slo(s) => Some((&s.event_id, s.hospital_id.as_deref()?, s.observed_at)),
            Item::Ignored => None,
        }
    }
}

pub fn validate(e: &Encounter) -> Result<(), String> {
    if e.hospital_id.is_empty() || e.event_id.is_empty() {
        return Err("event_id and hospital_id must not be empty".into());
    }
    if e.soap_sections_expected < 0
        || e.soap_sections_completed < 0
        || e.soap_sections_completed > e.soap_sections_expected
    {
        return Err(format!(
            "SOAP sections completed {} of {} expected",
            e.soap_sections_completed, e.soap_sections_expected
        ));
    }
    if e.generation_ms < 0 {
        return Err(format!("negative generation time {}", e.generation_ms));
    }
    if let Some(r) = e.physician_rating
        && !(1..=5).contains(&r)
    {
        return Err(format!("physician rating {r} outside 1..5"));
    }
    Ok(())
}

#[derive(Debug)]
pub struct Rollups {
    pub codec: Codec,
    pub encounters_topic: String,
    pub lateness_ms: i64,
    pub signers: Option<guardian_kafka::signing::Signers>,
    pub outbox: Outbox,
    pub committed: Option<Arc<Notify>>,
}

impl PgEffect for Rollups {
    type Item = Item;

    fn prepare(&mut self, msg: &OwnedMessage) -> Result<Item, ProcessError> {
        let payload = msg.payload().ok_or_else(|| ProcessError::decode("empty record"))?;
        if msg.topic() == self.encounters_topic {
            let e: Encounter = self.codec.decode(payload)?;
            validate(&e).map_err(|why| ProcessError::poison("validation", why))?;
            if let Some(signers) = &self.signers {
                signers
                    .verify(msg, guardian_topics::TopicId::Encounters.role(), &e.hospital_id)
                    .map_err(|why| ProcessError::poison("signature", why))?;
            }
            Ok(Item::Encounter(e))
        } else {
            let s: SloEvent = self.codec.decode(payload)?;
            Ok(if s.slo == SloKind::Availability && s.hospital_id.is_some() { Item::Slo(s) } else { Item::Ignored })
        }
    }

    fn committed(&mut self) {
        if let Some(wake) = &self.committed {
            wake.notify_one();
        }
    }

    async fn apply(&mut self, tx: &mut PgConnection, items: &[Item]) -> Result<(), sqlx::Error> {
        let keyed: Vec<(&str, &str, i64, &Item)> =
            items.iter().filter_map(|i| i.id_and_hospital().map(|(id, h, at)| (id, h, at, i))).collect();
        if keyed.is_empty() {
            return Ok(());
        }
        // Events seen before (in this batch or earlier) change nothing.
        let ids: Vec<&str> = keyed.iter().map(|k| k.0).collect();
        let hospitals_of: Vec<&str> = keyed.iter().map(|k| k.1).collect();
        let fresh: BTreeSet<String> = sqlx::query(
            "INSERT INTO kpi_seen (event_id, hospital_id) SELECT * FROM unnest($1::text[], $2::text[])
             ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
        )
        .bind(&ids)
        .bind(&hospitals_of)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|r| r.get(0))
        .collect();
        let mut taken = BTreeSet::new();
        let new: Vec<&(&str, &str, i64, &Item)> =
            keyed.iter().filter(|k| fresh.contains(k.0) && taken.insert(k.0)).collect();
        if new.is_empty() {
            return Ok(());
        }
        let mut hospitals: Vec<&str> = new.iter().map(|k| k.1).collect();
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
        // Deltas per (hospital, window size, window start), in input order.
        let mut deltas: BTreeMap<(String, &'static str, i64), Acc> = BTreeMap::new();
        for (_, hospital, at, item) in &new {
            let seen_newest = newest.get(*hospital).copied();
            for size in SIZES {
                let key = (hospital.to_string(), window::name(size), window::start(*at, size));
                let acc = deltas.entry(key).or_default();
                match item {
                    Item::Encounter(e) => acc.add_encounter(e),
                    Item::Slo(s) => acc.add_slo(s.good),
                    Item::Ignored => {}
                }
                if window::is_late(*at, size, seen_newest, self.lateness_ms) {
                    acc.late_corrections += 1;
                }
            }
            let n = newest.entry(hospital.to_string()).or_insert(*at);
            *n = (*n).max(*at);
        }
        // Merge into the stored windows (locked in key order) and send each changed one.
        let keys: Vec<String> = deltas.keys().map(|(h, w, s)| format!("{h}/{w}/{s}")).collect();
        let stored: Vec<PgRow> = sqlx::query(&format!(
            "SELECT hospital_id || '/' || window_size || '/' || window_start_ms, {ACC_COLUMNS}
             FROM kpi_rollups WHERE hospital_id || '/' || window_size || '/' || window_start_ms = ANY($1)
             ORDER BY hospital_id, window_size, window_start_ms FOR UPDATE"
        ))
        .bind(&keys)
        .fetch_all(&mut *tx)
        .await?;
        let mut stored: BTreeMap<String, Acc> = stored.iter().map(|r| (r.get(0), acc_from_row(r, 1))).collect();
        for ((hospital, size_name, start), delta) in &deltas {
            let key = format!("{hospital}/{size_name}/{start}");
            let mut total = stored.remove(&key).unwrap_or_default();
            total.merge(delta);
            let size: WindowSize = window::parse(size_name).expect("our own window names");
            let record = total.record(hospital, size, *start);
            sqlx::query(
                "INSERT INTO kpi_rollups (hospital_id, window_size, window_start_ms, encounters, soap_expected,
                    soap_completed, ratings, rating_sum, slo_good, slo_total, late_corrections, generation_sketch,
                    generation_p50, generation_p95, generation_p99)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
                 ON CONFLICT (hospital_id, window_size, window_start_ms) DO UPDATE SET
                    encounters = excluded.encounters, soap_expected = excluded.soap_expected,
                    soap_completed = excluded.soap_completed, ratings = excluded.ratings,
                    rating_sum = excluded.rating_sum, slo_good = excluded.slo_good, slo_total = excluded.slo_total,
                    late_corrections = excluded.late_corrections, generation_sketch = excluded.generation_sketch,
                    generation_p50 = excluded.generation_p50, generation_p95 = excluded.generation_p95,
                    generation_p99 = excluded.generation_p99, updated_at = now()",
            )
            .bind(hospital)
            .bind(size_name)
            .bind(start)
            .bind(total.encounters)
            .bind(total.soap_expected)
            .bind(total.soap_completed)
            .bind(total.ratings)
            .bind(total.rating_sum)
            .bind(total.slo_good)
            .bind(total.slo_total)
            .bind(total.late_corrections)
            .bind(window::encode_sketch(&total.generation))
            .bind(record.generation_ms_p50)
            .bind(record.generation_ms_p95)
            .bind(record.generation_ms_p99)
            .execute(&mut *tx)
            .await?;
            let payload = self.codec.encode(&record).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
            self.outbox.push(tx, "rollup", &key, &payload).await?;
        }
        for (hospital, n) in &newest {
            sqlx::query(
                "INSERT INTO kpi_watermarks (hospital_id, newest_ms) VALUES ($1, $2)
                 ON CONFLICT (hospital_id) DO UPDATE SET newest_ms = GREATEST(kpi_watermarks.newest_ms, excluded.newest_ms)",
            )
            .bind(hospital)
            .bind(n)
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }
}
