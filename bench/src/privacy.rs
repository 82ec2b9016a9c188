//! `guardian-bench privacy`: the RDP accountant next to Google's dp_accounting, the same
//! workloads in the same run (`tests/privacy/bench_dp_accounting.py` is the peer side).
//! Events are composed one by one, as the accountant service receives them.

use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use guardian_privacy::pld::PldAccountant;
use guardian_privacy::{RdpAccountant, SampledGaussian};

fn identical(n: usize) -> impl Iterator<Item = (f64, f64)> {
    std::iter::repeat_n((0.01, 1.1), n)
}

fn heterogeneous(n: usize) -> impl Iterator<Item = (f64, f64)> {
    (0..n).map(|i| (0.001 + (i % 97) as f64 * 0.0005, 0.8 + (i % 89) as f64 * 0.02))
}

/// Seconds and ε for one workload through the PLD accountant.
fn ours_pld(events: impl Iterator<Item = (f64, f64)>) -> Result<(f64, f64)> {
    let started = Instant::now();
    let mut acc = PldAccountant::default();
    for (q, sigma) in events {
        acc.compose(&SampledGaussian { sampling_rate: q, noise_multiplier: sigma, count: 1 })?;
    }
    let eps = acc.epsilon(1e-5)?;
    Ok((started.elapsed().as_secs_f64(), eps))
}

/// Seconds and ε for one workload.
fn ours(events: impl Iterator<Item = (f64, f64)>) -> Result<(f64, f64)> {
    let started = Instant::now();
    let mut acc = RdpAccountant::default();
    for (q, sigma) in events {
        acc.compose(&SampledGaussian { sampling_rate: q, noise_multiplier: sigma, count: 1 })?;
    }
    let (eps, _) = acc.epsilon(1e-5)?;
    Ok((started.elapsed().as_secs_f64(), eps))
}

pub fn run(args: crate::BenchPrivacyArgs) -> Result<ExitCode> {
    if args.events == 0 || args.pld_events == 0 {
        bail!("--events and --pld-events must be at least 1");
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/privacy/bench_dp_accounting.py");
    eprintln!("bench: guardian-privacy, {} events per workload", args.events);
    let rows = [
        ("identical", ours(identical(args.events))?),
        ("heterogeneous", ours(heterogeneous(args.events))?),
        ("pld_identical", ours_pld(identical(args.pld_events))?),
        ("pld_heterogeneous", ours_pld(heterogeneous(args.pld_events))?),
    ];
    for (name, (secs, eps)) in &rows {
        eprintln!("bench:   {name}: {secs:.4} s, epsilon {eps:.12}");
    }
    eprintln!("bench: dp_accounting, the same workloads (minutes: it recomputes every event)");
    let out =
        Command::new(&args.dp_python).arg(script).args(["--events", &args.events.to_string()]).output().with_context(
            || format!("cannot run {} (make one with tests/stack/stack.sh bench-tools)", args.dp_python),
        )?;
    if !out.status.success() {
        bail!("dp_accounting side failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let peer: serde_json::Value = serde_json::from_slice(&out.stdout).context("reading the dp_accounting side")?;
    println!();
    println!(
        "budget-spend events composed one by one ({} for RDP, {} for PLD), epsilon at delta 1e-5; {}",
        args.events,
        args.pld_events,
        peer["library"].as_str().unwrap_or("dp_accounting")
    );
    println!();
    println!(
        "| workload | guardian-privacy | dp_accounting | speed-up | epsilon (ours) | epsilon (dp_accounting) | relative difference |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, (secs, eps)) in rows {
        let p = &peer[name];
        let (psecs, peps) = (p["seconds"].as_f64().unwrap_or(f64::NAN), p["epsilon"].as_f64().unwrap_or(f64::NAN));
        println!(
            "| {name} | {:.4} s | {:.2} s | {:.0}× | {eps:.12} | {peps:.12} | {:.1e} |",
            secs,
            psecs,
            psecs / secs,
            (eps - peps).abs() / peps
        );
    }
    Ok(ExitCode::SUCCESS)
}
