//! `guardian topics apply|verify|list|acls`.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use guardian_topics::{access, plan};

use crate::cli::TopicsCommand;
use crate::common;

pub async fn run(cmd: TopicsCommand) -> Result<ExitCode> {
    match cmd {
        TopicsCommand::List { topics_dir, topic_prefix } => {
            let catalogue = guardian_kafka::connect::catalogue(topics_dir.as_deref(), &topic_prefix)?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{:<34} {:<18} {:>5} {:>3}  {:<8} VALUE SCHEMA", "TOPIC", "ROLE", "PARTS", "RF", "CLEANUP")?;
            for spec in catalogue.specs() {
                writeln!(
                    out,
                    "{:<34} {:<18} {:>5} {:>3}  {:<8} {}",
                    catalogue.name_of(spec),
                    spec.role,
                    spec.partitions,
                    spec.replication_factor,
                    spec.config.get("cleanup.policy").map(String::as_str).unwrap_or("delete"),
                    spec.value_schema
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
        TopicsCommand::Acls { topics_dir, topic_prefix, hospitals, json } => {
            if let Some(bad) = hospitals
                .iter()
                .find(|h| h.is_empty() || !h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            {
                anyhow::bail!("invalid hospital id {bad:?}: letters, digits, '-' and '_' only");
            }
            let catalogue = guardian_kafka::connect::catalogue(topics_dir.as_deref(), &topic_prefix)?;
            let rules = access::bindings(catalogue.specs().map(|s| (catalogue.name_of(s), &s.access)), &hospitals);
            let mut out = std::io::stdout().lock();
            if json {
                for b in &rules {
                    let rule = serde_json::json!({
                        "principal": format!("User:{}", b.principal),
                        "resource": format!("{:?}", b.resource),
                        "pattern": if b.prefixed { "prefixed" } else { "literal" },
                        "name": b.name,
                        "operation": format!("{:?}", b.operation),
                    });
                    writeln!(out, "{rule}")?;
                }
            } else {
                for line in access::kafka_acls_lines(&rules) {
                    writeln!(out, "{line}")?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        TopicsCommand::Apply { kafka, dry_run } => {
            let catalogue = common::kafka_catalogue(&kafka)?;
            let admin = common::admin(&kafka).await?;
            let names: Vec<String> = catalogue.specs().map(|s| catalogue.name_of(s)).collect();
            let view = admin.observe(&names).await?;
            let p = plan(&catalogue, &view.topics, view.brokers);
            for note in &p.notes {
                println!("note: {note}");
            }
            for change in &p.changes {
                println!("{change}");
            }
            for drift in &p.drift {
                println!("{drift}");
            }
            if p.changes.is_empty() {
                println!("topics: {} in sync, nothing to change", names.len());
            } else if dry_run {
                println!("topics: {} change(s) planned (dry run, nothing changed)", p.changes.len());
            } else {
                admin.apply(&p).await?;
                println!("topics: applied {} change(s)", p.changes.len());
            }
            if let Some(client) = kafka.registry_client()? {
                let subjects = guardian_registry::subjects(&catalogue, guardian_schemas::Registry::embedded())?;
                let outcomes = guardian_registry::sync(&client, &subjects, dry_run).await?;
                for o in &outcomes {
                    println!("{o}");
                }
                let new = outcomes.iter().filter(|o| o.new).count();
                let verb = if dry_run { "to register (dry run)" } else { "registered" };
                println!("schemas: {} subjects at {}, {new} {verb}", outcomes.len(), client.url());
            }
            // Drift needs a person: apply succeeded for the rest, but say so in the exit code.
            Ok(if p.drift.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(3) })
        }
        TopicsCommand::Verify { kafka } => {
            let catalogue = common::kafka_catalogue(&kafka)?;
            let admin = common::admin(&kafka).await?;
            let names: Vec<String> = catalogue.specs().map(|s| catalogue.name_of(s)).collect();
            let view = admin.observe(&names).await?;
            let p = plan(&catalogue, &view.topics, view.brokers);
            let mut lines: Vec<String> = p.changes.iter().map(|c| c.to_string()).collect();
            lines.extend(p.drift.iter().map(|d| d.to_string()));
            if let Some(client) = kafka.registry_client()? {
                let subjects = guardian_registry::subjects(&catalogue, guardian_schemas::Registry::embedded())?;
                lines.extend(guardian_registry::differences(&client, &subjects).await?);
            }
            if lines.is_empty() {
                let subjects = if kafka.schema_registry_url.is_some() { " and their schema subjects" } else { "" };
                println!("topics: all {} topics{subjects} match the catalogue", names.len());
                return Ok(ExitCode::SUCCESS);
            }
            anyhow::bail!("{} topic difference(s) from the catalogue: {}", lines.len(), lines.join("; "))
        }
    }
}
