//! Login credentials by email, kept in memory after the first lookup.
//!
//! A login's lookup is a DuckDB query of a few million instructions at normal
//! priority, and during a login storm those stretches on the blocking pool are
//! what the other requests wait behind (ADR-0028). Only this process writes
//! the file (DuckDB's lock, and `OPEN_FILES` within the process), so every
//! change to a user passes through this store, which forgets everything kept
//! after each such write. Unknown emails are not kept: a stream of made-up
//! addresses cannot grow the map, and a new account needs no invalidation.

use std::collections::HashMap;

use atelier_store::Credentials;
use parking_lot::Mutex;

/// Entries kept at most; when full, the map starts again empty.
const CAPACITY: usize = 4_096;

#[derive(Default)]
pub(crate) struct CredentialsCache {
    state: Mutex<State>,
}

/// When a lookup missed: handed back to [`CredentialsCache::keep`] with what
/// the database said, which is kept only if no write to users came between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Generation(u64);

#[derive(Default)]
struct State {
    /// Moved by every write to users: a lookup that started before a write
    /// may have read what the write replaced, and must not keep it.
    generation: u64,
    by_email: HashMap<String, Credentials>,
}

impl CredentialsCache {
    /// What was kept for `email`, or the generation its database lookup runs in.
    pub(crate) fn get(&self, email: &str) -> Result<Credentials, Generation> {
        let state = self.state.lock();
        state
            .by_email
            .get(email)
            .cloned()
            .ok_or(Generation(state.generation))
    }

    /// Keeps what a lookup read, unless a write to users happened since it began.
    pub(crate) fn keep(&self, since: Generation, email: &str, credentials: &Credentials) {
        let mut state = self.state.lock();
        if Generation(state.generation) != since {
            return;
        }
        if state.by_email.len() >= CAPACITY {
            state.by_email.clear();
        }
        state.by_email.insert(email.to_owned(), credentials.clone());
    }

    /// Called after every write to users, committed or not.
    pub(crate) fn forget_all(&self) {
        let mut state = self.state.lock();
        state.generation += 1;
        state.by_email.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use atelier_store::{Role, User};
    use chrono::Utc;
    use uuid::Uuid;

    fn credentials(hash: &str) -> Credentials {
        let now = Utc::now();
        Credentials {
            user: User {
                id: Uuid::now_v7(),
                email: "a@example.com".into(),
                role: Role::User,
                created_at: now,
                updated_at: now,
                tokens_valid_after: now,
            },
            password_hash: hash.into(),
        }
    }

    #[test]
    fn a_lookup_that_overlapped_a_write_is_not_kept() {
        let cache = CredentialsCache::default();
        let before = cache.get("a@example.com").expect_err("nothing kept yet");
        cache.forget_all(); // a write lands while the lookup runs
        cache.keep(before, "a@example.com", &credentials("old"));
        let now = cache.get("a@example.com").expect_err("the old hash was not kept");

        cache.keep(now, "a@example.com", &credentials("new"));
        assert_eq!(cache.get("a@example.com").unwrap().password_hash, "new");
        cache.forget_all();
        assert!(cache.get("a@example.com").is_err());
    }
}
