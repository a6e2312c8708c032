//! `POST /chat/completions`, streaming and not, text and images.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use crate::catalog::{self, Behaviour, COMPLETION_PRICE, IMAGE_PRICE, PROMPT_PRICE};
use crate::{Mock, error, media, unauthorized};

/// What one completion will say.
struct Answer {
    id: String,
    model: String,
    created: u64,
    /// The whole answer; its tokens are the words with their trailing space.
    text: String,
    /// Where each token ends in `text` (one allocation instead of one a word:
    /// the mock shares the benchmark's cores with atelier).
    token_ends: Vec<usize>,
    prompt_tokens: u64,
    finish_reason: &'static str,
    images: Vec<Value>,
}

impl Answer {
    fn tokens(&self) -> impl Iterator<Item = &str> {
        let mut start = 0;
        self.token_ends.iter().map(move |&end| {
            let token = &self.text[start..end];
            start = end;
            token
        })
    }

    fn usage(&self) -> UsageOut {
        let completion = self.token_ends.len() as u64;
        let images = self.images.len() as u64;
        UsageOut {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: completion,
            total_tokens: self.prompt_tokens + completion,
            cost: self.cost(),
            is_byok: false,
            prompt_tokens_details: PromptDetails {
                cached_tokens: 0,
                audio_tokens: 0,
            },
            completion_tokens_details: CompletionDetails {
                reasoning_tokens: 0,
                image_tokens: images * 1290,
            },
            cost_details: CostDetails {
                upstream_inference_cost: None,
            },
        }
    }

    fn cost(&self) -> f64 {
        self.prompt_tokens as f64 * PROMPT_PRICE
            + self.token_ends.len() as f64 * COMPLETION_PRICE
            + self.images.len() as f64 * IMAGE_PRICE
    }

    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> Value {
        json!({
            "id": self.id, "provider": "Mock", "model": self.model,
            "object": "chat.completion.chunk", "created": self.created,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason,
                         "native_finish_reason": finish_reason, "logprobs": null}],
        })
    }
}

pub(crate) async fn completions(State(mock): State<Arc<Mock>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(denied) = unauthorized(&mock, &headers) {
        return denied;
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "Invalid JSON body");
    };
    mock.record_body("POST /api/v1/chat/completions", &body, &request);
    let Some(requested) = request["model"].as_str() else {
        return error(StatusCode::BAD_REQUEST, "model is required");
    };
    let Some(messages) = request["messages"].as_array().filter(|m| !m.is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "messages must be a non-empty array");
    };
    let fallbacks: Vec<&str> = request["models"]
        .as_array()
        .map(|m| m.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if fallbacks.len() > 3 {
        return error(
            StatusCode::BAD_REQUEST,
            "'models' array must have 3 items or fewer.",
        );
    }
    // Like OpenRouter's `models`: the first model that does not fail serves.
    let candidates = std::iter::once(requested).chain(fallbacks.iter().copied());
    let served = candidates
        .clone()
        .find(|m| !matches!(catalog::behaviour(m), Behaviour::Error(_)))
        .unwrap_or(requested);
    if let Some(early) = catalog::before_answer(&mock, served).await {
        return early;
    }
    let streaming = request["stream"].as_bool().unwrap_or(false);
    if catalog::behaviour(served) == Behaviour::ErrorIn200 {
        return (
            StatusCode::OK,
            axum::Json(json!({"error": {"code": 500, "message": "Internal error in the mock provider"}, "user_id": "user_mock"})),
        )
            .into_response();
    }

    let wants_image = request["modalities"]
        .as_array()
        .is_some_and(|m| m.iter().any(|v| v == "image"));
    let answer = compose(&mock, served, messages, &request, wants_image);
    mock.record_cost(answer.cost());
    if streaming {
        stream(mock, answer)
    } else {
        complete(&answer)
    }
}

fn compose(mock: &Mock, model: &str, messages: &[Value], request: &Value, wants_image: bool) -> Answer {
    let prompt = last_user_text(messages);
    let mut text = if wants_image {
        "Here is your image.".to_owned()
    } else {
        reply_to(&prompt)
    };
    if catalog::behaviour(model) == Behaviour::Slow {
        text = std::iter::repeat_n(text.as_str(), 8)
            .collect::<Vec<_>>()
            .join(" ");
    }
    let mut token_ends: Vec<usize> = text
        .split_inclusive(' ')
        .scan(0, |end, token| {
            *end += token.len();
            Some(*end)
        })
        .collect();
    let mut finish_reason = "stop";
    if let Some(max) = request["max_tokens"]
        .as_u64()
        .and_then(|m| usize::try_from(m).ok())
        && token_ends.len() > max
    {
        token_ends.truncate(max);
        text.truncate(token_ends.last().copied().unwrap_or(0));
        finish_reason = "length";
    }
    let images = if wants_image {
        let ratio = request["image_config"]["aspect_ratio"].as_str().unwrap_or("1:1");
        vec![json!({"type": "image_url", "image_url": {"url": media::png_data_url(&prompt, ratio, 0)}})]
    } else {
        Vec::new()
    };
    let prompt_tokens = messages
        .iter()
        .map(|m| word_count(&m["content"]) as u64)
        .sum::<u64>()
        .max(1);
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Answer {
        id: format!("gen-{created}-mock{:016}", mock.next_id()),
        model: model.to_owned(),
        created,
        text,
        token_ends,
        prompt_tokens,
        finish_reason,
        images,
    }
}

/// The text of a message's content: the string itself, or its text parts.
fn text_parts(content: &Value) -> impl Iterator<Item = &str> {
    let (whole, parts) = match content {
        Value::String(s) => (Some(s.as_str()), None),
        Value::Array(parts) => (None, Some(parts.iter().filter_map(|p| p["text"].as_str()))),
        _ => (None, None),
    };
    whole.into_iter().chain(parts.into_iter().flatten())
}

fn content_text(content: &Value) -> String {
    text_parts(content).collect::<Vec<_>>().join(" ")
}

/// The words of a message's content (parts are joined by spaces, so their
/// words are the sum of theirs).
fn word_count(content: &Value) -> usize {
    text_parts(content).map(|t| t.split_whitespace().count()).sum()
}

fn last_user_text(messages: &[Value]) -> String {
    messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .map(|m| content_text(&m["content"]))
        .unwrap_or_default()
}

/// A deterministic answer: the same prompt always gets the same words.
fn reply_to(prompt: &str) -> String {
    let summary = summary_of(prompt);
    let asks_for_code = summary
        .as_bytes()
        .windows(4)
        .any(|w| w.eq_ignore_ascii_case(b"code"));
    if asks_for_code {
        return format!(
            "Here is a small example for \u{201c}{summary}\u{201d}:\n\n```rust\nfn main() {{\n    \
             println!(\"hello from the mock upstream\");\n}}\n```\n\nThis answer was written offline \
             by the **mock upstream**; no model was called."
        );
    }
    format!(
        "You asked: \u{201c}{summary}\u{201d}. This is a deterministic answer from the **mock \
         upstream**: the same prompt always gets the same words, and no model was called."
    )
}

/// The prompt's words joined by single spaces, cut at 200 characters.
fn summary_of(prompt: &str) -> String {
    let mut summary = String::with_capacity(prompt.len().min(800));
    let mut left = 200usize;
    for (i, word) in prompt.split_whitespace().enumerate() {
        if left == 0 {
            break;
        }
        if i > 0 {
            summary.push(' ');
            left -= 1;
        }
        for c in word.chars().take(left) {
            summary.push(c);
            left -= 1;
        }
    }
    summary
}

// A whole answer, written straight from these (the mock answers thousands a
// second in the benchmark, beside atelier, on the same cores: a `json!` tree
// per answer was most of its CPU).

#[derive(Serialize)]
struct UsageOut {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    cost: f64,
    is_byok: bool,
    prompt_tokens_details: PromptDetails,
    completion_tokens_details: CompletionDetails,
    cost_details: CostDetails,
}

#[derive(Serialize)]
struct PromptDetails {
    cached_tokens: u64,
    audio_tokens: u64,
}

#[derive(Serialize)]
struct CompletionDetails {
    reasoning_tokens: u64,
    image_tokens: u64,
}

#[derive(Serialize)]
struct CostDetails {
    upstream_inference_cost: Option<f64>,
}

#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    provider: &'static str,
    model: &'a str,
    object: &'static str,
    created: u64,
    system_fingerprint: Option<&'static str>,
    choices: [Choice<'a>; 1],
    usage: UsageOut,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    logprobs: Option<()>,
    finish_reason: &'static str,
    native_finish_reason: &'static str,
    message: Message<'a>,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
    refusal: Option<()>,
    reasoning: Option<()>,
    #[serde(skip_serializing_if = "<[Value]>::is_empty")]
    images: &'a [Value],
}

fn complete(answer: &Answer) -> Response {
    let body = Completion {
        id: &answer.id,
        provider: "Mock",
        model: &answer.model,
        object: "chat.completion",
        created: answer.created,
        system_fingerprint: None,
        choices: [Choice {
            index: 0,
            logprobs: None,
            finish_reason: answer.finish_reason,
            native_finish_reason: answer.finish_reason,
            message: Message {
                role: "assistant",
                content: &answer.text,
                refusal: None,
                reasoning: None,
                images: &answer.images,
            },
        }],
        usage: answer.usage(),
    };
    // Written into a buffer that holds a usual answer at once (axum's `Json`
    // starts at 128 bytes and grows it three times).
    let mut bytes = Vec::with_capacity(1024);
    if let Err(e) = serde_json::to_writer(&mut bytes, &body) {
        return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
    }
    let mut response = (
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        bytes,
    )
        .into_response();
    if let Ok(id) = HeaderValue::from_str(&answer.id) {
        response.headers_mut().insert("x-generation-id", id);
    }
    response
}

const KEEPALIVE: &str = ": OPENROUTER PROCESSING\n\n";

fn data(value: &Value) -> String {
    format!("data: {value}\n\n")
}

fn stream(mock: Arc<Mock>, answer: Answer) -> Response {
    let (tx, rx) = mpsc::channel::<String>(16);
    let id = answer.id.clone();
    tokio::spawn(async move {
        if produce(&mock, &answer, &tx).await.is_err() {
            mock.record_disconnect();
        }
    });
    let body = Body::from_stream(ReceiverStream::new(rx).map(Ok::<_, Infallible>));
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(id) = HeaderValue::from_str(&id) {
        headers.insert("x-generation-id", id);
    }
    response
}

/// The client went away.
struct Gone;

async fn send(tx: &mpsc::Sender<String>, frame: String) -> Result<(), Gone> {
    tx.send(frame).await.map_err(|_| Gone)
}

/// Waits `delay`, noticing at once if the client disconnects meanwhile.
async fn pause(tx: &mpsc::Sender<String>, delay: Duration) -> Result<(), Gone> {
    if delay.is_zero() {
        return Ok(());
    }
    tokio::select! {
        () = crate::precise::sleep(delay) => Ok(()),
        () = tx.closed() => Err(Gone),
    }
}

async fn produce(mock: &Mock, answer: &Answer, tx: &mpsc::Sender<String>) -> Result<(), Gone> {
    let behaviour = catalog::behaviour(&answer.model);
    let delay = catalog::token_delay(mock, &answer.model);
    send(tx, KEEPALIVE.into()).await?;
    let mut since_keepalive = Duration::ZERO;
    for (i, token) in answer.tokens().enumerate() {
        pause(tx, delay).await?;
        since_keepalive += delay;
        if since_keepalive >= mock.config.keepalive_interval {
            send(tx, KEEPALIVE.into()).await?;
            since_keepalive = Duration::ZERO;
        }
        if behaviour == Behaviour::StreamErrorMidway && i == 3 {
            let mut event = answer.chunk(json!({"content": ""}), Some("error"));
            event["error"] = json!({"code": 502, "message": "Provider disconnected mid-stream",
                                     "metadata": {"error_type": "provider_unavailable"}});
            return send(tx, data(&event)).await;
        }
        send(
            tx,
            data(&answer.chunk(json!({"role": "assistant", "content": token}), None)),
        )
        .await?;
    }
    if !answer.images.is_empty() {
        let delta = json!({"role": "assistant", "content": "", "images": answer.images});
        send(tx, data(&answer.chunk(delta, None))).await?;
    }
    let finish = answer.chunk(
        json!({"role": "assistant", "content": ""}),
        Some(answer.finish_reason),
    );
    send(tx, data(&finish)).await?;

    // Usage comes last, in a chunk of its own: with one empty choice as observed
    // in real traffic, or with `choices: []` as documented.
    let mut usage = answer.chunk(json!({"role": "assistant", "content": ""}), None);
    if mock.config.usage_with_empty_choices || behaviour == Behaviour::EmptyUsageChoices {
        usage["choices"] = json!([]);
    }
    usage["usage"] = json!(answer.usage());
    send(tx, data(&usage)).await?;
    if behaviour != Behaviour::NoDone {
        send(tx, "data: [DONE]\n\n".into()).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mock() -> Mock {
        Mock::new(crate::MockConfig::default(), "http://127.0.0.1:0".into())
    }

    #[test]
    fn the_summary_is_the_words_joined_and_cut_at_200_characters() {
        let long = "naïve ".repeat(60);
        for prompt in ["  Say\thello \n in  one line ", "", "   ", long.as_str(), "é"] {
            let joined = prompt.split_whitespace().collect::<Vec<_>>().join(" ");
            let expected: String = joined.chars().take(200).collect();
            assert_eq!(summary_of(prompt), expected, "{prompt:?}");
        }
    }

    #[test]
    fn a_prompt_about_code_gets_code_whatever_its_case() {
        assert!(reply_to("Some CoDe please").contains("```rust"));
        assert!(!reply_to("Say hello").contains("```rust"));
    }

    #[test]
    fn max_tokens_cuts_the_answer_at_a_token_and_says_so() {
        let messages = vec![json!({"role": "user", "content": "Say hello in one line"})];
        let whole = compose(&mock(), "mock/chat", &messages, &json!({}), false);
        assert_eq!(whole.finish_reason, "stop");
        assert_eq!(whole.tokens().collect::<String>(), whole.text);
        assert_eq!(whole.tokens().count(), whole.text.split_inclusive(' ').count());

        let cut = compose(&mock(), "mock/chat", &messages, &json!({"max_tokens": 3}), false);
        assert_eq!(cut.finish_reason, "length");
        let first_three: String = whole.text.split_inclusive(' ').take(3).collect();
        assert_eq!(cut.text, first_three);
        assert_eq!(cut.tokens().collect::<Vec<_>>().len(), 3);
        assert_eq!(cut.usage().completion_tokens, 3);
        assert_eq!(cut.usage().prompt_tokens, 5);

        let none = compose(&mock(), "mock/chat", &messages, &json!({"max_tokens": 0}), false);
        assert_eq!((none.text.as_str(), none.tokens().count()), ("", 0));
    }

    #[test]
    fn prompt_tokens_count_the_words_of_text_parts() {
        let parts = json!([{"type": "text", "text": "two words"}, {"type": "image_url"}, {"type": "text", "text": "three more words"}]);
        assert_eq!(word_count(&parts), 5);
        assert_eq!(word_count(&json!(" a  b ")), 2);
        assert_eq!(word_count(&Value::Null), 0);
    }
}
