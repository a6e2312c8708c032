//! Video jobs: durable, leased to one poller at a time, finished exactly once.
//!
//! Instances claim due jobs with `FOR UPDATE SKIP LOCKED`: two pollers scanning at
//! the same moment take disjoint jobs instead of waiting on each other, and a job
//! whose lease has run out (its instance died) is taken over by the next scan.

use atelier_store::*;
use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::sql;

const JOB_COLUMNS: &str = "id, user_id, generation_id, model, prompt, params, upstream_id, polling_url, status, \
     error, media_id, cost_nanousd, polls, next_poll_at, created_at, updated_at, finished_at";

const UNFINISHED: &str = "status IN ('pending', 'in_progress')";

#[derive(sqlx::FromRow)]
struct JobRow {
    id: Uuid,
    user_id: Uuid,
    generation_id: Uuid,
    model: String,
    prompt: String,
    params: String,
    upstream_id: String,
    polling_url: Option<String>,
    status: String,
    error: Option<String>,
    media_id: Option<Uuid>,
    cost_nanousd: Option<i64>,
    polls: i32,
    next_poll_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

impl JobRow {
    fn into_job(self) -> StoreResult<VideoJob> {
        Ok(VideoJob {
            id: self.id,
            user_id: self.user_id,
            generation_id: self.generation_id,
            model: self.model,
            prompt: self.prompt,
            params: self.params,
            upstream_id: self.upstream_id,
            polling_url: self.polling_url,
            status: sql::parse(&self.status)?,
            error: self.error,
            media_id: self.media_id,
            cost_nanousd: self.cost_nanousd,
            polls: u32::try_from(self.polls).unwrap_or(0),
            next_poll_at: self.next_poll_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
            finished_at: self.finished_at,
        })
    }
}

fn into_jobs(rows: Vec<JobRow>) -> StoreResult<Vec<VideoJob>> {
    rows.into_iter().map(JobRow::into_job).collect()
}

pub(crate) async fn create(conn: impl PgExecutor<'_>, j: &VideoJob) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO video_jobs (id, user_id, generation_id, model, prompt, params, upstream_id, polling_url, \
         status, error, media_id, cost_nanousd, polls, next_poll_at, created_at, updated_at, finished_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, NULL)",
    )
    .bind(j.id)
    .bind(j.user_id)
    .bind(j.generation_id)
    .bind(&j.model)
    .bind(&j.prompt)
    .bind(&j.params)
    .bind(&j.upstream_id)
    .bind(&j.polling_url)
    .bind(j.status.as_str())
    .bind(&j.error)
    .bind(j.media_id)
    .bind(j.cost_nanousd)
    .bind(i32::try_from(j.polls).unwrap_or(i32::MAX))
    .bind(j.next_poll_at)
    .bind(j.created_at)
    .bind(j.updated_at)
    .execute(conn)
    .await
    .map(drop)
    .map_err(sql::err)
}

pub(crate) async fn by_id(conn: impl PgExecutor<'_>, id: Uuid) -> StoreResult<Option<VideoJob>> {
    sqlx::query_as::<_, JobRow>(&format!("SELECT {JOB_COLUMNS} FROM video_jobs WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await
        .map_err(sql::err)?
        .map(JobRow::into_job)
        .transpose()
}

pub(crate) async fn of_user(
    conn: impl PgExecutor<'_>,
    user_id: Uuid,
    limit: u32,
) -> StoreResult<Vec<VideoJob>> {
    let rows = sqlx::query_as::<_, JobRow>(&format!(
        "SELECT {JOB_COLUMNS} FROM video_jobs WHERE user_id = $1 ORDER BY id DESC LIMIT $2"
    ))
    .bind(user_id)
    .bind(i64::from(limit))
    .fetch_all(conn)
    .await
    .map_err(sql::err)?;
    into_jobs(rows)
}

pub(crate) async fn claim(
    conn: impl PgExecutor<'_>,
    owner: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: u32,
) -> StoreResult<Vec<VideoJob>> {
    let rows = sqlx::query_as::<_, JobRow>(&format!(
        "UPDATE video_jobs SET lease_owner = $1, lease_expires_at = $2 WHERE id IN ( \
             SELECT id FROM video_jobs WHERE {UNFINISHED} AND next_poll_at <= $3 \
             AND (lease_owner IS NULL OR lease_owner = $1 OR lease_expires_at <= $3) \
             ORDER BY next_poll_at LIMIT $4 FOR UPDATE SKIP LOCKED) \
         RETURNING {JOB_COLUMNS}"
    ))
    .bind(owner)
    .bind(lease_until)
    .bind(now)
    .bind(i64::from(limit))
    .fetch_all(conn)
    .await
    .map_err(sql::err)?;
    let mut jobs = into_jobs(rows)?;
    jobs.sort_by_key(|j| (j.next_poll_at, j.id));
    Ok(jobs)
}

pub(crate) async fn update(conn: impl PgExecutor<'_>, p: &JobProgress) -> StoreResult<bool> {
    let changed = sqlx::query(&format!(
        "UPDATE video_jobs SET status = $1, polls = $2, next_poll_at = $3, updated_at = $4, \
         lease_owner = NULL, lease_expires_at = NULL WHERE id = $5 AND lease_owner = $6 AND {UNFINISHED}"
    ))
    .bind(p.status.as_str())
    .bind(i32::try_from(p.polls).unwrap_or(i32::MAX))
    .bind(p.next_poll_at)
    .bind(p.now)
    .bind(p.id)
    .bind(&p.owner)
    .execute(conn)
    .await
    .map_err(sql::err)?
    .rows_affected();
    Ok(changed == 1)
}

pub(crate) async fn finish(conn: impl PgExecutor<'_>, o: &JobOutcome) -> StoreResult<bool> {
    let changed = sqlx::query(&format!(
        "UPDATE video_jobs SET status = $1, error = $2, media_id = $3, cost_nanousd = $4, finished_at = $5, \
         updated_at = $5, lease_owner = NULL, lease_expires_at = NULL WHERE id = $6 AND {UNFINISHED}"
    ))
    .bind(o.status.as_str())
    .bind(&o.error)
    .bind(o.media_id)
    .bind(o.cost_nanousd)
    .bind(o.now)
    .bind(o.id)
    .execute(conn)
    .await
    .map_err(sql::err)?
    .rows_affected();
    Ok(changed == 1)
}
