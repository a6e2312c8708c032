//! A typed client for OpenRouter and any OpenAI-compatible upstream.
//!
//! Everything the reference (`shared/openrouter-api.md`) warns about is handled
//! here, once: keep-alive comments and both shapes of the usage chunk in streams,
//! errors inside a 200, mid-stream errors, streams without `[DONE]`, relative
//! polling URLs, and string prices. Four time limits apply (connect, first byte,
//! idle between chunks, total), and transient failures are retried with backoff,
//! but only before any of the response has been handed to the caller.

mod error;
pub mod sse;
mod stream;
mod transport;
pub mod types;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER, USER_AGENT};
use reqwest::{RequestBuilder, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use tokio::time::Instant;
use url::Url;

pub use error::{TimeoutKind, UpstreamError};
pub use stream::{ChatStream, StreamEvent};
pub use transport::BodyStream;
use transport::{Clients, Direct, Proxies, Reply, Settings, send_by_reqwest};
pub use types::*;

pub type Result<T, E = UpstreamError> = std::result::Result<T, E>;

/// Where the upstream is and how patient to be with it.
#[derive(Debug, Clone)]
pub struct Config {
    /// E.g. `https://openrouter.ai/api/v1`; paths like `chat/completions` are appended.
    pub base_url: Url,
    pub api_key: Option<String>,
    /// Attribution headers (`HTTP-Referer`, `X-OpenRouter-Title`).
    pub referer: Option<String>,
    pub title: Option<String>,
    pub connect_timeout: Duration,
    /// Until the response headers arrive.
    pub first_byte_timeout: Duration,
    /// Between two reads of a streamed body.
    pub idle_timeout: Duration,
    /// For the whole exchange, body included.
    pub total_timeout: Duration,
    /// Retries after the first attempt for transient failures.
    pub max_retries: u32,
    /// First backoff delay; doubles with each retry.
    pub retry_base_delay: Duration,
    /// A `Retry-After` longer than this is not waited for: the error goes to the caller.
    pub max_retry_wait: Duration,
}

impl Config {
    pub fn new(base_url: Url, api_key: Option<String>) -> Self {
        Config {
            base_url,
            api_key,
            referer: None,
            title: None,
            connect_timeout: Duration::from_secs(10),
            first_byte_timeout: Duration::from_secs(120),
            idle_timeout: Duration::from_secs(120),
            total_timeout: Duration::from_secs(600),
            max_retries: 2,
            retry_base_delay: Duration::from_millis(250),
            max_retry_wait: Duration::from_secs(10),
        }
    }
}

/// Cheap to clone; clones share the connection pools.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// How `chat/completions`, the hot path, is reached (ADR-0030).
    chat: Arc<ChatRoute>,
    config: Arc<Config>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.config.base_url.as_str())
            .field("api_key", &self.config.api_key.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

impl Client {
    pub fn new(config: Config) -> Result<Self> {
        Self::with_proxies(config, &Proxies::FromEnvironment)
    }

    fn with_proxies(config: Config, proxies: &Proxies) -> Result<Self> {
        let mut headers = HeaderMap::new();
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("atelier/", env!("CARGO_PKG_VERSION"))),
        );
        for (name, value) in [
            ("http-referer", &config.referer),
            ("x-openrouter-title", &config.title),
        ] {
            if let Some(value) = value {
                let value = HeaderValue::from_str(value)
                    .map_err(|_| UpstreamError::InvalidResponse(format!("invalid {name} header value")))?;
                headers.insert(name, value);
            }
        }
        let chat_url = join(&config.base_url, "chat/completions")?;
        let clients = Clients::new(Settings {
            connect_timeout: config.connect_timeout,
            headers,
            api_key: config.api_key.as_deref(),
            chat_url: &chat_url,
            proxies,
        })?;
        Ok(Client {
            http: clients.reqwest,
            chat: Arc::new(match clients.direct {
                Some(direct) => ChatRoute::Direct(direct),
                None => ChatRoute::Reqwest(chat_url),
            }),
            config: Arc::new(config),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn is_configured(&self) -> bool {
        self.config.api_key.is_some()
    }

    fn url(&self, path: &str) -> Result<Url> {
        join(&self.config.base_url, path)
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.config.total_timeout
    }

    fn authorized(&self, builder: RequestBuilder) -> Result<RequestBuilder> {
        let key = self.config.api_key.as_ref().ok_or(UpstreamError::NotConfigured)?;
        Ok(builder.bearer_auth(key))
    }

    // ---- endpoints ----

    /// `POST chat/completions`, non-streaming.
    pub async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse> {
        let deadline = self.deadline();
        let body = ChatRequest {
            stream: false,
            ..request.clone()
        };
        let response = self.post_chat(json_bytes(&body)?, deadline).await?;
        read_json(response, deadline).await
    }

    /// `POST chat/completions` with `stream: true`. Returns once the upstream has
    /// answered with a stream; failures before that are retried like any request.
    pub async fn chat_stream(&self, request: &ChatRequest) -> Result<ChatStream> {
        self.open_stream(json_bytes(&ChatRequest {
            stream: true,
            ..request.clone()
        })?)
        .await
    }

    /// `POST chat/completions` with a JSON body passed through as given (for
    /// the OpenAI-compatible `/v1`; the caller sets `stream: false`). The
    /// answer's bytes come back unchanged, once they are known not to be an error.
    pub async fn chat_raw(&self, body: Bytes) -> Result<RawAnswer> {
        let deadline = self.deadline();
        let response = self.post_chat(body, deadline).await?;
        RawAnswer::read(read_body(response, deadline).await?)
    }

    /// Like [`chat_raw`](Self::chat_raw), streaming (the caller sets `stream:
    /// true`); chunks keep their raw JSON.
    pub async fn chat_stream_raw(&self, body: Bytes) -> Result<ChatStream> {
        self.open_stream(body).await
    }

    async fn open_stream(&self, body: Bytes) -> Result<ChatStream> {
        let deadline = self.deadline();
        let response = self.post_chat(body, deadline).await?;
        let is_sse = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        if !is_sse {
            // A JSON body where a stream was asked for is an error in a 200.
            let value: serde_json::Value = read_json(response, deadline).await?;
            return Err(UpstreamError::InvalidResponse(format!(
                "expected an event stream, got {value}"
            )));
        }
        Ok(ChatStream::new(
            response.into_stream(),
            self.config.idle_timeout,
            deadline,
        ))
    }

    /// `GET models`, optionally filtered by output modality (`text`, `image`, `all`…).
    pub async fn models(&self, output_modalities: Option<&str>) -> Result<Vec<Model>> {
        let mut url = self.url("models")?;
        if let Some(m) = output_modalities {
            url.query_pairs_mut().append_pair("output_modalities", m);
        }
        let list: ModelList = self.get_json(url, false).await?;
        Ok(list.data)
    }

    /// `POST images`: the dedicated image generation endpoint.
    pub async fn images(&self, request: &ImagesRequest) -> Result<ImagesResponse> {
        let deadline = self.deadline();
        let response = self.post(&self.url("images")?, request, deadline).await?;
        read_json(response, deadline).await
    }

    /// `POST videos`: submits a job (202).
    pub async fn submit_video(&self, request: &VideoRequest) -> Result<VideoJob> {
        let deadline = self.deadline();
        let response = self.post(&self.url("videos")?, request, deadline).await?;
        read_json(response, deadline).await
    }

    /// `GET videos/{id}`, at the job's polling URL when it is on the upstream's host.
    pub async fn poll_video(&self, job_id: &str, polling_url: Option<&str>) -> Result<VideoJob> {
        let url = self.polling_url(job_id, polling_url)?;
        self.get_json(url, true).await
    }

    /// `GET videos/{id}/content?index=N`: the video bytes, as they arrive.
    pub async fn video_content(&self, job_id: &str, index: u32) -> Result<BodyStream> {
        let mut url = self.url(&format!("videos/{}/content", checked_id(job_id)?))?;
        url.query_pairs_mut().append_pair("index", &index.to_string());
        let deadline = self.deadline();
        let response = self
            .execute(
                || Ok(send_by_reqwest(self.authorized(self.http.get(url.clone()))?)),
                deadline,
            )
            .await?;
        Ok(response.into_stream())
    }

    /// `GET videos/models`.
    pub async fn video_models(&self) -> Result<Vec<VideoModel>> {
        let list: VideoModelList = self.get_json(self.url("videos/models")?, false).await?;
        Ok(list.data)
    }

    /// `GET key`: the operator key's limits and usage.
    pub async fn key_info(&self) -> Result<KeyInfo> {
        let envelope: KeyInfoEnvelope = self.get_json(self.url("key")?, true).await?;
        Ok(envelope.data)
    }

    /// Resolves a job's polling URL: relative ones against the base URL's origin;
    /// absolute ones only if they stay on that origin (an upstream must not make
    /// atelier call elsewhere). Otherwise the documented `videos/{id}`.
    fn polling_url(&self, job_id: &str, polling_url: Option<&str>) -> Result<Url> {
        let base = &self.config.base_url;
        let candidate = polling_url.and_then(|p| base.join(p).ok());
        match candidate {
            Some(url) if url.origin() == base.origin() => Ok(url),
            _ => self.url(&format!("videos/{}", checked_id(job_id)?)),
        }
    }

    // ---- plumbing ----

    async fn post<B: Serialize + ?Sized>(&self, url: &Url, body: &B, deadline: Instant) -> Result<Reply> {
        self.post_bytes(url, json_bytes(body)?, deadline).await
    }

    /// Posts a JSON body by reqwest; `Bytes`, so a retry's copy is a reference count.
    async fn post_bytes(&self, url: &Url, body: Bytes, deadline: Instant) -> Result<Reply> {
        self.execute(
            || {
                Ok(send_by_reqwest(
                    self.authorized(
                        self.http
                            .post(url.clone())
                            .header(reqwest::header::CONTENT_TYPE, "application/json")
                            .body(body.clone()),
                    )?,
                ))
            },
            deadline,
        )
        .await
    }

    /// Posts a JSON chat request, by the direct client unless a proxy applies.
    async fn post_chat(&self, body: Bytes, deadline: Instant) -> Result<Reply> {
        match &*self.chat {
            ChatRoute::Direct(direct) => self.execute(|| Ok(direct.post(body.clone())), deadline).await,
            ChatRoute::Reqwest(url) => self.post_bytes(url, body, deadline).await,
        }
    }

    async fn get_json<T: DeserializeOwned>(&self, url: Url, auth: bool) -> Result<T> {
        let deadline = self.deadline();
        let response = self
            .execute(
                || {
                    let builder = self.http.get(url.clone());
                    let builder = match (&self.config.api_key, auth) {
                        (Some(key), _) => builder.bearer_auth(key),
                        (None, false) => builder,
                        (None, true) => return Err(UpstreamError::NotConfigured),
                    };
                    Ok(send_by_reqwest(builder))
                },
                deadline,
            )
            .await?;
        read_json(response, deadline).await
    }

    /// Sends with retries; returns the first successful response (headers read,
    /// body not yet). `send` starts one attempt.
    async fn execute<F>(&self, send: impl Fn() -> Result<F>, deadline: Instant) -> Result<Reply>
    where
        F: Future<Output = Result<Reply>>,
    {
        let mut attempt = 0;
        loop {
            let error = match self.attempt(send()?, deadline).await {
                Ok(response) => return Ok(response),
                Err(e) => e,
            };
            let retryable =
                error.is_transient() && !(error.status() == Some(429) && error.retry_after().is_none());
            if !retryable || attempt >= self.config.max_retries {
                return Err(error);
            }
            let backoff = self
                .config
                .retry_base_delay
                .saturating_mul(2u32.saturating_pow(attempt));
            let wait = error.retry_after().unwrap_or(backoff);
            if wait > self.config.max_retry_wait || Instant::now() + wait >= deadline {
                return Err(error);
            }
            tracing::debug!(attempt, ?wait, error = %error, "retrying upstream request");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    async fn attempt(&self, sent: impl Future<Output = Result<Reply>>, deadline: Instant) -> Result<Reply> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let (limit, kind) = if self.config.first_byte_timeout < remaining {
            (self.config.first_byte_timeout, TimeoutKind::FirstByte)
        } else {
            (remaining, TimeoutKind::Total)
        };
        let response = match tokio::time::timeout(limit, sent).await {
            Err(_) => return Err(UpstreamError::Timeout(kind)),
            Ok(result) => result?,
        };
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(status_error(response, deadline).await)
        }
    }
}

fn json_bytes<B: Serialize + ?Sized>(body: &B) -> Result<Bytes> {
    serde_json::to_vec(body)
        .map(Bytes::from)
        .map_err(|e| UpstreamError::InvalidResponse(e.to_string()))
}

fn checked_id(id: &str) -> Result<&str> {
    if !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(id)
    } else {
        Err(UpstreamError::InvalidResponse(format!("invalid job id {id:?}")))
    }
}

async fn read_body(response: Reply, deadline: Instant) -> Result<Bytes> {
    response
        .bytes(deadline.saturating_duration_since(Instant::now()))
        .await
}

/// Reads a JSON body, treating `{"error": …}` without a result as the error it is,
/// whatever the status said.
async fn read_json<T: DeserializeOwned>(response: Reply, deadline: Instant) -> Result<T> {
    let bytes = read_body(response, deadline).await?;
    check_not_error(&bytes)?;
    serde_json::from_slice(&bytes).map_err(|e| UpstreamError::InvalidResponse(e.to_string()))
}

/// A whole chat answer as the upstream wrote it, and the parts of it atelier
/// reads for the usage record.
#[derive(Debug)]
pub struct RawAnswer {
    pub bytes: Bytes,
    /// The model that served, if the answer says.
    pub model: Option<String>,
    pub usage: Option<Usage>,
}

impl RawAnswer {
    /// Tells an answer from an error in a 200 and reads `model` and `usage`, in
    /// the one pass [`Envelope`] makes. A `model` or `usage` of an unexpected
    /// shape is left out rather than failing an answer the client can use.
    fn read(bytes: Bytes) -> Result<Self> {
        let envelope = Envelope::of(&bytes)?;
        let model = envelope.model.and_then(|m| serde_json::from_str(m.get()).ok());
        let usage = envelope.usage.and_then(|u| serde_json::from_str(u.get()).ok());
        Ok(RawAnswer { bytes, model, usage })
    }
}

/// The top-level fields that tell an error envelope from an answer, and the two
/// a chat answer's usage record needs; the rest of the body is skipped without
/// being built. The values are borrowed from the body, not copied.
#[derive(serde::Deserialize)]
struct Envelope<'a> {
    #[serde(default, borrow)]
    error: Option<&'a RawValue>,
    #[serde(default)]
    choices: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    data: Option<serde::de::IgnoredAny>,
    #[serde(default, borrow)]
    model: Option<&'a RawValue>,
    #[serde(default, borrow)]
    usage: Option<&'a RawValue>,
}

impl<'a> Envelope<'a> {
    /// Fails for a body that is not JSON or is an error inside a 200. An error
    /// envelope has an error *object*; a failed video job has an `error` string
    /// beside its other fields, and is a valid answer.
    fn of(bytes: &'a [u8]) -> Result<Self> {
        let envelope: Envelope = serde_json::from_slice(bytes)
            .map_err(|e| UpstreamError::InvalidResponse(format!("not JSON: {e}")))?;
        match &envelope.error {
            Some(error)
                if error.get().starts_with('{') && envelope.choices.is_none() && envelope.data.is_none() =>
            {
                // Rare: only now is the error built, for its details.
                let error: serde_json::Value = serde_json::from_str(error.get())
                    .map_err(|e| UpstreamError::InvalidResponse(e.to_string()))?;
                Err(error_from_body(
                    &serde_json::json!({ "error": error }),
                    None,
                    None,
                ))
            }
            _ => Ok(envelope),
        }
    }
}

fn check_not_error(bytes: &[u8]) -> Result<()> {
    Envelope::of(bytes).map(drop)
}

/// The one way chat goes for a client's whole life.
#[allow(clippy::large_enum_variant, reason = "one per client, behind an Arc")]
enum ChatRoute {
    /// By hyper-util's client, its URI and headers made once.
    Direct(Direct),
    /// By reqwest, to this URL (`chat/completions`, parsed once): when a proxy
    /// applies to the upstream, or no key is configured (reqwest's path then
    /// answers that none is).
    Reqwest(Url),
}

/// `base` + `/` + `path`.
fn join(base: &Url, path: &str) -> Result<Url> {
    let base = base.as_str().trim_end_matches('/');
    Url::parse(&format!("{base}/{path}"))
        .map_err(|e| UpstreamError::InvalidResponse(format!("bad upstream URL: {e}")))
}

async fn status_error(response: Reply, deadline: Instant) -> UpstreamError {
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    match read_body(response, deadline).await {
        Ok(bytes) => match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(value) if value.get("error").is_some() => error_from_body(&value, Some(status), retry_after),
            _ => UpstreamError::Status {
                status: status.as_u16(),
                message: String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
                    .trim()
                    .to_owned(),
                retry_after,
                metadata: None,
            },
        },
        Err(_) => UpstreamError::Status {
            status: status.as_u16(),
            message: status.canonical_reason().unwrap_or("error").to_owned(),
            retry_after,
            metadata: None,
        },
    }
}

/// Builds the error from `{"error": {"code", "message", "metadata"}}`. Inside a 200
/// the status comes from `code` when it is one, else 502.
fn error_from_body(
    value: &serde_json::Value,
    status: Option<StatusCode>,
    retry_after: Option<Duration>,
) -> UpstreamError {
    let envelope: Option<ErrorEnvelope> = serde_json::from_value(value.clone()).ok();
    let (code, message, metadata) = match envelope {
        Some(e) => (e.error.code, e.error.message, e.error.metadata),
        None => (None, value["error"].to_string(), None),
    };
    let status = status.map(|s| s.as_u16()).unwrap_or_else(|| {
        code.as_deref()
            .and_then(|c| c.parse::<u16>().ok())
            .filter(|c| (400..600).contains(c))
            .unwrap_or(502)
    });
    let message = provider_detail(&message, metadata.as_ref());
    UpstreamError::Status {
        status,
        message,
        retry_after,
        metadata,
    }
}

/// "Provider returned error" says nothing; the provider's own words are in
/// `metadata.raw` when present.
fn provider_detail(message: &str, metadata: Option<&serde_json::Value>) -> String {
    let raw = metadata.and_then(|m| m.get("raw"));
    match raw {
        Some(serde_json::Value::String(raw)) if !raw.is_empty() => format!("{message}: {raw}"),
        Some(raw) if raw.is_object() => format!("{message}: {raw}"),
        _ => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that answers its first request with a chat answer, and hands
    /// back the request's head (as an upstream, or as a proxy).
    async fn one_shot_server() -> (Url, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = Url::parse(&format!("http://{}", listener.local_addr().expect("addr"))).expect("url");
        let asked = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = socket.read(&mut buf).await.expect("read");
                assert!(n > 0, "the client hung up before its headers ended");
                request.extend_from_slice(&buf[..n]);
            }
            let answer = r#"{"model":"m/served","choices":[{"message":{"content":"hi"}}]}"#;
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                answer.len()
            );
            socket.write_all(response.as_bytes()).await.expect("write");
            String::from_utf8_lossy(&request).to_ascii_lowercase()
        });
        (url, asked)
    }

    fn client_of(base: &str, proxy: Option<Url>) -> Client {
        let mut config = Config::new(Url::parse(base).expect("url"), Some("sk-test".into()));
        config.referer = Some("https://studio.example".into());
        config.title = Some("Studio".into());
        Client::with_proxies(config, &Proxies::Given(proxy)).expect("client")
    }

    const CHAT_BODY: &[u8] = br#"{"model":"m","messages":[]}"#;

    /// Sends a chat that `one_shot_server` answers; returns what it was asked.
    async fn chat_and_see(client: &Client, asked: tokio::task::JoinHandle<String>) -> String {
        let answer = client
            .chat_raw(Bytes::from_static(CHAT_BODY))
            .await
            .expect("answer");
        assert_eq!(answer.model.as_deref(), Some("m/served"));
        asked.await.expect("server task")
    }

    #[tokio::test]
    async fn chat_goes_straight_with_every_header() {
        let (upstream, asked) = one_shot_server().await;
        let client = client_of(&format!("{upstream}api/v1"), None);
        assert!(
            matches!(*client.chat, ChatRoute::Direct(_)),
            "no proxy applies: chat goes by the direct client"
        );
        let asked = chat_and_see(&client, asked).await;
        assert!(
            asked.starts_with("post /api/v1/chat/completions http/1.1\r\n"),
            "{asked}"
        );
        for header in [
            "authorization: bearer sk-test",
            "content-type: application/json",
            concat!("user-agent: atelier/", env!("CARGO_PKG_VERSION")),
            "http-referer: https://studio.example",
            "x-openrouter-title: studio",
            "content-length: 27",
            "host: 127.0.0.1:",
        ] {
            assert!(
                asked.contains(&format!("\r\n{header}")),
                "no {header:?} in {asked}"
            );
        }
    }

    #[tokio::test]
    async fn chat_goes_through_a_proxy_when_one_applies() {
        let (proxy, asked) = one_shot_server().await;
        let client = client_of("http://upstream.invalid/api/v1", Some(proxy));
        assert!(
            matches!(*client.chat, ChatRoute::Reqwest(_)),
            "the direct client cannot use a proxy"
        );
        let asked = chat_and_see(&client, asked).await;
        assert!(
            asked.starts_with("post http://upstream.invalid/api/v1/chat/completions http/1.1\r\n"),
            "{asked}"
        );
        assert!(asked.contains("\r\nauthorization: bearer sk-test"), "{asked}");
        assert!(asked.contains("\r\nx-openrouter-title: studio"), "{asked}");
    }

    /// A listener whose accept queue is full: the kernel drops further SYNs,
    /// so a connect to it hangs until the caller gives up. Kept alive by the
    /// returned sockets.
    fn unanswering_listener() -> (Url, tokio::net::TcpListener, Vec<std::net::TcpStream>) {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let listener = socket.listen(0).expect("listen");
        let addr = listener.local_addr().expect("addr");
        // A backlog of 0 still queues a connection or two; fill it until a
        // connect times out, which is what the client must then meet.
        let mut queued = Vec::new();
        for _ in 0..8 {
            match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Ok(stream) => queued.push(stream),
                Err(e) => {
                    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
                    let url = Url::parse(&format!("http://{addr}/api/v1")).expect("url");
                    return (url, listener, queued);
                }
            }
        }
        panic!("the accept queue never filled");
    }

    #[tokio::test]
    async fn a_connect_that_hangs_is_a_connect_timeout_and_a_refused_one_is_unreachable() {
        let (upstream, _listener, _queued) = unanswering_listener();
        let mut config = Config::new(upstream, Some("sk-test".into()));
        config.connect_timeout = Duration::from_millis(300);
        config.max_retries = 0;
        let client = Client::with_proxies(config.clone(), &Proxies::Given(None)).expect("client");
        assert!(
            matches!(*client.chat, ChatRoute::Direct(_)),
            "chat goes by the direct client"
        );
        let started = std::time::Instant::now();
        let err = client
            .chat_raw(Bytes::from_static(CHAT_BODY))
            .await
            .expect_err("nobody answers");
        assert!(
            matches!(err, UpstreamError::Timeout(TimeoutKind::Connect)),
            "{err:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );

        // A port nobody listens on refuses at once: not a timeout.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = closed.local_addr().expect("addr").port();
        drop(closed);
        config.base_url = Url::parse(&format!("http://127.0.0.1:{port}/api/v1")).expect("url");
        let client = Client::with_proxies(config, &Proxies::Given(None)).expect("client");
        let err = client
            .chat_raw(Bytes::from_static(CHAT_BODY))
            .await
            .expect_err("refused");
        assert!(matches!(err, UpstreamError::Unreachable(_)), "{err:?}");
    }

    fn read(json: &str) -> Result<RawAnswer> {
        RawAnswer::read(Bytes::from(json.to_owned()))
    }

    #[test]
    fn a_raw_answer_keeps_its_bytes_and_reads_model_and_usage() {
        let json = r#"{"id":"g-1","model":"m/served","choices":[{"message":{"content":"hi"}}],
                       "usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5,"cost":0.5}}"#;
        let answer = read(json).expect("answer");
        assert_eq!(answer.bytes, json.as_bytes());
        assert_eq!(answer.model.as_deref(), Some("m/served"));
        let usage = answer.usage.expect("usage");
        assert_eq!(
            (usage.prompt_tokens, usage.completion_tokens, usage.cost),
            (3, 2, Some(0.5))
        );
    }

    #[test]
    fn odd_model_or_usage_is_left_out_and_errors_in_a_200_are_errors() {
        let odd = read(r#"{"model":7,"choices":[],"usage":{"prompt_tokens":"many"}}"#).expect("answer");
        assert_eq!((odd.model, odd.usage), (None, None));
        let err = read(r#"{"error":{"code":429,"message":"slow down"},"user_id":"u"}"#).expect_err("error");
        assert_eq!(err.status(), Some(429));
        assert!(err.to_string().contains("slow down"), "{err}");
        // An `error` beside the choices is part of an answer.
        assert!(read(r#"{"error":{"code":1},"choices":[]}"#).is_ok());
        assert!(matches!(read("not json"), Err(UpstreamError::InvalidResponse(_))));
    }
}
