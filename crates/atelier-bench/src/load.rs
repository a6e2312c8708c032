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
/// A thread of its own keeps the schedule, sleeping to each request's time
/// (the kernel's high-resolution timers, within its 50 µs slack) and handing
/// the request to the runtime. tokio's timer wakes only on whole milliseconds:
/// paced by it, 5,000 requests a second left as bursts of five every
/// millisecond, and their answers came back from a 20 ms upstream in the same
/// millisecond as the next burst, so the target queued up to ten at once. A
/// fixed rate means evenly spaced requests (as wrk2 sends them).
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
    let runtime = tokio::runtime::Handle::current();
    let started = Instant::now();
    let mut outcome = Outcome {
        started_monotonic: nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .ok()
            .map(Duration::from),
        ..Outcome::default()
    };
    let (paced, all_sent) = tokio::sync::oneshot::channel();
    let pacer = std::thread::Builder::new()
        .name("bench-pacer".into())
        .spawn(move || {
            let (mut max_lag, mut refused) = (Duration::ZERO, 0u64);
            for i in 0..total {
                let due = started + interval.mul_f64(i as f64);
                if let Some(early) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(early);
                }
                max_lag = max_lag.max(Instant::now().saturating_duration_since(due));
                let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                    refused += 1;
                    continue;
                };
                let (send, tx) = (Arc::clone(&send), tx.clone());
                runtime.spawn(async move {
                    let t0 = Instant::now();
                    let result = send().await.map(|()| t0.elapsed());
                    drop(permit);
                    let _ = tx.send((t0 - started, result));
                });
            }
            let _ = paced.send((max_lag, refused));
        });
    if let Err(e) = pacer {
        outcome.absorb(Err(format!("cannot start the pacing thread: {e}")));
        return outcome;
    }
    // Answers wait in the channel until everything was sent: read as they came,
    // each would wake this thread, a cost the load generator would add per request.
    let Ok((max_lag, refused)) = all_sent.await else {
        outcome.absorb(Err("the pacing thread failed".into()));
        return outcome;
    };
    outcome.max_lag = max_lag;
    for _ in 0..refused {
        outcome.absorb(Err(format!("more than {max_in_flight} requests in flight")));
    }
    // The channel closes when the pacer and every request have dropped their senders.
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

    /// At 5,000 a second a request leaves every 200 µs, not five at a time on
    /// each millisecond of tokio's timer (whose gaps would mostly be zero).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn open_loop_spaces_requests_evenly() {
        let outcome = open_loop(5_000.0, Duration::from_millis(200), 4_096, || async { Ok(()) }).await;
        assert_eq!(outcome.latencies.len(), 1_000);
        assert_eq!(outcome.errors, 0);
        let mut sent = outcome.sent.clone();
        sent.sort();
        let mut gaps: Vec<Duration> = sent.windows(2).map(|w| w[1] - w[0]).collect();
        gaps.sort();
        let median = gaps[gaps.len() / 2];
        // The median is what a busy test machine moves least.
        assert!(
            median > Duration::from_micros(100) && median < Duration::from_micros(400),
            "median gap {median:?}"
        );
    }

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
