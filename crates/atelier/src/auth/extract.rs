//! Request extractors for authentication.
//!
//! Handlers state what they need in their signature: [`AuthUser`] (an access token
//! or an API key), [`SessionUser`] (an access token only: changing credentials and
//! keys must not be possible with a key) or [`AdminUser`]. There is deliberately no
//! `Option<AuthUser>`: a present but bad token must be refused, not treated as
//! anonymous.
//!
//! API keys come as `X-API-Key: atl_…` or `Authorization: Bearer atl_…`, never in
//! a URL.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::app::AppState;
use crate::error::ApiError;
use crate::service::accounts::Principal;
use crate::service::keys::looks_like_key;
use atelier_store::Role;
use axum::http::StatusCode;

/// A caller with a valid, unrevoked access token or API key.
#[derive(Debug, Clone)]
pub struct AuthUser(pub Principal);

/// A caller with a valid access token (not an API key).
#[derive(Debug, Clone)]
pub struct SessionUser(pub Principal);

/// A caller with a valid access token whose user is currently an admin.
#[derive(Debug, Clone)]
pub struct AdminUser(pub Principal);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if let Some(key) = api_key(parts)? {
            return Ok(AuthUser(state.accounts.authenticate_key(&state.keys, key).await?));
        }
        let token = bearer_token(parts)?;
        let principal = state.accounts.authenticate(token).await?;
        Ok(AuthUser(principal))
    }
}

impl FromRequestParts<AppState> for SessionUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let AuthUser(principal) = AuthUser::from_request_parts(parts, state).await?;
        if principal.session_id().is_none() {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "session_required",
                "this needs a logged-in session (an access token), not an API key",
            ));
        }
        Ok(SessionUser(principal))
    }
}

impl FromRequestParts<AppState> for AdminUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let SessionUser(principal) = SessionUser::from_request_parts(parts, state).await?;
        if principal.role != Role::Admin {
            return Err(ApiError::forbidden("this requires the admin role"));
        }
        Ok(AdminUser(principal))
    }
}

/// The API key of the request, if it carries one.
fn api_key(parts: &Parts) -> Result<Option<&str>, ApiError> {
    if let Some(value) = parts.headers.get("x-api-key") {
        let key = value
            .to_str()
            .map_err(|_| ApiError::unauthorized("invalid_api_key", "the X-API-Key header is not text"))?;
        return Ok(Some(key.trim()));
    }
    let bearer = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    Ok(bearer.filter(|t| looks_like_key(t)))
}

fn bearer_token(parts: &Parts) -> Result<&str, ApiError> {
    let Some(value) = parts.headers.get(AUTHORIZATION) else {
        return Err(ApiError::unauthorized(
            "missing_token",
            "authentication required: send Authorization: Bearer <access token>",
        ));
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::unauthorized("invalid_token", "the Authorization header is not text"))?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => {
            Ok(token.trim())
        }
        _ => Err(ApiError::unauthorized(
            "invalid_token",
            "the Authorization header must be: Bearer <access token>",
        )),
    }
}
