//! The async runtime the server runs on: how many worker threads, and how the
//! kernel schedules them.
//!
//! Every request is parsed, checked, relayed and answered by the async workers
//! in bursts of tens of microseconds, and each worker serves many connections:
//! a worker kept off a core is a pause for all of them. Database calls, file
//! reads and password hashes run on the blocking pool in long stretches. On a
//! busy machine a woken worker used to wait for such a thread (or another
//! process) to use up its slice, up to 1.4 ms on 2 cores (`perf sched
//! timehist`: the delays lined up with the usage writer's flushes). Every
//! thread of the runtime therefore asks for a short slice
//! (`runtime.thread_slice`): a waking worker preempts what runs, and the usage
//! writer's batch gives a core back within that long (ADR-0023).

use std::time::Duration;

use tokio::runtime::Runtime;

use crate::config::RuntimeSettings;
use crate::sys;

/// Builds the multi-threaded runtime the settings describe.
pub fn build(settings: &RuntimeSettings) -> std::io::Result<Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if settings.worker_threads > 0 {
        builder.worker_threads(settings.worker_threads);
    }
    let slice = settings.thread_slice;
    if !slice.is_zero() {
        // Every thread of the runtime: the workers, and the blocking pool's,
        // whose database work is what the others waited behind.
        builder.on_thread_start(move || set_slice(slice));
    }
    builder.build()
}

/// The thread that drives the runtime from outside (`block_on`: the accept loop
/// and shutdown) gets the same slice.
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
