//! Versioned migrations: the SQL files under `migrations/`, applied in order, each in
//! the same transaction as its entry in `schema_migrations`. Instances starting at the
//! same moment take an advisory lock, so exactly one of them applies each migration.

use atelier_store::{MigrationReport, StoreError, StoreResult};
use chrono::Utc;
use sqlx::{Executor, PgPool};

use crate::sql;

/// `(version, name, sql)`, in order. Append only: an applied migration never changes.
const MIGRATIONS: &[(i32, &str, &str)] = &[(1, "schema", include_str!("../migrations/0001_schema.sql"))];

/// An arbitrary constant naming atelier's migration lock among advisory locks.
const MIGRATION_LOCK: i64 = 0x6174_656c_6965_7201;

pub(crate) async fn apply(pool: &PgPool) -> StoreResult<MigrationReport> {
    let mut tx = pool.begin().await.map_err(sql::err)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(sql::err)?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    INTEGER PRIMARY KEY,
             name       TEXT NOT NULL,
             applied_at TIMESTAMPTZ NOT NULL
         )",
    )
    .execute(&mut *tx)
    .await
    .map_err(sql::err)?;
    let current: i32 = sqlx::query_scalar("SELECT coalesce(max(version), 0) FROM schema_migrations")
        .fetch_one(&mut *tx)
        .await
        .map_err(sql::err)?;

    let latest = MIGRATIONS.last().map_or(0, |m| m.0);
    if current > latest {
        return Err(StoreError::backend(format!(
            "the database is at schema version {current}, newer than this atelier knows \
             ({latest}); run the atelier version that last migrated it"
        )));
    }

    let pending: Vec<(i32, &str, &str)> = MIGRATIONS.iter().copied().filter(|m| m.0 > current).collect();
    let mut applied = 0;
    for (version, name, text) in pending {
        tracing::info!(version, name, "applying migration");
        // Several statements: the simple protocol (no parameters) runs them all.
        tx.execute(text).await.map_err(sql::err)?;
        sqlx::query("INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)")
            .bind(version)
            .bind(name)
            .bind(Utc::now())
            .execute(&mut *tx)
            .await
            .map_err(sql::err)?;
        applied += 1;
    }
    tx.commit().await.map_err(sql::err)?;
    Ok(MigrationReport {
        version: latest.unsigned_abs(),
        applied,
    })
}
