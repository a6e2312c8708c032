//! API keys and budget overrides.

use atelier_store::*;
use chrono::{DateTime, Utc};
use duckdb::{Connection, Row};
use uuid::Uuid;

use crate::sql;

const KEY_COLUMNS: &str = "id, user_id, public_id, key_hash, name, scopes, epoch_us(expires_at), epoch_us(created_at), \
                           epoch_us(last_used_at), epoch_us(revoked_at)";

struct KeyRow {
    id: String,
    user_id: String,
    public_id: String,
    key_hash: Vec<u8>,
    name: String,
    scopes: String,
    expires_at: Option<i64>,
    created_at: i64,
    last_used_at: Option<i64>,
    revoked_at: Option<i64>,
}

impl KeyRow {
    fn read(r: &Row<'_>) -> duckdb::Result<Self> {
        Ok(KeyRow {
            id: r.get(0)?,
            user_id: r.get(1)?,
            public_id: r.get(2)?,
            key_hash: r.get(3)?,
            name: r.get(4)?,
            scopes: r.get(5)?,
            expires_at: r.get(6)?,
            created_at: r.get(7)?,
            last_used_at: r.get(8)?,
            revoked_at: r.get(9)?,
        })
    }

    fn into_key(self) -> StoreResult<ApiKey> {
        let hash: [u8; 32] = self
            .key_hash
            .try_into()
            .map_err(|_| StoreError::backend("an API key hash is not 32 bytes"))?;
        Ok(ApiKey {
            id: sql::uuid(&self.id)?,
            user_id: sql::uuid(&self.user_id)?,
            public_id: self.public_id,
            key_hash: TokenHash(hash),
            name: self.name,
            scopes: encoding::split_list(&self.scopes).map(str::to_owned).collect(),
            expires_at: self.expires_at.map(sql::time).transpose()?,
            created_at: sql::time(self.created_at)?,
            last_used_at: self.last_used_at.map(sql::time).transpose()?,
            revoked_at: self.revoked_at.map(sql::time).transpose()?,
        })
    }
}

fn keys_where(conn: &Connection, clause: &str, args: &[String]) -> StoreResult<Vec<ApiKey>> {
    let rows = conn
        .prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM api_keys {clause}"))
        .and_then(|mut s| {
            s.query_map(duckdb::params_from_iter(args), KeyRow::read)?
                .collect::<duckdb::Result<Vec<_>>>()
        })
        .map_err(sql::err)?;
    rows.into_iter().map(KeyRow::into_key).collect()
}

pub(crate) fn create_key(tx: &Connection, k: &ApiKey) -> StoreResult<()> {
    tx.execute(
        "INSERT INTO api_keys (id, user_id, public_id, key_hash, name, scopes, expires_at, created_at, last_used_at, revoked_at) \
         VALUES (?, ?, ?, ?, ?, ?, make_timestamp(?), make_timestamp(?), NULL, NULL)",
        duckdb::params![
            k.id.to_string(),
            k.user_id.to_string(),
            k.public_id,
            k.key_hash.0.as_slice(),
            k.name,
            encoding::join_list(&k.scopes),
            k.expires_at.map(sql::micros),
            sql::micros(k.created_at),
        ],
    )
    .map(drop)
    .map_err(sql::err)
}

pub(crate) fn keys_of(conn: &Connection, user_id: Uuid) -> StoreResult<Vec<ApiKey>> {
    keys_where(
        conn,
        "WHERE user_id = ? AND revoked_at IS NULL ORDER BY id DESC",
        &[user_id.to_string()],
    )
}

pub(crate) fn live_keys(conn: &Connection) -> StoreResult<Vec<ApiKey>> {
    keys_where(conn, "WHERE revoked_at IS NULL", &[])
}

pub(crate) fn revoke_key(
    tx: &Connection,
    id: Uuid,
    user_id: Option<Uuid>,
    now: DateTime<Utc>,
) -> StoreResult<ApiKey> {
    let mut clause = String::from("WHERE id = ? AND revoked_at IS NULL");
    let mut args = vec![id.to_string()];
    if let Some(user) = user_id {
        clause.push_str(" AND user_id = ?");
        args.push(user.to_string());
    }
    let key = keys_where(tx, &clause, &args)?
        .into_iter()
        .next()
        .ok_or(StoreError::NotFound)?;
    tx.execute(
        "UPDATE api_keys SET revoked_at = make_timestamp(?) WHERE id = ?",
        duckdb::params![sql::micros(now), id.to_string()],
    )
    .map_err(sql::err)?;
    Ok(ApiKey {
        revoked_at: Some(now),
        ..key
    })
}

pub(crate) fn touch_keys(tx: &Connection, uses: &[(Uuid, DateTime<Utc>)]) -> StoreResult<()> {
    let mut update = tx
        .prepare_cached("UPDATE api_keys SET last_used_at = make_timestamp(?) WHERE id = ?")
        .map_err(sql::err)?;
    for (id, at) in uses {
        update
            .execute(duckdb::params![sql::micros(*at), id.to_string()])
            .map_err(sql::err)?;
    }
    Ok(())
}

pub(crate) fn budget_overrides(conn: &Connection) -> StoreResult<Vec<BudgetOverride>> {
    let rows = conn
        .prepare_cached("SELECT user_id, daily_nanousd, monthly_nanousd, daily_requests, monthly_requests FROM user_budgets")
        .and_then(|mut s| {
            s.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<i64>>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                ))
            })?
            .collect::<duckdb::Result<Vec<_>>>()
        })
        .map_err(sql::err)?;
    rows.into_iter()
        .map(|(user, daily, monthly, daily_requests, monthly_requests)| {
            Ok(BudgetOverride {
                user_id: sql::uuid(&user)?,
                daily_nanousd: daily,
                monthly_nanousd: monthly,
                daily_requests: daily_requests.map(sql::count),
                monthly_requests: monthly_requests.map(sql::count),
            })
        })
        .collect()
}

pub(crate) fn set_budget_override(
    tx: &Connection,
    b: &BudgetOverride,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    tx.execute(
        "DELETE FROM user_budgets WHERE user_id = ?",
        [b.user_id.to_string()],
    )
    .map_err(sql::err)?;
    let empty = b.daily_nanousd.is_none()
        && b.monthly_nanousd.is_none()
        && b.daily_requests.is_none()
        && b.monthly_requests.is_none();
    if empty {
        return Ok(());
    }
    let count = |n: Option<u64>| n.map(sql::bigint);
    tx.execute(
        "INSERT INTO user_budgets (user_id, daily_nanousd, monthly_nanousd, daily_requests, monthly_requests, updated_at) \
         VALUES (?, ?, ?, ?, ?, make_timestamp(?))",
        duckdb::params![
            b.user_id.to_string(),
            b.daily_nanousd,
            b.monthly_nanousd,
            count(b.daily_requests),
            count(b.monthly_requests),
            sql::micros(now),
        ],
    )
    .map(drop)
    .map_err(sql::err)
}

pub(crate) fn spend_since(conn: &Connection, since: DateTime<Utc>) -> StoreResult<Vec<Spend>> {
    let rows = conn
        .prepare_cached(
            "SELECT user_id, CAST(sum(cost_nanousd) AS BIGINT), count(*) FROM generations \
             WHERE created_at >= make_timestamp(?) GROUP BY user_id",
        )
        .and_then(|mut s| {
            s.query_map([sql::micros(since)], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
            })?
            .collect::<duckdb::Result<Vec<_>>>()
        })
        .map_err(sql::err)?;
    rows.into_iter()
        .map(|(user, cost, requests)| {
            Ok(Spend {
                user_id: sql::uuid(&user)?,
                cost_nanousd: cost,
                requests: sql::count(requests),
            })
        })
        .collect()
}
