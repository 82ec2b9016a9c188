//! One name source for every process that talks to Kafka.
//!
//! A [`ServiceId`] derives the Kafka principal, the consumer group, the client id and
//! the transactional ids of a service, so they always fall under the ACLs that
//! [`crate::access::bindings`] derives for that principal (groups and transactional ids
//! prefixed with the principal's own name). Hospital agents are named by
//! [`hospital_principal`]. Nothing here does I/O.

use std::fmt;

/// A service (or ops tool) of the platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ServiceId {
    Accountant,
    Kpi,
    Slo,
    Aggregator,
    Archiver,
    Dashboard,
    Ops,
}

impl ServiceId {
    /// Every service, in a fixed order.
    pub const ALL: [ServiceId; 7] = [
        ServiceId::Accountant,
        ServiceId::Kpi,
        ServiceId::Slo,
        ServiceId::Aggregator,
        ServiceId::Archiver,
        ServiceId::Dashboard,
        ServiceId::Ops,
    ];

    /// The name topic files use in `[access]` (`accountant`, `kpi`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            ServiceId::Accountant => "accountant",
            ServiceId::Kpi => "kpi",
            ServiceId::Slo => "slo",
            ServiceId::Aggregator => "aggregator",
            ServiceId::Archiver => "archiver",
            ServiceId::Dashboard => "dashboard",
            ServiceId::Ops => "ops",
        }
    }

    /// The service's Kafka principal (SASL user): `svc-<name>`.
    pub fn principal(self) -> String {
        format!("svc-{}", self.name())
    }

    /// Its consumer group (also the key of offsets kept in PostgreSQL): the principal.
    pub fn group(self) -> String {
        self.principal()
    }

    /// A consumer group of one of its tools or instances, still under its principal.
    pub fn group_for(self, role: &str) -> String {
        format!("{}-{role}", self.principal())
    }

    /// Its client id (librdkafka appends the client's role: `-producer`, `-consumer`).
    pub fn client_id(self) -> String {
        self.principal()
    }

    /// A client id for one role of the service (a tool, a reader).
    pub fn client_for(self, role: &str) -> String {
        format!("{}-{role}", self.principal())
    }

    /// A transactional id of the service: `scope` names what it fences (one outbox, one
    /// pipeline); two processes with the same id fence each other.
    pub fn transactional_id(self, scope: &str) -> String {
        format!("{}-{scope}", self.principal())
    }
}

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The Kafka principal of a hospital agent.
pub fn hospital_principal(hospital: &str) -> String {
    format!("hospital-{hospital}")
}

/// A client id of one role of a hospital's agent, under its principal.
pub fn hospital_client(hospital: &str, role: &str) -> String {
    format!("{}-{role}", hospital_principal(hospital))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::{Access, Operation, Resource, bindings};

    /// Every name a service derives falls under an ACL its principal is given.
    #[test]
    fn derived_names_are_allowed_by_the_derived_acls() {
        let access = Access { write: vec!["every-service".into()], read: vec!["every-service".into()] };
        let rules = bindings([("t".to_string(), &access)], &["h001".to_string()]);
        let allowed = |principal: &str, resource: Resource, name: &str, op: Operation| {
            rules.iter().any(|b| {
                b.principal == principal
                    && b.resource == resource
                    && b.operation == op
                    && if b.prefixed { name.starts_with(&b.name) } else { name == b.name }
            })
        };
        for s in ServiceId::ALL.into_iter().filter(|s| crate::access::SERVICES.contains(&s.name())) {
            let p = s.principal();
            assert!(allowed(&p, Resource::Group, &s.group(), Operation::Read), "{s}: group");
            assert!(allowed(&p, Resource::Group, &s.group_for("x"), Operation::Read), "{s}: group_for");
            let tx = s.transactional_id("outbox");
            assert!(allowed(&p, Resource::TransactionalId, &tx, Operation::Write), "{s}: transactional id");
        }
        assert!(allowed(&hospital_principal("h001"), Resource::Topic, "t", Operation::Write));
    }

    #[test]
    fn names_match_the_principal_kinds_of_topic_files() {
        for s in ServiceId::ALL {
            assert!(crate::access::PRINCIPAL_KINDS.contains(&s.name()) || s == ServiceId::Archiver, "{s}");
        }
    }
}
