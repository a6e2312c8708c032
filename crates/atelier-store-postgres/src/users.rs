//! Users: accounts, roles, and the per-user access-token cut-off.

use atelier_store::*;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::sql;

const USER_COLUMNS: &str = "id, email, role, created_at, updated_at, tokens_valid_after";

#[derive(sqlx::FromRow)]
struct UserRow {
    id: Uuid,
    email: String,
    role: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    tokens_valid_after: DateTime<Utc>,
}

impl UserRow {
    fn into_user(self) -> StoreResult<User> {
        Ok(User {
            id: self.id,
            email: self.email,
            role: sql::parse(&self.role)?,
            created_at: self.created_at,
            updated_at: self.updated_at,
            tokens_valid_after: self.tokens_valid_after,
        })
    }
}

pub(crate) async fn create(tx: &mut PgConnection, new: &NewUser) -> StoreResult<User> {
    let inserted = sqlx::query_as::<_, UserRow>(&format!(
        "INSERT INTO users (id, email, password_hash, role, created_at, updated_at, tokens_valid_after) \
         VALUES ($1, $2, $3, $4, $5, $5, $5) RETURNING {USER_COLUMNS}"
    ))
    .bind(new.id)
    .bind(&new.email)
    .bind(&new.password_hash)
    .bind(new.role.as_str())
    .bind(new.now)
    .fetch_one(&mut *tx)
    .await;
    match inserted {
        Ok(row) => row.into_user(),
        Err(e) if sql::is_unique_violation(&e) => Err(StoreError::EmailTaken),
        Err(e) => Err(sql::err(e)),
    }
}

pub(crate) async fn by_id(conn: impl PgExecutor<'_>, id: Uuid) -> StoreResult<Option<User>> {
    sqlx::query_as::<_, UserRow>(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await
        .map_err(sql::err)?
        .map(UserRow::into_user)
        .transpose()
}

/// How to find one user's credentials.
pub(crate) enum Lookup<'a> {
    Email(&'a str),
    Id(Uuid),
}

#[derive(sqlx::FromRow)]
struct CredentialsRow {
    #[sqlx(flatten)]
    user: UserRow,
    password_hash: String,
}

pub(crate) async fn credentials(
    conn: impl PgExecutor<'_>,
    lookup: Lookup<'_>,
) -> StoreResult<Option<Credentials>> {
    let select = format!("SELECT {USER_COLUMNS}, password_hash FROM users");
    let row = match lookup {
        Lookup::Email(email) => {
            sqlx::query_as::<_, CredentialsRow>(&format!("{select} WHERE email = $1"))
                .bind(email)
                .fetch_optional(conn)
                .await
        }
        Lookup::Id(id) => {
            sqlx::query_as::<_, CredentialsRow>(&format!("{select} WHERE id = $1"))
                .bind(id)
                .fetch_optional(conn)
                .await
        }
    }
    .map_err(sql::err)?;
    row.map(|r| {
        Ok(Credentials {
            user: r.user.into_user()?,
            password_hash: r.password_hash,
        })
    })
    .transpose()
}

pub(crate) async fn list(conn: &mut PgConnection, query: &UserQuery) -> StoreResult<UserPage> {
    // Filters shared by the count and the page; NULL parameters switch a filter off.
    let role = query.role.map(Role::as_str);
    let needle = query
        .email_contains
        .as_deref()
        .filter(|n| !n.is_empty())
        .map(|n| encoding::contains_pattern(&n.to_lowercase()));
    const FILTER: &str =
        r"($1::text IS NULL OR role = $1) AND ($2::text IS NULL OR email LIKE $2 ESCAPE '\')";
    let total: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM users WHERE {FILTER}"))
        .bind(role)
        .bind(&needle)
        .fetch_one(&mut *conn)
        .await
        .map_err(sql::err)?;
    // One row more than asked tells whether another page follows.
    let mut rows = sqlx::query_as::<_, UserRow>(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE {FILTER} AND ($3::uuid IS NULL OR id > $3) \
         ORDER BY id LIMIT $4"
    ))
    .bind(role)
    .bind(&needle)
    .bind(query.after)
    .bind(i64::from(query.limit) + 1)
    .fetch_all(&mut *conn)
    .await
    .map_err(sql::err)?;
    let has_more = rows.len() > query.limit as usize;
    rows.truncate(query.limit as usize);
    Ok(UserPage {
        users: rows
            .into_iter()
            .map(UserRow::into_user)
            .collect::<StoreResult<_>>()?,
        total: sql::count(total),
        has_more,
    })
}

pub(crate) async fn update_email(
    tx: &mut PgConnection,
    id: Uuid,
    email: &str,
    now: DateTime<Utc>,
) -> StoreResult<User> {
    let current = by_id(&mut *tx, id).await?.ok_or(StoreError::NotFound)?;
    if current.email == email {
        return Ok(current);
    }
    let updated = sqlx::query_as::<_, UserRow>(&format!(
        "UPDATE users SET email = $1, updated_at = $2 WHERE id = $3 RETURNING {USER_COLUMNS}"
    ))
    .bind(email)
    .bind(now)
    .bind(id)
    .fetch_optional(&mut *tx)
    .await;
    match updated {
        Ok(row) => row.ok_or(StoreError::NotFound)?.into_user(),
        Err(e) if sql::is_unique_violation(&e) => Err(StoreError::EmailTaken),
        Err(e) => Err(sql::err(e)),
    }
}

pub(crate) async fn set_password_hash(tx: &mut PgConnection, id: Uuid, hash: &str) -> StoreResult<()> {
    let changed = sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
        .bind(hash)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(sql::err)?
        .rows_affected();
    if changed == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// Access tokens issued before `now` stop being accepted.
pub(crate) async fn move_valid_after(
    tx: &mut PgConnection,
    id: Uuid,
    now: DateTime<Utc>,
) -> StoreResult<User> {
    sqlx::query_as::<_, UserRow>(&format!(
        "UPDATE users SET tokens_valid_after = $1, updated_at = $1 WHERE id = $2 RETURNING {USER_COLUMNS}"
    ))
    .bind(now)
    .bind(id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(sql::err)?
    .ok_or(StoreError::NotFound)?
    .into_user()
}

/// Locks every admin row and counts them: two instances demoting the last two admins
/// at once serialise here, and the second sees one admin left.
async fn lock_admins(tx: &mut PgConnection) -> StoreResult<usize> {
    sqlx::query("SELECT id FROM users WHERE role = 'admin' FOR UPDATE")
        .fetch_all(&mut *tx)
        .await
        .map(|rows| rows.len())
        .map_err(sql::err)
}

/// The user, locked for the rest of the transaction.
async fn lock_user(tx: &mut PgConnection, id: Uuid) -> StoreResult<User> {
    sqlx::query_as::<_, UserRow>(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(sql::err)?
    .ok_or(StoreError::NotFound)?
    .into_user()
}

pub(crate) async fn set_role(
    tx: &mut PgConnection,
    id: Uuid,
    role: Role,
    now: DateTime<Utc>,
) -> StoreResult<User> {
    let admins = lock_admins(tx).await?;
    let current = lock_user(tx, id).await?;
    if current.role == role {
        return Ok(current);
    }
    if current.role == Role::Admin && admins <= 1 {
        return Err(StoreError::LastAdmin);
    }
    sqlx::query_as::<_, UserRow>(&format!(
        "UPDATE users SET role = $1, tokens_valid_after = $2, updated_at = $2 WHERE id = $3 \
         RETURNING {USER_COLUMNS}"
    ))
    .bind(role.as_str())
    .bind(now)
    .bind(id)
    .fetch_one(&mut *tx)
    .await
    .map_err(sql::err)?
    .into_user()
}

pub(crate) async fn delete(tx: &mut PgConnection, id: Uuid) -> StoreResult<()> {
    let admins = lock_admins(tx).await?;
    let current = lock_user(tx, id).await?;
    if current.role == Role::Admin && admins <= 1 {
        return Err(StoreError::LastAdmin);
    }
    sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(sql::err)?;
    Ok(())
}

pub(crate) async fn count_by_role(conn: impl PgExecutor<'_>) -> StoreResult<Vec<(Role, u64)>> {
    let rows: Vec<(String, i64)> = sqlx::query_as("SELECT role, count(*) FROM users GROUP BY role")
        .fetch_all(conn)
        .await
        .map_err(sql::err)?;
    rows.into_iter()
        .map(|(role, n)| Ok((sql::parse(&role)?, sql::count(n))))
        .collect()
}

pub(crate) async fn auth_states(conn: impl PgExecutor<'_>) -> StoreResult<Vec<AuthState>> {
    let rows: Vec<(Uuid, String, DateTime<Utc>)> =
        sqlx::query_as("SELECT id, role, tokens_valid_after FROM users")
            .fetch_all(conn)
            .await
            .map_err(sql::err)?;
    rows.into_iter()
        .map(|(user_id, role, tokens_valid_after)| {
            Ok(AuthState {
                user_id,
                role: sql::parse(&role)?,
                tokens_valid_after,
            })
        })
        .collect()
}

// ---------------------------------------------------------------- audit

/// Rows per INSERT: eight parameters each, well under PostgreSQL's 65,535.
const AUDITS_PER_STATEMENT: usize = 1_000;

/// Multi-row INSERTs in the caller's transaction: a batch costs about one commit.
/// `ON CONFLICT DO NOTHING`: a batch retried after a lost reply is not stored twice.
pub(crate) async fn record_audits(tx: &mut PgConnection, records: &[AuditRecord]) -> StoreResult<()> {
    for chunk in records.chunks(AUDITS_PER_STATEMENT) {
        let mut insert = QueryBuilder::<Postgres>::new(
            "INSERT INTO audit_log (id, occurred_at, event, user_id, actor_id, ip, request_id, details) ",
        );
        insert.push_values(chunk, |mut row, r| {
            row.push_bind(r.id)
                .push_bind(r.at)
                .push_bind(&r.event)
                .push_bind(r.user_id)
                .push_bind(r.actor_id)
                .push_bind(&r.ip)
                .push_bind(&r.request_id)
                .push_bind(&r.details);
        });
        insert.push(" ON CONFLICT (id) DO NOTHING");
        insert.build().execute(&mut *tx).await.map_err(sql::err)?;
    }
    Ok(())
}
