//! The application: its state, built in one place, and the HTTP server around it.

use std::collections::HashMap;
use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use atelier_store::{DatabaseUrl, MigrationReport, Role, Store};
use atelier_store_duckdb::{DuckDbStore, OpenOptions as DuckDbOpenOptions};
use atelier_store_postgres::{PgStore, PoolSettings};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::catch_panic::CatchPanicLayer;

use crate::auth::jwt::AccessTokens;
use crate::auth::media_url::MediaLinks;
use crate::auth::password::PasswordHasher;
use crate::auth::revocation::Revocations;
use crate::auth::throttle::{LoginThrottle, Policy};
use crate::config::{Connections, Settings};
use crate::error::{ApiError, StartupError};
use crate::service::Routing;
use crate::service::accounts::{Accounts, Bootstrap, SessionPolicy};
use crate::service::admin::AdminService;
use crate::service::audit::Audit;
use crate::service::budgets::{Budgets, Caps, caps_from_usd};
use crate::service::catalog::ModelCatalog;
use crate::service::chat::ChatService;
use crate::service::generate::Generator;
use crate::service::keys::ApiKeys;
use crate::service::limits::{LimitScope, LimitTable, RateLimiter};
use crate::service::media::MediaLibrary;
use crate::service::passthrough::Passthrough;
use crate::service::routing::ModelRouter;
use crate::service::usage::UsageRecorder;
use crate::service::video::VideoService;
use crate::web::Web;
use crate::{api, config, openai, web};

/// Largest JSON body accepted.
pub const BODY_LIMIT: usize = 1024 * 1024;
/// How long in-flight requests may take to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Name of the generated signing key in the store's secrets.
const JWT_SECRET_NAME: &str = "jwt_signing_key";

/// Shared state of the running application; cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<App>);

impl Deref for AppState {
    type Target = App;

    fn deref(&self) -> &App {
        &self.0
    }
}

pub struct App {
    /// The configuration this process runs with.
    pub settings: Settings,
    /// Persistent state: users, sessions, audit log.
    pub store: Arc<dyn Store>,
    /// Accounts, sessions and access-token checks.
    pub accounts: Accounts,
    /// Statistics and maintenance for administrators.
    pub admin: AdminService,
    /// The models on offer and the admins' allow-list.
    pub catalog: Arc<ModelCatalog>,
    /// Aliases, fallback chains and per-role model restrictions.
    pub routing: Routing,
    /// Live API keys, checked in memory.
    pub keys: Arc<ApiKeys>,
    /// Requests per principal and scope.
    pub limiter: RateLimiter,
    /// Spending and request caps per user.
    pub budgets: Arc<Budgets>,
    /// Conversations and chat.
    pub chat: ChatService,
    /// One-shot text and image generation, and the history.
    pub generator: Generator,
    /// Video jobs and their background worker.
    pub videos: VideoService,
    /// Generated and uploaded media.
    pub media: MediaLibrary,
    /// Signs and checks credential-free links to media.
    pub media_links: MediaLinks,
    /// Stateless chat for the OpenAI-compatible `/v1`.
    pub passthrough: Passthrough,
    /// The web studio's templates and session helpers.
    pub web: Web,
    /// Background tasks (usage writer, video worker, stream relays), awaited at shutdown.
    background: Background,
}

/// Tasks that outlive a request, the signal that stops them, and the usage and
/// audit writers, closed after them (they record to the end).
struct Background {
    tracker: TaskTracker,
    stop: CancellationToken,
    usage: UsageRecorder,
    audit: Audit,
}

impl App {
    /// Opens the store, loads keys and caches, and wires the services. Logs one
    /// summary line per subsystem; never a secret.
    pub async fn build(settings: Settings) -> Result<AppState, StartupError> {
        let (store, migrations) = open_store(&settings).await?;
        tracing::info!(
            "store: {}, schema version {}{}",
            settings.database_url,
            migrations.version,
            match migrations.applied {
                0 => String::new(),
                n => format!(" ({n} migration{} applied)", if n == 1 { "" } else { "s" }),
            }
        );

        let a = &settings.auth;
        let (secret, key_source) = signing_key(&settings, store.as_ref()).await?;
        let media_links = MediaLinks::new(&secret);
        let tokens = AccessTokens::new(&secret, a.access_token_ttl, a.leeway, &a.issuer, &a.audience);

        let (memory, iterations, lanes, concurrency) = (
            a.argon2_memory_kib,
            a.argon2_iterations,
            a.argon2_parallelism,
            a.hash_concurrency,
        );
        let hasher =
            tokio::task::spawn_blocking(move || PasswordHasher::new(memory, iterations, lanes, concurrency))
                .await
                .map_err(|e| setup("password hashing", e.into()))?
                .map_err(|e| setup("password hashing", e))?;

        let revocations = Revocations::default();
        revocations.replace_all(
            store
                .auth_states()
                .await
                .map_err(|e| setup("the revocation cache", e.into()))?,
        );
        let throttle = LoginThrottle::new(Policy {
            account_free_failures: a.backoff_account_free_failures,
            ip_free_failures: a.backoff_ip_free_failures,
            base_delay: a.backoff_base_delay,
            max_delay: a.backoff_max_delay,
        });
        let audit = Audit::start(Arc::clone(&store), settings.runtime.usage_write_interval);
        let (objects, media_location) = media_objects(&settings.media)?;
        let media = MediaLibrary::new(
            objects,
            Arc::clone(&store),
            settings.media.max_upload_bytes,
            usize::try_from(settings.media.part_size_bytes).unwrap_or(usize::MAX),
        );
        let accounts = Accounts::new(
            Arc::clone(&store),
            hasher,
            tokens,
            revocations,
            throttle,
            audit.clone(),
            settings.registration,
            SessionPolicy {
                idle: a.refresh_idle_ttl,
                absolute: a.refresh_absolute_ttl,
            },
            media.clone(),
        );
        tracing::info!(
            "auth: signing key {key_source}; access tokens {}, refresh {} idle / {} absolute; \
             argon2id m={memory} KiB t={iterations} p={lanes}; registration {}; {} users",
            humantime::format_duration(a.access_token_ttl),
            humantime::format_duration(a.refresh_idle_ttl),
            humantime::format_duration(a.refresh_absolute_ttl),
            match settings.registration {
                config::Registration::Open => "open",
                config::Registration::Closed => "closed",
            },
            accounts.cached_users(),
        );

        let admin = AdminService::new(Arc::clone(&store), audit.clone());

        let budgets = Arc::new(
            Budgets::load(
                Arc::clone(&store),
                audit.clone(),
                budget_defaults(&settings.budgets),
            )
            .await
            .map_err(|e| setup("budgets", e.into()))?,
        );
        let usage = UsageRecorder::start(
            Arc::clone(&store),
            Arc::clone(&budgets),
            settings.runtime.usage_write_interval,
        );
        let background = Background {
            tracker: TaskTracker::new(),
            stop: CancellationToken::new(),
            usage: usage.clone(),
            audit: audit.clone(),
        };
        let keys = Arc::new(
            ApiKeys::load(Arc::clone(&store), audit)
                .await
                .map_err(|e| setup("API keys", e.into()))?,
        );
        let limiter = rate_limiter(&settings).await?;
        let client = upstream_client(&settings.upstream)?;
        let catalog = Arc::new(
            ModelCatalog::load(
                client.clone(),
                Arc::clone(&store),
                settings.upstream.models_cache_ttl,
            )
            .await
            .map_err(|e| setup("the model catalog", anyhow::anyhow!("{e}")))?,
        );
        let routing = Routing {
            router: Arc::new(
                ModelRouter::new(settings.routing.clone())
                    .map_err(|e| setup("model routing", anyhow::anyhow!(e)))?,
            ),
            catalog: Arc::clone(&catalog),
        };
        let chat = ChatService::new(
            client.clone(),
            Arc::clone(&store),
            routing.clone(),
            usage.clone(),
            background.tracker.clone(),
        );
        let generator = Generator::new(
            client.clone(),
            Arc::clone(&store),
            routing.clone(),
            media.clone(),
            usage.clone(),
            settings.upstream.image_endpoint,
        );
        let videos = VideoService::new(
            client.clone(),
            Arc::clone(&store),
            routing.clone(),
            media.clone(),
            usage.clone(),
            settings.video.clone(),
        );
        let passthrough =
            Passthrough::new(client.clone(), routing.clone(), usage, background.tracker.clone());
        tracing::info!(
            "gateway: {} API key(s); rate limits {}; {} routing alias(es)",
            keys.count(),
            limiter.backend_name(),
            routing.router.aliases().len(),
        );
        tracing::info!(
            "upstream: {}{}; media in {}; {} model(s) allowed",
            settings.upstream.base_url,
            if client.is_configured() {
                ""
            } else {
                " (no API key: generation answers 503 until one is set)"
            },
            media_location,
            match catalog.allowed().len() {
                0 => "all".to_owned(),
                n => n.to_string(),
            },
        );

        Ok(AppState(Arc::new(App {
            settings,
            store,
            accounts,
            admin,
            catalog,
            routing,
            keys,
            limiter,
            budgets,
            chat,
            generator,
            videos,
            media,
            media_links,
            passthrough,
            web: Web::new().map_err(|e| setup("the studio templates", e.into()))?,
            background,
        })))
    }

    /// Starts the workers that only a serving process runs: the video poller, the
    /// key-use flusher, the heap trimmer and, on a shared database, the follower of
    /// other instances' changes.
    pub async fn start_workers(state: &AppState) -> std::io::Result<()> {
        let (tracker, stop) = (&state.background.tracker, &state.background.stop);
        state.videos.start_worker(tracker, stop.clone());
        state.keys.start_flusher(tracker, stop.clone());
        crate::memory::start_trimming(tracker, stop.clone());
        match crate::cluster::follow(state.clone(), tracker, stop.clone()).await {
            Ok(true) => tracing::info!("cluster: following other instances' changes"),
            Ok(false) => {}
            Err(e) => {
                return Err(std::io::Error::other(format!(
                    "cannot follow other instances' changes: {e:#}"
                )));
            }
        }
        Ok(())
    }

    /// Stops background work: streams finish their bookkeeping, the video worker
    /// ends its current step, then the remaining usage and audit records are
    /// written. Call it before closing the store, in the CLI's commands too.
    pub async fn shutdown(&self) {
        self.background.stop.cancel();
        self.background.tracker.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.background.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("background tasks still running after {SHUTDOWN_GRACE:?}");
        }
        self.background.usage.close().await;
        self.background.audit.close().await;
    }

    /// Creates the admin named by `admin_email`/`admin_password`, if set and absent.
    pub async fn bootstrap_admin(&self) -> Result<(), StartupError> {
        let (Some(email), Some(password)) = (&self.settings.admin_email, &self.settings.admin_password)
        else {
            tracing::info!(
                "admin: none configured (set ATELIER_ADMIN_EMAIL and ATELIER_ADMIN_PASSWORD, or run `atelier user create`)"
            );
            return Ok(());
        };
        match self.accounts.ensure_admin(email, password.expose()).await {
            Ok(Bootstrap::Created) => tracing::info!("admin: created {email}"),
            Ok(Bootstrap::AlreadyExists) => tracing::info!("admin: {email} exists, left unchanged"),
            Err(e) => return Err(StartupError::Admin(e)),
        }
        Ok(())
    }
}

fn setup(what: &'static str, source: anyhow::Error) -> StartupError {
    StartupError::Setup { what, source }
}

/// The upstream client from the settings.
fn upstream_client(settings: &config::UpstreamSettings) -> Result<atelier_openrouter::Client, StartupError> {
    let base_url = settings
        .base_url
        .parse()
        .map_err(|e| setup("the upstream client", anyhow::anyhow!("base_url: {e}")))?;
    let mut config =
        atelier_openrouter::Config::new(base_url, settings.api_key.as_ref().map(|k| k.expose().to_owned()));
    config.referer = settings.referer.clone();
    config.title = settings.title.clone();
    config.connect_timeout = settings.connect_timeout;
    config.first_byte_timeout = settings.first_byte_timeout;
    config.idle_timeout = settings.idle_timeout;
    config.total_timeout = settings.total_timeout;
    config.max_retries = settings.max_retries;
    atelier_openrouter::Client::new(config).map_err(|e| setup("the upstream client", e.into()))
}

/// Where media bytes live: an S3-compatible bucket when one is configured, else a
/// folder (or memory). Returns the store and a description for the start-up log.
pub fn media_objects(
    settings: &config::MediaSettings,
) -> Result<(Arc<dyn object_store::ObjectStore>, String), StartupError> {
    let s3 = &settings.s3;
    if let Some(bucket) = &s3.bucket {
        let mut builder = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_region(&s3.region);
        if let Some(endpoint) = &s3.endpoint {
            // Self-hosted services answer on paths (`/bucket/key`), often over
            // plain HTTP on a private network.
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        if let (Some(id), Some(secret)) = (&s3.access_key_id, &s3.secret_access_key) {
            builder = builder
                .with_access_key_id(id)
                .with_secret_access_key(secret.expose());
        }
        let bucket_store = builder.build().map_err(|e| setup("the media bucket", e.into()))?;
        let location = format!(
            "s3://{bucket}/{}{}",
            s3.prefix,
            s3.endpoint
                .as_deref()
                .map(|e| format!(" at {e}"))
                .unwrap_or_default()
        );
        let objects: Arc<dyn object_store::ObjectStore> = if s3.prefix.is_empty() {
            Arc::new(bucket_store)
        } else {
            Arc::new(object_store::prefix::PrefixStore::new(
                bucket_store,
                s3.prefix.as_str(),
            ))
        };
        return Ok((objects, location));
    }
    let dir = &settings.dir;
    if dir == "memory:" {
        return Ok((Arc::new(object_store::memory::InMemory::new()), "memory".into()));
    }
    std::fs::create_dir_all(dir).map_err(|e| setup("the media folder", anyhow::anyhow!("{dir}: {e}")))?;
    let local = object_store::local::LocalFileSystem::new_with_prefix(dir)
        .map_err(|e| setup("the media folder", anyhow::anyhow!("{dir}: {e}")))?;
    Ok((Arc::new(local), dir.clone()))
}

/// Role defaults for budgets, from the settings.
fn budget_defaults(settings: &config::BudgetsSettings) -> HashMap<Role, Caps> {
    let caps = |b: &config::RoleBudget| {
        caps_from_usd(b.daily_usd, b.monthly_usd, b.daily_requests, b.monthly_requests)
    };
    HashMap::from([
        (Role::User, caps(&settings.user)),
        (Role::Admin, caps(&settings.admin)),
    ])
}

/// The limiter: shared through Redis when a URL is configured, else in memory.
async fn rate_limiter(settings: &Settings) -> Result<RateLimiter, StartupError> {
    let l = &settings.limits;
    let mut table = LimitTable {
        login: l.login,
        ..LimitTable::default()
    };
    for (role, limits) in [(Role::User, &l.user), (Role::Admin, &l.admin)] {
        for (scope, rate) in [
            (LimitScope::Chat, limits.chat),
            (LimitScope::Images, limits.images),
            (LimitScope::Videos, limits.videos),
        ] {
            if let Some(rate) = rate {
                table.by_role.insert((role, scope), rate);
            }
        }
    }
    match &settings.redis_url {
        Some(url) => RateLimiter::with_redis(table, url.expose(), &l.redis_prefix)
            .await
            .map_err(|e| setup("Redis for rate limits", e.into())),
        None => Ok(RateLimiter::in_memory(table)),
    }
}

/// Chooses the backend from the URL's scheme.
pub async fn open_store(settings: &Settings) -> Result<(Arc<dyn Store>, MigrationReport), StartupError> {
    match &settings.database_url {
        DatabaseUrl::DuckDb(path) => {
            let options = DuckDbOpenOptions {
                idle_batches: settings.runtime.idle_batch_writes,
                ..DuckDbOpenOptions::default()
            };
            let (store, report) = DuckDbStore::open_with(path, options).await?;
            Ok((Arc::new(store), report))
        }
        DatabaseUrl::Postgres(url) => {
            let pool = PoolSettings {
                max_connections: settings.database_max_connections,
                ..PoolSettings::default()
            };
            let (store, report) = PgStore::connect(url, pool).await?;
            Ok((Arc::new(store), report))
        }
    }
}

/// The configured key, or the one kept in the store (generated on first start).
async fn signing_key(
    settings: &Settings,
    store: &dyn Store,
) -> Result<(Vec<u8>, &'static str), StartupError> {
    if let Some(secret) = &settings.jwt_secret {
        return Ok((secret.expose().as_bytes().to_vec(), "from ATELIER_JWT_SECRET"));
    }
    let candidate: [u8; 32] = rand::random();
    let stored = store
        .secret_get_or_init(JWT_SECRET_NAME, &candidate)
        .await
        .map_err(|e| setup("the signing key", e.into()))?;
    let source = if stored == candidate {
        "generated and stored in the database"
    } else {
        "from the database"
    };
    Ok((stored, source))
}

/// The complete HTTP application: API, docs, fallbacks and middleware.
pub fn router(state: AppState) -> Router {
    // Two frames, base64-encoded in JSON (4/3), plus the other fields.
    let upload_limit = usize::try_from(state.settings.media.max_upload_bytes)
        .unwrap_or(usize::MAX)
        .saturating_mul(3)
        .saturating_add(BODY_LIMIT);
    let (api, openapi) = api::router(upload_limit);
    let openapi_json = serde_json::to_string(&openapi).unwrap_or_else(|_| "{}".into());
    api.merge(api::docs::routes(openapi_json))
        .merge(web::router(state.clone()))
        .merge(openai::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(CatchPanicLayer::custom(on_panic))
        .layer(axum::middleware::from_fn(api::middleware::request_context))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not accept that method",
    )
}

fn on_panic(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::internal(anyhow::anyhow!("a request handler panicked")).into_response()
}

/// Serves until `shutdown` completes, then lets in-flight requests finish (for up to
/// a grace period) and flushes the store.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let settings = &state.settings.runtime;
    // Built before serving starts, so that a failure stops start-up.
    let runtimes = match settings.connections {
        Connections::Pinned => Some(
            (0..crate::runtime::serving_threads(settings))
                .map(|_| crate::runtime::build_serving(settings))
                .collect::<std::io::Result<Vec<_>>>()?,
        ),
        Connections::Shared => None,
    };
    App::start_workers(&state).await?;
    let stopping = CancellationToken::new();
    let trigger = stopping.clone();
    let (router, header_timeout) = (router(state.clone()), state.settings.header_timeout);
    let shutdown = async move {
        shutdown.await;
        tracing::info!("shutting down: finishing in-flight requests");
        trigger.cancel();
    };
    let graceful = async move {
        match runtimes {
            Some(runtimes) => {
                crate::http1::serve_pinned(listener, router, header_timeout, runtimes, shutdown)
                    .await
                    .map(Some)
            }
            None => {
                crate::http1::serve(listener, router, header_timeout, shutdown).await;
                Ok(None)
            }
        }
    };
    let threads = tokio::select! {
        served = graceful => served?,
        () = async { stopping.cancelled().await; tokio::time::sleep(SHUTDOWN_GRACE).await } => {
            tracing::warn!("requests still running after {SHUTDOWN_GRACE:?}; stopping anyway");
            None
        }
    };
    // The serving threads run on until then: tasks that requests started
    // (streams' bookkeeping) are among the background work shutdown waits for.
    state.shutdown().await;
    if let Err(e) = state.store.close().await {
        tracing::error!(error = %e, "final checkpoint failed");
    }
    if let Some(threads) = threads {
        threads.release().await;
    }
    tracing::info!("stopped");
    Ok(())
}
