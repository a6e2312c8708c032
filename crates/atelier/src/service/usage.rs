//! The usage record of every generation, written in batches.
//!
//! Recording must cost the request nothing measurable, so records go into a bounded
//! queue and one background task writes them in batches (one appender commit for
//! hundreds of rows). A full queue makes callers wait rather than drop records:
//! usage is billing data. Readers that must see their own writes (the history)
//! call [`UsageRecorder::flush`] first.

use std::sync::Arc;
use std::time::Duration;

use atelier_store::{GenerationRecord, Store};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::budgets::Budgets;

const QUEUE: usize = 10_000;
const BATCH: usize = 500;
const INTERVAL: Duration = Duration::from_millis(200);

enum Command {
    Record(Box<GenerationRecord>),
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct UsageRecorder {
    tx: mpsc::Sender<Command>,
    /// Spend counts against budgets as soon as it is known, before it is written.
    budgets: Arc<Budgets>,
}

impl UsageRecorder {
    /// Starts the writer on `tracker`; it drains the queue and stops on `stop`.
    pub fn start(
        store: Arc<dyn Store>,
        budgets: Arc<Budgets>,
        tracker: &TaskTracker,
        stop: CancellationToken,
    ) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tracker.spawn(write_loop(store, rx, stop));
        UsageRecorder { tx, budgets }
    }

    pub async fn record(&self, record: GenerationRecord) {
        self.budgets.spend(record.user_id, record.cost_nanousd);
        if self.tx.send(Command::Record(Box::new(record))).await.is_err() {
            tracing::error!("usage writer has stopped; a usage record was lost");
        }
    }

    /// Returns once everything recorded so far is in the store.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Command::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

async fn write_loop(store: Arc<dyn Store>, mut rx: mpsc::Receiver<Command>, stop: CancellationToken) {
    let mut batch: Vec<GenerationRecord> = Vec::new();
    let mut tick = tokio::time::interval(INTERVAL);
    loop {
        tokio::select! {
            command = rx.recv() => match command {
                Some(Command::Record(record)) => {
                    batch.push(*record);
                    if batch.len() >= BATCH {
                        write(store.as_ref(), &mut batch).await;
                    }
                }
                Some(Command::Flush(done)) => {
                    write(store.as_ref(), &mut batch).await;
                    let _ = done.send(());
                }
                None => break,
            },
            _ = tick.tick() => write(store.as_ref(), &mut batch).await,
            () = stop.cancelled() => break,
        }
    }
    // Shutting down: take what is still queued.
    rx.close();
    while let Some(command) = rx.recv().await {
        match command {
            Command::Record(record) => batch.push(*record),
            Command::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
    write(store.as_ref(), &mut batch).await;
}

async fn write(store: &dyn Store, batch: &mut Vec<GenerationRecord>) {
    if batch.is_empty() {
        return;
    }
    let records = std::mem::take(batch);
    if let Err(e) = store.record_generations(&records).await {
        // Kept for the next attempt rather than lost.
        tracing::error!(error = %e, count = records.len(), "cannot write usage records; will retry");
        *batch = records;
    }
}
