//! Conversions between PostgreSQL values and the store's types, and error mapping.

use atelier_store::StoreError;

/// Connection trouble is [`StoreError::Unavailable`] (retrying may help); anything
/// else the server or driver says is a backend fault.
pub(crate) fn err(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Tls(_) => StoreError::Unavailable(e.to_string()),
        other => StoreError::backend(other),
    }
}

/// Whether the error is a violation of a unique constraint (SQLSTATE 23505).
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error().is_some_and(|d| d.is_unique_violation())
}

pub(crate) fn count(n: i64) -> u64 {
    n.unsigned_abs()
}

/// Saturating, for counters stored as BIGINT.
pub(crate) fn bigint(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(crate) fn parse<T: std::str::FromStr>(text: &str) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    text.parse()
        .map_err(|e: T::Err| StoreError::backend(e.to_string()))
}
