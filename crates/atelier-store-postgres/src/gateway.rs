//! API keys and budget overrides.

use atelier_store::*;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::sql;

const KEY_COLUMNS: &str =
    "id, user_id, public_id, key_hash, name, scopes, expires_at, created_at, last_used_at, revoked_at";

#[derive(sqlx::FromRow)]
struct KeyRow {
    id: Uuid,
    user_id: Uuid,
    public_id: String,
    key_hash: Vec<u8>,
    name: String,
    scopes: String,
    expires_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

impl KeyRow {
    fn into_key(self) -> StoreResult<ApiKey> {
        let hash: [u8; 32] = self
            .key_hash
            .try_into()
            .map_err(|_| StoreError::backend("an API key hash is not 32 bytes"))?;
        Ok(ApiKey {
            id: self.id,
            user_id: self.user_id,
            public_id: self.public_id,
            key_hash: TokenHash(hash),
            name: self.name,
            scopes: encoding::split_list(&self.scopes).map(str::to_owned).collect(),
            expires_at: self.expires_at,
            created_at: self.created_at,
            last_used_at: self.last_used_at,
            revoked_at: self.revoked_at,
        })
    }
}

fn into_keys(rows: Vec<KeyRow>) -> StoreResult<Vec<ApiKey>> {
    rows.into_iter().map(KeyRow::into_key).collect()
}

pub(crate) async fn create_key(conn: impl PgExecutor<'_>, k: &ApiKey) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO api_keys (id, user_id, public_id, key_hash, name, scopes, expires_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(k.id)
    .bind(k.user_id)
    .bind(&k.public_id)
    .bind(k.key_hash.0.as_slice())
    .bind(&k.name)
    .bind(encoding::join_list(&k.scopes))
    .bind(k.expires_at)
    .bind(k.created_at)
    .execute(conn)
    .await
    .map(drop)
    .map_err(sql::err)
}

pub(crate) async fn keys_of(conn: impl PgExecutor<'_>, user_id: Uuid) -> StoreResult<Vec<ApiKey>> {
    let rows = sqlx::query_as::<_, KeyRow>(&format!(
        "SELECT {KEY_COLUMNS} FROM api_keys WHERE user_id = $1 AND revoked_at IS NULL ORDER BY id DESC"
    ))
    .bind(user_id)
    .fetch_all(conn)
    .await
    .map_err(sql::err)?;
    into_keys(rows)
}

pub(crate) async fn live_keys(conn: impl PgExecutor<'_>) -> StoreResult<Vec<ApiKey>> {
    let rows = sqlx::query_as::<_, KeyRow>(&format!(
        "SELECT {KEY_COLUMNS} FROM api_keys WHERE revoked_at IS NULL"
    ))
    .fetch_all(conn)
    .await
    .map_err(sql::err)?;
    into_keys(rows)
}

pub(crate) async fn revoke_key(
    conn: impl PgExecutor<'_>,
    id: Uuid,
    user_id: Option<Uuid>,
    now: DateTime<Utc>,
) -> StoreResult<ApiKey> {
    sqlx::query_as::<_, KeyRow>(&format!(
        "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL \
         AND ($3::uuid IS NULL OR user_id = $3) RETURNING {KEY_COLUMNS}"
    ))
    .bind(now)
    .bind(id)
    .bind(user_id)
    .fetch_optional(conn)
    .await
    .map_err(sql::err)?
    .ok_or(StoreError::NotFound)?
    .into_key()
}

/// One statement for the whole batch: the ids and times travel as two arrays.
pub(crate) async fn touch_keys(conn: impl PgExecutor<'_>, uses: &[(Uuid, DateTime<Utc>)]) -> StoreResult<()> {
    let (ids, times): (Vec<Uuid>, Vec<DateTime<Utc>>) = uses.iter().copied().unzip();
    sqlx::query(
        "UPDATE api_keys k SET last_used_at = greatest(k.last_used_at, u.at) \
         FROM unnest($1::uuid[], $2::timestamptz[]) AS u(id, at) WHERE k.id = u.id",
    )
    .bind(ids)
    .bind(times)
    .execute(conn)
    .await
    .map(drop)
    .map_err(sql::err)
}

#[derive(sqlx::FromRow)]
struct BudgetRow {
    user_id: Uuid,
    daily_nanousd: Option<i64>,
    monthly_nanousd: Option<i64>,
    daily_requests: Option<i64>,
    monthly_requests: Option<i64>,
}

pub(crate) async fn budget_overrides(conn: impl PgExecutor<'_>) -> StoreResult<Vec<BudgetOverride>> {
    let rows = sqlx::query_as::<_, BudgetRow>(
        "SELECT user_id, daily_nanousd, monthly_nanousd, daily_requests, monthly_requests FROM user_budgets",
    )
    .fetch_all(conn)
    .await
    .map_err(sql::err)?;
    Ok(rows
        .into_iter()
        .map(|r| BudgetOverride {
            user_id: r.user_id,
            daily_nanousd: r.daily_nanousd,
            monthly_nanousd: r.monthly_nanousd,
            daily_requests: r.daily_requests.map(sql::count),
            monthly_requests: r.monthly_requests.map(sql::count),
        })
        .collect())
}

pub(crate) async fn set_budget_override(
    tx: &mut PgConnection,
    b: &BudgetOverride,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let empty = b.daily_nanousd.is_none()
        && b.monthly_nanousd.is_none()
        && b.daily_requests.is_none()
        && b.monthly_requests.is_none();
    if empty {
        return sqlx::query("DELETE FROM user_budgets WHERE user_id = $1")
            .bind(b.user_id)
            .execute(&mut *tx)
            .await
            .map(drop)
            .map_err(sql::err);
    }
    sqlx::query(
        "INSERT INTO user_budgets (user_id, daily_nanousd, monthly_nanousd, daily_requests, monthly_requests, \
         updated_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (user_id) DO UPDATE SET \
         daily_nanousd = excluded.daily_nanousd, monthly_nanousd = excluded.monthly_nanousd, \
         daily_requests = excluded.daily_requests, monthly_requests = excluded.monthly_requests, \
         updated_at = excluded.updated_at",
    )
    .bind(b.user_id)
    .bind(b.daily_nanousd)
    .bind(b.monthly_nanousd)
    .bind(b.daily_requests.map(sql::bigint))
    .bind(b.monthly_requests.map(sql::bigint))
    .bind(now)
    .execute(&mut *tx)
    .await
    .map(drop)
    .map_err(sql::err)
}

pub(crate) async fn spend_since(conn: impl PgExecutor<'_>, since: DateTime<Utc>) -> StoreResult<Vec<Spend>> {
    let rows: Vec<(Uuid, i64, i64)> = sqlx::query_as(
        "SELECT user_id, sum(cost_nanousd)::bigint, count(*) FROM generations \
         WHERE created_at >= $1 GROUP BY user_id",
    )
    .bind(since)
    .fetch_all(conn)
    .await
    .map_err(sql::err)?;
    Ok(rows
        .into_iter()
        .map(|(user_id, cost_nanousd, requests)| Spend {
            user_id,
            cost_nanousd,
            requests: sql::count(requests),
        })
        .collect())
}
