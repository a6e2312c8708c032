//! The store conformance suite, each case on a fresh PostgreSQL database of the
//! machine's server (see `atelier_store_postgres::testing`).

use std::sync::Arc;

use atelier_store::Store;
use atelier_store_postgres::testing::FreshDatabase;
use atelier_store_postgres::{PgStore, PoolSettings};

atelier_store::conformance_tests!(async || {
    let db = FreshDatabase::create()
        .await
        .expect("a fresh database on the test PostgreSQL server");
    let (store, _) = PgStore::connect(db.url(), PoolSettings::default())
        .await
        .expect("connect and migrate");
    (Arc::new(store) as Arc<dyn Store>, db)
});

/// `atelier db copy` moves the tables described in `atelier_store::tables`.
#[tokio::test]
async fn the_table_descriptions_match_the_schema() {
    let db = FreshDatabase::create().await.expect("a fresh database");
    let (store, _) = PgStore::connect(db.url(), PoolSettings::default())
        .await
        .expect("connect and migrate");
    atelier_store::conformance::tables_are_described(&store).await;
}
