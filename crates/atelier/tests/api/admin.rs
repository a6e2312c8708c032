//! `/admin`, probes, fallbacks, request ids, and persistence across restarts.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::TestApp;

#[tokio::test]
async fn stats_count_users_tokens_and_logins() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let user = app.user().await;
    app.user().await;
    app.login(&user.email, "wrong wrong wrong")
        .await
        .expect(StatusCode::UNAUTHORIZED);
    app.login("ghost@example.com", "wrong wrong wrong")
        .await
        .expect(StatusCode::UNAUTHORIZED);
    app.refresh(&user.refresh).await.expect(StatusCode::OK);
    let extra = app.sign_in(&user.email, &user.password).await;
    app.post("/auth/logout", None, json!({"refresh_token": extra.refresh}))
        .await
        .expect(StatusCode::NO_CONTENT);

    let stats = app
        .get("/admin/stats", Some(&admin.access))
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(
        stats["users"],
        json!({"total": 3, "by_role": {"user": 2, "admin": 1}})
    );
    // Logins: admin, two users, the extra session; failures: two.
    assert_eq!(stats["logins_24h"], json!({"succeeded": 4, "failed": 2}));
    // Active: admin, user's rotated successor, second user. Rotated: user's first. Revoked: the extra.
    assert_eq!(
        stats["refresh_tokens"],
        json!({"active": 3, "expired": 0, "revoked": 1, "rotated": 1})
    );
}

#[tokio::test]
async fn purge_removes_revoked_tokens() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let user = app.user().await;
    app.post("/auth/logout", None, json!({"refresh_token": user.refresh}))
        .await
        .expect(StatusCode::NO_CONTENT);

    let purged = app
        .post("/admin/tokens/purge", Some(&admin.access), json!({}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(purged.body, json!({"purged": 1}));
    let again = app
        .post("/admin/tokens/purge", Some(&admin.access), json!({}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(again.body, json!({"purged": 0}));
    let stats = app
        .get("/admin/stats", Some(&admin.access))
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(stats["refresh_tokens"]["revoked"], 0);
    assert_eq!(stats["refresh_tokens"]["active"], 1, "the admin's session stays");
}

#[tokio::test]
async fn database_health_and_probes() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let health = app
        .get("/admin/health/db", Some(&admin.access))
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["backend"], "duckdb");
    assert!(
        health["latency_ms"]
            .as_f64()
            .is_some_and(|ms| (0.0..5_000.0).contains(&ms)),
        "{health}"
    );

    assert_eq!(
        app.get("/healthz", None).await.expect(StatusCode::OK).body,
        json!({"status": "ok"})
    );
    assert_eq!(
        app.get("/readyz", None).await.expect(StatusCode::OK).body,
        json!({"status": "ready"})
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let app = TestApp::spawn().await;
    app.get("/nope", None)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    app.get("/auth/login", None)
        .await
        .expect_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
}

/// A client that trickles its headers (slow-loris) is cut off after
/// `header_timeout`, and so is a keep-alive connection left idle that long;
/// one that sends its request in time is answered, however long the answer
/// takes.
#[tokio::test]
async fn slow_headers_and_idle_connections_are_closed_after_the_header_timeout() {
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // Every upstream answer takes longer than the header timeout.
    let mock = atelier_mock_upstream::MockConfig {
        latency: Duration::from_millis(1_500),
        ..atelier_mock_upstream::MockConfig::default()
    };
    let app = TestApp::spawn_custom(mock, |s| s.header_timeout = Duration::from_secs(1)).await;
    let user = app.user().await;
    let slow_answer = app
        .post(
            "/v1/chat/completions",
            Some(&user.access),
            json!({"model": "mock/chat", "messages": [{"role": "user", "content": "take your time"}]}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(slow_answer.body["object"], "chat.completion");

    // Reads until the server closes; returns what it sent and when it closed.
    async fn until_closed(stream: &mut tokio::net::TcpStream) -> (String, Instant) {
        let mut seen = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut seen)).await;
        let _ = read.expect("the server closed the connection");
        (String::from_utf8_lossy(&seen).into_owned(), Instant::now())
    }

    let mut slow = tokio::net::TcpStream::connect(app.addr).await.expect("connect");
    let started = Instant::now();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: atelier\r\n")
        .await
        .expect("write");
    let (answer, closed) = until_closed(&mut slow).await;
    let waited = closed - started;
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );
    assert!(!answer.contains("200 OK"), "{answer}");

    let mut idle = tokio::net::TcpStream::connect(app.addr).await.expect("connect");
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: atelier\r\n\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let (answer, closed) = until_closed(&mut idle).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "answered in time: {answer}");
    let waited = closed - started;
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "idle keep-alive closed after {waited:?}"
    );
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated() {
    let app = TestApp::spawn().await;
    let reply = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "trace-abc-123")
        .send()
        .await
        .expect("sent");
    assert_eq!(reply.headers()["x-request-id"], "trace-abc-123");
    let reply = app.client.get(app.url("/healthz")).send().await.expect("sent");
    let generated = reply.headers()["x-request-id"].to_str().expect("text");
    assert!(uuid::Uuid::parse_str(generated).is_ok(), "{generated}");
    // An unprintable id is replaced, not echoed into logs and headers.
    let reply = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "a\tb")
        .send()
        .await
        .expect("sent");
    assert_ne!(reply.headers()["x-request-id"], "a\tb");
}

#[tokio::test]
async fn users_and_sessions_survive_a_restart() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let app = app.restart().await;

    // The access token still verifies (same signing key) and the session still refreshes.
    let me = app
        .get("/users/me", Some(&user.access))
        .await
        .expect(StatusCode::OK);
    assert_eq!(me.body["email"], user.email.as_str());
    app.refresh(&user.refresh).await.expect(StatusCode::OK);
    app.login(&user.email, &user.password)
        .await
        .expect(StatusCode::OK);
}

#[tokio::test]
async fn a_generated_signing_key_is_kept_across_restarts() {
    let app = TestApp::spawn_with(|s| s.jwt_secret = None).await;
    let user = app.user().await;
    let app = app.restart().await;
    app.get("/users/me", Some(&user.access))
        .await
        .expect(StatusCode::OK);
}

#[tokio::test]
async fn revocations_survive_a_restart() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let user = app.user().await;
    app.put(
        &format!("/users/{}/role", user.id),
        Some(&admin.access),
        json!({"role": "admin"}),
    )
    .await
    .expect(StatusCode::OK);
    let app = app.restart().await;
    app.get("/users/me", Some(&user.access))
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "token_revoked");
}
