//! Topic files: parsing, validation, lookup by role.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use guardian_schemas::Registry;
use serde::Deserialize;
use thiserror::Error;

/// Topic configs a file may set. Anything else is refused so a typo cannot silently fall
/// back to the broker default.
pub const ALLOWED_CONFIGS: &[&str] = &[
    "cleanup.policy",
    "retention.ms",
    "retention.bytes",
    "min.insync.replicas",
    "segment.ms",
    "segment.bytes",
    "max.message.bytes",
    "min.compaction.lag.ms",
    "max.compaction.lag.ms",
    "delete.retention.ms",
    "compression.type",
    "message.timestamp.type",
    "message.timestamp.after.max.ms",
    "message.timestamp.before.max.ms",
];

#[derive(Debug, Error)]
pub enum CatalogueError {
    #[error("cannot read topic folder {dir}: {error}")]
    Dir { dir: PathBuf, error: std::io::Error },
    #[error("{file}: {error}")]
    File { file: PathBuf, error: String },
    #[error("no topic files (*.toml) in {0}")]
    Empty(PathBuf),
    #[error("topic {name} is declared twice: {first} and {second}")]
    Duplicate { name: String, first: PathBuf, second: PathBuf },
    #[error("no topic declared for role {0:?}")]
    MissingRole(TopicId),
}

/// Compatibility levels of a schema registry subject (Confluent's names).
pub const COMPATIBILITY_LEVELS: [&str; 7] =
    ["BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL", "FULL_TRANSITIVE", "NONE"];

/// A subject's level when its topic file names none: a new schema must read the records of
/// every earlier version (replays reach back to the first).
pub const DEFAULT_COMPATIBILITY: &str = "BACKWARD_TRANSITIVE";

/// How record keys are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyEncoding {
    /// UTF-8 string (hospital id, scope, composite ids).
    String,
    /// No key: records spread over partitions.
    None,
}

/// The topics the code knows by role. File names in `topics/` are `<role>.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TopicId {
    Encounters,
    GradientUpdates,
    BudgetSpend,
    SloEvents,
    KpiRollups,
    BudgetStatus,
    PrivacyAlerts,
    ModelVersions,
    DeadLetter,
    RoundControl,
    RoundKeys,
    UnmaskShares,
    DrAudit,
    SpendDecisions,
}

impl TopicId {
    pub const ALL: [TopicId; 14] = [
        TopicId::Encounters,
        TopicId::GradientUpdates,
        TopicId::BudgetSpend,
        TopicId::SloEvents,
        TopicId::KpiRollups,
        TopicId::BudgetStatus,
        TopicId::PrivacyAlerts,
        TopicId::ModelVersions,
        TopicId::DeadLetter,
        TopicId::RoundControl,
        TopicId::RoundKeys,
        TopicId::UnmaskShares,
        TopicId::DrAudit,
        TopicId::SpendDecisions,
    ];

    /// The `role` field of the topic's file.
    pub fn role(self) -> &'static str {
        match self {
            TopicId::Encounters => "encounters",
            TopicId::GradientUpdates => "gradient-updates",
            TopicId::BudgetSpend => "budget-spend",
            TopicId::SloEvents => "slo-events",
            TopicId::KpiRollups => "kpi-rollups",
            TopicId::BudgetStatus => "budget-status",
            TopicId::PrivacyAlerts => "privacy-alerts",
            TopicId::ModelVersions => "model-versions",
            TopicId::DeadLetter => "dead-letter",
            TopicId::RoundControl => "round-control",
            TopicId::RoundKeys => "round-keys",
            TopicId::UnmaskShares => "unmask-shares",
            TopicId::DrAudit => "dr-audit",
            TopicId::SpendDecisions => "spend-decisions",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicFile {
    name: String,
    role: String,
    owner: String,
    description: String,
    partitions: i32,
    replication_factor: i32,
    key: KeyEncoding,
    value_schema: String,
    /// The value subject's compatibility level in a schema registry.
    #[serde(default)]
    compatibility: Option<String>,
    #[serde(default)]
    config: BTreeMap<String, toml::Value>,
    access: crate::access::Access,
}

/// One validated topic.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicSpec {
    /// Name without any prefix.
    pub base_name: String,
    pub role: String,
    pub owner: String,
    pub description: String,
    /// At least 1.
    pub partitions: i32,
    /// Replication in production; clamped to the broker count on smaller clusters.
    pub replication_factor: i32,
    pub key: KeyEncoding,
    /// Full name of a registered schema.
    pub value_schema: String,
    /// The compatibility level of the value's subject in a schema registry (one of
    /// [`COMPATIBILITY_LEVELS`]; `BACKWARD_TRANSITIVE` unless the file says otherwise).
    pub compatibility: String,
    /// Topic configs, values as Kafka takes them (strings).
    pub config: BTreeMap<String, String>,
    /// Who writes and who reads it (the ACLs derive from this).
    pub access: crate::access::Access,
    pub file: PathBuf,
}

impl TopicSpec {
    pub fn is_compacted(&self) -> bool {
        self.config.get("cleanup.policy").is_some_and(|p| p.contains("compact"))
    }
}

/// All topics, with an optional name prefix (tests and tenants isolate themselves with
/// one; `""` in production).
#[derive(Debug, Clone)]
pub struct Catalogue {
    topics: BTreeMap<String, TopicSpec>,
    prefix: String,
}

impl Catalogue {
    /// Reads and validates every `*.toml` in `dir` against the schema registry.
    pub fn load_dir(dir: &Path, registry: &Registry) -> Result<Catalogue, CatalogueError> {
        let entries = std::fs::read_dir(dir).map_err(|error| CatalogueError::Dir { dir: dir.to_path_buf(), error })?;
        let mut paths = Vec::new();
        for entry in entries {
            let path = entry.map_err(|error| CatalogueError::Dir { dir: dir.to_path_buf(), error })?.path();
            if path.extension().is_some_and(|e| e == "toml") {
                paths.push(path);
            }
        }
        paths.sort();
        if paths.is_empty() {
            return Err(CatalogueError::Empty(dir.to_path_buf()));
        }
        let mut sources = Vec::new();
        for path in paths {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| CatalogueError::File { file: path.clone(), error: e.to_string() })?;
            sources.push((path, text));
        }
        Catalogue::from_sources(sources, registry)
    }

    /// The catalogue shipped in the repository's `topics/`, embedded at build time.
    pub fn embedded(registry: &Registry) -> Result<Catalogue, CatalogueError> {
        Catalogue::from_sources(
            EMBEDDED.iter().map(|(f, t)| (PathBuf::from("topics").join(f), t.to_string())),
            registry,
        )
    }

    pub fn from_sources(
        sources: impl IntoIterator<Item = (PathBuf, String)>,
        registry: &Registry,
    ) -> Result<Catalogue, CatalogueError> {
        let mut topics: BTreeMap<String, TopicSpec> = BTreeMap::new();
        let mut roles: BTreeMap<String, PathBuf> = BTreeMap::new();
        for (file, text) in sources {
            let spec = parse_topic(&file, &text, registry)?;
            if let Some(first) = roles.insert(spec.role.clone(), file.clone()) {
                return Err(CatalogueError::File {
                    file,
                    error: format!("role {:?} is already declared by {}", spec.role, first.display()),
                });
            }
            if let Some(first) = topics.get(&spec.base_name) {
                return Err(CatalogueError::Duplicate {
                    name: spec.base_name.clone(),
                    first: first.file.clone(),
                    second: file,
                });
            }
            topics.insert(spec.base_name.clone(), spec);
        }
        Ok(Catalogue { topics, prefix: String::new() })
    }

    /// The same catalogue with every name prefixed.
    pub fn with_prefix(mut self, prefix: &str) -> Result<Catalogue, CatalogueError> {
        for spec in self.topics.values() {
            validate_name(&format!("{prefix}{}", spec.base_name)).map_err(|error| CatalogueError::File {
                file: spec.file.clone(),
                error: format!("with prefix {prefix:?}: {error}"),
            })?;
        }
        self.prefix = prefix.to_string();
        Ok(self)
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The full (prefixed) name of a topic.
    pub fn name_of(&self, spec: &TopicSpec) -> String {
        format!("{}{}", self.prefix, spec.base_name)
    }

    /// The spec for a role the code depends on.
    pub fn get(&self, id: TopicId) -> Result<&TopicSpec, CatalogueError> {
        self.topics.values().find(|s| s.role == id.role()).ok_or(CatalogueError::MissingRole(id))
    }

    /// The full name of the topic for a role.
    pub fn topic(&self, id: TopicId) -> Result<String, CatalogueError> {
        self.get(id).map(|s| self.name_of(s))
    }

    /// Every topic, by base name.
    pub fn specs(&self) -> impl Iterator<Item = &TopicSpec> {
        self.topics.values()
    }

    /// Checks that every role the code knows is declared.
    pub fn require_all_roles(&self) -> Result<(), CatalogueError> {
        for id in TopicId::ALL {
            self.get(id)?;
        }
        Ok(())
    }
}

/// The files of the repository's `topics/`, embedded at build time.
pub const EMBEDDED: &[(&str, &str)] = &[
    ("encounters.toml", include_str!("../../../../topics/encounters.toml")),
    ("gradient-updates.toml", include_str!("../../../../topics/gradient-updates.toml")),
    ("budget-spend.toml", include_str!("../../../../topics/budget-spend.toml")),
    ("slo-events.toml", include_str!("../../../../topics/slo-events.toml")),
    ("kpi-rollups.toml", include_str!("../../../../topics/kpi-rollups.toml")),
    ("budget-status.toml", include_str!("../../../../topics/budget-status.toml")),
    ("privacy-alerts.toml", include_str!("../../../../topics/privacy-alerts.toml")),
    ("model-versions.toml", include_str!("../../../../topics/model-versions.toml")),
    ("dead-letter.toml", include_str!("../../../../topics/dead-letter.toml")),
    ("round-control.toml", include_str!("../../../../topics/round-control.toml")),
    ("round-keys.toml", include_str!("../../../../topics/round-keys.toml")),
    ("unmask-shares.toml", include_str!("../../../../topics/unmask-shares.toml")),
    ("dr-audit.toml", include_str!("../../../../topics/dr-audit.toml")),
    ("spend-decisions.toml", include_str!("../../../../topics/spend-decisions.toml")),
];

fn parse_topic(file: &Path, text: &str, registry: &Registry) -> Result<TopicSpec, CatalogueError> {
    let err = |error: String| CatalogueError::File { file: file.to_path_buf(), error };
    let raw: TopicFile = toml::from_str(text).map_err(|e| err(e.message().to_string() + &location(text, e.span())))?;
    validate_name(&raw.name).map_err(err)?;
    if raw.partitions < 1 {
        return Err(err(format!("partitions must be at least 1, got {}", raw.partitions)));
    }
    if raw.replication_factor < 1 {
        return Err(err(format!("replication_factor must be at least 1, got {}", raw.replication_factor)));
    }
    if raw.owner.trim().is_empty() {
        return Err(err("owner must name the owning service".to_string()));
    }
    raw.access.validate().map_err(err)?;
    registry.get(&raw.value_schema).map_err(|_| {
        err(format!(
            "value_schema {:?} is not a schema in schemas/ (known: {})",
            raw.value_schema,
            registry.names().collect::<Vec<_>>().join(", ")
        ))
    })?;
    let compatibility = raw.compatibility.unwrap_or_else(|| DEFAULT_COMPATIBILITY.to_string());
    if !COMPATIBILITY_LEVELS.contains(&compatibility.as_str()) {
        return Err(err(format!(
            "compatibility {compatibility:?} is not a schema registry level ({})",
            COMPATIBILITY_LEVELS.join(", ")
        )));
    }
    let mut config = BTreeMap::new();
    for (key, value) in raw.config {
        if !ALLOWED_CONFIGS.contains(&key.as_str()) {
            return Err(err(format!(
                "config {key:?} is not one of the supported topic configs ({})",
                ALLOWED_CONFIGS.join(", ")
            )));
        }
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => return Err(err(format!("config {key:?}: expected a string or an integer, got {other:?}"))),
        };
        validate_config(&key, &value).map_err(|e| err(format!("config {key:?}: {e}")))?;
        config.insert(key, value);
    }
    if let Some(min_isr) = config.get("min.insync.replicas")
        && min_isr.parse::<i32>().is_ok_and(|m| m > raw.replication_factor)
    {
        return Err(err(format!(
            "min.insync.replicas {min_isr} exceeds replication_factor {}: every write would fail",
            raw.replication_factor
        )));
    }
    Ok(TopicSpec {
        base_name: raw.name,
        role: raw.role,
        owner: raw.owner,
        description: raw.description,
        partitions: raw.partitions,
        replication_factor: raw.replication_factor,
        key: raw.key,
        value_schema: raw.value_schema,
        compatibility,
        config,
        access: raw.access,
        file: file.to_path_buf(),
    })
}

fn location(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(span) => {
            let start = span.start.min(text.len());
            let line = text[..start].matches('\n').count() + 1;
            // The offending line itself names the key, which serde's message may not.
            let source = text.lines().nth(line - 1).unwrap_or("").trim();
            if source.is_empty() { format!(" (line {line})") } else { format!(" (line {line}: `{source}`)") }
        }
        None => String::new(),
    }
}

/// Kafka's rule: 1..=249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 249 {
        return Err(format!("topic name {name:?} must have 1 to 249 characters"));
    }
    if name == "." || name == ".." {
        return Err(format!("topic name {name:?} is reserved"));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(format!(
            "topic name {name:?} has the character {c:?}; only letters, digits, '.', '_' and '-' are allowed"
        ));
    }
    Ok(())
}

fn validate_config(key: &str, value: &str) -> Result<(), String> {
    let int = |min: i64| -> Result<(), String> {
        match value.parse::<i64>() {
            Ok(v) if v >= min => Ok(()),
            _ => Err(format!("expected an integer >= {min}, got {value:?}")),
        }
    };
    match key {
        "cleanup.policy" => match value {
            "delete" | "compact" | "compact,delete" | "delete,compact" => Ok(()),
            _ => Err(format!("expected delete, compact or compact,delete, got {value:?}")),
        },
        "retention.ms" | "retention.bytes" => int(-1),
        "min.insync.replicas" => int(1),
        "compression.type" => match value {
            "producer" | "uncompressed" | "gzip" | "snappy" | "lz4" | "zstd" => Ok(()),
            _ => Err(format!("unknown compression type {value:?}")),
        },
        "message.timestamp.type" => match value {
            "CreateTime" | "LogAppendTime" => Ok(()),
            _ => Err(format!("expected CreateTime or LogAppendTime, got {value:?}")),
        },
        _ => int(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> &'static Registry {
        Registry::embedded()
    }

    const GOOD: &str = r#"
name = "guardian.encounters"
role = "encounters"
owner = "kpi-rollup"
description = "x"
partitions = 6
replication_factor = 3
key = "string"
value_schema = "com.phoenixguardian.events.Encounter"
[config]
"cleanup.policy" = "delete"
"retention.ms" = 604800000
"min.insync.replicas" = 2
[access]
write = ["hospitals"]
read = ["kpi"]
"#;

    fn parse(text: &str) -> Result<TopicSpec, CatalogueError> {
        parse_topic(Path::new("t.toml"), text, registry())
    }

    #[test]
    fn the_shipped_catalogue_is_valid_and_complete() {
        let catalogue = Catalogue::embedded(registry()).unwrap();
        catalogue.require_all_roles().unwrap();
        assert_eq!(catalogue.specs().count(), TopicId::ALL.len());
    }

    #[test]
    fn the_embedded_catalogue_is_the_topics_folder() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../topics");
        let from_dir = Catalogue::load_dir(&dir, registry()).unwrap();
        let embedded = Catalogue::embedded(registry()).unwrap();
        let strip =
            |c: &Catalogue| c.specs().map(|s| TopicSpec { file: PathBuf::new(), ..s.clone() }).collect::<Vec<_>>();
        assert_eq!(strip(&from_dir), strip(&embedded), "a file in topics/ is missing from EMBEDDED");
    }

    #[test]
    fn a_good_file_parses_with_integer_configs_as_strings() {
        let spec = parse(GOOD).unwrap();
        assert_eq!(spec.config["retention.ms"], "604800000");
        assert!(!spec.is_compacted());
    }

    #[test]
    fn unknown_fields_are_refused_with_the_line() {
        let err = parse(&GOOD.replace("owner =", "ownr =")).unwrap_err().to_string();
        assert!(err.contains("t.toml") && err.contains("ownr") && err.contains("line"), "{err}");
    }

    #[test]
    fn access_is_required_and_checked() {
        let err = parse(GOOD.split("[access]").next().unwrap()).unwrap_err().to_string();
        assert!(err.contains("access"), "{err}");
        let err = parse(&GOOD.replace("read = [\"kpi\"]", "read = [\"kpii\"]")).unwrap_err().to_string();
        assert!(err.contains("unknown principal kind \"kpii\""), "{err}");
    }

    #[test]
    fn unknown_schema_is_refused() {
        let err = parse(&GOOD.replace("events.Encounter", "events.Encountr")).unwrap_err().to_string();
        assert!(err.contains("not a schema in schemas/"), "{err}");
    }

    #[test]
    fn bad_configs_are_refused() {
        assert!(parse(&GOOD.replace("\"delete\"", "\"deleet\"")).is_err());
        assert!(parse(&GOOD.replace("\"min.insync.replicas\" = 2", "\"min.insync.replicas\" = 4")).is_err());
        assert!(parse(&GOOD.replace("\"retention.ms\"", "\"retention.msec\"")).is_err());
        assert!(parse(&GOOD.replace("partitions = 6", "partitions = 0")).is_err());
        assert!(parse(&GOOD.replace("guardian.encounters", "guardian/encounters")).is_err());
        assert!(parse("not toml at all [").is_err());
    }

    #[test]
    fn prefix_applies_to_every_name() {
        let catalogue = Catalogue::embedded(registry()).unwrap().with_prefix("it-7.").unwrap();
        assert_eq!(catalogue.topic(TopicId::Encounters).unwrap(), "it-7.guardian.encounters");
        assert!(Catalogue::embedded(registry()).unwrap().with_prefix("bad prefix").is_err());
    }
}
