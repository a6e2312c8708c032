//! Reading whole tables, a page at a time, for `atelier db copy`.

use async_trait::async_trait;
use atelier_store::tables::{Cell, ColumnType, Introspect, Row, Table};
use atelier_store::{StoreError, StoreResult};

use crate::{DuckDbStore, sql};

impl DuckDbStore {
    /// Rows in `table`.
    pub async fn count_rows(&self, table: &'static Table) -> StoreResult<u64> {
        self.conns
            .read(move |c| {
                c.query_row(&format!("SELECT count(*) FROM {}", table.name), [], |r| {
                    r.get::<_, i64>(0)
                })
                .map(sql::count)
                .map_err(sql::err)
            })
            .await
    }

    /// Up to `limit` rows of `table` whose key is greater than `after`, in key order.
    pub async fn read_rows(
        &self,
        table: &'static Table,
        after: Option<Cell>,
        limit: u32,
    ) -> StoreResult<Vec<Row>> {
        let select = table
            .columns
            .iter()
            .map(|(name, kind)| match kind {
                ColumnType::Time => format!("epoch_us({name})"),
                _ => (*name).to_owned(),
            })
            .collect::<Vec<_>>()
            .join(", ");
        let after = match after {
            None => None,
            Some(Cell::Uuid(id)) => Some(id.to_string()),
            Some(Cell::Text(text)) => Some(text),
            Some(other) => return Err(StoreError::backend(format!("cannot page by {other:?}"))),
        };
        self.conns
            .read(move |c| {
                let key = table.key();
                let query = format!(
                    "SELECT {select} FROM {} WHERE ?::VARCHAR IS NULL OR {key} > ? ORDER BY {key} LIMIT {limit}",
                    table.name
                );
                let mut statement = c.prepare(&query).map_err(sql::err)?;
                let mut rows = statement
                    .query(duckdb::params![after, after])
                    .map_err(sql::err)?;
                let mut out = Vec::new();
                while let Some(row) = rows.next().map_err(sql::err)? {
                    let mut cells = Vec::with_capacity(table.columns.len());
                    for (i, (_, kind)) in table.columns.iter().enumerate() {
                        cells.push(cell(row, i, *kind)?);
                    }
                    out.push(cells);
                }
                Ok(out)
            })
            .await
    }
}

#[async_trait]
impl Introspect for DuckDbStore {
    async fn table_names(&self) -> StoreResult<Vec<String>> {
        self.conns
            .read(|c| {
                c.prepare(
                    "SELECT table_name FROM information_schema.tables \
                     WHERE table_schema = 'main' AND table_name <> 'schema_migrations' ORDER BY 1",
                )
                .and_then(|mut s| {
                    s.query_map([], |r| r.get(0))?
                        .collect::<duckdb::Result<Vec<String>>>()
                })
                .map_err(sql::err)
            })
            .await
    }

    async fn column_names(&self, table: &'static str) -> StoreResult<Vec<String>> {
        self.conns
            .read(move |c| {
                c.prepare(
                    "SELECT column_name FROM information_schema.columns \
                     WHERE table_schema = 'main' AND table_name = ? ORDER BY ordinal_position",
                )
                .and_then(|mut s| {
                    s.query_map([table], |r| r.get(0))?
                        .collect::<duckdb::Result<Vec<String>>>()
                })
                .map_err(sql::err)
            })
            .await
    }
}

fn cell(row: &duckdb::Row<'_>, i: usize, kind: ColumnType) -> StoreResult<Cell> {
    Ok(match kind {
        ColumnType::Uuid => match row.get::<_, Option<String>>(i).map_err(sql::err)? {
            Some(text) => Cell::Uuid(sql::uuid(&text)?),
            None => Cell::Null,
        },
        ColumnType::Text => row
            .get::<_, Option<String>>(i)
            .map_err(sql::err)?
            .map_or(Cell::Null, Cell::Text),
        ColumnType::Int => row
            .get::<_, Option<i64>>(i)
            .map_err(sql::err)?
            .map_or(Cell::Null, Cell::Int),
        ColumnType::Bytes => row
            .get::<_, Option<Vec<u8>>>(i)
            .map_err(sql::err)?
            .map_or(Cell::Null, Cell::Bytes),
        ColumnType::Time => match row.get::<_, Option<i64>>(i).map_err(sql::err)? {
            Some(us) => Cell::Time(sql::time(us)?),
            None => Cell::Null,
        },
    })
}
