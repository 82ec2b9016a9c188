//! The house rules of the workspace, checked on the code itself:
//! - no crate under `services/` (outside `services/libs/`) depends on another such crate
//!   (services share through libraries and topics, never through each other);
//! - the production binary's dependency closure holds no benchmark code, and the
//!   production Dockerfile builds only that binary;
//! - the `guardian` binary stays thin: at most 15 % of the source lines of the services
//!   and libraries.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap()
}

fn metadata() -> serde_json::Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(repo())
        .output()
        .expect("cargo metadata");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Package name → (folder relative to the repo, names of its normal dependencies in the
/// workspace).
fn workspace() -> BTreeMap<String, (PathBuf, BTreeSet<String>)> {
    let m = metadata();
    let root = repo();
    let members: BTreeSet<&str> =
        m["workspace_members"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    let packages: Vec<&serde_json::Value> =
        m["packages"].as_array().unwrap().iter().filter(|p| members.contains(p["id"].as_str().unwrap())).collect();
    let names: BTreeSet<String> = packages.iter().map(|p| p["name"].as_str().unwrap().to_string()).collect();
    packages
        .iter()
        .map(|p| {
            let dir = Path::new(p["manifest_path"].as_str().unwrap()).parent().unwrap().strip_prefix(&root).unwrap();
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["kind"].is_null() && names.contains(d["name"].as_str().unwrap()))
                .map(|d| d["name"].as_str().unwrap().to_string())
                .collect();
            (p["name"].as_str().unwrap().to_string(), (dir.to_path_buf(), deps))
        })
        .collect()
}

fn is_service(dir: &Path) -> bool {
    dir.starts_with("services") && !dir.starts_with("services/libs") && dir != Path::new("services/guardian")
}

#[test]
fn no_service_crate_depends_on_another() {
    let ws = workspace();
    let services: BTreeSet<&String> = ws.iter().filter(|(_, (dir, _))| is_service(dir)).map(|(n, _)| n).collect();
    assert!(services.len() >= 7, "services found: {services:?}");
    let mut bad = Vec::new();
    for name in &services {
        for dep in &ws[*name].1 {
            if services.contains(dep) {
                bad.push(format!("{name} -> {dep}"));
            }
        }
    }
    assert!(bad.is_empty(), "service crates importing service crates: {bad:?}");
}

#[test]
fn the_production_binary_holds_no_benchmark_code() {
    let ws = workspace();
    let mut seen = BTreeSet::new();
    let mut todo = vec!["guardian".to_string()];
    while let Some(p) = todo.pop() {
        if seen.insert(p.clone()) {
            todo.extend(ws[&p].1.iter().cloned());
        }
    }
    assert!(seen.contains("guardian-kpi") && !seen.contains("guardian-bench"), "{seen:?}");
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let builds: Vec<&str> = dockerfile.lines().filter(|l| l.contains("cargo build")).collect();
    assert_eq!(builds.len(), 1, "{builds:?}");
    assert!(builds[0].contains("-p guardian") && !builds[0].contains("--workspace"), "{builds:?}");
}

fn rust_lines(dir: &Path) -> usize {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            total += rust_lines(&p);
        } else if p.extension().is_some_and(|e| e == "rs") {
            total += std::fs::read_to_string(&p).unwrap().lines().count();
        }
    }
    total
}

#[test]
fn the_binary_is_at_most_fifteen_percent_of_the_source() {
    let services = repo().join("services");
    let mut all = 0;
    for group in [services.clone(), services.join("libs")] {
        for entry in std::fs::read_dir(&group).unwrap() {
            let src = entry.unwrap().path().join("src");
            if src.is_dir() {
                all += rust_lines(&src);
            }
        }
    }
    let binary = rust_lines(&services.join("guardian/src"));
    let share = binary as f64 / all as f64;
    println!("guardian binary: {binary} of {all} source lines ({:.1} %)", share * 100.0);
    assert!(share <= 0.15, "the binary holds {binary} of {all} lines ({:.1} %)", share * 100.0);
}
