//! The accountant's tables and the effect that fills them.
//!
//! Each batch of spend records is one SQL transaction (through `guardian-pg`, with the
//! Kafka offsets): the ledger rows of the events not seen before (idempotent on the
//! event id, so duplicates and replays change nothing), the budgets of the scopes they
//! touch (locked, read, updated), the alerts, and an outbox of the records to publish.
//! The outbox is sent to Kafka after the commit by [`crate::publish`].

use std::collections::{BTreeMap, BTreeSet};

use guardian_kafka::ProcessError;
use guardian_pg::PgEffect;
use guardian_privacy::{RdpAccountant, SampledGaussian};
use guardian_schemas::Codec;
use guardian_schemas::records::{BudgetLevel, BudgetSpend, PrivacyAlert};
use rdkafka::message::{Message, OwnedMessage};
use sqlx::{PgConnection, PgPool, Row};

use crate::budget::{self, Budget, Limits, scope_key};

pub const DDL: &str = "
CREATE TABLE IF NOT EXISTS privacy_ledger (
    event_id          text PRIMARY KEY,
    hospital_id       text NOT NULL,
    session_id        text NOT NULL,
    round             bigint NOT NULL,
    sampling_rate     float8 NOT NULL,
    noise_multiplier  float8 NOT NULL,
    steps             bigint NOT NULL,
    delta             float8 NOT NULL,
    occurred_at_ms    bigint NOT NULL,
    accepted          boolean NOT NULL,
    hospital_epsilon  float8 NOT NULL,
    source_topic      text NOT NULL,
    source_partition  int NOT NULL,
    source_offset     bigint NOT NULL,
    accounted_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS privacy_ledger_hospital ON privacy_ledger (hospital_id, occurred_at_ms);
CREATE TABLE IF NOT EXISTS privacy_budgets (
    scope_key      text PRIMARY KEY,
    hospital_id    text,
    rdp            float8[] NOT NULL,
    epsilon_spent  float8 NOT NULL,
    level          text NOT NULL,
    events         bigint NOT NULL,
    last_event_id  text,
    rounds_left    bigint
);
-- The RDP's breakdown (steps per (q, sigma), and a part without one from older rows):
-- the totals are recomputed from it in one order, whatever order spends arrived in.
ALTER TABLE privacy_budgets ADD COLUMN IF NOT EXISTS rdp_base float8[];
ALTER TABLE privacy_budgets ADD COLUMN IF NOT EXISTS step_q float8[];
ALTER TABLE privacy_budgets ADD COLUMN IF NOT EXISTS step_sigma float8[];
ALTER TABLE privacy_budgets ADD COLUMN IF NOT EXISTS step_count bigint[];
CREATE TABLE IF NOT EXISTS privacy_alerts (
    alert_id          text PRIMARY KEY,
    scope_key         text NOT NULL,
    previous_level    text NOT NULL,
    level             text NOT NULL,
    over_budget       boolean NOT NULL,
    epsilon_spent     float8 NOT NULL,
    epsilon_limit     float8 NOT NULL,
    trigger_event_id  text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS privacy_outbox (
    id       bigserial PRIMARY KEY,
    kind     text NOT NULL,
    key      text NOT NULL,
    payload  bytea NOT NULL
);
ALTER TABLE privacy_outbox ADD COLUMN IF NOT EXISTS traceparent text;";

/// The accountant's tables a hospital's tenant role reads (its own rows only).
pub const TENANT_TABLES: [&str; 2] = ["privacy_ledger", "privacy_budgets"];

/// Every budget as (scope, ε spent, level), hospitals first then the global one; empty
/// when the accountant has not run against this database.
pub async fn budget_levels(pool: &PgPool) -> Result<Vec<(String, f64, String)>, sqlx::Error> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('privacy_budgets') IS NOT NULL").fetch_one(pool).await?;
    if !exists {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(
        "SELECT scope_key, epsilon_spent, level FROM privacy_budgets ORDER BY scope_key = 'global', scope_key",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
}

/// The event id of every ledger row (a spend is recorded once per event id).
pub async fn ledger_event_ids(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT event_id FROM privacy_ledger").fetch_all(pool).await
}

pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::Error> {
    guardian_pg::apply_ddl(pool, DDL).await
}

pub fn level_name(level: BudgetLevel) -> &'static str {
    match level {
        BudgetLevel::Normal => "NORMAL",
        BudgetLevel::Warning => "WARNING",
        BudgetLevel::High => "HIGH",
        BudgetLevel::Critical => "CRITICAL",
        BudgetLevel::Exhausted => "EXHAUSTED",
    }
}

fn parse_level(s: &str) -> BudgetLevel {
    match s {
        "WARNING" => BudgetLevel::Warning,
        "HIGH" => BudgetLevel::High,
        "CRITICAL" => BudgetLevel::Critical,
        "EXHAUSTED" => BudgetLevel::Exhausted,
        _ => BudgetLevel::Normal,
    }
}

pub use crate::metrics::{BUDGET_LEVEL, EPSILON_LIMIT, EPSILON_SPENT, SCOPE};

/// Outbox kinds.
pub const OUTBOX_STATUS: &str = "status";
pub const OUTBOX_ALERT: &str = "alert";
pub const OUTBOX_DECISION: &str = "decision";

/// One decoded, validated spend with where it came from.
#[derive(Debug)]
pub struct Spend {
    spend: BudgetSpend,
    step: SampledGaussian,
    topic: String,
    partition: i32,
    offset: i64,
}

/// The [`PgEffect`] of the accountant.
#[derive(Debug)]
pub struct Ledger {
    pub limits: Limits,
    pub codec: Codec,
    /// When set, spends must be signed by their hospital.
    pub signers: Option<guardian_kafka::signing::Signers>,
    /// How far a spend's time may run ahead of its record's timestamp.
    pub max_skew_ms: i64,
    /// Woken after each commit: the outbox has something to send.
    pub committed: Option<std::sync::Arc<tokio::sync::Notify>>,
}

impl PgEffect for Ledger {
    type Item = Spend;

    fn prepare(&mut self, msg: &OwnedMessage) -> Result<Spend, ProcessError> {
        let spend: BudgetSpend = self.codec.decode(msg.payload().unwrap_or_default())?;
        let step = budget::validate(&spend).map_err(|e| ProcessError::poison("validation", e))?;
        if let Some(signers) = &self.signers {
            signers.check(msg, guardian_topics::TopicId::BudgetSpend.role(), &spend.hospital_id)?;
        }
        guardian_kafka::event_time::check(spend.occurred_at, msg.timestamp().to_millis(), self.max_skew_ms)?;
        Ok(Spend { spend, step, topic: msg.topic().to_string(), partition: msg.partition(), offset: msg.offset() })
    }

    fn committed(&mut self) {
        if let Some(wake) = &self.committed {
            wake.notify_one();
        }
    }

    async fn apply(&mut self, tx: &mut PgConnection, items: &[Spend]) -> Result<(), sqlx::Error> {
        // Events already in the ledger (duplicates, replays) change nothing.
        let ids: Vec<&str> = items.iter().map(|i| i.spend.event_id.as_str()).collect();
        let known: BTreeSet<String> = sqlx::query("SELECT event_id FROM privacy_ledger WHERE event_id = ANY($1)")
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .map(|r| r.get(0))
            .collect();
        let mut seen = known;
        let fresh: Vec<&Spend> = items.iter().filter(|i| seen.insert(i.spend.event_id.clone())).collect();
        if fresh.is_empty() {
            return Ok(());
        }
        // The global row first, then hospitals in key order: one lock order for all.
        let mut keys: Vec<String> = fresh.iter().map(|i| scope_key(Some(&i.spend.hospital_id))).collect();
        keys.sort();
        keys.dedup();
        keys.insert(0, scope_key(None));
        let mut budgets = load_budgets(tx, &keys).await?;
        let mut alerts: Vec<PrivacyAlert> = Vec::new();
        let mut changed: BTreeSet<String> = BTreeSet::new();
        let mut global = budgets.remove(&scope_key(None)).unwrap_or_else(|| Budget::new(None));
        for item in &fresh {
            let key = scope_key(Some(&item.spend.hospital_id));
            let hospital =
                budgets.entry(key.clone()).or_insert_with(|| Budget::new(Some(item.spend.hospital_id.clone())));
            let outcome = budget::account(hospital, &mut global, &item.spend, &item.step, &self.limits)
                .map_err(|e| sqlx::Error::Protocol(format!("accounting {}: {e}", item.spend.event_id)))?;
            if outcome.accepted {
                changed.insert(key);
                changed.insert(scope_key(None));
            } else {
                // Info, not a warning: a hospital spending past its limit must not flood the
                // logs; every refusal is a decision record and moves the budget's metrics.
                tracing::info!(event_id = %item.spend.event_id, hospital = %item.spend.hospital_id, "spend refused: over budget");
            }
            // The decision, once per event id: the aggregator sums an update only after it.
            let decision = outcome.decision(&item.spend, self.limits.delta, guardian_runtime::now_ms());
            let payload = self.codec.encode(&decision).map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
            outbox(tx, OUTBOX_DECISION, &item.spend.event_id, &payload).await?;
            alerts.extend(outcome.alerts);
            insert_ledger_row(tx, item, outcome.accepted, outcome.hospital_epsilon).await?;
        }
        budgets.insert(scope_key(None), global);
        for key in &changed {
            let b = &budgets[key];
            save_budget(tx, b).await?;
            let limit = if b.hospital_id.is_some() { self.limits.hospital_epsilon } else { self.limits.global_epsilon };
            let status = b.status(limit, self.limits.delta);
            // Scopes are the federation's hospitals: a bounded label set.
            metrics::gauge!(EPSILON_SPENT, SCOPE => key.clone()).set(b.epsilon_spent);
            metrics::gauge!(EPSILON_LIMIT, SCOPE => key.clone()).set(limit);
            metrics::gauge!(BUDGET_LEVEL, SCOPE => key.clone()).set(b.level as u8 as f64);
            let payload = self.codec.encode(&status).map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
            outbox(tx, OUTBOX_STATUS, key, &payload).await?;
        }
        for alert in &alerts {
            let inserted = sqlx::query(
                "INSERT INTO privacy_alerts (alert_id, scope_key, previous_level, level, over_budget, epsilon_spent,
                     epsilon_limit, trigger_event_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
            )
            .bind(&alert.alert_id)
            .bind(scope_key(alert.hospital_id.as_deref()))
            .bind(level_name(alert.previous_level))
            .bind(level_name(alert.level))
            .bind(alert.over_budget)
            .bind(alert.epsilon_spent)
            .bind(alert.epsilon_limit)
            .bind(&alert.trigger_event_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 1 {
                let payload = self.codec.encode(alert).map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
                outbox(tx, OUTBOX_ALERT, &alert.alert_id, &payload).await?;
            }
        }
        Ok(())
    }
}

async fn load_budgets(tx: &mut PgConnection, keys: &[String]) -> Result<BTreeMap<String, Budget>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT scope_key, hospital_id, rdp, epsilon_spent, level, events, last_event_id, rounds_left,
                rdp_base, step_q, step_sigma, step_count
         FROM privacy_budgets WHERE scope_key = ANY($1) ORDER BY scope_key FOR UPDATE",
    )
    .bind(keys)
    .fetch_all(&mut *tx)
    .await?;
    let mut out = BTreeMap::new();
    for r in rows {
        let key: String = r.get(0);
        let hospital_id: Option<String> = r.get(1);
        let wrong = || sqlx::Error::Protocol(format!("budget {key}: stored RDP has the wrong number of orders"));
        let rdp = match r.get::<Option<Vec<i64>>, _>(11) {
            // A row written before the breakdown was kept: its total, as it is.
            None => RdpAccountant::from_rdp(r.get::<Vec<f64>, _>(2)).ok_or_else(wrong)?,
            Some(counts) => {
                let base: Option<Vec<f64>> = r.get(8);
                let (qs, sigmas): (Vec<f64>, Vec<f64>) = (r.get(9), r.get(10));
                let steps: Vec<SampledGaussian> = qs
                    .iter()
                    .zip(&sigmas)
                    .zip(&counts)
                    .map(|((q, s), n)| SampledGaussian { sampling_rate: *q, noise_multiplier: *s, count: *n as u64 })
                    .collect();
                let base = base.unwrap_or_else(|| vec![0.0; RdpAccountant::default().orders().len()]);
                RdpAccountant::from_parts(base, &steps)
                    .map_err(|e| sqlx::Error::Protocol(format!("budget {key}: stored steps: {e}")))?
                    .ok_or_else(wrong)?
            }
        };
        let mut b = Budget::new(hospital_id);
        b.rdp = rdp;
        b.epsilon_spent = r.get(3);
        b.level = parse_level(r.get::<&str, _>(4));
        b.events = r.get(5);
        b.last_event_id = r.get(6);
        b.rounds_left = r.get(7);
        out.insert(key, b);
    }
    Ok(out)
}

async fn save_budget(tx: &mut PgConnection, b: &Budget) -> Result<(), sqlx::Error> {
    let steps = b.rdp.steps();
    sqlx::query(
        "INSERT INTO privacy_budgets (scope_key, hospital_id, rdp, epsilon_spent, level, events, last_event_id, rounds_left,
                rdp_base, step_q, step_sigma, step_count)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (scope_key) DO UPDATE SET rdp = excluded.rdp, epsilon_spent = excluded.epsilon_spent,
             level = excluded.level, events = excluded.events, last_event_id = excluded.last_event_id,
             rounds_left = excluded.rounds_left, rdp_base = excluded.rdp_base, step_q = excluded.step_q,
             step_sigma = excluded.step_sigma, step_count = excluded.step_count",
    )
    .bind(b.key())
    .bind(&b.hospital_id)
    .bind(b.rdp.rdp())
    .bind(b.epsilon_spent)
    .bind(level_name(b.level))
    .bind(b.events)
    .bind(&b.last_event_id)
    .bind(b.rounds_left)
    .bind(b.rdp.base())
    .bind(steps.iter().map(|s| s.sampling_rate).collect::<Vec<f64>>())
    .bind(steps.iter().map(|s| s.noise_multiplier).collect::<Vec<f64>>())
    .bind(steps.iter().map(|s| s.count as i64).collect::<Vec<i64>>())
    .execute(&mut *tx)
    .await
    .map(|_| ())
}

async fn insert_ledger_row(
    tx: &mut PgConnection,
    item: &Spend,
    accepted: bool,
    epsilon: f64,
) -> Result<(), sqlx::Error> {
    let s = &item.spend;
    sqlx::query(
        "INSERT INTO privacy_ledger (event_id, hospital_id, session_id, round, sampling_rate, noise_multiplier, steps,
             delta, occurred_at_ms, accepted, hospital_epsilon, source_topic, source_partition, source_offset)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(&s.event_id)
    .bind(&s.hospital_id)
    .bind(&s.session_id)
    .bind(s.round)
    .bind(s.sampling_rate)
    .bind(s.noise_multiplier)
    .bind(s.steps)
    .bind(s.delta)
    .bind(s.occurred_at)
    .bind(accepted)
    .bind(epsilon)
    .bind(&item.topic)
    .bind(item.partition)
    .bind(item.offset)
    .execute(&mut *tx)
    .await
    .map(|_| ())
}

async fn outbox(tx: &mut PgConnection, kind: &str, key: &str, payload: &[u8]) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO privacy_outbox (kind, key, payload) VALUES ($1, $2, $3)")
        .bind(kind)
        .bind(key)
        .bind(payload)
        .execute(&mut *tx)
        .await
        .map(|_| ())
}
