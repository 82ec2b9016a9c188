//! What it takes to bring a cluster in line with the catalogue.
//!
//! The plan is computed from the catalogue and a description of the cluster, with no I/O,
//! so `topics apply --dry-run`, `topics apply` and `topics verify` share one diff. Some
//! differences cannot be applied safely (fewer partitions than exist, another replication
//! factor): those are [`Drift`], reported and never acted on.

use std::collections::BTreeMap;
use std::fmt;

use crate::Catalogue;

/// What the cluster reports for one topic.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObservedTopic {
    pub partitions: i32,
    pub replication_factor: i32,
    /// Current values of (at least) the configs the catalogue declares.
    pub config: BTreeMap<String, String>,
}

/// A change `topics apply` makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Create {
        name: String,
        partitions: i32,
        replication_factor: i32,
        config: BTreeMap<String, String>,
    },
    AddPartitions {
        name: String,
        from: i32,
        to: i32,
    },
    /// The whole declared config set is sent; `changed` lists what differs.
    SetConfig {
        name: String,
        config: BTreeMap<String, String>,
        changed: Vec<(String, Option<String>, String)>,
    },
}

/// A difference that needs a person: it is reported, never applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drift {
    PartitionsShrink { name: String, declared: i32, actual: i32 },
    ReplicationFactor { name: String, declared: i32, actual: i32 },
}

/// The diff between the catalogue and a cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub changes: Vec<Change>,
    pub drift: Vec<Drift>,
    /// Adjustments made for the cluster's size (replication clamped to the broker count).
    pub notes: Vec<String>,
}

impl Plan {
    pub fn is_in_sync(&self) -> bool {
        self.changes.is_empty() && self.drift.is_empty()
    }
}

/// Compares the catalogue with the cluster. `brokers` clamps replication factors (and
/// `min.insync.replicas`) so the same catalogue serves a one-broker test cluster.
pub fn plan(catalogue: &Catalogue, observed: &BTreeMap<String, ObservedTopic>, brokers: i32) -> Plan {
    let mut out = Plan::default();
    let brokers = brokers.max(1);
    for spec in catalogue.specs() {
        let name = catalogue.name_of(spec);
        let replication = spec.replication_factor.min(brokers);
        let mut config = spec.config.clone();
        if replication < spec.replication_factor {
            out.notes.push(format!(
                "{name}: replication factor {} clamped to {replication} ({brokers} broker(s))",
                spec.replication_factor
            ));
            if let Some(min_isr) = config.get_mut("min.insync.replicas")
                && min_isr.parse::<i32>().is_ok_and(|m| m > replication)
            {
                *min_isr = replication.to_string();
            }
        }
        match observed.get(&name) {
            None => out.changes.push(Change::Create {
                name,
                partitions: spec.partitions,
                replication_factor: replication,
                config,
            }),
            Some(actual) => {
                if actual.partitions < spec.partitions {
                    out.changes.push(Change::AddPartitions {
                        name: name.clone(),
                        from: actual.partitions,
                        to: spec.partitions,
                    });
                } else if actual.partitions > spec.partitions {
                    out.drift.push(Drift::PartitionsShrink {
                        name: name.clone(),
                        declared: spec.partitions,
                        actual: actual.partitions,
                    });
                }
                if actual.replication_factor != replication {
                    out.drift.push(Drift::ReplicationFactor {
                        name: name.clone(),
                        declared: replication,
                        actual: actual.replication_factor,
                    });
                }
                let changed: Vec<_> = config
                    .iter()
                    .filter(|(k, v)| actual.config.get(*k) != Some(*v))
                    .map(|(k, v)| (k.clone(), actual.config.get(k).cloned(), v.clone()))
                    .collect();
                if !changed.is_empty() {
                    out.changes.push(Change::SetConfig { name, config, changed });
                }
            }
        }
    }
    out
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Create { name, partitions, replication_factor, config } => {
                write!(f, "+ {name}: create with {partitions} partitions, replication {replication_factor}")?;
                for (k, v) in config {
                    write!(f, ", {k}={v}")?;
                }
                Ok(())
            }
            Change::AddPartitions { name, from, to } => write!(f, "~ {name}: partitions {from} -> {to}"),
            Change::SetConfig { name, changed, .. } => {
                write!(f, "~ {name}:")?;
                for (i, (k, from, to)) in changed.iter().enumerate() {
                    let sep = if i == 0 { " " } else { ", " };
                    write!(f, "{sep}{k} {} -> {to}", from.as_deref().unwrap_or("(unset)"))?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Drift::PartitionsShrink { name, declared, actual } => write!(
                f,
                "! {name}: has {actual} partitions, the catalogue declares {declared}; Kafka cannot remove partitions, fix the file or recreate the topic"
            ),
            Drift::ReplicationFactor { name, declared, actual } => write!(
                f,
                "! {name}: replication factor is {actual}, the catalogue declares {declared}; change it with a partition reassignment"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use guardian_schemas::Registry;

    fn catalogue() -> Catalogue {
        Catalogue::embedded(Registry::embedded()).unwrap()
    }

    fn observed_in_sync(c: &Catalogue, brokers: i32) -> BTreeMap<String, ObservedTopic> {
        let plan = plan(c, &BTreeMap::new(), brokers);
        plan.changes
            .into_iter()
            .map(|change| match change {
                Change::Create { name, partitions, replication_factor, config } => {
                    (name, ObservedTopic { partitions, replication_factor, config })
                }
                other => panic!("empty cluster planned {other}"),
            })
            .collect()
    }

    #[test]
    fn empty_cluster_creates_everything_and_then_is_in_sync() {
        let c = catalogue();
        let first = plan(&c, &BTreeMap::new(), 1);
        assert_eq!(first.changes.len(), c.specs().count());
        assert!(first.changes.iter().all(|ch| matches!(ch, Change::Create { replication_factor: 1, .. })));
        assert!(plan(&c, &observed_in_sync(&c, 1), 1).is_in_sync());
    }

    #[test]
    fn replication_and_min_isr_are_clamped_on_one_broker() {
        let c = catalogue();
        let p = plan(&c, &BTreeMap::new(), 1);
        for ch in &p.changes {
            if let Change::Create { config, .. } = ch
                && let Some(m) = config.get("min.insync.replicas")
            {
                assert_eq!(m, "1");
            }
        }
        assert!(!p.notes.is_empty());
        assert!(plan(&c, &BTreeMap::new(), 3).notes.is_empty());
    }

    #[test]
    fn config_and_partition_drift_is_planned() {
        let c = catalogue();
        let mut observed = observed_in_sync(&c, 1);
        let name = c.topic(crate::TopicId::Encounters).unwrap();
        let t = observed.get_mut(&name).unwrap();
        t.partitions -= 1;
        t.config.insert("retention.ms".into(), "1".into());
        let p = plan(&c, &observed, 1);
        assert_eq!(p.changes.len(), 2, "{:?}", p.changes);
        let text: Vec<String> = p.changes.iter().map(|c| c.to_string()).collect();
        assert!(text.iter().any(|l| l.contains("partitions") && l.contains("->")), "{text:?}");
        assert!(text.iter().any(|l| l.contains("retention.ms 1 ->")), "{text:?}");
    }

    #[test]
    fn shrinking_and_replication_changes_are_drift_not_changes() {
        let c = catalogue();
        let mut observed = observed_in_sync(&c, 1);
        let name = c.topic(crate::TopicId::Encounters).unwrap();
        let t = observed.get_mut(&name).unwrap();
        t.partitions += 5;
        t.replication_factor = 2;
        let p = plan(&c, &observed, 1);
        assert!(p.changes.is_empty());
        assert_eq!(p.drift.len(), 2);
        assert!(!p.is_in_sync());
    }
}
