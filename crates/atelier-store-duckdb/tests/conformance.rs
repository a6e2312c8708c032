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
