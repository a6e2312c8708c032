//! Users: accounts, roles, and the per-user access-token cut-off.

use atelier_store::*;
use chrono::{DateTime, Utc};
use duckdb::{Connection, OptionalExt, Row};
use uuid::Uuid;

use crate::sql;

const USER_COLUMNS: &str = "id, email, role, epoch_us(created_at), epoch_us(updated_at), \
                            epoch_us(tokens_valid_after)";

/// Raw row, converted outside DuckDB's row closure so conversion errors stay ours.
struct UserRow {
    id: String,
    email: String,
    role: String,
    created_at: i64,
    updated_at: i64,
    tokens_valid_after: i64,
}

impl UserRow {
    fn read(row: &Row<'_>) -> duckdb::Result<Self> {
        Ok(UserRow {
            id: row.get(0)?,
            email: row.get(1)?,
            role: row.get(2)?,
            created_at: row.get(3)?,
            updated_at: row.get(4)?,
            tokens_valid_after: row.get(5)?,
        })
    }

    fn into_user(self) -> StoreResult<User> {
        Ok(User {
            id: sql::uuid(&self.id)?,
            email: self.email,
            role: self.role.parse().map_err(StoreError::backend)?,
            created_at: sql::time(self.created_at)?,
            updated_at: sql::time(self.updated_at)?,
            tokens_valid_after: sql::time(self.tokens_valid_after)?,
        })
    }
}

pub(crate) fn create(tx: &Connection, new: &NewUser) -> StoreResult<User> {
    if email_in_use(tx, &new.email)? {
        return Err(StoreError::EmailTaken);
    }
    let now = sql::micros(new.now);
    tx.execute(
        "INSERT INTO users (id, email, password_hash, role, created_at, updated_at, tokens_valid_after) \
         VALUES (?, ?, ?, ?, make_timestamp(?), make_timestamp(?), make_timestamp(?))",
        duckdb::params![
            new.id.to_string(),
            new.email,
            new.password_hash,
            new.role.as_str(),
            now,
            now,
            now
        ],
    )
    .map_err(sql::err)?;
    by_id(tx, new.id)?.ok_or(StoreError::NotFound)
}

fn email_in_use(conn: &Connection, email: &str) -> StoreResult<bool> {
    conn.prepare_cached("SELECT 1 FROM users WHERE email = ?")
        .and_then(|mut s| s.exists([email]))
        .map_err(sql::err)
}

pub(crate) fn by_id(conn: &Connection, id: Uuid) -> StoreResult<Option<User>> {
    conn.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?"))
        .and_then(|mut s| s.query_row([id.to_string()], UserRow::read).optional())
        .map_err(sql::err)?
        .map(UserRow::into_user)
        .transpose()
}

/// How to find one user's credentials.
pub(crate) enum Lookup<'a> {
    Email(&'a str),
    Id(Uuid),
}

pub(crate) fn credentials(conn: &Connection, lookup: Lookup<'_>) -> StoreResult<Option<Credentials>> {
    let (column, key) = match lookup {
        Lookup::Email(email) => ("email", email.to_owned()),
        Lookup::Id(id) => ("id", id.to_string()),
    };
    let row = conn
        .prepare_cached(&format!(
            "SELECT {USER_COLUMNS}, password_hash FROM users WHERE {column} = ?"
        ))
        .and_then(|mut s| {
            s.query_row([key], |r| Ok((UserRow::read(r)?, r.get::<_, String>(6)?)))
                .optional()
        })
        .map_err(sql::err)?;
    row.map(|(user, password_hash)| {
        Ok(Credentials {
            user: user.into_user()?,
            password_hash,
        })
    })
    .transpose()
}

pub(crate) fn list(conn: &Connection, query: &UserQuery) -> StoreResult<UserPage> {
    // Filters shared by the count and the page; `after` only bounds the page.
    let mut filter = String::from("WHERE 1 = 1");
    let mut args: Vec<String> = Vec::new();
    if let Some(role) = query.role {
        filter.push_str(" AND role = ?");
        args.push(role.as_str().to_owned());
    }
    if let Some(needle) = query.email_contains.as_deref().filter(|n| !n.is_empty()) {
        filter.push_str(r" AND email LIKE ? ESCAPE '\'");
        args.push(encoding::contains_pattern(&needle.to_lowercase()));
    }
    let total: i64 = conn
        .prepare_cached(&format!("SELECT count(*) FROM users {filter}"))
        .and_then(|mut s| s.query_row(duckdb::params_from_iter(&args), |r| r.get(0)))
        .map_err(sql::err)?;

    let mut page_filter = filter;
    if let Some(after) = query.after {
        page_filter.push_str(" AND id > ?");
        args.push(after.to_string());
    }
    // One row more than asked tells whether another page follows.
    let limit = i64::from(query.limit) + 1;
    let mut rows = conn
        .prepare_cached(&format!(
            "SELECT {USER_COLUMNS} FROM users {page_filter} ORDER BY id LIMIT {limit}"
        ))
        .and_then(|mut s| {
            s.query_map(duckdb::params_from_iter(&args), UserRow::read)?
                .collect::<duckdb::Result<Vec<_>>>()
        })
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

pub(crate) fn update_email(tx: &Connection, id: Uuid, email: &str, now: DateTime<Utc>) -> StoreResult<User> {
    let current = by_id(tx, id)?.ok_or(StoreError::NotFound)?;
    if current.email == email {
        return Ok(current);
    }
    if email_in_use(tx, email)? {
        return Err(StoreError::EmailTaken);
    }
    tx.execute(
        "UPDATE users SET email = ?, updated_at = make_timestamp(?) WHERE id = ?",
        duckdb::params![email, sql::micros(now), id.to_string()],
    )
    .map_err(sql::err)?;
    by_id(tx, id)?.ok_or(StoreError::NotFound)
}

pub(crate) fn set_password_hash(tx: &Connection, id: Uuid, hash: &str) -> StoreResult<()> {
    let changed = tx
        .execute(
            "UPDATE users SET password_hash = ? WHERE id = ?",
            duckdb::params![hash, id.to_string()],
        )
        .map_err(sql::err)?;
    if changed == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// Access tokens issued before `now` stop being accepted.
pub(crate) fn move_valid_after(tx: &Connection, id: Uuid, now: DateTime<Utc>) -> StoreResult<User> {
    tx.execute(
        "UPDATE users SET tokens_valid_after = make_timestamp(?), updated_at = make_timestamp(?) \
         WHERE id = ?",
        duckdb::params![sql::micros(now), sql::micros(now), id.to_string()],
    )
    .map_err(sql::err)?;
    by_id(tx, id)?.ok_or(StoreError::NotFound)
}

fn admin_count(conn: &Connection) -> StoreResult<i64> {
    conn.query_row("SELECT count(*) FROM users WHERE role = 'admin'", [], |r| {
        r.get(0)
    })
    .map_err(sql::err)
}

pub(crate) fn set_role(tx: &Connection, id: Uuid, role: Role, now: DateTime<Utc>) -> StoreResult<User> {
    let current = by_id(tx, id)?.ok_or(StoreError::NotFound)?;
    if current.role == role {
        return Ok(current);
    }
    if current.role == Role::Admin && admin_count(tx)? <= 1 {
        return Err(StoreError::LastAdmin);
    }
    let now = sql::micros(now);
    tx.execute(
        "UPDATE users SET role = ?, tokens_valid_after = make_timestamp(?), \
         updated_at = make_timestamp(?) WHERE id = ?",
        duckdb::params![role.as_str(), now, now, id.to_string()],
    )
    .map_err(sql::err)?;
    by_id(tx, id)?.ok_or(StoreError::NotFound)
}

pub(crate) fn delete(tx: &Connection, id: Uuid) -> StoreResult<()> {
    let current = by_id(tx, id)?.ok_or(StoreError::NotFound)?;
    if current.role == Role::Admin && admin_count(tx)? <= 1 {
        return Err(StoreError::LastAdmin);
    }
    tx.execute("DELETE FROM users WHERE id = ?", [id.to_string()])
        .map_err(sql::err)?;
    Ok(())
}

pub(crate) fn count_by_role(conn: &Connection) -> StoreResult<Vec<(Role, u64)>> {
    let rows = conn
        .prepare_cached("SELECT role, count(*) FROM users GROUP BY role")
        .and_then(|mut s| {
            s.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
                .collect::<duckdb::Result<Vec<_>>>()
        })
        .map_err(sql::err)?;
    rows.into_iter()
        .map(|(role, n)| Ok((role.parse().map_err(StoreError::backend)?, sql::count(n))))
        .collect()
}

pub(crate) fn auth_states(conn: &Connection) -> StoreResult<Vec<AuthState>> {
    let rows = conn
        .prepare_cached("SELECT id, role, epoch_us(tokens_valid_after) FROM users")
        .and_then(|mut s| {
            s.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?
            .collect::<duckdb::Result<Vec<_>>>()
        })
        .map_err(sql::err)?;
    rows.into_iter()
        .map(|(id, role, after)| {
            Ok(AuthState {
                user_id: sql::uuid(&id)?,
                role: role.parse().map_err(StoreError::backend)?,
                tokens_valid_after: sql::time(after)?,
            })
        })
        .collect()
}

// ---------------------------------------------------------------- audit

/// One appender for the whole batch: a login storm's records cost about one
/// commit a second instead of one each.
pub(crate) fn record_audits(tx: &Connection, records: &[AuditRecord]) -> StoreResult<()> {
    sql::append_rows(tx, "audit_log", records, |appender, r| {
        appender.append_row(duckdb::params![
            r.id.to_string(),
            sql::timestamp(r.at),
            r.event,
            r.user_id.map(|u| u.to_string()),
            r.actor_id.map(|u| u.to_string()),
            r.ip,
            r.request_id,
            r.details,
        ])
    })
}
