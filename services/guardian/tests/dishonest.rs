//! A federation with a dishonest hospital, on the real local stack: six agents with
//! update files (hospital unit), h006 lying in a different way each round (a chunk
//! forged in h001's name, a chunk of a second signed update, an undecryptable share, an
//! oversized chunk). Every round finishes with the five honest hospitals, the final model
//! equals the one recomputed from the honest hospitals' own updates (up to the DP noise),
//! h006 is named in each round's record, its lies are dead-lettered, and the replay of the
//! topics gives every model bit for bit.

mod common;

use common::*;

use std::process::{Command, Stdio};

use guardian_testkit::{Stack, unique};
use guardian_topics::TopicId;

/// Hospital `h`'s update (h = 1..=6): distinct per hospital, norm under the clip norm 1.
fn update_of(h: u32) -> Vec<f32> {
    (0..31).map(|i| 0.02 * h as f32 + 0.001 * i as f32 - 0.05).collect()
}

/// (round, outcome, survivors, misbehaved) of the session table.
fn rows(table: &str) -> Vec<(u32, String, String, String)> {
    session_rows(table).into_iter().map(|c| (c[0].parse().unwrap(), c[1].clone(), c[3].clone(), c[6].clone())).collect()
}

#[test]
fn a_lying_hospital_changes_nothing_for_the_honest_ones() {
    let stack = Stack::get();
    let prefix = format!("{}.", unique("fld"));
    let session = unique("session");
    let hospitals = ["h001", "h002", "h003", "h004", "h005", "h006"];
    let fed = Federation::new(&stack, &prefix, &hospitals);
    let _accountant = accountant(&stack, &prefix, &["--hospital-epsilon", "1e12", "--global-epsilon", "1e13"]);

    // The misbehaviour flag is refused without the test switch.
    let (mut c, _) = fed.agent(&stack, "h006", &["--demo-shard", "0", "--misbehave", "equivocate"]);
    let refused = c.output().unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("GUARDIAN_ALLOW_MISBEHAVE"));

    let mut agents = Vec::new();
    for (i, h) in hospitals.iter().enumerate() {
        // The point is the sum, not the budget: tiny noise, a loose limit.
        let (mut c, listen) = fed.update_agent(&stack, h, &update_of(i as u32 + 1), "1e12");
        if *h == "h006" {
            c.args(["--misbehave", "forge-chunk,equivocate,garbage-shares,oversized-chunk"])
                .env("GUARDIAN_ALLOW_MISBEHAVE", "1");
        }
        agents.push((KillOnDrop(c.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap()), listen));
    }
    wait_ready(agents.iter().map(|(_, l)| l), "the agents");
    let table = run_ok(fed.start(
        &stack,
        &session,
        &[
            "--rounds",
            "4",
            "--dp-unit",
            "hospital",
            "--noise-multiplier",
            "0.001",
            "--chunk-len",
            "8",
            "--stage-timeout-secs",
            "10",
        ],
    ));
    println!("{table}");
    let rows = rows(&table);
    assert_eq!(rows.len(), 4, "{table}");
    let honest = "h001,h002,h003,h004,h005";
    for (round, outcome, survivors, misbehaved) in &rows {
        assert_eq!(outcome, "finished", "round {round}: {table}");
        let expected = match round {
            1 => (honest.to_string(), "h006: signed a chunk in party 0's name"),
            2 => (honest.to_string(), "h006: signed two different inputs"),
            // The undecryptable share is ignored by its recipient, which stays; h006's
            // own input is well formed and counts.
            3 => (format!("{honest},h006"), "h006: sent party 0 a share it could not use"),
            _ => (honest.to_string(), "h006: signed a malformed chunk 0: wrong length"),
        };
        assert_eq!(survivors, &expected.0, "round {round}: {table}");
        assert!(misbehaved.starts_with(expected.1), "round {round}: {misbehaved}");
    }

    // The final model, recomputed: each round adds the mean of its survivors' updates
    // (clipped under the norm already; the noise in the mean has σ ≈ 2·10⁻⁴).
    let mut expected = vec![0f64; 31];
    for (_, _, survivors, _) in &rows {
        let who: Vec<u32> = survivors.split(',').map(|h| h[1..].parse().unwrap()).collect();
        for (i, e) in expected.iter_mut().enumerate() {
            *e += who.iter().map(|&h| f64::from(update_of(h)[i])).sum::<f64>() / who.len() as f64;
        }
    }
    let out = fed.file("model.npy");
    run_ok(fed.guardian(&stack, &["fl", "export", "--session", &session, "--out", out.to_str().unwrap()]));
    let model = guardian_fl::npy::read(&std::fs::read(&out).unwrap()).unwrap();
    let worst = model.iter().zip(&expected).map(|(m, e)| (f64::from(*m) - e).abs()).fold(0.0, f64::max);
    // One honest input missing or one lie summed moves a coordinate by 0.003 or more
    // (updates differ by 0.02 between hospitals; masks are uniform in the ring).
    assert!(worst < 0.002, "the model is off the honest recomputation by {worst}: {model:?} vs {expected:?}");

    // The lies that put h006 out are dead letters of kind `evicted`.
    let dlq = topic_name(&prefix, TopicId::DeadLetter);
    let letters = tokio::runtime::Runtime::new().unwrap().block_on(dead_letters(&stack, &dlq, 3));
    let evicted: Vec<_> = letters.iter().filter(|l| l.error_kind == "evicted").collect();
    assert_eq!(evicted.len(), 3, "{letters:?}");
    assert!(evicted.iter().all(|l| l.error.contains("hospital h006")), "{evicted:?}");

    let replay = run_ok(
        fed.guardian(&stack, &["fl", "replay", "--session", &session, "--registry", fed.registry.to_str().unwrap()]),
    );
    assert!(replay.contains("all 4 model versions"), "{replay}");
    for (child, _) in agents.iter_mut() {
        let _ = Command::new("kill").arg("-TERM").arg(child.0.id().to_string()).status();
    }
}
