//! An experiment file (TOML): what traffic flows, which faults fire, how long recovery may
//! take. The steady-state hypotheses are the same for every experiment (see
//! `guardian chaos run --help`).

use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;

/// Services the runner supervises (and may kill); the archiver only with `archiver = true`,
/// the hospital agents and the aggregator only with a `[federated]` session.
pub const SERVICES: [&str; 5] = ["kpi", "accountant", "archiver", "agent", "aggregator"];

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    pub name: String,
    pub description: String,
    /// Seeds the traffic and the fault times: the same file gives the same run plan.
    pub seed: u64,
    /// Seconds of traffic; faults fire inside this window.
    pub traffic_secs: u64,
    /// Seconds after the traffic within which every hypothesis must hold.
    pub recover_secs: u64,
    /// Also run the archiver (topics to S3), and check that the archive ends complete.
    #[serde(default)]
    pub archiver: bool,
    /// A federated session runs alongside: hospital agents and the aggregator.
    #[serde(default)]
    pub federated: Option<Federated>,
    pub workload: Workload,
    #[serde(default)]
    pub faults: Vec<FaultSpec>,
}

/// A federated session under faults: each published model version must equal its replay
/// from the topics.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Federated {
    /// Hospital agents (h001, h002, ... with the demo data's shards).
    pub hospitals: u32,
    pub rounds: u32,
    /// Seconds a round stage waits for absent hospitals.
    #[serde(default = "default_stage_timeout")]
    pub stage_timeout_secs: u64,
}

fn default_stage_timeout() -> u64 {
    5
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    pub hospitals: u32,
    pub encounters_per_sec: f64,
    /// Undecodable records per second mixed into the encounter and spend topics.
    #[serde(default)]
    pub poison_per_sec: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// SIGKILL a supervised service, restart it after `down_ms`.
    KillService,
    /// SIGKILL the Kafka broker, restart it after `down_ms`.
    KillBroker,
    /// SIGKILL PostgreSQL (crash recovery on restart) after `down_ms`.
    KillPostgres,
    /// `records` undecodable records at once into the encounter and spend topics.
    PoisonStorm,
    /// Copy a random range of what was sent back into the same topics (duplicates,
    /// out of order).
    ReplayDuplicates,
    /// Producer clocks off by `skew_ms` for `down_ms`.
    ClockSkew,
    /// SIGKILL the S3 server, restart it after `down_ms`.
    KillS3,
    /// Every packet between the services and the broker delayed by `latency_ms` ±
    /// `jitter_ms` for `down_ms` (a TCP proxy in the path).
    NetworkDelay,
    /// The services cut off from the broker for `down_ms` (connections dropped, new ones
    /// refused), then healed.
    NetworkPartition,
    /// `records` hostile records a tenant could write, in turn: decodable but invalid
    /// encounters and spends, absurd values (a 1,000-byte hospital id, a generation time
    /// of i64::MAX), an encounter and a spend dated a day ahead naming another hospital,
    /// and records too large to wrap in a dead letter (900 KB).
    HostileRecords,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    pub kind: FaultKind,
    /// How many times it fires, at seeded random times in the traffic window.
    pub count: u32,
    /// For kill-service: which services (default: all supervised).
    #[serde(default)]
    pub targets: Vec<String>,
    /// How long the component stays down (kills) or the skew lasts.
    #[serde(default = "default_down_ms")]
    pub down_ms: u64,
    /// Records of a poison storm.
    #[serde(default = "default_records")]
    pub records: u32,
    /// Clock skew in milliseconds (negative: behind).
    #[serde(default)]
    pub skew_ms: i64,
    /// Added latency of a network-delay, in milliseconds.
    #[serde(default)]
    pub latency_ms: u64,
    /// Jitter of a network-delay: uniform in ±jitter_ms.
    #[serde(default)]
    pub jitter_ms: u64,
}

fn default_down_ms() -> u64 {
    1000
}

fn default_records() -> u32 {
    100
}

/// One fault firing in the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// Milliseconds after the traffic started.
    pub at_ms: u64,
    pub kind: FaultKind,
    /// The service of a kill-service, empty otherwise.
    pub target: String,
    pub spec: FaultSpec,
}

impl Experiment {
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let e: Experiment = toml::from_str(&text).map_err(|e| format!("{}: {}", path.display(), e.message()))?;
        e.validate().map_err(|why| format!("{}: {why}", path.display()))?;
        Ok(e)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(format!("name {:?}: letters, digits and '-'", self.name));
        }
        if self.traffic_secs < 5 {
            return Err("traffic_secs must be at least 5 (faults fire between 2 s and the end of traffic)".into());
        }
        if self.recover_secs == 0 {
            return Err("recover_secs must be positive".into());
        }
        let w = &self.workload;
        if !(1..=999).contains(&w.hospitals) {
            return Err("workload.hospitals must be 1..=999".into());
        }
        if !(w.encounters_per_sec > 0.0 && w.encounters_per_sec <= 50_000.0) {
            return Err("workload.encounters_per_sec must be in (0, 50000]".into());
        }
        if !(w.poison_per_sec >= 0.0 && w.poison_per_sec <= 1000.0) {
            return Err("workload.poison_per_sec must be in [0, 1000]".into());
        }
        if let Some(fl) = &self.federated
            && (!(3..=5).contains(&fl.hospitals) || !(1..=50).contains(&fl.rounds) || fl.stage_timeout_secs == 0)
        {
            return Err(
                "federated: hospitals 3..=5 (the demo data has five shards), rounds 1..=50, stage_timeout_secs > 0"
                    .into(),
            );
        }
        for (i, f) in self.faults.iter().enumerate() {
            if f.count == 0 {
                return Err(format!("faults[{i}]: count must be at least 1"));
            }
            let supervised = self.services();
            if let Some(t) = f.targets.iter().find(|t| !supervised.contains(&t.as_str())) {
                return Err(format!("faults[{i}]: unknown target {t:?} (services: {})", supervised.join(", ")));
            }
            if !f.targets.is_empty() && f.kind != FaultKind::KillService {
                return Err(format!("faults[{i}]: targets apply to kill-service only"));
            }
            if f.kind == FaultKind::ClockSkew && f.skew_ms == 0 {
                return Err(format!("faults[{i}]: clock-skew needs a non-zero skew_ms"));
            }
            if f.kind == FaultKind::NetworkDelay && (f.latency_ms == 0 || f.jitter_ms > f.latency_ms) {
                return Err(format!("faults[{i}]: network-delay needs latency_ms > 0 and jitter_ms <= latency_ms"));
            }
        }
        Ok(())
    }

    /// The services this experiment runs.
    pub fn services(&self) -> Vec<&'static str> {
        SERVICES
            .iter()
            .copied()
            .filter(|s| match *s {
                "archiver" => self.archiver,
                "agent" | "aggregator" => self.federated.is_some(),
                _ => true,
            })
            .collect()
    }

    /// Every fault firing, in time order: times drawn uniformly between 2 s and the end of
    /// the traffic from the experiment's seed.
    pub fn plan(&self) -> Vec<Planned> {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let window = (2_000, self.traffic_secs * 1000 - 1_000);
        let mut out = Vec::new();
        for spec in &self.faults {
            for _ in 0..spec.count {
                let at_ms = rng.random_range(window.0..window.1);
                let target = match spec.kind {
                    FaultKind::KillService => {
                        let targets: Vec<&str> = if spec.targets.is_empty() {
                            self.services()
                        } else {
                            spec.targets.iter().map(String::as_str).collect()
                        };
                        targets[rng.random_range(0..targets.len())].to_string()
                    }
                    _ => String::new(),
                };
                out.push(Planned { at_ms, kind: spec.kind, target, spec: spec.clone() });
            }
        }
        out.sort_by_key(|p| p.at_ms);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Experiment, String> {
        let e: Experiment = toml::from_str(text).map_err(|e| e.message().to_string())?;
        e.validate().map(|_| e)
    }

    const GOOD: &str = r#"
name = "x"
description = "d"
seed = 3
traffic_secs = 20
recover_secs = 30
[workload]
hospitals = 4
encounters_per_sec = 100
[[faults]]
kind = "kill-service"
count = 5
[[faults]]
kind = "poison-storm"
count = 1
records = 10
"#;

    #[test]
    fn the_plan_is_seeded_sorted_and_inside_the_traffic() {
        let e = parse(GOOD).unwrap();
        let (a, b) = (e.plan(), e.plan());
        assert_eq!(a, b);
        assert_eq!(a.len(), 6);
        assert!(a.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
        assert!(a.iter().all(|p| (2_000..19_000).contains(&p.at_ms)));
        assert!(a.iter().filter(|p| p.kind == FaultKind::KillService).all(|p| SERVICES.contains(&p.target.as_str())));
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        assert!(parse(&GOOD.replace("kill-service", "kill-everything")).unwrap_err().contains("unknown variant"));
        assert!(parse(&GOOD.replace("count = 5", "count = 0")).unwrap_err().contains("count"));
        assert!(parse(&GOOD.replace("traffic_secs = 20", "traffic_secs = 2")).unwrap_err().contains("traffic_secs"));
        let t = GOOD.replace("kind = \"kill-service\"", "kind = \"kill-service\"\ntargets = [\"dashboard\"]");
        assert!(parse(&t).unwrap_err().contains("unknown target"));
        assert!(parse(&GOOD.replace("seed = 3", "seed = 3\nsurprise = 1")).unwrap_err().contains("surprise"));
    }

    #[test]
    fn the_shipped_experiments_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../chaos");
        let mut n = 0;
        for entry in std::fs::read_dir(dir.join("experiments")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|x| x == "toml") {
                Experiment::load(&path).unwrap();
                n += 1;
            }
        }
        assert!(n >= 4, "{n} experiments");
    }
}
