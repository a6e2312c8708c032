//! `atelier db copy`: moves an embedded deployment (a DuckDB file) into an empty
//! PostgreSQL database, table by table, in one PostgreSQL transaction, and checks
//! that every table arrived whole before committing.

use anyhow::{Context, bail};
use atelier_store::tables::TABLES;
use atelier_store::{DatabaseUrl, Store};
use atelier_store_duckdb::DuckDbStore;
use atelier_store_postgres::{PgStore, PoolSettings};

/// Rows read and written at a time: bounded memory whatever the table's size.
const PAGE: u32 = 1_000;

/// How many rows each table received.
pub struct CopyReport {
    pub tables: Vec<(&'static str, u64)>,
}

impl std::fmt::Display for CopyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (name, rows) in &self.tables {
            writeln!(f, "{name:<16} {rows:>10} rows")?;
        }
        Ok(())
    }
}

/// Copies every table of `from` (DuckDB) into `to` (PostgreSQL). A target with rows
/// in it is refused unless `replace`, which empties it first (in the same
/// transaction: if the copy fails, the old rows are still there).
pub async fn copy(from: &DatabaseUrl, to: &DatabaseUrl, replace: bool) -> anyhow::Result<CopyReport> {
    let (DatabaseUrl::DuckDb(path), DatabaseUrl::Postgres(target)) = (from, to) else {
        bail!("db copy moves an embedded deployment to PostgreSQL: --from duckdb://FILE --to postgres://…");
    };
    if !path.is_file() {
        bail!("there is no database file at {}", path.display());
    }
    let (source, _) = DuckDbStore::open(path).await?;
    let (target, _) = PgStore::connect(target, PoolSettings::default()).await?;
    let mut import = target.import().await?;

    let mut present = Vec::new();
    for table in TABLES {
        let rows = import.count_rows(table).await?;
        if rows > 0 {
            present.push(format!("{} in {}", rows, table.name));
        }
    }
    if !present.is_empty() {
        if !replace {
            bail!(
                "the target database is not empty ({}); copy into an empty database, or pass \
                 --replace to empty it first",
                present.join(", ")
            );
        }
        import.clear().await?;
    }

    let mut report = CopyReport { tables: Vec::new() };
    for table in TABLES {
        let mut after = None;
        loop {
            let rows = source
                .read_rows(table, after.take(), PAGE)
                .await
                .with_context(|| format!("reading {}", table.name))?;
            let Some(last) = rows.last() else { break };
            after = last.first().cloned();
            import
                .write_rows(table, &rows)
                .await
                .with_context(|| format!("writing {}", table.name))?;
            if rows.len() < PAGE as usize {
                break;
            }
        }
        let (expected, copied) = (source.count_rows(table).await?, import.count_rows(table).await?);
        if expected != copied {
            bail!(
                "{}: {copied} rows arrived of {expected}; nothing was committed",
                table.name
            );
        }
        report.tables.push((table.name, copied));
    }
    import.commit().await?;
    source.close().await?;
    target.close().await?;
    Ok(report)
}
