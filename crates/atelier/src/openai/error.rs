//! Errors in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, so
//! SDKs raise their own exception classes (`AuthenticationError`,
//! `RateLimitError`, …). The status, the stable `code` and the headers
//! (`Retry-After`, `RateLimit-*`) are those of the REST API's [`ApiError`].

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::error::ApiError;

#[derive(Debug)]
pub struct OpenAiError(ApiError);

impl From<ApiError> for OpenAiError {
    fn from(e: ApiError) -> Self {
        OpenAiError(e)
    }
}

/// OpenAI's error `type` for a status.
fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        402 => "insufficient_quota",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        s if s >= 500 => "api_error",
        _ => "invalid_request_error",
    }
}

impl OpenAiError {
    /// The JSON body (also sent as the last chunk of a stream that fails).
    pub fn body(&self) -> String {
        let e = &self.0;
        let mut error = json!({
            "message": e.message(),
            "type": error_type(e.status()),
            "param": Value::Null,
            "code": e.code(),
        });
        for (key, value) in e.details() {
            error[key] = value.clone();
        }
        json!({ "error": error }).to_string()
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let body = self.body();
        // The REST response carries the status and headers and logs server errors.
        let mut response = self.0.into_response();
        *response.body_mut() = Body::from(body);
        response.headers_mut().remove(axum::http::header::CONTENT_LENGTH);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_openai_types() {
        assert_eq!(error_type(StatusCode::UNAUTHORIZED), "authentication_error");
        assert_eq!(error_type(StatusCode::TOO_MANY_REQUESTS), "rate_limit_error");
        assert_eq!(error_type(StatusCode::PAYMENT_REQUIRED), "insufficient_quota");
        assert_eq!(
            error_type(StatusCode::UNPROCESSABLE_ENTITY),
            "invalid_request_error"
        );
        assert_eq!(error_type(StatusCode::BAD_GATEWAY), "api_error");
        let body: Value =
            serde_json::from_str(&OpenAiError::from(ApiError::bad_request("invalid_body", "no")).body())
                .unwrap();
        assert_eq!(body["error"]["code"], "invalid_body");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["message"], "no");
    }
}
