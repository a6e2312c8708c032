//! `GET /media/{id}`: stored images and videos, to their owner or an admin, with
//! byte ranges so video players can seek; `GET /media/signed/{id}` for links
//! signed by atelier (see [`crate::auth::media_url`]).

use std::ops::Range;

use atelier_store::{MediaRecord, Role};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt;
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use super::extract::{ApiPath, ApiQuery};
use crate::app::AppState;
use crate::auth::extract::AuthUser;
use crate::error::{ApiError, ErrorBody};

/// A stored image or video. Supports `Range: bytes=…`.
#[utoipa::path(get, path = "/media/{id}", tag = "generate", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Media id")), responses(
    (status = 200, description = "The bytes, with their content type"),
    (status = 206, description = "The requested range"),
    (status = 404, description = "`not_found`: none of yours", body = ErrorBody),
    (status = 416, description = "`range_not_satisfiable`", body = ErrorBody)))]
pub async fn get_media(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(id): ApiPath<Uuid>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    serve(&state, user.user_id, user.role, id, &headers).await
}

/// Query of a signed link.
#[derive(Debug, Deserialize, IntoParams)]
pub struct SignedQuery {
    /// Unix time after which the link stops working.
    expires: i64,
    /// Hex HMAC of the id and the expiry.
    signature: String,
}

/// A stored item through a signed, expiring link (as handed out in `/v1` image
/// answers); no credentials needed.
#[utoipa::path(get, path = "/media/signed/{id}", tag = "generate",
    params(("id" = Uuid, Path, description = "Media id"), SignedQuery), responses(
    (status = 200, description = "The bytes, with their content type"),
    (status = 206, description = "The requested range"),
    (status = 403, description = "`invalid_signature`: wrong or expired link", body = ErrorBody),
    (status = 404, description = "`not_found`", body = ErrorBody)))]
pub async fn get_signed_media(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<SignedQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let now = chrono::Utc::now().timestamp();
    if !state.media_links.verify(id, query.expires, &query.signature, now) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "invalid_signature",
            "this link is wrong or has expired",
        ));
    }
    let record = state
        .store
        .media(id)
        .await?
        .ok_or_else(|| ApiError::not_found("not_found", "no such item"))?;
    serve_record(&record, &state, &headers).await
}

/// Serves a media item to `viewer` (the API and the studio share this).
pub async fn serve(
    state: &AppState,
    viewer: Uuid,
    role: Role,
    id: Uuid,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let record = state.media.visible(id, viewer, role).await?;
    serve_record(&record, state, headers).await
}

async fn serve_record(
    record: &MediaRecord,
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let size = record.size_bytes;
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        None => None,
        Some(spec) => match parse_range(spec, size) {
            Some(range) => Some(range),
            None => {
                let mut err = ApiError::new(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "range_not_satisfiable",
                    format!("the range {spec:?} is outside the {size} bytes of this item"),
                )
                .into_response();
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    err.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                return Ok(err);
            }
        },
    };
    let result = state.media.open(record, range.clone()).await?;
    let served = result.range.clone();
    let body = Body::from_stream(result.into_stream().map_err(std::io::Error::other));
    let mut response = Response::new(body);
    let h = response.headers_mut();
    let set = |h: &mut HeaderMap, name, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    };
    set(h, header::CONTENT_TYPE, record.content_type.clone());
    set(h, header::CONTENT_LENGTH, (served.end - served.start).to_string());
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    // Private to the user; stored media never changes, so caches may keep it.
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=86400, immutable"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if range.is_some() {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        set(
            response.headers_mut(),
            header::CONTENT_RANGE,
            format!("bytes {}-{}/{size}", served.start, served.end - 1),
        );
    }
    Ok(response)
}

/// One range of `bytes=a-b`, `bytes=a-` or `bytes=-n`, clipped to the size. `None`
/// if it cannot be satisfied; several ranges are answered with the first.
fn parse_range(spec: &str, size: u64) -> Option<Range<u64>> {
    let first = spec.strip_prefix("bytes=")?.split(',').next()?.trim();
    let (start, end) = first.split_once('-')?;
    let range = match (start.trim(), end.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().ok()?;
            size.saturating_sub(n)..size
        }
        (start, "") => start.parse().ok()?..size,
        (start, end) => {
            let end: u64 = end.parse().ok()?;
            start.parse().ok()?..end.saturating_add(1).min(size)
        }
    };
    (range.start < range.end && range.end <= size).then_some(range)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-99", 1000), Some(0..100));
        assert_eq!(parse_range("bytes=900-", 1000), Some(900..1000));
        assert_eq!(parse_range("bytes=-100", 1000), Some(900..1000));
        assert_eq!(parse_range("bytes=990-2000", 1000), Some(990..1000));
        assert_eq!(parse_range("bytes=0-0,5-9", 1000), Some(0..1));
        assert_eq!(parse_range("bytes=1000-", 1000), None);
        assert_eq!(parse_range("bytes=5-2", 1000), None);
        assert_eq!(parse_range("items=0-1", 1000), None);
        assert_eq!(parse_range("bytes=-0", 1000), None);
    }
}
