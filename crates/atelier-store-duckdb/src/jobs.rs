//! Video jobs: durable, leased to one poller at a time, finished exactly once.

use atelier_store::*;
use chrono::{DateTime, Utc};
use duckdb::{Connection, OptionalExt, Row};
use uuid::Uuid;

use crate::sql;

const JOB_COLUMNS: &str = "id, user_id, generation_id, model, prompt, params, upstream_id, polling_url, status, \
     error, media_id, cost_nanousd, polls, epoch_us(next_poll_at), epoch_us(created_at), epoch_us(updated_at), \
     epoch_us(finished_at)";

const UNFINISHED: &str = "status IN ('pending', 'in_progress')";

struct JobRow {
    id: String,
    user_id: String,
    generation_id: String,
    model: String,
    prompt: String,
    params: String,
    upstream_id: String,
    polling_url: Option<String>,
    status: String,
    error: Option<String>,
    media_id: Option<String>,
    cost_nanousd: Option<i64>,
    polls: i64,
    next_poll_at: i64,
    created_at: i64,
    updated_at: i64,
    finished_at: Option<i64>,
}

impl JobRow {
    fn read(r: &Row<'_>) -> duckdb::Result<Self> {
        Ok(JobRow {
            id: r.get(0)?,
            user_id: r.get(1)?,
            generation_id: r.get(2)?,
            model: r.get(3)?,
            prompt: r.get(4)?,
            params: r.get(5)?,
            upstream_id: r.get(6)?,
            polling_url: r.get(7)?,
            status: r.get(8)?,
            error: r.get(9)?,
            media_id: r.get(10)?,
            cost_nanousd: r.get(11)?,
            polls: r.get(12)?,
            next_poll_at: r.get(13)?,
            created_at: r.get(14)?,
            updated_at: r.get(15)?,
            finished_at: r.get(16)?,
        })
    }

    fn into_job(self) -> StoreResult<VideoJob> {
        Ok(VideoJob {
            id: sql::uuid(&self.id)?,
            user_id: sql::uuid(&self.user_id)?,
            generation_id: sql::uuid(&self.generation_id)?,
            model: self.model,
            prompt: self.prompt,
            params: self.params,
            upstream_id: self.upstream_id,
            polling_url: self.polling_url,
            status: self.status.parse().map_err(StoreError::backend)?,
            error: self.error,
            media_id: self.media_id.as_deref().map(sql::uuid).transpose()?,
            cost_nanousd: self.cost_nanousd,
            polls: u32::try_from(self.polls).unwrap_or(0),
            next_poll_at: sql::time(self.next_poll_at)?,
            created_at: sql::time(self.created_at)?,
            updated_at: sql::time(self.updated_at)?,
            finished_at: self.finished_at.map(sql::time).transpose()?,
        })
    }
}

fn jobs_where(conn: &Connection, clause: &str, args: &[String]) -> StoreResult<Vec<VideoJob>> {
    let rows = conn
        .prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM video_jobs {clause}"))
        .and_then(|mut s| {
            s.query_map(duckdb::params_from_iter(args), JobRow::read)?
                .collect::<duckdb::Result<Vec<_>>>()
        })
        .map_err(sql::err)?;
    rows.into_iter().map(JobRow::into_job).collect()
}

pub(crate) fn create(tx: &Connection, j: &VideoJob) -> StoreResult<()> {
    tx.execute(
        "INSERT INTO video_jobs (id, user_id, generation_id, model, prompt, params, upstream_id, polling_url, \
         status, error, media_id, cost_nanousd, polls, next_poll_at, created_at, updated_at, finished_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, make_timestamp(?), make_timestamp(?), make_timestamp(?), NULL)",
        duckdb::params![
            j.id.to_string(),
            j.user_id.to_string(),
            j.generation_id.to_string(),
            j.model,
            j.prompt,
            j.params,
            j.upstream_id,
            j.polling_url,
            j.status.as_str(),
            j.error,
            j.media_id.map(|m| m.to_string()),
            j.cost_nanousd,
            j.polls,
            sql::micros(j.next_poll_at),
            sql::micros(j.created_at),
            sql::micros(j.updated_at),
        ],
    )
    .map(drop)
    .map_err(sql::err)
}

pub(crate) fn by_id(conn: &Connection, id: Uuid) -> StoreResult<Option<VideoJob>> {
    conn.prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM video_jobs WHERE id = ?"))
        .and_then(|mut s| s.query_row([id.to_string()], JobRow::read).optional())
        .map_err(sql::err)?
        .map(JobRow::into_job)
        .transpose()
}

pub(crate) fn of_user(conn: &Connection, user_id: Uuid, limit: u32) -> StoreResult<Vec<VideoJob>> {
    jobs_where(
        conn,
        &format!("WHERE user_id = ? ORDER BY id DESC LIMIT {limit}"),
        &[user_id.to_string()],
    )
}

pub(crate) fn claim(
    tx: &Connection,
    owner: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: u32,
) -> StoreResult<Vec<VideoJob>> {
    let now_us = sql::micros(now);
    let ids: Vec<String> = tx
        .prepare_cached(&format!(
            "SELECT id FROM video_jobs WHERE {UNFINISHED} AND next_poll_at <= make_timestamp(?) \
             AND (lease_owner IS NULL OR lease_owner = ? OR lease_expires_at <= make_timestamp(?)) \
             ORDER BY next_poll_at LIMIT {limit}"
        ))
        .and_then(|mut s| {
            s.query_map(duckdb::params![now_us, owner, now_us], |r| r.get(0))?
                .collect::<duckdb::Result<Vec<String>>>()
        })
        .map_err(sql::err)?;
    let mut claimed = Vec::with_capacity(ids.len());
    for id in ids {
        tx.execute(
            "UPDATE video_jobs SET lease_owner = ?, lease_expires_at = make_timestamp(?) WHERE id = ?",
            duckdb::params![owner, sql::micros(lease_until), id],
        )
        .map_err(sql::err)?;
        claimed.extend(by_id(tx, sql::uuid(&id)?)?);
    }
    Ok(claimed)
}

/// Whether any job is still pending or in progress.
pub(crate) fn any_unfinished(tx: &Connection) -> StoreResult<bool> {
    tx.prepare_cached(&format!(
        "SELECT EXISTS (SELECT 1 FROM video_jobs WHERE {UNFINISHED})"
    ))
    .and_then(|mut s| s.query_row([], |r| r.get(0)))
    .map_err(sql::err)
}

pub(crate) fn update(tx: &Connection, p: &JobProgress) -> StoreResult<bool> {
    let changed = tx
        .execute(
            &format!(
                "UPDATE video_jobs SET status = ?, polls = ?, next_poll_at = make_timestamp(?), \
                 updated_at = make_timestamp(?), lease_owner = NULL, lease_expires_at = NULL \
                 WHERE id = ? AND lease_owner = ? AND {UNFINISHED}"
            ),
            duckdb::params![
                p.status.as_str(),
                p.polls,
                sql::micros(p.next_poll_at),
                sql::micros(p.now),
                p.id.to_string(),
                p.owner,
            ],
        )
        .map_err(sql::err)?;
    Ok(changed == 1)
}

pub(crate) fn finish(tx: &Connection, o: &JobOutcome) -> StoreResult<bool> {
    let now = sql::micros(o.now);
    let changed = tx
        .execute(
            &format!(
                "UPDATE video_jobs SET status = ?, error = ?, media_id = ?, cost_nanousd = ?, \
                 finished_at = make_timestamp(?), updated_at = make_timestamp(?), lease_owner = NULL, \
                 lease_expires_at = NULL WHERE id = ? AND {UNFINISHED}"
            ),
            duckdb::params![
                o.status.as_str(),
                o.error,
                o.media_id.map(|m| m.to_string()),
                o.cost_nanousd,
                now,
                now,
                o.id.to_string(),
            ],
        )
        .map_err(sql::err)?;
    Ok(changed == 1)
}
