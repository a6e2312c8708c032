//! `/ai` and `/generate` (text, images), the history and the upstream error mapping,
//! through the real server against the mock upstream.

use std::time::Duration;

use atelier_mock_upstream::MockConfig;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::TestApp;

const CHAT: &str = "POST /api/v1/chat/completions";

fn ask(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

#[tokio::test]
async fn models_are_listed_by_modality_and_restricted_by_the_allow_list() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let user = app.user().await;
    let token = Some(user.access.as_str());

    let text = app.get("/ai/models", token).await.expect(StatusCode::OK).body;
    let ids = |body: &Value| -> Vec<String> {
        body["models"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["id"].as_str().map(str::to_owned))
            .collect()
    };
    assert!(ids(&text).contains(&"mock/chat".to_owned()));
    assert!(!ids(&text).contains(&"mock/image".to_owned()));
    let chat = &text["models"][0];
    assert!(
        chat["pricing"]["prompt_per_token"]
            .as_f64()
            .is_some_and(|p| p > 0.0),
        "string prices became numbers"
    );

    let images = app
        .get("/ai/models?modality=image", token)
        .await
        .expect(StatusCode::OK)
        .body;
    assert!(
        ids(&images).contains(&"mock/image".to_owned()) && !ids(&images).contains(&"mock/chat".to_owned())
    );
    let videos = app
        .get("/ai/models?modality=video", token)
        .await
        .expect(StatusCode::OK)
        .body;
    let video = videos["models"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["id"] == "mock/video"))
        .cloned()
        .expect("mock/video");
    assert_eq!(video["video"]["durations"], json!([4, 6, 8]));
    assert!(video["pricing"]["per_video_second"].as_f64().is_some());
    app.get("/ai/models?modality=audio", token)
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_query");
    app.get("/ai/models", None)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "missing_token");

    // The list is cached: a second call does not reach the upstream.
    let hits = app.mock.hits("GET /api/v1/models");
    app.get("/ai/models", token).await.expect(StatusCode::OK);
    assert_eq!(app.mock.hits("GET /api/v1/models"), hits);

    // Admins restrict the offer; other models are refused.
    app.put("/admin/models/allowed", Some(&user.access), json!({"models": []}))
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    let set = app
        .put(
            "/admin/models/allowed",
            Some(&admin.access),
            json!({"models": ["mock/chat", "mock/video"]}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(set.body["models"], json!(["mock/chat", "mock/video"]));
    assert_eq!(ids(&app.get("/ai/models", token).await.body), ["mock/chat"]);
    assert!(ids(&app.get("/ai/models?modality=image", token).await.body).is_empty());
    app.post("/ai/chat", token, ask("mock/chat-slow", "hi"))
        .await
        .expect_error(StatusCode::FORBIDDEN, "model_not_allowed");
    app.post(
        "/generate/image",
        token,
        json!({"model": "mock/image", "prompt": "x"}),
    )
    .await
    .expect_error(StatusCode::FORBIDDEN, "model_not_allowed");
    app.post("/ai/chat", token, ask("mock/chat", "hi"))
        .await
        .expect(StatusCode::OK);
    // The allow-list survives a restart; an empty one allows everything again.
    let app = app.restart().await;
    assert_eq!(
        app.get("/admin/models/allowed", Some(&admin.access)).await.body["models"],
        json!(["mock/chat", "mock/video"])
    );
    app.put(
        "/admin/models/allowed",
        Some(&admin.access),
        json!({"models": []}),
    )
    .await
    .expect(StatusCode::OK);
    app.post("/ai/chat", token, ask("mock/chat-slow", "hi"))
        .await
        .expect(StatusCode::OK);
}

#[tokio::test]
async fn chat_continues_stored_conversations() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let token = Some(user.access.as_str());

    let first = app
        .post("/ai/chat", token, json!({
            "model": "mock/chat", "temperature": 0.2, "max_tokens": 200,
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Name a river in Portugal"}],
        }))
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(first["model"], "mock/chat");
    assert_eq!(first["message"]["role"], "assistant");
    assert_eq!(first["message"]["status"], "complete");
    assert!(
        first["message"]["content"]
            .as_str()
            .is_some_and(|c| c.contains("Name a river in Portugal"))
    );
    assert!(first["usage"]["cost_usd"].as_f64().is_some_and(|c| c > 0.0));
    let sent = app.mock.last_body(CHAT).expect("sent upstream");
    assert_eq!(
        (sent["temperature"].clone(), sent["max_tokens"].clone()),
        (json!(0.2), json!(200))
    );
    let id = first["conversation_id"]
        .as_str()
        .expect("conversation id")
        .to_owned();

    app.post("/ai/chat", token, json!({"model": "mock/chat", "conversation_id": id, "messages": [{"role": "user", "content": "And in Spain?"}]}))
        .await
        .expect(StatusCode::OK);
    // The upstream saw the whole history.
    let sent = app.mock.last_body(CHAT).expect("sent upstream");
    let roles: Vec<&str> = sent["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["role"].as_str())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);

    let detail = app
        .get(&format!("/ai/conversations/{id}"), token)
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(detail["title"], "Name a river in Portugal");
    assert_eq!(detail["messages"].as_array().map(Vec::len), Some(5));

    let list = app
        .get("/ai/conversations", token)
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(list["conversations"][0]["id"], id.as_str());
    let renamed = app
        .send(
            reqwest::Method::PATCH,
            &format!("/ai/conversations/{id}"),
            token,
            Some(json!({"title": "Rivers"})),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(renamed.body["title"], "Rivers");
    app.send(
        reqwest::Method::PATCH,
        &format!("/ai/conversations/{id}"),
        token,
        Some(json!({"title": "  "})),
    )
    .await
    .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");

    // Another user sees none of it.
    let other = app.user().await;
    let theirs = Some(other.access.as_str());
    app.get(&format!("/ai/conversations/{id}"), theirs)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    app.send(
        reqwest::Method::PATCH,
        &format!("/ai/conversations/{id}"),
        theirs,
        Some(json!({"title": "mine"})),
    )
    .await
    .expect_error(StatusCode::NOT_FOUND, "not_found");
    app.delete(&format!("/ai/conversations/{id}"), theirs)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    app.post(
        "/ai/chat",
        theirs,
        json!({"model": "mock/chat", "conversation_id": id, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await
    .expect_error(StatusCode::NOT_FOUND, "not_found");
    assert_eq!(
        app.get("/ai/conversations", theirs).await.body["conversations"],
        json!([])
    );

    app.delete(&format!("/ai/conversations/{id}"), token)
        .await
        .expect(StatusCode::NO_CONTENT);
    app.get(&format!("/ai/conversations/{id}"), token)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn chat_input_is_validated() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let token = Some(user.access.as_str());
    for (body, what) in [
        (json!({"model": "mock/chat", "messages": []}), "no messages"),
        (
            json!({"model": "", "messages": [{"role": "user", "content": "x"}]}),
            "no model",
        ),
        (
            json!({"model": "mock/chat", "messages": [{"role": "wizard", "content": "x"}]}),
            "bad role",
        ),
        (
            json!({"model": "mock/chat", "messages": [{"role": "user", "content": "  "}]}),
            "empty content",
        ),
        (
            json!({"model": "mock/chat", "temperature": 3, "messages": [{"role": "user", "content": "x"}]}),
            "temperature",
        ),
        (
            json!({"model": "mock/chat", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}),
            "max_tokens",
        ),
    ] {
        let reply = app.post("/ai/chat", token, body).await;
        assert_eq!(
            (reply.status, reply.code()),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
            "{what}: {}",
            reply.text
        );
    }
    app.post(
        "/ai/chat",
        token,
        json!({"model": "mock/chat", "messages": [], "tools": []}),
    )
    .await
    .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    assert_eq!(app.mock.hits(CHAT), 0, "nothing invalid reached the upstream");
}

#[tokio::test]
async fn streamed_answers_arrive_as_events_with_usage_in_either_shape() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let whole = app
        .post(
            "/ai/chat",
            Some(&user.access),
            ask("mock/chat", "tell me about otters"),
        )
        .await
        .expect(StatusCode::OK)
        .body;
    for model in ["mock/chat", "mock/empty-usage-choices", "mock/no-done"] {
        let mut body = ask(model, "tell me about otters");
        body["stream"] = json!(true);
        let (status, events, raw) = app.chat_stream(&user.access, body).await;
        assert_eq!(status, StatusCode::OK, "{raw}");
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.first(), Some(&"start"), "{model}: {raw}");
        assert_eq!(names.last(), Some(&"done"), "{model}: {raw}");
        assert!(
            names.iter().filter(|n| **n == "delta").count() > 5,
            "{model}: delivered piece by piece"
        );
        let text: String = events
            .iter()
            .filter(|(n, _)| n == "delta")
            .filter_map(|(_, d)| d["content"].as_str())
            .collect();
        assert_eq!(
            text,
            whole["message"]["content"].as_str().unwrap_or_default(),
            "{model}"
        );
        let done = &events.last().expect("done").1;
        assert_eq!(done["finish_reason"], "stop", "{model}");
        assert!(
            done["usage"]["total_tokens"].as_u64().is_some_and(|t| t > 0),
            "{model}: usage read"
        );
        assert_eq!(done["message"]["status"], "complete");
        let conversation = events[0].1["conversation_id"]
            .as_str()
            .expect("conversation")
            .to_owned();
        let stored = app
            .get(&format!("/ai/conversations/{conversation}"), Some(&user.access))
            .await
            .body;
        assert_eq!(
            stored["messages"][1]["content"],
            text.as_str(),
            "{model}: the stored answer is the streamed one"
        );
    }
}

#[tokio::test]
async fn a_mid_stream_failure_becomes_an_error_event_and_a_failed_message() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let mut body = ask("mock/stream-error-midway", "hello there friend");
    body["stream"] = json!(true);
    let (status, events, raw) = app.chat_stream(&user.access, body).await;
    assert_eq!(status, StatusCode::OK);
    let (last, data) = events.last().expect("events");
    assert_eq!(last, "error", "{raw}");
    assert_eq!(data["error"]["code"], "upstream_unavailable");
    assert!(
        events.iter().any(|(n, _)| n == "delta"),
        "partial text arrived first"
    );
    let conversation = events[0].1["conversation_id"].as_str().expect("conversation");
    let stored = app
        .get(&format!("/ai/conversations/{conversation}"), Some(&user.access))
        .await
        .body;
    let answer = &stored["messages"][1];
    assert_eq!(answer["status"], "failed", "never marked complete");
    assert!(
        answer["content"].as_str().is_some_and(|c| !c.is_empty()),
        "the partial text is kept"
    );
    assert!(answer["error"].as_str().is_some_and(|e| e.contains("mid-stream")));
    let history = app.get("/generations?kind=chat", Some(&user.access)).await.body;
    assert_eq!(history["generations"][0]["status"], "failed");
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_the_upstream_and_is_recorded_as_aborted() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let mut body = ask("mock/chat-slow", "a long story please");
    body["stream"] = json!(true);
    let mut response = app
        .client
        .post(app.url("/ai/chat"))
        .bearer_auth(&user.access)
        .json(&body)
        .send()
        .await
        .expect("sent");
    // Read a few deltas, then hang up.
    let mut seen = String::new();
    while seen.matches("event: delta").count() < 3 {
        let chunk = response.chunk().await.expect("chunk").expect("more");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let conversation = crate::helpers::parse_sse(&seen)[0].1["conversation_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let hung_up = std::time::Instant::now();
    drop(response);
    assert!(
        app.mock.wait_for_disconnects(1, Duration::from_secs(3)).await,
        "the upstream saw its connection close"
    );
    assert!(
        hung_up.elapsed() < Duration::from_secs(1),
        "cancelled within a second: {:?}",
        hung_up.elapsed()
    );

    // The partial answer and its usage are stored as aborted.
    let mut stored = Value::Null;
    for _ in 0..50 {
        stored = app
            .get(&format!("/ai/conversations/{conversation}"), Some(&user.access))
            .await
            .body;
        if stored["messages"].as_array().is_some_and(|m| m.len() == 2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(stored["messages"][1]["status"], "aborted", "{stored}");
    let history = app.get("/generations?kind=chat", Some(&user.access)).await.body;
    let record = &history["generations"][0];
    assert_eq!(record["status"], "aborted");
    assert!(
        record["completion_tokens"].as_u64().is_some_and(|t| t >= 3),
        "partial usage counted: {record}"
    );
}

#[tokio::test]
async fn upstream_failures_map_to_clear_statuses() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let token = Some(user.access.as_str());
    for (model, status, code) in [
        ("mock/error-502", StatusCode::BAD_GATEWAY, "upstream_unavailable"),
        ("mock/error-500", StatusCode::BAD_GATEWAY, "upstream_unavailable"),
        (
            "mock/error-402",
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream_payment_required",
        ),
        ("mock/error-400", StatusCode::BAD_REQUEST, "invalid_request"),
        (
            "mock/error-422",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        ("mock/error-403", StatusCode::FORBIDDEN, "upstream_refused"),
        ("mock/error-404", StatusCode::NOT_FOUND, "model_unavailable"),
        ("mock/error-408", StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
        (
            "mock/error-in-200",
            StatusCode::BAD_GATEWAY,
            "upstream_unavailable",
        ),
    ] {
        for stream in [false, true] {
            let mut body = ask(model, "x");
            body["stream"] = json!(stream);
            let reply = app.post("/ai/chat", token, body).await;
            assert_eq!(
                (reply.status, reply.code()),
                (status, code),
                "{model} stream={stream}: {}",
                reply.text
            );
        }
    }
    let invalid = app
        .post(
            "/generate/text",
            token,
            json!({"model": "mock/error-400", "prompt": "x"}),
        )
        .await;
    assert!(
        invalid.text.contains("rejects every request"),
        "the upstream's words are kept: {}",
        invalid.text
    );

    let limited = app
        .post("/ai/chat", token, ask("mock/error-429", "x"))
        .await
        .expect_error(StatusCode::TOO_MANY_REQUESTS, "upstream_rate_limited");
    assert_eq!(limited.headers["retry-after"], "1");

    // A failed generation still leaves a usage record.
    let history = app.get("/generations?kind=text", token).await.body;
    assert_eq!(history["generations"][0]["status"], "failed");
}

/// The question is stored while the upstream is asked; when the upstream
/// fails, the failure is stored after it, in a new conversation and in a
/// continued one, streamed or not.
#[tokio::test]
async fn a_question_the_upstream_fails_is_kept_with_the_failure() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let token = Some(user.access.as_str());
    for stream in [false, true] {
        let mut body = ask("mock/error-502", "Is the river long?");
        body["stream"] = json!(stream);
        app.post("/ai/chat", token, body)
            .await
            .expect_error(StatusCode::BAD_GATEWAY, "upstream_unavailable");
        let list = app
            .get("/ai/conversations", token)
            .await
            .expect(StatusCode::OK)
            .body;
        let id = list["conversations"][0]["id"]
            .as_str()
            .expect("a conversation")
            .to_owned();
        let mut follow_up = ask("mock/error-502", "And wide?");
        follow_up["conversation_id"] = json!(id);
        follow_up["stream"] = json!(stream);
        app.post("/ai/chat", token, follow_up)
            .await
            .expect_error(StatusCode::BAD_GATEWAY, "upstream_unavailable");

        let detail = app
            .get(&format!("/ai/conversations/{id}"), token)
            .await
            .expect(StatusCode::OK)
            .body;
        let turns: Vec<(&str, &str, &str)> = detail["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| {
                (
                    m["role"].as_str().unwrap_or_default(),
                    m["status"].as_str().unwrap_or_default(),
                    m["content"].as_str().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            turns,
            [
                ("user", "complete", "Is the river long?"),
                ("assistant", "failed", ""),
                ("user", "complete", "And wide?"),
                ("assistant", "failed", ""),
            ],
            "stream={stream}"
        );
    }
}

#[tokio::test]
async fn an_unreachable_slow_or_keyless_upstream() {
    let slow = TestApp::spawn_custom(
        MockConfig {
            slow_first_byte: Duration::from_secs(3),
            ..MockConfig::default()
        },
        |s| {
            s.upstream.first_byte_timeout = Duration::from_millis(300);
        },
    )
    .await;
    let user = slow.user().await;
    slow.post(
        "/generate/text",
        Some(&user.access),
        json!({"model": "mock/slow-first-byte", "prompt": "x"}),
    )
    .await
    .expect_error(StatusCode::GATEWAY_TIMEOUT, "upstream_timeout");

    let keyless = TestApp::spawn_with(|s| s.upstream.api_key = None).await;
    let user = keyless.user().await;
    keyless
        .post("/ai/chat", Some(&user.access), ask("mock/chat", "x"))
        .await
        .expect_error(StatusCode::SERVICE_UNAVAILABLE, "upstream_not_configured");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let down = TestApp::spawn_with(|s| s.upstream.base_url = format!("http://127.0.0.1:{port}/api/v1")).await;
    let user = down.user().await;
    down.post("/ai/chat", Some(&user.access), ask("mock/chat", "x"))
        .await
        .expect_error(StatusCode::BAD_GATEWAY, "upstream_unavailable");
    down.get("/ai/models", Some(&user.access))
        .await
        .expect_error(StatusCode::BAD_GATEWAY, "upstream_unavailable");
}

#[tokio::test]
async fn text_generation_with_a_system_prompt() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let reply = app
        .post(
            "/generate/text",
            Some(&user.access),
            json!({"model": "mock/chat", "prompt": "Summarise Hamlet", "system": "one line"}),
        )
        .await
        .expect(StatusCode::OK)
        .body;
    assert!(
        reply["text"]
            .as_str()
            .is_some_and(|t| t.contains("Summarise Hamlet"))
    );
    assert_eq!(reply["model"], "mock/chat");
    let sent = app.mock.last_body(CHAT).expect("sent");
    assert_eq!(
        sent["messages"][0],
        json!({"role": "system", "content": "one line"})
    );
    app.post(
        "/generate/text",
        Some(&user.access),
        json!({"model": "mock/chat", "prompt": ""}),
    )
    .await
    .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
}

#[tokio::test]
async fn images_are_stored_as_real_pngs_for_their_owner_only() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let reply = app
        .post(
            "/generate/image",
            Some(&user.access),
            json!({"model": "mock/image", "prompt": "a lighthouse", "aspect_ratio": "16:9", "n": 2}),
        )
        .await
        .expect(StatusCode::OK)
        .body;
    let images = reply["images"].as_array().expect("images");
    assert_eq!(images.len(), 2);
    assert!(reply["usage"]["cost_usd"].as_f64().is_some_and(|c| c > 0.0));
    let url = images[0]["url"].as_str().expect("url");
    let response = app.media(url, &user.access).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "image/png");
    let bytes = response.bytes().await.expect("bytes");
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes.to_vec()));
    let reader = decoder.read_info().expect("a valid PNG");
    let info = reader.info();
    assert!(
        info.width > info.height,
        "16:9 is landscape: {}x{}",
        info.width,
        info.height
    );

    let other = app.user().await;
    let denied = crate::helpers::read(app.media(url, &other.access).await).await;
    denied.expect_error(StatusCode::NOT_FOUND, "not_found");
    let admin = app.admin().await;
    assert_eq!(
        app.media(url, &admin.access).await.status(),
        StatusCode::OK,
        "admins may look"
    );
    assert_eq!(
        app.client.get(app.url(url)).send().await.expect("sent").status(),
        StatusCode::UNAUTHORIZED
    );

    for (body, what) in [
        (json!({"model": "mock/image", "prompt": "x", "n": 9}), "n"),
        (
            json!({"model": "mock/image", "prompt": "x", "aspect_ratio": "7:3"}),
            "ratio",
        ),
        (json!({"model": "mock/image", "prompt": ""}), "prompt"),
    ] {
        let reply = app.post("/generate/image", Some(&user.access), body).await;
        assert_eq!(reply.code(), "invalid_request", "{what}");
    }

    // The chat endpoint makes images too, for servers without /images.
    let chat_app =
        TestApp::spawn_with(|s| s.upstream.image_endpoint = atelier::config::ImageEndpoint::Chat).await;
    let user = chat_app.user().await;
    let reply = chat_app
        .post(
            "/generate/image",
            Some(&user.access),
            json!({"model": "mock/image-text", "prompt": "a cat"}),
        )
        .await
        .expect(StatusCode::OK)
        .body;
    let url = reply["images"][0]["url"].as_str().expect("url");
    let bytes = chat_app
        .media(url, &user.access)
        .await
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(&bytes[..4], b"\x89PNG");
    let sent = chat_app.mock.last_body(CHAT).expect("sent");
    assert_eq!(sent["modalities"], json!(["image", "text"]));
}

#[tokio::test]
async fn history_lists_every_kind_newest_first_with_costs() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let token = Some(user.access.as_str());
    app.post("/ai/chat", token, ask("mock/chat", "one"))
        .await
        .expect(StatusCode::OK);
    app.post(
        "/generate/text",
        token,
        json!({"model": "mock/chat", "prompt": "two"}),
    )
    .await
    .expect(StatusCode::OK);
    app.post(
        "/generate/image",
        token,
        json!({"model": "mock/image", "prompt": "three"}),
    )
    .await
    .expect(StatusCode::OK);

    let all = app.get("/generations", token).await.expect(StatusCode::OK).body;
    let kinds: Vec<&str> = all["generations"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|g| g["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["image", "text", "chat"]);
    let image = &all["generations"][0];
    assert_eq!(image["prompt"], "three");
    assert!(image["cost_usd"].as_f64().is_some_and(|c| c > 0.0));
    assert_eq!(image["media"].as_array().map(Vec::len), Some(1));

    let page = app.get("/generations?limit=2", token).await.body;
    let cursor = page["next_cursor"].as_str().expect("cursor");
    let rest = app
        .get(&format!("/generations?limit=2&cursor={cursor}"), token)
        .await
        .body;
    assert_eq!(rest["generations"][0]["kind"], "chat");
    assert!(rest["next_cursor"].is_null());
    let texts = app.get("/generations?kind=text", token).await.body;
    assert_eq!(texts["generations"].as_array().map(Vec::len), Some(1));

    let other = app.user().await;
    assert_eq!(
        app.get("/generations", Some(&other.access)).await.body["generations"],
        json!([])
    );
}

#[tokio::test]
async fn deleting_a_user_removes_their_media_files() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let user = app.user().await;
    app.post(
        "/generate/image",
        Some(&user.access),
        json!({"model": "mock/image", "prompt": "x", "n": 2}),
    )
    .await
    .expect(StatusCode::OK);
    let folder = std::path::Path::new(&app.settings.media.dir)
        .join("media")
        .join(&user.id);
    assert_eq!(
        std::fs::read_dir(&folder).map(|d| d.count()).unwrap_or(0),
        2,
        "two files stored"
    );
    app.delete(&format!("/users/{}", user.id), Some(&admin.access))
        .await
        .expect(StatusCode::NO_CONTENT);
    let left = std::fs::read_dir(&folder).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "the files went with the account");
}

#[tokio::test]
async fn admins_see_the_upstream_key_status() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    app.post(
        "/generate/text",
        Some(&admin.access),
        json!({"model": "mock/chat", "prompt": "spend a little"}),
    )
    .await
    .expect(StatusCode::OK);
    let status = app
        .get("/admin/upstream", Some(&admin.access))
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(status["configured"], true);
    assert_eq!(status["base_url"], app.mock.base_url().as_str());
    assert!(
        status["key"]["usage"].as_f64().is_some_and(|u| u > 0.0),
        "{status}"
    );
    let user = app.user().await;
    app.get("/admin/upstream", Some(&user.access))
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");

    let keyless = TestApp::spawn_with(|s| s.upstream.api_key = None).await;
    let admin = keyless.admin().await;
    let status = keyless
        .get("/admin/upstream", Some(&admin.access))
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(status["configured"], false);
    assert!(
        status["error"]
            .as_str()
            .is_some_and(|e| e.contains("OPENROUTER_API_KEY")),
        "{status}"
    );
}
