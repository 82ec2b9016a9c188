//! `guardian bench kafka` (filled in below).
use std::process::ExitCode;

use anyhow::Result;

use crate::cli::BenchKafkaArgs;

pub async fn kafka(_args: BenchKafkaArgs) -> Result<ExitCode> {
    anyhow::bail!("not built yet")
}
