//! The store's error type. Backends map their driver errors into it; services turn
//! the domain variants into their own errors and treat the rest as internal faults.

use std::error::Error as StdError;

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another user already has this email address.
    #[error("email address already in use")]
    EmailTaken,
    /// The row the operation is about does not exist.
    #[error("not found")]
    NotFound,
    /// The operation would leave the system without any administrator.
    #[error("the last administrator cannot be removed or demoted")]
    LastAdmin,
    /// The database cannot be reached right now; retrying later may succeed.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Anything else the backend reported: a bug or a broken database, never the caller's fault.
    #[error("database error: {0}")]
    Backend(#[source] Box<dyn StdError + Send + Sync>),
}

impl StoreError {
    pub fn backend(err: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        StoreError::Backend(err.into())
    }
}
