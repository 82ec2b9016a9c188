//! Tenant scoping in PostgreSQL on the real local server: `guardian db migrate` puts
//! row-level security on the per-hospital tables; a hospital's role (`guardian db role
//! tenant`) reads its own rows and nothing else; the aggregate role reads only the
//! k-anonymous aggregate view; the dashboard answers a hospital's API token with that
//! hospital's rows only.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use guardian_testkit::{Stack, unique};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection, Row};

fn guardian(args: &[&str], url: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_guardian"))
        .args(args)
        .env("GUARDIAN_DATABASE_URL", url)
        .env("RUST_LOG", "off")
        .output()
        .expect("run guardian")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A connection to the test's schema as `role`.
async fn connect_as(url: &str, role: &str, password: &str) -> PgConnection {
    let options: PgConnectOptions = url.parse().unwrap();
    options.username(role).password(password).connect().await.unwrap_or_else(|e| panic!("login as {role}: {e}"))
}

fn write_password(dir: &Path, name: &str) -> (String, String) {
    let pw = format!("pw-{}", unique(name));
    let path = dir.join(name);
    std::fs::write(&path, format!("{pw}\n")).unwrap();
    (path.display().to_string(), pw)
}

fn is_permission_denied(e: &sqlx::Error) -> bool {
    e.as_database_error().is_some_and(|d| d.code().as_deref() == Some("42501"))
}

#[tokio::test]
async fn a_hospital_role_reads_only_its_rows_and_the_aggregate_role_only_aggregates() {
    let stack = Stack::get();
    let schema = unique("tenancy").replace('-', "_");
    let url = guardian_pg::with_new_schema(&stack.database_url, &schema).await.unwrap();
    let dir = std::env::temp_dir().join(&schema);
    std::fs::create_dir_all(&dir).unwrap();
    let tag = &schema[schema.len() - 8..];
    let (r1, r2, ragg) = (format!("t_h001_{tag}"), format!("t_h002_{tag}"), format!("agg_{tag}"));

    // The schema, then three roles; migrate twice (idempotent).
    ok(&guardian(&["db", "migrate"], &url));
    let out = ok(&guardian(&["db", "migrate"], &url));
    assert!(out.contains("row-level security on kpi_rollups"), "{out}");
    let (f1, pw1) = write_password(&dir, "h001");
    let (f2, pw2) = write_password(&dir, "h002");
    let (fa, pwa) = write_password(&dir, "agg");
    ok(&guardian(&["db", "role", "tenant", "--role", &r1, "--hospital", "h001", "--password-file", &f1], &url));
    ok(&guardian(&["db", "role", "tenant", "--role", &r2, "--hospital", "h002", "--password-file", &f2], &url));
    ok(&guardian(&["db", "role", "aggregate", "--role", &ragg, "--password-file", &fa], &url));
    let listed = ok(&guardian(&["db", "role", "list"], &url));
    assert!(listed.contains(&format!("{r1}\th001")) && listed.contains(&format!("{r2}\th002")), "{listed}");

    // Rows of four hospitals in one region and one in another, written by the owner (the
    // services' role), which row-level security does not restrict.
    let mut owner = PgConnection::connect(&url).await.unwrap();
    let day = 1_764_115_200_000i64;
    for (h, region, encounters) in [
        ("h001", "north", 10i64),
        ("h002", "north", 20),
        ("h003", "north", 30),
        ("h004", "north", 40),
        ("h005", "south", 50),
    ] {
        sqlx::query("INSERT INTO kpi_hospitals (hospital_id, region, ehr_vendor, tier, phase) VALUES ($1, $2, 'epic', 'academic', 'deployment')")
            .bind(h).bind(region).execute(&mut owner).await.unwrap();
        for size in ["DAY", "HOUR"] {
            sqlx::query(
                "INSERT INTO kpi_rollups (hospital_id, window_size, window_start_ms, encounters, soap_expected, soap_completed,
                     ratings, rating_sum, slo_good, slo_total, late_corrections, generation_sketch)
                 VALUES ($1, $2, $3, $4, $4, $4, 1, 4, 99, 100, 0, '\\x00')",
            )
            .bind(h).bind(size).bind(day).bind(encounters).execute(&mut owner).await.unwrap();
        }
        sqlx::query(
            "INSERT INTO privacy_ledger (event_id, hospital_id, session_id, round, sampling_rate, noise_multiplier, steps, delta,
                 occurred_at_ms, accepted, hospital_epsilon, source_topic, source_partition, source_offset)
             VALUES ($1, $2, 's', 1, 0.01, 1.1, 100, 1e-5, 0, true, 0.5, 'privacy.spend', 0, 0)",
        )
        .bind(format!("ev-{h}")).bind(h).execute(&mut owner).await.unwrap();
    }
    let all: i64 = sqlx::query_scalar("SELECT count(*) FROM kpi_rollups").fetch_one(&mut owner).await.unwrap();
    assert_eq!(all, 10, "the owner sees every row");

    // h001's role: its own rows of every scoped table, nothing of h002.
    let mut t1 = connect_as(&url, &r1, &pw1).await;
    for table in ["kpi_rollups", "kpi_hospitals", "privacy_ledger"] {
        let hs: Vec<String> = sqlx::query(&format!("SELECT DISTINCT hospital_id FROM {table}"))
            .fetch_all(&mut t1)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(hs, ["h001"], "{table} as {r1}");
    }
    let h002: i64 = sqlx::query_scalar("SELECT count(*) FROM kpi_rollups WHERE hospital_id = 'h002'")
        .fetch_one(&mut t1)
        .await
        .unwrap();
    assert_eq!(h002, 0, "h002's rows are invisible to h001, even asked for by name");
    // Not granted at all: offsets, the aggregate view, writes.
    for sql in [
        "SELECT count(*) FROM kafka_offsets",
        "SELECT count(*) FROM kpi_aggregate_daily",
        "UPDATE kpi_rollups SET encounters = 0",
        "DELETE FROM privacy_ledger",
    ] {
        let e = sqlx::query(sql).execute(&mut t1).await.expect_err(sql);
        assert!(is_permission_denied(&e), "{sql}: {e}");
    }
    let mappings: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_roles").fetch_one(&mut t1).await.unwrap();
    assert_eq!(mappings, 1, "a tenant sees only its own role mapping");

    // h002's role, the mirror image.
    let mut t2 = connect_as(&url, &r2, &pw2).await;
    let sum: i64 = sqlx::query_scalar("SELECT sum(encounters)::bigint FROM kpi_rollups WHERE window_size = 'DAY'")
        .fetch_one(&mut t2)
        .await
        .unwrap();
    assert_eq!(sum, 20);

    // The aggregate role: the view only, and only groups of at least 3 hospitals.
    let mut agg = connect_as(&url, &ragg, &pwa).await;
    let rows = sqlx::query("SELECT region, hospitals, encounters FROM kpi_aggregate_daily ORDER BY region")
        .fetch_all(&mut agg)
        .await
        .unwrap();
    let got: Vec<(String, i64, i64)> = rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    assert_eq!(got, [("north".to_string(), 4, 100)], "south has one hospital: suppressed");
    let e = sqlx::query("SELECT count(*) FROM kpi_rollups").execute(&mut agg).await.expect_err("rollups");
    assert!(is_permission_denied(&e), "{e}");

    // API tokens: the dashboard answers each hospital's token with its rows only.
    let token_for = |role: &str| {
        let out = ok(&guardian(&["db", "role", "api-token", "--role", role], &url));
        let token = out.lines().find_map(|l| l.strip_prefix("token (shown once): ")).unwrap().to_string();
        let line = out.lines().find_map(|l| l.strip_prefix("tokens file line:")).unwrap().trim().to_string();
        (token, line)
    };
    let ((tok1, line1), (tok2, line2)) = (token_for(&r1), token_for(&r2));
    let out = ok(&guardian(&["db", "role", "operator-token", "--name", "oncall"], &url));
    let op = out.lines().find_map(|l| l.strip_prefix("token (shown once): ")).unwrap().to_string();
    let op_line = out.lines().find_map(|l| l.strip_prefix("[operators] line:")).unwrap().trim().to_string();
    let tokens = dir.join("tokens.toml");
    std::fs::write(&tokens, format!("[tokens]\n{line1}\n{line2}\n[operators]\n{op_line}\n")).unwrap();
    let listen = format!("127.0.0.1:{}", common::free_port());
    let _dashboard = common::KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_guardian"))
            .args(["dashboard", "--listen", &listen, "--days", "100000", "--tokens", tokens.to_str().unwrap()])
            .env("GUARDIAN_DATABASE_URL", &url)
            .env("RUST_LOG", "off")
            .spawn()
            .unwrap(),
    );
    common::wait_for("the dashboard", std::time::Duration::from_secs(30), async || {
        common::ready(&listen).then_some(())
    })
    .await;
    let get = |path: &str, auth: Option<String>| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&listen).unwrap();
        let auth = auth.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n").as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let status: u16 = out.split(' ').nth(1).unwrap().parse().unwrap();
        (status, out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
    };
    let bearer = |t: &str| Some(format!("Bearer {t}"));
    let basic = |user: &str, t: &str| {
        use base64::Engine;
        Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{t}"))))
    };
    // Every path, with no credential, a wrong one, each hospital's, the operator's (as a
    // bearer token and as HTTP Basic), and the operator's as a hospital would misuse it.
    let paths = [
        "/",
        "/operator",
        "/api/aggregates",
        "/api/aggregates.csv",
        "/api/trend",
        "/api/overview",
        "/api/operations",
        "/api/hospital",
    ];
    let expect: [(&str, Option<String>, [u16; 8]); 7] = [
        ("none", None, [200, 401, 200, 200, 200, 401, 401, 401]),
        ("wrong", bearer("not-a-token"), [401; 8]),
        ("wrong basic", basic("oncall", "not-a-token"), [401; 8]),
        ("h001", bearer(&tok1), [200, 403, 200, 200, 200, 403, 403, 200]),
        ("h002", bearer(&tok2), [200, 403, 200, 200, 200, 403, 403, 200]),
        ("operator", bearer(&op), [200, 200, 200, 200, 200, 200, 200, 403]),
        ("operator basic", basic("anyone", &op), [200, 200, 200, 200, 200, 200, 200, 403]),
    ];
    for (who, auth, statuses) in &expect {
        for (path, status) in paths.iter().zip(statuses) {
            let (got, body) = get(path, auth.clone());
            assert_eq!(got, *status, "{who} on {path}: {body}");
            if *status == 200 && !who.starts_with("operator") && *path != "/api/hospital" {
                // What anyone may read names no hospital.
                assert!(!body.contains("h001") && !body.contains("h002"), "{who} on {path} names a hospital: {body}");
            }
        }
    }
    let (_, operator_page) = get("/operator", bearer(&op));
    assert!(operator_page.contains("data-hospital=\"h001\"") && operator_page.contains("<h2>Privacy budgets</h2>"));
    let (_, public_page) = get("/", None);
    assert!(!public_page.contains("data-hospital") && !public_page.contains("Privacy budgets"), "{public_page}");
    for (token, hospital, encounters) in [(&tok1, "h001", 10), (&tok2, "h002", 20)] {
        let (status, body) = get("/api/hospital", bearer(token));
        assert_eq!(status, 200, "{body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        let days = json["days"].as_array().unwrap();
        assert_eq!(days.len(), 1, "{body}");
        assert_eq!((days[0]["hospital"].as_str(), days[0]["encounters"].as_i64()), (Some(hospital), Some(encounters)));
    }

    // A role that is not a guardian tenant is never dropped by `db role remove`.
    let plain = format!("plain_{tag}");
    sqlx::raw_sql(&format!("CREATE ROLE {plain} NOLOGIN")).execute(&mut owner).await.unwrap();
    let out = guardian(&["db", "role", "remove", "--role", &plain], &url);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("not a guardian tenant role"));
    sqlx::raw_sql(&format!("DROP ROLE {plain}")).execute(&mut owner).await.unwrap();
    // Bad names are refused before any SQL.
    let out = guardian(&["db", "role", "tenant", "--role", "x; DROP TABLE kpi_rollups", "--hospital", "h001"], &url);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid role name"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Clean up the cluster-wide roles.
    drop((t1, t2, agg));
    for r in [&r1, &r2, &ragg] {
        let out = ok(&guardian(&["db", "role", "remove", "--role", r], &url));
        assert!(out.contains("dropped"), "{out}");
    }
    let login =
        PgConnection::connect_with(&url.parse::<PgConnectOptions>().unwrap().username(&r1).password(&pw1)).await;
    assert!(login.is_err(), "a removed role cannot log in");
}
