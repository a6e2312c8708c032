//! The storage seam of atelier.
//!
//! [`Store`] speaks domain operations (`create_user`, `rotate_refresh_token`…), never
//! SQL. Each method is one transaction: where a service needs several writes to be
//! atomic (rotating a token, demoting an admin), the trait has one method for the
//! whole operation, so every backend enforces the same invariants. Backends live in
//! their own crates (`atelier-store-duckdb`, later `atelier-store-postgres`) and all
//! run the [`conformance`] suite.

mod error;
mod model;
mod url;

#[cfg(feature = "conformance")]
pub mod conformance;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use error::{StoreError, StoreResult};
pub use model::*;
pub use url::{DatabaseUrl, DatabaseUrlError};

/// Persistent state of atelier. Held as `Arc<dyn Store>`; every method may be called
/// concurrently and is atomic on its own.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Short backend name for health output and logs: `duckdb`, `postgres`.
    fn backend(&self) -> &'static str;

    /// Applies pending migrations. Idempotent; also run by `open` of every backend.
    async fn migrate(&self) -> StoreResult<MigrationReport>;

    /// A cheap round trip proving the database answers.
    async fn ping(&self) -> StoreResult<()>;

    /// Flushes what is buffered and makes the on-disk state durable; called once at shutdown.
    async fn close(&self) -> StoreResult<()>;

    /// Returns the secret stored under `name`, storing `candidate` first if there is none.
    /// Concurrent callers (or instances) all get the same value.
    async fn secret_get_or_init(&self, name: &str, candidate: &[u8]) -> StoreResult<Vec<u8>>;

    // ---- users ----

    /// Fails with [`StoreError::EmailTaken`] when the email is in use.
    async fn create_user(&self, user: NewUser) -> StoreResult<User>;

    async fn user_by_id(&self, id: Uuid) -> StoreResult<Option<User>>;

    async fn credentials_by_email(&self, email: &str) -> StoreResult<Option<Credentials>>;

    async fn credentials_by_id(&self, id: Uuid) -> StoreResult<Option<Credentials>>;

    async fn list_users(&self, query: &UserQuery) -> StoreResult<UserPage>;

    /// Fails with [`StoreError::EmailTaken`] or [`StoreError::NotFound`].
    async fn update_email(&self, id: Uuid, email: &str, now: DateTime<Utc>) -> StoreResult<User>;

    /// Replaces the hash without touching sessions: used to upgrade hash parameters.
    async fn set_password_hash(&self, id: Uuid, password_hash: &str) -> StoreResult<()>;

    /// Sets a new password, moves `tokens_valid_after` to `now` and revokes every refresh
    /// token family of the user except `keep_family`.
    async fn change_password(
        &self,
        id: Uuid,
        password_hash: &str,
        keep_family: Option<Uuid>,
        now: DateTime<Utc>,
    ) -> StoreResult<User>;

    /// Changes the role and moves `tokens_valid_after` to `now`. Refuses with
    /// [`StoreError::LastAdmin`] to demote the only admin. Setting the current role is a no-op.
    async fn set_role(&self, id: Uuid, role: Role, now: DateTime<Utc>) -> StoreResult<User>;

    /// Deletes the user and their refresh tokens. Refuses with [`StoreError::LastAdmin`]
    /// to delete the only admin.
    async fn delete_user(&self, id: Uuid) -> StoreResult<()>;

    async fn count_users_by_role(&self) -> StoreResult<Vec<(Role, u64)>>;

    /// Every user's access-token state, to fill the in-memory check at start-up.
    async fn auth_states(&self) -> StoreResult<Vec<AuthState>>;

    // ---- refresh tokens ----

    /// Stores the first token of a new family.
    async fn create_session(&self, session: NewSession) -> StoreResult<()>;

    /// Exchanges a live token for `next` atomically: of concurrent calls with the same
    /// token exactly one sees it live. A token already rotated revokes its whole family,
    /// and that revocation is committed although the caller will fail the request.
    async fn rotate_refresh_token(&self, presented: TokenHash, next: Rotation) -> StoreResult<RotateOutcome>;

    /// Revokes the family the token belongs to (logout). `None` when the token is unknown.
    async fn revoke_family(
        &self,
        presented: TokenHash,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<RevokedFamily>>;

    /// Removes revoked tokens and tokens that can no longer matter (expired, or rotated
    /// within a family that has itself expired). Returns how many were removed.
    async fn purge_refresh_tokens(&self, now: DateTime<Utc>) -> StoreResult<u64>;

    async fn refresh_token_stats(&self, now: DateTime<Utc>) -> StoreResult<TokenStats>;

    // ---- audit ----

    async fn record_audit(&self, record: AuditRecord) -> StoreResult<()>;

    /// Counts `login` and `login_failed` audit events since `since`.
    async fn login_counts_since(&self, since: DateTime<Utc>) -> StoreResult<LoginCounts>;
}
