//! `/users/me/api-keys` and budgets: `/users/me/budget`, `/users/{id}/budget`.

use atelier_store::{ApiKey, BudgetOverride, nanos_to_usd, usd_to_nanos};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::extract::{ApiJson, ApiPath, ClientOrigin};
use crate::app::{App, AppState};
use crate::auth::extract::{AdminUser, AuthUser, SessionUser};
use crate::error::{ApiError, ErrorBody};
use crate::service::Origin;
use crate::service::budgets::Standing;
use crate::service::keys::KeyAdminError;

impl From<KeyAdminError> for ApiError {
    fn from(e: KeyAdminError) -> Self {
        match e {
            KeyAdminError::Invalid(m) => ApiError::unprocessable("invalid_request", m),
            KeyAdminError::NotFound => ApiError::not_found("api_key_not_found", "no such API key"),
            KeyAdminError::Store(s) => s.into(),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    #[schema(example = "laptop script")]
    pub name: String,
    /// Any of `chat`, `images`, `videos`; absent or empty allows all.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Days until the key stops working; absent: it does not expire.
    pub expires_in_days: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyResponse {
    pub id: Uuid,
    pub name: String,
    /// The start of the key, to recognise it: `atl_<public id>_…`.
    #[schema(example = "atl_3f9a1c2b7d4e_…")]
    pub prefix: String,
    pub scopes: Vec<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

impl From<&ApiKey> for ApiKeyResponse {
    fn from(k: &ApiKey) -> Self {
        ApiKeyResponse {
            id: k.id,
            name: k.name.clone(),
            prefix: format!("atl_{}_…", k.public_id),
            scopes: k.scopes.clone(),
            expires_at: k.expires_at,
            created_at: k.created_at,
            last_used_at: k.last_used_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKeyResponse {
    #[serde(flatten)]
    pub info: ApiKeyResponse,
    /// The key itself. It is shown this once and cannot be recovered.
    pub key: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyListResponse {
    pub keys: Vec<ApiKeyResponse>,
}

/// Create an API key. The key is in this answer only.
#[utoipa::path(post, path = "/users/me/api-keys", tag = "users", security(("bearer" = [])), request_body = CreateKeyRequest, responses(
    (status = 201, description = "The new key", body = CreatedKeyResponse),
    (status = 403, description = "`session_required`: keys cannot make keys", body = ErrorBody),
    (status = 422, description = "`invalid_request`", body = ErrorBody)))]
pub async fn create_key(
    State(state): State<AppState>,
    SessionUser(me): SessionUser,
    ClientOrigin(origin): ClientOrigin,
    ApiJson(body): ApiJson<CreateKeyRequest>,
) -> Result<(StatusCode, Json<CreatedKeyResponse>), ApiError> {
    let created = state
        .keys
        .create(
            me.user_id,
            &body.name,
            &body.scopes,
            body.expires_in_days,
            &origin,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKeyResponse {
            info: (&created.record).into(),
            key: created.key,
        }),
    ))
}

/// Your API keys (not the keys themselves).
#[utoipa::path(get, path = "/users/me/api-keys", tag = "users", security(("bearer" = [])), responses(
    (status = 200, description = "Your live keys, newest first", body = KeyListResponse)))]
pub async fn list_keys(
    State(state): State<AppState>,
    SessionUser(me): SessionUser,
) -> Result<Json<KeyListResponse>, ApiError> {
    let keys = state.keys.list(me.user_id).await?;
    Ok(Json(KeyListResponse {
        keys: keys.iter().map(Into::into).collect(),
    }))
}

/// Revoke one of your API keys; it stops working at once.
#[utoipa::path(delete, path = "/users/me/api-keys/{id}", tag = "users", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Key id")), responses(
    (status = 204, description = "Revoked"),
    (status = 404, description = "`api_key_not_found`", body = ErrorBody)))]
pub async fn revoke_key(
    State(state): State<AppState>,
    SessionUser(me): SessionUser,
    ClientOrigin(origin): ClientOrigin,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    state.keys.revoke(id, Some(me.user_id), &origin).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------- budgets

#[derive(Debug, Serialize, ToSchema)]
pub struct BudgetResponse {
    pub daily: BudgetPeriod,
    pub monthly: BudgetPeriod,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BudgetPeriod {
    pub spent_usd: f64,
    /// Absent: no spending cap.
    pub limit_usd: Option<f64>,
    pub remaining_usd: Option<f64>,
    pub requests: u64,
    /// Absent: no request cap.
    pub request_limit: Option<u64>,
    pub resets_at: DateTime<Utc>,
}

pub fn budget_response(s: &Standing) -> BudgetResponse {
    let period =
        |spent: i64, cap: Option<i64>, requests: u64, request_cap: Option<u64>, resets: DateTime<Utc>| {
            BudgetPeriod {
                spent_usd: nanos_to_usd(spent),
                limit_usd: cap.map(nanos_to_usd),
                remaining_usd: cap.map(|c| nanos_to_usd((c - spent).max(0))),
                requests,
                request_limit: request_cap,
                resets_at: resets,
            }
        };
    BudgetResponse {
        daily: period(
            s.day_nanousd,
            s.caps.daily_nanousd,
            s.day_requests,
            s.caps.daily_requests,
            s.day_resets_at,
        ),
        monthly: period(
            s.month_nanousd,
            s.caps.monthly_nanousd,
            s.month_requests,
            s.caps.monthly_requests,
            s.month_resets_at,
        ),
    }
}

/// Your spending and requests today and this month, against your caps.
#[utoipa::path(get, path = "/users/me/budget", tag = "users", security(("bearer" = [])), responses(
    (status = 200, description = "Your budget", body = BudgetResponse)))]
pub async fn get_my_budget(State(state): State<AppState>, AuthUser(me): AuthUser) -> Json<BudgetResponse> {
    Json(budget_response(&state.budgets.standing(me.user_id, me.role)))
}

#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetOverrideBody {
    /// USD per UTC day; absent or null: the role's default.
    pub daily_usd: Option<f64>,
    pub monthly_usd: Option<f64>,
    pub daily_requests: Option<u64>,
    pub monthly_requests: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserBudgetResponse {
    /// What the admin set; empty fields follow the role's defaults.
    pub r#override: BudgetOverrideBody,
    /// The caps in force and the use against them.
    pub effective: BudgetResponse,
}

pub async fn user_budget(state: &App, id: Uuid) -> Result<UserBudgetResponse, ApiError> {
    let user = state.accounts.user(id).await?;
    let o = state.budgets.override_of(id).unwrap_or_default();
    Ok(UserBudgetResponse {
        r#override: BudgetOverrideBody {
            daily_usd: o.daily_nanousd.map(nanos_to_usd),
            monthly_usd: o.monthly_nanousd.map(nanos_to_usd),
            daily_requests: o.daily_requests,
            monthly_requests: o.monthly_requests,
        },
        effective: budget_response(&state.budgets.standing(id, user.role)),
    })
}

/// A user's budget (admin).
#[utoipa::path(get, path = "/users/{id}/budget", tag = "users", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "User id")), responses(
    (status = 200, description = "The override and the effective budget", body = UserBudgetResponse),
    (status = 404, description = "`user_not_found`", body = ErrorBody)))]
pub async fn get_user_budget(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<UserBudgetResponse>, ApiError> {
    Ok(Json(user_budget(&state, id).await?))
}

/// Set a user's budget caps (admin); null fields follow the role's defaults.
#[utoipa::path(put, path = "/users/{id}/budget", tag = "users", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "User id")), request_body = BudgetOverrideBody, responses(
    (status = 200, description = "The new budget", body = UserBudgetResponse),
    (status = 404, description = "`user_not_found`", body = ErrorBody),
    (status = 422, description = "`invalid_request`: negative amounts", body = ErrorBody)))]
pub async fn set_user_budget(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ClientOrigin(origin): ClientOrigin,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<BudgetOverrideBody>,
) -> Result<Json<UserBudgetResponse>, ApiError> {
    state.accounts.user(id).await?;
    set_budget(&state, id, &body, Some(admin.user_id), &origin).await?;
    Ok(Json(user_budget(&state, id).await?))
}

/// Validates and stores a budget override (the API, studio and CLI share this).
pub async fn set_budget(
    state: &App,
    user_id: Uuid,
    body: &BudgetOverrideBody,
    actor: Option<Uuid>,
    origin: &Origin,
) -> Result<(), ApiError> {
    for amount in [body.daily_usd, body.monthly_usd].into_iter().flatten() {
        if !amount.is_finite() || amount < 0.0 {
            return Err(ApiError::unprocessable(
                "invalid_request",
                "amounts must be zero or more US dollars",
            ));
        }
    }
    let budget = BudgetOverride {
        user_id,
        daily_nanousd: body.daily_usd.map(usd_to_nanos),
        monthly_nanousd: body.monthly_usd.map(usd_to_nanos),
        daily_requests: body.daily_requests,
        monthly_requests: body.monthly_requests,
    };
    state.budgets.set_override(budget, actor, origin).await?;
    Ok(())
}
