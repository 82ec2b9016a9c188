//! `guardian db migrate` and `guardian db role`.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use guardian_pg::tenancy;
use rand::RngCore;

use crate::cli::{RoleCommand, RolePassword};

/// Per-hospital tables a tenant role reads (its own rows only), as each service names them.
pub fn tenant_tables() -> Vec<&'static str> {
    [guardian_kpi::TENANT_TABLES.as_slice(), guardian_accountant::store::TENANT_TABLES.as_slice()].concat()
}

pub async fn migrate(url: &str) -> Result<ExitCode> {
    let pool = guardian_pg::connect(url, 2).await?;
    migrate_schema(&pool).await?;
    println!(
        "db: schema up to date ({}); row-level security on {}; aggregate view {}",
        guardian_pg::connect::redact(url),
        tenant_tables().join(", "),
        guardian_kpi::store::AGGREGATE_VIEW
    );
    Ok(ExitCode::SUCCESS)
}

/// Every service's tables, row-level security and the aggregate view.
pub(crate) async fn migrate_schema(pool: &sqlx::PgPool) -> Result<()> {
    guardian_pg::offsets::migrate(pool).await?;
    guardian_accountant::store::migrate(pool).await.context("privacy tables")?;
    guardian_kpi::migrate(pool).await.context("KPI tables")?;
    tenancy::apply(pool, &tenant_tables(), &[guardian_kpi::store::AGGREGATE_VIEW])
        .await
        .context("row-level security")?;
    Ok(())
}

/// The password from the file (trailing newline removed), or a new random one.
fn password(p: &RolePassword) -> Result<(String, bool)> {
    match &p.password_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let pw = text.trim_end_matches(['\n', '\r']).to_string();
            if pw.len() < 16 {
                bail!("the password in {} is shorter than 16 characters", path.display());
            }
            Ok((pw, false))
        }
        None => {
            let mut bytes = [0u8; 24];
            rand::rng().fill_bytes(&mut bytes);
            Ok((bytes.iter().map(|b| format!("{b:02x}")).collect(), true))
        }
    }
}

pub async fn role(cmd: RoleCommand) -> Result<ExitCode> {
    match cmd {
        RoleCommand::Tenant { role, hospital, password: p } => {
            let (pw, generated) = password(&p)?;
            let pool = guardian_pg::connect(&p.database_url, 1).await?;
            migrate_first(&pool).await?;
            tenancy::add_tenant(&pool, &role, &hospital, &pw).await?;
            println!("db: role {role} reads only hospital {hospital}'s rows");
            if generated {
                println!("password (shown once): {pw}");
            }
        }
        RoleCommand::ApiToken { role } => {
            if !tenancy::valid_role(&role) {
                bail!("invalid role name {role:?}");
            }
            let token = guardian_dashboard::tokens::new_token();
            println!("token (shown once): {token}");
            println!("tokens file line:   \"{}\" = \"{role}\"", guardian_dashboard::tokens::digest(&token));
        }
        RoleCommand::OperatorToken { name } => {
            if name.is_empty() || name.len() > 64 || name.contains(['"', '\\', '\n']) {
                bail!("invalid operator name {name:?} (1 to 64 characters, no quotes)");
            }
            let token = guardian_dashboard::tokens::new_token();
            println!("token (shown once): {token}");
            println!("[operators] line:   \"{}\" = \"{name}\"", guardian_dashboard::tokens::digest(&token));
        }
        RoleCommand::Aggregate { role, password: p } => {
            let (pw, generated) = password(&p)?;
            let pool = guardian_pg::connect(&p.database_url, 1).await?;
            migrate_first(&pool).await?;
            tenancy::add_aggregate_reader(&pool, &role, &pw).await?;
            println!("db: role {role} reads only the aggregate views");
            if generated {
                println!("password (shown once): {pw}");
            }
        }
        RoleCommand::Remove { role, database_url } => {
            let pool = guardian_pg::connect(&database_url, 1).await?;
            if tenancy::remove(&pool, &role).await? {
                println!("db: role {role} dropped");
            } else {
                println!("db: no role {role}");
            }
        }
        RoleCommand::List { database_url } => {
            let pool = guardian_pg::connect(&database_url, 1).await?;
            migrate_first(&pool).await?;
            for (role, hospital) in tenancy::list(&pool).await? {
                println!("{role}\t{hospital}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Roles need the tables and policies in place.
async fn migrate_first(pool: &sqlx::PgPool) -> Result<()> {
    if !tenancy::ready(pool).await.context("database")? {
        bail!("the schema has no tenant_roles table: run `guardian db migrate` first");
    }
    Ok(())
}
