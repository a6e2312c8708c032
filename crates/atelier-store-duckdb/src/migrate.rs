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
    (
        4,
        "generations_without_key",
        include_str!("../migrations/0004_generations_without_key.sql"),
    ),
];

pub(crate) fn apply(tx: &Transaction<'_>) -> StoreResult<MigrationReport> {
    apply_list(tx, MIGRATIONS)
}

fn apply_list(tx: &Transaction<'_>, migrations: &[(u32, &str, &str)]) -> StoreResult<MigrationReport> {
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

    let latest = migrations.last().map_or(0, |m| m.0);
    if current > latest {
        return Err(StoreError::backend(format!(
            "the database is at schema version {current}, newer than this atelier knows \
             ({latest}); run the atelier version that last migrated it"
        )));
    }

    let mut applied = 0;
    for (version, name, text) in migrations.iter().filter(|(v, _, _)| *v > current) {
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

#[cfg(test)]
mod tests {
    use duckdb::Connection;

    use super::*;

    /// A database made before migration 4 keeps its usage records, and may then
    /// hold two with one id (nothing enforces it: atelier's ids are unique).
    #[test]
    fn usage_records_survive_the_rebuild_without_a_key() {
        let mut conn = Connection::open_in_memory().expect("open");
        let tx = conn.transaction().expect("begin");
        let report = apply_list(&tx, &MIGRATIONS[..3]).expect("migrations 1 to 3");
        assert_eq!(report.version, 3);
        let insert = "INSERT INTO generations VALUES (?, 'u', 'chat', 'm', 'm', 'succeeded', 1, 2, 3, 4, \
                      NULL, 'hello', NULL, '', TIMESTAMP '2026-11-30 12:00:00')";
        for id in ["b", "a"] {
            tx.execute(insert, [id]).expect("insert");
        }
        let report = apply(&tx).expect("migration 4");
        assert_eq!((report.version, report.applied), (4, 1));
        let rows: Vec<(String, String, i64)> = tx
            .prepare("SELECT id, summary, cost_nanousd FROM generations ORDER BY id")
            .and_then(|mut s| {
                s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect()
            })
            .expect("select");
        assert_eq!(
            rows,
            vec![("a".into(), "hello".into(), 3), ("b".into(), "hello".into(), 3)]
        );
        tx.execute(insert, ["a"]).expect("no key refuses a repeated id");
        tx.commit().expect("commit");
    }
}
