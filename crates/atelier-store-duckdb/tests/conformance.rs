//! The store conformance suite, each case on a fresh DuckDB file.

#![expect(clippy::expect_used, reason = "test helpers outside #[test] functions")]

use std::sync::Arc;

use atelier_store::Store;
use atelier_store_duckdb::DuckDbStore;

atelier_store::conformance_tests!(async || {
    let (store, dir) = fresh().await;
    (Arc::new(store) as Arc<dyn Store>, dir)
});

/// A new, migrated database in a temporary folder, kept while the folder is.
async fn fresh() -> (DuckDbStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temporary folder");
    let (store, _) = DuckDbStore::open(dir.path().join("fresh.duckdb"))
        .await
        .expect("open a fresh database");
    (store, dir)
}

/// A user, `a@example.com`, whose stored hash is `$argon2id$old`.
async fn user(store: &DuckDbStore) -> uuid::Uuid {
    use atelier_store::{NewUser, Role};
    store
        .create_user(NewUser {
            id: uuid::Uuid::now_v7(),
            email: "a@example.com".into(),
            password_hash: "$argon2id$old".into(),
            role: Role::User,
            now: chrono::Utc::now(),
        })
        .await
        .expect("user")
        .id
}

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
    let (store, _dir) = fresh().await;
    atelier_store::conformance::tables_are_described(&store).await;
}

/// The store keeps login lookups in memory; a change whose caller stops
/// waiting (a client gone mid-request) still commits on the blocking pool, and
/// the next login must see it, not what was kept from before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_abandoned_by_its_caller_still_reaches_logins() {
    use std::time::{Duration, Instant};

    let (store, _dir) = fresh().await;
    let user_id = user(&store).await;
    let hash = async || {
        let creds = store.credentials_by_email("a@example.com").await.unwrap();
        creds.expect("credentials").password_hash
    };
    assert_eq!(hash().await, "$argon2id$old"); // now kept in memory

    // Polled once, which starts the write, then dropped.
    let abandoned =
        tokio::time::timeout(Duration::ZERO, store.set_password_hash(user_id, "$argon2id$new")).await;
    assert!(abandoned.is_err(), "the write finished within one poll");

    let deadline = Instant::now() + Duration::from_secs(10);
    while hash().await != "$argon2id$new" {
        assert!(Instant::now() < deadline, "logins still see the old hash");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn new_session(user_id: uuid::Uuid, hash_byte: u8) -> atelier_store::NewSession {
    let now = chrono::Utc::now();
    atelier_store::NewSession {
        token_id: uuid::Uuid::now_v7(),
        family_id: uuid::Uuid::now_v7(),
        user_id,
        token_hash: atelier_store::TokenHash([hash_byte; 32]),
        now,
        expires_at: now + chrono::Duration::days(7),
        family_expires_at: now + chrono::Duration::days(30),
    }
}

/// Rows of `refresh_tokens` as another connection sees them (no write first).
async fn stored_tokens(store: &DuckDbStore) -> u64 {
    let table = atelier_store::tables::TABLES
        .iter()
        .find(|t| t.name == "refresh_tokens")
        .expect("described");
    store.count_rows(table).await.expect("count")
}

/// A login's session waits in memory for the next operation on sessions or
/// users (ADR-0033); with none coming it is still written, within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_session_is_written_although_nothing_else_writes() {
    use std::time::{Duration, Instant};

    let (store, _dir) = fresh().await;
    let user_id = user(&store).await;
    store.create_session(new_session(user_id, 1)).await.expect("kept");
    let deadline = Instant::now() + Duration::from_secs(10);
    while stored_tokens(&store).await == 0 {
        assert!(Instant::now() < deadline, "the session was never written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Shutting down, or dropping the store, writes the sessions still waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_sessions_are_written_when_the_store_closes_or_is_dropped() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let path = dir.path().join("closed.duckdb");
    let (store, _) = DuckDbStore::open(&path).await.expect("open");
    let user_id = user(&store).await;
    store.create_session(new_session(user_id, 1)).await.expect("kept");
    store.close().await.expect("close");
    drop(store);

    let (store, _) = DuckDbStore::open(&path).await.expect("open again");
    assert_eq!(stored_tokens(&store).await, 1, "written by close");
    store.create_session(new_session(user_id, 2)).await.expect("kept");
    drop(store);

    let (store, _) = DuckDbStore::open(&path).await.expect("open once more");
    assert_eq!(stored_tokens(&store).await, 2, "written as the store was dropped");
}
