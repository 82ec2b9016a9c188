//! `guardian accountant`: checks its topics, then runs the privacy accountant service
//! with /metrics, /healthz and /readyz until SIGTERM.

use std::process::ExitCode;

use anyhow::Result;
use guardian_accountant::publish::Destinations;
use guardian_accountant::{Config, Limits};
use guardian_topics::TopicId;

use crate::cli::AccountantArgs;
use crate::common;

pub async fn run(args: AccountantArgs) -> Result<ExitCode> {
    let limits =
        Limits { hospital_epsilon: args.hospital_epsilon, global_epsilon: args.global_epsilon, delta: args.delta };
    limits.validate()?;
    let signers = common::signers(args.signers.as_deref())?;
    let (shutdown, readiness, bound) = common::serve_ops(args.listen, None).await?;
    let catalogue = common::kafka_catalogue(&args.kafka)?;
    let admin = common::admin(&args.kafka).await?;
    let needed = [TopicId::BudgetSpend, TopicId::BudgetStatus, TopicId::PrivacyAlerts, TopicId::DeadLetter];
    common::require_topics(&admin, &catalogue, &needed).await?;
    let pool = guardian_pg::connect(&args.database_url, 4).await?;
    let config = Config {
        kafka: common::settings(&args.kafka, "privacy-accountant"),
        group: args.group,
        spend_topic: catalogue.topic(TopicId::BudgetSpend)?,
        dead_letter_topic: catalogue.topic(TopicId::DeadLetter)?,
        destinations: Destinations {
            status_topic: catalogue.topic(TopicId::BudgetStatus)?,
            alerts_topic: catalogue.topic(TopicId::PrivacyAlerts)?,
        },
        limits,
        signers,
    };
    tracing::info!(metrics = %format!("http://{bound}/metrics"), spend = %config.spend_topic, "privacy accountant starting");
    readiness.set_ready(true);
    guardian_accountant::run(config, pool, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}
