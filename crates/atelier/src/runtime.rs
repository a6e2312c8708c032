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

use crate::config::{Connections, RuntimeSettings};
use crate::sys;

thread_local! {
    /// Whether this thread, a worker, has asked for the workers' slice.
    static HAS_WORKER_SLICE: Cell<bool> = const { Cell::new(false) };
}

/// Builds the multi-threaded runtime the settings describe: with pinned
/// connections it runs only the background work and the commands, on one
/// worker, and every serving thread has a runtime of its own
/// ([`build_serving`]).
pub fn build(settings: &RuntimeSettings) -> std::io::Result<Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    match settings.connections {
        Connections::Pinned => {
            builder.worker_threads(1);
        }
        Connections::Shared if settings.worker_threads > 0 => {
            builder.worker_threads(settings.worker_threads);
        }
        Connections::Shared => {}
    }
    configure(&mut builder, settings);
    builder.build()
}

/// The runtime of one serving thread, which serves every connection it accepts
/// (`runtime.connections = "pinned"`, ADR-0035); its blocking pool is its own.
pub fn build_serving(settings: &RuntimeSettings) -> std::io::Result<Runtime> {
    let mut builder = tokio::runtime::Builder::new_current_thread();
    configure(&mut builder, settings);
    builder.build()
}

/// How many threads serve connections.
pub fn serving_threads(settings: &RuntimeSettings) -> usize {
    match settings.worker_threads {
        0 => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        n => n,
    }
}

fn configure(builder: &mut tokio::runtime::Builder, settings: &RuntimeSettings) {
    builder.enable_all();
    let (worker, background) = (settings.thread_slice, settings.background_slice);
    if !(worker.is_zero() && background.is_zero()) {
        // The workers are threads of the blocking pool too (tokio starts them
        // there), so every thread starts with the background slice and a
        // worker takes its own when it first parks, which only workers (and a
        // current-thread runtime's own thread) do.
        builder.on_thread_start(move || set_slice(background));
        builder.on_thread_park(move || {
            if !HAS_WORKER_SLICE.replace(true) {
                set_slice(worker);
            }
        });
    }
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
        for connections in [Connections::Shared, Connections::Pinned] {
            let settings = RuntimeSettings {
                worker_threads: 2,
                connections,
                thread_slice: Duration::from_micros(200),
                background_slice: Duration::from_millis(3),
                ..RuntimeSettings::default()
            };
            let (worker, blocking) = std::thread::spawn(move || {
                let runtime = match connections {
                    Connections::Shared => build(&settings),
                    Connections::Pinned => build_serving(&settings),
                };
                runtime.expect("runtime").block_on(async {
                    // Idle workers park, and so take their slice, as they start.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    let worker = tokio::spawn(async { slice() }).await.expect("task");
                    let blocking = tokio::task::spawn_blocking(slice).await.expect("task");
                    (worker, blocking)
                })
            })
            .join()
            .expect("thread");
            assert_eq!(worker, Duration::from_micros(200), "{connections:?}");
            assert_eq!(blocking, Duration::from_millis(3), "{connections:?}");
        }
    }

    #[test]
    fn pinned_connections_leave_one_worker_for_the_background_and_serve_on_the_rest() {
        let settings = RuntimeSettings {
            worker_threads: 3,
            ..RuntimeSettings::default()
        };
        assert_eq!(settings.connections, Connections::Pinned);
        assert_eq!(build(&settings).expect("runtime").metrics().num_workers(), 1);
        assert_eq!(serving_threads(&settings), 3);
        let shared = RuntimeSettings {
            connections: Connections::Shared,
            ..settings
        };
        assert_eq!(build(&shared).expect("runtime").metrics().num_workers(), 3);
    }
}
