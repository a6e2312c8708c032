//! Conversations, media, usage records and settings.

use atelier_store::*;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::sql;

// ---------------------------------------------------------------- conversations

const CONVERSATION_COLUMNS: &str = "id, user_id, title, model, created_at, updated_at";

#[derive(sqlx::FromRow)]
struct ConversationRow {
    id: Uuid,
    user_id: Uuid,
    title: String,
    model: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<ConversationRow> for Conversation {
    fn from(r: ConversationRow) -> Self {
        Conversation {
            id: r.id,
            user_id: r.user_id,
            title: r.title,
            model: r.model,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

pub(crate) async fn create_conversation(conn: impl PgExecutor<'_>, c: &Conversation) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO conversations (id, user_id, title, model, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(c.id)
    .bind(c.user_id)
    .bind(&c.title)
    .bind(&c.model)
    .bind(c.created_at)
    .bind(c.updated_at)
    .execute(conn)
    .await
    .map(drop)
    .map_err(sql::err)
}

pub(crate) async fn conversations(
    conn: impl PgExecutor<'_>,
    q: &ConversationQuery,
) -> StoreResult<(Vec<Conversation>, bool)> {
    let rows = sqlx::query_as::<_, ConversationRow>(&format!(
        "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE user_id = $1 \
         ORDER BY updated_at DESC, id DESC LIMIT $2 OFFSET $3"
    ))
    .bind(q.user_id)
    .bind(i64::from(q.limit) + 1)
    .bind(i64::from(q.offset))
    .fetch_all(conn)
    .await
    .map_err(sql::err)?;
    let has_more = rows.len() > q.limit as usize;
    let list = rows.into_iter().take(q.limit as usize).map(Into::into).collect();
    Ok((list, has_more))
}

pub(crate) async fn conversation(
    conn: impl PgExecutor<'_>,
    user_id: Uuid,
    id: Uuid,
) -> StoreResult<Option<Conversation>> {
    sqlx::query_as::<_, ConversationRow>(&format!(
        "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = $1 AND user_id = $2"
    ))
    .bind(id)
    .bind(user_id)
    .fetch_optional(conn)
    .await
    .map(|r| r.map(Into::into))
    .map_err(sql::err)
}

#[derive(sqlx::FromRow)]
struct MessageRow {
    id: Uuid,
    conversation_id: Uuid,
    role: String,
    content: String,
    status: String,
    model: Option<String>,
    error: Option<String>,
    created_at: DateTime<Utc>,
}

pub(crate) async fn messages(
    conn: impl PgExecutor<'_>,
    conversation_id: Uuid,
) -> StoreResult<Vec<ChatMessage>> {
    let rows = sqlx::query_as::<_, MessageRow>(
        "SELECT id, conversation_id, role, content, status, model, error, created_at \
         FROM messages WHERE conversation_id = $1 ORDER BY created_at, id",
    )
    .bind(conversation_id)
    .fetch_all(conn)
    .await
    .map_err(sql::err)?;
    rows.into_iter()
        .map(|r| {
            Ok(ChatMessage {
                id: r.id,
                conversation_id: r.conversation_id,
                role: r.role,
                content: r.content,
                status: sql::parse(&r.status)?,
                model: r.model,
                error: r.error,
                created_at: r.created_at,
            })
        })
        .collect()
}

pub(crate) async fn add_messages(
    tx: &mut PgConnection,
    conversation_id: Uuid,
    messages: &[ChatMessage],
    model: Option<&str>,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    insert_messages(&mut *tx, conversation_id, messages).await?;
    sqlx::query("UPDATE conversations SET updated_at = $1, model = coalesce($2, model) WHERE id = $3")
        .bind(now)
        .bind(model)
        .bind(conversation_id)
        .execute(&mut *tx)
        .await
        .map(drop)
        .map_err(sql::err)
}

/// The messages alone; the conversation's activity is the caller's to mark.
pub(crate) async fn insert_messages(
    tx: &mut PgConnection,
    conversation_id: Uuid,
    messages: &[ChatMessage],
) -> StoreResult<()> {
    if !messages.is_empty() {
        let mut insert = QueryBuilder::<Postgres>::new(
            "INSERT INTO messages (id, conversation_id, role, content, status, model, error, created_at) ",
        );
        insert.push_values(messages, |mut row, m| {
            row.push_bind(m.id)
                .push_bind(conversation_id)
                .push_bind(&m.role)
                .push_bind(&m.content)
                .push_bind(m.status.as_str())
                .push_bind(&m.model)
                .push_bind(&m.error)
                .push_bind(m.created_at);
        });
        insert.build().execute(&mut *tx).await.map_err(sql::err)?;
    }
    Ok(())
}

pub(crate) async fn rename_conversation(
    conn: impl PgExecutor<'_>,
    user_id: Uuid,
    id: Uuid,
    title: &str,
    now: DateTime<Utc>,
) -> StoreResult<Conversation> {
    sqlx::query_as::<_, ConversationRow>(&format!(
        "UPDATE conversations SET title = $1, updated_at = $2 WHERE id = $3 AND user_id = $4 \
         RETURNING {CONVERSATION_COLUMNS}"
    ))
    .bind(title)
    .bind(now)
    .bind(id)
    .bind(user_id)
    .fetch_optional(conn)
    .await
    .map_err(sql::err)?
    .map(Into::into)
    .ok_or(StoreError::NotFound)
}

pub(crate) async fn delete_conversation(tx: &mut PgConnection, user_id: Uuid, id: Uuid) -> StoreResult<()> {
    let deleted = sqlx::query("DELETE FROM conversations WHERE id = $1 AND user_id = $2")
        .bind(id)
        .bind(user_id)
        .execute(&mut *tx)
        .await
        .map_err(sql::err)?
        .rows_affected();
    if deleted == 0 {
        return Err(StoreError::NotFound);
    }
    sqlx::query("DELETE FROM messages WHERE conversation_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .map(drop)
        .map_err(sql::err)
}

/// Everything of a user's but their usage records; part of deleting the user.
pub(crate) async fn delete_user_content(tx: &mut PgConnection, user_id: Uuid) -> StoreResult<()> {
    for statement in [
        "DELETE FROM messages WHERE conversation_id IN (SELECT id FROM conversations WHERE user_id = $1)",
        "DELETE FROM conversations WHERE user_id = $1",
        "DELETE FROM media WHERE user_id = $1",
        "DELETE FROM video_jobs WHERE user_id = $1",
        "DELETE FROM api_keys WHERE user_id = $1",
        "DELETE FROM user_budgets WHERE user_id = $1",
    ] {
        sqlx::query(statement)
            .bind(user_id)
            .execute(&mut *tx)
            .await
            .map_err(sql::err)?;
    }
    Ok(())
}

// ---------------------------------------------------------------- media

#[derive(sqlx::FromRow)]
struct MediaRow {
    id: Uuid,
    user_id: Uuid,
    kind: String,
    content_type: String,
    size_bytes: i64,
    storage_key: String,
    generation_id: Option<Uuid>,
    created_at: DateTime<Utc>,
}

pub(crate) async fn insert_media(conn: impl PgExecutor<'_>, m: &MediaRecord) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO media (id, user_id, kind, content_type, size_bytes, storage_key, generation_id, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(m.id)
    .bind(m.user_id)
    .bind(m.kind.as_str())
    .bind(&m.content_type)
    .bind(sql::bigint(m.size_bytes))
    .bind(&m.storage_key)
    .bind(m.generation_id)
    .bind(m.created_at)
    .execute(conn)
    .await
    .map(drop)
    .map_err(sql::err)
}

pub(crate) async fn media(conn: impl PgExecutor<'_>, id: Uuid) -> StoreResult<Option<MediaRecord>> {
    let row = sqlx::query_as::<_, MediaRow>(
        "SELECT id, user_id, kind, content_type, size_bytes, storage_key, generation_id, created_at \
         FROM media WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(conn)
    .await
    .map_err(sql::err)?;
    row.map(|r| {
        Ok(MediaRecord {
            id: r.id,
            user_id: r.user_id,
            kind: sql::parse(&r.kind)?,
            content_type: r.content_type,
            size_bytes: sql::count(r.size_bytes),
            storage_key: r.storage_key,
            generation_id: r.generation_id,
            created_at: r.created_at,
        })
    })
    .transpose()
}

pub(crate) async fn user_media_keys(conn: impl PgExecutor<'_>, user_id: Uuid) -> StoreResult<Vec<String>> {
    sqlx::query_scalar("SELECT storage_key FROM media WHERE user_id = $1")
        .bind(user_id)
        .fetch_all(conn)
        .await
        .map_err(sql::err)
}

// ---------------------------------------------------------------- usage

/// Rows per INSERT: 15 parameters each stays far below PostgreSQL's 65,535.
const GENERATIONS_PER_STATEMENT: usize = 1_000;

/// One multi-row INSERT per thousand records, all in the caller's transaction.
/// `ON CONFLICT DO NOTHING`: a batch retried after a lost reply is not counted twice.
pub(crate) async fn record_generations(
    tx: &mut PgConnection,
    records: &[GenerationRecord],
) -> StoreResult<()> {
    for chunk in records.chunks(GENERATIONS_PER_STATEMENT) {
        let mut insert = QueryBuilder::<Postgres>::new(
            "INSERT INTO generations (id, user_id, kind, model_requested, model_served, status, prompt_tokens, \
             completion_tokens, cost_nanousd, latency_ms, error, summary, conversation_id, media_ids, created_at) ",
        );
        insert.push_values(chunk, |mut row, r| {
            let media_ids = encoding::join_list(&r.media_ids);
            row.push_bind(r.id)
                .push_bind(r.user_id)
                .push_bind(r.kind.as_str())
                .push_bind(r.model_requested.clone())
                .push_bind(r.model_served.clone())
                .push_bind(r.status.as_str())
                .push_bind(sql::bigint(r.prompt_tokens))
                .push_bind(sql::bigint(r.completion_tokens))
                .push_bind(r.cost_nanousd)
                .push_bind(sql::bigint(r.latency_ms))
                .push_bind(r.error.clone())
                .push_bind(r.summary.clone())
                .push_bind(r.conversation_id)
                .push_bind(media_ids)
                .push_bind(r.created_at);
        });
        insert.push(" ON CONFLICT (id) DO NOTHING");
        insert.build().execute(&mut *tx).await.map_err(sql::err)?;
    }
    Ok(())
}

#[derive(sqlx::FromRow)]
struct GenerationRow {
    id: Uuid,
    user_id: Uuid,
    kind: String,
    model_requested: String,
    model_served: Option<String>,
    status: String,
    prompt_tokens: i64,
    completion_tokens: i64,
    cost_nanousd: i64,
    latency_ms: i64,
    error: Option<String>,
    summary: String,
    conversation_id: Option<Uuid>,
    media_ids: String,
    created_at: DateTime<Utc>,
}

impl GenerationRow {
    fn into_record(self) -> StoreResult<GenerationRecord> {
        Ok(GenerationRecord {
            id: self.id,
            user_id: self.user_id,
            kind: sql::parse(&self.kind)?,
            model_requested: self.model_requested,
            model_served: self.model_served,
            status: sql::parse(&self.status)?,
            prompt_tokens: sql::count(self.prompt_tokens),
            completion_tokens: sql::count(self.completion_tokens),
            cost_nanousd: self.cost_nanousd,
            latency_ms: sql::count(self.latency_ms),
            error: self.error,
            summary: self.summary,
            conversation_id: self.conversation_id,
            media_ids: encoding::split_list(&self.media_ids)
                .map(sql::parse)
                .collect::<StoreResult<_>>()?,
            created_at: self.created_at,
        })
    }
}

pub(crate) async fn generations(
    conn: impl PgExecutor<'_>,
    q: &GenerationQuery,
) -> StoreResult<(Vec<GenerationRecord>, bool)> {
    let rows = sqlx::query_as::<_, GenerationRow>(
        "SELECT id, user_id, kind, model_requested, model_served, status, prompt_tokens, completion_tokens, \
         cost_nanousd, latency_ms, error, summary, conversation_id, media_ids, created_at \
         FROM generations WHERE user_id = $1 AND ($2::text IS NULL OR kind = $2) \
         AND ($3::uuid IS NULL OR id < $3) ORDER BY id DESC LIMIT $4",
    )
    .bind(q.user_id)
    .bind(q.kind.map(GenerationKind::as_str))
    .bind(q.before)
    .bind(i64::from(q.limit) + 1)
    .fetch_all(conn)
    .await
    .map_err(sql::err)?;
    let has_more = rows.len() > q.limit as usize;
    let list = rows
        .into_iter()
        .take(q.limit as usize)
        .map(GenerationRow::into_record)
        .collect::<StoreResult<_>>()?;
    Ok((list, has_more))
}

#[derive(sqlx::FromRow)]
struct TotalRow {
    key: String,
    label: Option<String>,
    generations: i64,
    tokens: Option<i64>,
    cost: Option<i64>,
}

async fn totals(conn: &mut PgConnection, query: &str, since: DateTime<Utc>) -> StoreResult<Vec<UsageTotal>> {
    let rows = sqlx::query_as::<_, TotalRow>(query)
        .bind(since)
        .fetch_all(&mut *conn)
        .await
        .map_err(sql::err)?;
    Ok(rows
        .into_iter()
        .map(|r| UsageTotal {
            key: r.key,
            label: r.label,
            generations: sql::count(r.generations),
            tokens: sql::count(r.tokens.unwrap_or(0)),
            cost_nanousd: r.cost.unwrap_or(0),
        })
        .collect())
}

pub(crate) async fn usage_report(conn: &mut PgConnection, since: DateTime<Utc>) -> StoreResult<UsageReport> {
    // Sums of BIGINT are NUMERIC in PostgreSQL; cast back for the driver.
    let by_user = totals(
        conn,
        "SELECT g.user_id::text AS key, min(u.email) AS label, count(*) AS generations, \
                sum(g.prompt_tokens + g.completion_tokens)::bigint AS tokens, sum(g.cost_nanousd)::bigint AS cost \
         FROM generations g LEFT JOIN users u ON u.id = g.user_id \
         WHERE g.created_at >= $1 GROUP BY g.user_id ORDER BY 5 DESC, 3 DESC LIMIT 100",
        since,
    )
    .await?;
    let by_model = totals(
        conn,
        "SELECT coalesce(model_served, model_requested) AS key, NULL::text AS label, count(*) AS generations, \
                sum(prompt_tokens + completion_tokens)::bigint AS tokens, sum(cost_nanousd)::bigint AS cost \
         FROM generations WHERE created_at >= $1 GROUP BY 1 ORDER BY 5 DESC, 3 DESC LIMIT 100",
        since,
    )
    .await?;
    let by_day = totals(
        conn,
        "SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS key, NULL::text AS label, \
                count(*) AS generations, sum(prompt_tokens + completion_tokens)::bigint AS tokens, \
                sum(cost_nanousd)::bigint AS cost \
         FROM generations WHERE created_at >= $1 GROUP BY 1 ORDER BY 1",
        since,
    )
    .await?;
    Ok(UsageReport {
        by_user,
        by_model,
        by_day,
    })
}

// ---------------------------------------------------------------- settings

pub(crate) async fn setting(conn: impl PgExecutor<'_>, name: &str) -> StoreResult<Option<String>> {
    sqlx::query_scalar("SELECT value FROM server_settings WHERE name = $1")
        .bind(name)
        .fetch_optional(conn)
        .await
        .map_err(sql::err)
}

pub(crate) async fn set_setting(
    conn: impl PgExecutor<'_>,
    name: &str,
    value: &str,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO server_settings (name, value, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
    )
    .bind(name)
    .bind(value)
    .bind(now)
    .execute(conn)
    .await
    .map(drop)
    .map_err(sql::err)
}
