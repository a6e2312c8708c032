//! The in-memory half of access-token validation: is this token still honoured?
//!
//! A signature check alone would keep a token working until it expires. This cache
//! knows, for every user, their current role and the instant before which their
//! tokens are void (`tokens_valid_after`: moved by a role change, a password change,
//! and gone with a deleted user), and which login sessions were ended (logout, reuse
//! detection). The services that change those facts update the cache in the same
//! breath as the store, so revocation is immediate and costs no database round trip.
//! A user missing from the cache (created by another instance, say) is looked up in
//! the store once by the caller and added.

use std::collections::HashMap;

use atelier_store::{AuthState, Role};
use chrono::Utc;
use parking_lot::RwLock;
use uuid::Uuid;

use super::jwt::Claims;

/// What the cache says about a token's claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Honour it, with the user's current role.
    Valid(Role),
    /// Issued before a revocation, or its session was ended.
    Revoked,
    /// The user is not in the cache; ask the store.
    UnknownUser,
}

#[derive(Default)]
pub struct Revocations {
    users: RwLock<HashMap<Uuid, UserEntry>>,
    /// Ended sessions, with when the last access token they issued expires anyway.
    ended_sessions: RwLock<HashMap<Uuid, i64>>,
}

#[derive(Debug, Clone, Copy)]
struct UserEntry {
    role: Role,
    valid_after_ms: i64,
}

impl Revocations {
    /// Replaces every user's entry: users missing from `states` are forgotten.
    pub fn replace_all(&self, states: impl IntoIterator<Item = AuthState>) {
        let fresh = states.into_iter().map(|s| (s.user_id, entry(&s))).collect();
        *self.users.write() = fresh;
    }

    pub fn known_users(&self) -> usize {
        self.users.read().len()
    }

    pub fn check(&self, claims: &Claims) -> Standing {
        let Some(user) = self.users.read().get(&claims.sub).copied() else {
            return Standing::UnknownUser;
        };
        if claims.issued_at_ms() < user.valid_after_ms {
            return Standing::Revoked;
        }
        if self.ended_sessions.read().contains_key(&claims.sid) {
            return Standing::Revoked;
        }
        Standing::Valid(user.role)
    }

    /// The user's current role, if the cache knows the user.
    pub fn role_of(&self, user_id: Uuid) -> Option<Role> {
        self.users.read().get(&user_id).map(|u| u.role)
    }

    /// Records the user's current state (after creation, role or password change).
    pub fn upsert(&self, state: &AuthState) {
        self.users.write().insert(state.user_id, entry(state));
    }

    pub fn remove_user(&self, user_id: Uuid) {
        self.users.write().remove(&user_id);
    }

    /// Ends the access tokens of one session. `token_ttl_ms` bounds how long the entry
    /// must be kept: after that, every token of the session has expired on its own.
    pub fn end_session(&self, session_id: Uuid, token_ttl_ms: i64) {
        let now = Utc::now().timestamp_millis();
        let mut ended = self.ended_sessions.write();
        ended.retain(|_, until| *until > now);
        ended.insert(session_id, now.saturating_add(token_ttl_ms));
    }
}

fn entry(state: &AuthState) -> UserEntry {
    UserEntry {
        role: state.role,
        valid_after_ms: state.tokens_valid_after.timestamp_millis(),
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Duration};

    use super::*;

    fn claims(user: Uuid, session: Uuid) -> Claims {
        let now = Utc::now().timestamp();
        Claims {
            sub: user,
            role: Role::User,
            iat: now,
            exp: now + 300,
            iss: "atelier".into(),
            aud: "atelier".into(),
            jti: Uuid::now_v7(),
            sid: session,
        }
    }

    fn state(user: Uuid, role: Role, after: DateTime<Utc>) -> AuthState {
        AuthState {
            user_id: user,
            role,
            tokens_valid_after: after,
        }
    }

    #[test]
    fn revocation_by_time_session_and_deletion() {
        let cache = Revocations::default();
        let (user, session) = (Uuid::now_v7(), Uuid::now_v7());
        let before = Utc::now() - Duration::seconds(10);
        assert_eq!(cache.check(&claims(user, session)), Standing::UnknownUser);

        cache.replace_all([state(user, Role::User, before)]);
        let old = claims(user, session);
        assert_eq!(cache.check(&old), Standing::Valid(Role::User));

        std::thread::sleep(std::time::Duration::from_millis(2));
        cache.upsert(&state(user, Role::Admin, Utc::now()));
        assert_eq!(
            cache.check(&old),
            Standing::Revoked,
            "issued before the role change"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
        let fresh = claims(user, session);
        assert_eq!(
            cache.check(&fresh),
            Standing::Valid(Role::Admin),
            "issued after it"
        );

        cache.end_session(session, 300_000);
        assert_eq!(cache.check(&fresh), Standing::Revoked, "session ended");
        assert_eq!(
            cache.check(&claims(user, Uuid::now_v7())),
            Standing::Valid(Role::Admin)
        );

        cache.remove_user(user);
        assert_eq!(cache.check(&fresh), Standing::UnknownUser);
    }
}
