//! Gives memory freed after a burst of work back to the operating system.
//!
//! glibc keeps what a thread frees in that thread's arena instead of returning it,
//! so after a burst the process stays resident at its peak. DuckDB's own worker
//! threads used to call `malloc_trim` whenever they went idle; since DuckDB runs
//! each query on the calling thread (ADR-0019) none does, and resident memory under
//! and after load was 20–25 MiB higher (measured A/B, ADR-0020). So the server
//! trims once after start-up and then once a second while it has been busy; an
//! idle server only looks at its CPU time once a second.
//!
//! One second after start-up the server also lets go of its resident copy of the
//! program pages only start-up used (ADR-0021): DuckDB's catalogue set-up alone
//! leaves tens of MiB of machine code and constants resident that serving never
//! touches again.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::sys;

const PERIOD: Duration = Duration::from_secs(1);
/// CPU time within one period below which the server counts as idle: a timer's
/// wake-up costs microseconds, a request tens of them.
const BUSY: Duration = Duration::from_millis(1);

/// Starts the trimming task; it ends when `stop` is cancelled.
pub fn start_trimming(tracker: &TaskTracker, stop: CancellationToken) {
    tracker.spawn(async move {
        // Start-up is over within the first period: the listener is bound and the
        // store open before the workers start.
        tokio::select! {
            () = tokio::time::sleep(PERIOD) => {}
            () = stop.cancelled() => return,
        }
        let _ = tokio::task::spawn_blocking(after_start_up).await;
        let mut busy_before = sys::process_cpu_time();
        let mut tick = tokio::time::interval(PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => return,
            }
            if sys::process_cpu_time().saturating_sub(busy_before) >= BUSY {
                trim().await;
            }
            // Counted after the trim, whose own work is not the server's.
            busy_before = sys::process_cpu_time();
        }
    });
}

fn after_start_up() {
    match sys::release_program_pages() {
        Ok(bytes) => tracing::debug!(mib = bytes >> 20, "released the program's start-up pages"),
        Err(e) => tracing::warn!(error = %e, "cannot release the program's start-up pages"),
    }
    sys::trim_heap();
}

/// On a blocking thread: the trim walks every arena, which can take a while.
async fn trim() {
    let _ = tokio::task::spawn_blocking(sys::trim_heap).await;
}
