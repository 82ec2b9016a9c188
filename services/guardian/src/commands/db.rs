//! `guardian db migrate`.

use std::process::ExitCode;

use anyhow::Result;

pub async fn migrate(url: &str) -> Result<ExitCode> {
    let pool = guardian_pg::connect(url, 2).await?;
    guardian_pg::offsets::migrate(&pool).await?;
    println!("db: schema up to date ({})", guardian_pg::connect::redact(url));
    Ok(ExitCode::SUCCESS)
}
