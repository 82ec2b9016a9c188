//! What the topics record of a session: each round's settings, the signed decisions that
//! closed its stages and its outcome, and the model versions published. Read back to
//! resume a session whose aggregator stopped, and to replay one.

use std::collections::BTreeMap;

use crate::error::Result;
use guardian_kafka::KafkaSettings;
use guardian_kafka::reader::read_range;
use guardian_schemas::Codec;
use guardian_schemas::records::{ModelVersion, RoundControl, RoundControlKind, RoundSettings};

use crate::FlTopics;

/// One round as `fl.rounds` records it. The first record of each kind counts.
#[derive(Debug, Clone, Default)]
pub struct RoundLog {
    pub settings: Option<RoundSettings>,
    /// When the aggregator opened the round (its clock, ms).
    pub opened_at: Option<i64>,
    /// OPEN records of this round number: more than one means a round number was reused.
    pub opens: usize,
    pub keys_closed: Option<Vec<i32>>,
    pub shares_closed: Option<RoundControl>,
    pub unmask: Option<RoundControl>,
    pub finished: Option<RoundControl>,
    pub failed: Option<RoundControl>,
}

impl RoundLog {
    /// FINISHED or FAILED is recorded.
    pub fn ended(&self) -> bool {
        self.finished.is_some() || self.failed.is_some()
    }
}

/// A session as its topics record it.
#[derive(Debug, Clone, Default)]
pub struct SessionLog {
    pub rounds: BTreeMap<i64, RoundLog>,
    /// `fl stop` was recorded for the session.
    pub stop_requested: bool,
}

impl SessionLog {
    /// Reads the session's records of `fl.rounds`.
    pub async fn read(kafka: &KafkaSettings, topics: &FlTopics, codec: &Codec, session: &str) -> Result<Self> {
        let mut log = SessionLog::default();
        for m in read_range(kafka, "fl-history", &[&topics.rounds], None).await? {
            let Ok(c) = codec.decode::<RoundControl>(&m.payload) else { continue };
            if c.session_id != session {
                continue;
            }
            if c.kind == RoundControlKind::Stop {
                log.stop_requested = true;
                continue;
            }
            let r = log.rounds.entry(c.round).or_default();
            match c.kind {
                RoundControlKind::Open => {
                    r.opens += 1;
                    if r.settings.is_none() {
                        r.opened_at = Some(c.issued_at);
                        r.settings = c.settings;
                    }
                }
                RoundControlKind::KeysClosed => {
                    r.keys_closed.get_or_insert(c.first);
                }
                RoundControlKind::SharesClosed => {
                    r.shares_closed.get_or_insert(c);
                }
                RoundControlKind::Unmask => {
                    r.unmask.get_or_insert(c);
                }
                RoundControlKind::Finished => {
                    r.finished.get_or_insert(c);
                }
                RoundControlKind::Failed => {
                    r.failed.get_or_insert(c);
                }
                RoundControlKind::Stop => {}
            }
        }
        Ok(log)
    }

    /// Nothing is recorded of the session.
    pub fn is_empty(&self) -> bool {
        self.rounds.is_empty() && !self.stop_requested
    }

    /// The highest round number recorded (0 for none).
    pub fn last_round(&self) -> i64 {
        self.rounds.keys().next_back().copied().unwrap_or(0)
    }

    /// The round that was opened and has no outcome yet, if the last one is such.
    pub fn in_flight(&self) -> Option<(i64, &RoundLog)> {
        self.rounds.iter().next_back().filter(|(_, r)| r.settings.is_some() && !r.ended()).map(|(&n, r)| (n, r))
    }
}

/// The model versions published for `session`, by round (the first per round).
pub async fn published_models(
    kafka: &KafkaSettings,
    topics: &FlTopics,
    codec: &Codec,
    session: &str,
) -> Result<BTreeMap<i64, ModelVersion>> {
    let mut models = BTreeMap::new();
    for m in read_range(kafka, "fl-history", &[&topics.models], None).await? {
        if let Ok(v) = codec.decode::<ModelVersion>(&m.payload)
            && v.session_id == session
        {
            models.entry(v.round).or_insert(v);
        }
    }
    Ok(models)
}
