//! New sessions (logins' first refresh tokens), written behind (ADR-0033).
//!
//! A login's one write was its refresh token's row, in a transaction of its
//! own: about 1.8 ms of DuckDB on the blocking pool at normal priority, once a
//! login. During a storm of logins those stretches were what kept chat waiting
//! for a core (chat's p99 2.2–2.8× its p99 without the storm; 0.9–1.25× with
//! the write taken out). So a new session is kept in memory and written within
//! [`WRITE_WITHIN`], one appender for all the logins of that second.
//!
//! Every operation that reads or changes refresh tokens, or changes or deletes
//! users, writes what waits first (`Connections::write_after_sessions`), so
//! each finds the session in the table: a refresh a moment after the login, a
//! logout, a password change that revokes every other session. This is exact
//! because only this process writes the file (DuckDB's file lock; ADR-0028's
//! reasoning). Shutdown (`close`, or the
//! store dropped) writes what waits; a crash loses up to [`WRITE_WITHIN`] of
//! new sessions, whose users log in again once their access token expires.
//! PostgreSQL, which several instances share, writes each session at once.

use std::time::Duration;

use atelier_store::{NewSession, StoreResult};
use duckdb::Connection;
use parking_lot::Mutex;

use crate::tokens;

/// The longest a new session waits in memory when no operation on refresh
/// tokens writes it first.
pub(crate) const WRITE_WITHIN: Duration = Duration::from_secs(1);

#[derive(Default)]
pub(crate) struct PendingSessions(Mutex<Waiting>);

#[derive(Default)]
struct Waiting {
    sessions: Vec<NewSession>,
    /// Whether a timed write is arranged (`Connections::keep_session`).
    timed: bool,
}

impl PendingSessions {
    /// Keeps `session`; true when no timed write is arranged yet, so that the
    /// caller arranges one.
    pub(crate) fn push(&self, session: NewSession) -> bool {
        let mut waiting = self.0.lock();
        waiting.sessions.push(session);
        !std::mem::replace(&mut waiting.timed, true)
    }

    /// For the timed write, after writing: false, and no timed write arranged
    /// any more, when nothing waits; true when sessions came meanwhile (or a
    /// write failed), so that it writes again.
    pub(crate) fn still_waiting(&self) -> bool {
        let mut waiting = self.0.lock();
        waiting.timed = !waiting.sessions.is_empty();
        waiting.timed
    }

    /// Writes the waiting sessions in a transaction of their own. Called on the
    /// writer connection with its lock held, so they are in the table before
    /// the write that comes next. On failure they are kept, ahead of newer
    /// ones, and the error is returned: the write that was to follow must not
    /// run without them (a password change would miss a session to revoke).
    pub(crate) fn write(&self, conn: &mut Connection) -> StoreResult<()> {
        let batch = std::mem::take(&mut self.0.lock().sessions);
        if batch.is_empty() {
            return Ok(());
        }
        let written = crate::conn::transact(conn, |tx| tokens::append_sessions(tx, &batch));
        if let Err(e) = &written {
            tracing::error!(error = %e, count = batch.len(), "cannot write new sessions; will retry");
            let mut waiting = self.0.lock();
            let newer = std::mem::replace(&mut waiting.sessions, batch);
            waiting.sessions.extend(newer);
        }
        written
    }
}
