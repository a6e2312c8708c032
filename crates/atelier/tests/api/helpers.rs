//! The test harness: a real atelier server on 127.0.0.1:0 with its own DuckDB file,
//! and a real HTTP client. Logs are silent unless `TEST_LOG` is set.

use std::net::SocketAddr;
use std::sync::Arc;

use std::time::Duration;

use atelier::app::{self, App};
use atelier::config::{Registration, Secret, Settings};
use atelier_mock_upstream::{MockConfig, MockUpstream};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "admin-horse-battery-staple";
/// Tests sign their own tokens with this key to forge expired or mis-addressed ones.
pub const JWT_SECRET: &str = "test-signing-key-0123456789abcdef0123";

pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub settings: Settings,
    /// The offline upstream this server talks to; it survives restarts.
    pub mock: Arc<MockUpstream>,
    dir: Arc<tempfile::TempDir>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

/// A signed-in user and their tokens.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: String,
    pub email: String,
    pub password: String,
    pub access: String,
    pub refresh: String,
}

/// A response read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    /// The stable error code of an error body.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("<no error code>")
    }

    #[track_caller]
    pub fn expect(self, status: StatusCode) -> Self {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.text);
        self
    }

    #[track_caller]
    pub fn expect_error(self, status: StatusCode, code: &str) -> Self {
        assert_eq!((self.status, self.code()), (status, code), "body: {}", self.text);
        assert!(
            self.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "error without a message: {}",
            self.text
        );
        self
    }
}

fn init_logs() {
    if std::env::var_os("TEST_LOG").is_some() {
        atelier::telemetry::init(atelier::config::LogFormat::Text, "debug");
    }
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// Starts a server whose settings `configure` may change first.
    pub async fn spawn_with(configure: impl FnOnce(&mut Settings)) -> Self {
        Self::spawn_custom(MockConfig::default(), configure).await
    }

    /// Starts a mock upstream with `mock`, then a server on it.
    pub async fn spawn_custom(mock: MockConfig, configure: impl FnOnce(&mut Settings)) -> Self {
        init_logs();
        let mock = Arc::new(MockUpstream::start(mock).await.expect("mock upstream"));
        let dir = Arc::new(tempfile::tempdir().expect("temporary folder"));
        let mut settings = Settings {
            database_url: atelier_store::DatabaseUrl::DuckDb(dir.path().join("atelier.duckdb")),
            registration: Registration::Open,
            admin_email: Some(ADMIN_EMAIL.into()),
            admin_password: Some(Secret::new(ADMIN_PASSWORD)),
            jwt_secret: Some(Secret::new(JWT_SECRET)),
            ..Settings::default()
        };
        settings.upstream.base_url = mock.base_url();
        settings.upstream.api_key = Some(Secret::new(mock.api_key()));
        settings.upstream.first_byte_timeout = Duration::from_secs(10);
        settings.media.dir = dir.path().join("media").display().to_string();
        settings.video.poll_min_interval = Duration::from_millis(50);
        settings.video.poll_max_interval = Duration::from_millis(100);
        settings.video.tick = Duration::from_millis(25);
        configure(&mut settings);
        Self::start(settings, dir, mock).await
    }

    async fn start(settings: Settings, dir: Arc<tempfile::TempDir>, mock: Arc<MockUpstream>) -> Self {
        let state = App::build(settings.clone()).await.expect("the app builds");
        state.bootstrap_admin().await.expect("the admin is created");
        // Registered after the database has been used, so that at exit it runs
        // before the destructors of what DuckDB set up so far.
        atelier::sys::run_at_exit(wait_for_dropped_servers);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(app::serve(state, listener, async move {
            let _ = rx.await;
        }));
        TestApp {
            addr,
            client: reqwest::Client::new(),
            settings,
            mock,
            dir,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Stops the server gracefully and waits until it has released the database.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("server stopped cleanly");
        }
    }

    /// Stops this server and starts a new one on the same database file.
    pub async fn restart(self) -> Self {
        self.restart_with(|_| {}).await
    }

    /// Like [`restart`](Self::restart), with changed settings.
    pub async fn restart_with(mut self, configure: impl FnOnce(&mut Settings)) -> Self {
        self.stop().await;
        let (mut settings, dir) = (self.settings.clone(), Arc::clone(&self.dir));
        configure(&mut settings);
        Self::start(settings, dir, Arc::clone(&self.mock)).await
    }

    pub fn db_path(&self) -> std::path::PathBuf {
        self.dir.path().join("atelier.duckdb")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn send(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Reply {
        send_to(&self.client, method, self.url(path), token, body).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.send(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        self.send(Method::POST, path, token, Some(body)).await
    }

    pub async fn put(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        self.send(Method::PUT, path, token, Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> Reply {
        self.send(Method::DELETE, path, token, None).await
    }

    pub async fn register(&self, email: &str, password: &str) -> Reply {
        self.post(
            "/auth/register",
            None,
            json!({"email": email, "password": password}),
        )
        .await
    }

    pub async fn login(&self, email: &str, password: &str) -> Reply {
        self.post("/auth/login", None, json!({"email": email, "password": password}))
            .await
    }

    pub async fn refresh(&self, refresh_token: &str) -> Reply {
        self.post("/auth/refresh", None, json!({"refresh_token": refresh_token}))
            .await
    }

    /// Registers a new user with a unique email and logs them in.
    pub async fn user(&self) -> TestUser {
        let email = format!("user-{}@example.com", uuid::Uuid::now_v7().simple());
        let password = "velvet otter quantum lantern".to_owned();
        let created = self.register(&email, &password).await.expect(StatusCode::CREATED);
        let mut user = self.sign_in(&email, &password).await;
        user.id = created.body["id"].as_str().expect("id").to_owned();
        user
    }

    /// Logs in the bootstrapped admin.
    pub async fn admin(&self) -> TestUser {
        let mut admin = self.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD).await;
        let me = self
            .get("/users/me", Some(&admin.access))
            .await
            .expect(StatusCode::OK);
        admin.id = me.body["id"].as_str().expect("id").to_owned();
        admin
    }

    pub async fn sign_in(&self, email: &str, password: &str) -> TestUser {
        let reply = self.login(email, password).await.expect(StatusCode::OK);
        TestUser {
            id: String::new(),
            email: email.to_owned(),
            password: password.to_owned(),
            access: reply.body["access_token"]
                .as_str()
                .expect("access token")
                .to_owned(),
            refresh: reply.body["refresh_token"]
                .as_str()
                .expect("refresh token")
                .to_owned(),
        }
    }
}

/// A test's server is dropped with the test's runtime, and its serving threads
/// end on their own, closing its DuckDB file: the test binary waits for them
/// before DuckDB's static destructors run.
extern "C" fn wait_for_dropped_servers() {
    atelier::http1::wait_for_dropped_threads(Duration::from_secs(10));
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// One request with an optional bearer token and JSON body, its answer read whole.
pub async fn send_to(
    client: &reqwest::Client,
    method: Method,
    url: String,
    token: Option<&str>,
    body: Option<Value>,
) -> Reply {
    let mut req = client.request(method, url);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    read(req.send().await.expect("request sent")).await
}

pub async fn read(response: reqwest::Response) -> Reply {
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.expect("response body");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        body,
        text,
    }
}

/// One server-sent event: its name and its JSON data.
pub type SseEvent = (String, Value);

/// Splits a whole event-stream body into events (comments skipped).
pub fn parse_sse(body: &str) -> Vec<SseEvent> {
    body.split("\n\n")
        .filter_map(|block| {
            let mut name = String::from("message");
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            (!data.is_empty()).then(|| (name, serde_json::from_str(&data).unwrap_or(Value::String(data))))
        })
        .collect()
}

impl TestApp {
    /// Posts a streaming chat and reads the whole event stream.
    pub async fn chat_stream(&self, token: &str, body: Value) -> (StatusCode, Vec<SseEvent>, String) {
        let response = self
            .client
            .post(self.url("/ai/chat"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("sent");
        let status = response.status();
        let text = response.text().await.expect("body");
        (status, parse_sse(&text), text)
    }

    /// Generates one image with `model` and returns the URL it is served at.
    pub async fn generate_image(&self, token: &str, model: &str, prompt: &str) -> String {
        let reply = self
            .post(
                "/generate/image",
                Some(token),
                json!({"model": model, "prompt": prompt}),
            )
            .await
            .expect(StatusCode::OK)
            .body;
        reply["images"][0]["url"].as_str().expect("image url").to_owned()
    }

    /// Downloads media with a token.
    pub async fn media(&self, url: &str, token: &str) -> reqwest::Response {
        self.client
            .get(self.url(url))
            .bearer_auth(token)
            .send()
            .await
            .expect("sent")
    }

    /// Polls a video job until it ends (or panics after `limit`).
    pub async fn wait_for_job(&self, token: &str, job_id: &str, limit: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let job = self
                .get(&format!("/generate/jobs/{job_id}"), Some(token))
                .await
                .expect(StatusCode::OK)
                .body;
            if matches!(
                job["status"].as_str(),
                Some("completed" | "failed" | "cancelled" | "expired")
            ) {
                return job;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "job never finished: {job}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl TestApp {
    /// Creates an API key for a signed-in user; returns its id and the key.
    pub async fn api_key(&self, user: &TestUser, body: Value) -> (String, String) {
        let created = self
            .post("/users/me/api-keys", Some(&user.access), body)
            .await
            .expect(StatusCode::CREATED);
        (
            created.body["id"].as_str().expect("id").to_owned(),
            created.body["key"].as_str().expect("key").to_owned(),
        )
    }

    /// Sends a request with the key in `X-API-Key`.
    pub async fn send_key(&self, method: Method, path: &str, key: &str, body: Option<Value>) -> Reply {
        let mut req = self
            .client
            .request(method, self.url(path))
            .header("x-api-key", key);
        if let Some(body) = body {
            req = req.json(&body);
        }
        read(req.send().await.expect("request sent")).await
    }

    /// A whole (non-streamed) `/v1` chat completion with a key.
    pub async fn v1_chat(&self, key: &str, model: &str, prompt: &str) -> Reply {
        self.post(
            "/v1/chat/completions",
            Some(key),
            json!({"model": model, "messages": [{"role": "user", "content": prompt}]}),
        )
        .await
    }

    /// A streamed `/v1` chat completion with a key: the status and the raw body.
    pub async fn v1_chat_stream(&self, key: &str, body: Value) -> (StatusCode, String) {
        let response = self
            .client
            .post(self.url("/v1/chat/completions"))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .expect("sent");
        let status = response.status();
        (status, response.text().await.expect("body"))
    }
}
