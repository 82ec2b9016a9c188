//! `guardian archive` and `guardian restore`: topics to S3 segments and back.

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::{ArchiveArgs, RestoreArgs};

pub async fn archive(args: ArchiveArgs) -> Result<ExitCode> {
    let args = args.validate()?;
    guardian_archiver::serve(args, guardian_runtime::Shutdown::on_signals()).await?;
    Ok(ExitCode::SUCCESS)
}

pub async fn restore(args: RestoreArgs) -> Result<ExitCode> {
    guardian_archiver::restore_range(args).await?;
    Ok(ExitCode::SUCCESS)
}
