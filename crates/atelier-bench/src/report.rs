//! The results: one JSON file for tools and one Markdown file for people, named
//! by date and commit, with the machine they were measured on and the targets.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Serialize;

use crate::scenarios::{AtRate, LatencyAtOne, Logins, Streaming, StudioTurns, Throughput};
use crate::stats::{Comparison, Percentiles};

#[derive(Debug, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
    /// The share of CPU time the hypervisor gave to others during the run (`steal`
    /// in /proc/stat), in percent: on a shared VM, tails measured while it is high
    /// are the host's, not atelier's.
    pub steal_percent: Option<f64>,
    /// How late an idle thread wakes from a 1 ms sleep, measured before the
    /// run: every request crosses several wake-ups (load generator, atelier,
    /// mock), so a host whose tail here is near a target's cannot show it.
    pub wakeup_late: Percentiles,
}

/// Sleeps 1 ms `n` times on a thread of its own and returns how late each
/// wake-up came: the host's timer and scheduling latency, with nothing else
/// running.
pub fn wakeup_lateness(n: usize) -> Percentiles {
    let nap = Duration::from_millis(1);
    let late: Vec<Duration> = std::thread::spawn(move || {
        (0..n)
            .map(|_| {
                let t0 = Instant::now();
                std::thread::sleep(nap);
                t0.elapsed().saturating_sub(nap)
            })
            .collect()
    })
    .join()
    .unwrap_or_default();
    Percentiles::of(&late)
}

/// The machine's CPU time counters (/proc/stat), to tell how much was stolen.
#[derive(Debug, Clone, Copy)]
pub struct CpuClock {
    total: u64,
    steal: u64,
}

impl CpuClock {
    pub fn now() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let fields: Vec<u64> = stat
            .lines()
            .next()?
            .strip_prefix("cpu ")?
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal (guest time is in user).
        Some(CpuClock {
            total: fields.iter().take(8).sum(),
            steal: *fields.get(7)?,
        })
    }

    fn steal_percent_since(self, start: Self) -> Option<f64> {
        let total = self.total.checked_sub(start.total).filter(|t| *t > 0)?;
        Some(self.steal.saturating_sub(start.steal) as f64 * 100.0 / total as f64)
    }
}

impl Machine {
    /// This machine; `since` is when the run started.
    pub fn this(since: Option<CpuClock>, wakeup_late: Percentiles) -> Self {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let cpu = read("/proc/cpuinfo")
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            .unwrap_or_else(|| "unknown".into());
        let memory_kib: f64 = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        Machine {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            memory_gib: (memory_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            steal_percent: since
                .zip(CpuClock::now())
                .and_then(|(start, end)| end.steal_percent_since(start)),
            wakeup_late,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Memory {
    pub idle_mib: f64,
    /// Of `idle_mib`, what is not mapped from a file (heap, stacks).
    pub idle_anon_mib: f64,
    pub under_load_mib: f64,
    pub after_load_mib: f64,
    pub after_load_anon_mib: f64,
}

#[derive(Debug, Serialize)]
pub struct Startup {
    /// From spawn to `/readyz` answering 200, on a new database.
    pub ready_fresh_ms: f64,
    /// The same on an existing database.
    pub ready_existing_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct Target {
    pub name: &'static str,
    pub target: &'static str,
    pub measured: String,
    pub met: bool,
}

#[derive(Debug, Serialize)]
pub struct Results {
    pub date: String,
    pub commit: String,
    pub profile: String,
    pub smoke: bool,
    pub machine: Machine,
    pub startup: Startup,
    pub memory: Memory,
    pub latency_at_concurrency_one: Vec<LatencyAtOne>,
    pub studio_turns: StudioTurns,
    pub fixed_rates: Vec<AtRate>,
    pub throughput: Throughput,
    pub streaming: Streaming,
    pub logins: Logins,
    pub targets: Vec<Target>,
}

/// The targets against what was measured.
pub fn targets(r: &Results) -> Vec<Target> {
    let c1 = r
        .latency_at_concurrency_one
        .first()
        .map_or(f64::NAN, |l| l.comparison.added.p99_ms);
    let s = &r.streaming.concurrent;
    let all_streams_fine = s.stalled == 0 && s.errors == 0 && s.completed == s.streams;
    vec![
        Target {
            name: "added p99, concurrency 1 (chat, JWT, usage recorded)",
            target: "≤ 0.3 ms",
            measured: format!("{c1:.3} ms"),
            met: c1 <= 0.3,
        },
        Target {
            name: "sustained rate with added p99 < 1 ms, no errors (20 ms mock)",
            target: "≥ 5,000 req/s",
            measured: r.throughput.best_rate_text(),
            met: r.throughput.best_rate.is_some_and(|b| b >= 5_000.0),
        },
        Target {
            name: "added time to first token (p50)",
            target: "≤ 1 ms",
            measured: format!("{:.3} ms", r.streaming.time_to_first_token.added.p50_ms),
            met: r.streaming.time_to_first_token.added.p50_ms <= 1.0,
        },
        Target {
            name: "concurrent streams without a stall",
            target: "2,000",
            measured: format!(
                "{} of {} ({} stalled, {} errors)",
                s.completed, s.streams, s.stalled, s.errors
            ),
            met: all_streams_fine && s.streams >= 2_000,
        },
        Target {
            name: "resident memory with those streams",
            target: "< 150 MiB",
            measured: format!("{:.1} MiB", s.rss_peak_mib),
            met: s.rss_peak_mib < 150.0,
        },
        Target {
            name: "idle resident memory",
            target: "≤ 40 MiB",
            measured: format!("{:.1} MiB", r.memory.idle_mib),
            met: r.memory.idle_mib <= 40.0,
        },
        Target {
            name: "ready after start, existing database",
            target: "≤ 300 ms",
            measured: format!("{:.0} ms", r.startup.ready_existing_ms),
            met: r.startup.ready_existing_ms <= 300.0,
        },
        Target {
            name: "chat p99 during a login storm",
            target: "≤ 2× without",
            measured: format!("{:.2}×", r.logins.p99_ratio),
            met: r.logins.p99_ratio <= 2.0,
        },
    ]
}

fn comparison_row(out: &mut String, label: &str, c: &Comparison) {
    let _ = writeln!(
        out,
        "| {label} | {:.3} / {:.3} / {:.3} | {:.3} / {:.3} / {:.3} | **{:.3}** / **{:.3}** / **{:.3}** |",
        c.direct.p50_ms,
        c.direct.p99_ms,
        c.direct.p999_ms,
        c.through.p50_ms,
        c.through.p99_ms,
        c.through.p999_ms,
        c.added.p50_ms,
        c.added.p99_ms,
        c.added.p999_ms,
    );
}

fn markdown(r: &Results) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# atelier benchmark, {} ({})\n", r.date, r.commit);
    let m = &r.machine;
    let _ = writeln!(
        out,
        "{} profile{}; {} cores ({}), {} GiB, Linux {}. Load generator, mock upstream and atelier share the machine. Times in ms.\n",
        r.profile,
        if r.smoke {
            ", **smoke run: the numbers mean nothing**"
        } else {
            ""
        },
        m.cores,
        m.cpu,
        m.memory_gib,
        m.kernel
    );
    if let Some(steal) = m.steal_percent {
        let _ = writeln!(
            out,
            "The hypervisor took {steal:.1} % of the CPU time during the run (steal){}\n",
            if steal > 5.0 {
                ": **a shared host was busy; the tails below are largely its delays**."
            } else {
                "."
            }
        );
    }
    let w = &m.wakeup_late;
    let _ = writeln!(
        out,
        "An idle thread sleeping 1 ms woke late by p50 {:.3} / p99 {:.3} / p99.9 {:.3} ms (before the run, \
         nothing else running): each request waits on several such wake-ups.\n",
        w.p50_ms, w.p99_ms, w.p999_ms
    );
    let _ = writeln!(
        out,
        "## Targets\n\n| | target | measured | met |\n|---|---|---|---|"
    );
    for t in &r.targets {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            t.name,
            t.target,
            t.measured,
            if t.met { "yes" } else { "**no**" }
        );
    }
    let _ = writeln!(
        out,
        "\n## Added latency, one request at a time\n\n| path | direct p50 / p99 / p99.9 | through atelier | added |\n|---|---|---|---|"
    );
    for l in &r.latency_at_concurrency_one {
        comparison_row(&mut out, &l.path, &l.comparison);
    }
    let (turn, page) = (&r.studio_turns.turn, &r.studio_turns.page);
    let _ = writeln!(
        out,
        "\nContinued studio turns ({} of them, instant mock), p50 / p90 / p99: the turn \
         (`POST /ai/chat` with a `conversation_id`) {:.3} / {:.3} / {:.3}, the conversation's \
         page after it (`GET /ai/conversations/{{id}}`) {:.3} / {:.3} / {:.3}.",
        turn.count, turn.p50_ms, turn.p90_ms, turn.p99_ms, page.p50_ms, page.p90_ms, page.p99_ms,
    );
    let rates = |out: &mut String, steps: &[AtRate]| {
        let _ = writeln!(
            out,
            "| rate (req/s) | direct p50 / p99 / p99.9 | through atelier | added | achieved | errors | CPU ms/req: atelier, mock, generator | atelier RSS MiB |\n|---|---|---|---|---|---|---|---|"
        );
        for s in steps {
            let c = &s.comparison;
            let _ = writeln!(
                out,
                "| {:.0} | {:.3} / {:.3} / {:.3} | {:.3} / {:.3} / {:.3} | **{:.3}** / **{:.3}** / **{:.3}** | {:.0} | {} | {:.3}, {:.3}, {:.3} | {:.1} |",
                s.rate,
                c.direct.p50_ms,
                c.direct.p99_ms,
                c.direct.p999_ms,
                c.through.p50_ms,
                c.through.p99_ms,
                c.through.p999_ms,
                c.added.p50_ms,
                c.added.p99_ms,
                c.added.p999_ms,
                s.achieved_rate,
                s.errors,
                s.atelier_cpu_ms_per_request,
                s.mock_cpu_ms_per_request,
                s.generator_cpu_ms_per_request,
                s.atelier_rss_mib,
            );
        }
    };
    let _ = writeln!(out, "\n## Fixed rates (instant mock, access token)\n");
    rates(&mut out, &r.fixed_rates);
    let _ = writeln!(
        out,
        "\n## Throughput ({} ms mock)\n\nHighest rate with no errors and added p99 under 1 ms (the median of a rung's runs): **{}**.\n",
        r.throughput.mock_latency_ms,
        r.throughput.best_rate_text()
    );
    let _ = writeln!(
        out,
        "| rate (req/s) | added p99 of each run | median | errors | passed |\n|---|---|---|---|---|"
    );
    for rung in &r.throughput.rungs {
        let runs: Vec<String> = rung.added_p99_ms.iter().map(|v| format!("{v:.3}")).collect();
        let _ = writeln!(
            out,
            "| {:.0} | {} | **{:.3}** | {} | {} |",
            rung.rate,
            runs.join(", "),
            rung.median_added_p99_ms,
            rung.errors,
            if rung.passed { "yes" } else { "no" }
        );
    }
    let _ = writeln!(out, "\nEvery run:\n");
    rates(&mut out, &r.throughput.steps);
    let s = &r.streaming;
    let _ = writeln!(
        out,
        "\n## Streaming ({} ms between tokens)\n\n| | direct p50 / p99 / p99.9 | through atelier | added |\n|---|---|---|---|",
        s.token_delay_ms
    );
    comparison_row(&mut out, "time to first token", &s.time_to_first_token);
    comparison_row(&mut out, "gap between tokens", &s.gap_between_tokens);
    comparison_row(
        &mut out,
        "time to first token, the studio's chat (/ai/chat)",
        &s.studio_time_to_first_token,
    );
    let c = &s.concurrent;
    let _ = writeln!(
        out,
        "\n{} concurrent streams of 3 s: {} completed, {} stalled (a gap over 1 s), {} errors; gap p99 {:.1} ms, max {:.1} ms; resident memory {:.1} → {:.1} MiB ({:.1} KiB per stream).",
        c.streams,
        c.completed,
        c.stalled,
        c.errors,
        c.gap_p99_ms,
        c.max_gap_ms,
        c.rss_before_mib,
        c.rss_peak_mib,
        c.kib_per_stream
    );
    let _ = writeln!(
        out,
        "\n## Memory and start-up\n\nResident: {:.1} MiB idle ({:.1} MiB anonymous, the rest mapped from the binary and libraries), {:.1} MiB at peak load, {:.1} MiB after it ({:.1} MiB anonymous). Ready in {:.0} ms on a new database, {:.0} ms on an existing one.",
        r.memory.idle_mib,
        r.memory.idle_anon_mib,
        r.memory.under_load_mib,
        r.memory.after_load_mib,
        r.memory.after_load_anon_mib,
        r.startup.ready_fresh_ms,
        r.startup.ready_existing_ms
    );
    let l = &r.logins;
    let pairs: Vec<String> = l
        .pairs
        .iter()
        .map(|p| format!("{:.3} → {:.3}", p.alone.p99_ms, p.during_storm.p99_ms))
        .collect();
    let _ = writeln!(
        out,
        "\n## Logins\n\n{:.1} logins/s (argon2id, p99 {:.1} ms). Chat at {:.0} req/s, p99 alone → during a login storm, in pairs: {} ms; medians {:.3} → {:.3} ms ({:.2}×); {} errors.",
        l.logins_per_second,
        l.login_p99_ms,
        l.chat_rate,
        pairs.join(", "),
        l.chat_alone_p99_ms,
        l.chat_during_storm_p99_ms,
        l.p99_ratio,
        l.chat_errors + l.login_errors
    );
    out
}

/// Writes `<stem>.json` and `<stem>.md` into `dir`; returns the JSON's path.
pub fn write(dir: &Path, results: &Results) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let stem = format!("{}-{}", &results.date[..10], results.commit);
    let json = dir.join(format!("{stem}.json"));
    std::fs::write(&json, serde_json::to_string_pretty(results)? + "\n")?;
    std::fs::write(dir.join(format!("{stem}.md")), markdown(results))?;
    Ok(json)
}
