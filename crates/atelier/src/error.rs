//! Errors: [`ApiError`] for requests, [`StartupError`] for bringing the server up.
//!
//! Every request error becomes `{"error": {"code", "message"}}` with its status. The
//! code is a stable snake_case string clients may match on; the message is for
//! people. An internal cause is logged with the request id and never sent.

use std::borrow::Cow;
use std::time::Duration;

use atelier_store::StoreError;
use axum::Json;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::service::accounts::AccountError;
use crate::service::generation_error::GenerationError;
use atelier_openrouter::UpstreamError;

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `email_taken`.
    #[schema(example = "email_taken")]
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
    /// Facts some errors add, e.g. `remaining_usd` and `resets_at` for `budget_exceeded`.
    #[serde(flatten, skip_serializing_if = "serde_json::Map::is_empty")]
    #[schema(value_type = Object)]
    pub details: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: Cow<'static, str>,
    retry_after: Option<Duration>,
    /// More headers for the response (e.g. `RateLimit-*`).
    headers: Vec<(HeaderName, HeaderValue)>,
    details: serde_json::Map<String, serde_json::Value>,
    /// Logged, never sent.
    cause: Option<anyhow::Error>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            headers: Vec::new(),
            details: serde_json::Map::new(),
            cause: None,
        }
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn with_detail(mut self, key: &str, value: serde_json::Value) -> Self {
        self.details.insert(key.to_owned(), value);
        self
    }

    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    pub fn details(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.details
    }

    pub fn bad_request(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    pub fn forbidden(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn unprocessable(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn too_many_requests(
        code: &'static str,
        message: impl Into<Cow<'static, str>>,
        retry_after: Duration,
    ) -> Self {
        let mut err = Self::new(StatusCode::TOO_MANY_REQUESTS, code, message);
        err.retry_after = Some(retry_after);
        err
    }

    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        let mut err = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal server error",
        );
        err.cause = Some(cause.into());
        err
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

/// A message as a sentence: capitalized, ending with a period.
pub fn sentence(text: &str) -> String {
    let mut chars = text.trim_end_matches('.').chars();
    chars.next().map_or_else(String::new, |c| {
        c.to_uppercase().collect::<String>() + chars.as_str() + "."
    })
}

/// The message people read (for the command line, which shares some handlers' helpers).
impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            match &self.cause {
                Some(cause) => {
                    tracing::error!(code = self.code, error = format!("{cause:#}"), "request failed")
                }
                None => tracing::error!(code = self.code, message = %self.message, "request failed"),
            }
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message.into_owned(),
                details: self.details,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        if let Some(wait) = self.retry_after {
            // Whole seconds, rounded up: retrying early would only fail again.
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(_) => {
                let mut e = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database_unavailable",
                    "the database is unavailable; try again shortly",
                );
                e.cause = Some(err.into());
                e
            }
            StoreError::NotFound => ApiError::not_found("not_found", "not found"),
            StoreError::EmailTaken => AccountError::EmailTaken.into(),
            StoreError::LastAdmin => AccountError::LastAdmin.into(),
            StoreError::Backend(_) => ApiError::internal(err),
        }
    }
}

impl From<AccountError> for ApiError {
    fn from(err: AccountError) -> Self {
        use AccountError as E;
        let message = err.to_string();
        match err {
            E::RegistrationClosed => ApiError::new(StatusCode::FORBIDDEN, "registration_closed", message),
            E::InvalidEmail(_) => ApiError::unprocessable("invalid_email", message),
            E::EmailTaken => ApiError::new(StatusCode::CONFLICT, "email_taken", message),
            E::WeakPassword(_) => ApiError::unprocessable("weak_password", message),
            E::InvalidCredentials => ApiError::unauthorized("invalid_credentials", message),
            E::Throttled { retry_after } => {
                ApiError::too_many_requests("too_many_attempts", message, retry_after)
            }
            E::InvalidRefreshToken => ApiError::unauthorized("invalid_refresh_token", message),
            E::RefreshTokenExpired => ApiError::unauthorized("refresh_token_expired", message),
            E::RefreshTokenReused => ApiError::unauthorized("refresh_token_reused", message),
            E::InvalidToken => ApiError::unauthorized("invalid_token", message),
            E::TokenExpired => ApiError::unauthorized("token_expired", message),
            E::TokenRevoked => ApiError::unauthorized("token_revoked", message),
            E::InvalidApiKey => ApiError::unauthorized("invalid_api_key", message),
            E::ApiKeyExpired => ApiError::unauthorized("api_key_expired", message),
            E::WrongCurrentPassword => ApiError::new(StatusCode::FORBIDDEN, "wrong_password", message),
            E::NothingToChange => ApiError::unprocessable("nothing_to_change", message),
            E::UserNotFound => ApiError::not_found("user_not_found", message),
            E::CannotDeleteSelf => ApiError::new(StatusCode::CONFLICT, "cannot_delete_self", message),
            E::LastAdmin => ApiError::new(StatusCode::CONFLICT, "last_admin", message),
            E::Store(store) => store.into(),
            E::Internal(cause) => ApiError::internal(cause),
        }
    }
}

impl From<GenerationError> for ApiError {
    fn from(err: GenerationError) -> Self {
        let message = err.to_string();
        match err {
            GenerationError::Upstream(e) => e.into(),
            GenerationError::ModelNotAllowed(_) => {
                ApiError::new(StatusCode::FORBIDDEN, "model_not_allowed", message)
            }
            GenerationError::Invalid(_) => ApiError::unprocessable("invalid_request", message),
            GenerationError::NotFound(_) => ApiError::not_found("not_found", message),
            GenerationError::UploadTooLarge { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "upload_too_large", message)
            }
            GenerationError::UnsupportedMedia(_) => {
                ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media", message)
            }
            GenerationError::Store(e) => e.into(),
            GenerationError::Internal(e) => ApiError::internal(e),
        }
    }
}

/// The upstream's failures in the caller's terms: its outage is ours (502), its
/// slowness too (504), its rate limit is passed on, the operator's account problems
/// are a 503, and a request the upstream found invalid keeps the upstream's words.
impl From<UpstreamError> for ApiError {
    fn from(err: UpstreamError) -> Self {
        let unavailable = |m: String| ApiError::new(StatusCode::BAD_GATEWAY, "upstream_unavailable", m);
        match err {
            UpstreamError::NotConfigured => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_not_configured",
                "no model provider key is configured on this server; ask the operator to set OPENROUTER_API_KEY",
            ),
            UpstreamError::Unreachable(detail) => {
                tracing::warn!(%detail, "upstream unreachable");
                unavailable("the model provider cannot be reached; try again shortly".into())
            }
            UpstreamError::Timeout(kind) => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                format!("the model provider did not answer in time ({kind:?})"),
            ),
            UpstreamError::Status {
                status,
                message,
                retry_after,
                ..
            } => match status {
                400 | 422 => ApiError::new(
                    StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
                    "invalid_request",
                    message,
                ),
                401 => ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "upstream_key_rejected",
                    "the model provider refused this server's key; ask the operator to check it",
                ),
                402 => ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "upstream_payment_required",
                    "the model provider account is out of credits; ask the operator to top it up",
                ),
                403 => ApiError::new(StatusCode::FORBIDDEN, "upstream_refused", message),
                404 => ApiError::not_found("model_unavailable", message),
                413 => ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "upstream_payload_too_large",
                    message,
                ),
                429 => ApiError::too_many_requests(
                    "upstream_rate_limited",
                    format!("the model provider is rate limiting: {message}"),
                    retry_after.unwrap_or(Duration::from_secs(10)),
                ),
                408 | 504 | 524 => ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream_timeout",
                    "the model provider timed out",
                ),
                _ => unavailable(format!("the model provider failed: {message}")),
            },
            UpstreamError::MidStream { message, .. } => {
                unavailable(format!("the model provider failed: {message}"))
            }
            UpstreamError::InvalidResponse(detail) => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_invalid_response",
                format!("the model provider sent an invalid answer: {detail}"),
            ),
        }
    }
}

/// Why the server could not start. Printed to the operator, so each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Store(#[from] atelier_store_duckdb::OpenError),
    #[error(transparent)]
    Postgres(#[from] atelier_store_postgres::OpenError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up {what}: {source:#}")]
    Setup {
        what: &'static str,
        #[source]
        source: anyhow::Error,
    },
    #[error("cannot create the configured admin: {0}")]
    Admin(AccountError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn errors_have_the_documented_shape_and_headers() {
        let response = ApiError::from(AccountError::Throttled {
            retry_after: Duration::from_millis(1500),
        })
        .into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(json["error"]["code"], "too_many_attempts");
        assert!(
            json["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("try again"))
        );

        let response = ApiError::from(AccountError::InvalidCredentials).into_response();
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }

    #[tokio::test]
    async fn internal_causes_are_not_sent() {
        let response = ApiError::internal(anyhow::anyhow!("secret connection string")).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        assert!(!String::from_utf8_lossy(&body).contains("secret"));
    }
}
