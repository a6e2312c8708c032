//! Extractors that turn malformed requests into our error shape: `ApiJson` (bodies),
//! `ApiQuery`, `ApiPath`, and `ClientOrigin` (client address and request id).

use std::net::{IpAddr, SocketAddr};

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::middleware::RequestId;
use crate::app::AppState;
use crate::error::ApiError;
use crate::service::Origin;

/// A JSON body. Syntax errors are `400 malformed_json`, unknown or mistyped fields
/// `422 invalid_body` naming the field, bodies over the limit `413 body_too_large`.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(e) => ApiError::unprocessable("invalid_body", body_text(&e)),
        JsonRejection::JsonSyntaxError(e) => ApiError::bad_request("malformed_json", body_text(&e)),
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with Content-Type: application/json",
        ),
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            body_too_large(crate::app::BODY_LIMIT)
        }
        other => ApiError::bad_request("invalid_body", other.body_text()),
    }
}

/// `413 body_too_large` for a body over `limit` bytes (a whole number of MiB).
pub(crate) fn body_too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("the request body is larger than the {} MiB limit", limit >> 20),
    )
}

/// serde's own message names the field and position; axum prefixes its own words.
fn body_text(e: &dyn std::error::Error) -> String {
    let mut source: &dyn std::error::Error = e;
    while let Some(inner) = source.source() {
        source = inner;
    }
    source.to_string()
}

/// Query parameters; a bad one is `422 invalid_query`.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e: QueryRejection| ApiError::unprocessable("invalid_query", body_text(&e)))
    }
}

/// Path parameters; one that cannot be what the route names (an id that is not a
/// UUID) cannot name anything either, so it is `404 not_found`.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|_: PathRejection| ApiError::not_found("not_found", "no such resource"))
    }
}

/// Where the request came from: the peer address (or, behind a trusted proxy, the
/// last `X-Forwarded-For` hop) and the request id.
pub struct ClientOrigin(pub Origin);

impl FromRequestParts<AppState> for ClientOrigin {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        let forwarded = state
            .settings
            .trust_proxy_headers
            .then(|| forwarded_for(parts))
            .flatten();
        Ok(ClientOrigin(Origin {
            ip: forwarded.or(peer),
            request_id: parts.extensions.get::<RequestId>().map(|id| id.0.clone()),
        }))
    }
}

/// The address the nearest proxy saw: the last entry of `X-Forwarded-For`.
fn forwarded_for(parts: &Parts) -> Option<IpAddr> {
    parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .last()
        .and_then(|ip| ip.trim().parse().ok())
}

/// The base URL clients reach atelier at, without a trailing slash: the configured
/// `public_url`, else the request's `Host` with `https` when a trusted proxy says so.
pub struct PublicUrl(pub String);

impl FromRequestParts<AppState> for PublicUrl {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if let Some(url) = &state.settings.public_url {
            return Ok(PublicUrl(url.trim_end_matches('/').to_owned()));
        }
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let https = state.settings.trust_proxy_headers
            && header("x-forwarded-proto").is_some_and(|p| p.eq_ignore_ascii_case("https"));
        let host = header("host")
            .map(str::to_owned)
            .unwrap_or_else(|| state.settings.bind.to_string());
        Ok(PublicUrl(format!(
            "{}://{host}",
            if https { "https" } else { "http" }
        )))
    }
}
