//! The store conformance suite, each case on a fresh DuckDB file.

use std::sync::Arc;

use atelier_store::Store;
use atelier_store_duckdb::DuckDbStore;

atelier_store::conformance_tests!(async || {
    let dir = tempfile::tempdir().expect("temporary folder");
    let (store, _) = DuckDbStore::open(dir.path().join("conformance.duckdb"))
        .await
        .expect("open a fresh database");
    (Arc::new(store) as Arc<dyn Store>, dir)
});

/// DuckDB itself only stops other processes; a second open inside this one would
/// give two database instances on one file.
#[tokio::test]
async fn a_file_open_in_this_process_cannot_be_opened_again() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let path = dir.path().join("twice.duckdb");
    let (first, _) = DuckDbStore::open(&path).await.expect("first open");
    let err = DuckDbStore::open(dir.path().join(".").join("twice.duckdb"))
        .await
        .expect_err("second open");
    assert!(
        matches!(err, atelier_store_duckdb::OpenError::AlreadyOpen { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("twice.duckdb"), "{err}");
    drop(first);
    DuckDbStore::open(&path)
        .await
        .expect("open again once the first is closed");
}

/// `atelier db copy` moves the tables described in `atelier_store::tables`.
#[tokio::test]
async fn the_table_descriptions_match_the_schema() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let (store, _) = DuckDbStore::open(dir.path().join("tables.duckdb"))
        .await
        .expect("open");
    atelier_store::conformance::tables_are_described(&store).await;
}
