//! One module per subcommand.

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::{AgentCommand, ChaosCommand, Cli, Command, DbCommand, PrivacyCommand};

mod accountant;
mod archive;
mod chaos;
mod db;
mod demo;
mod encounters;
mod fl;
mod kpi;
mod privacy;
pub mod simulate;
mod tail;
mod topics;

pub async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Topics(cmd) => topics::run(cmd).await,
        Command::Agent(AgentCommand::Encounters(args)) => encounters::run(args).await,
        Command::Agent(AgentCommand::Simulate(args)) => {
            let sent = simulate::run(args, guardian_runtime::Shutdown::on_signals()).await?;
            println!(
                "simulate: sent {} encounters ({} undecodable), {} SLO events, {} budget spends",
                sent.encounters, sent.poison, sent.slo, sent.spends
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Tail(args) => tail::run(args).await,
        Command::Db(DbCommand::Migrate { database_url }) => db::migrate(&database_url).await,
        Command::Db(DbCommand::Role(cmd)) => db::role(cmd).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Accountant(args) => accountant::run(args).await,
        Command::Replay(cmd) => Ok(guardian_dr::replay::run(cmd).await?),
        Command::Privacy(PrivacyCommand::Audit(args)) => privacy::audit(args).await,
        Command::Privacy(cmd) => privacy::run(cmd),
        Command::Fl(cmd) => fl::run(cmd).await,
        Command::Archive(args) => archive::archive(args).await,
        Command::Kpi(args) => kpi::run(args).await,
        Command::Slo(args) => kpi::slo(args).await,
        Command::Dashboard(args) => kpi::dashboard(args).await,
        Command::Pilot(cmd) => kpi::pilot(cmd).await,
        Command::Dr(cmd) => Ok(guardian_dr::failover::run(cmd).await?),
        Command::Restore(args) => archive::restore(args).await,
        Command::Chaos(ChaosCommand::Run(args)) => chaos::run(args).await,
        Command::Doctor(args) => {
            let reads = guardian_doctor::ServiceReads {
                tenant_tables: db::tenant_tables(),
                budget_levels: Box::new(|pool| {
                    Box::pin(async move { guardian_accountant::store::budget_levels(&pool).await })
                }),
            };
            Ok(guardian_doctor::run(args, reads).await)
        }
    }
}
