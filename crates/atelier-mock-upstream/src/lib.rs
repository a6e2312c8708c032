//! An offline OpenRouter look-alike, for tests, the demo and the benchmarks.
//!
//! It speaks the routes of §7 of `shared/openrouter-api.md` with the same shapes and
//! quirks as the real service: keep-alive comments, a usage chunk after the finish
//! chunk, errors inside a 200, mid-stream errors, relative polling URLs, string
//! prices. Outputs are deterministic: text derived from the prompt, real PNG
//! images, a real (tiny) MP4 video.
//!
//! Behaviour is chosen by model name, so a test states what it wants in the
//! request itself:
//!
//! | model | behaviour |
//! |---|---|
//! | `mock/chat` | a normal answer |
//! | `mock/chat-slow` | a long answer, 50 ms per token (for cancellation) |
//! | `mock/error-NNN` | status NNN before anything is sent (429 and 503 with `Retry-After: 1`) |
//! | `mock/error-in-200` | status 200 with only an error body |
//! | `mock/stream-error-midway` | a few tokens, then a mid-stream error event |
//! | `mock/no-done` | a complete stream that ends without `data: [DONE]` |
//! | `mock/empty-usage-choices` | the usage chunk with `choices: []` (the documented shape) |
//! | `mock/slow-first-byte` | waits `slow_first_byte` before answering |
//! | `mock/image`, `mock/image-text` | image models (dedicated endpoint and chat `modalities`) |
//! | `mock/video`, `mock/video-fail` | video models; the second's jobs fail |

mod catalog;
mod chat;
mod media;
mod precise;
mod videos;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::{Listener as _, ListenerExt as _};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How the mock behaves; every field has a sensible default.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// The only key accepted as `Authorization: Bearer …`.
    pub api_key: String,
    /// Pause between streamed tokens (kept as precisely as `latency`).
    pub token_delay: Duration,
    /// Pause before any response (models a slower upstream), kept to within
    /// tens of microseconds (see `precise`).
    pub latency: Duration,
    /// Pause before answering `mock/slow-first-byte`.
    pub slow_first_byte: Duration,
    /// A `: OPENROUTER PROCESSING` comment is sent at the start of every stream and
    /// again whenever this long passes between tokens.
    pub keepalive_interval: Duration,
    /// Send the usage chunk with `choices: []` for every model (the documented
    /// shape) instead of the observed one-empty-choice shape.
    pub usage_with_empty_choices: bool,
    /// Polls a video job stays in each of `pending` and `in_progress`.
    pub video_polls_per_state: u32,
    /// Give polling URLs as `/api/v1/videos/<id>` (as the OpenAPI examples do)
    /// rather than absolute.
    pub relative_polling_urls: bool,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            api_key: "mock-key".into(),
            token_delay: Duration::ZERO,
            latency: Duration::ZERO,
            slow_first_byte: Duration::from_secs(3),
            keepalive_interval: Duration::from_secs(1),
            usage_with_empty_choices: false,
            video_polls_per_state: 1,
            relative_polling_urls: true,
        }
    }
}

/// Shared state of a running mock.
pub(crate) struct Mock {
    pub(crate) config: MockConfig,
    pub(crate) origin: String,
    pub(crate) jobs: Mutex<HashMap<String, videos::Job>>,
    hits: Mutex<HashMap<String, u64>>,
    model_hits: Mutex<HashMap<String, u64>>,
    /// The raw body of the last call to each route, parsed only when asked for:
    /// in the benchmark the mock shares the cores with atelier, and a deep copy
    /// of every request's JSON was a tenth of its work.
    bodies: Mutex<HashMap<String, Bytes>>,
    disconnects: AtomicU64,
    disconnected: Notify,
    spent_micros: AtomicU64,
    counter: AtomicU64,
}

impl Mock {
    pub(crate) fn new(config: MockConfig, origin: String) -> Self {
        Mock {
            config,
            origin,
            jobs: Mutex::default(),
            hits: Mutex::default(),
            model_hits: Mutex::default(),
            bodies: Mutex::default(),
            disconnects: AtomicU64::new(0),
            disconnected: Notify::new(),
            spent_micros: AtomicU64::new(0),
            counter: AtomicU64::new(0),
        }
    }

    /// A fresh id: deterministic per mock (a counter), shaped like the real ones.
    pub(crate) fn next_id(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn record_cost(&self, usd: f64) {
        self.spent_micros
            .fetch_add((usd * 1e6).round() as u64, Ordering::Relaxed);
    }

    /// Keeps the body of a call (`raw`, which parsed as `body`) and counts it
    /// for the model it names.
    pub(crate) fn record_body(&self, route: &str, raw: &Bytes, body: &Value) {
        if let Some(model) = body["model"].as_str() {
            update(&mut self.model_hits.lock(), model, |n| *n += 1);
        }
        update(&mut self.bodies.lock(), route, |last| *last = raw.clone());
    }

    /// Called when a client goes away in the middle of a stream.
    pub(crate) fn record_disconnect(&self) {
        self.disconnects.fetch_add(1, Ordering::SeqCst);
        self.disconnected.notify_waiters();
    }
}

/// A mock upstream serving on a loopback port until dropped.
pub struct MockUpstream {
    addr: SocketAddr,
    mock: Arc<Mock>,
    stop: CancellationToken,
}

impl MockUpstream {
    /// Serves on `127.0.0.1` on a free port.
    pub async fn start(config: MockConfig) -> std::io::Result<Self> {
        Self::bind(SocketAddr::from(([127, 0, 0, 1], 0)), config).await
    }

    pub async fn bind(addr: SocketAddr, config: MockConfig) -> std::io::Result<Self> {
        // Each token leaves at once, as from a real upstream: without
        // TCP_NODELAY a token written while the previous write is unacknowledged
        // waits for the client's delayed ACK (up to 40 ms) on a kept-alive
        // connection, which the bench would count against atelier.
        let listener = tokio::net::TcpListener::bind(addr).await?.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::warn!(error = %e, "cannot set TCP_NODELAY");
            }
        });
        let addr = listener.local_addr()?;
        let mock = Arc::new(Mock::new(config, format!("http://{addr}")));
        let stop = CancellationToken::new();
        let app = router(Arc::clone(&mock));
        let stopped = stop.clone();
        tokio::spawn(async move {
            let serve =
                axum::serve(listener, app).with_graceful_shutdown(async move { stopped.cancelled().await });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "mock upstream stopped");
            }
        });
        Ok(MockUpstream { addr, mock, stop })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL to configure a client with: `http://127.0.0.1:PORT/api/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/api/v1", self.addr)
    }

    pub fn api_key(&self) -> &str {
        &self.mock.config.api_key
    }

    /// How often a route (e.g. `POST /api/v1/chat/completions`) was called.
    pub fn hits(&self, route: &str) -> u64 {
        self.mock.hits.lock().get(route).copied().unwrap_or(0)
    }

    /// How many generation requests (chat, images, videos) named this model.
    pub fn model_hits(&self, model: &str) -> u64 {
        self.mock.model_hits.lock().get(model).copied().unwrap_or(0)
    }

    /// The JSON body of the last call to a route.
    pub fn last_body(&self, route: &str) -> Option<Value> {
        let raw = self.mock.bodies.lock().get(route).cloned()?;
        serde_json::from_slice(&raw).ok()
    }

    /// Streams whose client went away before the end.
    pub fn disconnects(&self) -> u64 {
        self.mock.disconnects.load(Ordering::SeqCst)
    }

    /// Waits until at least `count` streams have seen their client go away.
    pub async fn wait_for_disconnects(&self, count: u64, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.mock.disconnected.notified();
            if self.disconnects() >= count {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.disconnects() >= count;
            }
        }
    }

    /// Total cost the mock has charged, in USD.
    pub fn spent(&self) -> f64 {
        self.mock.spent_micros.load(Ordering::Relaxed) as f64 / 1e6
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn router(mock: Arc<Mock>) -> Router {
    Router::new()
        .route("/api/v1/chat/completions", post(chat::completions))
        .route("/api/v1/models", get(catalog::models))
        .route("/api/v1/images", post(media::images))
        .route("/api/v1/videos", post(videos::submit))
        .route("/api/v1/videos/models", get(videos::models))
        .route("/api/v1/videos/{id}", get(videos::poll))
        .route("/api/v1/videos/{id}/content", get(videos::content))
        .route("/api/v1/key", get(key))
        .route("/api/v1/auth/key", get(key))
        .route("/api/v1/credits", get(credits))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "Not Found") })
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&mock),
            count_and_delay,
        ))
        .with_state(mock)
}

/// Counts hits per route and applies the configured latency.
async fn count_and_delay(State(mock): State<Arc<Mock>>, request: Request, next: Next) -> Response {
    let (method, path) = (request.method().as_str(), request.uri().path());
    let mut route = String::with_capacity(method.len() + 1 + path.len());
    route.push_str(method);
    route.push(' ');
    route.push_str(path);
    update(&mut mock.hits.lock(), &route, |n| *n += 1);
    precise::sleep(mock.config.latency).await;
    next.run(request).await
}

/// Applies `change` to `key`'s value, starting from the default the first
/// time: unlike `entry`, the key is copied only then, not on every call (one
/// per request).
fn update<V: Default>(map: &mut HashMap<String, V>, key: &str, change: impl FnOnce(&mut V)) {
    match map.get_mut(key) {
        Some(value) => change(value),
        None => {
            let mut value = V::default();
            change(&mut value);
            map.insert(key.to_owned(), value);
        }
    }
}

/// OpenRouter's error body: `{"error": {"code", "message"}, "user_id"}`.
pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    let body = json!({"error": {"code": status.as_u16(), "message": message}, "user_id": "user_mock"});
    (status, axum::Json(body)).into_response()
}

/// Checks the bearer key like OpenRouter: the refusal for a missing or garbled
/// header or an unknown key, `None` when the key is right.
pub(crate) fn unauthorized(mock: &Mock, headers: &HeaderMap) -> Option<Response> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        None => Some(error(StatusCode::UNAUTHORIZED, "No auth credentials found")),
        Some(key) if key == mock.config.api_key => None,
        Some(_) => Some(error(StatusCode::UNAUTHORIZED, "User not found.")),
    }
}

async fn key(State(mock): State<Arc<Mock>>, headers: HeaderMap) -> Response {
    if let Some(denied) = unauthorized(&mock, &headers) {
        return denied;
    }
    let spent = mock.spent_micros.load(Ordering::Relaxed) as f64 / 1e6;
    axum::Json(json!({"data": {
        "label": "sk-or-v1-moc...key",
        "limit": null,
        "limit_remaining": null,
        "limit_reset": null,
        "include_byok_in_limit": false,
        "usage": spent, "usage_daily": spent, "usage_weekly": spent, "usage_monthly": spent,
        "is_free_tier": false,
        "is_management_key": false,
        "expires_at": null,
    }}))
    .into_response()
}

async fn credits(State(mock): State<Arc<Mock>>, headers: HeaderMap) -> Response {
    if let Some(denied) = unauthorized(&mock, &headers) {
        return denied;
    }
    let spent = mock.spent_micros.load(Ordering::Relaxed) as f64 / 1e6;
    axum::Json(json!({"data": {"total_credits": 100.0, "total_usage": spent}})).into_response()
}
