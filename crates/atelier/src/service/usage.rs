//! The usage record of every generation, written in batches.
//!
//! Recording must cost the request nothing measurable: records go through a
//! [`WriteBehind`] list, written every `runtime.usage_write_interval` (or as soon
//! as a batch is full) with one appender commit. When the list is full callers
//! wait rather than drop records: usage is billing data. Readers that must see
//! their own writes (the history) call [`UsageRecorder::flush`] first; shutdown
//! calls [`UsageRecorder::close`].

use std::sync::Arc;
use std::time::Duration;

use atelier_store::{GenerationRecord, Store};

use super::budgets::Budgets;
use super::write_behind::WriteBehind;

#[derive(Clone)]
pub struct UsageRecorder {
    records: WriteBehind<GenerationRecord>,
    /// Spend counts against budgets as soon as it is known, before it is written.
    budgets: Arc<Budgets>,
}

impl UsageRecorder {
    /// Starts the writer task; it runs until [`close`](Self::close).
    pub fn start(store: Arc<dyn Store>, budgets: Arc<Budgets>, interval: Duration) -> Self {
        let records = WriteBehind::start(store, |s, r| s.record_generations(r), "usage", interval);
        UsageRecorder { records, budgets }
    }

    pub async fn record(&self, record: GenerationRecord) {
        self.budgets.spend(record.user_id, record.cost_nanousd);
        self.records.push(record).await;
    }

    /// Returns once everything recorded so far is in the store.
    pub async fn flush(&self) {
        self.records.flush().await;
    }

    /// Writes what is left and stops the writer (at shutdown, after every task
    /// that records has ended).
    pub async fn close(&self) {
        self.records.close().await;
    }
}
