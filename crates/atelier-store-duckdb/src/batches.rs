//! The thread that writes the write-behind batches (usage records, audit
//! events) at the lowest priority Linux has.
//!
//! A batch is thousands of rows under load: a few milliseconds of one core in
//! stretches of one to three (DuckDB's appender flush and its commit cannot be
//! cut up), twice a second at 4,000 requests a second. At normal priority the
//! requests that woke behind such a stretch on a shared 2-core machine waited
//! for it, and the slowest hundredth of them came in clusters every batch.
//! Under `SCHED_IDLE` any other thread that wakes takes the core at once, and
//! the batch runs on what the requests leave (ADR-0034). A thread cannot take
//! its priority back without privilege, so the batches have a thread of their
//! own rather than borrowing the blocking pool's.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;

use thread_priority::unix::{
    NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy, thread_native_id,
};

type Job = Box<dyn FnOnce() + Send>;

/// Hands jobs to the batch thread, which ends when this is dropped (after the
/// jobs already sent).
pub(crate) struct BatchThread {
    jobs: mpsc::Sender<Job>,
}

impl BatchThread {
    /// `at_idle_priority: false` leaves the thread at normal priority
    /// (`runtime.idle_batch_writes`).
    pub(crate) fn start(at_idle_priority: bool) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("atelier-batches".into())
            .spawn(move || {
                let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
                if at_idle_priority
                    && let Err(e) =
                        set_thread_priority_and_policy(thread_native_id(), thread_priority::ThreadPriority::Min, idle)
                {
                    tracing::warn!(error = ?e, "cannot lower the batch writer's priority; it runs at normal priority");
                }
                for job in queue {
                    // A panicking job drops its result sender: its caller gets an
                    // error, and the thread goes on with the next.
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                }
            })?;
        Ok(BatchThread { jobs })
    }

    /// Runs `f` on the batch thread and returns its result.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Stopped> {
        let (done, result) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = done.send(f());
            }))
            .map_err(|_| Stopped)?;
        result.await.map_err(|_| Stopped)
    }
}

/// The batch thread ended (or the job panicked) before answering.
#[derive(Debug, thiserror::Error)]
#[error("the database's batch writer stopped before finishing a write")]
pub(crate) struct Stopped;
