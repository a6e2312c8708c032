//! atelier's embedded store: [`Store`] on one DuckDB file.
//!
//! DuckDB allows one writing process per file and, inside it, conflicts between
//! concurrent write transactions (seed ADR-004). So this store takes every write
//! through one connection behind a mutex, one transaction per [`Store`] method, and
//! serves reads from a small pool of connections cloned from the same database.
//! Every DuckDB call is blocking and runs on tokio's blocking pool (the write-behind
//! batches on a thread of their own at idle priority, ADR-0034), never on an async
//! worker.

mod batches;
mod conn;
mod credentials;
mod export;
mod gateway;
mod jobs;
mod migrate;
mod sessions;
mod sql;
mod studio;
mod tokens;
mod users;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use atelier_store::*;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use conn::Connections;
use credentials::CredentialsCache;

/// Why the database file could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(
        "the database file {path} is in use by another process (DuckDB allows one process per \
         file). Stop the other atelier process (or CLI command) using it, or move to PostgreSQL \
         to run several instances"
    )]
    Locked { path: PathBuf },
    #[error("the database file {path} is already open in this process")]
    AlreadyOpen { path: PathBuf },
    #[error("cannot create the folder {path} for the database: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the database file {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: duckdb::Error,
    },
    #[error("cannot start the database's batch writer thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("cannot migrate the database file {path}: {source}")]
    Migrate {
        path: PathBuf,
        #[source]
        source: StoreError,
    },
}

/// How [`DuckDbStore::open_with`] runs the store.
#[derive(Debug, Clone, Copy)]
pub struct OpenOptions {
    /// Write the write-behind batches (usage records, audit events) on a thread
    /// at `SCHED_IDLE`, which any other thread that wakes preempts (ADR-0034).
    /// Off: the same thread at normal priority, for a machine so busy that
    /// idle time never comes. Default: on.
    pub idle_batches: bool,
    /// The size of the write-ahead log at which the batch thread, after a
    /// batch, writes it into the database file (a checkpoint), so that no
    /// request's own commit runs one (ADR-0037). DuckDB's own threshold, a
    /// commit's checkpoint, is kept at four times this, as a backstop.
    /// Default: 16 MiB (DuckDB's default threshold).
    pub checkpoint_wal_bytes: u64,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            idle_batches: true,
            checkpoint_wal_bytes: 16 << 20,
        }
    }
}

/// The DuckDB implementation of [`Store`]. Cheap to clone.
#[derive(Clone)]
pub struct DuckDbStore {
    conns: Connections,
    /// Whether an unfinished video job may exist. The video worker asks for due
    /// jobs every second; without any, that would be a write transaction a second
    /// for nothing. Only this process writes the file (DuckDB's lock), so the flag
    /// is exact: read from the file when it opens, set when a job is created,
    /// recomputed by every claim, the last two under the writer's lock so that
    /// neither can overtake the other.
    open_jobs: Arc<AtomicBool>,
    /// Login lookups, kept for the same reason the flag above can be exact.
    credentials: Arc<CredentialsCache>,
}

impl std::fmt::Debug for DuckDbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DuckDbStore")
            .field("path", &self.conns.path())
            .finish()
    }
}

impl DuckDbStore {
    /// A write that changes users: the login lookups kept in memory are
    /// forgotten once it is over, whether it committed or not. In a task of
    /// its own: a caller that stops waiting (a client gone mid-request) does
    /// not stop the write on the blocking pool, and must not skip the
    /// forgetting either, or an old password would keep working.
    async fn write_users<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&duckdb::Transaction<'_>) -> StoreResult<T> + Send + 'static,
    {
        let (conns, credentials) = (self.conns.clone(), Arc::clone(&self.credentials));
        tokio::spawn(async move {
            let written = conns.write_after_sessions(f).await;
            credentials.forget_all();
            written
        })
        .await
        .map_err(StoreError::backend)?
    }

    /// Opens (creating parent folders and the file as needed) and migrates the database
    /// at `path`; `:memory:` gives a private in-memory database.
    pub async fn open(path: impl AsRef<Path>) -> Result<(Self, MigrationReport), OpenError> {
        Self::open_with(path, OpenOptions::default()).await
    }

    /// [`open`](Self::open) with other [`OpenOptions`].
    pub async fn open_with(
        path: impl AsRef<Path>,
        options: OpenOptions,
    ) -> Result<(Self, MigrationReport), OpenError> {
        let path = path.as_ref().to_path_buf();
        let conns = tokio::task::spawn_blocking({
            let path = path.clone();
            move || Connections::open(&path, options)
        })
        .await
        .map_err(|join| OpenError::Open {
            path: path.clone(),
            source: duckdb::Error::ToSqlConversionFailure(Box::new(join)),
        })??;
        let store = DuckDbStore {
            conns,
            open_jobs: Arc::new(AtomicBool::new(true)),
            credentials: Arc::default(),
        };
        let report = store
            .migrate()
            .await
            .map_err(|source| OpenError::Migrate { path, source })?;
        // Known from the start, so that an idle server's first video tick runs no
        // query (ADR-0021); if this check fails, the first claim finds out.
        if let Ok(false) = store.conns.read(jobs::any_unfinished).await {
            store.open_jobs.store(false, Ordering::SeqCst);
        }
        Ok((store, report))
    }

    pub fn path(&self) -> &Path {
        self.conns.path()
    }
}

#[async_trait]
impl Store for DuckDbStore {
    fn backend(&self) -> &'static str {
        "duckdb"
    }

    #[tracing::instrument(skip(self))]
    async fn migrate(&self) -> StoreResult<MigrationReport> {
        self.conns.write(migrate::apply).await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.conns
            .read(|c| {
                c.query_row("SELECT 1", [], |r| r.get::<_, i32>(0))
                    .map_err(sql::err)
            })
            .await
            .map(drop)
    }

    #[tracing::instrument(skip(self))]
    async fn close(&self) -> StoreResult<()> {
        self.conns.checkpoint().await
    }

    async fn secret_get_or_init(&self, name: &str, candidate: &[u8]) -> StoreResult<Vec<u8>> {
        let (name, candidate) = (name.to_owned(), candidate.to_vec());
        self.conns
            .write(move |tx| {
                tx.execute(
                    "INSERT INTO server_secrets (name, value, created_at) \
                     VALUES (?, ?, make_timestamp(?)) ON CONFLICT (name) DO NOTHING",
                    duckdb::params![name, candidate, sql::micros(Utc::now())],
                )
                .map_err(sql::err)?;
                tx.query_row("SELECT value FROM server_secrets WHERE name = ?", [&name], |r| {
                    r.get::<_, Vec<u8>>(0)
                })
                .map_err(sql::err)
            })
            .await
    }

    async fn setting(&self, name: &str) -> StoreResult<Option<String>> {
        let name = name.to_owned();
        self.conns.read(move |c| studio::setting(c, &name)).await
    }

    async fn set_setting(&self, name: &str, value: &str, now: DateTime<Utc>) -> StoreResult<()> {
        let (name, value) = (name.to_owned(), value.to_owned());
        self.conns
            .write(move |tx| studio::set_setting(tx, &name, &value, now))
            .await
    }

    #[tracing::instrument(skip_all, fields(user_id = %user.id))]
    async fn create_user(&self, user: NewUser) -> StoreResult<User> {
        self.conns.write(move |tx| users::create(tx, &user)).await
    }

    async fn user_by_id(&self, id: Uuid) -> StoreResult<Option<User>> {
        self.conns.read(move |c| users::by_id(c, id)).await
    }

    async fn credentials_by_email(&self, email: &str) -> StoreResult<Option<Credentials>> {
        let generation = match self.credentials.get(email) {
            Ok(kept) => return Ok(Some(kept)),
            Err(generation) => generation,
        };
        let key = email.to_owned();
        let found = self
            .conns
            .read(move |c| users::credentials(c, users::Lookup::Email(&key)))
            .await?;
        if let Some(found) = &found {
            self.credentials.keep(generation, email, found);
        }
        Ok(found)
    }

    async fn credentials_by_id(&self, id: Uuid) -> StoreResult<Option<Credentials>> {
        self.conns
            .read(move |c| users::credentials(c, users::Lookup::Id(id)))
            .await
    }

    async fn list_users(&self, query: &UserQuery) -> StoreResult<UserPage> {
        let query = query.clone();
        self.conns.read(move |c| users::list(c, &query)).await
    }

    #[tracing::instrument(skip(self, email))]
    async fn update_email(&self, id: Uuid, email: &str, now: DateTime<Utc>) -> StoreResult<User> {
        let email = email.to_owned();
        self.write_users(move |tx| users::update_email(tx, id, &email, now))
            .await
    }

    #[tracing::instrument(skip(self, password_hash))]
    async fn set_password_hash(&self, id: Uuid, password_hash: &str) -> StoreResult<()> {
        let hash = password_hash.to_owned();
        self.write_users(move |tx| users::set_password_hash(tx, id, &hash))
            .await
    }

    #[tracing::instrument(skip(self, password_hash))]
    async fn change_password(
        &self,
        id: Uuid,
        password_hash: &str,
        keep_family: Option<Uuid>,
        now: DateTime<Utc>,
    ) -> StoreResult<User> {
        let hash = password_hash.to_owned();
        self.write_users(move |tx| {
            users::set_password_hash(tx, id, &hash)?;
            tokens::revoke_user_families(tx, id, keep_family, now)?;
            users::move_valid_after(tx, id, now)
        })
        .await
    }

    #[tracing::instrument(skip(self))]
    async fn set_role(&self, id: Uuid, role: Role, now: DateTime<Utc>) -> StoreResult<User> {
        self.write_users(move |tx| users::set_role(tx, id, role, now))
            .await
    }

    #[tracing::instrument(skip(self))]
    async fn delete_user(&self, id: Uuid) -> StoreResult<()> {
        self.write_users(move |tx| {
            users::delete(tx, id)?;
            tokens::delete_user_tokens(tx, id)?;
            studio::delete_user_content(tx, id)
        })
        .await
    }

    async fn count_users_by_role(&self) -> StoreResult<Vec<(Role, u64)>> {
        self.conns.read(users::count_by_role).await
    }

    async fn auth_states(&self) -> StoreResult<Vec<AuthState>> {
        self.conns.read(users::auth_states).await
    }

    /// Kept in memory, written within a second or before the next operation on
    /// refresh tokens, whichever comes first (ADR-0033).
    async fn create_session(&self, session: NewSession) -> StoreResult<()> {
        self.conns.keep_session(session);
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    async fn rotate_refresh_token(&self, presented: TokenHash, next: Rotation) -> StoreResult<RotateOutcome> {
        self.conns
            .write_after_sessions(move |tx| tokens::rotate(tx, presented, &next))
            .await
    }

    #[tracing::instrument(skip_all)]
    async fn revoke_family(
        &self,
        presented: TokenHash,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<RevokedFamily>> {
        self.conns
            .write_after_sessions(move |tx| tokens::revoke_family_of(tx, presented, now))
            .await
    }

    #[tracing::instrument(skip(self))]
    async fn purge_refresh_tokens(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        self.conns
            .write_after_sessions(move |tx| tokens::purge(tx, now))
            .await
    }

    async fn refresh_token_stats(&self, now: DateTime<Utc>) -> StoreResult<TokenStats> {
        // Read on another connection: the sessions still in memory go first.
        self.conns.write_sessions().await?;
        self.conns.read(move |c| tokens::stats(c, now)).await
    }

    async fn record_audits(&self, records: &[AuditRecord]) -> StoreResult<()> {
        let records = records.to_vec();
        self.conns
            .write_batch(move |tx| users::record_audits(tx, &records))
            .await
    }

    async fn login_counts_since(&self, since: DateTime<Utc>) -> StoreResult<LoginCounts> {
        self.conns
            .read(move |c| {
                c.query_row(
                    "SELECT count(*) FILTER (WHERE event = 'login'), \
                            count(*) FILTER (WHERE event = 'login_failed') \
                     FROM audit_log WHERE occurred_at >= make_timestamp(?)",
                    [sql::micros(since)],
                    |r| {
                        Ok(LoginCounts {
                            succeeded: r.get::<_, i64>(0)?.unsigned_abs(),
                            failed: r.get::<_, i64>(1)?.unsigned_abs(),
                        })
                    },
                )
                .map_err(sql::err)
            })
            .await
    }

    async fn create_conversation(
        &self,
        conversation: &Conversation,
        messages: &[ChatMessage],
    ) -> StoreResult<()> {
        let (c, messages) = (conversation.clone(), messages.to_vec());
        self.conns
            .write(move |tx| {
                studio::create_conversation(tx, &c)?;
                studio::insert_messages(tx, c.id, &messages)
            })
            .await
    }

    async fn conversations(&self, query: &ConversationQuery) -> StoreResult<(Vec<Conversation>, bool)> {
        let q = query.clone();
        self.conns.read(move |c| studio::conversations(c, &q)).await
    }

    async fn conversation(&self, user_id: Uuid, id: Uuid) -> StoreResult<Option<Conversation>> {
        self.conns
            .read(move |c| studio::conversation(c, user_id, id))
            .await
    }

    async fn messages(&self, conversation_id: Uuid) -> StoreResult<Vec<ChatMessage>> {
        self.conns
            .read(move |c| studio::messages(c, conversation_id))
            .await
    }

    async fn add_messages(
        &self,
        conversation_id: Uuid,
        messages: &[ChatMessage],
        model: Option<&str>,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let (messages, model) = (messages.to_vec(), model.map(str::to_owned));
        self.conns
            .write(move |tx| studio::add_messages(tx, conversation_id, &messages, model.as_deref(), now))
            .await
    }

    async fn rename_conversation(
        &self,
        user_id: Uuid,
        id: Uuid,
        title: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Conversation> {
        let title = title.to_owned();
        self.conns
            .write(move |tx| studio::rename_conversation(tx, user_id, id, &title, now))
            .await
    }

    async fn delete_conversation(&self, user_id: Uuid, id: Uuid) -> StoreResult<()> {
        self.conns
            .write(move |tx| studio::delete_conversation(tx, user_id, id))
            .await
    }

    async fn insert_media(&self, media: &MediaRecord) -> StoreResult<()> {
        let m = media.clone();
        self.conns.write(move |tx| studio::insert_media(tx, &m)).await
    }

    async fn media(&self, id: Uuid) -> StoreResult<Option<MediaRecord>> {
        self.conns.read(move |c| studio::media(c, id)).await
    }

    async fn user_media_keys(&self, user_id: Uuid) -> StoreResult<Vec<String>> {
        self.conns
            .read(move |c| studio::user_media_keys(c, user_id))
            .await
    }

    async fn record_generations(&self, records: &[GenerationRecord]) -> StoreResult<()> {
        let records = records.to_vec();
        self.conns
            .write_batch(move |tx| studio::record_generations(tx, &records))
            .await
    }

    async fn generations(&self, query: &GenerationQuery) -> StoreResult<(Vec<GenerationRecord>, bool)> {
        let q = query.clone();
        self.conns.read(move |c| studio::generations(c, &q)).await
    }

    async fn usage_report(&self, since: DateTime<Utc>) -> StoreResult<UsageReport> {
        self.conns.read(move |c| studio::usage_report(c, since)).await
    }

    async fn create_video_job(&self, job: &VideoJob) -> StoreResult<()> {
        let j = job.clone();
        let open_jobs = Arc::clone(&self.open_jobs);
        self.conns
            .write(move |tx| {
                jobs::create(tx, &j)?;
                open_jobs.store(true, Ordering::SeqCst);
                Ok(())
            })
            .await
    }

    async fn video_job(&self, id: Uuid) -> StoreResult<Option<VideoJob>> {
        self.conns.read(move |c| jobs::by_id(c, id)).await
    }

    async fn video_jobs(&self, user_id: Uuid, limit: u32) -> StoreResult<Vec<VideoJob>> {
        self.conns.read(move |c| jobs::of_user(c, user_id, limit)).await
    }

    async fn claim_video_jobs(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<VideoJob>> {
        if !self.open_jobs.load(Ordering::SeqCst) {
            return Ok(Vec::new());
        }
        let owner = owner.to_owned();
        let open_jobs = Arc::clone(&self.open_jobs);
        self.conns
            .write(move |tx| {
                let claimed = jobs::claim(tx, &owner, now, lease_until, limit)?;
                open_jobs.store(jobs::any_unfinished(tx)?, Ordering::SeqCst);
                Ok(claimed)
            })
            .await
    }

    async fn update_video_job(&self, progress: &JobProgress) -> StoreResult<bool> {
        let p = progress.clone();
        self.conns.write(move |tx| jobs::update(tx, &p)).await
    }

    async fn finish_video_job(&self, outcome: &JobOutcome) -> StoreResult<bool> {
        let o = outcome.clone();
        self.conns.write(move |tx| jobs::finish(tx, &o)).await
    }

    async fn create_api_key(&self, key: &ApiKey) -> StoreResult<()> {
        let k = key.clone();
        self.conns.write(move |tx| gateway::create_key(tx, &k)).await
    }

    async fn api_keys(&self, user_id: Uuid) -> StoreResult<Vec<ApiKey>> {
        self.conns.read(move |c| gateway::keys_of(c, user_id)).await
    }

    async fn live_api_keys(&self) -> StoreResult<Vec<ApiKey>> {
        self.conns.read(gateway::live_keys).await
    }

    async fn revoke_api_key(
        &self,
        id: Uuid,
        user_id: Option<Uuid>,
        now: DateTime<Utc>,
    ) -> StoreResult<ApiKey> {
        self.conns
            .write(move |tx| gateway::revoke_key(tx, id, user_id, now))
            .await
    }

    async fn touch_api_keys(&self, uses: &[(Uuid, DateTime<Utc>)]) -> StoreResult<()> {
        let uses = uses.to_vec();
        self.conns.write(move |tx| gateway::touch_keys(tx, &uses)).await
    }

    async fn budget_overrides(&self) -> StoreResult<Vec<BudgetOverride>> {
        self.conns.read(gateway::budget_overrides).await
    }

    async fn set_budget_override(&self, budget: &BudgetOverride, now: DateTime<Utc>) -> StoreResult<()> {
        let b = budget.clone();
        self.conns
            .write(move |tx| gateway::set_budget_override(tx, &b, now))
            .await
    }

    async fn spend_since(&self, since: DateTime<Utc>) -> StoreResult<Vec<Spend>> {
        self.conns.read(move |c| gateway::spend_since(c, since)).await
    }
}
