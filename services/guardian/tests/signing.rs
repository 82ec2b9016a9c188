//! Signed hospital events on the real stack: `guardian agent encounters --identity`
//! signs; `guardian kpi --signers registry.toml` counts only records signed by their own
//! hospital and dead-letters the rest: a record signed with h002's key but claiming h001,
//! and unsigned records.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{KillOnDrop as Service, dead_letters, free_port, guardian_on, run_ok as ok, wait_for};
use guardian_schemas::records::DeadLetter;
use guardian_testkit::{Stack, unique};

fn guardian(stack: &Stack, prefix: &str, args: &[&str]) -> Command {
    let mut c = guardian_on(stack, prefix, args);
    c.env_remove("GUARDIAN_AGENT_IDENTITY").env_remove("GUARDIAN_SIGNERS");
    c
}

#[tokio::test]
async fn forged_and_unsigned_encounters_are_dead_lettered_and_never_counted() {
    let stack = Stack::get();
    let prefix = format!("{}.", unique("it-sig"));
    let keys = std::env::temp_dir().join(unique("sig-keys"));
    ok(guardian(&stack, &prefix, &["fl", "keygen", "--dir", keys.to_str().unwrap(), "--hospitals", "h001,h002"]));
    ok(guardian(&stack, &prefix, &["topics", "apply"]));
    let key = |h: &str| keys.join(format!("{h}.key")).display().to_string();
    let encounters = |seed: &str, count: &str, signing: &[&str]| {
        let mut args = vec![
            "agent",
            "encounters",
            "--generate",
            "--hospitals",
            "1",
            "--count",
            count,
            "--seed",
            seed,
            "--late-every",
            "0",
        ];
        args.extend_from_slice(signing);
        ok(guardian(&stack, &prefix, &args));
    };
    // Five of h001's, signed with its key; two signed with h002's key claiming h001;
    // three unsigned.
    let (k1, k2) = (key("h001"), key("h002"));
    encounters("1", "5", &["--identity", &k1, "--sign-as", "h001"]);
    encounters("2", "2", &["--identity", &k2, "--sign-as", "h001"]);
    encounters("3", "3", &[]);
    // A signer cannot sign another hospital's records.
    let out = guardian(
        &stack,
        &prefix,
        &[
            "agent",
            "encounters",
            "--generate",
            "--hospitals",
            "2",
            "--count",
            "4",
            "--identity",
            &k1,
            "--sign-as",
            "h001",
        ],
    )
    .output()
    .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("cannot be signed as h001"));

    let url = guardian_pg::with_new_schema(&stack.database_url, &unique("sig").replace('-', "_")).await.unwrap();
    let registry = keys.join("registry.toml");
    let listen = format!("127.0.0.1:{}", free_port());
    let _service = Service(
        guardian(
            &stack,
            &prefix,
            &["kpi", "--database-url", &url, "--listen", &listen, "--signers", registry.to_str().unwrap()],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );

    // The dead-letter topic ends with exactly the five bad records, each saying why.
    let dlq = format!("{prefix}guardian.deadletter");
    let letters: Vec<DeadLetter> = dead_letters(&stack, &dlq, 5).await;
    assert_eq!(letters.len(), 5, "{letters:#?}");
    assert!(letters.iter().all(|l| l.error_kind == "forged"), "{letters:#?}");
    let forged = letters.iter().filter(|l| l.error.contains("does not verify under h001's registered key")).count();
    let unsigned = letters.iter().filter(|l| l.error.contains("unsigned record")).count();
    assert_eq!((forged, unsigned), (2, 3), "{letters:#?}");

    // Only the five genuine encounters are counted.
    let pool = guardian_pg::connect(&url, 1).await.unwrap();
    let counted: i64 = wait_for("the rollups", Duration::from_secs(30), async || {
        let n: Option<i64> = sqlx::query_scalar(
            "SELECT sum(encounters)::bigint FROM kpi_rollups WHERE window_size = 'DAY' AND hospital_id = 'h001'",
        )
        .fetch_one(&pool)
        .await
        .ok()?;
        n.filter(|n| *n >= 5)
    })
    .await;
    // Give a wrongly accepted record time to show up before judging.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let again: i64 = sqlx::query_scalar("SELECT sum(encounters)::bigint FROM kpi_rollups WHERE window_size = 'DAY'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!((counted, again), (5, 5));
}
