//! Budgets: per-user caps on spend and requests, set by admins, checked before
//! the upstream is called, settled on the real cost.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestUser};

/// What one `mock/chat` answer to a short prompt costs (the mock's prices).
async fn cost_of_one_chat(app: &TestApp, user: &TestUser) -> f64 {
    app.post(
        "/generate/text",
        Some(&user.access),
        json!({"model": "mock/chat", "prompt": "hi"}),
    )
    .await
    .expect(StatusCode::OK);
    settled_spend(app, user, 1).await
}

/// The user's spend today once `requests` requests have been settled.
async fn settled_spend(app: &TestApp, user: &TestUser, requests: u64) -> f64 {
    for _ in 0..200 {
        let budget = app
            .get("/users/me/budget", Some(&user.access))
            .await
            .expect(StatusCode::OK)
            .body;
        let spent = budget["daily"]["spent_usd"].as_f64().unwrap();
        if budget["daily"]["requests"].as_u64() == Some(requests) && spent > 0.0 {
            return spent;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the spend of {requests} request(s) was never settled");
}

async fn set_budget(app: &TestApp, admin: &TestUser, user: &TestUser, body: Value) -> Value {
    app.put(&format!("/users/{}/budget", user.id), Some(&admin.access), body)
        .await
        .expect(StatusCode::OK)
        .body
}

#[tokio::test]
async fn a_stream_that_crosses_the_cap_finishes_and_the_next_request_gets_402() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let user = app.user().await;
    let one = cost_of_one_chat(&app, &user).await;
    // Room for a little more than the first request: the next one starts under
    // the cap and ends over it.
    set_budget(&app, &admin, &user, json!({"daily_usd": one * 1.5})).await;

    let (status, events, body) = app
        .chat_stream(
            &user.access,
            json!({"model": "mock/chat", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        events.last().map(|e| e.0.as_str()),
        Some("done"),
        "the stream ran to its end: {body}"
    );
    let spent = settled_spend(&app, &user, 2).await;
    assert!(spent > one * 1.5, "spent {spent} is over the cap {}", one * 1.5);

    let chat_hits = app.mock.hits("POST /api/v1/chat/completions");
    let refused = app
        .post(
            "/generate/text",
            Some(&user.access),
            json!({"model": "mock/chat", "prompt": "hi"}),
        )
        .await
        .expect_error(StatusCode::PAYMENT_REQUIRED, "budget_exceeded");
    assert_eq!(
        app.mock.hits("POST /api/v1/chat/completions"),
        chat_hits,
        "refused before the upstream"
    );
    let error = &refused.body["error"];
    assert_eq!(error["remaining_usd"], 0.0);
    assert_eq!(error["period"], "daily");
    let resets: chrono::DateTime<chrono::Utc> = serde_json::from_value(error["resets_at"].clone()).unwrap();
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1)).date_naive();
    assert_eq!(
        resets,
        tomorrow.and_hms_opt(0, 0, 0).unwrap().and_utc(),
        "the next UTC midnight"
    );

    // On /v1 the same refusal is OpenAI's insufficient_quota.
    let (_, key) = app.api_key(&user, json!({"name": "k"})).await;
    let v1 = app.v1_chat(&key, "mock/chat", "hi").await;
    assert_eq!(v1.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(v1.body["error"]["type"], "insufficient_quota");
    assert_eq!(v1.body["error"]["code"], "budget_exceeded");
    // And in the studio's account the user sees it.
    let budget = app.get("/users/me/budget", Some(&user.access)).await.body;
    assert_eq!(budget["daily"]["remaining_usd"], 0.0);
    assert_eq!(budget["daily"]["limit_usd"].as_f64(), Some(one * 1.5));

    // The spend is read back from the usage records after a restart.
    let app = app.restart().await;
    let user = app.sign_in(&user.email, &user.password).await;
    app.post(
        "/generate/text",
        Some(&user.access),
        json!({"model": "mock/chat", "prompt": "hi"}),
    )
    .await
    .expect_error(StatusCode::PAYMENT_REQUIRED, "budget_exceeded");
}

#[tokio::test]
async fn request_caps_count_requests_per_day() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let user = app.user().await;
    set_budget(&app, &admin, &user, json!({"daily_requests": 2})).await;
    for _ in 0..2 {
        app.post(
            "/generate/image",
            Some(&user.access),
            json!({"model": "mock/image", "prompt": "x"}),
        )
        .await
        .expect(StatusCode::OK);
    }
    let refused = app
        .post(
            "/generate/image",
            Some(&user.access),
            json!({"model": "mock/image", "prompt": "x"}),
        )
        .await
        .expect_error(StatusCode::PAYMENT_REQUIRED, "budget_exceeded");
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2 requests"),
        "{}",
        refused.text
    );
    assert_eq!(app.mock.hits("POST /api/v1/images"), 2);

    // Clearing the override brings back the role's defaults (no request cap).
    let cleared = set_budget(&app, &admin, &user, json!({})).await;
    assert_eq!(cleared["override"]["daily_requests"], Value::Null);
    assert_eq!(cleared["effective"]["daily"]["request_limit"], Value::Null);
    assert_eq!(
        cleared["effective"]["daily"]["limit_usd"], 5.0,
        "the user role's default"
    );
    app.post(
        "/generate/image",
        Some(&user.access),
        json!({"model": "mock/image", "prompt": "x"}),
    )
    .await
    .expect(StatusCode::OK);
}

#[tokio::test]
async fn only_admins_set_budgets_and_bad_amounts_are_refused() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let user = app.user().await;
    let path = format!("/users/{}/budget", user.id);
    app.put(&path, Some(&user.access), json!({"daily_usd": 100.0}))
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    app.get(&path, Some(&user.access))
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    app.put(&path, Some(&admin.access), json!({"daily_usd": -1.0}))
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    app.put(&path, Some(&admin.access), json!({"daily_usd": "lots"}))
        .await
        .expect(StatusCode::UNPROCESSABLE_ENTITY);
    app.put(&path, Some(&admin.access), json!({"weekly_usd": 3.0}))
        .await
        .expect(StatusCode::UNPROCESSABLE_ENTITY);
    let unknown = format!("/users/{}/budget", uuid::Uuid::now_v7());
    app.put(&unknown, Some(&admin.access), json!({"daily_usd": 1.0}))
        .await
        .expect_error(StatusCode::NOT_FOUND, "user_not_found");

    let set = set_budget(
        &app,
        &admin,
        &user,
        json!({"daily_usd": 1.25, "monthly_usd": 10.0}),
    )
    .await;
    assert_eq!(set["override"]["daily_usd"], 1.25);
    assert_eq!(set["effective"]["monthly"]["limit_usd"], 10.0);
    // Kept across a restart.
    let app = app.restart().await;
    let admin = app.admin().await;
    let read = app
        .get(&path, Some(&admin.access))
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(read["override"]["daily_usd"], 1.25);
    let me = app.sign_in(&user.email, &user.password).await;
    let mine = app
        .get("/users/me/budget", Some(&me.access))
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(mine["daily"]["limit_usd"], 1.25);
    assert_eq!(mine["monthly"]["limit_usd"], 10.0);
}

#[tokio::test]
async fn admins_follow_their_roles_defaults() {
    let app = TestApp::spawn_with(|s| {
        s.budgets.admin.daily_requests = Some(1);
    })
    .await;
    let admin = app.admin().await;
    app.post(
        "/generate/text",
        Some(&admin.access),
        json!({"model": "mock/chat", "prompt": "hi"}),
    )
    .await
    .expect(StatusCode::OK);
    app.post(
        "/generate/text",
        Some(&admin.access),
        json!({"model": "mock/chat", "prompt": "hi"}),
    )
    .await
    .expect_error(StatusCode::PAYMENT_REQUIRED, "budget_exceeded");
}
