//! Settings: one typed struct, from defaults < the TOML file < `ATELIER_*` variables.
//!
//! Environment variables name a key in upper case, with `__` between a section and
//! its key: `ATELIER_BIND` sets `bind`, `ATELIER_AUTH__ACCESS_TOKEN_TTL` sets
//! `auth.access_token_ttl`. A variable's text is read as the type the key has (a
//! number, a boolean, a duration like `5m`), so a password of digits stays a string.
//! Unknown keys in the file or in a known section are errors, to catch typos.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use atelier_store::DatabaseUrl;

use crate::service::limits::Rate;
use crate::service::routing::RoutingSettings;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Prefix of the environment variables that set keys.
const ENV_PREFIX: &str = "ATELIER_";
/// Variables with names of their own (conventional, or named in the docs).
const ENV_ALIASES: &[(&str, &[&str])] = &[
    ("OPENROUTER_API_KEY", &["upstream", "api_key"]),
    ("OPENROUTER_BASE_URL", &["upstream", "base_url"]),
    ("ATELIER_MEDIA_DIR", &["media", "dir"]),
];
/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "atelier.toml";

/// The effective configuration of one atelier process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Address the HTTP server listens on.
    pub bind: SocketAddr,
    /// How long a client may take to send a request's headers; a keep-alive
    /// connection that waits this long for its next request is closed too. A
    /// client that trickles its headers (slow-loris) cannot hold connections
    /// open. 1 s–10 min.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// `duckdb://PATH` (embedded, the default) or `postgres://…`.
    #[serde(with = "database_url")]
    pub database_url: DatabaseUrl,
    /// PostgreSQL connections this instance may hold (one of them listens for other
    /// instances' changes); unused with DuckDB.
    pub database_max_connections: u32,
    /// Whether anyone may create an account with `POST /auth/register`.
    pub registration: Registration,
    /// `text` for people, `json` for log collectors.
    pub log_format: LogFormat,
    /// Log filter in `tracing` syntax, e.g. `info` or `atelier=debug,info`.
    pub log_level: String,
    /// Key for signing access tokens (at least 32 bytes). When unset, one is generated
    /// once and kept in the database, so restarts and other instances share it.
    pub jwt_secret: Option<Secret>,
    /// With `admin_password`: create this admin at start-up if no such user exists.
    pub admin_email: Option<String>,
    pub admin_password: Option<Secret>,
    /// Where people reach atelier, e.g. `https://atelier.example.com`, for absolute
    /// links in answers (signed media URLs). Unset: taken from each request's
    /// `Host` (and `X-Forwarded-Proto` when proxy headers are trusted).
    pub public_url: Option<String>,
    /// Take the client address from `X-Forwarded-For` (only behind a reverse proxy you
    /// control; otherwise clients could pick their own address for login throttling).
    pub trust_proxy_headers: bool,
    pub runtime: RuntimeSettings,
    pub auth: AuthSettings,
    pub upstream: UpstreamSettings,
    pub media: MediaSettings,
    pub video: VideoSettings,
    pub web: WebSettings,
    /// Redis for limits shared by several instances; unset keeps them in memory.
    pub redis_url: Option<Secret>,
    pub limits: LimitsSettings,
    pub budgets: BudgetsSettings,
    /// Aliases, strategies and per-role model restrictions (also `models.toml`).
    pub routing: RoutingSettings,
    /// A file with the routing settings at its top level, read if it exists; it
    /// replaces the `[routing]` section.
    pub routing_file: PathBuf,
    /// Set by `serve --demo`, never by configuration: the upstream is the built-in mock.
    #[serde(skip)]
    pub demo: bool,
}

/// Requests allowed per role and scope, as `N/period` (`60/1m`); unset is unlimited.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSettings {
    /// Login attempts per client address.
    pub login: Option<Rate>,
    pub user: RoleLimits,
    pub admin: RoleLimits,
    /// Start of the Redis keys, so deployments can share one Redis.
    pub redis_prefix: String,
}

impl Default for LimitsSettings {
    fn default() -> Self {
        LimitsSettings {
            login: "60/1m".parse().ok(),
            user: RoleLimits {
                chat: "120/1m".parse().ok(),
                images: "30/1m".parse().ok(),
                videos: "10/1h".parse().ok(),
            },
            admin: RoleLimits::default(),
            redis_prefix: "atelier".into(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoleLimits {
    /// Chat and text generation (REST and `/v1`).
    pub chat: Option<Rate>,
    pub images: Option<Rate>,
    pub videos: Option<Rate>,
}

/// Spending and request caps per role; unset is unlimited. Admins override them
/// per user.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetsSettings {
    pub user: RoleBudget,
    pub admin: RoleBudget,
    /// Held per request while its real cost is unknown, when the model's prices are
    /// not known: chat and text, images, videos (USD).
    pub estimate_chat_usd: f64,
    pub estimate_image_usd: f64,
    pub estimate_video_usd: f64,
}

impl Default for BudgetsSettings {
    fn default() -> Self {
        BudgetsSettings {
            user: RoleBudget {
                daily_usd: Some(5.0),
                monthly_usd: Some(50.0),
                daily_requests: None,
                monthly_requests: None,
            },
            admin: RoleBudget::default(),
            estimate_chat_usd: 0.01,
            estimate_image_usd: 0.05,
            estimate_video_usd: 0.5,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoleBudget {
    pub daily_usd: Option<f64>,
    pub monthly_usd: Option<f64>,
    pub daily_requests: Option<u64>,
    pub monthly_requests: Option<u64>,
}

/// The web studio.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSettings {
    /// Mark session cookies `Secure`: `auto` does so for requests that arrived over
    /// HTTPS (as told by a trusted proxy's `X-Forwarded-Proto`), `always` for every
    /// request (behind TLS), `never` for none.
    pub secure_cookies: CookieSecurity,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CookieSecurity {
    #[default]
    Auto,
    Always,
    Never,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            header_timeout: Duration::from_secs(30),
            database_url: DatabaseUrl::DuckDb(PathBuf::from("./data/atelier.duckdb")),
            database_max_connections: 16,
            registration: Registration::Open,
            log_format: LogFormat::Text,
            log_level: "info".into(),
            jwt_secret: None,
            admin_email: None,
            admin_password: None,
            public_url: None,
            trust_proxy_headers: false,
            runtime: RuntimeSettings::default(),
            auth: AuthSettings::default(),
            upstream: UpstreamSettings::default(),
            media: MediaSettings::default(),
            video: VideoSettings::default(),
            web: WebSettings::default(),
            redis_url: None,
            limits: LimitsSettings::default(),
            budgets: BudgetsSettings::default(),
            routing: RoutingSettings::default(),
            routing_file: PathBuf::from("models.toml"),
            demo: false,
        }
    }
}

/// How the server spends its cores: the threads that serve requests, and how
/// often the usage writer runs beside them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeSettings {
    /// Threads that run the async work (every request passes through one); 0 is
    /// one per core. Database calls and file reads run on other threads.
    pub worker_threads: usize,
    /// How connections are shared among those threads (ADR-0035).
    pub connections: Connections,
    /// The scheduling slice the async workers (and the accept loop) ask the
    /// kernel for (Linux 6.12 and later; `0s` keeps the kernel's default, 0.7
    /// ms times 1 + log2 of the cores, at most 2.8 ms). A short one lets a worker
    /// that wakes take a core at once from a thread with a longer slice, rather
    /// than after that thread has used its slice up. 0.1–100 ms.
    #[serde(with = "humantime_serde")]
    pub thread_slice: Duration,
    /// The slice of the threads that work in long stretches: database calls,
    /// file reads (the blocking pool) and password hashes (whose threads the
    /// blocking pool starts). Longer than the workers' and than the kernel's
    /// default, so that any other thread that wakes, atelier's or another
    /// process's, preempts them (ADR-0029). `0s`: the kernel's default; else
    /// 0.1–100 ms.
    #[serde(with = "humantime_serde")]
    pub background_slice: Duration,
    /// How long usage records (and audit-log rows) wait in memory before they
    /// are written together (sooner once 2,048 are waiting). Each write has a
    /// fixed cost (with DuckDB, a transaction and an appender, computed on
    /// atelier's own cores), so fewer, larger writes cost less; what is still
    /// waiting is written at shutdown, and the history and the admin statistics
    /// write it before reading. Budgets count spend at once, in memory; audit
    /// events are logged at once. 10 ms–1 min.
    #[serde(with = "humantime_serde")]
    pub usage_write_interval: Duration,
    /// With DuckDB, write those batches on a thread at idle priority
    /// (`SCHED_IDLE`), on what the requests leave of the cores (ADR-0034). A
    /// request's own write can wait behind a batch that gets no CPU while
    /// every core is busy; `false` runs the batches at normal priority.
    pub idle_batch_writes: bool,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        RuntimeSettings {
            worker_threads: 0,
            connections: Connections::Pinned,
            thread_slice: Duration::from_micros(100),
            background_slice: Duration::from_millis(4),
            usage_write_interval: Duration::from_secs(1),
            idle_batch_writes: true,
        }
    }
}

/// Which of the worker threads serves a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Connections {
    /// The thread that accepts a connection serves it to the end, on a runtime
    /// of its own, with its own pool of upstream connections: a request never
    /// waits for another thread to be woken. Background work runs on one more
    /// thread.
    Pinned,
    /// Any worker serves any connection's next step (tokio's work stealing): a
    /// connection that keeps one thread busy cannot hold up the others behind
    /// it, at the cost of hand-offs between threads.
    Shared,
}

/// The model provider: OpenRouter or any OpenAI-compatible server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamSettings {
    /// Base URL of the API (also `OPENROUTER_BASE_URL`).
    pub base_url: String,
    /// The operator's key (also `OPENROUTER_API_KEY`). Without one, generation
    /// answers 503 `upstream_not_configured`.
    pub api_key: Option<Secret>,
    /// Attribution headers sent upstream (`HTTP-Referer`, `X-OpenRouter-Title`).
    pub referer: Option<String>,
    pub title: Option<String>,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Until the upstream starts answering.
    #[serde(with = "humantime_serde")]
    pub first_byte_timeout: Duration,
    /// Longest silence in the middle of a streamed answer.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Longest whole request, streamed answers included.
    #[serde(with = "humantime_serde")]
    pub total_timeout: Duration,
    /// Retries of transient failures (connection errors, 5xx, 429 with Retry-After),
    /// only before anything was sent to the client.
    pub max_retries: u32,
    /// How long the model list is cached.
    #[serde(with = "humantime_serde")]
    pub models_cache_ttl: Duration,
    /// How images are generated: `images` (the dedicated endpoint) or `chat` (chat
    /// completions with `modalities`, for servers without `/images`).
    pub image_endpoint: ImageEndpoint,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        UpstreamSettings {
            base_url: "https://openrouter.ai/api/v1".into(),
            api_key: None,
            referer: None,
            title: Some("atelier".into()),
            connect_timeout: Duration::from_secs(10),
            first_byte_timeout: Duration::from_secs(120),
            idle_timeout: Duration::from_secs(120),
            total_timeout: Duration::from_secs(600),
            max_retries: 2,
            models_cache_ttl: Duration::from_secs(300),
            image_endpoint: ImageEndpoint::Images,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageEndpoint {
    Images,
    Chat,
}

/// Generated images and videos, and uploaded frames.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaSettings {
    /// Folder for media (also `ATELIER_MEDIA_DIR`); `memory:` keeps it in memory.
    /// Not used when `s3.bucket` is set.
    pub dir: String,
    /// Largest accepted image upload, in bytes.
    pub max_upload_bytes: u64,
    /// Media larger than this is written in parts of this size (S3 multipart), so
    /// that memory stays bounded whatever the size of a video.
    pub part_size_bytes: u64,
    /// S3-compatible object storage, shared by every instance.
    pub s3: S3Settings,
}

impl Default for MediaSettings {
    fn default() -> Self {
        MediaSettings {
            dir: "./data/media".into(),
            max_upload_bytes: 10 * 1024 * 1024,
            part_size_bytes: 10 * 1024 * 1024,
            s3: S3Settings::default(),
        }
    }
}

/// An S3-compatible bucket for media (AWS, MinIO, Garage, Ceph…).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Settings {
    /// The bucket; setting it moves media from `dir` to the bucket.
    pub bucket: Option<String>,
    /// The service's URL, e.g. `http://127.0.0.1:9000`; unset means AWS itself.
    pub endpoint: Option<String>,
    pub region: String,
    /// Credentials; unset means the usual AWS sources (environment, instance role).
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
    /// Prefix of every key in the bucket, e.g. `atelier/`.
    pub prefix: String,
}

impl Default for S3Settings {
    fn default() -> Self {
        S3Settings {
            bucket: None,
            endpoint: None,
            region: "us-east-1".into(),
            access_key_id: None,
            secret_access_key: None,
            prefix: String::new(),
        }
    }
}

/// The background worker that follows video jobs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VideoSettings {
    /// First wait between polls of a job; it doubles up to `poll_max_interval`.
    #[serde(with = "humantime_serde")]
    pub poll_min_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub poll_max_interval: Duration,
    /// How long one instance owns a job while polling it; another instance takes
    /// over a job whose owner vanished once this has passed.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// How often the worker looks for due jobs.
    #[serde(with = "humantime_serde")]
    pub tick: Duration,
    /// A job still unfinished after this long is given up as expired.
    #[serde(with = "humantime_serde")]
    pub max_job_age: Duration,
}

impl Default for VideoSettings {
    fn default() -> Self {
        VideoSettings {
            poll_min_interval: Duration::from_secs(5),
            poll_max_interval: Duration::from_secs(30),
            lease: Duration::from_secs(60),
            tick: Duration::from_secs(1),
            max_job_age: Duration::from_secs(6 * 3600),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Registration {
    Open,
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Tokens, passwords and login throttling.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// Lifetime of an access token (JWT).
    #[serde(with = "humantime_serde")]
    pub access_token_ttl: Duration,
    /// A refresh token not used for this long expires.
    #[serde(with = "humantime_serde")]
    pub refresh_idle_ttl: Duration,
    /// A login's refresh tokens all expire this long after the login, however used.
    #[serde(with = "humantime_serde")]
    pub refresh_absolute_ttl: Duration,
    /// Clock skew tolerated when checking token times; at most 30 s.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// `iss` claim of access tokens.
    pub issuer: String,
    /// `aud` claim of access tokens.
    pub audience: String,
    /// Argon2id memory cost in KiB (at least 19456).
    pub argon2_memory_kib: u32,
    /// Argon2id iterations (at least 2).
    pub argon2_iterations: u32,
    /// Argon2id lanes (at least 1).
    pub argon2_parallelism: u32,
    /// Password hashes computed at once; 0 means one per CPU core but one (at
    /// least one), so logins never take every core.
    pub hash_concurrency: usize,
    /// Failed logins for one account before each further one is delayed.
    pub backoff_account_free_failures: u32,
    /// Failed logins from one client address before each further one is delayed.
    pub backoff_ip_free_failures: u32,
    /// First delay after the free failures; it doubles with each further failure.
    #[serde(with = "humantime_serde")]
    pub backoff_base_delay: Duration,
    /// The delay never grows beyond this: there is no permanent lockout.
    #[serde(with = "humantime_serde")]
    pub backoff_max_delay: Duration,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            access_token_ttl: Duration::from_secs(5 * 60),
            refresh_idle_ttl: Duration::from_secs(7 * 24 * 3600),
            refresh_absolute_ttl: Duration::from_secs(30 * 24 * 3600),
            leeway: Duration::from_secs(30),
            issuer: "atelier".into(),
            audience: "atelier".into(),
            argon2_memory_kib: 19_456,
            argon2_iterations: 2,
            argon2_parallelism: 1,
            hash_concurrency: 0,
            backoff_account_free_failures: 5,
            backoff_ip_free_failures: 20,
            backoff_base_delay: Duration::from_secs(1),
            backoff_max_delay: Duration::from_secs(15 * 60),
        }
    }
}

/// A value that must never be shown: `Debug` and serialisation print `[redacted]`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("[redacted]")
    }
}

/// Serialises with the password hidden; parses with the scheme checked.
mod database_url {
    use super::*;

    pub fn serialize<S: Serializer>(url: &DatabaseUrl, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(url)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DatabaseUrl, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid configuration file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid value in {var}: {message}")]
    Env { var: String, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Settings and where they came from, for the start-up summary.
#[derive(Debug)]
pub struct Loaded {
    pub settings: Settings,
    /// The file that was read, if any.
    pub file: Option<PathBuf>,
    /// Names of the `ATELIER_*` variables that set a key.
    pub env_keys: Vec<String>,
}

/// Loads the settings: `path` if given (it must exist), otherwise `atelier.toml` in
/// the working directory if present; then the environment.
pub fn load(path: Option<&Path>) -> Result<Loaded, ConfigError> {
    load_from(path, std::env::vars())
}

fn load_from(
    path: Option<&Path>,
    env: impl Iterator<Item = (String, String)>,
) -> Result<Loaded, ConfigError> {
    let defaults =
        toml::Table::try_from(Settings::default()).map_err(|e| ConfigError::Invalid(e.to_string()))?;
    let mut merged = defaults.clone();

    let file = match path {
        Some(p) => Some(p.to_path_buf()),
        None => Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|p| p.exists()),
    };
    if let Some(file) = &file {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            path: file.clone(),
            source,
        })?;
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError::Parse {
            path: file.clone(),
            message: e.message().to_owned(),
        })?;
        merge(&mut merged, table);
    }

    let mut env_keys = Vec::new();
    let mut overlay = toml::Table::new();
    for (var, value) in env {
        let path: Vec<String> = if let Some(alias) = ENV_ALIASES.iter().find(|(name, _)| *name == var) {
            alias.1.iter().map(|s| (*s).to_owned()).collect()
        } else if let Some(key) = var.strip_prefix(ENV_PREFIX) {
            key.split("__").map(str::to_lowercase).collect()
        } else {
            continue;
        };
        // Only variables naming a known key or section are settings; others
        // (ATELIER_TEST_…, say) belong to someone else.
        if !defaults.contains_key(&path[0]) && !is_optional_key(&path[0]) {
            continue;
        }
        let typed = typed_env_value(&defaults, &path, &value).map_err(|message| ConfigError::Env {
            var: var.clone(),
            message,
        })?;
        insert_path(&mut overlay, &path, typed);
        env_keys.push(var);
    }
    merge(&mut merged, overlay);
    env_keys.sort();

    let settings = Settings::deserialize(toml::Value::Table(merged)).map_err(|e| {
        let message = e.to_string();
        match &file {
            Some(path) => ConfigError::Parse {
                path: path.clone(),
                message,
            },
            None => ConfigError::Invalid(message),
        }
    })?;
    let mut settings = settings;
    if settings.routing_file.exists() {
        let text = std::fs::read_to_string(&settings.routing_file).map_err(|source| ConfigError::Read {
            path: settings.routing_file.clone(),
            source,
        })?;
        settings.routing = toml::from_str(&text).map_err(|e: toml::de::Error| ConfigError::Parse {
            path: settings.routing_file.clone(),
            message: e.message().to_owned(),
        })?;
    }
    settings.validate()?;
    Ok(Loaded {
        settings,
        file,
        env_keys,
    })
}

/// Top-level keys whose default is unset, so they are absent from the defaults table.
fn is_optional_key(key: &str) -> bool {
    matches!(key, "jwt_secret" | "admin_email" | "admin_password" | "redis_url")
}

/// Reads `text` as the type the default value at `path` has; unset keys are strings.
fn typed_env_value(defaults: &toml::Table, path: &[String], text: &str) -> Result<toml::Value, String> {
    // Keys unset by default (secrets, optional names) are absent from the table: strings.
    let mut current: Option<&toml::Value> = None;
    let mut table = Some(defaults);
    for segment in path {
        current = table.and_then(|t| t.get(segment));
        table = current.and_then(toml::Value::as_table);
    }
    match current {
        Some(toml::Value::Boolean(_)) => match text.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(toml::Value::Boolean(true)),
            "false" | "0" | "no" | "off" => Ok(toml::Value::Boolean(false)),
            _ => Err(format!("expected true or false, got {text:?}")),
        },
        Some(toml::Value::Integer(_)) => text
            .trim()
            .parse()
            .map(toml::Value::Integer)
            .map_err(|_| format!("expected a whole number, got {text:?}")),
        Some(toml::Value::Table(_)) => Err("names a section, not a key".into()),
        _ => Ok(toml::Value::String(text.to_owned())),
    }
}

fn insert_path(table: &mut toml::Table, path: &[String], value: toml::Value) {
    match path {
        [] => {}
        [last] => {
            table.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = table
                .entry(first.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(inner) = entry {
                insert_path(inner, rest, value);
            }
        }
    }
}

/// Deep merge: tables merge key by key, anything else in `over` replaces.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

impl Settings {
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let a = &self.auth;
        if self.jwt_secret.as_ref().is_some_and(|s| s.expose().len() < 32) {
            return invalid("jwt_secret must be at least 32 bytes long".into());
        }
        if self.admin_email.is_some() != self.admin_password.is_some() {
            return invalid("admin_email and admin_password must be set together".into());
        }
        if a.leeway > Duration::from_secs(30) {
            return invalid("auth.leeway must be at most 30s".into());
        }
        if a.access_token_ttl < Duration::from_secs(1) {
            return invalid("auth.access_token_ttl must be at least 1s".into());
        }
        for (name, slice) in [
            ("thread_slice", self.runtime.thread_slice),
            ("background_slice", self.runtime.background_slice),
        ] {
            if !slice.is_zero() && !(Duration::from_micros(100)..=Duration::from_millis(100)).contains(&slice)
            {
                return invalid(format!(
                    "runtime.{name} must be 0s (the kernel's default) or 100us to 100ms"
                ));
            }
        }
        if !(Duration::from_millis(10)..=Duration::from_secs(60)).contains(&self.runtime.usage_write_interval)
        {
            return invalid("runtime.usage_write_interval must be 10ms to 1min".into());
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(600)).contains(&self.header_timeout) {
            return invalid("header_timeout must be 1s to 10min".into());
        }
        if self.database_max_connections < 2 {
            return invalid("database_max_connections must be at least 2 (one listens for changes)".into());
        }
        if self.media.part_size_bytes < 5 * 1024 * 1024 {
            return invalid("media.part_size_bytes must be at least 5 MiB (S3's smallest part)".into());
        }
        if self.media.s3.bucket.as_ref().is_some_and(|b| b.trim().is_empty()) {
            return invalid("media.s3.bucket is empty; remove it to keep media in media.dir".into());
        }
        if self.media.s3.access_key_id.is_some() != self.media.s3.secret_access_key.is_some() {
            return invalid("media.s3.access_key_id and secret_access_key must be set together".into());
        }
        if a.refresh_idle_ttl > a.refresh_absolute_ttl {
            return invalid("auth.refresh_idle_ttl cannot exceed auth.refresh_absolute_ttl".into());
        }
        if a.argon2_memory_kib < 19_456 || a.argon2_iterations < 2 || a.argon2_parallelism < 1 {
            return invalid(
                "argon2 parameters below the minimum (memory 19456 KiB, 2 iterations, 1 lane)".into(),
            );
        }
        if a.backoff_base_delay > a.backoff_max_delay {
            return invalid("auth.backoff_base_delay cannot exceed auth.backoff_max_delay".into());
        }
        if url::Url::parse(&self.upstream.base_url).is_err() {
            return invalid(format!(
                "upstream.base_url is not a URL: {:?}",
                self.upstream.base_url
            ));
        }
        crate::service::routing::ModelRouter::new(self.routing.clone()).map_err(ConfigError::Invalid)?;
        let v = &self.video;
        if v.poll_min_interval.is_zero() || v.poll_min_interval > v.poll_max_interval || v.tick.is_zero() {
            return invalid("video: need 0 < poll_min_interval <= poll_max_interval and tick > 0".into());
        }
        Ok(())
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Iterator<Item = (String, String)> {
        vars.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>()
            .into_iter()
    }

    fn write(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), text).expect("write");
        file
    }

    #[test]
    fn defaults_then_file_then_environment() {
        let file =
            write("bind = \"0.0.0.0:9000\"\nregistration = \"closed\"\n[auth]\naccess_token_ttl = \"10m\"\n");
        let loaded = load_from(
            Some(file.path()),
            env(&[
                ("ATELIER_BIND", "127.0.0.1:7000"),
                ("ATELIER_AUTH__REFRESH_IDLE_TTL", "1day"),
                ("ATELIER_TRUST_PROXY_HEADERS", "true"),
                ("ATELIER_TEST_SOMETHING", "ignored"),
                ("PATH", "/bin"),
            ]),
        )
        .expect("loads");
        let s = loaded.settings;
        assert_eq!(s.bind.to_string(), "127.0.0.1:7000", "env beats file");
        assert_eq!(s.registration, Registration::Closed, "file beats default");
        assert_eq!(s.auth.access_token_ttl, Duration::from_secs(600));
        assert_eq!(s.auth.refresh_idle_ttl, Duration::from_secs(86_400));
        assert!(s.trust_proxy_headers);
        assert_eq!(s.log_format, LogFormat::Text, "default kept");
        assert_eq!(
            loaded.env_keys,
            vec![
                "ATELIER_AUTH__REFRESH_IDLE_TTL",
                "ATELIER_BIND",
                "ATELIER_TRUST_PROXY_HEADERS"
            ]
        );
    }

    #[test]
    fn secrets_of_digits_stay_strings_and_are_never_printed() {
        let loaded = load_from(
            None,
            env(&[
                ("ATELIER_ADMIN_EMAIL", "root@example.com"),
                ("ATELIER_ADMIN_PASSWORD", "123456789012345"),
                ("ATELIER_JWT_SECRET", "[0123456789abcdef0123456789abcdef]"),
                ("ATELIER_DATABASE_URL", "postgres://app:hunter2hunter2@db/atelier"),
            ]),
        )
        .expect("loads");
        let s = &loaded.settings;
        assert_eq!(
            s.admin_password.as_ref().map(Secret::expose),
            Some("123456789012345")
        );
        let shown = format!("{}\n{s:?}", s.to_redacted_toml());
        for secret in ["123456789012345", "0123456789abcdef", "hunter2hunter2"] {
            assert!(!shown.contains(secret), "{secret} leaked into:\n{shown}");
        }
        assert!(shown.contains("[redacted]"));
    }

    #[test]
    fn typos_and_bad_values_are_errors() {
        let file = write("[auth]\naccess_token_tll = \"5m\"\n");
        let err = load_from(Some(file.path()), env(&[])).expect_err("typo in file");
        assert!(err.to_string().contains("access_token_tll"), "{err}");

        let err = load_from(None, env(&[("ATELIER_AUTH__NOPE", "1")])).expect_err("typo in env");
        assert!(err.to_string().contains("nope"), "{err}");

        let err = load_from(None, env(&[("ATELIER_TRUST_PROXY_HEADERS", "maybe")])).expect_err("bad boolean");
        assert!(err.to_string().contains("ATELIER_TRUST_PROXY_HEADERS"), "{err}");

        let err = load_from(None, env(&[("ATELIER_DATABASE_URL", "mysql://x")])).expect_err("scheme");
        assert!(err.to_string().contains("mysql"), "{err}");

        let err = load_from(None, env(&[("ATELIER_JWT_SECRET", "short")])).expect_err("short key");
        assert!(err.to_string().contains("32 bytes"), "{err}");

        let err = load_from(None, env(&[("ATELIER_AUTH__LEEWAY", "1m")])).expect_err("leeway");
        assert!(err.to_string().contains("30s"), "{err}");

        let err = load_from(None, env(&[("ATELIER_RUNTIME__USAGE_WRITE_INTERVAL", "0s")]))
            .expect_err("usage written in a busy loop");
        assert!(err.to_string().contains("usage_write_interval"), "{err}");

        let err = load_from(None, env(&[("ATELIER_HEADER_TIMEOUT", "0s")])).expect_err("no header timeout");
        assert!(err.to_string().contains("header_timeout"), "{err}");

        let err =
            load_from(None, env(&[("ATELIER_AUTH__ARGON2_MEMORY_KIB", "1024")])).expect_err("weak argon2");
        assert!(err.to_string().contains("argon2"), "{err}");

        let err =
            load_from(None, env(&[("ATELIER_DATABASE_MAX_CONNECTIONS", "1")])).expect_err("pool of one");
        assert!(err.to_string().contains("database_max_connections"), "{err}");
        let err =
            load_from(None, env(&[("ATELIER_MEDIA__PART_SIZE_BYTES", "1024")])).expect_err("tiny parts");
        assert!(err.to_string().contains("part_size_bytes"), "{err}");
    }

    #[test]
    fn the_example_file_documents_every_key_with_its_default() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config.example.toml");
        let loaded = load_from(Some(&example), env(&[])).expect("the example loads");
        assert_eq!(
            loaded.settings.to_redacted_toml(),
            Settings::default().to_redacted_toml()
        );

        // Every key of the defaults appears in the example, set or commented out.
        let text = std::fs::read_to_string(&example).expect("read example");
        let defaults = toml::Table::try_from(Settings::default()).expect("table");
        fn leaves(table: &toml::Table, out: &mut Vec<String>) {
            for (k, v) in table {
                match v.as_table() {
                    Some(inner) => leaves(inner, out),
                    None => out.push(k.clone()),
                }
            }
        }
        let mut keys: Vec<String> = Vec::new();
        leaves(&defaults, &mut keys);
        keys.extend(
            [
                "jwt_secret",
                "admin_email",
                "admin_password",
                "redis_url",
                "api_key",
                "referer",
                "bucket",
                "endpoint",
                "access_key_id",
                "secret_access_key",
            ]
            .map(String::from),
        );
        for key in keys {
            assert!(
                text.contains(&format!("{key} =")),
                "config.example.toml does not document {key}"
            );
        }
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        let err =
            load_from(Some(Path::new("/nonexistent/atelier.toml")), env(&[])).expect_err("missing file");
        assert!(matches!(err, ConfigError::Read { .. }), "{err}");
    }
}
