//! atelier's scale-out store: [`Store`] on PostgreSQL.
//!
//! Several atelier instances share one database. Every [`Store`] method is one
//! transaction on a pooled connection; where instances could race (rotating one
//! refresh token, demoting the last two admins, claiming video jobs) the rows are
//! locked, so the invariants the conformance suite checks hold across processes,
//! not just across tasks. Statements are plain runtime SQL with bound parameters:
//! no compile-time database is needed to build atelier.

mod changes;
mod gateway;
mod import;
mod jobs;
mod migrate;
mod sql;
mod studio;
pub mod testing;
mod tokens;
mod users;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use atelier_store::*;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

pub use import::Import;

/// Why the database could not be opened. Never shows the URL's password.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("invalid PostgreSQL URL {url}: {source}")]
    Url {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot connect to PostgreSQL at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot migrate the PostgreSQL database at {url}: {source}")]
    Migrate {
        url: String,
        #[source]
        source: StoreError,
    },
}

/// Connection pool settings.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    /// Connections this instance may hold; PostgreSQL's `max_connections` bounds the
    /// sum over all instances.
    pub max_connections: u32,
    /// How long a request waits for a free connection before failing as unavailable.
    pub acquire_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// The PostgreSQL implementation of [`Store`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to `url` (`postgres://user:password@host:port/database`) and migrates.
    pub async fn connect(url: &str, settings: PoolSettings) -> Result<(Self, MigrationReport), OpenError> {
        let shown = redacted(url);
        let options = PgConnectOptions::from_str(url).map_err(|source| OpenError::Url {
            url: shown.clone(),
            source,
        })?;
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(options.application_name("atelier"))
            .await
            .map_err(|source| OpenError::Connect {
                url: shown.clone(),
                source,
            })?;
        let store = PgStore { pool };
        let report = store
            .migrate()
            .await
            .map_err(|source| OpenError::Migrate { url: shown, source })?;
        Ok((store, report))
    }

    async fn begin(&self) -> StoreResult<Transaction<'static, Postgres>> {
        self.pool.begin().await.map_err(sql::err)
    }
}

fn redacted(url: &str) -> String {
    DatabaseUrl::Postgres(url.to_owned()).to_string()
}

async fn commit<T>(tx: Transaction<'static, Postgres>, value: T) -> StoreResult<T> {
    tx.commit().await.map_err(sql::err)?;
    Ok(value)
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    #[tracing::instrument(skip(self))]
    async fn migrate(&self) -> StoreResult<MigrationReport> {
        migrate::apply(&self.pool).await
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(sql::err)
    }

    /// Nothing is buffered here: every method has committed before it returned.
    async fn close(&self) -> StoreResult<()> {
        self.pool.close().await;
        Ok(())
    }

    async fn secret_get_or_init(&self, name: &str, candidate: &[u8]) -> StoreResult<Vec<u8>> {
        // The insert either wins or finds the row another instance committed first.
        sqlx::query(
            "INSERT INTO server_secrets (name, value, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(candidate)
        .bind(Utc::now())
        .execute(&self.pool)
        .await
        .map_err(sql::err)?;
        sqlx::query_scalar("SELECT value FROM server_secrets WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await
            .map_err(sql::err)
    }

    async fn setting(&self, name: &str) -> StoreResult<Option<String>> {
        studio::setting(&self.pool, name).await
    }

    async fn set_setting(&self, name: &str, value: &str, now: DateTime<Utc>) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        studio::set_setting(&mut *tx, name, value, now).await?;
        changes::notify(&mut tx, Change::Setting(name.to_owned())).await?;
        commit(tx, ()).await
    }

    #[tracing::instrument(skip_all, fields(user_id = %user.id))]
    async fn create_user(&self, user: NewUser) -> StoreResult<User> {
        let mut tx = self.begin().await?;
        let created = users::create(&mut tx, &user).await?;
        commit(tx, created).await
    }

    async fn user_by_id(&self, id: Uuid) -> StoreResult<Option<User>> {
        users::by_id(&self.pool, id).await
    }

    async fn credentials_by_email(&self, email: &str) -> StoreResult<Option<Credentials>> {
        users::credentials(&self.pool, users::Lookup::Email(email)).await
    }

    async fn credentials_by_id(&self, id: Uuid) -> StoreResult<Option<Credentials>> {
        users::credentials(&self.pool, users::Lookup::Id(id)).await
    }

    async fn list_users(&self, query: &UserQuery) -> StoreResult<UserPage> {
        // The count and the page from one snapshot.
        let mut tx = self.begin().await?;
        let page = users::list(&mut tx, query).await?;
        commit(tx, page).await
    }

    #[tracing::instrument(skip(self, email))]
    async fn update_email(&self, id: Uuid, email: &str, now: DateTime<Utc>) -> StoreResult<User> {
        let mut tx = self.begin().await?;
        let user = users::update_email(&mut tx, id, email, now).await?;
        commit(tx, user).await
    }

    #[tracing::instrument(skip(self, password_hash))]
    async fn set_password_hash(&self, id: Uuid, password_hash: &str) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        users::set_password_hash(&mut tx, id, password_hash).await?;
        commit(tx, ()).await
    }

    #[tracing::instrument(skip(self, password_hash))]
    async fn change_password(
        &self,
        id: Uuid,
        password_hash: &str,
        keep_family: Option<Uuid>,
        now: DateTime<Utc>,
    ) -> StoreResult<User> {
        let mut tx = self.begin().await?;
        users::set_password_hash(&mut tx, id, password_hash).await?;
        tokens::revoke_user_families(&mut tx, id, keep_family, now).await?;
        let user = users::move_valid_after(&mut tx, id, now).await?;
        changes::notify(&mut tx, Change::User(id)).await?;
        commit(tx, user).await
    }

    #[tracing::instrument(skip(self))]
    async fn set_role(&self, id: Uuid, role: Role, now: DateTime<Utc>) -> StoreResult<User> {
        let mut tx = self.begin().await?;
        let user = users::set_role(&mut tx, id, role, now).await?;
        changes::notify(&mut tx, Change::User(id)).await?;
        commit(tx, user).await
    }

    #[tracing::instrument(skip(self))]
    async fn delete_user(&self, id: Uuid) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        users::delete(&mut tx, id).await?;
        tokens::delete_user_tokens(&mut tx, id).await?;
        studio::delete_user_content(&mut tx, id).await?;
        changes::notify(&mut tx, Change::User(id)).await?;
        commit(tx, ()).await
    }

    async fn count_users_by_role(&self) -> StoreResult<Vec<(Role, u64)>> {
        users::count_by_role(&self.pool).await
    }

    async fn auth_states(&self) -> StoreResult<Vec<AuthState>> {
        users::auth_states(&self.pool).await
    }

    #[tracing::instrument(skip_all, fields(user_id = %session.user_id))]
    async fn create_session(&self, session: NewSession) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        tokens::create_session(&mut tx, &session).await?;
        commit(tx, ()).await
    }

    #[tracing::instrument(skip_all)]
    async fn rotate_refresh_token(&self, presented: TokenHash, next: Rotation) -> StoreResult<RotateOutcome> {
        let mut tx = self.begin().await?;
        let outcome = tokens::rotate(&mut tx, presented, &next).await?;
        if let RotateOutcome::Reused { family_id, .. } = &outcome {
            changes::notify(&mut tx, Change::SessionEnded(*family_id)).await?;
        }
        commit(tx, outcome).await
    }

    #[tracing::instrument(skip_all)]
    async fn revoke_family(
        &self,
        presented: TokenHash,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<RevokedFamily>> {
        let mut tx = self.begin().await?;
        let revoked = tokens::revoke_family_of(&mut tx, presented, now).await?;
        if let Some(family) = &revoked {
            changes::notify(&mut tx, Change::SessionEnded(family.family_id)).await?;
        }
        commit(tx, revoked).await
    }

    #[tracing::instrument(skip(self))]
    async fn purge_refresh_tokens(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        tokens::purge(&self.pool, now).await
    }

    async fn refresh_token_stats(&self, now: DateTime<Utc>) -> StoreResult<TokenStats> {
        tokens::stats(&self.pool, now).await
    }

    async fn record_audits(&self, records: &[AuditRecord]) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        users::record_audits(&mut tx, records).await?;
        commit(tx, ()).await
    }

    async fn login_counts_since(&self, since: DateTime<Utc>) -> StoreResult<LoginCounts> {
        let (succeeded, failed): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE event = 'login'), count(*) FILTER (WHERE event = 'login_failed') \
             FROM audit_log WHERE occurred_at >= $1",
        )
        .bind(since)
        .fetch_one(&self.pool)
        .await
        .map_err(sql::err)?;
        Ok(LoginCounts {
            succeeded: sql::count(succeeded),
            failed: sql::count(failed),
        })
    }

    async fn create_conversation(
        &self,
        conversation: &Conversation,
        messages: &[ChatMessage],
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        studio::create_conversation(&mut *tx, conversation).await?;
        studio::insert_messages(&mut tx, conversation.id, messages).await?;
        commit(tx, ()).await
    }

    async fn conversations(&self, query: &ConversationQuery) -> StoreResult<(Vec<Conversation>, bool)> {
        studio::conversations(&self.pool, query).await
    }

    async fn conversation(&self, user_id: Uuid, id: Uuid) -> StoreResult<Option<Conversation>> {
        studio::conversation(&self.pool, user_id, id).await
    }

    async fn messages(&self, conversation_id: Uuid) -> StoreResult<Vec<ChatMessage>> {
        studio::messages(&self.pool, conversation_id).await
    }

    async fn add_messages(
        &self,
        conversation_id: Uuid,
        messages: &[ChatMessage],
        model: Option<&str>,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        studio::add_messages(&mut tx, conversation_id, messages, model, now).await?;
        commit(tx, ()).await
    }

    async fn rename_conversation(
        &self,
        user_id: Uuid,
        id: Uuid,
        title: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Conversation> {
        studio::rename_conversation(&self.pool, user_id, id, title, now).await
    }

    async fn delete_conversation(&self, user_id: Uuid, id: Uuid) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        studio::delete_conversation(&mut tx, user_id, id).await?;
        commit(tx, ()).await
    }

    async fn insert_media(&self, media: &MediaRecord) -> StoreResult<()> {
        studio::insert_media(&self.pool, media).await
    }

    async fn media(&self, id: Uuid) -> StoreResult<Option<MediaRecord>> {
        studio::media(&self.pool, id).await
    }

    async fn user_media_keys(&self, user_id: Uuid) -> StoreResult<Vec<String>> {
        studio::user_media_keys(&self.pool, user_id).await
    }

    async fn record_generations(&self, records: &[GenerationRecord]) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        studio::record_generations(&mut tx, records).await?;
        commit(tx, ()).await
    }

    async fn generations(&self, query: &GenerationQuery) -> StoreResult<(Vec<GenerationRecord>, bool)> {
        studio::generations(&self.pool, query).await
    }

    async fn usage_report(&self, since: DateTime<Utc>) -> StoreResult<UsageReport> {
        let mut tx = self.begin().await?;
        let report = studio::usage_report(&mut tx, since).await?;
        commit(tx, report).await
    }

    async fn create_video_job(&self, job: &VideoJob) -> StoreResult<()> {
        jobs::create(&self.pool, job).await
    }

    async fn video_job(&self, id: Uuid) -> StoreResult<Option<VideoJob>> {
        jobs::by_id(&self.pool, id).await
    }

    async fn video_jobs(&self, user_id: Uuid, limit: u32) -> StoreResult<Vec<VideoJob>> {
        jobs::of_user(&self.pool, user_id, limit).await
    }

    async fn claim_video_jobs(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<VideoJob>> {
        jobs::claim(&self.pool, owner, now, lease_until, limit).await
    }

    async fn update_video_job(&self, progress: &JobProgress) -> StoreResult<bool> {
        jobs::update(&self.pool, progress).await
    }

    async fn finish_video_job(&self, outcome: &JobOutcome) -> StoreResult<bool> {
        jobs::finish(&self.pool, outcome).await
    }

    async fn create_api_key(&self, key: &ApiKey) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        gateway::create_key(&mut *tx, key).await?;
        changes::notify(&mut tx, Change::ApiKeys(key.user_id)).await?;
        commit(tx, ()).await
    }

    async fn api_keys(&self, user_id: Uuid) -> StoreResult<Vec<ApiKey>> {
        gateway::keys_of(&self.pool, user_id).await
    }

    async fn live_api_keys(&self) -> StoreResult<Vec<ApiKey>> {
        gateway::live_keys(&self.pool).await
    }

    async fn revoke_api_key(
        &self,
        id: Uuid,
        user_id: Option<Uuid>,
        now: DateTime<Utc>,
    ) -> StoreResult<ApiKey> {
        let mut tx = self.begin().await?;
        let key = gateway::revoke_key(&mut *tx, id, user_id, now).await?;
        changes::notify(&mut tx, Change::ApiKeys(key.user_id)).await?;
        commit(tx, key).await
    }

    async fn touch_api_keys(&self, uses: &[(Uuid, DateTime<Utc>)]) -> StoreResult<()> {
        gateway::touch_keys(&self.pool, uses).await
    }

    async fn budget_overrides(&self) -> StoreResult<Vec<BudgetOverride>> {
        gateway::budget_overrides(&self.pool).await
    }

    async fn set_budget_override(&self, budget: &BudgetOverride, now: DateTime<Utc>) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        gateway::set_budget_override(&mut tx, budget, now).await?;
        changes::notify(&mut tx, Change::Budget(budget.user_id)).await?;
        commit(tx, ()).await
    }

    async fn spend_since(&self, since: DateTime<Utc>) -> StoreResult<Vec<Spend>> {
        gateway::spend_since(&self.pool, since).await
    }

    async fn changes(&self) -> StoreResult<Option<ChangeFeed>> {
        changes::listen(&self.pool).await.map(Some)
    }
}
