//! Loading whole tables into PostgreSQL in one transaction, for `atelier db copy`:
//! a copy that fails half-way leaves the target as it was.

use async_trait::async_trait;
use atelier_store::StoreResult;
use atelier_store::tables::{Cell, ColumnType, Introspect, Row, TABLES, Table};
use chrono::{DateTime, Utc};
use sqlx::query_builder::Separated;
use sqlx::{Postgres, QueryBuilder, Transaction};
use uuid::Uuid;

use crate::{PgStore, sql};

/// An open import: everything written commits together.
pub struct Import {
    tx: Transaction<'static, Postgres>,
}

impl PgStore {
    pub async fn import(&self) -> StoreResult<Import> {
        Ok(Import {
            tx: self.begin().await?,
        })
    }
}

#[async_trait]
impl Introspect for PgStore {
    async fn table_names(&self) -> StoreResult<Vec<String>> {
        sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_name <> 'schema_migrations' ORDER BY 1",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(sql::err)
    }

    async fn column_names(&self, table: &'static str) -> StoreResult<Vec<String>> {
        sqlx::query_scalar(
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
        )
        .bind(table)
        .fetch_all(&self.pool)
        .await
        .map_err(sql::err)
    }
}

impl Import {
    pub async fn count_rows(&mut self, table: &Table) -> StoreResult<u64> {
        sqlx::query_scalar::<_, i64>(&format!("SELECT count(*) FROM {}", table.name))
            .fetch_one(&mut *self.tx)
            .await
            .map(sql::count)
            .map_err(sql::err)
    }

    /// Empties every table of the schema.
    pub async fn clear(&mut self) -> StoreResult<()> {
        let names = TABLES.iter().map(|t| t.name).collect::<Vec<_>>().join(", ");
        sqlx::query(&format!("TRUNCATE {names}"))
            .execute(&mut *self.tx)
            .await
            .map(drop)
            .map_err(sql::err)
    }

    /// Inserts rows shaped as `table.columns`.
    pub async fn write_rows(&mut self, table: &Table, rows: &[Row]) -> StoreResult<()> {
        // Stay far below PostgreSQL's 65,535 parameters per statement.
        let per_statement = (30_000 / table.columns.len().max(1)).max(1);
        for chunk in rows.chunks(per_statement) {
            let mut insert = QueryBuilder::<Postgres>::new(format!(
                "INSERT INTO {} ({}) ",
                table.name,
                table.column_list()
            ));
            insert.push_values(chunk, |mut values, row| {
                for ((_, kind), cell) in table.columns.iter().zip(row) {
                    bind(&mut values, *kind, cell);
                }
            });
            insert.build().execute(&mut *self.tx).await.map_err(sql::err)?;
        }
        Ok(())
    }

    pub async fn commit(self) -> StoreResult<()> {
        self.tx.commit().await.map_err(sql::err)
    }
}

/// Binds one cell; a NULL is bound with its column's type, so PostgreSQL needs no guess.
fn bind(values: &mut Separated<'_, '_, Postgres, &'static str>, kind: ColumnType, cell: &Cell) {
    match (cell, kind) {
        (Cell::Uuid(id), _) => values.push_bind(*id),
        (Cell::Text(text), _) => values.push_bind(text.clone()),
        (Cell::Int(n), _) => values.push_bind(*n),
        (Cell::Bytes(bytes), _) => values.push_bind(bytes.clone()),
        (Cell::Time(at), _) => values.push_bind(*at),
        (Cell::Null, ColumnType::Uuid) => values.push_bind(None::<Uuid>),
        (Cell::Null, ColumnType::Text) => values.push_bind(None::<String>),
        (Cell::Null, ColumnType::Int) => values.push_bind(None::<i64>),
        (Cell::Null, ColumnType::Bytes) => values.push_bind(None::<Vec<u8>>),
        (Cell::Null, ColumnType::Time) => values.push_bind(None::<DateTime<Utc>>),
    };
}
