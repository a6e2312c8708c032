//! `/admin`: statistics, database health, maintenance.

use atelier_store::Role;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{ApiJson, ClientOrigin};
use crate::app::AppState;
use crate::auth::extract::AdminUser;
use crate::error::{ApiError, ErrorBody};

#[derive(Debug, Serialize, ToSchema)]
pub struct StatsResponse {
    pub users: UserCounts,
    pub refresh_tokens: RefreshTokenCounts,
    /// Logins over the last 24 hours.
    pub logins_24h: LoginCounts,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserCounts {
    pub total: u64,
    pub by_role: RoleCounts,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RoleCounts {
    pub user: u64,
    pub admin: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RefreshTokenCounts {
    /// Can be exchanged now.
    pub active: u64,
    /// Past their lifetime, not yet purged.
    pub expired: u64,
    /// Revoked by logout, reuse detection, password change; not yet purged.
    pub revoked: u64,
    /// Already exchanged; kept to detect replays.
    pub rotated: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LoginCounts {
    pub succeeded: u64,
    pub failed: u64,
}

/// User, session and login statistics.
#[utoipa::path(get, path = "/admin/stats", tag = "admin", security(("bearer" = [])), responses(
    (status = 200, description = "Statistics", body = StatsResponse),
    (status = 403, description = "`forbidden`: not an admin", body = ErrorBody)))]
pub async fn get_stats(
    State(state): State<AppState>,
    _admin: AdminUser,
) -> Result<Json<StatsResponse>, ApiError> {
    let stats = state.admin.stats().await?;
    let count = |role: Role| {
        stats
            .users_by_role
            .iter()
            .find(|(r, _)| *r == role)
            .map_or(0, |(_, n)| *n)
    };
    let t = stats.refresh_tokens;
    Ok(Json(StatsResponse {
        users: UserCounts {
            total: stats.users_by_role.iter().map(|(_, n)| n).sum(),
            by_role: RoleCounts {
                user: count(Role::User),
                admin: count(Role::Admin),
            },
        },
        refresh_tokens: RefreshTokenCounts {
            active: t.active,
            expired: t.expired,
            revoked: t.revoked,
            rotated: t.rotated,
        },
        logins_24h: LoginCounts {
            succeeded: stats.logins_last_24h.succeeded,
            failed: stats.logins_last_24h.failed,
        },
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DbHealthResponse {
    /// `ok` or `unavailable`.
    #[schema(example = "ok")]
    pub status: &'static str,
    #[schema(example = "duckdb")]
    pub backend: &'static str,
    /// Round-trip time of a trivial query.
    pub latency_ms: f64,
}

/// Database connectivity and latency.
#[utoipa::path(get, path = "/admin/health/db", tag = "admin", security(("bearer" = [])), responses(
    (status = 200, description = "The database answers", body = DbHealthResponse),
    (status = 503, description = "The database does not answer", body = DbHealthResponse),
    (status = 403, description = "`forbidden`: not an admin", body = ErrorBody)))]
pub async fn get_db_health(
    State(state): State<AppState>,
    _admin: AdminUser,
) -> (StatusCode, Json<DbHealthResponse>) {
    let health = state.admin.db_health().await;
    let (status, label) = match &health.error {
        None => (StatusCode::OK, "ok"),
        Some(error) => {
            tracing::warn!(%error, "database health check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        }
    };
    (
        status,
        Json(DbHealthResponse {
            status: label,
            backend: health.backend,
            latency_ms: (health.latency.as_secs_f64() * 1e3 * 1000.0).round() / 1000.0,
        }),
    )
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PurgeResponse {
    /// Refresh tokens removed.
    pub purged: u64,
}

/// Remove expired and revoked refresh tokens.
#[utoipa::path(post, path = "/admin/tokens/purge", tag = "admin", security(("bearer" = [])), responses(
    (status = 200, description = "Purged", body = PurgeResponse),
    (status = 403, description = "`forbidden`: not an admin", body = ErrorBody)))]
pub async fn purge_tokens(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ClientOrigin(origin): ClientOrigin,
) -> Result<Json<PurgeResponse>, ApiError> {
    let purged = state.admin.purge_tokens(Some(admin.user_id), &origin).await?;
    Ok(Json(PurgeResponse { purged }))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AllowedModels {
    /// Model ids users may use; empty means every model the upstream offers.
    #[schema(example = json!(["openai/gpt-4o-mini", "google/gemini-2.5-flash-image"]))]
    pub models: Vec<String>,
}

/// The model allow-list.
#[utoipa::path(get, path = "/admin/models/allowed", tag = "admin", security(("bearer" = [])), responses(
    (status = 200, description = "The allow-list (empty: all models)", body = AllowedModels),
    (status = 403, description = "`forbidden`: not an admin", body = ErrorBody)))]
pub async fn get_allowed_models(State(state): State<AppState>, _admin: AdminUser) -> Json<AllowedModels> {
    Json(AllowedModels {
        models: state.catalog.allowed(),
    })
}

/// Replace the model allow-list; an empty list allows every model.
#[utoipa::path(put, path = "/admin/models/allowed", tag = "admin", security(("bearer" = [])), request_body = AllowedModels, responses(
    (status = 200, description = "The new allow-list", body = AllowedModels),
    (status = 403, description = "`forbidden`: not an admin", body = ErrorBody)))]
pub async fn set_allowed_models(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiJson(body): ApiJson<AllowedModels>,
) -> Result<Json<AllowedModels>, ApiError> {
    let models = state.catalog.set_allowed(body.models).await?;
    Ok(Json(AllowedModels { models }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UpstreamStatusResponse {
    /// Where generation requests go.
    pub base_url: String,
    /// Whether an API key is configured.
    pub configured: bool,
    /// The key's limits and spend, when the upstream reports them.
    pub key: Option<UpstreamKeyResponse>,
    /// Why `key` is missing, when asking failed.
    pub error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UpstreamKeyResponse {
    /// The key as the upstream shows it (masked).
    pub label: Option<String>,
    /// USD; absent when unlimited.
    pub limit: Option<f64>,
    pub limit_remaining: Option<f64>,
    /// USD spent with this key.
    pub usage: Option<f64>,
    pub is_free_tier: Option<bool>,
}

/// The upstream connection and the operator key's limits and spend.
#[utoipa::path(get, path = "/admin/upstream", tag = "admin", security(("bearer" = [])), responses(
    (status = 200, description = "Upstream status", body = UpstreamStatusResponse),
    (status = 403, description = "`forbidden`: not an admin", body = ErrorBody)))]
pub async fn get_upstream(State(state): State<AppState>, _admin: AdminUser) -> Json<UpstreamStatusResponse> {
    let client = state.catalog.client();
    let (key, error) = match client.key_info().await {
        Ok(info) => (
            Some(UpstreamKeyResponse {
                label: info.label,
                limit: info.limit,
                limit_remaining: info.limit_remaining,
                usage: info.usage,
                is_free_tier: info.is_free_tier,
            }),
            None,
        ),
        Err(e) => (None, Some(ApiError::from(e).message().to_owned())),
    };
    Json(UpstreamStatusResponse {
        base_url: client.config().base_url.to_string(),
        configured: client.is_configured(),
        key,
        error,
    })
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// How many days back, 1 to 366 (default 30).
    pub days: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageReportResponse {
    pub days: u32,
    pub total_cost_usd: f64,
    pub total_generations: u64,
    pub by_user: Vec<UsageTotalResponse>,
    pub by_model: Vec<UsageTotalResponse>,
    /// Oldest first; days without usage are left out.
    pub by_day: Vec<UsageTotalResponse>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageTotalResponse {
    /// User id, model id, or day (`YYYY-MM-DD`).
    pub key: String,
    /// The user's email, for users that still exist.
    pub label: Option<String>,
    pub generations: u64,
    pub tokens: u64,
    pub cost_usd: f64,
}

impl From<&atelier_store::UsageTotal> for UsageTotalResponse {
    fn from(t: &atelier_store::UsageTotal) -> Self {
        UsageTotalResponse {
            key: t.key.clone(),
            label: t.label.clone(),
            generations: t.generations,
            tokens: t.tokens,
            cost_usd: atelier_store::nanos_to_usd(t.cost_nanousd),
        }
    }
}

/// Usage and cost per user, per model and per day.
#[utoipa::path(get, path = "/admin/usage", tag = "admin", security(("bearer" = [])), params(UsageQuery), responses(
    (status = 200, description = "Usage report", body = UsageReportResponse),
    (status = 403, description = "`forbidden`: not an admin", body = ErrorBody),
    (status = 422, description = "`invalid_query`", body = ErrorBody)))]
pub async fn get_usage(
    State(state): State<AppState>,
    _admin: AdminUser,
    super::extract::ApiQuery(q): super::extract::ApiQuery<UsageQuery>,
) -> Result<Json<UsageReportResponse>, ApiError> {
    let days = q.days.unwrap_or(30);
    if !(1..=366).contains(&days) {
        return Err(ApiError::unprocessable(
            "invalid_query",
            "days must be between 1 and 366",
        ));
    }
    Ok(Json(usage_response(&state, days).await?))
}

/// The report for the REST API and the admin console alike.
pub async fn usage_response(state: &AppState, days: u32) -> Result<UsageReportResponse, ApiError> {
    state.generator.flush_usage().await;
    let report = state.admin.usage(days).await?;
    Ok(UsageReportResponse {
        days,
        total_cost_usd: atelier_store::nanos_to_usd(report.by_day.iter().map(|d| d.cost_nanousd).sum()),
        total_generations: report.by_day.iter().map(|d| d.generations).sum(),
        by_user: report.by_user.iter().map(Into::into).collect(),
        by_model: report.by_model.iter().map(Into::into).collect(),
        by_day: report.by_day.iter().map(Into::into).collect(),
    })
}
