//! The benchmark binary's command line: every benchmark is listed, and a benchmark that
//! cannot reach its stack says so in one line.

use std::process::Command;

#[test]
fn help_names_every_benchmark() {
    let out = Command::new(env!("CARGO_BIN_EXE_guardian-bench")).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for bench in ["kafka", "privacy", "replay", "secagg", "kpi", "latency"] {
        assert!(help.contains(bench), "--help lists {bench}: {help}");
    }
}

#[test]
fn a_missing_broker_is_one_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = Command::new(env!("CARGO_BIN_EXE_guardian-bench"))
        .args(["kafka", "--bootstrap-servers", &format!("127.0.0.1:{port}"), "--records", "10", "--repeat", "1"])
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].starts_with("error: ") && lines[0].contains(&port.to_string()), "{err}");
}
