//! The storage seam of atelier.
//!
//! [`Store`] speaks domain operations (`create_user`, `rotate_refresh_token`…), never
//! SQL. Each method is one transaction: where a service needs several writes to be
//! atomic (rotating a token, demoting an admin), the trait has one method for the
//! whole operation, so every backend enforces the same invariants. Backends live in
//! their own crates (`atelier-store-duckdb`, `atelier-store-postgres`) and all
//! run the [`conformance`] suite.

mod changes;
pub mod encoding;
mod error;
mod generation;
mod model;
pub mod tables;
mod url;

#[cfg(feature = "conformance")]
pub mod conformance;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use changes::{Change, ChangeFeed};
pub use error::{StoreError, StoreResult};
pub use generation::*;
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

    /// A server-wide setting (JSON text) changed at run time, e.g. the model allow-list.
    async fn setting(&self, name: &str) -> StoreResult<Option<String>>;

    async fn set_setting(&self, name: &str, value: &str, now: DateTime<Utc>) -> StoreResult<()>;

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

    /// Deletes the user with their refresh tokens, conversations, media records and
    /// video jobs (usage records stay, for accounting). Refuses with
    /// [`StoreError::LastAdmin`] to delete the only admin.
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

    /// Stores audit records, in order, all or none (the audit service writes
    /// them in batches, like usage).
    async fn record_audits(&self, records: &[AuditRecord]) -> StoreResult<()>;

    /// Counts `login` and `login_failed` audit events since `since`.
    async fn login_counts_since(&self, since: DateTime<Utc>) -> StoreResult<LoginCounts>;

    // ---- conversations ----

    /// Creates a conversation with its first messages, in one transaction: no
    /// empty conversation is left behind, and a new chat costs one commit.
    async fn create_conversation(
        &self,
        conversation: &Conversation,
        messages: &[ChatMessage],
    ) -> StoreResult<()>;

    /// A page of the user's conversations, most recently active first, and whether
    /// more follow.
    async fn conversations(&self, query: &ConversationQuery) -> StoreResult<(Vec<Conversation>, bool)>;

    /// The conversation if it exists and belongs to the user.
    async fn conversation(&self, user_id: Uuid, id: Uuid) -> StoreResult<Option<Conversation>>;

    /// Its messages, oldest first.
    async fn messages(&self, conversation_id: Uuid) -> StoreResult<Vec<ChatMessage>>;

    /// Appends messages and marks the conversation active (`updated_at`, `model`).
    async fn add_messages(
        &self,
        conversation_id: Uuid,
        messages: &[ChatMessage],
        model: Option<&str>,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;

    /// Fails with [`StoreError::NotFound`] unless it exists and belongs to the user.
    async fn rename_conversation(
        &self,
        user_id: Uuid,
        id: Uuid,
        title: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Conversation>;

    /// Deletes it with its messages; [`StoreError::NotFound`] as for renaming.
    async fn delete_conversation(&self, user_id: Uuid, id: Uuid) -> StoreResult<()>;

    // ---- media ----

    async fn insert_media(&self, media: &MediaRecord) -> StoreResult<()>;

    async fn media(&self, id: Uuid) -> StoreResult<Option<MediaRecord>>;

    /// Storage keys of everything the user owns, to remove the bytes with the account.
    async fn user_media_keys(&self, user_id: Uuid) -> StoreResult<Vec<String>>;

    // ---- usage ----

    /// Appends usage records in one batch.
    async fn record_generations(&self, records: &[GenerationRecord]) -> StoreResult<()>;

    /// A page of the user's generations, newest first, and whether more follow.
    async fn generations(&self, query: &GenerationQuery) -> StoreResult<(Vec<GenerationRecord>, bool)>;

    /// Usage since `since`, per user, per model and per day.
    async fn usage_report(&self, since: DateTime<Utc>) -> StoreResult<UsageReport>;

    // ---- video jobs ----

    async fn create_video_job(&self, job: &VideoJob) -> StoreResult<()>;

    async fn video_job(&self, id: Uuid) -> StoreResult<Option<VideoJob>>;

    /// The user's most recent jobs, newest first.
    async fn video_jobs(&self, user_id: Uuid, limit: u32) -> StoreResult<Vec<VideoJob>>;

    /// Leases up to `limit` unfinished jobs that are due (`next_poll_at <= now`) and
    /// not leased by anyone else (or whose lease has run out) to `owner` until
    /// `lease_until`. A job is leased by at most one owner at a time.
    async fn claim_video_jobs(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<VideoJob>>;

    /// Records a non-terminal step and releases the lease. `false` if `owner` does not
    /// hold the lease any more or the job has finished.
    async fn update_video_job(&self, progress: &JobProgress) -> StoreResult<bool>;

    /// Moves an unfinished job to its terminal state. `true` for exactly one caller per
    /// job: whoever sees `true` records its cost.
    async fn finish_video_job(&self, outcome: &JobOutcome) -> StoreResult<bool>;

    // ---- API keys ----

    async fn create_api_key(&self, key: &ApiKey) -> StoreResult<()>;

    /// The user's keys that are not revoked, newest first.
    async fn api_keys(&self, user_id: Uuid) -> StoreResult<Vec<ApiKey>>;

    /// Every key that is not revoked, to fill the in-memory lookup at start-up.
    async fn live_api_keys(&self) -> StoreResult<Vec<ApiKey>>;

    /// Revokes a key (of `user_id` when given); [`StoreError::NotFound`] if there is
    /// no such live key.
    async fn revoke_api_key(
        &self,
        id: Uuid,
        user_id: Option<Uuid>,
        now: DateTime<Utc>,
    ) -> StoreResult<ApiKey>;

    /// Records when keys were last used, in one batch.
    async fn touch_api_keys(&self, uses: &[(Uuid, DateTime<Utc>)]) -> StoreResult<()>;

    // ---- budgets ----

    async fn budget_overrides(&self) -> StoreResult<Vec<BudgetOverride>>;

    /// Stores the override; one with every field `None` removes it.
    async fn set_budget_override(&self, budget: &BudgetOverride, now: DateTime<Utc>) -> StoreResult<()>;

    /// Cost and number of usage records per user since `since`.
    async fn spend_since(&self, since: DateTime<Utc>) -> StoreResult<Vec<Spend>>;

    // ---- other instances ----

    /// Changes committed by any instance sharing this database, for the caller to
    /// apply to its in-memory state; `None` where no other instance can exist
    /// (DuckDB: one process per file). Each call starts a new feed.
    async fn changes(&self) -> StoreResult<Option<ChangeFeed>> {
        Ok(None)
    }
}
