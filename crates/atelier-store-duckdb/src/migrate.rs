//! Versioned migrations: the SQL files under `migrations/`, applied in order, each
//! in the same transaction as its entry in `schema_migrations`.

use atelier_store::{MigrationReport, StoreError, StoreResult};
use chrono::Utc;
use duckdb::Transaction;

use crate::sql;

/// `(version, name, sql)`, in order. Append only: an applied migration never changes.
const MIGRATIONS: &[(u32, &str, &str)] = &[
    (1, "accounts", include_str!("../migrations/0001_accounts.sql")),
    (2, "generation", include_str!("../migrations/0002_generation.sql")),
    (3, "gateway", include_str!("../migrations/0003_gateway.sql")),
];

pub(crate) fn apply(tx: &Transaction<'_>) -> StoreResult<MigrationReport> {
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    INTEGER PRIMARY KEY,
             name       VARCHAR NOT NULL,
             applied_at TIMESTAMP NOT NULL
         )",
    )
    .map_err(sql::err)?;
    let current: u32 = tx
        .query_row(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )
        .map_err(sql::err)?;

    let latest = MIGRATIONS.last().map_or(0, |m| m.0);
    if current > latest {
        return Err(StoreError::backend(format!(
            "the database is at schema version {current}, newer than this atelier knows \
             ({latest}); run the atelier version that last migrated it"
        )));
    }

    let mut applied = 0;
    for (version, name, text) in MIGRATIONS.iter().filter(|(v, _, _)| *v > current) {
        tracing::info!(version, name, "applying migration");
        tx.execute_batch(text).map_err(sql::err)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, make_timestamp(?))",
            duckdb::params![version, name, sql::micros(Utc::now())],
        )
        .map_err(sql::err)?;
        applied += 1;
    }
    Ok(MigrationReport {
        version: latest,
        applied,
    })
}
