//! The models the mock offers, and the behaviours selected by model name.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Query;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Mock;

/// USD per token for every mock text model (prices are strings on the wire).
pub(crate) const PROMPT_PRICE: f64 = 0.000_001;
pub(crate) const COMPLETION_PRICE: f64 = 0.000_002;
/// USD per generated image.
pub(crate) const IMAGE_PRICE: f64 = 0.004;
/// USD per second of video.
pub(crate) const VIDEO_SECOND_PRICE: f64 = 0.05;

pub(crate) const TEXT_MODELS: &[(&str, &str)] = &[
    ("mock/chat", "Mock Chat"),
    ("mock/chat-slow", "Mock Chat (slow)"),
    ("mock/stream-error-midway", "Mock: fails mid-stream"),
    ("mock/no-done", "Mock: stream without [DONE]"),
    ("mock/empty-usage-choices", "Mock: documented usage chunk"),
    ("mock/error-in-200", "Mock: error inside a 200"),
    ("mock/slow-first-byte", "Mock: slow first byte"),
    ("mock/error-502", "Mock: always 502"),
];
pub(crate) const IMAGE_MODELS: &[(&str, &str, &[&str])] = &[
    ("mock/image", "Mock Image", &["image"]),
    ("mock/image-text", "Mock Image + Text", &["image", "text"]),
];
pub(crate) const VIDEO_MODELS: &[(&str, &str)] = &[
    ("mock/video", "Mock Video"),
    ("mock/video-fail", "Mock Video (fails)"),
];

#[derive(Debug, Deserialize)]
pub(crate) struct ModelsQuery {
    output_modalities: Option<String>,
}

/// `GET /models`: text models by default, as upstream; `output_modalities` selects.
pub(crate) async fn models(Query(q): Query<ModelsQuery>) -> Response {
    let wanted = q.output_modalities.unwrap_or_else(|| "text".into());
    let wants = |m: &str| wanted == "all" || wanted.split(',').any(|w| w.trim() == m);
    let mut data: Vec<Value> = Vec::new();
    if wants("text") {
        data.extend(
            TEXT_MODELS
                .iter()
                .map(|(id, name)| model(id, name, &["text"], &["text"])),
        );
    }
    if wants("image") || wants("text") {
        for (id, name, outputs) in IMAGE_MODELS {
            // As upstream: a model is listed when one of its outputs is asked for.
            if outputs.iter().any(|o| wants(o)) {
                data.push(model(id, name, &["text", "image"], outputs));
            }
        }
    }
    if wants("video") {
        data.extend(
            VIDEO_MODELS
                .iter()
                .map(|(id, name)| model(id, name, &["text", "image"], &["video"])),
        );
    }
    let total = data.len();
    axum::Json(json!({"data": data, "total_count": total, "links": {"next": null}})).into_response()
}

fn model(id: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> Value {
    let is_image = outputs.contains(&"image");
    json!({
        "id": id,
        "canonical_slug": id,
        "name": name,
        "created": 1_767_000_000,
        "description": format!("{name}: an offline stand-in for a real model. Its outputs are fake."),
        "context_length": 32768,
        "architecture": {
            "modality": format!("{}->{}", inputs.join("+"), outputs.join("+")),
            "input_modalities": inputs,
            "output_modalities": outputs,
            "tokenizer": "Other",
            "instruct_type": null,
        },
        "pricing": {
            "prompt": format!("{PROMPT_PRICE:.7}"),
            "completion": format!("{COMPLETION_PRICE:.7}"),
            "image": if is_image { format!("{IMAGE_PRICE}") } else { "0".into() },
            "request": "0",
        },
        "top_provider": {"context_length": 32768, "max_completion_tokens": 4096, "is_moderated": false},
        "per_request_limits": null,
        "supported_parameters": ["temperature", "max_tokens", "stop", "seed"],
        "default_parameters": null,
        "links": {"details": format!("/api/v1/models/{id}/endpoints")},
    })
}

/// What a model name asks the mock to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Behaviour {
    Normal,
    Slow,
    Error(StatusCode),
    ErrorIn200,
    StreamErrorMidway,
    NoDone,
    EmptyUsageChoices,
    SlowFirstByte,
}

pub(crate) fn behaviour(model: &str) -> Behaviour {
    if let Some(code) = model.strip_prefix("mock/error-") {
        if code == "in-200" {
            return Behaviour::ErrorIn200;
        }
        if let Some(status) = code
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
        {
            return Behaviour::Error(status);
        }
    }
    match model {
        "mock/chat-slow" => Behaviour::Slow,
        "mock/stream-error-midway" => Behaviour::StreamErrorMidway,
        "mock/no-done" => Behaviour::NoDone,
        "mock/empty-usage-choices" => Behaviour::EmptyUsageChoices,
        "mock/slow-first-byte" => Behaviour::SlowFirstByte,
        _ => Behaviour::Normal,
    }
}

/// The error an `mock/error-NNN` model asks for, shaped like OpenRouter's, with
/// `Retry-After` and rate-limit details where the real service sends them.
pub(crate) fn injected_error(status: StatusCode) -> Response {
    let (message, metadata) = match status.as_u16() {
        400 => (
            "Invalid request: mock/error-400 rejects every request",
            json!({"error_type": "invalid_request"}),
        ),
        401 => ("User not found.", json!({})),
        402 => (
            "This request requires more credits, or fewer max_tokens. You requested up to 4096 tokens, but can only afford 0.",
            json!({"provider_name": null}),
        ),
        403 => (
            "Your input was flagged by moderation",
            json!({"reasons": ["mock"], "provider_name": "Mock"}),
        ),
        404 => (
            "No endpoints found for mock/error-404.",
            json!({"error_type": "not_found"}),
        ),
        408 => ("Request timed out", json!({"error_type": "timeout"})),
        413 => ("Payload too large", json!({"error_type": "payload_too_large"})),
        422 => ("Unprocessable request", json!({"error_type": "unprocessable"})),
        429 => (
            "Rate limit exceeded: mock/error-429",
            json!({"error_type": "rate_limit_exceeded", "headers": {
                "X-RateLimit-Limit": "20", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1767000060000"}}),
        ),
        502 => (
            "Provider returned error",
            json!({"provider_name": "Mock", "raw": "upstream connect error"}),
        ),
        503 => (
            "No available provider meets your routing requirements",
            json!({"error_type": "provider_overloaded"}),
        ),
        _ => ("Internal Server Error", json!({"error_type": "server"})),
    };
    let body = json!({"error": {"code": status.as_u16(), "message": message, "metadata": metadata}, "user_id": "user_mock"});
    let mut response = (status, axum::Json(body)).into_response();
    let headers = response.headers_mut();
    if matches!(status.as_u16(), 429 | 503) {
        headers.insert("retry-after", HeaderValue::from_static("1"));
    }
    if status.as_u16() == 429 {
        headers.insert("x-ratelimit-limit", HeaderValue::from_static("20"));
        headers.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        headers.insert("x-ratelimit-reset", HeaderValue::from_static("1767000060000"));
    }
    response
}

/// Applies the name-based behaviours that happen before any answer: errors and
/// delays. `None` means: go on and answer.
pub(crate) async fn before_answer(mock: &Arc<Mock>, model: &str) -> Option<Response> {
    match behaviour(model) {
        Behaviour::Error(status) => Some(injected_error(status)),
        Behaviour::SlowFirstByte => {
            tokio::time::sleep(mock.config.slow_first_byte).await;
            None
        }
        _ => None,
    }
}

/// Pause between tokens for this model.
pub(crate) fn token_delay(mock: &Mock, model: &str) -> Duration {
    match behaviour(model) {
        Behaviour::Slow => mock.config.token_delay.max(Duration::from_millis(50)),
        _ => mock.config.token_delay,
    }
}
