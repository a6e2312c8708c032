//! Request context: a request id on every request and response, and one log line
//! per request. Only method, path, status and timing are logged: never headers
//! (they carry tokens and cookies) nor query strings.

use std::time::Instant;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;
use uuid::Uuid;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The id of the current request, from the client's `X-Request-Id` or generated.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

pub async fn request_context(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_acceptable_id(v))
        .map_or_else(|| Uuid::now_v7().to_string(), str::to_owned);
    request.extensions_mut().insert(RequestId(id.clone()));

    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path(),
    );
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    span.in_scope(|| {
        let latency_ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1e3;
        tracing::info!(status, latency_ms, "served");
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// A client-chosen id is echoed only if it is short, printable ASCII: it ends up in
/// logs and headers.
fn is_acceptable_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
}
