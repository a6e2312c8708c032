//! The usage record of every generation, written in batches.
//!
//! Recording must cost the request nothing measurable: a record is pushed onto a
//! shared list under a short lock, with no task to wake, and one background task
//! writes the list every `runtime.usage_write_interval` (or as soon as it holds a
//! full batch) with one appender commit: a write's fixed cost (a transaction, an
//! appender) is most of it, so fewer, larger writes cost less. When the list is full callers wait rather than drop records:
//! usage is billing data. Readers that must see their own writes (the history)
//! call [`UsageRecorder::flush`] first; shutdown calls [`UsageRecorder::close`].

use std::sync::Arc;
use std::time::Duration;

use atelier_store::{GenerationRecord, Store};
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::budgets::Budgets;

/// Records held before callers wait.
const QUEUE: usize = 10_000;
/// Records that make the writer start at once: DuckDB appends in chunks of 2,048.
const BATCH: usize = 2_048;

struct Shared {
    store: Arc<dyn Store>,
    pending: Mutex<Vec<GenerationRecord>>,
    /// Wakes the writer early: a batch is full.
    full: Notify,
    /// Wakes callers waiting for room.
    room: Notify,
    /// One write at a time, so records reach the store in order.
    writing: tokio::sync::Mutex<()>,
    closed: CancellationToken,
}

#[derive(Clone)]
pub struct UsageRecorder {
    shared: Arc<Shared>,
    /// Spend counts against budgets as soon as it is known, before it is written.
    budgets: Arc<Budgets>,
}

impl UsageRecorder {
    /// Starts the writer task; it runs until [`close`](Self::close).
    pub fn start(store: Arc<dyn Store>, budgets: Arc<Budgets>, interval: Duration) -> Self {
        let shared = Arc::new(Shared {
            store,
            pending: Mutex::new(Vec::with_capacity(BATCH)),
            full: Notify::new(),
            room: Notify::new(),
            writing: tokio::sync::Mutex::new(()),
            closed: CancellationToken::new(),
        });
        tokio::spawn(write_loop(Arc::clone(&shared), interval));
        UsageRecorder { shared, budgets }
    }

    pub async fn record(&self, record: GenerationRecord) {
        self.budgets.spend(record.user_id, record.cost_nanousd);
        let mut record = Some(record);
        loop {
            // Registered before the check, so a write in between is not missed.
            let room = self.shared.room.notified();
            {
                let mut pending = self.shared.pending.lock();
                if pending.len() < QUEUE {
                    pending.extend(record.take());
                    if pending.len() == BATCH {
                        self.shared.full.notify_one();
                    }
                    return;
                }
            }
            self.shared.full.notify_one();
            room.await;
        }
    }

    /// Returns once everything recorded so far is in the store.
    pub async fn flush(&self) {
        self.shared.write().await;
    }

    /// Writes what is left and stops the writer (at shutdown, after every task
    /// that records has ended).
    pub async fn close(&self) {
        self.shared.closed.cancel();
        self.shared.write().await;
    }
}

async fn write_loop(shared: Arc<Shared>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shared.full.notified() => {}
            () = shared.closed.cancelled() => return,
        }
        shared.write().await;
    }
}

impl Shared {
    async fn write(&self) {
        let _writing = self.writing.lock().await;
        let records = std::mem::take(&mut *self.pending.lock());
        if records.is_empty() {
            return;
        }
        match self.store.record_generations(&records).await {
            Ok(()) => self.room.notify_waiters(),
            Err(e) => {
                // Kept, ahead of newer ones, for the next attempt rather than lost.
                tracing::error!(error = %e, count = records.len(), "cannot write usage records; will retry");
                let mut pending = self.pending.lock();
                let newer = std::mem::replace(&mut *pending, records);
                pending.extend(newer);
            }
        }
    }
}
