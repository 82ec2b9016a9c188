//! Connecting with errors a person can act on: which server, which database, which user,
//! what went wrong; never the password.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum PgConnectError {
    #[error("invalid database url {url}: {error}")]
    Url { url: String, error: String },
    #[error("cannot connect to postgres at {target}: {error}")]
    Connect { target: String, error: String },
}

/// `postgres://user:***@host:port/db`
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..scheme + 3], user, &url[at..])
        }
        _ => url.to_string(),
    }
}

/// A pool of `max_connections`, checked by one round trip before returning.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, PgConnectError> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(PgConnectError::Url {
            url: redact(url),
            error: "expected postgres://user:password@host:port/database".into(),
        });
    }
    let options: PgConnectOptions =
        url.parse().map_err(|e: sqlx::Error| PgConnectError::Url { url: redact(url), error: e.to_string() })?;
    let target = format!(
        "{}:{}/{} as {}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("(default)"),
        options.get_username()
    );
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .map_err(|e| PgConnectError::Connect { target, error: e.to_string() })
}

/// Creates the (new) schema `schema` and returns a URL whose connections work in it:
/// tests and benchmarks each get fresh tables this way.
pub async fn with_new_schema(url: &str, schema: &str) -> Result<String, PgConnectError> {
    let pool = connect(url, 1).await?;
    sqlx::raw_sql(&format!("CREATE SCHEMA \"{}\"", schema.replace('"', ""))).execute(&pool).await.map_err(|e| {
        PgConnectError::Connect { target: redact(url), error: format!("creating schema {schema}: {e}") }
    })?;
    let sep = if url.contains('?') { '&' } else { '?' };
    Ok(format!("{url}{sep}options=-c%20search_path%3D{schema}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(redact("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
    }

    #[tokio::test]
    async fn other_schemes_are_refused_before_any_connection() {
        let err = connect("mysql://u:secret@h/db", 1).await.unwrap_err().to_string();
        assert!(err.starts_with("invalid database url mysql://u:***@h/db"), "{err}");
    }
}
