//! Conversions between DuckDB values and the store's types.
//!
//! Timestamps cross the boundary as microseconds since the Unix epoch: written with
//! `make_timestamp(?)`, read with `epoch_us(column)`, so the columns stay real
//! `TIMESTAMP`s for anyone querying the file, without DuckDB's chrono feature.

use atelier_store::{StoreError, StoreResult};
use chrono::{DateTime, Utc};
use std::sync::Arc;

use duckdb::arrow::array::{ArrayRef, Int64Array, StringArray, TimestampMicrosecondArray};
use duckdb::arrow::record_batch::RecordBatch;
use duckdb::{Appender, Connection};
use uuid::Uuid;

pub(crate) fn err(e: duckdb::Error) -> StoreError {
    StoreError::backend(e)
}

/// Runs a statement prepared once per connection, for those that logins, chats and
/// refreshes run every time: DuckDB parses, binds and plans a statement sent as
/// text each time it runs (callgrind: the audit INSERT 5.0 M instructions as
/// text, 2.7 M prepared once).
pub(crate) fn execute(
    conn: &duckdb::Connection,
    sql: &str,
    params: impl duckdb::Params,
) -> Result<(), StoreError> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute(params))
        .map(drop)
        .map_err(err)
}

pub(crate) fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// Rows appended between two yields of the core: about 2 M instructions, half
/// a millisecond (15 k a row, ADR-0025).
const ROWS_PER_YIELD: usize = 128;

/// Appends one row per record to `table` with `row`, then flushes (audit
/// events, new sessions). A batch of thousands of rows (as the usage records
/// were, ADR-0034) would hold a core for several
/// milliseconds at once, and whatever woke up behind it on that core (a
/// request's worker, the upstream's or the client's threads on a shared
/// machine) would wait that long; so the writer yields the core every
/// [`ROWS_PER_YIELD`] rows, which costs one system call when nothing waits
/// (ADR-0031).
pub(crate) fn append_rows<T>(
    tx: &Connection,
    table: &str,
    records: &[T],
    mut row: impl FnMut(&mut Appender<'_>, &T) -> duckdb::Result<()>,
) -> StoreResult<()> {
    let mut appender = tx.appender(table).map_err(err)?;
    for (i, record) in records.iter().enumerate() {
        if i > 0 && i % ROWS_PER_YIELD == 0 {
            std::thread::yield_now();
        }
        row(&mut appender, record).map_err(err)?;
    }
    appender.flush().map_err(err)
}

/// Appends `records` to `table` a column at a time: `columns` turns them into
/// one array per column of the table, in the table's order and of its types
/// (`Utf8` for `VARCHAR`, `Int64` for `BIGINT`, microsecond `Timestamp` for
/// `TIMESTAMP`). DuckDB copies such a batch into its vectors a column at a
/// time, where [`append_rows`] goes through its appender value by value: for
/// the usage records, thousands a second under load, about 2 k instructions a
/// row instead of 5 k before DuckDB's own flush and commit (ADR-0034). No
/// yields: the batch thread that runs it gives the core to anyone who wakes.
pub(crate) fn append_columns<T>(
    tx: &Connection,
    table: &str,
    records: &[T],
    columns: impl FnOnce(&[T]) -> Vec<(&'static str, ArrayRef)>,
) -> StoreResult<()> {
    let batch = RecordBatch::try_from_iter(columns(records)).map_err(StoreError::backend)?;
    let mut appender = tx.appender(table).map_err(err)?;
    appender.append_record_batch(batch).map_err(err)?;
    appender.flush().map_err(err)
}

/// A `VARCHAR` column of [`append_columns`]: `text` of each record.
pub(crate) fn text_column<'a, T, S: AsRef<str>>(records: &'a [T], text: impl Fn(&'a T) -> S) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(records.iter().map(text)))
}

/// A nullable `VARCHAR` column of [`append_columns`].
pub(crate) fn optional_text_column<'a, T, S: AsRef<str>>(
    records: &'a [T],
    text: impl Fn(&'a T) -> Option<S>,
) -> ArrayRef {
    Arc::new(records.iter().map(text).collect::<StringArray>())
}

/// A `BIGINT` column of [`append_columns`].
pub(crate) fn integer_column<T>(records: &[T], value: impl Fn(&T) -> i64) -> ArrayRef {
    Arc::new(Int64Array::from_iter_values(records.iter().map(value)))
}

/// A `TIMESTAMP` column of [`append_columns`].
pub(crate) fn timestamp_column<T>(records: &[T], time: impl Fn(&T) -> DateTime<Utc>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from_iter_values(
        records.iter().map(|r| micros(time(r))),
    ))
}

/// A count as a `BIGINT` (the largest one stands for anything larger).
pub(crate) fn bigint(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A timestamp as the appender takes it (it has no `make_timestamp`).
pub(crate) fn timestamp(t: DateTime<Utc>) -> duckdb::types::Value {
    duckdb::types::Value::Timestamp(duckdb::types::TimeUnit::Microsecond, micros(t))
}

pub(crate) fn time(us: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(us)
        .ok_or_else(|| StoreError::backend(format!("timestamp out of range: {us} µs")))
}

pub(crate) fn uuid(text: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(text).map_err(StoreError::backend)
}

pub(crate) fn count(n: i64) -> u64 {
    n.unsigned_abs()
}
