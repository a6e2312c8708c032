//! Refresh tokens: families, rotation, reuse detection, revocation and purging.
//!
//! A token is live while it is unused (`used_at` null), unrevoked (`revoked_at`
//! null) and inside both its idle (`expires_at`) and its family's absolute
//! (`family_expires_at`) lifetime. Rotation marks it used and stores its successor
//! in the same family; a used token presented again revokes the family.

use atelier_store::*;
use chrono::{DateTime, Utc};
use duckdb::{Connection, OptionalExt};
use uuid::Uuid;

use crate::{sql, users};

/// New sessions' first tokens, by one appender (ADR-0033).
pub(crate) fn append_sessions(tx: &Connection, sessions: &[NewSession]) -> StoreResult<()> {
    sql::append_rows(tx, "refresh_tokens", sessions, |appender, s| {
        appender.append_row(duckdb::params![
            s.token_id.to_string(),
            s.family_id.to_string(),
            s.user_id.to_string(),
            s.token_hash.0.as_slice(),
            sql::timestamp(s.now),
            sql::timestamp(s.token_expires_at()),
            sql::timestamp(s.family_expires_at),
            None::<duckdb::types::Value>, // used_at
            None::<duckdb::types::Value>, // revoked_at
        ])
    })
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

fn insert(tx: &Connection, t: &TokenInsert) -> StoreResult<()> {
    sql::execute(
        tx,
        "INSERT INTO refresh_tokens (id, family_id, user_id, token_hash, created_at, expires_at, \
         family_expires_at) VALUES (?, ?, ?, ?, make_timestamp(?), make_timestamp(?), make_timestamp(?))",
        duckdb::params![
            t.id.to_string(),
            t.family_id.to_string(),
            t.user_id.to_string(),
            t.hash.0.as_slice(),
            sql::micros(t.now),
            sql::micros(t.expires_at),
            sql::micros(t.family_expires_at),
        ],
    )
}

struct Presented {
    id: String,
    family_id: String,
    user_id: String,
    expires_at: i64,
    family_expires_at: i64,
    used: bool,
    revoked: bool,
}

fn find(conn: &Connection, hash: TokenHash) -> StoreResult<Option<Presented>> {
    conn.prepare_cached(
        "SELECT id, family_id, user_id, epoch_us(expires_at), epoch_us(family_expires_at), \
         used_at IS NOT NULL, revoked_at IS NOT NULL FROM refresh_tokens WHERE token_hash = ?",
    )
    .and_then(|mut s| {
        s.query_row([hash.0.as_slice()], |r| {
            Ok(Presented {
                id: r.get(0)?,
                family_id: r.get(1)?,
                user_id: r.get(2)?,
                expires_at: r.get(3)?,
                family_expires_at: r.get(4)?,
                used: r.get(5)?,
                revoked: r.get(6)?,
            })
        })
        .optional()
    })
    .map_err(sql::err)
}

fn revoke_family(tx: &Connection, family_id: &str, now: DateTime<Utc>) -> StoreResult<()> {
    sql::execute(
        tx,
        "UPDATE refresh_tokens SET revoked_at = make_timestamp(?) \
         WHERE family_id = ? AND revoked_at IS NULL",
        duckdb::params![sql::micros(now), family_id],
    )
}

pub(crate) fn rotate(tx: &Connection, presented: TokenHash, next: &Rotation) -> StoreResult<RotateOutcome> {
    let Some(token) = find(tx, presented)? else {
        return Ok(RotateOutcome::Invalid);
    };
    if token.used {
        // Replay of a rotated token: whoever holds the family now may be a thief.
        revoke_family(tx, &token.family_id, next.now)?;
        return Ok(RotateOutcome::Reused {
            user_id: sql::uuid(&token.user_id)?,
            family_id: sql::uuid(&token.family_id)?,
        });
    }
    if token.revoked {
        return Ok(RotateOutcome::Invalid);
    }
    let now = sql::micros(next.now);
    if now >= token.expires_at || now >= token.family_expires_at {
        return Ok(RotateOutcome::Expired);
    }
    let user_id = sql::uuid(&token.user_id)?;
    let Some(user) = users::by_id(tx, user_id)? else {
        return Ok(RotateOutcome::Invalid);
    };

    sql::execute(
        tx,
        "UPDATE refresh_tokens SET used_at = make_timestamp(?) WHERE id = ?",
        duckdb::params![now, token.id],
    )?;
    let family_id = sql::uuid(&token.family_id)?;
    let family_expires_at = sql::time(token.family_expires_at)?;
    insert(
        tx,
        &TokenInsert {
            id: next.token_id,
            family_id,
            user_id,
            hash: next.token_hash,
            now: next.now,
            expires_at: next.expires_at_within(family_expires_at),
            family_expires_at,
        },
    )?;
    Ok(RotateOutcome::Rotated { user, family_id })
}

pub(crate) fn revoke_family_of(
    tx: &Connection,
    presented: TokenHash,
    now: DateTime<Utc>,
) -> StoreResult<Option<RevokedFamily>> {
    let Some(token) = find(tx, presented)? else {
        return Ok(None);
    };
    revoke_family(tx, &token.family_id, now)?;
    Ok(Some(RevokedFamily {
        user_id: sql::uuid(&token.user_id)?,
        family_id: sql::uuid(&token.family_id)?,
    }))
}

/// Revokes every live family of the user except `keep`.
pub(crate) fn revoke_user_families(
    tx: &Connection,
    user_id: Uuid,
    keep: Option<Uuid>,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    tx.execute(
        "UPDATE refresh_tokens SET revoked_at = make_timestamp(?) \
         WHERE user_id = ? AND revoked_at IS NULL AND family_id IS DISTINCT FROM ?",
        duckdb::params![sql::micros(now), user_id.to_string(), keep.map(|k| k.to_string())],
    )
    .map(drop)
    .map_err(sql::err)
}

pub(crate) fn delete_user_tokens(tx: &Connection, user_id: Uuid) -> StoreResult<()> {
    tx.execute(
        "DELETE FROM refresh_tokens WHERE user_id = ?",
        [user_id.to_string()],
    )
    .map(drop)
    .map_err(sql::err)
}

/// Rotated tokens of a live family stay: a replay of one must still be recognised.
pub(crate) fn purge(tx: &Connection, now: DateTime<Utc>) -> StoreResult<u64> {
    tx.execute(
        "DELETE FROM refresh_tokens WHERE revoked_at IS NOT NULL \
         OR family_expires_at <= make_timestamp($1) \
         OR (used_at IS NULL AND expires_at <= make_timestamp($1))",
        [sql::micros(now)],
    )
    .map(|n| n as u64)
    .map_err(sql::err)
}

pub(crate) fn stats(conn: &Connection, now: DateTime<Utc>) -> StoreResult<TokenStats> {
    conn.query_row(
        "SELECT
           count(*) FILTER (WHERE revoked_at IS NULL AND used_at IS NULL
                              AND expires_at > make_timestamp($1) AND family_expires_at > make_timestamp($1)),
           count(*) FILTER (WHERE revoked_at IS NULL AND used_at IS NULL
                              AND (expires_at <= make_timestamp($1) OR family_expires_at <= make_timestamp($1))),
           count(*) FILTER (WHERE revoked_at IS NOT NULL),
           count(*) FILTER (WHERE revoked_at IS NULL AND used_at IS NOT NULL)
         FROM refresh_tokens",
        [sql::micros(now)],
        |r| {
            Ok(TokenStats {
                active: sql::count(r.get(0)?),
                expired: sql::count(r.get(1)?),
                revoked: sql::count(r.get(2)?),
                rotated: sql::count(r.get(3)?),
            })
        },
    )
    .map_err(sql::err)
}
