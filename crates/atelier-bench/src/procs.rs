//! The processes under test: the mock upstream and atelier, started from the
//! built binaries, each on a free loopback port, and what the kernel says about
//! them (resident memory, CPU time).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

pub const MOCK_KEY: &str = "bench-mock-key";
pub const ADMIN_EMAIL: &str = "bench@example.com";
pub const ADMIN_PASSWORD: &str = "bench admin orchid kettle lantern";

/// The CPU time (user + system) a process has used so far, from /proc; zero
/// when it cannot be read.
pub fn cpu_time_of(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name is in parentheses and may hold spaces: count after it.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    // The kernel's clock tick is 100 Hz on every Linux this runs on.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// A child process killed when dropped.
pub struct Proc {
    child: Child,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory in MiB (from /proc).
    pub fn rss_mib(&self) -> f64 {
        self.status_mib("VmRSS:")
    }

    /// The anonymous part of the resident memory (heap, stacks): what is not
    /// mapped from a file such as the binary's code.
    pub fn rss_anon_mib(&self) -> f64 {
        self.status_mib("RssAnon:")
    }

    /// A field of /proc/PID/status given in kB, in MiB.
    fn status_mib(&self, field: &str) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    }

    /// CPU time used so far (user + system).
    pub fn cpu_time(&self) -> Duration {
        cpu_time_of(self.pid())
    }

    /// Stops with SIGTERM (graceful), waiting at most 30 s.
    pub fn stop(mut self) -> Result<()> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let started = Instant::now();
        while self.child.try_wait()?.is_none() {
            if started.elapsed() > Duration::from_secs(30) {
                bail!("process {} did not stop after SIGTERM", self.pid());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `cmd` and waits for a line matching `find` on the given stream.
fn spawn_until(mut cmd: Command, stdout: bool, find: fn(&str) -> Option<String>) -> Result<(Proc, String)> {
    if stdout {
        cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    } else {
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    }
    let mut child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    let stream: Box<dyn std::io::Read + Send> = if stdout {
        Box::new(child.stdout.take().context("stdout")?)
    } else {
        Box::new(child.stderr.take().context("stderr")?)
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        // Keep reading to the end so the child never blocks on a full pipe.
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if !sent && let Some(found) = find(&line) {
                let _ = tx.send(found);
                sent = true;
            }
        }
    });
    let proc = Proc { child };
    let found = rx
        .recv_timeout(Duration::from_secs(60))
        .map_err(|_| anyhow!("{cmd:?} did not start in 60 s"))?;
    Ok((proc, found))
}

/// The mock upstream: its answers take `latency_ms`, its tokens `token_delay_ms`.
pub fn start_mock(bin_dir: &Path, latency_ms: u64, token_delay_ms: u64) -> Result<(Proc, String)> {
    let mut cmd = Command::new(bin_dir.join("atelier-mock-upstream"));
    cmd.args(["--bind", "127.0.0.1:0", "--api-key", MOCK_KEY])
        .args(["--latency-ms", &latency_ms.to_string()])
        .args(["--token-delay-ms", &token_delay_ms.to_string()]);
    spawn_until(cmd, true, |line| {
        let start = line.find("http://")?;
        Some(line[start..].split_whitespace().next()?.to_owned())
    })
}

/// A fresh folder for atelier's database and media.
pub fn workdir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "atelier-bench-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// atelier on its embedded default (a DuckDB file in `dir`) against `upstream`.
/// Returns the process, its base URL and how long it took to answer `/readyz`.
pub async fn start_atelier(
    bin_dir: &Path,
    dir: &Path,
    upstream: &str,
    extra_env: &[(String, String)],
) -> Result<(Proc, String, Duration)> {
    let started = Instant::now();
    let mut cmd = Command::new(bin_dir.join("atelier"));
    cmd.arg("serve")
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("ATELIER_BIND", "127.0.0.1:0")
        .env("ATELIER_LOG_LEVEL", "warn,atelier::cli=info")
        .env("ATELIER_ADMIN_EMAIL", ADMIN_EMAIL)
        .env("ATELIER_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("ATELIER_AUTH__ACCESS_TOKEN_TTL", "2h")
        // The login storm is the point of one scenario; the per-address limit
        // would only measure the limiter.
        .env("ATELIER_LIMITS__LOGIN", "1000000/1s")
        .env("OPENROUTER_BASE_URL", upstream)
        .env("OPENROUTER_API_KEY", MOCK_KEY)
        .envs(extra_env.iter().map(|(k, v)| (k, v)));
    let (proc, base) = spawn_until(cmd, false, |line| {
        let start = line.find("listening on http://")? + "listening on ".len();
        Some(line[start..].split_whitespace().next()?.to_owned())
    })?;
    let client = reqwest::Client::builder().no_proxy().build()?;
    loop {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("atelier was not ready in 60 s");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok((proc, base, started.elapsed()))
}
