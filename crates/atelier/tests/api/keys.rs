//! API keys: their lifecycle, and every way a request with one is accepted or
//! refused, on the REST API and on `/v1`.

use std::time::Duration;

use atelier_store::{ApiKey, Store, TokenHash};
use atelier_store_duckdb::DuckDbStore;
use chrono::Utc;
use reqwest::{Method, StatusCode};
use serde_json::json;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::helpers::TestApp;

fn well_formed(key: &str) -> bool {
    let Some((public, secret)) = key.strip_prefix("atl_").and_then(|r| r.split_once('_')) else {
        return false;
    };
    let hex = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    };
    public.len() == 12 && hex(public) && secret.len() == 64 && hex(secret)
}

#[tokio::test]
async fn a_key_is_shown_once_listed_without_its_secret_and_revoked_at_once() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let created = app
        .post(
            "/users/me/api-keys",
            Some(&user.access),
            json!({"name": "  laptop script ", "scopes": ["chat", "images"], "expires_in_days": 30}),
        )
        .await
        .expect(StatusCode::CREATED);
    let key = created.body["key"].as_str().expect("key").to_owned();
    assert!(
        well_formed(&key),
        "{key}: 256 random bits in hex after a public id"
    );
    assert_eq!(created.body["name"], "laptop script");
    assert_eq!(created.body["scopes"], json!(["chat", "images"]));
    let expires: chrono::DateTime<Utc> = serde_json::from_value(created.body["expires_at"].clone()).unwrap();
    let days = (expires - Utc::now()).num_hours() as f64 / 24.0;
    assert!((29.9..=30.0).contains(&days), "expires in {days} days");
    assert!(created.body["last_used_at"].is_null());
    let public = &key[4..16];
    assert_eq!(created.body["prefix"], format!("atl_{public}_…"));

    // Both headers work, on the REST API and on /v1.
    let me = app
        .send_key(Method::GET, "/users/me", &key, None)
        .await
        .expect(StatusCode::OK);
    assert_eq!(me.body["email"], user.email);
    app.get("/v1/models", Some(&key)).await.expect(StatusCode::OK);

    // The list never shows the key again, and says when it was last used.
    let list = app
        .get("/users/me/api-keys", Some(&user.access))
        .await
        .expect(StatusCode::OK);
    assert_eq!(list.body["keys"].as_array().unwrap().len(), 1);
    assert!(
        !list.text.contains(&key[16..]),
        "the secret is not listed: {}",
        list.text
    );
    let used: chrono::DateTime<Utc> = serde_json::from_value(list.body["keys"][0]["last_used_at"].clone())
        .expect("last_used_at set after use");
    assert!((Utc::now() - used).num_seconds() < 60);

    // Revocation works on the very next request, on every route.
    let id = created.body["id"].as_str().unwrap();
    app.delete(&format!("/users/me/api-keys/{id}"), Some(&user.access))
        .await
        .expect(StatusCode::NO_CONTENT);
    app.send_key(Method::GET, "/users/me", &key, None)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "invalid_api_key");
    let v1 = app.get("/v1/models", Some(&key)).await;
    assert_eq!(v1.status, StatusCode::UNAUTHORIZED);
    assert_eq!(v1.body["error"]["type"], "authentication_error");
    assert_eq!(v1.body["error"]["code"], "invalid_api_key");
    assert!(
        v1.body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    let list = app
        .get("/users/me/api-keys", Some(&user.access))
        .await
        .expect(StatusCode::OK);
    assert_eq!(list.body["keys"], json!([]));
    app.delete(&format!("/users/me/api-keys/{id}"), Some(&user.access))
        .await
        .expect_error(StatusCode::NOT_FOUND, "api_key_not_found");
}

#[tokio::test]
async fn keys_survive_a_restart_and_stay_revoked_after_one() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let (_, kept) = app.api_key(&user, json!({"name": "kept"})).await;
    let (gone_id, gone) = app.api_key(&user, json!({"name": "gone"})).await;
    app.delete(&format!("/users/me/api-keys/{gone_id}"), Some(&user.access))
        .await
        .expect(StatusCode::NO_CONTENT);
    let app = app.restart().await;
    app.get("/v1/models", Some(&kept)).await.expect(StatusCode::OK);
    app.get("/v1/models", Some(&gone))
        .await
        .expect(StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn malformed_unknown_and_misplaced_keys_are_refused() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let (_, key) = app.api_key(&user, json!({"name": "real"})).await;
    let mut unknown = key.clone();
    let last = unknown.pop().unwrap();
    unknown.push(if last == '0' { '1' } else { '0' });
    for bad in ["garbage", "atl_", "atl_123_456", &key.to_uppercase(), &unknown] {
        app.send_key(Method::GET, "/users/me", bad, None)
            .await
            .expect_error(StatusCode::UNAUTHORIZED, "invalid_api_key");
    }
    app.get("/users/me", Some("atl_short_key"))
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "invalid_api_key");
    // Never in a URL: a key in the query string is not a credential.
    let in_url = app.get(&format!("/v1/models?api_key={key}"), None).await;
    assert_eq!(in_url.status, StatusCode::UNAUTHORIZED);
    assert_eq!(in_url.body["error"]["code"], "missing_token");
}

#[tokio::test]
async fn an_expired_key_is_refused_with_its_own_code() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let mut app = app;
    app.stop().await;
    // A key that expired a minute ago, written straight to the database.
    let key = format!("atl_{}_{}", "0123456789ab", "cd".repeat(32));
    {
        let (store, _) = DuckDbStore::open(&app.db_path())
            .await
            .expect("open the database");
        store
            .create_api_key(&ApiKey {
                id: Uuid::now_v7(),
                user_id: user.id.parse().unwrap(),
                public_id: "0123456789ab".into(),
                key_hash: TokenHash(Sha256::digest(key.as_bytes()).into()),
                name: "old".into(),
                scopes: vec![],
                expires_at: Some(Utc::now() - chrono::Duration::minutes(1)),
                created_at: Utc::now() - chrono::Duration::days(2),
                last_used_at: None,
                revoked_at: None,
            })
            .await
            .expect("insert");
        store.close().await.expect("close");
    }
    let app = app.restart().await;
    app.send_key(Method::GET, "/users/me", &key, None)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "api_key_expired");
    let v1 = app.v1_chat(&key, "mock/chat", "hello").await;
    assert_eq!(
        (v1.status, v1.body["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("api_key_expired"))
    );
}

#[tokio::test]
async fn a_key_without_the_scope_gets_403_and_the_upstream_is_not_called() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let (_, images_only) = app
        .api_key(&user, json!({"name": "pictures", "scopes": ["images"]}))
        .await;
    let before = app.mock.hits("POST /api/v1/chat/completions");
    let v1 = app.v1_chat(&images_only, "mock/chat", "hello").await;
    assert_eq!(v1.status, StatusCode::FORBIDDEN);
    assert_eq!(v1.body["error"]["code"], "insufficient_scope");
    assert_eq!(v1.body["error"]["type"], "permission_error");
    app.send_key(
        Method::POST,
        "/generate/text",
        &images_only,
        Some(json!({"model": "mock/chat", "prompt": "hi"})),
    )
    .await
    .expect_error(StatusCode::FORBIDDEN, "insufficient_scope");
    app.send_key(
        Method::POST,
        "/generate/video",
        &images_only,
        Some(json!({"model": "mock/video", "prompt": "hi"})),
    )
    .await
    .expect_error(StatusCode::FORBIDDEN, "insufficient_scope");
    assert_eq!(app.mock.hits("POST /api/v1/chat/completions"), before);
    assert_eq!(app.mock.hits("POST /api/v1/videos"), 0);
    // The scope it has works.
    app.send_key(
        Method::POST,
        "/generate/image",
        &images_only,
        Some(json!({"model": "mock/image", "prompt": "a red square"})),
    )
    .await
    .expect(StatusCode::OK);
}

#[tokio::test]
async fn keys_cannot_manage_keys_credentials_or_the_admin_console() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let (_, key) = app.api_key(&admin, json!({"name": "admin automation"})).await;
    for (method, path, body) in [
        (
            Method::POST,
            "/users/me/api-keys",
            Some(json!({"name": "another"})),
        ),
        (Method::GET, "/users/me/api-keys", None),
        (
            Method::PUT,
            "/users/me",
            Some(json!({"email": "new@example.com"})),
        ),
        (Method::GET, "/users", None),
        (Method::GET, "/admin/stats", None),
    ] {
        app.send_key(method, path, &key, body)
            .await
            .expect_error(StatusCode::FORBIDDEN, "session_required");
    }
}

#[tokio::test]
async fn invalid_key_requests_are_rejected_with_clear_errors() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    for (body, fragment) in [
        (json!({"name": ""}), "name"),
        (json!({"name": "x".repeat(101)}), "name"),
        (json!({"name": "k", "scopes": ["everything"]}), "scope"),
        (json!({"name": "k", "expires_in_days": 0}), "expires_in_days"),
        (json!({"name": "k", "expires_in_days": 5000}), "expires_in_days"),
    ] {
        let reply = app
            .post("/users/me/api-keys", Some(&user.access), body)
            .await
            .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
        assert!(reply.text.contains(fragment), "{}", reply.text);
    }
    app.post(
        "/users/me/api-keys",
        Some(&user.access),
        json!({"name": "k", "color": "red"}),
    )
    .await
    .expect(StatusCode::UNPROCESSABLE_ENTITY);
    // Another user's key cannot be revoked (nor told apart from a missing one).
    let other = app.user().await;
    let (their_id, their_key) = app.api_key(&other, json!({"name": "theirs"})).await;
    app.delete(&format!("/users/me/api-keys/{their_id}"), Some(&user.access))
        .await
        .expect_error(StatusCode::NOT_FOUND, "api_key_not_found");
    app.get("/v1/models", Some(&their_key))
        .await
        .expect(StatusCode::OK);
}

#[tokio::test]
async fn a_deleted_users_keys_stop_working() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let user = app.user().await;
    let (_, key) = app.api_key(&user, json!({"name": "soon gone"})).await;
    app.get("/v1/models", Some(&key)).await.expect(StatusCode::OK);
    app.delete(&format!("/users/{}", user.id), Some(&admin.access))
        .await
        .expect(StatusCode::NO_CONTENT);
    app.get("/v1/models", Some(&key))
        .await
        .expect(StatusCode::UNAUTHORIZED);
    // A role change applies to keys at once.
    let other = app.user().await;
    let (_, other_key) = app.api_key(&other, json!({"name": "k"})).await;
    app.send_key(Method::GET, "/users/me", &other_key, None)
        .await
        .expect(StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1)).await;
    app.put(
        &format!("/users/{}/role", other.id),
        Some(&admin.access),
        json!({"role": "admin"}),
    )
    .await
    .expect(StatusCode::OK);
    let me = app
        .send_key(Method::GET, "/users/me", &other_key, None)
        .await
        .expect(StatusCode::OK);
    assert_eq!(me.body["role"], "admin");
}
