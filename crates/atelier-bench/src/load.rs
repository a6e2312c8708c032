//! Load: closed loops (a number of workers sending back to back) and open loops
//! (a fixed rate, whatever the answers do). Every loop is bounded in time and in
//! count.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

/// What a run measured.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Latencies of the requests that succeeded.
    pub latencies: Vec<Duration>,
    /// For open loops: when each of those requests was sent, from the start of
    /// the run (in the order of `latencies`), to see whether slow ones cluster.
    pub sent: Vec<Duration>,
    /// For open loops: the start of the run by `CLOCK_MONOTONIC`, the clock
    /// `perf record -k CLOCK_MONOTONIC` stamps its events with, so that a
    /// cluster of slow requests can be found in a scheduler trace.
    pub started_monotonic: Option<Duration>,
    pub errors: u64,
    /// The first error, to report.
    pub first_error: Option<String>,
    /// How long the run took.
    pub elapsed: Duration,
    /// For open loops: how far behind schedule the sender fell at worst (a
    /// generator that cannot keep up would understate latency).
    pub max_lag: Duration,
}

impl Outcome {
    pub fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn absorb(&mut self, result: Result<Duration, String>) {
        match result {
            Ok(latency) => self.latencies.push(latency),
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }
}

/// `workers` tasks each send one request after another until `duration` has
/// passed or `max` requests were sent.
pub async fn closed_loop<F, Fut>(workers: usize, duration: Duration, max: u64, send: F) -> Outcome
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let send = Arc::new(send);
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let end = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (send, outcome, sent) = (Arc::clone(&send), Arc::clone(&outcome), Arc::clone(&sent));
        tasks.push(tokio::spawn(async move {
            let mut local = Outcome::default();
            while Instant::now() < end && sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < max {
                let t0 = Instant::now();
                let result = send().await.map(|()| t0.elapsed());
                local.absorb(result);
            }
            let mut all = outcome.lock().await;
            all.latencies.extend(local.latencies);
            all.errors += local.errors;
            if all.first_error.is_none() {
                all.first_error = local.first_error;
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let mut outcome = std::mem::take(&mut *outcome.lock().await);
    outcome.elapsed = started.elapsed();
    outcome
}

/// Requests at `rate` per second for `duration`, each started on schedule in its
/// own task, measured from when it was sent. At most `max_in_flight` at once;
/// beyond that a request counts as an error (the target is not keeping up).
///
/// Paced by tokio's timer, which wakes on whole milliseconds: at 3,000 req/s
/// three requests leave together each millisecond, as from `oha -q`. Evenly
/// spaced requests (a thread of its own sleeping to each one's time) were
/// measured and not kept: atelier, the mock and the generator each took a
/// fifth to a half more CPU a request at 2,000–3,000 req/s (presumably as each
/// request woke each process on its own) and the added p99 rose (README,
/// 2026-12-02).
pub async fn open_loop<F, Fut>(rate: f64, duration: Duration, max_in_flight: usize, send: F) -> Outcome
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let send = Arc::new(send);
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let permits = Arc::new(tokio::sync::Semaphore::new(max_in_flight));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let started = Instant::now();
    let mut outcome = Outcome {
        started_monotonic: nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .ok()
            .map(Duration::from),
        ..Outcome::default()
    };
    for i in 0..total {
        let due = started + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        outcome.max_lag = outcome.max_lag.max(Instant::now().saturating_duration_since(due));
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            outcome.absorb(Err(format!("more than {max_in_flight} requests in flight")));
            continue;
        };
        let (send, tx) = (Arc::clone(&send), tx.clone());
        tokio::spawn(async move {
            let t0 = Instant::now();
            let result = send().await.map(|()| t0.elapsed());
            drop(permit);
            let _ = tx.send((t0 - started, result));
        });
    }
    drop(tx);
    while let Some((sent, result)) = rx.recv().await {
        if result.is_ok() {
            outcome.sent.push(sent);
        }
        outcome.absorb(result);
    }
    outcome.elapsed = started.elapsed();
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn open_loop_counts_what_it_could_not_send_as_errors() {
        // One in flight at a time, each taking far longer than the interval.
        let outcome = open_loop(1_000.0, Duration::from_millis(50), 1, || async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            Ok(())
        })
        .await;
        assert!(outcome.errors > 0, "{outcome:?}");
        assert_eq!(outcome.latencies.len() as u64 + outcome.errors, 50);
        assert!(outcome.first_error.unwrap().contains("in flight"));
    }
}
