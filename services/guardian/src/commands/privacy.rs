//! `guardian privacy epsilon|rounds-left|noise`: the accountant's math for operators.
//! Pure computation, no cluster needed.

use std::process::ExitCode;

use anyhow::{Result, bail};
use guardian_privacy::inverse::UNBOUNDED_ROUNDS;
use guardian_privacy::pld::PldAccountant;
use guardian_privacy::{RdpAccountant, SampledGaussian, noise_for_target, rounds_left};
use serde_json::json;

use crate::cli::{AccountantArg, PrivacyCommand, ScheduleArgs};

fn schedule(args: &ScheduleArgs) -> Result<Vec<SampledGaussian>> {
    let (q, s, t) = (&args.sampling_rates, &args.noise_multipliers, &args.steps);
    if q.len() != s.len() || q.len() != t.len() {
        bail!(
            "each group needs one --sampling-rate, one --noise-multiplier and one --steps \
             (got {}, {} and {})",
            q.len(),
            s.len(),
            t.len()
        );
    }
    Ok(q.iter()
        .zip(s)
        .zip(t)
        .map(|((&q, &s), &t)| SampledGaussian { sampling_rate: q, noise_multiplier: s, count: t })
        .collect())
}

fn groups_json(events: &[SampledGaussian]) -> Vec<serde_json::Value> {
    events
        .iter()
        .map(|e| json!({"sampling_rate": e.sampling_rate, "noise_multiplier": e.noise_multiplier, "steps": e.count}))
        .collect()
}

fn composed(events: &[SampledGaussian]) -> Result<RdpAccountant> {
    let mut acc = RdpAccountant::default();
    for e in events {
        acc.compose(e)?;
    }
    Ok(acc)
}

pub fn run(cmd: PrivacyCommand) -> Result<ExitCode> {
    match cmd {
        PrivacyCommand::Epsilon { schedule: args, delta, accountant: AccountantArg::Pld, json } => {
            let events = schedule(&args)?;
            let mut acc = PldAccountant::default();
            for e in &events {
                acc.compose(e)?;
            }
            let eps = acc.epsilon(delta)?;
            if json {
                println!(
                    "{}",
                    json!({"accountant": "pld", "epsilon": eps, "delta": delta, "groups": groups_json(&events)})
                );
            } else {
                println!("epsilon {eps:.6} at delta {delta:e} (PLD, discretization 1e-4, pessimistic)");
            }
        }
        PrivacyCommand::Epsilon { schedule: args, delta, accountant: AccountantArg::Rdp, json } => {
            let events = schedule(&args)?;
            let (eps, order) = composed(&events)?.epsilon(delta)?;
            if json {
                let groups: Vec<_> = events
                    .iter()
                    .map(|e| json!({"sampling_rate": e.sampling_rate, "noise_multiplier": e.noise_multiplier, "steps": e.count}))
                    .collect();
                println!(
                    "{}",
                    json!({"accountant": "rdp", "epsilon": eps, "delta": delta, "order": order, "groups": groups})
                );
            } else {
                println!("epsilon {eps:.6} at delta {delta:e} (RDP, optimal order {order})");
            }
        }
        PrivacyCommand::RoundsLeft { sampling_rate, noise_multiplier, budget, delta, spent, json } => {
            let spent: Vec<SampledGaussian> = spent
                .into_iter()
                .map(|(q, s, t)| SampledGaussian { sampling_rate: q, noise_multiplier: s, count: t })
                .collect();
            let acc = composed(&spent)?;
            let (spent_eps, _) = acc.epsilon(delta)?;
            let step = SampledGaussian { sampling_rate, noise_multiplier, count: 1 };
            let left = rounds_left(&acc, &step, delta, budget)?;
            let unbounded = left == UNBOUNDED_ROUNDS;
            if json {
                println!(
                    "{}",
                    json!({"rounds_left": if unbounded { None } else { Some(left) }, "unbounded": unbounded,
                           "spent_epsilon": spent_eps, "budget": budget, "delta": delta})
                );
            } else if unbounded {
                println!(
                    "unbounded: rounds at q = {sampling_rate} spend no privacy (spent so far: epsilon {spent_eps:.6})"
                );
            } else {
                println!(
                    "{left} more round(s) at q = {sampling_rate}, sigma = {noise_multiplier} fit under epsilon {budget} \
                     (spent so far: epsilon {spent_eps:.6} at delta {delta:e})"
                );
            }
        }
        PrivacyCommand::Audit(_) => unreachable!("audit is dispatched to commands::audit"),
        PrivacyCommand::Noise { sampling_rate, steps, epsilon, delta, json } => {
            let sigma = noise_for_target(sampling_rate, steps, delta, epsilon)?;
            if json {
                println!(
                    "{}",
                    json!({"noise_multiplier": sigma, "sampling_rate": sampling_rate, "steps": steps, "epsilon": epsilon, "delta": delta})
                );
            } else {
                println!(
                    "noise multiplier {sigma:.6} keeps {steps} round(s) at q = {sampling_rate} within epsilon {epsilon} at delta {delta:e}"
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Exit code when a budget is at or above `--fail-on`.
const EXIT_BUDGET: u8 = 4;

/// `guardian privacy audit`: the reports, and exit code 4 when a budget reached `--fail-on`.
pub async fn audit(args: crate::cli::AuditArgs) -> Result<ExitCode> {
    let outcome = guardian_accountant::audit::run(args).await?;
    if outcome.failing.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("audit: budget(s) at or above --fail-on: {}", outcome.failing.join(", "));
        Ok(ExitCode::from(EXIT_BUDGET))
    }
}
