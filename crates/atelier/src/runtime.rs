//! The async runtime the server runs on: how many worker threads, and how the
//! kernel schedules them.
//!
//! Every request is parsed, checked, relayed and answered by the async workers
//! in bursts of tens of microseconds, and each worker serves many connections:
//! a worker kept off a core is a pause for all of them. Database calls, file
//! reads and password hashes run on other threads in long stretches. On a busy
//! machine a woken worker used to wait for such a thread (or another process) to
//! use up its slice, up to 1.4 ms on 2 cores (`perf sched timehist`: the
//! delays lined up with the usage writer's flushes). The workers therefore ask
//! for a short slice (`runtime.worker_slice`), which lets them preempt a longer
//! one as they wake (ADR-0023).

use std::cell::Cell;
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
    let slice = settings.worker_slice;
    if !slice.is_zero() {
        // A new thread inherits its creator's slice: the blocking pool's threads
        // are started by workers, and go back to the kernel's default.
        builder.on_thread_start(|| set_slice(Duration::ZERO));
        // Only workers park (the blocking pool's threads wait otherwise), and each
        // parks as soon as it starts with nothing to do.
        builder.on_thread_park(move || slice_once(slice));
    }
    builder.build()
}

/// The thread that drives the runtime from outside (`block_on`: the accept loop
/// and shutdown) gets the workers' slice too.
pub fn enter(settings: &RuntimeSettings) {
    if !settings.worker_slice.is_zero() {
        slice_once(settings.worker_slice);
    }
}

thread_local! {
    static SLICED: Cell<bool> = const { Cell::new(false) };
}

fn slice_once(slice: Duration) {
    if !SLICED.replace(true) {
        set_slice(slice);
    }
}

fn set_slice(slice: Duration) {
    if let Err(e) = sys::set_thread_slice(slice) {
        // Best effort: the server works the same with the kernel's default.
        tracing::debug!(error = %e, "cannot set the scheduling slice of a thread");
    }
}
