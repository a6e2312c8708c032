//! `/auth`: registration, login, refresh, logout, and access-token validation.

use std::time::Duration;

use atelier::config::Registration;
use atelier_store::Store as _;
use chrono::Utc;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{JWT_SECRET, TestApp};

const STRONG: &str = "correct horse battery staple";

#[tokio::test]
async fn register_creates_a_user_with_a_normalised_email() {
    let app = TestApp::spawn().await;
    let reply = app
        .register("  Ada.Lovelace@Example.COM ", STRONG)
        .await
        .expect(StatusCode::CREATED);
    let body = reply.body.as_object().expect("object");
    let mut keys: Vec<_> = body.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["created_at", "email", "id", "role"],
        "no password or hash in the answer"
    );
    assert_eq!(body["email"], "ada.lovelace@example.com");
    assert_eq!(body["role"], "user");
    assert!(uuid::Uuid::parse_str(body["id"].as_str().expect("id")).is_ok());

    let dup = app.register("ADA.LOVELACE@example.com", STRONG).await;
    dup.expect_error(StatusCode::CONFLICT, "email_taken");
}

#[tokio::test]
async fn register_refuses_bad_input_with_clear_codes() {
    let app = TestApp::spawn().await;
    app.register("not-an-email", STRONG)
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_email");
    app.register("a@example.com", "short")
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "weak_password");
    app.register("a@example.com", "password1234")
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "weak_password");
    app.register("a@example.com", &"long enough ".repeat(11))
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "weak_password");

    let unknown = app
        .post(
            "/auth/register",
            None,
            json!({"email": "a@example.com", "password": STRONG, "role": "admin"}),
        )
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    assert!(
        unknown.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("role")),
        "{}",
        unknown.text
    );
    let missing = app
        .post("/auth/register", None, json!({"email": "a@example.com"}))
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    assert!(missing.text.contains("password"), "{}", missing.text);

    let raw = |body: &'static str, content_type: Option<&'static str>| {
        let mut req = app.client.post(app.url("/auth/register")).body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        req
    };
    let reply = crate::helpers::read(
        raw("{\"email\": ", Some("application/json"))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    reply.expect_error(StatusCode::BAD_REQUEST, "malformed_json");
    let reply = crate::helpers::read(raw("{}", None).send().await.expect("sent")).await;
    reply.expect_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");

    let huge = format!(
        "{{\"email\": \"a@example.com\", \"password\": \"{}\"}}",
        "x".repeat(1024 * 1024)
    );
    let reply = app
        .client
        .post(app.url("/auth/register"))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .expect("sent");
    crate::helpers::read(reply)
        .await
        .expect_error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");

    // None of that created anything.
    let admin = app.admin().await;
    let stats = app
        .get("/admin/stats", Some(&admin.access))
        .await
        .expect(StatusCode::OK);
    assert_eq!(stats.body["users"]["total"], 1);
}

#[tokio::test]
async fn closed_registration_is_refused() {
    let app = TestApp::spawn_with(|s| s.registration = Registration::Closed).await;
    app.register("a@example.com", STRONG)
        .await
        .expect_error(StatusCode::FORBIDDEN, "registration_closed");
}

#[tokio::test]
async fn login_returns_a_working_token_pair() {
    let app = TestApp::spawn().await;
    app.register("b@example.com", STRONG)
        .await
        .expect(StatusCode::CREATED);
    let reply = app.login(" B@Example.com", STRONG).await.expect(StatusCode::OK);
    assert_eq!(reply.body["token_type"], "bearer");
    assert_eq!(
        reply.headers["cache-control"], "no-store",
        "tokens are not cached"
    );
    assert_eq!(reply.body["expires_in"], 300);
    let access = reply.body["access_token"].as_str().expect("access");
    assert_eq!(access.split('.').count(), 3, "a JWT");
    assert!(
        reply.body["refresh_token"]
            .as_str()
            .is_some_and(|r| r.len() == 43)
    );

    let me = app.get("/users/me", Some(access)).await.expect(StatusCode::OK);
    assert_eq!(me.body["email"], "b@example.com");
}

#[tokio::test]
async fn unknown_email_and_wrong_password_look_the_same() {
    let app = TestApp::spawn().await;
    app.register("c@example.com", STRONG)
        .await
        .expect(StatusCode::CREATED);
    let wrong = app.login("c@example.com", "not the password at all").await;
    let unknown = app.login("nobody@example.com", "not the password at all").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.code(), "invalid_credentials");
    assert_eq!(
        (wrong.status, &wrong.text),
        (unknown.status, &unknown.text),
        "same status and body"
    );
    let header_names = |r: &crate::helpers::Reply| {
        let mut names: Vec<String> = r.headers.keys().map(|k| k.to_string()).collect();
        names.sort();
        names
    };
    assert_eq!(header_names(&wrong), header_names(&unknown), "same headers");
}

#[tokio::test]
async fn failed_logins_back_off_per_account_and_recover() {
    let app = TestApp::spawn().await;
    app.register("d@example.com", STRONG)
        .await
        .expect(StatusCode::CREATED);
    // Five free failures, then the sixth starts a 1 s delay.
    for _ in 0..6 {
        app.login("d@example.com", "wrong wrong wrong")
            .await
            .expect_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    }
    let throttled = app
        .login("d@example.com", STRONG)
        .await
        .expect_error(StatusCode::TOO_MANY_REQUESTS, "too_many_attempts");
    let retry_after: u64 = throttled.headers["retry-after"]
        .to_str()
        .expect("text")
        .parse()
        .expect("seconds");
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    // Other accounts are not affected.
    app.register("e@example.com", STRONG)
        .await
        .expect(StatusCode::CREATED);
    app.login("e@example.com", STRONG).await.expect(StatusCode::OK);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    app.login("d@example.com", STRONG).await.expect(StatusCode::OK);
}

#[tokio::test]
async fn failed_logins_back_off_per_client_address() {
    let app = TestApp::spawn_with(|s| {
        s.auth.backoff_ip_free_failures = 3;
        s.auth.backoff_account_free_failures = 100;
    })
    .await;
    app.register("f@example.com", STRONG)
        .await
        .expect(StatusCode::CREATED);
    for i in 0..4 {
        app.login(&format!("spray{i}@example.com"), "guess guess guess")
            .await
            .expect(StatusCode::UNAUTHORIZED);
    }
    app.login("f@example.com", STRONG)
        .await
        .expect_error(StatusCode::TOO_MANY_REQUESTS, "too_many_attempts");
}

#[tokio::test]
async fn refresh_rotates_the_pair() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let next = app.refresh(&user.refresh).await.expect(StatusCode::OK);
    let (access, refresh) = (
        next.body["access_token"].as_str().expect("a"),
        next.body["refresh_token"].as_str().expect("r"),
    );
    assert_ne!(refresh, user.refresh);
    app.get("/users/me", Some(access)).await.expect(StatusCode::OK);
    app.refresh(refresh).await.expect(StatusCode::OK);
    app.refresh("not-a-token")
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "invalid_refresh_token");
    app.post("/auth/refresh", None, json!({}))
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
}

#[tokio::test]
async fn reusing_a_rotated_refresh_token_revokes_the_whole_family() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let other_session = app.sign_in(&user.email, &user.password).await;

    let r2 = app.refresh(&user.refresh).await.expect(StatusCode::OK);
    let r3 = app
        .refresh(r2.body["refresh_token"].as_str().expect("r2"))
        .await
        .expect(StatusCode::OK);
    let newest_refresh = r3.body["refresh_token"].as_str().expect("r3");
    let newest_access = r3.body["access_token"].as_str().expect("a3");

    app.refresh(&user.refresh)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "refresh_token_reused");
    // The newest member of the family died with it, refresh and access token alike.
    app.refresh(newest_refresh)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "invalid_refresh_token");
    app.get("/users/me", Some(newest_access))
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "token_revoked");
    // Another login of the same user is a different family.
    app.get("/users/me", Some(&other_session.access))
        .await
        .expect(StatusCode::OK);
    app.refresh(&other_session.refresh).await.expect(StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refreshes_have_exactly_one_winner() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let mut attempts = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let request = app
            .client
            .post(app.url("/auth/refresh"))
            .json(&json!({"refresh_token": user.refresh}));
        attempts.spawn(async move { crate::helpers::read(request.send().await.expect("sent")).await });
    }
    let replies = attempts.join_all().await;
    let ok = replies.iter().filter(|r| r.status == StatusCode::OK).count();
    assert_eq!(
        ok,
        1,
        "statuses: {:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for r in replies.iter().filter(|r| r.status != StatusCode::OK) {
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "never a 500: {}", r.text);
    }
}

#[tokio::test]
async fn expired_refresh_tokens_are_refused() {
    let app = TestApp::spawn_with(|s| s.auth.refresh_idle_ttl = Duration::from_secs(1)).await;
    let user = app.user().await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    app.refresh(&user.refresh)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "refresh_token_expired");
}

#[tokio::test]
async fn logout_ends_the_session_and_is_idempotent() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let other = app.sign_in(&user.email, &user.password).await;
    let body = json!({"refresh_token": user.refresh});
    app.post("/auth/logout", None, body.clone())
        .await
        .expect(StatusCode::NO_CONTENT);
    app.refresh(&user.refresh)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "invalid_refresh_token");
    app.get("/users/me", Some(&user.access))
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "token_revoked");
    app.post("/auth/logout", None, body)
        .await
        .expect(StatusCode::NO_CONTENT);
    app.post("/auth/logout", None, json!({"refresh_token": "garbage"}))
        .await
        .expect(StatusCode::NO_CONTENT);
    // The user's other session is untouched.
    app.get("/users/me", Some(&other.access))
        .await
        .expect(StatusCode::OK);
}

fn sign(claims: &Value, alg: Algorithm, key: &[u8]) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(key)).expect("sign")
}

#[tokio::test]
async fn forged_expired_and_misaddressed_tokens_are_refused() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let now = Utc::now().timestamp();
    let claims = |changes: Value| {
        let mut c = json!({
            "sub": user.id, "role": "admin", "iat": now, "exp": now + 300, "iss": "atelier",
            "aud": "atelier", "jti": uuid::Uuid::now_v7(), "sid": uuid::Uuid::now_v7(),
        });
        for (k, v) in changes.as_object().expect("object") {
            c[k] = v.clone();
        }
        c
    };
    let key = JWT_SECRET.as_bytes();
    // Our own key makes a valid token: the harness can forge, so these cases are real.
    app.get(
        "/users/me",
        Some(&sign(&claims(json!({})), Algorithm::HS256, key)),
    )
    .await
    .expect(StatusCode::OK);

    let none = {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.",
            b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
            b64.encode(claims(json!({})).to_string())
        )
    };
    let mut tampered = user.access.clone().into_bytes();
    let i = tampered.len() - 3;
    tampered[i] = if tampered[i] == b'a' { b'b' } else { b'a' };
    let cases = [
        ("alg none", none),
        ("changed signature", String::from_utf8(tampered).expect("ascii")),
        (
            "other key",
            sign(
                &claims(json!({})),
                Algorithm::HS256,
                b"someone-else-s-key-0123456789abcdef",
            ),
        ),
        ("HS384", sign(&claims(json!({})), Algorithm::HS384, key)),
        (
            "wrong issuer",
            sign(&claims(json!({"iss": "elsewhere"})), Algorithm::HS256, key),
        ),
        (
            "wrong audience",
            sign(&claims(json!({"aud": "elsewhere"})), Algorithm::HS256, key),
        ),
        ("refresh token as access token", user.refresh.clone()),
        ("garbage", "abc".to_owned()),
    ];
    for (name, token) in cases {
        let reply = app.get("/users/me", Some(&token)).await;
        assert_eq!(
            (reply.status, reply.code()),
            (StatusCode::UNAUTHORIZED, "invalid_token"),
            "{name}: {}",
            reply.text
        );
        assert_eq!(reply.headers["www-authenticate"], "Bearer");
    }

    let expired = sign(
        &claims(json!({"iat": now - 900, "exp": now - 60})),
        Algorithm::HS256,
        key,
    );
    app.get("/users/me", Some(&expired))
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "token_expired");

    app.get("/users/me", None)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "missing_token");
    let basic = app
        .client
        .get(app.url("/users/me"))
        .header("authorization", "Basic YTpi")
        .send()
        .await
        .expect("sent");
    crate::helpers::read(basic)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "invalid_token");
}

#[tokio::test]
async fn login_upgrades_hashes_made_with_other_parameters() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let mut app = app.restart_with(|s| s.auth.argon2_iterations = 3).await;
    app.login(&user.email, &user.password)
        .await
        .expect(StatusCode::OK);
    app.stop().await;

    let (store, _) = atelier_store_duckdb::DuckDbStore::open(app.db_path())
        .await
        .expect("open the file");
    let hash_of = |email: String| {
        let store = store.clone();
        async move {
            store
                .credentials_by_email(&email)
                .await
                .expect("query")
                .expect("user")
                .password_hash
        }
    };
    let upgraded = hash_of(user.email.clone()).await;
    assert!(
        upgraded.starts_with("$argon2id$v=19$m=19456,t=3,p=1$"),
        "{upgraded}"
    );
    let untouched = hash_of(crate::helpers::ADMIN_EMAIL.to_owned()).await;
    assert!(
        untouched.contains("t=2"),
        "only hashes verified at login change: {untouched}"
    );
}
