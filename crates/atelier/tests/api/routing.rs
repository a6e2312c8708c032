//! Model routing: aliases resolve to chains of models; a transient failure moves
//! to the next model, then to the fallback strategy; a permanent one stops at
//! once. Checked against how often the mock upstream saw each model (the client's
//! own retries are off, so each try is one hit).

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::TestApp;

const ROUTES: &str = r#"
[strategies.primary]
action = "chat"
models = ["mock/error-503", "mock/error-502"]
fallback = "backup"

[strategies.backup]
action = "chat"
models = ["mock/error-429", "mock/chat"]

[strategies.strict]
action = "chat"
models = ["mock/error-400", "mock/chat"]

[strategies.unpaid]
action = "chat"
models = ["mock/error-402", "mock/chat"]

[strategies.down]
action = "chat"
models = ["mock/error-500"]
fallback = "also-down"

[strategies.also-down]
action = "chat"
models = ["mock/error-504"]

[strategies.pictures]
action = "image"
models = ["mock/error-503", "mock/image"]

[strategies.films]
action = "video"
models = ["mock/error-500", "mock/video"]

[aliases]
"atelier/chat" = "primary"
"atelier/strict" = "strict"
"atelier/unpaid" = "unpaid"
"atelier/down" = "down"
"atelier/image" = "pictures"
"atelier/video" = "films"
"#;

async fn app() -> TestApp {
    TestApp::spawn_with(|s| {
        s.upstream.max_retries = 0;
        s.routing = toml::from_str(ROUTES).unwrap();
    })
    .await
}

#[track_caller]
fn assert_hits(app: &TestApp, expected: &[(&str, u64)]) {
    let seen: Vec<(&str, u64)> = expected
        .iter()
        .map(|(m, _)| (*m, app.mock.model_hits(m)))
        .collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn transient_failures_walk_the_chain_then_the_fallback_strategy() {
    let app = app().await;
    let user = app.user().await;
    let (_, key) = app.api_key(&user, json!({"name": "router"})).await;

    let whole = app
        .v1_chat(&key, "atelier/chat", "hello")
        .await
        .expect(StatusCode::OK);
    assert_eq!(whole.headers["x-atelier-model"], "mock/chat");
    assert_eq!(whole.body["model"], "mock/chat");
    assert_hits(
        &app,
        &[
            ("mock/error-503", 1),
            ("mock/error-502", 1),
            ("mock/error-429", 1),
            ("mock/chat", 1),
        ],
    );

    let (status, body) = app
        .v1_chat_stream(
            &key,
            json!({"model": "atelier/chat", "stream": true, "messages": [{"role": "user", "content": "hello"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");
    assert_hits(
        &app,
        &[
            ("mock/error-503", 2),
            ("mock/error-502", 2),
            ("mock/error-429", 2),
            ("mock/chat", 2),
        ],
    );

    // The studio's REST routes route the same way and say who served.
    let text = app
        .post(
            "/generate/text",
            Some(&user.access),
            json!({"model": "atelier/chat", "prompt": "hello"}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(text.body["model"], "mock/chat", "{}", text.text);
    let chat = app
        .post(
            "/ai/chat",
            Some(&user.access),
            json!({"model": "atelier/chat", "messages": [{"role": "user", "content": "hello"}]}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(chat.body["model"], "mock/chat", "{}", chat.text);
    assert_hits(
        &app,
        &[
            ("mock/error-503", 4),
            ("mock/error-502", 4),
            ("mock/error-429", 4),
            ("mock/chat", 4),
        ],
    );

    // The usage record names what was asked for and what served it.
    let history = app.get("/generations?kind=text", Some(&user.access)).await.body;
    assert_eq!(history["generations"][0]["model"], "atelier/chat");
    assert_eq!(history["generations"][0]["model_served"], "mock/chat");
}

#[tokio::test]
async fn a_permanent_failure_stops_at_once() {
    let app = app().await;
    let user = app.user().await;
    let (_, key) = app.api_key(&user, json!({"name": "router"})).await;
    let refused = app.v1_chat(&key, "atelier/strict", "hello").await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.text);
    assert_hits(&app, &[("mock/error-400", 1), ("mock/chat", 0)]);

    let unpaid = app
        .post(
            "/generate/text",
            Some(&user.access),
            json!({"model": "atelier/unpaid", "prompt": "hello"}),
        )
        .await
        .expect_error(StatusCode::SERVICE_UNAVAILABLE, "upstream_payment_required");
    assert!(!unpaid.text.contains("mock/chat"));
    assert_hits(&app, &[("mock/error-402", 1), ("mock/chat", 0)]);
}

#[tokio::test]
async fn when_every_chain_fails_the_last_error_is_returned() {
    let app = app().await;
    let user = app.user().await;
    app.post(
        "/generate/text",
        Some(&user.access),
        json!({"model": "atelier/down", "prompt": "hello"}),
    )
    .await
    .expect(StatusCode::GATEWAY_TIMEOUT);
    assert_hits(&app, &[("mock/error-500", 1), ("mock/error-504", 1)]);
}

#[tokio::test]
async fn images_and_videos_fall_back_too() {
    let app = app().await;
    let user = app.user().await;
    let image = app
        .post(
            "/generate/image",
            Some(&user.access),
            json!({"model": "atelier/image", "prompt": "a kite"}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(image.body["model"], "mock/image", "{}", image.text);
    assert_hits(&app, &[("mock/error-503", 1), ("mock/image", 1)]);

    let job = app
        .post(
            "/generate/video",
            Some(&user.access),
            json!({"model": "atelier/video", "prompt": "a kite"}),
        )
        .await
        .expect(StatusCode::ACCEPTED);
    let job_id = job.body["job_id"].as_str().unwrap();
    let done = app
        .wait_for_job(&user.access, job_id, std::time::Duration::from_secs(20))
        .await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["model"], "mock/video");
    assert_hits(&app, &[("mock/error-500", 1), ("mock/video", 1)]);
}

#[tokio::test]
async fn an_alias_is_only_for_its_action() {
    let app = app().await;
    let user = app.user().await;
    app.post(
        "/generate/image",
        Some(&user.access),
        json!({"model": "atelier/chat", "prompt": "a kite"}),
    )
    .await
    .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    assert_hits(&app, &[("mock/error-503", 0), ("mock/chat", 0)]);
}
