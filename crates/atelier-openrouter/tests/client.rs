//! The client against the mock upstream: every trap of the reference, over real HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::time::Duration;

use atelier_mock_upstream::{MockConfig, MockUpstream};
use atelier_openrouter::*;
use futures_util::TryStreamExt;

const CHAT: &str = "POST /api/v1/chat/completions";

async fn setup(config: MockConfig) -> (MockUpstream, Client) {
    let mock = MockUpstream::start(config).await.expect("mock starts");
    let mut cfg = Config::new(
        mock.base_url().parse().expect("url"),
        Some(mock.api_key().to_owned()),
    );
    cfg.retry_base_delay = Duration::from_millis(10);
    let client = Client::new(cfg).expect("client");
    (mock, client)
}

fn chat(model: &str, prompt: &str) -> ChatRequest {
    ChatRequest {
        model: model.into(),
        messages: vec![Message::new("system", "be brief"), Message::new("user", prompt)],
        ..ChatRequest::default()
    }
}

/// Reads a stream to its end: the text, the last finish reason, the usage, whether
/// `[DONE]` came, and the error that ended it if one did.
async fn drain(
    mut stream: ChatStream,
) -> (String, Option<String>, Option<Usage>, bool, Option<UpstreamError>) {
    let (mut text, mut finish, mut usage, mut done) = (String::new(), None, None, false);
    while let Some(event) = stream.next().await {
        match event {
            Ok(StreamEvent::Chunk(chunk)) => {
                text.push_str(chunk.content());
                if let Some(reason) = chunk.finish_reason() {
                    finish = Some(reason.to_owned());
                }
                if chunk.usage.is_some() {
                    usage = chunk.usage.clone();
                }
            }
            Ok(StreamEvent::Done) => done = true,
            Err(e) => return (text, finish, usage, done, Some(e)),
        }
    }
    (text, finish, usage, done, None)
}

#[tokio::test]
async fn chat_answers_deterministically_with_usage_and_the_served_model() {
    let (mock, client) = setup(MockConfig::default()).await;
    let a = client
        .chat(&chat("mock/chat", "name three rivers"))
        .await
        .expect("chat");
    let b = client
        .chat(&chat("mock/chat", "name three rivers"))
        .await
        .expect("chat");
    assert_eq!(a.text(), b.text());
    assert!(a.text().contains("name three rivers"), "{}", a.text());
    assert_eq!(a.model, "mock/chat");
    assert!(a.id.starts_with("gen-"));
    let usage = a.usage.expect("usage");
    assert!(usage.prompt_tokens > 0 && usage.completion_tokens > 0);
    assert!(usage.cost.is_some_and(|c| c > 0.0));
    let sent = mock.last_body(CHAT).expect("request seen");
    assert_eq!(sent["messages"][0]["role"], "system");
    assert!(sent.get("stream").is_none(), "stream omitted when false");
}

#[tokio::test]
async fn streams_skip_keepalives_and_read_both_usage_shapes() {
    let (_mock, client) = setup(MockConfig::default()).await;
    let full = client
        .chat(&chat("mock/chat", "tell me about otters"))
        .await
        .expect("chat")
        .text();
    for model in ["mock/chat", "mock/empty-usage-choices"] {
        let stream = client
            .chat_stream(&chat(model, "tell me about otters"))
            .await
            .expect("stream");
        let (text, finish, usage, done, error) = drain(stream).await;
        assert!(error.is_none(), "{model}: {error:?}");
        assert_eq!(text, full, "{model}: the streamed text is the whole answer");
        assert_eq!(
            finish.as_deref(),
            Some("stop"),
            "{model}: the finish reason survives the usage chunk"
        );
        assert!(usage.is_some_and(|u| u.total_tokens > 0), "{model}: usage read");
        assert!(done, "{model}");
    }
}

#[tokio::test]
async fn a_stream_without_done_still_ends_cleanly() {
    let (_mock, client) = setup(MockConfig::default()).await;
    let stream = client
        .chat_stream(&chat("mock/no-done", "hello"))
        .await
        .expect("stream");
    let (text, finish, usage, done, error) = drain(stream).await;
    assert!(error.is_none() && !done);
    assert!(!text.is_empty() && finish.as_deref() == Some("stop") && usage.is_some());
}

#[tokio::test]
async fn a_mid_stream_error_is_reported_after_the_partial_text() {
    let (_mock, client) = setup(MockConfig::default()).await;
    let stream = client
        .chat_stream(&chat("mock/stream-error-midway", "hello there"))
        .await
        .expect("stream");
    let (text, _, _, _, error) = drain(stream).await;
    assert!(!text.is_empty(), "some tokens arrived first");
    match error {
        Some(UpstreamError::MidStream { code, message }) => {
            assert_eq!(code.as_deref(), Some("502"));
            assert!(message.contains("mid-stream"), "{message}");
        }
        other => panic!("expected a mid-stream error, got {other:?}"),
    }
}

#[tokio::test]
async fn errors_keep_status_message_and_retry_after() {
    let (mock, client) = setup(MockConfig::default()).await;
    let err = client.chat(&chat("mock/error-400", "x")).await.expect_err("400");
    assert_eq!(err.status(), Some(400));
    assert!(err.to_string().contains("rejects every request"), "{err}");
    assert_eq!(mock.hits(CHAT), 1, "a 400 is not retried");

    let err = client.chat(&chat("mock/error-402", "x")).await.expect_err("402");
    assert_eq!(err.status(), Some(402));

    let err = client
        .chat(&chat("mock/error-in-200", "x"))
        .await
        .expect_err("error in a 200");
    assert_eq!(err.status(), Some(500), "the status comes from the body's code");

    let err = client
        .chat_stream(&chat("mock/error-502", "x"))
        .await
        .expect_err("502 before streaming");
    assert_eq!(err.status(), Some(502));
    assert!(
        err.to_string().contains("upstream connect error"),
        "provider detail kept: {err}"
    );
}

#[tokio::test]
async fn transient_failures_are_retried_with_backoff() {
    let (mock, client) = setup(MockConfig::default()).await;
    let before = mock.hits(CHAT);
    client
        .chat(&chat("mock/error-502", "x"))
        .await
        .expect_err("still 502");
    assert_eq!(mock.hits(CHAT) - before, 3, "one attempt and two retries");

    // 429 with Retry-After: 1 is waited for and retried.
    let started = std::time::Instant::now();
    let before = mock.hits(CHAT);
    let err = client.chat(&chat("mock/error-429", "x")).await.expect_err("429");
    assert_eq!(err.status(), Some(429));
    assert_eq!(err.retry_after(), Some(Duration::from_secs(1)));
    assert_eq!(mock.hits(CHAT) - before, 3);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "Retry-After honoured"
    );
}

#[tokio::test]
async fn the_first_byte_limit_applies() {
    let config = MockConfig {
        slow_first_byte: Duration::from_secs(2),
        ..MockConfig::default()
    };
    let mock = MockUpstream::start(config).await.expect("mock");
    let mut cfg = Config::new(
        mock.base_url().parse().expect("url"),
        Some(mock.api_key().to_owned()),
    );
    cfg.first_byte_timeout = Duration::from_millis(300);
    let client = Client::new(cfg).expect("client");
    let err = client
        .chat(&chat("mock/slow-first-byte", "x"))
        .await
        .expect_err("timeout");
    assert!(
        matches!(err, UpstreamError::Timeout(TimeoutKind::FirstByte)),
        "{err:?}"
    );
}

#[tokio::test]
async fn auth_failures_and_missing_keys() {
    let mock = MockUpstream::start(MockConfig::default()).await.expect("mock");
    let wrong = Client::new(Config::new(
        mock.base_url().parse().expect("url"),
        Some("sk-wrong".into()),
    ))
    .expect("client");
    let err = wrong.chat(&chat("mock/chat", "x")).await.expect_err("401");
    assert_eq!(err.status(), Some(401));
    assert!(err.to_string().contains("User not found"), "{err}");

    let none = Client::new(Config::new(mock.base_url().parse().expect("url"), None)).expect("client");
    assert!(matches!(
        none.chat(&chat("mock/chat", "x")).await,
        Err(UpstreamError::NotConfigured)
    ));
    // The model list is public.
    assert!(!none.models(None).await.expect("models without a key").is_empty());
}

#[tokio::test]
async fn unreachable_upstreams_are_reported_as_such() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let mut cfg = Config::new(
        format!("http://127.0.0.1:{port}/api/v1").parse().expect("url"),
        Some("k".into()),
    );
    cfg.retry_base_delay = Duration::from_millis(5);
    let client = Client::new(cfg).expect("client");
    let err = client.chat(&chat("mock/chat", "x")).await.expect_err("refused");
    assert!(matches!(err, UpstreamError::Unreachable(_)), "{err:?}");
    assert!(err.is_transient());
}

#[tokio::test]
async fn models_by_modality_with_string_prices() {
    let (_mock, client) = setup(MockConfig::default()).await;
    let text = client.models(None).await.expect("models");
    assert!(text.iter().any(|m| m.id == "mock/chat"));
    assert!(text.iter().all(|m| {
        m.architecture
            .as_ref()
            .is_some_and(|a| a.output_modalities.contains(&"text".into()))
    }));
    let images = client.models(Some("image")).await.expect("image models");
    assert!(images.iter().any(|m| m.id == "mock/image") && !images.iter().any(|m| m.id == "mock/chat"));
    let chat_model = text.iter().find(|m| m.id == "mock/chat").expect("mock/chat");
    assert!(
        chat_model.pricing.as_ref().is_some_and(|p| p.prompt.0 > 0.0),
        "string prices parsed"
    );
    let videos = client.video_models().await.expect("video models");
    let v = videos.iter().find(|m| m.id == "mock/video").expect("mock/video");
    assert_eq!(v.supported_durations.as_deref(), Some(&[4, 6, 8][..]));
    assert!(
        v.pricing_skus
            .as_ref()
            .and_then(|p| p.get("per-video-second"))
            .is_some_and(|p| p.0 > 0.0)
    );
}

#[tokio::test]
async fn images_from_both_endpoints_are_pngs() {
    let (_mock, client) = setup(MockConfig::default()).await;
    let response = client
        .images(&ImagesRequest {
            model: "mock/image".into(),
            prompt: "a lighthouse".into(),
            n: Some(2),
            ..Default::default()
        })
        .await
        .expect("images");
    assert_eq!(response.data.len(), 2);
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&response.data[0].b64_json)
        .expect("raw base64");
    assert_eq!(&bytes[..4], b"\x89PNG");

    let mut request = chat("mock/image-text", "a lighthouse");
    request.modalities = Some(vec!["image".into(), "text".into()]);
    let answer = client.chat(&request).await.expect("chat image");
    let images = answer.choices[0].message.images.clone().expect("images");
    assert!(images[0].image_url.url.starts_with("data:image/png;base64,"));
}

#[tokio::test]
async fn video_jobs_poll_through_relative_urls_and_download() {
    for relative in [true, false] {
        let (mock, client) = setup(MockConfig {
            relative_polling_urls: relative,
            ..MockConfig::default()
        })
        .await;
        let job = client
            .submit_video(&VideoRequest {
                model: "mock/video".into(),
                prompt: Some("waves".into()),
                duration: Some(4),
                ..Default::default()
            })
            .await
            .expect("submit");
        assert_eq!(job.status, VideoStatus::Pending);
        assert_eq!(
            job.polling_url.as_deref().is_some_and(|u| u.starts_with('/')),
            relative
        );
        let mut statuses = Vec::new();
        let done = loop {
            let polled = client
                .poll_video(&job.id, job.polling_url.as_deref())
                .await
                .expect("poll");
            statuses.push(polled.status);
            if polled.status.is_terminal() {
                break polled;
            }
            assert!(statuses.len() < 10, "never finished: {statuses:?}");
        };
        assert_eq!(
            statuses,
            [
                VideoStatus::Pending,
                VideoStatus::InProgress,
                VideoStatus::Completed
            ]
        );
        assert!(done.usage.and_then(|u| u.cost).is_some_and(|c| c > 0.0));
        let chunks: Vec<_> = client
            .video_content(&job.id, 0)
            .await
            .expect("content")
            .try_collect()
            .await
            .expect("bytes");
        let bytes = chunks.concat();
        assert_eq!(&bytes[4..8], b"ftyp");
        assert_eq!(mock.hits(&format!("GET /api/v1/videos/{}", job.id)), 3);
    }

    let (_mock, client) = setup(MockConfig::default()).await;
    let err = client
        .submit_video(&VideoRequest {
            model: "mock/video".into(),
            duration: Some(5),
            ..Default::default()
        })
        .await
        .expect_err("unsupported duration");
    assert_eq!(err.status(), Some(400));
}

#[tokio::test]
async fn key_info() {
    let (_mock, client) = setup(MockConfig::default()).await;
    let info = client.key_info().await.expect("key");
    assert_eq!(info.is_free_tier, Some(false));
    assert!(info.label.is_some_and(|l| l.contains("...")));
}

#[tokio::test]
async fn a_failed_video_job_is_an_answer_not_an_error() {
    let (_mock, client) = setup(MockConfig::default()).await;
    let job = client
        .submit_video(&VideoRequest {
            model: "mock/video-fail".into(),
            prompt: Some("x".into()),
            ..Default::default()
        })
        .await
        .expect("submit");
    let mut polled = client
        .poll_video(&job.id, job.polling_url.as_deref())
        .await
        .expect("poll");
    while !polled.status.is_terminal() {
        polled = client
            .poll_video(&job.id, job.polling_url.as_deref())
            .await
            .expect("poll");
    }
    assert_eq!(polled.status, VideoStatus::Failed);
    assert!(polled.error.is_some_and(|e| e.contains("on purpose")));
}
