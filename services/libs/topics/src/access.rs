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
use std::fmt;

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

/// What an ACL lets do, as the broker reports it (`DescribeAcls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AclOperation {
    All,
    Op(Operation),
    /// `ALTER_CONFIGS`: implies `DESCRIBE_CONFIGS`.
    AlterConfigs,
    /// `DESCRIBE`: implied by `READ` and `WRITE`, never broader than they are.
    Describe,
    /// Any other operation (`CREATE`, `DELETE`, `ALTER`, `CLUSTER_ACTION`, ...), by name.
    Other(&'static str),
}

impl fmt::Display for AclOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AclOperation::Op(op) => write!(f, "{op:?}"),
            AclOperation::Other(name) => f.write_str(name),
            other => write!(f, "{other:?}"),
        }
    }
}

/// One ACL on the cluster.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Acl {
    /// As Kafka spells it: `User:svc-kpi`, `User:*`.
    pub principal: String,
    pub host: String,
    /// `None`: a resource the catalogue never grants (the cluster, users, tokens).
    pub resource: Option<Resource>,
    pub name: String,
    pub prefixed: bool,
    pub operation: AclOperation,
    pub allow: bool,
}

impl fmt::Display for Acl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.allow { "allows" } else { "denies" };
        let pattern = if self.prefixed { "prefix " } else { "" };
        let resource = self.resource.map_or("resource".to_string(), |r| format!("{r:?}").to_lowercase());
        write!(f, "{} {verdict} {} on {resource} {pattern}{}", self.principal, self.operation, self.name)?;
        if self.host != "*" {
            write!(f, " from {}", self.host)?;
        }
        Ok(())
    }
}

impl fmt::Display for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let resource = format!("{:?}", self.resource).to_lowercase();
        let pattern = if self.prefixed { "prefix " } else { "" };
        write!(f, "{} {:?} on {resource} {pattern}{}", self.principal, self.operation, self.name)
    }
}

impl Acl {
    fn applies_to(&self, principal: &str) -> bool {
        self.principal == "User:*" || self.principal.strip_prefix("User:") == Some(principal)
    }

    fn grants(&self, operation: Operation) -> bool {
        match self.operation {
            AclOperation::All => true,
            AclOperation::Op(op) => op == operation,
            AclOperation::AlterConfigs => operation == Operation::DescribeConfigs,
            AclOperation::Describe | AclOperation::Other(_) => false,
        }
    }

    /// Whether the ACL's pattern covers every name the binding stands for: the name of a
    /// literal binding, every name under the prefix of a prefixed one.
    fn covers(&self, b: &Binding) -> bool {
        if !self.prefixed && self.name == "*" {
            return true;
        }
        match (self.prefixed, b.prefixed) {
            (false, false) => self.name == b.name,
            (true, _) => b.name.starts_with(&self.name),
            (false, true) => false,
        }
    }

    /// Whether the ACL's pattern matches at least one name the binding stands for (a
    /// deny that does blocks some of what the binding needs).
    fn touches(&self, b: &Binding) -> bool {
        self.covers(b) || (b.prefixed && !self.prefixed && self.name.starts_with(&b.name))
    }

    fn matches_name(&self, name: &str) -> bool {
        (!self.prefixed && (self.name == "*" || self.name == name)) || (self.prefixed && name.starts_with(&self.name))
    }
}

/// The ACLs found on a cluster measured against the bindings derived from the catalogue.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AclReview {
    /// Bindings no ACL grants (or a deny blocks), with the reason.
    pub missing: Vec<(Binding, String)>,
    /// Allow ACLs of the catalogue's principals that grant more than derived on a
    /// catalogue topic (least privilege broken, nothing refused).
    pub extra: Vec<Acl>,
}

/// Measures `acls` (everything on the cluster) against `expected` ([`bindings`] for the
/// catalogue's `topics`). With `every_hospital_named` (the bindings were derived for the
/// federation's full list of hospitals), any grant on a catalogue topic to another
/// hospital principal is extra: one left behind by a revoked hospital. Kafka's rules: `ALL` grants every operation, `ALTER_CONFIGS`
/// grants `DESCRIBE_CONFIGS`, a literal `*` or a prefix pattern covers names, `User:*`
/// every principal, and a matching deny wins over any allow. An allow only counts from
/// any host (`*`); a host-restricted allow does not make a binding hold everywhere.
pub fn review_acls(expected: &[Binding], topics: &[String], acls: &[Acl], every_hospital_named: bool) -> AclReview {
    let mut review = AclReview::default();
    for b in expected {
        let relevant = |a: &&Acl| a.resource == Some(b.resource) && a.applies_to(&b.principal) && a.grants(b.operation);
        if let Some(deny) = acls.iter().filter(relevant).find(|a| !a.allow && a.touches(b)) {
            review.missing.push((b.clone(), format!("denied by {deny}")));
        } else if !acls.iter().filter(relevant).any(|a| a.allow && a.host == "*" && a.covers(b)) {
            review.missing.push((b.clone(), "no ACL grants it".into()));
        }
    }
    let principals: std::collections::BTreeSet<&str> = expected.iter().map(|b| b.principal.as_str()).collect();
    let granted = |p: &str, topic: &str, op: Operation| {
        expected.iter().any(|b| {
            b.resource == Resource::Topic && b.principal == p && b.operation == op && !b.prefixed && b.name == topic
        })
    };
    for a in acls.iter().filter(|a| a.allow && a.resource == Some(Resource::Topic)) {
        let Some(p) = a.principal.strip_prefix("User:") else { continue };
        let who: Vec<&str> = if p == "*" { principals.iter().copied().collect() } else { vec![p] };
        let stranger = every_hospital_named
            && p != "*"
            && !principals.contains(p)
            && p.starts_with(&crate::service::hospital_principal(""))
            && topics.iter().any(|t| a.matches_name(t));
        let broader = stranger
            || who.iter().filter(|p| principals.contains(*p)).any(|p| {
                topics.iter().filter(|t| a.matches_name(t)).any(|t| match a.operation {
                    AclOperation::Describe => false,
                    AclOperation::Op(op) => !granted(p, t, op),
                    AclOperation::AlterConfigs | AclOperation::All | AclOperation::Other(_) => true,
                })
            });
        if broader {
            review.extra.push(a.clone());
        }
    }
    review
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

    fn allow(principal: &str, resource: Resource, name: &str, prefixed: bool, operation: AclOperation) -> Acl {
        Acl {
            principal: format!("User:{principal}"),
            host: "*".into(),
            resource: Some(resource),
            name: name.into(),
            prefixed,
            operation,
            allow: true,
        }
    }

    /// The ACLs `kafka-acls` creates from [`kafka_acls_lines`]: one literal or prefixed
    /// allow per binding.
    fn as_applied(b: &[Binding]) -> Vec<Acl> {
        b.iter().map(|x| allow(&x.principal, x.resource, &x.name, x.prefixed, AclOperation::Op(x.operation))).collect()
    }

    fn derived() -> (Vec<Binding>, Vec<String>) {
        let enc = access(&["hospitals"], &["kpi"]);
        let rounds = access(&["aggregator"], &["hospitals"]);
        let topics = vec!["p.encounters".to_string(), "p.rounds".to_string()];
        let b = bindings([(topics[0].clone(), &enc), (topics[1].clone(), &rounds)], &["h001".to_string()]);
        (b, topics)
    }

    #[test]
    fn the_derived_acls_as_applied_pass_the_review() {
        let (b, topics) = derived();
        let mut acls = as_applied(&b);
        // Other tenants' and other prefixes' ACLs are not ours to judge.
        acls.push(allow("svc-kpi", Resource::Topic, "q.encounters", false, AclOperation::All));
        acls.push(allow("someone-else", Resource::Topic, "p.encounters", false, AclOperation::Op(Operation::Read)));
        assert_eq!(review_acls(&b, &topics, &acls, false), AclReview::default());
    }

    #[test]
    fn a_removed_acl_is_missing_and_named() {
        let (b, topics) = derived();
        let mut acls = as_applied(&b);
        let gone = acls
            .iter()
            .position(|a| a.principal == "User:svc-kpi" && a.operation == AclOperation::Op(Operation::Read))
            .unwrap();
        acls.remove(gone);
        let r = review_acls(&b, &topics, &acls, false);
        assert_eq!(r.missing.len(), 1, "{r:?}");
        assert_eq!(r.missing[0].0.to_string(), "svc-kpi Read on topic p.encounters");
        assert!(r.extra.is_empty());
    }

    #[test]
    fn wildcards_all_and_prefixes_grant_and_a_deny_wins() {
        let (b, topics) = derived();
        let kpi_read = b.iter().find(|x| x.principal == "svc-kpi" && x.operation == Operation::Read).unwrap().clone();
        let others: Vec<Binding> = b.iter().filter(|x| **x != kpi_read).cloned().collect();
        for grant in [
            allow("svc-kpi", Resource::Topic, "*", false, AclOperation::Op(Operation::Read)),
            allow("svc-kpi", Resource::Topic, "p.", true, AclOperation::Op(Operation::Read)),
            allow("*", Resource::Topic, "p.encounters", false, AclOperation::All),
        ] {
            let mut acls = as_applied(&others);
            acls.push(grant.clone());
            assert!(review_acls(&b, &topics, &acls, false).missing.is_empty(), "{grant}");
        }
        // ALTER_CONFIGS implies DESCRIBE_CONFIGS; DESCRIBE implies nothing.
        let dc =
            b.iter().find(|x| x.principal == "svc-kpi" && x.operation == Operation::DescribeConfigs).unwrap().clone();
        let rest: Vec<Binding> = b.iter().filter(|x| **x != dc).cloned().collect();
        let mut acls = as_applied(&rest);
        acls.push(allow("svc-kpi", Resource::Topic, &dc.name, false, AclOperation::Describe));
        assert_eq!(review_acls(&b, &topics, &acls, false).missing.len(), 1);
        acls.push(allow("svc-kpi", Resource::Topic, &dc.name, false, AclOperation::AlterConfigs));
        assert!(review_acls(&b, &topics, &acls, false).missing.is_empty());
        // A literal group ACL does not cover a prefixed binding; a shorter prefix does.
        let group = b.iter().find(|x| x.principal == "svc-kpi" && x.resource == Resource::Group).unwrap().clone();
        let rest: Vec<Binding> = b.iter().filter(|x| **x != group).cloned().collect();
        let mut acls = as_applied(&rest);
        acls.push(allow("svc-kpi", Resource::Group, "svc-kpi", false, AclOperation::Op(Operation::Read)));
        assert_eq!(review_acls(&b, &topics, &acls, false).missing.len(), 1);
        acls.push(allow("svc-kpi", Resource::Group, "svc-", true, AclOperation::Op(Operation::Read)));
        assert!(review_acls(&b, &topics, &acls, false).missing.is_empty());
        // A deny on the topic blocks the allow, from any host.
        let mut acls = as_applied(&b);
        let mut deny = allow("svc-kpi", Resource::Topic, "p.encounters", false, AclOperation::Op(Operation::Read));
        deny.allow = false;
        deny.host = "10.0.0.9".into();
        acls.push(deny);
        let r = review_acls(&b, &topics, &acls, false);
        assert_eq!(r.missing.len(), 1);
        assert!(r.missing[0].1.starts_with("denied by User:svc-kpi denies"), "{}", r.missing[0].1);
        // A host-restricted allow does not count.
        let mut acls = as_applied(&others);
        let mut from_one_host = kpi_read.clone();
        from_one_host.prefixed = false;
        let mut a = as_applied(std::slice::from_ref(&from_one_host)).remove(0);
        a.host = "10.0.0.9".into();
        acls.push(a);
        assert_eq!(review_acls(&b, &topics, &acls, false).missing.len(), 1);
    }

    #[test]
    fn grants_beyond_the_derived_ones_are_extra() {
        let (b, topics) = derived();
        for broader in [
            // A hospital reading encounters (everyone's).
            allow("hospital-h001", Resource::Topic, "p.encounters", false, AclOperation::Op(Operation::Read)),
            // A service allowed everything on a prefix.
            allow("svc-kpi", Resource::Topic, "p.", true, AclOperation::All),
            // Anyone writing round control.
            allow("*", Resource::Topic, "p.rounds", false, AclOperation::Op(Operation::Write)),
        ] {
            let mut acls = as_applied(&b);
            acls.push(broader.clone());
            let r = review_acls(&b, &topics, &acls, false);
            assert!(r.missing.is_empty());
            assert_eq!(r.extra, vec![broader]);
        }
        // A hospital missing from the federation's list (revoked) keeps a grant: extra
        // when the list is the whole federation, not judged otherwise.
        let mut acls = as_applied(&b);
        let left_behind =
            allow("hospital-h009", Resource::Topic, "p.encounters", false, AclOperation::Op(Operation::Write));
        acls.push(left_behind.clone());
        assert_eq!(review_acls(&b, &topics, &acls, true).extra, vec![left_behind]);
        assert!(review_acls(&b, &topics, &acls, false).extra.is_empty());
        // DESCRIBE is not broader than READ or WRITE.
        let mut acls = as_applied(&b);
        acls.push(allow("svc-kpi", Resource::Topic, "p.encounters", false, AclOperation::Describe));
        assert!(review_acls(&b, &topics, &acls, false).extra.is_empty());
    }

    #[test]
    fn unknown_principals_and_writerless_topics_are_refused() {
        assert!(access(&["hospitals"], &["nobody"]).validate().unwrap_err().contains("nobody"));
        assert!(access(&[], &["kpi"]).validate().unwrap_err().contains("writer"));
        assert!(access(&["every-service"], &["ops"]).validate().is_ok());
    }
}
