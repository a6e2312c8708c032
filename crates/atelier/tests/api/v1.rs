//! The OpenAI-compatible `/v1`: bodies, stream chunks and errors in OpenAI's
//! shapes, with an API key. (The official Python SDK is driven against it by
//! `e2e/sdk`.)

use std::time::Duration;

use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestUser};

async fn keyed(app: &TestApp) -> (TestUser, String) {
    let user = app.user().await;
    let (_, key) = app.api_key(&user, json!({"name": "sdk"})).await;
    (user, key)
}

/// The `data:` payloads of an OpenAI event stream, `[DONE]` included.
fn data_lines(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

#[track_caller]
fn assert_openai_error(reply: &crate::helpers::Reply, status: StatusCode, kind: &str) {
    assert_eq!(reply.status, status, "{}", reply.text);
    let error = &reply.body["error"];
    assert_eq!(error["type"], kind, "{}", reply.text);
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{}",
        reply.text
    );
    assert!(error["code"].is_string(), "{}", reply.text);
    assert!(error.as_object().unwrap().contains_key("param"), "{}", reply.text);
}

#[tokio::test]
async fn models_are_listed_with_aliases_and_only_those_the_role_may_use() {
    let app = TestApp::spawn_with(|s| {
        s.routing = toml::from_str(
            r#"
            [strategies.fast]
            action = "chat"
            models = ["mock/chat"]
            [aliases]
            "atelier/chat-default" = "fast"
            [roles]
            user = ["atelier/*", "mock/chat", "mock/image"]
            "#,
        )
        .unwrap();
    })
    .await;
    let (_, key) = keyed(&app).await;
    let models = app.get("/v1/models", Some(&key)).await.expect(StatusCode::OK);
    assert_eq!(models.body["object"], "list");
    let ids: Vec<&str> = models.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["object"], "model");
            assert!(m["owned_by"].is_string() && m["created"].is_i64());
            m["id"].as_str().unwrap()
        })
        .collect();
    assert_eq!(ids, ["atelier/chat-default", "mock/chat", "mock/image"]);

    // The admin role is not restricted.
    let admin = app.admin().await;
    let (_, admin_key) = app.api_key(&admin, json!({"name": "ops"})).await;
    let all = app
        .get("/v1/models", Some(&admin_key))
        .await
        .expect(StatusCode::OK);
    assert!(all.body["data"].as_array().unwrap().len() > 5, "{}", all.text);

    // A user asking for a model outside their role's list is refused before the upstream.
    let before = app.mock.model_hits("mock/chat-slow");
    let refused = app.v1_chat(&key, "mock/chat-slow", "hi").await;
    assert_openai_error(&refused, StatusCode::FORBIDDEN, "permission_error");
    assert_eq!(refused.body["error"]["code"], "model_not_allowed");
    assert_eq!(app.mock.model_hits("mock/chat-slow"), before);
}

#[tokio::test]
async fn a_chat_completion_is_openais_shape_and_passes_parameters_through() {
    let app = TestApp::spawn().await;
    let (user, key) = keyed(&app).await;
    let reply = app
        .post(
            "/v1/chat/completions",
            Some(&key),
            json!({
                "model": "mock/chat",
                "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}],
                "temperature": 0.3,
                "max_tokens": 50,
                "top_p": 0.9,
                "user": "end-user-7",
            }),
        )
        .await
        .expect(StatusCode::OK);
    let body = &reply.body;
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "mock/chat");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert!(
        body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("hello there")
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert!(body["usage"]["total_tokens"].as_u64().unwrap() > 0);
    assert_eq!(reply.headers["x-atelier-model"], "mock/chat");

    // Every parameter reached the upstream as the client set it.
    let sent = app.mock.last_body("POST /api/v1/chat/completions").unwrap();
    assert_eq!(sent["temperature"], 0.3);
    assert_eq!(sent["max_tokens"], 50);
    assert_eq!(sent["top_p"], 0.9);
    assert_eq!(sent["user"], "end-user-7");
    assert_eq!(sent["messages"][0]["content"], "be brief");

    // The request is in the user's history with its cost, and nothing else was stored.
    let mut history = Value::Null;
    for _ in 0..100 {
        history = app.get("/generations?kind=chat", Some(&user.access)).await.body;
        if history["generations"].as_array().is_some_and(|g| !g.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let record = &history["generations"][0];
    assert_eq!(record["status"], "succeeded", "{history}");
    assert_eq!(record["model_served"], "mock/chat");
    assert!(record["cost_usd"].as_f64().unwrap() > 0.0);
    let conversations = app.get("/ai/conversations", Some(&user.access)).await.body;
    assert_eq!(conversations["conversations"], json!([]));
}

#[tokio::test]
async fn a_streamed_completion_sends_openai_chunks_and_done() {
    let app = TestApp::spawn().await;
    let (_, key) = keyed(&app).await;
    let whole = app
        .v1_chat(&key, "mock/chat", "stream me")
        .await
        .expect(StatusCode::OK);
    let (status, body) = app
        .v1_chat_stream(
            &key,
            json!({"model": "mock/chat", "stream": true, "messages": [{"role": "user", "content": "stream me"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let lines = data_lines(&body);
    assert_eq!(lines.last().map(String::as_str), Some("[DONE]"), "{body}");
    let chunks: Vec<Value> = lines[..lines.len() - 1]
        .iter()
        .map(|l| serde_json::from_str(l).expect("each chunk is JSON"))
        .collect();
    assert!(chunks.len() > 3);
    let mut text = String::new();
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk", "{chunk}");
        if let Some(piece) = chunk["choices"][0]["delta"]["content"].as_str() {
            text.push_str(piece);
        }
    }
    assert_eq!(
        text,
        whole.body["choices"][0]["message"]["content"].as_str().unwrap()
    );
    assert!(
        chunks
            .iter()
            .any(|c| c["usage"]["total_tokens"].as_u64().is_some()),
        "usage chunk"
    );
}

#[tokio::test]
async fn a_stream_that_fails_midway_ends_with_an_error_chunk() {
    let app = TestApp::spawn_with(|s| s.upstream.max_retries = 0).await;
    let (_, key) = keyed(&app).await;
    let (status, body) = app
        .v1_chat_stream(
            &key,
            json!({"model": "mock/stream-error-midway", "stream": true, "messages": [{"role": "user", "content": "go"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let lines = data_lines(&body);
    assert_eq!(lines.last().map(String::as_str), Some("[DONE]"));
    let error: Value = serde_json::from_str(&lines[lines.len() - 2]).unwrap();
    assert!(
        error["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(error["error"]["type"].is_string());
}

#[tokio::test]
async fn bad_requests_and_upstream_refusals_are_openai_errors() {
    let app = TestApp::spawn_with(|s| s.upstream.max_retries = 0).await;
    let (_, key) = keyed(&app).await;
    let not_json = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    let not_json = crate::helpers::read(not_json).await;
    assert_openai_error(&not_json, StatusCode::BAD_REQUEST, "invalid_request_error");
    // Each way a body is not a chat request is named, with serde's position.
    for (content_type, body, message) in [
        (
            "application/json",
            &b"{not json"[..],
            "Failed to parse the request body as JSON: key must be a string at line 1 column 2",
        ),
        (
            "application/json",
            b"{\"model\": \"m\"} []",
            "Failed to parse the request body as JSON: trailing characters at line 1 column 16",
        ),
        (
            "application/json",
            b"{\"model\": \"\xff\"}",
            "Failed to parse the request body as JSON: invalid unicode code point at line 1 column 12",
        ),
        ("application/json", b"[1, 2]", "the body must be a JSON object"),
        (
            "text/plain",
            b"{}",
            "Expected request with `Content-Type: application/json`",
        ),
    ] {
        let refused = app
            .client
            .post(app.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let refused = crate::helpers::read(refused).await;
        assert_openai_error(&refused, StatusCode::BAD_REQUEST, "invalid_request_error");
        assert_eq!(refused.body["error"]["message"], message, "{body:?}");
    }
    // A body over the 32 MiB limit is refused as too large. One byte over: the
    // server stops reading at that byte, so the client has sent it all and
    // reads the answer (a larger body would race the server's close).
    let huge = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(vec![b' '; (32 << 20) + 1])
        .send()
        .await
        .unwrap();
    let huge = crate::helpers::read(huge).await;
    assert_openai_error(&huge, StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error");
    assert_eq!(huge.body["error"]["code"], "body_too_large", "{}", huge.text);
    assert_eq!(
        huge.body["error"]["message"],
        "the request body is larger than the 32 MiB limit"
    );
    // A body with a `+json` type is JSON.
    let suffixed = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .header("content-type", "application/vnd.api+json; charset=utf-8")
        .body(json!({"model": "mock/chat", "messages": [{"role": "user", "content": "x"}]}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(suffixed.status(), StatusCode::OK);

    let no_model = app
        .post(
            "/v1/chat/completions",
            Some(&key),
            json!({"messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_openai_error(
        &no_model,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request_error",
    );
    let no_messages = app
        .post("/v1/chat/completions", Some(&key), json!({"model": "mock/chat"}))
        .await;
    assert_openai_error(
        &no_messages,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request_error",
    );

    let refused = app.v1_chat(&key, "mock/error-400", "x").await;
    assert_openai_error(&refused, StatusCode::BAD_REQUEST, "invalid_request_error");
    let outage = app.v1_chat(&key, "mock/error-502", "x").await;
    assert_openai_error(&outage, StatusCode::BAD_GATEWAY, "api_error");

    let missing = app.get("/v1/nothing-here", Some(&key)).await;
    assert_openai_error(&missing, StatusCode::NOT_FOUND, "not_found_error");
    let anonymous = app.get("/v1/models", None).await;
    assert_openai_error(&anonymous, StatusCode::UNAUTHORIZED, "authentication_error");
}

#[tokio::test]
async fn images_come_as_base64_or_as_signed_links_that_need_no_key() {
    let app = TestApp::spawn().await;
    let (_, key) = keyed(&app).await;
    let b64 = app
        .post(
            "/v1/images/generations",
            Some(&key),
            json!({"model": "mock/image", "prompt": "a lighthouse", "response_format": "b64_json", "size": "1792x1024"}),
        )
        .await
        .expect(StatusCode::OK);
    let data = b64.body["data"][0]["b64_json"].as_str().expect("b64_json");
    let png = base64::engine::general_purpose::STANDARD.decode(data).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(b64.body["created"].is_i64());
    let sent = app.mock.last_body("POST /api/v1/images").unwrap();
    assert_eq!(
        sent["aspect_ratio"], "16:9",
        "the size became the nearest aspect ratio: {sent}"
    );

    let linked = app
        .post(
            "/v1/images/generations",
            Some(&key),
            json!({"model": "mock/image", "prompt": "a lighthouse", "size": "1792x1024"}),
        )
        .await
        .expect(StatusCode::OK);
    let url = linked.body["data"][0]["url"].as_str().expect("url");
    assert!(url.starts_with(&app.url("/media/signed/")), "{url}");
    let fetched = app.client.get(url).send().await.unwrap();
    assert_eq!(fetched.status(), StatusCode::OK);
    assert_eq!(fetched.headers()["content-type"], "image/png");
    assert_eq!(
        &fetched.bytes().await.unwrap()[..],
        &png[..],
        "the same deterministic image"
    );

    // A changed signature or expiry is refused.
    let (base, query) = url.split_once('?').unwrap();
    let tampered_expiry = query.replace("expires=", "expires=9");
    let tampered = app
        .client
        .get(format!("{base}?{tampered_expiry}"))
        .send()
        .await
        .unwrap();
    assert_eq!(tampered.status(), StatusCode::FORBIDDEN);
    let other_item = format!("{}/{}?{query}", app.url("/media/signed"), uuid::Uuid::now_v7());
    assert_eq!(
        app.client.get(other_item).send().await.unwrap().status(),
        StatusCode::FORBIDDEN
    );

    let bad_format = app
        .post(
            "/v1/images/generations",
            Some(&key),
            json!({"model": "mock/image", "prompt": "x", "response_format": "gif"}),
        )
        .await;
    assert_openai_error(&bad_format, StatusCode::BAD_REQUEST, "invalid_request_error");
}

#[tokio::test]
async fn a_video_is_created_polled_and_downloaded() {
    let app = TestApp::spawn().await;
    let (_, key) = keyed(&app).await;
    let created = app
        .post(
            "/v1/videos",
            Some(&key),
            json!({"model": "mock/video", "prompt": "waves", "seconds": "4", "size": "1280x720"}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(created.body["object"], "video");
    assert_eq!(created.body["status"], "queued");
    assert_eq!(created.body["seconds"], "4");
    let id = created.body["id"].as_str().unwrap().to_owned();
    let sent_upstream = loop_until(&app, &key, &id, "completed").await;
    assert_eq!(sent_upstream["progress"], 100);
    assert!(sent_upstream["completed_at"].is_i64());
    let upstream = app.mock.last_body("POST /api/v1/videos").unwrap();
    assert_eq!(
        (upstream["resolution"].as_str(), upstream["aspect_ratio"].as_str()),
        (Some("720p"), Some("16:9"))
    );

    let content = app
        .client
        .get(app.url(&format!("/v1/videos/{id}/content")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(content.status(), StatusCode::OK);
    assert_eq!(content.headers()["content-type"], "video/mp4");
    assert_eq!(&content.bytes().await.unwrap()[4..8], b"ftyp");

    // Someone else's video does not exist for this key.
    let (_, other) = keyed(&app).await;
    let theirs = app.get(&format!("/v1/videos/{id}"), Some(&other)).await;
    assert_openai_error(&theirs, StatusCode::NOT_FOUND, "not_found_error");
    let nonsense = app.get("/v1/videos/not-an-id", Some(&key)).await;
    assert_openai_error(&nonsense, StatusCode::NOT_FOUND, "not_found_error");
}

#[tokio::test]
async fn a_video_that_is_not_ready_has_no_content_yet() {
    let app = TestApp::spawn_custom(
        atelier_mock_upstream::MockConfig {
            video_polls_per_state: 1000,
            ..Default::default()
        },
        |_| {},
    )
    .await;
    let (_, key) = keyed(&app).await;
    let created = app
        .post(
            "/v1/videos",
            Some(&key),
            json!({"model": "mock/video", "prompt": "slow waves"}),
        )
        .await
        .expect(StatusCode::OK);
    let id = created.body["id"].as_str().unwrap();
    let early = app.get(&format!("/v1/videos/{id}/content"), Some(&key)).await;
    assert_openai_error(&early, StatusCode::CONFLICT, "invalid_request_error");
    assert_eq!(early.body["error"]["code"], "video_not_ready");
}

async fn loop_until(app: &TestApp, key: &str, id: &str, status: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let video = app
            .get(&format!("/v1/videos/{id}"), Some(key))
            .await
            .expect(StatusCode::OK)
            .body;
        if video["status"] == status {
            return video;
        }
        assert!(video["status"] != "failed", "{video}");
        assert!(tokio::time::Instant::now() < deadline, "still {video}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_video_from_an_uploaded_reference_image_sends_it_as_the_first_frame() {
    let app = TestApp::spawn().await;
    let (_, key) = keyed(&app).await;
    let image = app
        .post(
            "/v1/images/generations",
            Some(&key),
            json!({"model": "mock/image", "prompt": "a harbour", "response_format": "b64_json"}),
        )
        .await
        .expect(StatusCode::OK);
    let b64 = image.body["data"][0]["b64_json"].as_str().unwrap().to_owned();
    let png = base64::engine::general_purpose::STANDARD.decode(&b64).unwrap();
    // As the SDKs send it: a multipart form with the image as `input_reference`.
    let form = reqwest::multipart::Form::new()
        .text("model", "mock/video")
        .text("prompt", "boats sail out")
        .text("seconds", "4")
        .part(
            "input_reference",
            reqwest::multipart::Part::bytes(png)
                .file_name("harbour.png")
                .mime_str("image/png")
                .unwrap(),
        );
    let response = app
        .client
        .post(app.url("/v1/videos"))
        .bearer_auth(&key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let created = crate::helpers::read(response).await.expect(StatusCode::OK);
    assert_eq!(created.body["seconds"], "4");
    let sent = app.mock.last_body("POST /api/v1/videos").unwrap();
    assert_eq!(sent["frame_images"][0]["frame_type"], "first_frame");
    assert_eq!(
        sent["frame_images"][0]["image_url"]["url"],
        format!("data:image/png;base64,{b64}")
    );
    assert_eq!(sent["duration"], 4);

    // Something that is not an image is refused before the upstream.
    let form = reqwest::multipart::Form::new()
        .text("model", "mock/video")
        .text("prompt", "x")
        .part(
            "input_reference",
            reqwest::multipart::Part::bytes(b"not an image".to_vec()).file_name("a.png"),
        );
    let response = app
        .client
        .post(app.url("/v1/videos"))
        .bearer_auth(&key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let refused = crate::helpers::read(response).await;
    assert_openai_error(
        &refused,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "invalid_request_error",
    );
    assert_eq!(app.mock.hits("POST /api/v1/videos"), 1);
}
