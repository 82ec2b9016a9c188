//! `guardian accountant`: the privacy accountant service until SIGTERM.

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::AccountantArgs;

pub async fn run(args: AccountantArgs) -> Result<ExitCode> {
    let config = args.validate()?;
    guardian_accountant::serve(config, guardian_runtime::Shutdown::on_signals()).await?;
    Ok(ExitCode::SUCCESS)
}
