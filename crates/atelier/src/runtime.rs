//! The async runtime the server runs on: how many worker threads, and how the
//! kernel schedules them.
//!
//! Every request is parsed, checked, relayed and answered by the async workers
//! in bursts of tens of microseconds, and each worker serves many connections:
//! a worker kept off a core is a pause for all of them. Database calls, file
//! reads and password hashes run on the blocking pool in long stretches. On a
//! busy machine a woken worker used to wait for such a thread (or another
//! process) to use up its slice, up to 1.4 ms on 2 cores (`perf sched
//! timehist`: the delays lined up with the usage writer's flushes). So the
//! workers ask for a short slice (`runtime.thread_slice`, ADR-0023) and the
//! blocking pool, where the long stretches run, for a long one
//! (`runtime.background_slice`, ADR-0029): the kernel lets a woken thread with
//! a shorter slice than the running one's preempt it at once, while between
//! equal slices the woken one may wait for the next tick (4 ms at 250 Hz). The
//! background slice is longer than the kernel's default as well, so other
//! processes' threads (a proxy's, a client's) also preempt atelier's long work
//! as they wake.

use std::cell::Cell;
use std::time::Duration;

use tokio::runtime::Runtime;

use crate::config::RuntimeSettings;
use crate::sys;

thread_local! {
    /// Whether this thread, a worker, has asked for the workers' slice.
    static HAS_WORKER_SLICE: Cell<bool> = const { Cell::new(false) };
}

/// Builds the multi-threaded runtime the settings describe.
pub fn build(settings: &RuntimeSettings) -> std::io::Result<Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if settings.worker_threads > 0 {
        builder.worker_threads(settings.worker_threads);
    }
    let (worker, background) = (settings.thread_slice, settings.background_slice);
    if !(worker.is_zero() && background.is_zero()) {
        // The workers are threads of the blocking pool too (tokio starts them
        // there), so every thread starts with the background slice and a
        // worker takes its own when it first parks, which only workers do.
        builder.on_thread_start(move || set_slice(background));
        builder.on_thread_park(move || {
            if !HAS_WORKER_SLICE.replace(true) {
                set_slice(worker);
            }
        });
    }
    builder.build()
}

/// The thread that drives the runtime from outside (`block_on`: the accept loop
/// and shutdown) gets the workers' slice.
pub fn enter(settings: &RuntimeSettings) {
    if !settings.thread_slice.is_zero() {
        set_slice(settings.thread_slice);
    }
}

fn set_slice(slice: Duration) {
    if let Err(e) = sys::set_thread_slice(slice) {
        // Best effort: the server works the same with the kernel's default.
        tracing::debug!(error = %e, "cannot set the scheduling slice of a thread");
    }
}

#[cfg(test)]
#[cfg(target_os = "linux")]
mod tests {
    use super::*;

    fn slice() -> Duration {
        sys::thread_slice().expect("sched_getattr")
    }

    #[test]
    fn workers_take_the_short_slice_and_the_blocking_pool_the_long_one() {
        // Kernels before 6.12 report no slice for ordinary threads at all.
        if std::thread::spawn(slice).join().expect("thread").is_zero() {
            return;
        }
        let settings = RuntimeSettings {
            worker_threads: 2,
            thread_slice: Duration::from_micros(200),
            background_slice: Duration::from_millis(3),
            ..RuntimeSettings::default()
        };
        let runtime = build(&settings).expect("runtime");
        let (worker, blocking) = runtime.block_on(async {
            // Idle workers park, and so take their slice, as they start.
            tokio::time::sleep(Duration::from_millis(20)).await;
            let worker = tokio::spawn(async { slice() }).await.expect("task");
            let blocking = tokio::task::spawn_blocking(slice).await.expect("task");
            (worker, blocking)
        });
        assert_eq!(worker, Duration::from_micros(200));
        assert_eq!(blocking, Duration::from_millis(3));
    }
}
