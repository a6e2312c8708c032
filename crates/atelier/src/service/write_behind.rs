//! Records that requests produce and one background task writes in batches.
//!
//! A store write's fixed cost (a transaction, an appender, a commit) is most of
//! it: about 6.9 M instructions for a DuckDB write before its first row, 15 k a
//! row after it (ADR-0025). So records that no request has to read back at once
//! (usage, audit events) are pushed onto a shared list under a short lock, with
//! no task to wake, and a writer task writes the list every `interval` or as
//! soon as it holds a full batch. When the list is full callers wait rather than
//! drop records. Readers that must see their own writes call
//! [`WriteBehind::flush`] first; shutdown calls [`WriteBehind::close`].

use std::sync::Arc;
use std::time::Duration;

use atelier_store::{Store, StoreResult};
use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Records held before callers wait.
const QUEUE: usize = 10_000;
/// Records that make the writer start at once: DuckDB appends in chunks of 2,048.
const BATCH: usize = 2_048;

/// Writes one batch, in order, as one store call.
pub type WriteBatch<T> = for<'a> fn(&'a dyn Store, &'a [T]) -> BoxFuture<'a, StoreResult<()>>;

struct Shared<T> {
    store: Arc<dyn Store>,
    write: WriteBatch<T>,
    /// What the records are, for the log.
    what: &'static str,
    pending: Mutex<Vec<T>>,
    /// Wakes the writer early: a batch is full.
    full: Notify,
    /// Wakes callers waiting for room.
    room: Notify,
    /// One write at a time, so records reach the store in order.
    writing: tokio::sync::Mutex<()>,
    closed: CancellationToken,
}

pub struct WriteBehind<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for WriteBehind<T> {
    fn clone(&self) -> Self {
        WriteBehind {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T: Send + Sync + 'static> WriteBehind<T> {
    /// Starts the writer task; it runs until [`close`](Self::close).
    pub fn start(
        store: Arc<dyn Store>,
        write: WriteBatch<T>,
        what: &'static str,
        interval: Duration,
    ) -> Self {
        let shared = Arc::new(Shared {
            store,
            write,
            what,
            pending: Mutex::new(Vec::new()),
            full: Notify::new(),
            room: Notify::new(),
            writing: tokio::sync::Mutex::new(()),
            closed: CancellationToken::new(),
        });
        tokio::spawn(write_loop(Arc::clone(&shared), interval));
        WriteBehind { shared }
    }

    pub async fn push(&self, record: T) {
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

    /// Returns once everything pushed so far is in the store (or has failed to
    /// be written, and is kept for the next attempt).
    pub async fn flush(&self) {
        self.shared.write().await;
    }

    /// Writes what is left and stops the writer (at shutdown, after every task
    /// that pushes has ended).
    pub async fn close(&self) {
        self.shared.closed.cancel();
        self.shared.write().await;
    }
}

async fn write_loop<T: Send + Sync + 'static>(shared: Arc<Shared<T>>, interval: Duration) {
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

impl<T: Send + Sync + 'static> Shared<T> {
    async fn write(&self) {
        let _writing = self.writing.lock().await;
        let records = std::mem::take(&mut *self.pending.lock());
        if records.is_empty() {
            return;
        }
        match (self.write)(self.store.as_ref(), &records).await {
            Ok(()) => self.room.notify_waiters(),
            Err(e) => {
                // Kept, ahead of newer ones, for the next attempt rather than lost.
                tracing::error!(error = %e, count = records.len(), "cannot write {} records; will retry", self.what);
                let mut pending = self.pending.lock();
                let newer = std::mem::replace(&mut *pending, records);
                pending.extend(newer);
            }
        }
    }
}
