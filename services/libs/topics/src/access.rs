//! Who may write and read each topic, and the Kafka ACLs that follow.
//!
//! Each topic file has an `[access]` table naming its writers and readers among the
//! [`PRINCIPAL_KINDS`]: a service (one principal per service) or `hospitals` (one
//! principal per hospital agent, `hospital-<id>`). [`bindings`] turns the catalogue and
//! the list of hospitals into least-privilege ACL bindings: WRITE on the topics a
//! principal writes, READ on those it reads, DESCRIBE_CONFIGS on both (the start-up check
//! that topics are as declared reads their configs), READ on consumer groups and WRITE on
//! transactional ids under the principal's own name, nothing else (Kafka's authorizer
//! lets READ and WRITE imply DESCRIBE).
//! The archiver and MirrorMaker 2 read every topic. Nothing here does I/O.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Who may appear in `[access]`.
pub const PRINCIPAL_KINDS: [&str; 8] =
    ["hospitals", "accountant", "kpi", "slo", "aggregator", "dashboard", "ops", "every-service"];

/// The services `every-service` stands for (each writes dead letters and SLO events).
pub const SERVICES: [&str; 6] = ["accountant", "kpi", "slo", "aggregator", "archiver", "ops"];

/// Principals that read every topic.
const READ_ALL: [&str; 2] = ["archiver", "mirrormaker"];

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Access {
    #[serde(default)]
    pub write: Vec<String>,
    #[serde(default)]
    pub read: Vec<String>,
}

impl Access {
    pub fn validate(&self) -> Result<(), String> {
        for who in self.write.iter().chain(&self.read) {
            if !PRINCIPAL_KINDS.contains(&who.as_str()) {
                return Err(format!("access: unknown principal kind {who:?} (known: {})", PRINCIPAL_KINDS.join(", ")));
            }
        }
        if self.write.is_empty() {
            return Err("access: a topic needs at least one writer".into());
        }
        Ok(())
    }
}

/// The Kafka principal of a service or hospital.
pub fn principal(kind: &str, hospital: Option<&str>) -> String {
    match hospital {
        Some(h) => crate::service::hospital_principal(h),
        None => format!("svc-{kind}"),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    Read,
    Write,
    /// Reading a topic's configs: every service and agent checks at start that the topics
    /// it uses are as declared.
    DescribeConfigs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Resource {
    Topic,
    Group,
    TransactionalId,
}

/// One allow rule: `principal` may `operation` on `resource` named `name` (a prefix
/// when `prefixed`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Binding {
    pub principal: String,
    pub resource: Resource,
    pub prefixed: bool,
    pub name: String,
    pub operation: Operation,
}

fn expand(kinds: &[String], hospitals: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for kind in kinds {
        match kind.as_str() {
            "hospitals" => out.extend(hospitals.iter().map(|h| principal("hospitals", Some(h)))),
            "every-service" => {
                out.extend(SERVICES.iter().map(|s| principal(s, None)));
                out.extend(hospitals.iter().map(|h| principal("hospitals", Some(h))));
            }
            k => out.push(principal(k, None)),
        }
    }
    out
}

/// Every allow rule for `topics` (full name → access) and `hospitals`, sorted, no duplicates.
pub fn bindings<'a>(topics: impl IntoIterator<Item = (String, &'a Access)>, hospitals: &[String]) -> Vec<Binding> {
    let mut out = std::collections::BTreeSet::new();
    let mut principals = std::collections::BTreeSet::new();
    let topic = |p: &str, name: &str, op| Binding {
        principal: p.to_string(),
        resource: Resource::Topic,
        prefixed: false,
        name: name.to_string(),
        operation: op,
    };
    for (name, access) in topics {
        for p in expand(&access.write, hospitals) {
            out.insert(topic(&p, &name, Operation::Write));
            out.insert(topic(&p, &name, Operation::DescribeConfigs));
            principals.insert(p);
        }
        let readers = expand(&access.read, hospitals).into_iter().chain(READ_ALL.iter().map(|s| principal(s, None)));
        for p in readers {
            out.insert(topic(&p, &name, Operation::Read));
            out.insert(topic(&p, &name, Operation::DescribeConfigs));
            principals.insert(p);
        }
    }
    // Consumer groups and transactional ids under the principal's own name only.
    for p in principals {
        for (resource, operation) in [(Resource::Group, Operation::Read), (Resource::TransactionalId, Operation::Write)]
        {
            out.insert(Binding { principal: p.clone(), resource, prefixed: true, name: p.clone(), operation });
        }
    }
    out.into_iter().collect()
}

/// The bindings as arguments of Kafka's `kafka-acls` tool (`org.apache.kafka.tools.
/// AclCommand`), one invocation per line: rules sharing principal, resource kind and
/// pattern type and operation are grouped into one line.
pub fn kafka_acls_lines(bindings: &[Binding]) -> Vec<String> {
    let mut groups: BTreeMap<(String, Resource, bool, Operation), Vec<&str>> = BTreeMap::new();
    for b in bindings {
        groups.entry((b.principal.clone(), b.resource, b.prefixed, b.operation)).or_default().push(&b.name);
    }
    groups
        .into_iter()
        .map(|((p, resource, prefixed, op), names)| {
            let flag = match resource {
                Resource::Topic => "--topic",
                Resource::Group => "--group",
                Resource::TransactionalId => "--transactional-id",
            };
            let op = match op {
                Operation::Read => "Read",
                Operation::Write => "Write",
                Operation::DescribeConfigs => "DescribeConfigs",
            };
            let mut line = format!("--add --allow-principal User:{p} --operation {op}");
            if prefixed {
                line.push_str(" --resource-pattern-type prefixed");
            }
            for n in names {
                line.push_str(&format!(" {flag} {n}"));
            }
            line
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(write: &[&str], read: &[&str]) -> Access {
        Access {
            write: write.iter().map(|s| s.to_string()).collect(),
            read: read.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn hospitals_write_their_events_and_never_read_each_others() {
        let enc = access(&["hospitals"], &["kpi"]);
        let rounds = access(&["aggregator"], &["hospitals"]);
        let hospitals = vec!["h001".to_string(), "h002".to_string()];
        let b = bindings([("guardian.encounters".to_string(), &enc), ("fl.rounds".to_string(), &rounds)], &hospitals);
        let has = |p: &str, name: &str, op| {
            b.iter().any(|x| x.principal == p && x.name == name && x.operation == op && x.resource == Resource::Topic)
        };
        assert!(has("hospital-h001", "guardian.encounters", Operation::Write));
        assert!(!has("hospital-h001", "guardian.encounters", Operation::Read));
        assert!(has("hospital-h002", "fl.rounds", Operation::Read));
        assert!(!has("hospital-h002", "fl.rounds", Operation::Write));
        assert!(has("svc-kpi", "guardian.encounters", Operation::Read));
        // Configs of the topics a principal uses, and of no other.
        assert!(has("svc-kpi", "guardian.encounters", Operation::DescribeConfigs));
        assert!(has("hospital-h001", "fl.rounds", Operation::DescribeConfigs));
        assert!(!has("svc-kpi", "fl.rounds", Operation::DescribeConfigs));
        assert!(
            has("svc-archiver", "fl.rounds", Operation::Read)
                && has("svc-mirrormaker", "guardian.encounters", Operation::Read)
        );
        // Groups and transactional ids: the principal's own prefix only.
        let groups: Vec<_> = b.iter().filter(|x| x.resource == Resource::Group).collect();
        assert!(groups.iter().all(|g| g.prefixed && g.name == g.principal));
        let lines = kafka_acls_lines(&b);
        assert!(
            lines.contains(
                &"--add --allow-principal User:hospital-h001 --operation Write --topic guardian.encounters".to_string()
            ),
            "{lines:#?}"
        );
    }

    #[test]
    fn unknown_principals_and_writerless_topics_are_refused() {
        assert!(access(&["hospitals"], &["nobody"]).validate().unwrap_err().contains("nobody"));
        assert!(access(&[], &["kpi"]).validate().unwrap_err().contains("writer"));
        assert!(access(&["every-service"], &["ops"]).validate().is_ok());
    }
}
