//! The scenarios of the issue, each returning what it measured.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::{Value, json};

use crate::http1::{ConnPool, Prepared};
use crate::load::{Outcome, closed_loop, open_loop};
use crate::procs::{ADMIN_EMAIL, ADMIN_PASSWORD, MOCK_KEY, Proc, cpu_time_of};
use crate::stats::{self, Comparison, Percentiles};

/// How much load each scenario sends: the full run, or a smoke run that only
/// checks the bench works.
#[derive(Debug, Clone)]
pub struct Sizes {
    pub latency_requests: usize,
    pub rest_chat_requests: usize,
    /// `/ai/chat` requests against the slow mock, where a model's own time can
    /// hide what atelier does meanwhile (storing the question, ADR-0032).
    pub slow_rest_chat_requests: usize,
    /// Continued studio turns, in conversations of ten.
    pub studio_turns: usize,
    /// The `/v1` rate (requests/s) beside which studio turns are timed, and
    /// for how long.
    pub studio_load_rate: f64,
    pub studio_load_duration: Duration,
    pub rates: Cow<'static, [f64]>,
    pub rate_duration: Duration,
    pub throughput_rates: Cow<'static, [f64]>,
    pub throughput_duration: Duration,
    /// Runs of each rung of the ladder; a rung passes if its median run does.
    pub throughput_runs: usize,
    /// Climb every rung of the throughput ladder, not only until
    /// [`FAILED_RUNGS_THAT_END_THE_LADDER`] fail in a row.
    pub whole_ladder: bool,
    pub stream_samples: usize,
    pub concurrent_streams: usize,
    pub login_duration: Duration,
    /// Pairs of chat alone and chat during a login storm.
    pub storm_pairs: usize,
    pub settle: Duration,
}

pub const FULL: Sizes = Sizes {
    latency_requests: 10_000,
    rest_chat_requests: 1_000,
    slow_rest_chat_requests: 200,
    studio_turns: 100,
    studio_load_rate: 2_000.0,
    studio_load_duration: Duration::from_secs(20),
    rates: Cow::Borrowed(&[500.0, 1_000.0, 2_000.0]),
    rate_duration: Duration::from_secs(5),
    throughput_rates: Cow::Borrowed(&[
        1_000.0, 2_000.0, 2_500.0, 3_000.0, 4_000.0, 5_000.0, 6_000.0, 8_000.0, 10_000.0,
    ]),
    throughput_duration: Duration::from_secs(5),
    throughput_runs: 3,
    whole_ladder: false,
    stream_samples: 100,
    concurrent_streams: 2_000,
    login_duration: Duration::from_secs(10),
    storm_pairs: 3,
    settle: Duration::from_secs(3),
};

pub const SMOKE: Sizes = Sizes {
    latency_requests: 30,
    rest_chat_requests: 10,
    slow_rest_chat_requests: 5,
    studio_turns: 4,
    studio_load_rate: 50.0,
    studio_load_duration: Duration::from_millis(500),
    rates: Cow::Borrowed(&[50.0]),
    rate_duration: Duration::from_millis(400),
    throughput_rates: Cow::Borrowed(&[50.0, 100.0]),
    throughput_duration: Duration::from_millis(400),
    throughput_runs: 1,
    whole_ladder: false,
    stream_samples: 5,
    concurrent_streams: 20,
    login_duration: Duration::from_millis(500),
    storm_pairs: 1,
    settle: Duration::from_millis(200),
};

/// Where requests go and with what credentials.
#[derive(Clone)]
pub struct Targets {
    pub client: reqwest::Client,
    /// Whole chat answers go through these, one pool per [`Path`].
    pools: Arc<Vec<ConnPool>>,
    /// The mock's API base, `http://…/api/v1`.
    pub mock: String,
    /// The mock's process, whose CPU time the fixed rates report.
    mock_pid: u32,
    /// atelier's base URL.
    pub atelier: String,
    pub jwt: String,
    pub key: String,
    /// Where the fixed rates and the throughput runs write every request's
    /// send time and latency (`--timelines`), if anywhere.
    pub timelines: Option<std::path::PathBuf>,
}

/// The ways a chat request can go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Straight to the mock.
    Direct,
    /// `/v1/chat/completions` with an access token.
    V1Jwt,
    /// `/v1/chat/completions` with an API key.
    V1Key,
    /// `/ai/chat`: the studio's chat, which also stores the conversation.
    RestChat,
}

impl Path {
    const ALL: [Path; 4] = [Path::Direct, Path::V1Jwt, Path::V1Key, Path::RestChat];
}

fn chat_body(model: &str, stream: bool, max_tokens: Option<u32>) -> Value {
    let mut body = json!({
        "model": model,
        "messages": [{"role": "user", "content": "Say hello in one line"}],
        "stream": stream,
    });
    if let Some(max) = max_tokens {
        body["max_tokens"] = json!(max);
    }
    body
}

impl Targets {
    pub fn new(mock: &str, mock_pid: u32, atelier: &str) -> Result<Self> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(4_096)
            .timeout(Duration::from_secs(60))
            .build()?;
        Ok(Targets {
            client,
            pools: Arc::new(Vec::new()),
            mock: mock.to_owned(),
            mock_pid,
            atelier: atelier.to_owned(),
            jwt: String::new(),
            key: String::new(),
            timelines: None,
        })
    }

    /// Logs in as the bench's admin and makes an API key.
    pub async fn sign_in(&mut self) -> Result<()> {
        self.jwt = login(&self.client, &self.atelier).await?;
        let created: Value = self
            .client
            .post(format!("{}/users/me/api-keys", self.atelier))
            .bearer_auth(&self.jwt)
            .json(&json!({"name": "bench"}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        self.key = created["key"].as_str().unwrap_or_default().to_owned();
        let body = chat_body("mock/chat", false, None).to_string();
        let mut pools = Vec::new();
        for path in Path::ALL {
            let (url, token) = self.route(path);
            pools.push(ConnPool::new(
                Prepared::post_json(&url, token, &body).map_err(anyhow::Error::msg)?,
            ));
        }
        self.pools = Arc::new(pools);
        Ok(())
    }

    fn route(&self, path: Path) -> (String, &str) {
        match path {
            Path::Direct => (format!("{}/chat/completions", self.mock), MOCK_KEY),
            Path::V1Jwt => (format!("{}/v1/chat/completions", self.atelier), self.jwt.as_str()),
            Path::V1Key => (format!("{}/v1/chat/completions", self.atelier), self.key.as_str()),
            Path::RestChat => (format!("{}/ai/chat", self.atelier), self.jwt.as_str()),
        }
    }

    fn request(&self, path: Path, body: &Value) -> reqwest::RequestBuilder {
        let (url, token) = self.route(path);
        self.client.post(url).bearer_auth(token).json(body)
    }

    /// One whole `mock/chat` answer, read to the end.
    pub async fn chat(&self, path: Path) -> Result<(), String> {
        let pool = self.pools.get(path as usize).ok_or("not signed in")?;
        pool.send().await
    }
}

async fn login(client: &reqwest::Client, atelier: &str) -> Result<String> {
    let tokens: Value = client
        .post(format!("{atelier}/auth/login"))
        .json(&json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(tokens["access_token"].as_str().unwrap_or_default().to_owned())
}

/// A sender for the load loops.
fn sender(
    targets: &Targets,
    path: Path,
) -> impl Fn() -> futures_util::future::BoxFuture<'static, Result<(), String>> + Send + Sync + 'static {
    let targets = targets.clone();
    move || {
        let targets = targets.clone();
        Box::pin(async move { targets.chat(path).await })
    }
}

fn checked(outcome: Outcome, what: &str) -> Result<Outcome> {
    if outcome.latencies.is_empty() {
        bail!("{what}: no request succeeded ({:?})", outcome.first_error);
    }
    Ok(outcome)
}

// ---------------------------------------------------------------- 1. added latency

#[derive(Debug, Serialize)]
pub struct LatencyAtOne {
    pub path: Cow<'static, str>,
    pub comparison: Comparison,
}

/// The same request straight to the mock and through atelier, one at a time,
/// interleaved so drift hits both alike.
pub async fn latency_at_concurrency_one(t: &Targets, sizes: &Sizes) -> Result<Vec<LatencyAtOne>> {
    let warm = sizes.latency_requests.min(200);
    for _ in 0..warm {
        for path in [Path::Direct, Path::V1Jwt, Path::V1Key] {
            t.chat(path).await.map_err(anyhow::Error::msg)?;
        }
    }
    let mut samples: [Vec<Duration>; 3] = Default::default();
    let paths = [Path::Direct, Path::V1Jwt, Path::V1Key];
    for _ in 0..sizes.latency_requests {
        for (i, path) in paths.iter().enumerate() {
            let t0 = Instant::now();
            t.chat(*path).await.map_err(anyhow::Error::msg)?;
            samples[i].push(t0.elapsed());
        }
    }
    Ok(vec![
        LatencyAtOne {
            path: "/v1/chat/completions, access token".into(),
            comparison: Comparison::of(&samples[0], &samples[1]),
        },
        LatencyAtOne {
            path: "/v1/chat/completions, API key".into(),
            comparison: Comparison::of(&samples[0], &samples[2]),
        },
        studio_chat(t, sizes.rest_chat_requests, "/ai/chat (stores the conversation)").await?,
    ])
}

/// The studio's chat (`/ai/chat`, a new conversation each time) one request at
/// a time, each after the same request straight to the mock.
pub async fn studio_chat(t: &Targets, requests: usize, path: &'static str) -> Result<LatencyAtOne> {
    let mut rest = Vec::with_capacity(requests);
    let mut direct = Vec::with_capacity(requests);
    for _ in 0..requests {
        studio_pair(t, &mut direct, &mut rest).await?;
    }
    Ok(LatencyAtOne {
        path: path.into(),
        comparison: Comparison::of(&direct, &rest),
    })
}

/// One request straight to the mock, then the studio's turn with it, each timed.
async fn studio_pair(t: &Targets, direct: &mut Vec<Duration>, rest: &mut Vec<Duration>) -> Result<()> {
    for (path, times) in [(Path::Direct, direct), (Path::RestChat, rest)] {
        let t0 = Instant::now();
        t.chat(path).await.map_err(anyhow::Error::msg)?;
        times.push(t0.elapsed());
    }
    Ok(())
}

/// How often a studio turn is sent beside the `/v1` load.
const TURN_EVERY: Duration = Duration::from_millis(100);

/// The studio's chat while `/v1` traffic runs at `sizes.studio_load_rate`: a
/// turn (a new conversation, each after the same request straight to the mock)
/// every 100 ms for as long as the load lasts. A turn's own writes (the
/// question, the answer) then meet the gateway's usage batches and the
/// checkpoints after them (ADR-0037), which the quiet studio row cannot show.
pub async fn studio_chat_under_load(
    t: &Targets,
    sizes: &Sizes,
    mock_latency_ms: u64,
) -> Result<LatencyAtOne> {
    let (rate, duration) = (sizes.studio_load_rate, sizes.studio_load_duration);
    let turns = async {
        let (mut direct, mut rest) = (Vec::new(), Vec::new());
        let started = tokio::time::Instant::now();
        let mut next = started;
        while next.duration_since(started) < duration {
            studio_pair(t, &mut direct, &mut rest).await?;
            next += TURN_EVERY;
            tokio::time::sleep_until(next).await;
        }
        anyhow::Ok((direct, rest))
    };
    let (load, turns) = tokio::join!(open_loop(rate, duration, 4_096, sender(t, Path::V1Jwt)), turns);
    let (direct, rest) = turns?;
    if load.errors > 0 || load.latencies.is_empty() {
        bail!(
            "/v1 beside the studio's turns: {} errors ({:?})",
            load.errors,
            load.first_error
        );
    }
    Ok(LatencyAtOne {
        path: format!("/ai/chat against a {mock_latency_ms} ms model, beside /v1 at {rate:.0} req/s").into(),
        comparison: Comparison::of(&direct, &rest),
    })
}

/// Continued studio turns, and the conversation's page after each.
#[derive(Debug, Serialize)]
pub struct StudioTurns {
    /// `POST /ai/chat` with a `conversation_id`, not streamed.
    pub turn: Percentiles,
    /// `GET /ai/conversations/{id}`.
    pub page: Percentiles,
}

/// `turns` continued turns one at a time (the instant mock), in conversations
/// of ten, each turn followed by the conversation's page: what a conversation's
/// reads cost, which a new conversation's turn does not show.
pub async fn studio_turns(t: &Targets, turns: usize) -> Result<StudioTurns> {
    const PER_CONVERSATION: usize = 10;
    // One request read to its end, timed; an error status is an error.
    async fn timed(request: reqwest::RequestBuilder) -> Result<(Duration, Vec<u8>)> {
        let t0 = Instant::now();
        let body = request.send().await?.error_for_status()?.bytes().await?;
        Ok((t0.elapsed(), body.to_vec()))
    }
    let (mut turn, mut page) = (Vec::with_capacity(turns), Vec::with_capacity(turns));
    let mut body = chat_body("mock/chat", false, None);
    for i in 0..turns {
        if i % PER_CONVERSATION == 0 {
            body["conversation_id"] = Value::Null;
            let (_, first) = timed(t.request(Path::RestChat, &body)).await?;
            body["conversation_id"] = serde_json::from_slice::<Value>(&first)?["conversation_id"].clone();
        }
        let id = body["conversation_id"]
            .as_str()
            .context("no conversation_id")?
            .to_owned();
        turn.push(timed(t.request(Path::RestChat, &body)).await?.0);
        let read = t
            .client
            .get(format!("{}/ai/conversations/{id}", t.atelier))
            .bearer_auth(&t.jwt);
        page.push(timed(read).await?.0);
    }
    Ok(StudioTurns {
        turn: Percentiles::of(&turn),
        page: Percentiles::of(&page),
    })
}

// ---------------------------------------------------------------- fixed rates

#[derive(Debug, Serialize)]
pub struct AtRate {
    pub rate: f64,
    pub comparison: Comparison,
    pub achieved_rate: f64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// The sender's worst lag behind schedule, ms (large: the numbers understate).
    pub generator_lag_ms: f64,
    /// atelier's CPU time per request, ms.
    pub atelier_cpu_ms_per_request: f64,
    /// The mock's and the load generator's (this process's) over the same
    /// requests: on a machine they share, what they take is not atelier's.
    pub mock_cpu_ms_per_request: f64,
    pub generator_cpu_ms_per_request: f64,
    pub atelier_rss_mib: f64,
}

/// Each rate straight to the mock, then through atelier (access token).
pub async fn at_rate(t: &Targets, atelier: &Proc, rate: f64, duration: Duration) -> Result<AtRate> {
    let direct = checked(
        open_loop(rate, duration, 4_096, sender(t, Path::Direct)).await,
        "direct",
    )?;
    // atelier's, the mock's and the load generator's (this process's).
    let cpu_times = || {
        [
            atelier.cpu_time(),
            cpu_time_of(t.mock_pid),
            cpu_time_of(std::process::id()),
        ]
    };
    let cpu_before = cpu_times();
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = sample_rss(atelier.pid(), Arc::clone(&peak));
    let through = open_loop(rate, duration, 4_096, sender(t, Path::V1Jwt)).await;
    sampler.abort();
    let cpu_after = cpu_times();
    if let Some(dir) = &t.timelines {
        write_timelines(dir, rate, &direct, &through)?;
    }
    let served = (through.latencies.len() as u64 + through.errors).max(1);
    let per_request =
        |i: usize| cpu_after[i].saturating_sub(cpu_before[i]).as_secs_f64() * 1e3 / served as f64;
    Ok(AtRate {
        rate,
        comparison: Comparison::of(&direct.latencies, &through.latencies),
        achieved_rate: through.rate(),
        errors: through.errors + direct.errors,
        first_error: through.first_error.or(direct.first_error),
        generator_lag_ms: through.max_lag.max(direct.max_lag).as_secs_f64() * 1e3,
        atelier_cpu_ms_per_request: per_request(0),
        mock_cpu_ms_per_request: per_request(1),
        generator_cpu_ms_per_request: per_request(2),
        atelier_rss_mib: peak.load(Ordering::Relaxed) as f64 / 1024.0,
    })
}

/// Writes when each request of a run was sent and how long it took (`seconds
/// milliseconds` a line, after a `# started <seconds> CLOCK_MONOTONIC` line),
/// straight and through atelier, as
/// `<run>-<rate>-direct.txt` and `…-through.txt` in `dir`: `bench/tail-clusters`
/// shows whether the slowest requests came together.
fn write_timelines(dir: &std::path::Path, rate: f64, direct: &Outcome, through: &Outcome) -> Result<()> {
    let run = std::fs::read_dir(dir)?.count() / 2;
    for (path, outcome) in [("direct", direct), ("through", through)] {
        let mut lines = String::with_capacity(outcome.latencies.len() * 20);
        if let Some(started) = outcome.started_monotonic {
            lines.push_str(&format!(
                "# started {:.6} CLOCK_MONOTONIC\n",
                started.as_secs_f64()
            ));
        }
        for (sent, latency) in outcome.sent.iter().zip(&outcome.latencies) {
            lines.push_str(&format!(
                "{:.6} {:.4}\n",
                sent.as_secs_f64(),
                latency.as_secs_f64() * 1e3
            ));
        }
        std::fs::write(dir.join(format!("{run:03}-{rate}-{path}.txt")), lines)?;
    }
    Ok(())
}

/// Samples a process's resident memory (KiB) every 50 ms, keeping the peak.
fn sample_rss(pid: u32, peak: Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            if let Some(kib) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            {
                peak.fetch_max(kib, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

// ---------------------------------------------------------------- 2. throughput

#[derive(Debug, Serialize)]
pub struct Throughput {
    pub mock_latency_ms: u64,
    /// Every run of every rung, in order.
    pub steps: Vec<AtRate>,
    pub rungs: Vec<Rung>,
    /// The highest rate with no errors and an added p99 under 1 ms.
    pub best_rate: Option<f64>,
}

impl Throughput {
    /// The ladder's outcome; the best rate is the highest rung that passed.
    fn of(mock_latency_ms: u64, steps: Vec<AtRate>, rungs: Vec<Rung>) -> Self {
        let best_rate = rungs.iter().filter(|r| r.passed).map(|r| r.rate).reduce(f64::max);
        Throughput {
            mock_latency_ms,
            steps,
            rungs,
            best_rate,
        }
    }

    /// The best rate, and the rungs under it that failed (a median run that
    /// landed on the host's bursts), so a report does not hide them.
    pub fn best_rate_text(&self) -> String {
        let Some(best) = self.best_rate else {
            return "none passed".into();
        };
        let failed: Vec<String> = self
            .rungs
            .iter()
            .filter(|r| !r.passed && r.rate < best)
            .map(|r| format!("{:.0}", r.rate))
            .collect();
        if failed.is_empty() {
            format!("{best:.0} req/s")
        } else {
            format!("{best:.0} req/s (below it {} failed)", failed.join(", "))
        }
    }
}

/// One rate of the ladder over its runs.
#[derive(Debug, Serialize)]
pub struct Rung {
    pub rate: f64,
    /// The added p99 of each run, ms.
    pub added_p99_ms: Vec<f64>,
    pub median_added_p99_ms: f64,
    pub errors: u64,
    pub passed: bool,
}

/// Failing rungs in a row that end the ladder. One was not enough: a rung whose
/// median run still landed on the host's bursts (a 1,000 req/s rung at +1.27 ms
/// where 4,000 then passed alone) hid every rung above it.
const FAILED_RUNGS_THAT_END_THE_LADDER: usize = 2;

/// Rising rates against a 20 ms mock until two rungs in a row fail. On a shared
/// 2-core machine one 5-second run can land on a burst of the host's own work
/// (a p99 of tens of milliseconds where the runs beside it had one), so each
/// rung is run several times and judged by its median run; every run is
/// reported, and the best rate is the highest rung that passed.
pub async fn throughput(
    t: &Targets,
    atelier: &Proc,
    sizes: &Sizes,
    mock_latency_ms: u64,
) -> Result<Throughput> {
    let (mut steps, mut rungs) = (Vec::new(), Vec::new());
    let mut failed_in_a_row = 0;
    for &rate in sizes.throughput_rates.iter() {
        let mut runs = Vec::new();
        for _ in 0..sizes.throughput_runs.max(1) {
            runs.push(at_rate(t, atelier, rate, sizes.throughput_duration).await?);
        }
        let added: Vec<f64> = runs.iter().map(|r| r.comparison.added.p99_ms).collect();
        let errors = runs.iter().map(|r| r.errors).sum::<u64>();
        let short = runs.iter().any(|r| r.achieved_rate < rate * 0.95);
        let median = stats::median(&added);
        let passed = errors == 0 && !short && median < 1.0;
        eprintln!("  {rate:>6} req/s: added p99 {added:.3?} ms (median {median:.3}), {errors} errors");
        steps.append(&mut runs);
        rungs.push(Rung {
            rate,
            added_p99_ms: added,
            median_added_p99_ms: median,
            errors,
            passed,
        });
        failed_in_a_row = if passed { 0 } else { failed_in_a_row + 1 };
        if failed_in_a_row >= FAILED_RUNGS_THAT_END_THE_LADDER && !sizes.whole_ladder {
            break;
        }
    }
    Ok(Throughput::of(mock_latency_ms, steps, rungs))
}

// ---------------------------------------------------------------- 3. streaming

/// One stream: time to the first token and the gaps between tokens.
struct StreamTiming {
    first_token: Duration,
    gaps: Vec<Duration>,
    completed: bool,
}

async fn stream_once(
    t: &Targets,
    path: Path,
    model: &str,
    max_tokens: Option<u32>,
) -> Result<StreamTiming, String> {
    let t0 = Instant::now();
    let response = t
        .request(path, &chat_body(model, true, max_tokens))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(response.status().to_string());
    }
    let mut body = response.bytes_stream();
    let (mut first, mut last, mut gaps, mut completed) = (None, None::<Instant>, Vec::new(), false);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        let now = Instant::now();
        let text = String::from_utf8_lossy(&chunk);
        if text.contains("\"content\"") {
            if first.is_none() {
                first = Some(now - t0);
            }
            if let Some(previous) = last {
                gaps.push(now - previous);
            }
            last = Some(now);
        }
        completed |= text.contains("[DONE]");
    }
    Ok(StreamTiming {
        first_token: first.ok_or("no token arrived")?,
        gaps,
        completed,
    })
}

#[derive(Debug, Serialize)]
pub struct Streaming {
    pub token_delay_ms: u64,
    pub time_to_first_token: Comparison,
    pub gap_between_tokens: Comparison,
    /// The studio's streamed chat (`/ai/chat`, a new conversation each time),
    /// which stores the question while the model is asked (ADR-0032).
    pub studio_time_to_first_token: Comparison,
    pub concurrent: ConcurrentStreams,
}

#[derive(Debug, Serialize)]
pub struct ConcurrentStreams {
    pub streams: usize,
    pub completed: usize,
    pub errors: usize,
    pub first_error: Option<String>,
    /// Streams with a gap between tokens over a second (20 times the pace).
    pub stalled: usize,
    pub max_gap_ms: f64,
    pub gap_p99_ms: f64,
    pub rss_before_mib: f64,
    pub rss_peak_mib: f64,
    pub kib_per_stream: f64,
}

pub async fn streaming(t: &Targets, atelier: &Proc, sizes: &Sizes, token_delay_ms: u64) -> Result<Streaming> {
    // Times to first token straight, through `/v1` and through the studio's
    // chat; gaps between tokens straight and through `/v1`.
    let (mut ttft, mut gaps): ([Vec<Duration>; 3], [Vec<Duration>; 2]) = Default::default();
    for _ in 0..sizes.stream_samples {
        for (i, path) in [Path::Direct, Path::V1Jwt, Path::RestChat]
            .into_iter()
            .enumerate()
        {
            let timing = stream_once(t, path, "mock/chat", None)
                .await
                .map_err(anyhow::Error::msg)?;
            ttft[i].push(timing.first_token);
            if let Some(gaps) = gaps.get_mut(i) {
                gaps.extend(timing.gaps);
            }
        }
    }
    let concurrent = concurrent_streams(t, atelier, sizes.concurrent_streams).await?;
    Ok(Streaming {
        token_delay_ms,
        time_to_first_token: Comparison::of(&ttft[0], &ttft[1]),
        gap_between_tokens: Comparison::of(&gaps[0], &gaps[1]),
        studio_time_to_first_token: Comparison::of(&ttft[0], &ttft[2]),
        concurrent,
    })
}

/// `n` long streams at once through atelier (`mock/chat-slow`: 50 ms a token, 60
/// tokens, 3 s each), opened over one second.
async fn concurrent_streams(t: &Targets, atelier: &Proc, n: usize) -> Result<ConcurrentStreams> {
    let rss_before = atelier.rss_mib();
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = sample_rss(atelier.pid(), Arc::clone(&peak));
    let spacing = Duration::from_secs(1) / n.max(1) as u32;
    let mut tasks = Vec::new();
    for _ in 0..n {
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            stream_once(&t, Path::V1Jwt, "mock/chat-slow", Some(60)).await
        }));
        tokio::time::sleep(spacing).await;
    }
    let (mut completed, mut errors, mut first_error, mut stalled, mut all_gaps) = (0, 0, None, 0, Vec::new());
    for task in tasks {
        match task.await {
            Ok(Ok(timing)) => {
                completed += usize::from(timing.completed);
                stalled += usize::from(timing.gaps.iter().any(|g| *g > Duration::from_secs(1)));
                all_gaps.extend(timing.gaps);
            }
            Ok(Err(e)) => {
                errors += 1;
                first_error.get_or_insert(e);
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    sampler.abort();
    let gaps = Percentiles::of(&all_gaps);
    let rss_peak = peak.load(Ordering::Relaxed) as f64 / 1024.0;
    Ok(ConcurrentStreams {
        streams: n,
        completed,
        errors,
        first_error,
        stalled,
        max_gap_ms: gaps.max_ms,
        gap_p99_ms: gaps.p99_ms,
        rss_before_mib: rss_before,
        rss_peak_mib: rss_peak,
        kib_per_stream: (rss_peak - rss_before).max(0.0) * 1024.0 / n.max(1) as f64,
    })
}

// ---------------------------------------------------------------- 5. logins

#[derive(Debug, Serialize)]
pub struct Logins {
    pub logins_per_second: f64,
    pub login_p99_ms: f64,
    pub login_errors: u64,
    /// Chat at a steady rate alone, then during a login storm, in pairs.
    pub chat_rate: f64,
    pub pairs: Vec<StormPair>,
    /// The medians of the pairs' p99s.
    pub chat_alone_p99_ms: f64,
    pub chat_during_storm_p99_ms: f64,
    pub chat_errors: u64,
    pub p99_ratio: f64,
}

/// Chat alone, then the same chat during a login storm.
#[derive(Debug, Serialize)]
pub struct StormPair {
    pub alone: Percentiles,
    pub during_storm: Percentiles,
}

/// Login throughput alone, then chat alone and during a storm, in pairs: a
/// p99 from one 10-second run moves with the host's own bursts of work by as
/// much as the storm moves it, so the ratio is of the medians of the pairs.
pub async fn logins(t: &Targets, sizes: &Sizes) -> Result<Logins> {
    let login_sender = || {
        let (client, atelier) = (t.client.clone(), t.atelier.clone());
        move || {
            let (client, atelier) = (client.clone(), atelier.clone());
            Box::pin(async move {
                login(&client, &atelier)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }) as futures_util::future::BoxFuture<'static, Result<(), String>>
        }
    };
    let storm_alone = closed_loop(4, sizes.login_duration, 100_000, login_sender()).await;
    // Enough samples for a p99 that is not one outlier: 2,000 per run.
    let chat_rate = 200.0;
    let (mut pairs, mut chat_errors, mut login_errors) = (Vec::new(), 0, storm_alone.errors);
    for _ in 0..sizes.storm_pairs.max(1) {
        let alone = open_loop(chat_rate, sizes.login_duration, 1_024, sender(t, Path::V1Jwt)).await;
        let storm = tokio::spawn(closed_loop(8, sizes.login_duration, 100_000, login_sender()));
        let during = open_loop(chat_rate, sizes.login_duration, 1_024, sender(t, Path::V1Jwt)).await;
        login_errors += storm.await?.errors;
        chat_errors += alone.errors + during.errors;
        pairs.push(StormPair {
            alone: Percentiles::of(&alone.latencies),
            during_storm: Percentiles::of(&during.latencies),
        });
    }
    let median_of = |pick: fn(&StormPair) -> f64| stats::median(&pairs.iter().map(pick).collect::<Vec<_>>());
    let (alone_p99, during_p99) = (
        median_of(|p| p.alone.p99_ms),
        median_of(|p| p.during_storm.p99_ms),
    );
    Ok(Logins {
        logins_per_second: storm_alone.rate(),
        login_p99_ms: Percentiles::of(&storm_alone.latencies).p99_ms,
        login_errors,
        chat_rate,
        chat_alone_p99_ms: alone_p99,
        chat_during_storm_p99_ms: during_p99,
        pairs,
        chat_errors,
        p99_ratio: during_p99 / alone_p99.max(1e-9),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rung(rate: f64, passed: bool) -> Rung {
        Rung {
            rate,
            added_p99_ms: vec![],
            median_added_p99_ms: if passed { 0.5 } else { 1.5 },
            errors: 0,
            passed,
        }
    }

    fn ladder(rungs: Vec<Rung>) -> Throughput {
        Throughput::of(20, vec![], rungs)
    }

    #[test]
    fn the_best_rate_names_the_failed_rungs_below_it() {
        let t = ladder(vec![
            rung(1_000.0, false),
            rung(2_000.0, true),
            rung(4_000.0, true),
            rung(5_000.0, false),
        ]);
        assert_eq!(t.best_rate_text(), "4000 req/s (below it 1000 failed)");
        let t = ladder(vec![
            rung(1_000.0, true),
            rung(2_000.0, true),
            rung(4_000.0, false),
        ]);
        assert_eq!(t.best_rate_text(), "2000 req/s");
        let t = ladder(vec![rung(1_000.0, false), rung(2_000.0, false)]);
        assert_eq!(t.best_rate_text(), "none passed");
    }
}
