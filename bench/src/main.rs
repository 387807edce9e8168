//! `sotto-bench`: how fast Sotto is, measured the same way every time.
//!
//! Each scenario starts the real `sotto-relay` binary on 127.0.0.1 with a
//! fresh sled data directory, drives lightweight clients (the client's real
//! transport, real libsignal where the scenario calls for it), repeats
//! `--runs` times, and reports the median and spread beside a **ceiling**
//! measured in the same invocation on the same machine, so that the ratio
//! means something on a noisy shared machine. See BENCHMARKS.md.
//!
//! Run it with `scripts/bench.sh` (a release build), e.g.
//! `scripts/bench.sh --runs 5 --scenario fanout`.

mod app;
mod cold_sync;
mod common;
mod connections;
mod e2e;
mod fanout;
mod hostile;
mod nats;
mod panic;
mod ring;
mod throughput;

use std::io::Write;
use std::path::PathBuf;

use clap::Parser;
use common::{Figure, median};

/// Sotto's benchmark harness. Prints a table and writes JSON.
#[derive(Parser)]
#[command(name = "sotto-bench", version, verbatim_doc_comment)]
struct Cli {
    /// Runs per scenario (the table shows the median and the min–max spread)
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Scenarios to run (default: all): throughput (with latency), fanout, connections (with relay idle), cold_sync,
    /// e2e, hostile, hostile_memory, panic, ring, app
    #[arg(long = "scenario", value_name = "NAME")]
    scenarios: Vec<String>,
    /// Where to write the JSON results
    #[arg(long, default_value = "bench-results.json")]
    json: PathBuf,
    /// Also run the throughput scenario's relay workload through a mature
    /// broker on this machine, in the same invocation: nats (NATS JetStream
    /// with file storage; needs `apt-get install nats-server`)
    #[arg(long, value_enum, value_name = "BROKER")]
    baseline: Option<Baseline>,
    /// Messages delivered into a running `sotto app` for the app scenario's
    /// "RSS with a long history" figure
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    app_history: usize,
}

/// Brokers `--baseline` can measure.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Baseline {
    /// NATS JetStream (Debian's `nats-server`), beside the relay throughput figure.
    Nats,
}

const ALL: &[&str] = &[
    "throughput",
    "fanout",
    "connections",
    "cold_sync",
    "e2e",
    "hostile",
    "hostile_memory",
    "panic",
    "ring",
    "app",
];

fn main() -> anyhow::Result<()> {
    // The connections scenario's ceiling re-executes this binary as a bare quinn server.
    if std::env::args().nth(1).as_deref() == Some(connections::BARE_SERVER_ARG) {
        return connections::bare_server_main();
    }
    // The hostile scenario's connection flood runs in a child process too.
    if std::env::args().nth(1).as_deref() == Some(hostile::FLOOD_ARG) {
        return hostile::flood_main();
    }
    let cli = Cli::parse();
    let runs = cli.runs.max(1);
    let wanted: Vec<String> = if cli.scenarios.is_empty() {
        ALL.iter().map(|s| s.to_string()).collect()
    } else {
        cli.scenarios.clone()
    };
    for s in &wanted {
        if !ALL.contains(&s.as_str()) {
            anyhow::bail!(
                "unknown scenario {s:?}; expected one of: {}",
                ALL.join(", ")
            );
        }
    }
    let nats_server = match cli.baseline {
        Some(Baseline::Nats) => {
            if !wanted.iter().any(|s| s == "throughput") {
                anyhow::bail!(
                    "--baseline nats compares with the throughput scenario: add --scenario throughput"
                );
            }
            Some(nats::find_server()?)
        }
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut figures: Vec<Figure> = Vec::new();
    for s in &wanted {
        eprintln!("== {s} ({runs} runs)");
        let mut got = runtime.block_on(async {
            match s.as_str() {
                "throughput" => throughput::run(runs).await,
                "fanout" => fanout::run(runs).await,
                "connections" => connections::run(runs).await,
                "cold_sync" => cold_sync::run(runs).await,
                "e2e" => e2e::run(runs).await,
                "hostile" => hostile::run(runs).await,
                "hostile_memory" => hostile::memory_before_login(runs).await,
                "panic" => panic::run(runs).await,
                "ring" => ring::run(runs).await,
                "app" => app::run(runs, cli.app_history).await,
                _ => unreachable!("checked above"),
            }
        })?;
        if let (Some(server), "throughput") = (&nats_server, s.as_str()) {
            eprintln!("== NATS JetStream baseline ({runs} runs per sync mode)");
            let baseline = runtime.block_on(nats::run(runs, server, &got))?;
            got.extend(baseline);
        }
        for f in &got {
            print_row(f);
        }
        figures.extend(got);
    }
    let machine = machine();
    let report = serde_json::json!({
        "machine": machine,
        "runs": runs,
        "figures": figures.iter().map(|f| serde_json::json!({
            "scenario": f.scenario,
            "figure": f.figure,
            "unit": f.unit,
            "median": median(&f.runs),
            "min": f.runs.iter().copied().fold(f64::INFINITY, f64::min),
            "max": f.runs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            "runs": f.runs,
            "ceiling": f.ceiling.as_ref().map(|c| serde_json::json!({
                "name": c.name,
                "median": median(&c.runs),
                "runs": c.runs,
            })),
            "note": f.note,
        })).collect::<Vec<_>>(),
    });
    std::fs::write(&cli.json, serde_json::to_vec_pretty(&report)?)?;
    println!();
    println!("{}", machine);
    println!("JSON written to {}", cli.json.display());
    Ok(())
}

fn print_row(f: &Figure) {
    let min = f.runs.iter().copied().fold(f64::INFINITY, f64::min);
    let max = f.runs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut out = std::io::stdout().lock();
    let ceiling = match &f.ceiling {
        Some(c) => {
            let cm = median(&c.runs);
            let ratio = if cm != 0.0 { median(&f.runs) / cm } else { 0.0 };
            format!(" | ceiling {}: {:.1} (ratio {:.2})", c.name, cm, ratio)
        }
        None => String::new(),
    };
    let _ = writeln!(
        out,
        "{:<10} | {:<58} | {:>10.1} {:<6} (min {:.1}, max {:.1}){}",
        f.scenario,
        f.figure,
        median(&f.runs),
        f.unit,
        min,
        max,
        ceiling
    );
}

/// Cores and CPU model, for the record.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("machine: {cores} cores, {model}")
}
