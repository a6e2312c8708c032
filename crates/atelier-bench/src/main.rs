//! `atelier-bench`: measures what atelier adds between its users and a model.
//! `bench/run` builds the release binaries and calls this; see `bench/README.md`.
//!
//! It starts two mock upstreams (instant, and 20 ms) and atelier on a fresh
//! DuckDB file, drives load from this process over loopback, and writes the
//! results. Every load loop is bounded in count and time.

mod http1;
mod load;
mod procs;
mod report;
mod scenarios;
mod stats;

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;

use crate::procs::{start_atelier, start_mock, workdir};
use crate::report::{CpuClock, Machine, Memory, Results, Startup};
use crate::scenarios::{FULL, SMOKE, Targets};

#[derive(Debug, Parser)]
#[command(name = "atelier-bench", about = "Measures what atelier adds to a model call")]
struct Args {
    /// Folder holding the `atelier` and `atelier-mock-upstream` binaries.
    #[arg(long)]
    bin_dir: PathBuf,
    /// Folder for the results (`<date>-<commit>.json` and `.md`).
    #[arg(long)]
    out: PathBuf,
    /// A few requests per scenario: checks that the bench works, not the numbers.
    #[arg(long)]
    smoke: bool,
    /// The build profile of the binaries, for the record.
    #[arg(long, default_value = "release")]
    profile: String,
    /// More settings for atelier, `KEY=VALUE` (e.g. `ATELIER_VIDEO__TICK=1h`), to
    /// measure their effect.
    #[arg(long = "atelier-env", value_name = "KEY=VALUE", value_parser = key_value)]
    atelier_env: Vec<(String, String)>,
    /// Only these scenarios (comma-separated: latency, turns, rates, streaming,
    /// logins, throughput, studio, studio-load); all by default. With throughput,
    /// studio (the studio's chat against a 20 ms model) or studio-load (the same
    /// beside /v1 load) the mock answers in 20 ms for all.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// With `--only`: these rates (requests/s) instead of the standard ones, for
    /// the fixed-rate scenario and the throughput ladder (which then runs every
    /// rung instead of stopping at the first that fails).
    #[arg(long, value_delimiter = ',', requires = "only")]
    rates: Vec<f64>,
    /// With `--only`: write every request's send time and latency of each
    /// fixed-rate and throughput run into this folder (`bench/tail-clusters`
    /// reads them).
    #[arg(long, requires = "only")]
    timelines: Option<PathBuf>,
}

fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

/// Milliseconds between streamed tokens from the instant mock.
const TOKEN_DELAY_MS: u64 = 10;
/// The mock's latency for the throughput scenario.
const SLOW_MOCK_MS: u64 = 20;
/// The row of the studio's chat against that mock, in the latency table.
const SLOW_STUDIO_CHAT: &str = "/ai/chat against a 20 ms model (stores the conversation)";

fn commit() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let hash = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    if dirty { format!("{hash}-dirty") } else { hash }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Some scenarios, for an experiment: their results go to standard output as
/// JSON, and no results file is written.
async fn run_only(args: &Args) -> Result<()> {
    let mut sizes = if args.smoke { SMOKE } else { FULL };
    if !args.rates.is_empty() {
        sizes.rates = args.rates.clone().into();
        sizes.throughput_rates = args.rates.clone().into();
        sizes.whole_ladder = true;
    }
    let want = |name: &str| args.only.iter().any(|o| o == name);
    let slow = want("throughput") || want("studio") || want("studio-load");
    let (mock, mock_url) = start_mock(&args.bin_dir, if slow { SLOW_MOCK_MS } else { 0 }, TOKEN_DELAY_MS)?;
    let dir = workdir()?;
    let (atelier, base, ready) = start_atelier(&args.bin_dir, &dir, &mock_url, &args.atelier_env).await?;
    tokio::time::sleep(sizes.settle).await;
    let print = |name: &str, value: serde_json::Value| println!("{}", serde_json::json!({ name: value }));
    print("ready_ms", serde_json::json!(ms(ready)));
    print("idle_mib", serde_json::json!(atelier.rss_mib()));
    print("idle_anon_mib", serde_json::json!(atelier.rss_anon_mib()));
    let mut targets = Targets::new(&mock_url, mock.pid(), &base)?;
    if let Some(dir) = &args.timelines {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        targets.timelines = Some(dir.clone());
    }
    targets.sign_in().await?;
    if want("latency") {
        print(
            "latency",
            serde_json::to_value(scenarios::latency_at_concurrency_one(&targets, &sizes).await?)?,
        );
    }
    if want("rates") {
        for &rate in sizes.rates.iter() {
            let step = scenarios::at_rate(&targets, &atelier, rate, sizes.rate_duration).await?;
            print("rate", serde_json::to_value(step)?);
        }
    }
    if want("streaming") {
        print(
            "streaming",
            serde_json::to_value(scenarios::streaming(&targets, &atelier, &sizes, TOKEN_DELAY_MS).await?)?,
        );
    }
    if want("logins") {
        print(
            "logins",
            serde_json::to_value(scenarios::logins(&targets, &sizes).await?)?,
        );
    }
    if want("turns") {
        print(
            "studio_turns",
            serde_json::to_value(scenarios::studio_turns(&targets, sizes.studio_turns).await?)?,
        );
    }
    if want("studio") {
        print(
            "studio",
            serde_json::to_value(
                scenarios::studio_chat(&targets, sizes.slow_rest_chat_requests, SLOW_STUDIO_CHAT).await?,
            )?,
        );
    }
    if want("studio-load") {
        print(
            "studio_load",
            serde_json::to_value(scenarios::studio_chat_under_load(&targets, &sizes, SLOW_MOCK_MS).await?)?,
        );
    }
    if want("throughput") {
        print(
            "throughput",
            serde_json::to_value(scenarios::throughput(&targets, &atelier, &sizes, SLOW_MOCK_MS).await?)?,
        );
    }
    atelier.stop()?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

async fn run(args: Args) -> Result<PathBuf> {
    let sizes = if args.smoke { SMOKE } else { FULL };
    let started = CpuClock::now();
    let wakeup_late = report::wakeup_lateness(if args.smoke { 50 } else { 2_000 });
    let (mock, mock_url) = start_mock(&args.bin_dir, 0, TOKEN_DELAY_MS)?;
    let (slow_mock, slow_url) = start_mock(&args.bin_dir, SLOW_MOCK_MS, TOKEN_DELAY_MS)?;
    let dir = workdir()?;

    eprintln!("start-up");
    let (first, _, ready_fresh) = start_atelier(&args.bin_dir, &dir, &mock_url, &args.atelier_env).await?;
    first.stop()?;
    let (atelier, base, ready_existing) =
        start_atelier(&args.bin_dir, &dir, &mock_url, &args.atelier_env).await?;
    tokio::time::sleep(sizes.settle).await;
    let (idle_mib, idle_anon_mib) = (atelier.rss_mib(), atelier.rss_anon_mib());

    let mut targets = Targets::new(&mock_url, mock.pid(), &base)?;
    targets.sign_in().await?;

    eprintln!("added latency at concurrency 1");
    let mut latency = scenarios::latency_at_concurrency_one(&targets, &sizes).await?;
    eprintln!("continued studio turns");
    let studio_turns = scenarios::studio_turns(&targets, sizes.studio_turns).await?;
    eprintln!("fixed rates");
    let mut fixed_rates = Vec::new();
    for &rate in sizes.rates.iter() {
        fixed_rates.push(scenarios::at_rate(&targets, &atelier, rate, sizes.rate_duration).await?);
    }
    eprintln!("streaming");
    let streaming = scenarios::streaming(&targets, &atelier, &sizes, TOKEN_DELAY_MS).await?;
    eprintln!("logins");
    let logins = scenarios::logins(&targets, &sizes).await?;
    atelier.stop()?;

    eprintln!("throughput against a {SLOW_MOCK_MS} ms mock");
    let (atelier, base, _) = start_atelier(&args.bin_dir, &dir, &slow_url, &args.atelier_env).await?;
    let mut targets = Targets::new(&slow_url, slow_mock.pid(), &base)?;
    targets.sign_in().await?;
    let throughput = scenarios::throughput(&targets, &atelier, &sizes, SLOW_MOCK_MS).await?;
    eprintln!("the studio's chat against the {SLOW_MOCK_MS} ms mock");
    latency.push(scenarios::studio_chat(&targets, sizes.slow_rest_chat_requests, SLOW_STUDIO_CHAT).await?);
    eprintln!("… and beside /v1 at {:.0} req/s", sizes.studio_load_rate);
    latency.push(scenarios::studio_chat_under_load(&targets, &sizes, SLOW_MOCK_MS).await?);
    let under_load_mib = throughput
        .steps
        .iter()
        .map(|s| s.atelier_rss_mib)
        .fold(0.0, f64::max);
    tokio::time::sleep(sizes.settle).await;
    let (after_load_mib, after_load_anon_mib) = (atelier.rss_mib(), atelier.rss_anon_mib());
    atelier.stop()?;
    drop((mock, slow_mock));
    let _ = std::fs::remove_dir_all(&dir);

    let mut results = Results {
        date: chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        commit: commit(),
        profile: args.profile,
        smoke: args.smoke,
        machine: Machine::this(started, wakeup_late),
        startup: Startup {
            ready_fresh_ms: ms(ready_fresh),
            ready_existing_ms: ms(ready_existing),
        },
        memory: Memory {
            idle_mib,
            idle_anon_mib,
            under_load_mib: under_load_mib.max(streaming.concurrent.rss_peak_mib),
            after_load_mib,
            after_load_anon_mib,
        },
        latency_at_concurrency_one: latency,
        studio_turns,
        fixed_rates,
        throughput,
        streaming,
        logins,
        targets: Vec::new(),
    };
    results.targets = report::targets(&results);
    report::write(&args.out, &results).context("writing the results")
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if !args.only.is_empty() {
        return match runtime.block_on(run_only(&args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    match runtime.block_on(run(args)) {
        Ok(path) => {
            println!("{}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
