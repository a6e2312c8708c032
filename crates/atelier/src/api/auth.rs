//! `/auth`: registration, login, token refresh, logout.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{ApiJson, ClientOrigin};
use super::schema::UserResponse;
use crate::app::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::service::accounts::TokenPair;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// Trimmed and lower-cased before use.
    #[schema(example = "ada@example.com")]
    pub email: String,
    /// 12 to 128 characters; common and easily guessed passwords are refused.
    #[schema(example = "correct horse battery staple")]
    pub password: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    #[schema(example = "ada@example.com")]
    pub email: String,
    pub password: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

/// An access token for requests and a refresh token to get the next one.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    /// Send as `Authorization: Bearer <access_token>`.
    pub access_token: String,
    #[schema(example = "bearer")]
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    #[schema(example = 300)]
    pub expires_in: u64,
    /// Single use: exchange it at `/auth/refresh` for a new pair.
    pub refresh_token: String,
}

/// Tokens must not be kept by caches along the way (RFC 6749 §5.1).
fn token_response(pair: TokenPair) -> Response {
    (
        [(header::CACHE_CONTROL, "no-store"), (header::PRAGMA, "no-cache")],
        Json(TokenResponse::from(pair)),
    )
        .into_response()
}

impl From<TokenPair> for TokenResponse {
    fn from(pair: TokenPair) -> Self {
        TokenResponse {
            access_token: pair.access_token,
            token_type: "bearer",
            expires_in: pair.expires_in,
            refresh_token: pair.refresh_token,
        }
    }
}

/// Create an account.
#[utoipa::path(post, path = "/auth/register", tag = "auth", request_body = RegisterRequest, responses(
    (status = 201, description = "Account created", body = UserResponse),
    (status = 403, description = "`registration_closed`", body = ErrorBody),
    (status = 409, description = "`email_taken`", body = ErrorBody),
    (status = 422, description = "`invalid_email`, `weak_password`, `invalid_body`", body = ErrorBody)))]
pub async fn register(
    State(state): State<AppState>,
    ClientOrigin(origin): ClientOrigin,
    ApiJson(body): ApiJson<RegisterRequest>,
) -> Result<(StatusCode, Json<UserResponse>), ApiError> {
    let user = state
        .accounts
        .register(&body.email, &body.password, &origin)
        .await?;
    Ok((StatusCode::CREATED, Json(user.into())))
}

/// Log in with email and password.
///
/// An unknown email and a wrong password get the same answer. Repeated failures for
/// one account or from one address are delayed exponentially (`429`, `Retry-After`).
#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = LoginRequest, responses(
    (status = 200, description = "Logged in", body = TokenResponse),
    (status = 401, description = "`invalid_credentials`", body = ErrorBody),
    (status = 429, description = "`too_many_attempts` (failures slowed down) or `rate_limited` (attempts per address); see `Retry-After`", body = ErrorBody)))]
pub async fn login(
    State(state): State<AppState>,
    ClientOrigin(origin): ClientOrigin,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<Response, ApiError> {
    super::gate::admit_login(&state, &origin).await?;
    let pair = state.accounts.login(&body.email, &body.password, &origin).await?;
    Ok(token_response(pair))
}

/// Exchange a refresh token for a new access and refresh token.
///
/// Each refresh token works once. Presenting one that was already exchanged revokes
/// every token of that login (`refresh_token_reused`).
#[utoipa::path(post, path = "/auth/refresh", tag = "auth", request_body = RefreshRequest, responses(
    (status = 200, description = "A new pair", body = TokenResponse),
    (status = 401, description = "`invalid_refresh_token`, `refresh_token_expired`, `refresh_token_reused`", body = ErrorBody)))]
pub async fn refresh(
    State(state): State<AppState>,
    ClientOrigin(origin): ClientOrigin,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<Response, ApiError> {
    let pair = state.accounts.refresh(&body.refresh_token, &origin).await?;
    Ok(token_response(pair))
}

/// End the session the refresh token belongs to.
///
/// Its refresh tokens stop working and so do the access tokens issued for it.
/// Logging out with an unknown or already revoked token also answers `204`.
#[utoipa::path(post, path = "/auth/logout", tag = "auth", request_body = RefreshRequest, responses(
    (status = 204, description = "Logged out")))]
pub async fn logout(
    State(state): State<AppState>,
    ClientOrigin(origin): ClientOrigin,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<StatusCode, ApiError> {
    state.accounts.logout(&body.refresh_token, &origin).await?;
    Ok(StatusCode::NO_CONTENT)
}
