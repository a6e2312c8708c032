//! Request extractors for authentication.
//!
//! Handlers state what they need in their signature: [`AuthUser`] (any signed-in
//! user) or [`AdminUser`]. There is deliberately no `Option<AuthUser>`: a present but
//! bad token must be refused, not treated as anonymous.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::app::AppState;
use crate::error::ApiError;
use crate::service::accounts::Principal;
use atelier_store::Role;

/// A caller with a valid, unrevoked access token.
#[derive(Debug, Clone, Copy)]
pub struct AuthUser(pub Principal);

/// A caller with a valid access token whose user is currently an admin.
#[derive(Debug, Clone, Copy)]
pub struct AdminUser(pub Principal);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer_token(parts)?;
        let principal = state.accounts.authenticate(token).await?;
        Ok(AuthUser(principal))
    }
}

impl FromRequestParts<AppState> for AdminUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let AuthUser(principal) = AuthUser::from_request_parts(parts, state).await?;
        if principal.role != Role::Admin {
            return Err(ApiError::forbidden("this requires the admin role"));
        }
        Ok(AdminUser(principal))
    }
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
