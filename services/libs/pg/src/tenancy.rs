//! Tenant scoping in PostgreSQL: a hospital's login roles read only that hospital's rows
//! of the per-hospital tables (row-level security), and the aggregate role reads only
//! views that aggregate across hospitals.
//!
//! - `guardian_tenant` (NOLOGIN group): SELECT on the per-hospital tables, with a
//!   policy per table `hospital_id = the hospital of current_user`. Its members are one
//!   LOGIN role per hospital token, mapped to the hospital in `tenant_roles` (itself
//!   under RLS: a tenant sees only its own mapping).
//! - `guardian_aggregate` (NOLOGIN group): SELECT on the aggregate views only.
//! - The services own the tables and write as their owner, which RLS does not restrict.
//!
//! Roles are cluster-wide; the tables are those of the current `search_path`.

use sqlx::{PgPool, Row};

pub const TENANT_GROUP: &str = "guardian_tenant";
pub const AGGREGATE_GROUP: &str = "guardian_aggregate";

/// Errors of tenant administration.
#[derive(Debug, thiserror::Error)]
pub enum TenancyError {
    #[error("invalid role name {0:?}: use 1-63 lower-case letters, digits and underscores, starting with a letter")]
    BadRole(String),
    #[error("invalid hospital id {0:?}")]
    BadHospital(String),
    #[error("role {0} exists and is not a guardian tenant role: refusing to touch it")]
    ForeignRole(String),
    #[error("table {0} has no hospital_id column: it cannot be scoped per hospital")]
    NotPerHospital(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

pub fn valid_role(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z'))
        && name.len() <= 63
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
        && !name.starts_with("pg_")
}

fn valid_hospital(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Creates the group roles and the mapping table (idempotent).
async fn ensure_groups(pool: &PgPool) -> Result<(), TenancyError> {
    for group in [TENANT_GROUP, AGGREGATE_GROUP] {
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(group)
            .fetch_one(pool)
            .await?;
        if !exists {
            // Two migrations racing: the loser's CREATE fails with duplicate_object.
            if let Err(e) = sqlx::raw_sql(&format!("CREATE ROLE {group} NOLOGIN")).execute(pool).await
                && e.as_database_error().is_none_or(|d| d.code().as_deref() != Some("42710"))
            {
                return Err(e.into());
            }
        }
    }
    sqlx::raw_sql(&format!(
        "CREATE TABLE IF NOT EXISTS tenant_roles (
             role_name   text PRIMARY KEY,
             hospital_id text NOT NULL,
             created_at  timestamptz NOT NULL DEFAULT now()
         );
         ALTER TABLE tenant_roles ENABLE ROW LEVEL SECURITY;
         DROP POLICY IF EXISTS own_mapping ON tenant_roles;
         CREATE POLICY own_mapping ON tenant_roles FOR SELECT TO {TENANT_GROUP} USING (role_name = current_user);
         GRANT SELECT ON tenant_roles TO {TENANT_GROUP};"
    ))
    .execute(pool)
    .await?;
    let schema: String = sqlx::query_scalar("SELECT current_schema()").fetch_one(pool).await?;
    sqlx::raw_sql(&format!(
        "GRANT USAGE ON SCHEMA \"{}\" TO {TENANT_GROUP}, {AGGREGATE_GROUP}",
        schema.replace('"', "\"\"")
    ))
    .execute(pool)
    .await?;
    Ok(())
}

/// Whether the tenancy tables exist (`guardian db migrate` ran).
pub async fn ready(pool: &PgPool) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT to_regclass('tenant_roles') IS NOT NULL").fetch_one(pool).await
}

/// Scopes each of `tables` (each with a `hospital_id` column) to the tenant's hospital,
/// and grants `views` (aggregates) to the aggregate role. Idempotent.
pub async fn apply(pool: &PgPool, tables: &[&str], views: &[&str]) -> Result<(), TenancyError> {
    ensure_groups(pool).await?;
    for table in tables {
        let has_column: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = $1 AND column_name = 'hospital_id')",
        )
        .bind(table)
        .fetch_one(pool)
        .await?;
        if !has_column {
            return Err(TenancyError::NotPerHospital(table.to_string()));
        }
        sqlx::raw_sql(&format!(
            "ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;
             DROP POLICY IF EXISTS own_hospital ON {table};
             CREATE POLICY own_hospital ON {table} FOR SELECT TO {TENANT_GROUP}
                 USING (hospital_id IN (SELECT hospital_id FROM tenant_roles WHERE role_name = current_user));
             GRANT SELECT ON {table} TO {TENANT_GROUP};"
        ))
        .execute(pool)
        .await?;
    }
    for view in views {
        sqlx::raw_sql(&format!("GRANT SELECT ON {view} TO {AGGREGATE_GROUP}")).execute(pool).await?;
    }
    Ok(())
}

/// Who a role is: a tenant of a hospital, an aggregate reader, or neither.
async fn membership(pool: &PgPool, role: &str) -> Result<Option<(bool, bool)>, TenancyError> {
    let row = sqlx::query(
        "SELECT pg_has_role(r.oid, $2, 'MEMBER') AS tenant, pg_has_role(r.oid, $3, 'MEMBER') AS aggregate
           FROM pg_roles r WHERE r.rolname = $1",
    )
    .bind(role)
    .bind(TENANT_GROUP)
    .bind(AGGREGATE_GROUP)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| (r.get("tenant"), r.get("aggregate"))))
}

/// Creates (or updates the password of) a LOGIN role that reads only `hospital`'s rows.
pub async fn add_tenant(pool: &PgPool, role: &str, hospital: &str, password: &str) -> Result<(), TenancyError> {
    add_login(pool, role, password, TENANT_GROUP).await?;
    if !valid_hospital(hospital) {
        return Err(TenancyError::BadHospital(hospital.to_string()));
    }
    sqlx::query(
        "INSERT INTO tenant_roles (role_name, hospital_id) VALUES ($1, $2)
         ON CONFLICT (role_name) DO UPDATE SET hospital_id = EXCLUDED.hospital_id",
    )
    .bind(role)
    .bind(hospital)
    .execute(pool)
    .await?;
    // The login that administers tenants (and serves the dashboard) may act as the tenant
    // (`SET ROLE`) to answer that hospital's API token with its own rows only.
    sqlx::raw_sql(&format!("GRANT {role} TO CURRENT_USER")).execute(pool).await?;
    Ok(())
}

/// Runs `sql` as `role` (which must be a tenant role this login is a member of) in a
/// read-only transaction: row-level security filters what it sees.
pub async fn query_as_tenant(pool: &PgPool, role: &str, sql: &str) -> Result<Vec<sqlx::postgres::PgRow>, TenancyError> {
    if !valid_role(role) {
        return Err(TenancyError::BadRole(role.to_string()));
    }
    let mut tx = pool.begin().await?;
    let conn: &mut sqlx::PgConnection = &mut tx;
    sqlx::query("SET TRANSACTION READ ONLY").execute(&mut *conn).await?;
    let set_role = format!("SET LOCAL ROLE {role}");
    sqlx::query(&set_role).execute(&mut *conn).await?;
    let rows = sqlx::query(sql).fetch_all(&mut *conn).await?;
    tx.rollback().await?;
    Ok(rows)
}

/// Creates (or updates the password of) a LOGIN role that reads only the aggregate views.
pub async fn add_aggregate_reader(pool: &PgPool, role: &str, password: &str) -> Result<(), TenancyError> {
    add_login(pool, role, password, AGGREGATE_GROUP).await
}

async fn add_login(pool: &PgPool, role: &str, password: &str, group: &str) -> Result<(), TenancyError> {
    if !valid_role(role) {
        return Err(TenancyError::BadRole(role.to_string()));
    }
    let verb = match membership(pool, role).await? {
        None => "CREATE",
        Some((tenant, aggregate)) if tenant || aggregate => "ALTER",
        Some(_) => return Err(TenancyError::ForeignRole(role.to_string())),
    };
    // The statement is built by the server (format %I / %L), so the password needs no
    // quoting here and never lands in a log line of ours.
    let sql: String = sqlx::query_scalar(&format!(
        "SELECT format('{verb} ROLE %I LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %L', $1::text, $2::text)"
    ))
    .bind(role)
    .bind(password)
    .fetch_one(pool)
    .await?;
    sqlx::raw_sql(&sql).execute(pool).await?;
    sqlx::raw_sql(&format!("GRANT {group} TO {role}")).execute(pool).await?;
    Ok(())
}

/// Drops a tenant or aggregate role and its mapping. Returns whether it existed.
pub async fn remove(pool: &PgPool, role: &str) -> Result<bool, TenancyError> {
    if !valid_role(role) {
        return Err(TenancyError::BadRole(role.to_string()));
    }
    match membership(pool, role).await? {
        None => return Ok(false),
        Some((false, false)) => return Err(TenancyError::ForeignRole(role.to_string())),
        Some(_) => {}
    }
    sqlx::query("DELETE FROM tenant_roles WHERE role_name = $1").bind(role).execute(pool).await?;
    sqlx::raw_sql(&format!("DROP ROLE {role}")).execute(pool).await?;
    Ok(true)
}

/// Tenant roles and their hospitals, by role name.
pub async fn list(pool: &PgPool) -> Result<Vec<(String, String)>, TenancyError> {
    let rows =
        sqlx::query("SELECT role_name, hospital_id FROM tenant_roles ORDER BY role_name").fetch_all(pool).await?;
    Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_are_plain_identifiers() {
        assert!(valid_role("hospital_h001"));
        assert!(valid_role("t1"));
        for bad in ["", "1abc", "H001", "a-b", "a b", "a;drop", "pg_monitor", &"a".repeat(64)] {
            assert!(!valid_role(bad), "{bad:?}");
        }
    }

    #[test]
    fn hospital_ids_are_plain() {
        assert!(valid_hospital("h001") && valid_hospital("h101-run_2"));
        assert!(!valid_hospital("") && !valid_hospital("h'1") && !valid_hospital("a b"));
    }
}
