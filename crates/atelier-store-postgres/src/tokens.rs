//! Refresh tokens: families, rotation, reuse detection, revocation and purging.
//!
//! The same rules as the DuckDB store. What PostgreSQL adds is concurrency between
//! instances: the presented token's row is locked (`FOR UPDATE`) before it is judged,
//! so of two instances rotating one token at once the second waits, then sees it used
//! and treats it as a replay.

use atelier_store::*;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::{sql, users};

pub(crate) async fn create_session(tx: &mut PgConnection, s: &NewSession) -> StoreResult<()> {
    insert(
        tx,
        &TokenInsert {
            id: s.token_id,
            family_id: s.family_id,
            user_id: s.user_id,
            hash: s.token_hash,
            now: s.now,
            expires_at: s.token_expires_at(),
            family_expires_at: s.family_expires_at,
        },
    )
    .await
}

struct TokenInsert {
    id: Uuid,
    family_id: Uuid,
    user_id: Uuid,
    hash: TokenHash,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    family_expires_at: DateTime<Utc>,
}

async fn insert(tx: &mut PgConnection, t: &TokenInsert) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO refresh_tokens (id, family_id, user_id, token_hash, created_at, expires_at, \
         family_expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(t.id)
    .bind(t.family_id)
    .bind(t.user_id)
    .bind(t.hash.0.as_slice())
    .bind(t.now)
    .bind(t.expires_at)
    .bind(t.family_expires_at)
    .execute(&mut *tx)
    .await
    .map(drop)
    .map_err(sql::err)
}

#[derive(sqlx::FromRow)]
struct Presented {
    id: Uuid,
    family_id: Uuid,
    user_id: Uuid,
    expires_at: DateTime<Utc>,
    family_expires_at: DateTime<Utc>,
    used: bool,
    revoked: bool,
}

/// The token with this hash, its row locked until the transaction ends.
async fn find_locked(tx: &mut PgConnection, hash: TokenHash) -> StoreResult<Option<Presented>> {
    sqlx::query_as::<_, Presented>(
        "SELECT id, family_id, user_id, expires_at, family_expires_at, used_at IS NOT NULL AS used, \
         revoked_at IS NOT NULL AS revoked FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE",
    )
    .bind(hash.0.as_slice())
    .fetch_optional(&mut *tx)
    .await
    .map_err(sql::err)
}

async fn revoke_family(tx: &mut PgConnection, family_id: Uuid, now: DateTime<Utc>) -> StoreResult<()> {
    sqlx::query("UPDATE refresh_tokens SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL")
        .bind(now)
        .bind(family_id)
        .execute(&mut *tx)
        .await
        .map(drop)
        .map_err(sql::err)
}

pub(crate) async fn rotate(
    tx: &mut PgConnection,
    presented: TokenHash,
    next: &Rotation,
) -> StoreResult<RotateOutcome> {
    let Some(token) = find_locked(tx, presented).await? else {
        return Ok(RotateOutcome::Invalid);
    };
    if token.used {
        // Replay of a rotated token: whoever holds the family now may be a thief.
        revoke_family(tx, token.family_id, next.now).await?;
        return Ok(RotateOutcome::Reused {
            user_id: token.user_id,
            family_id: token.family_id,
        });
    }
    if token.revoked {
        return Ok(RotateOutcome::Invalid);
    }
    if next.now >= token.expires_at || next.now >= token.family_expires_at {
        return Ok(RotateOutcome::Expired);
    }
    let Some(user) = users::by_id(&mut *tx, token.user_id).await? else {
        return Ok(RotateOutcome::Invalid);
    };
    sqlx::query("UPDATE refresh_tokens SET used_at = $1 WHERE id = $2")
        .bind(next.now)
        .bind(token.id)
        .execute(&mut *tx)
        .await
        .map_err(sql::err)?;
    insert(
        tx,
        &TokenInsert {
            id: next.token_id,
            family_id: token.family_id,
            user_id: token.user_id,
            hash: next.token_hash,
            now: next.now,
            expires_at: next.expires_at_within(token.family_expires_at),
            family_expires_at: token.family_expires_at,
        },
    )
    .await?;
    Ok(RotateOutcome::Rotated {
        user,
        family_id: token.family_id,
    })
}

pub(crate) async fn revoke_family_of(
    tx: &mut PgConnection,
    presented: TokenHash,
    now: DateTime<Utc>,
) -> StoreResult<Option<RevokedFamily>> {
    let Some(token) = find_locked(tx, presented).await? else {
        return Ok(None);
    };
    revoke_family(tx, token.family_id, now).await?;
    Ok(Some(RevokedFamily {
        user_id: token.user_id,
        family_id: token.family_id,
    }))
}

/// Revokes every live family of the user except `keep`.
pub(crate) async fn revoke_user_families(
    tx: &mut PgConnection,
    user_id: Uuid,
    keep: Option<Uuid>,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = $1 \
         WHERE user_id = $2 AND revoked_at IS NULL AND family_id IS DISTINCT FROM $3",
    )
    .bind(now)
    .bind(user_id)
    .bind(keep)
    .execute(&mut *tx)
    .await
    .map(drop)
    .map_err(sql::err)
}

pub(crate) async fn delete_user_tokens(tx: &mut PgConnection, user_id: Uuid) -> StoreResult<()> {
    sqlx::query("DELETE FROM refresh_tokens WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *tx)
        .await
        .map(drop)
        .map_err(sql::err)
}

/// Rotated tokens of a live family stay: a replay of one must still be recognised.
pub(crate) async fn purge(conn: impl PgExecutor<'_>, now: DateTime<Utc>) -> StoreResult<u64> {
    sqlx::query(
        "DELETE FROM refresh_tokens WHERE revoked_at IS NOT NULL OR family_expires_at <= $1 \
         OR (used_at IS NULL AND expires_at <= $1)",
    )
    .bind(now)
    .execute(conn)
    .await
    .map(|r| r.rows_affected())
    .map_err(sql::err)
}

pub(crate) async fn stats(conn: impl PgExecutor<'_>, now: DateTime<Utc>) -> StoreResult<TokenStats> {
    let (active, expired, revoked, rotated): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT
           count(*) FILTER (WHERE revoked_at IS NULL AND used_at IS NULL
                              AND expires_at > $1 AND family_expires_at > $1),
           count(*) FILTER (WHERE revoked_at IS NULL AND used_at IS NULL
                              AND (expires_at <= $1 OR family_expires_at <= $1)),
           count(*) FILTER (WHERE revoked_at IS NOT NULL),
           count(*) FILTER (WHERE revoked_at IS NULL AND used_at IS NOT NULL)
         FROM refresh_tokens",
    )
    .bind(now)
    .fetch_one(conn)
    .await
    .map_err(sql::err)?;
    Ok(TokenStats {
        active: sql::count(active),
        expired: sql::count(expired),
        revoked: sql::count(revoked),
        rotated: sql::count(rotated),
    })
}
