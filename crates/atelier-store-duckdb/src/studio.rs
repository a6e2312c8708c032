//! Conversations, media, usage records and settings.

use atelier_store::*;
use chrono::{DateTime, Utc};
use duckdb::{Connection, OptionalExt, Row};
use uuid::Uuid;

use crate::sql;

// ---------------------------------------------------------------- conversations

const CONVERSATION_COLUMNS: &str = "id, user_id, title, model, epoch_us(created_at), epoch_us(updated_at)";

fn conversation_row(r: &Row<'_>) -> duckdb::Result<(String, String, String, Option<String>, i64, i64)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
}

fn into_conversation(
    (id, user_id, title, model, created, updated): (String, String, String, Option<String>, i64, i64),
) -> StoreResult<Conversation> {
    Ok(Conversation {
        id: sql::uuid(&id)?,
        user_id: sql::uuid(&user_id)?,
        title,
        model,
        created_at: sql::time(created)?,
        updated_at: sql::time(updated)?,
    })
}

pub(crate) fn create_conversation(tx: &Connection, c: &Conversation) -> StoreResult<()> {
    sql::execute(
        tx,
        "INSERT INTO conversations (id, user_id, title, model, created_at, updated_at) \
         VALUES (?, ?, ?, ?, make_timestamp(?), make_timestamp(?))",
        duckdb::params![
            c.id.to_string(),
            c.user_id.to_string(),
            c.title,
            c.model,
            sql::micros(c.created_at),
            sql::micros(c.updated_at)
        ],
    )
}

pub(crate) fn conversations(
    conn: &Connection,
    q: &ConversationQuery,
) -> StoreResult<(Vec<Conversation>, bool)> {
    let rows = conn
        .prepare_cached(&format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE user_id = ? \
             ORDER BY updated_at DESC, id DESC LIMIT ? OFFSET ?"
        ))
        .and_then(|mut s| {
            s.query_map(
                duckdb::params![q.user_id.to_string(), i64::from(q.limit) + 1, i64::from(q.offset)],
                conversation_row,
            )?
            .collect::<duckdb::Result<Vec<_>>>()
        })
        .map_err(sql::err)?;
    let has_more = rows.len() > q.limit as usize;
    let list = rows
        .into_iter()
        .take(q.limit as usize)
        .map(into_conversation)
        .collect::<StoreResult<_>>()?;
    Ok((list, has_more))
}

pub(crate) fn conversation(conn: &Connection, user_id: Uuid, id: Uuid) -> StoreResult<Option<Conversation>> {
    conn.prepare_cached(&format!(
        "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = ? AND user_id = ?"
    ))
    .and_then(|mut s| {
        s.query_row([id.to_string(), user_id.to_string()], conversation_row)
            .optional()
    })
    .map_err(sql::err)?
    .map(into_conversation)
    .transpose()
}

pub(crate) fn messages(conn: &Connection, conversation_id: Uuid) -> StoreResult<Vec<ChatMessage>> {
    let rows = conn
        .prepare_cached(
            "SELECT id, conversation_id, role, content, status, model, error, epoch_us(created_at) \
             FROM messages WHERE conversation_id = ? ORDER BY created_at, id",
        )
        .and_then(|mut s| {
            s.query_map([conversation_id.to_string()], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, Option<String>>(5)?,
                    r.get::<_, Option<String>>(6)?,
                    r.get::<_, i64>(7)?,
                ))
            })?
            .collect::<duckdb::Result<Vec<_>>>()
        })
        .map_err(sql::err)?;
    rows.into_iter()
        .map(
            |(id, conversation_id, role, content, status, model, error, created)| {
                Ok(ChatMessage {
                    id: sql::uuid(&id)?,
                    conversation_id: sql::uuid(&conversation_id)?,
                    role,
                    content,
                    status: status.parse().map_err(StoreError::backend)?,
                    model,
                    error,
                    created_at: sql::time(created)?,
                })
            },
        )
        .collect()
}

pub(crate) fn add_messages(
    tx: &Connection,
    conversation_id: Uuid,
    messages: &[ChatMessage],
    model: Option<&str>,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    insert_messages(tx, conversation_id, messages)?;
    sql::execute(
        tx,
        "UPDATE conversations SET updated_at = make_timestamp(?), model = coalesce(?, model) WHERE id = ?",
        duckdb::params![sql::micros(now), model, conversation_id.to_string()],
    )
}

/// The messages alone; the conversation's activity is the caller's to mark.
pub(crate) fn insert_messages(
    tx: &Connection,
    conversation_id: Uuid,
    messages: &[ChatMessage],
) -> StoreResult<()> {
    let mut insert = tx
        .prepare_cached(
            "INSERT INTO messages (id, conversation_id, role, content, status, model, error, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, make_timestamp(?))",
        )
        .map_err(sql::err)?;
    for m in messages {
        insert
            .execute(duckdb::params![
                m.id.to_string(),
                conversation_id.to_string(),
                m.role,
                m.content,
                m.status.as_str(),
                m.model,
                m.error,
                sql::micros(m.created_at),
            ])
            .map_err(sql::err)?;
    }
    Ok(())
}

pub(crate) fn rename_conversation(
    tx: &Connection,
    user_id: Uuid,
    id: Uuid,
    title: &str,
    now: DateTime<Utc>,
) -> StoreResult<Conversation> {
    let changed = tx
        .execute(
            "UPDATE conversations SET title = ?, updated_at = make_timestamp(?) WHERE id = ? AND user_id = ?",
            duckdb::params![title, sql::micros(now), id.to_string(), user_id.to_string()],
        )
        .map_err(sql::err)?;
    if changed == 0 {
        return Err(StoreError::NotFound);
    }
    conversation(tx, user_id, id)?.ok_or(StoreError::NotFound)
}

pub(crate) fn delete_conversation(tx: &Connection, user_id: Uuid, id: Uuid) -> StoreResult<()> {
    if conversation(tx, user_id, id)?.is_none() {
        return Err(StoreError::NotFound);
    }
    tx.execute("DELETE FROM messages WHERE conversation_id = ?", [id.to_string()])
        .map_err(sql::err)?;
    tx.execute("DELETE FROM conversations WHERE id = ?", [id.to_string()])
        .map(drop)
        .map_err(sql::err)
}

/// Everything of a user's but their usage records; part of deleting the user.
pub(crate) fn delete_user_content(tx: &Connection, user_id: Uuid) -> StoreResult<()> {
    let id = user_id.to_string();
    for statement in [
        "DELETE FROM messages WHERE conversation_id IN (SELECT id FROM conversations WHERE user_id = ?)",
        "DELETE FROM conversations WHERE user_id = ?",
        "DELETE FROM media WHERE user_id = ?",
        "DELETE FROM video_jobs WHERE user_id = ?",
        "DELETE FROM api_keys WHERE user_id = ?",
        "DELETE FROM user_budgets WHERE user_id = ?",
    ] {
        tx.execute(statement, [&id]).map_err(sql::err)?;
    }
    Ok(())
}

// ---------------------------------------------------------------- media

pub(crate) fn insert_media(tx: &Connection, m: &MediaRecord) -> StoreResult<()> {
    tx.execute(
        "INSERT INTO media (id, user_id, kind, content_type, size_bytes, storage_key, generation_id, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, make_timestamp(?))",
        duckdb::params![
            m.id.to_string(),
            m.user_id.to_string(),
            m.kind.as_str(),
            m.content_type,
            sql::bigint(m.size_bytes),
            m.storage_key,
            m.generation_id.map(|g| g.to_string()),
            sql::micros(m.created_at),
        ],
    )
    .map(drop)
    .map_err(sql::err)
}

pub(crate) fn media(conn: &Connection, id: Uuid) -> StoreResult<Option<MediaRecord>> {
    let row = conn
        .prepare_cached(
            "SELECT id, user_id, kind, content_type, size_bytes, storage_key, generation_id, epoch_us(created_at) \
             FROM media WHERE id = ?",
        )
        .and_then(|mut s| {
            s.query_row([id.to_string()], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, Option<String>>(6)?,
                    r.get::<_, i64>(7)?,
                ))
            })
            .optional()
        })
        .map_err(sql::err)?;
    row.map(
        |(id, user_id, kind, content_type, size, key, generation_id, created)| {
            Ok(MediaRecord {
                id: sql::uuid(&id)?,
                user_id: sql::uuid(&user_id)?,
                kind: kind.parse().map_err(StoreError::backend)?,
                content_type,
                size_bytes: sql::count(size),
                storage_key: key,
                generation_id: generation_id.as_deref().map(sql::uuid).transpose()?,
                created_at: sql::time(created)?,
            })
        },
    )
    .transpose()
}

pub(crate) fn user_media_keys(conn: &Connection, user_id: Uuid) -> StoreResult<Vec<String>> {
    conn.prepare_cached("SELECT storage_key FROM media WHERE user_id = ?")
        .and_then(|mut s| {
            s.query_map([user_id.to_string()], |r| r.get(0))?
                .collect::<duckdb::Result<Vec<String>>>()
        })
        .map_err(sql::err)
}

// ---------------------------------------------------------------- usage

/// One appender for the whole batch: thousands of rows cost about one commit,
/// handed to DuckDB a column at a time (ADR-0034).
/// Never inlined, so that profiles name it: `bench/callgrind` counts the usage
/// writer's batches apart from the requests by this name.
#[inline(never)]
pub(crate) fn record_generations(tx: &Connection, records: &[GenerationRecord]) -> StoreResult<()> {
    use sql::{
        bigint, integer_column as integers, optional_text_column as optional, text_column as text,
        timestamp_column as timestamps,
    };
    sql::append_columns(tx, "generations", records, |rs| {
        vec![
            ("id", text(rs, |r| r.id.to_string())),
            ("user_id", text(rs, |r| r.user_id.to_string())),
            ("kind", text(rs, |r| r.kind.as_str())),
            ("model_requested", text(rs, |r| r.model_requested.as_str())),
            ("model_served", optional(rs, |r| r.model_served.as_deref())),
            ("status", text(rs, |r| r.status.as_str())),
            ("prompt_tokens", integers(rs, |r| bigint(r.prompt_tokens))),
            ("completion_tokens", integers(rs, |r| bigint(r.completion_tokens))),
            ("cost_nanousd", integers(rs, |r| r.cost_nanousd)),
            ("latency_ms", integers(rs, |r| bigint(r.latency_ms))),
            ("error", optional(rs, |r| r.error.as_deref())),
            ("summary", text(rs, |r| r.summary.as_str())),
            (
                "conversation_id",
                optional(rs, |r| r.conversation_id.map(|c| c.to_string())),
            ),
            ("media_ids", text(rs, |r| encoding::join_list(&r.media_ids))),
            ("created_at", timestamps(rs, |r| r.created_at)),
        ]
    })
}

pub(crate) fn generations(
    conn: &Connection,
    q: &GenerationQuery,
) -> StoreResult<(Vec<GenerationRecord>, bool)> {
    let mut filter = String::from("WHERE user_id = ?");
    let mut args = vec![q.user_id.to_string()];
    if let Some(kind) = q.kind {
        filter.push_str(" AND kind = ?");
        args.push(kind.as_str().to_owned());
    }
    if let Some(before) = q.before {
        filter.push_str(" AND id < ?");
        args.push(before.to_string());
    }
    let limit = i64::from(q.limit) + 1;
    let rows = conn
        .prepare_cached(&format!(
            "SELECT id, user_id, kind, model_requested, model_served, status, prompt_tokens, completion_tokens, \
             cost_nanousd, latency_ms, error, summary, conversation_id, media_ids, epoch_us(created_at) \
             FROM generations {filter} ORDER BY id DESC LIMIT {limit}"
        ))
        .and_then(|mut s| {
            s.query_map(duckdb::params_from_iter(&args), |r| {
                Ok(GenerationRow {
                    id: r.get(0)?,
                    user_id: r.get(1)?,
                    kind: r.get(2)?,
                    model_requested: r.get(3)?,
                    model_served: r.get(4)?,
                    status: r.get(5)?,
                    prompt_tokens: r.get(6)?,
                    completion_tokens: r.get(7)?,
                    cost_nanousd: r.get(8)?,
                    latency_ms: r.get(9)?,
                    error: r.get(10)?,
                    summary: r.get(11)?,
                    conversation_id: r.get(12)?,
                    media_ids: r.get(13)?,
                    created_at: r.get(14)?,
                })
            })?
            .collect::<duckdb::Result<Vec<_>>>()
        })
        .map_err(sql::err)?;
    let has_more = rows.len() > q.limit as usize;
    let list = rows
        .into_iter()
        .take(q.limit as usize)
        .map(GenerationRow::into_record)
        .collect::<StoreResult<_>>()?;
    Ok((list, has_more))
}

struct GenerationRow {
    id: String,
    user_id: String,
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
    conversation_id: Option<String>,
    media_ids: String,
    created_at: i64,
}

impl GenerationRow {
    fn into_record(self) -> StoreResult<GenerationRecord> {
        Ok(GenerationRecord {
            id: sql::uuid(&self.id)?,
            user_id: sql::uuid(&self.user_id)?,
            kind: self.kind.parse().map_err(StoreError::backend)?,
            model_requested: self.model_requested,
            model_served: self.model_served,
            status: self.status.parse().map_err(StoreError::backend)?,
            prompt_tokens: sql::count(self.prompt_tokens),
            completion_tokens: sql::count(self.completion_tokens),
            cost_nanousd: self.cost_nanousd,
            latency_ms: sql::count(self.latency_ms),
            error: self.error,
            summary: self.summary,
            conversation_id: self.conversation_id.as_deref().map(sql::uuid).transpose()?,
            media_ids: encoding::split_list(&self.media_ids)
                .map(sql::uuid)
                .collect::<StoreResult<_>>()?,
            created_at: sql::time(self.created_at)?,
        })
    }
}

pub(crate) fn usage_report(conn: &Connection, since: DateTime<Utc>) -> StoreResult<UsageReport> {
    let totals = |sql: &str| -> StoreResult<Vec<UsageTotal>> {
        let rows = conn
            .prepare_cached(sql)
            .and_then(|mut s| {
                s.query_map([sql::micros(since)], |r| {
                    Ok(UsageTotal {
                        key: r.get(0)?,
                        label: r.get(1)?,
                        generations: sql::count(r.get(2)?),
                        tokens: sql::count(r.get::<_, Option<i64>>(3)?.unwrap_or(0)),
                        cost_nanousd: r.get::<_, Option<i64>>(4)?.unwrap_or(0),
                    })
                })?
                .collect::<duckdb::Result<Vec<_>>>()
            })
            .map_err(sql::err)?;
        Ok(rows)
    };
    // Sums of BIGINT are HUGEINT in DuckDB; cast back for the driver.
    let by_user = totals(
        "SELECT g.user_id, any_value(u.email), count(*), \
                CAST(sum(g.prompt_tokens + g.completion_tokens) AS BIGINT), CAST(sum(g.cost_nanousd) AS BIGINT) \
         FROM generations g LEFT JOIN users u ON u.id = g.user_id \
         WHERE g.created_at >= make_timestamp($1) GROUP BY g.user_id ORDER BY 5 DESC, 3 DESC LIMIT 100",
    )?;
    let by_model = totals(
        "SELECT coalesce(model_served, model_requested), CAST(NULL AS VARCHAR), count(*), \
                CAST(sum(prompt_tokens + completion_tokens) AS BIGINT), CAST(sum(cost_nanousd) AS BIGINT) \
         FROM generations WHERE created_at >= make_timestamp($1) GROUP BY 1 ORDER BY 5 DESC, 3 DESC LIMIT 100",
    )?;
    let by_day = totals(
        "SELECT strftime(date_trunc('day', created_at), '%Y-%m-%d'), CAST(NULL AS VARCHAR), count(*), \
                CAST(sum(prompt_tokens + completion_tokens) AS BIGINT), CAST(sum(cost_nanousd) AS BIGINT) \
         FROM generations WHERE created_at >= make_timestamp($1) GROUP BY 1 ORDER BY 1",
    )?;
    Ok(UsageReport {
        by_user,
        by_model,
        by_day,
    })
}

// ---------------------------------------------------------------- settings

pub(crate) fn setting(conn: &Connection, name: &str) -> StoreResult<Option<String>> {
    conn.prepare_cached("SELECT value FROM server_settings WHERE name = ?")
        .and_then(|mut s| s.query_row([name], |r| r.get(0)).optional())
        .map_err(sql::err)
}

pub(crate) fn set_setting(tx: &Connection, name: &str, value: &str, now: DateTime<Utc>) -> StoreResult<()> {
    tx.execute(
        "INSERT INTO server_settings (name, value, updated_at) VALUES (?, ?, make_timestamp(?)) \
         ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        duckdb::params![name, value, sql::micros(now)],
    )
    .map(drop)
    .map_err(sql::err)
}
