//! `guardian-bench secagg`: the secure-aggregation library next to Flower's SecAgg+ on the
//! same settings in the same run (`tests/secagg/bench_flower.py` is the peer side).
//!
//! Server rows time only the aggregator's calls inside a whole simulated round (the
//! parties' work is done but not counted), and every round's sum is checked against the
//! plain sum of the inputs.

use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use ed25519_dalek::SigningKey;
use guardian_secagg::shamir;
use guardian_secagg::sim::{Dropout, ServerTimings, identities, run_round_timed};
use guardian_secagg::{Client, RoundConfig, Server};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

struct Row {
    setting: &'static str,
    key: &'static str,
    /// None: measured for the record, no target.
    target: Option<Duration>,
    runs: Vec<Duration>,
}

fn median(runs: &[Duration]) -> Duration {
    let mut v = runs.to_vec();
    v.sort();
    v[v.len() / 2]
}

fn config(n: u32, k: u32, t: u32, dimension: u64) -> Arc<RoundConfig> {
    Arc::new(RoundConfig {
        session: "bench".into(),
        round: 1,
        model_version: 0,
        participants: (0..n).map(|i| format!("h{i:03}")).collect(),
        threshold: t,
        neighbours: k,
        dimension,
        chunk_len: 1 << 16,
        clipping_range: 8.0,
        quantization_levels: 1 << 22,
        clip_norm: 1.0,
        noise_multiplier: 1.0,
        graph_seed: [7; 32],
    })
}

/// One whole round; returns the server's timings after checking the sum.
fn round(cfg: &Arc<RoundConfig>, dropout: f64, rng: &mut ChaCha20Rng) -> Result<ServerTimings> {
    let n = cfg.parties();
    let inputs: Vec<Vec<u32>> =
        (0..n).map(|_| (0..cfg.dimension).map(|_| rng.random_range(0..1u32 << 22)).collect()).collect();
    let mut order: Vec<u32> = (0..n).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
    let dropouts: Vec<(u32, Dropout)> =
        order.iter().take((f64::from(n) * dropout) as usize).map(|&p| (p, Dropout::BeforeInput)).collect();
    let (result, time) = run_round_timed(cfg, &inputs, &dropouts, rng)?;
    let mut plain = vec![0u32; cfg.dimension as usize];
    for &p in &result.survivors {
        for (s, &w) in plain.iter_mut().zip(&inputs[p as usize]) {
            *s = s.wrapping_add(w);
        }
    }
    ensure!(result.sum == plain, "the unmasked sum differs from the plain sum");
    ensure!(result.dropped.len() == dropouts.len(), "dropouts were not all seen");
    Ok(time)
}

/// Quantize + mask + sign the chunks of one party with 20 neighbours (a complete graph of
/// 21 parties); also returns the aggregator's time to check one chunk: the first of an
/// input (hash, proof, signature) and any other (hash and proof: the root is known).
fn client_mask(dimension: u64, repeat: u32, rng: &mut ChaCha20Rng) -> Result<ClientRuns> {
    let cfg = config(21, 20, 11, dimension);
    let (ids, agg) = identities(21, rng);
    let directory: Vec<_> = ids.iter().map(SigningKey::verifying_key).collect();
    let mut server = Server::new(cfg.clone(), agg.clone(), directory.clone())?;
    let mut clients: Vec<Client> = Vec::new();
    for (p, id) in ids.into_iter().enumerate() {
        clients.push(Client::new(cfg.clone(), p as u32, id, rng)?);
    }
    let adverts: Vec<_> = clients.iter().map(Client::advertise).collect();
    for a in &adverts {
        server.receive_advert(a)?;
    }
    server.close_keys()?;
    let mut shares = Vec::new();
    for c in clients.iter_mut() {
        shares.extend(c.share_keys(&adverts, &directory, rng)?);
    }
    for s in &shares {
        server.receive_share(s)?;
    }
    let closed = server.close_shares()?;
    let me = &mut clients[0];
    me.receive_shares(&shares)?;
    let quantizer = cfg.quantizer()?;
    let update: Vec<f32> = (0..dimension).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let mut out = vec![0u32; dimension as usize];
    let mut runs = ClientRuns::default();
    for _ in 0..repeat {
        let started = Instant::now();
        quantizer.quantize(&update, &mut out, rng)?;
        me.mask(&closed, &agg.verifying_key(), &mut out)?;
        let chunks = me.chunks(&out);
        runs.mask.push(started.elapsed());
        let started = Instant::now();
        chunks[0].verify(&cfg, &me.round_id(), &directory[0])?;
        runs.verify.push(started.elapsed());
        let started = Instant::now();
        // The second chunk (full length at d = 1M; the last one is shorter).
        let proven = chunks[chunks.len().min(2) - 1].prove(&cfg);
        runs.prove.push(started.elapsed());
        ensure!(proven.root == chunks[0].prove(&cfg).root, "two chunks of one input lead to different roots");
    }
    Ok(runs)
}

#[derive(Default)]
struct ClientRuns {
    mask: Vec<Duration>,
    verify: Vec<Duration>,
    prove: Vec<Duration>,
}

fn shamir_runs(repeat: u32, rng: &mut ChaCha20Rng) -> Result<(Vec<Duration>, Vec<Duration>)> {
    const REPS: u32 = 200;
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    let shares = shamir::split(&secret, 100, 51, rng)?;
    ensure!(*shamir::combine(&shares[49..], 51)? == secret, "Shamir round trip failed");
    let (mut split, mut combine) = (Vec::new(), Vec::new());
    for _ in 0..repeat {
        let started = Instant::now();
        for _ in 0..REPS {
            std::hint::black_box(shamir::split(&secret, 100, 51, rng)?);
        }
        split.push(started.elapsed() / REPS);
        let started = Instant::now();
        for _ in 0..REPS {
            std::hint::black_box(shamir::combine(&shares[..51], 51)?);
        }
        combine.push(started.elapsed() / REPS);
    }
    Ok((split, combine))
}

fn fmt(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{:.0} µs", s * 1e6)
    }
}

pub fn run(args: crate::BenchSecaggArgs) -> Result<ExitCode> {
    if args.repeat == 0 || !(args.scale > 0.0 && args.scale <= 1.0) {
        bail!("--repeat must be at least 1 and --scale in (0, 1]");
    }
    let d1m = ((1_000_000.0 * args.scale) as u64).max(1);
    let d100k = ((100_000.0 * args.scale) as u64).max(1);
    let mut rng = ChaCha20Rng::from_os_rng();
    let ms = Duration::from_millis;
    let mut rows = Vec::new();

    eprintln!("bench: guardian-secagg, {} repetitions, d = {d1m} / {d100k}", args.repeat);
    let cfg = config(100, 20, 11, d1m);
    let mut sum_runs = Vec::new();
    for _ in 0..args.repeat {
        sum_runs.push(round(&cfg, 0.0, &mut rng)?.sum);
    }
    rows.push(Row {
        setting: "server verify + sum, n=100, d=1M",
        key: "server_sum",
        target: Some(ms(80)),
        runs: sum_runs,
    });
    eprintln!("bench:   server sum done");
    let client = client_mask(d1m, args.repeat.max(5), &mut rng)?;
    rows.push(Row {
        setting: "client quantize + mask + sign chunks, d=1M, 20 neighbours",
        key: "client_mask",
        target: Some(ms(20)),
        runs: client.mask,
    });
    rows.push(Row {
        setting: "check an input's first chunk (65,536 words: BLAKE3, proof, Ed25519)",
        key: "chunk_verify",
        target: None,
        runs: client.verify,
    });
    rows.push(Row {
        setting: "check any other chunk (65,536 words: BLAKE3, proof)",
        key: "chunk_prove",
        target: None,
        runs: client.prove,
    });
    eprintln!("bench:   client mask done");
    let (split, combine) = shamir_runs(args.repeat, &mut rng)?;
    rows.push(Row {
        setting: "Shamir share, 32-byte secret, n=100, t=51",
        key: "shamir_share",
        target: Some(ms(1) / 2),
        runs: split,
    });
    rows.push(Row {
        setting: "Shamir combine, 32-byte secret, n=100, t=51",
        key: "shamir_combine",
        target: Some(ms(1) / 2),
        runs: combine,
    });
    eprintln!("bench:   Shamir done");
    let mut unmask_runs = Vec::new();
    for _ in 0..args.repeat {
        unmask_runs.push(round(&cfg, 0.10, &mut rng)?.unmask);
    }
    rows.push(Row {
        setting: "server unmask, n=100, 20 neighbours, d=1M, 10% dropout",
        key: "server_unmask",
        target: Some(ms(300)),
        runs: unmask_runs,
    });
    eprintln!("bench:   server unmask done");
    let cfg = config(500, 30, 11, d100k);
    let mut full_runs = Vec::new();
    for _ in 0..args.repeat {
        full_runs.push(round(&cfg, 0.30, &mut rng)?.total());
    }
    rows.push(Row {
        setting: "full round on the server, n=500, 30 neighbours, d=100K, 30% dropout",
        key: "full_round",
        target: Some(ms(4000)),
        runs: full_runs,
    });
    eprintln!("bench:   full round done");

    let peer = match &args.flower_python {
        Some(python) => {
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/secagg/bench_flower.py");
            eprintln!("bench: Flower SecAgg+, the same settings (minutes: its Shamir is pure Python)");
            let out = Command::new(python)
                .arg(script)
                .args(["--repeat", &args.repeat.to_string(), "--scale", &args.scale.to_string()])
                .stderr(std::process::Stdio::inherit())
                .output()
                .with_context(|| format!("cannot run {python} (make one with tests/stack/stack.sh bench-tools)"))?;
            if !out.status.success() {
                bail!("Flower side failed (exit {})", out.status);
            }
            Some(serde_json::from_slice::<serde_json::Value>(&out.stdout).context("reading the Flower side")?)
        }
        None => None,
    };

    println!();
    println!(
        "secure aggregation, median of {} runs (best in brackets), 2^32 ring, 2^22 quantization levels{}",
        args.repeat,
        peer.as_ref().and_then(|p| p["library"].as_str()).map(|l| format!("; peer: {l}")).unwrap_or_default()
    );
    println!();
    println!("| setting | target | guardian-secagg | met | Flower SecAgg+ | speed-up |");
    println!("|---|---:|---:|:---:|---:|---:|");
    let mut all_met = true;
    for row in &rows {
        let ours = median(&row.runs);
        let best = row.runs.iter().min().copied().unwrap_or(ours);
        let met = row.target.is_none_or(|t| ours <= t);
        all_met &= met;
        let (theirs, speedup) = match peer.as_ref().and_then(|p| p[row.key]["median"].as_f64()) {
            Some(s) => {
                let ratio = s / ours.as_secs_f64();
                let shown = if ratio < 10.0 { format!("{ratio:.2}×") } else { format!("{ratio:.0}×") };
                (fmt(Duration::from_secs_f64(s)), shown)
            }
            None => ("not run".into(), "".into()),
        };
        println!(
            "| {} | {} | {} ({}) | {} | {theirs} | {speedup} |",
            row.setting,
            row.target.map_or("—".into(), |t| format!("≤ {}", fmt(t))),
            fmt(ours),
            fmt(best),
            match (row.target, met) {
                (None, _) => "",
                (Some(_), true) => "yes",
                (Some(_), false) => "no",
            }
        );
    }
    if args.scale < 1.0 {
        println!("\n(--scale {}: dimensions scaled down; the targets are for the full sizes)", args.scale);
    }
    Ok(if all_met || args.scale < 1.0 { ExitCode::SUCCESS } else { ExitCode::from(3) })
}
