//! Static files of the studio, compiled into the binary. URLs carry a version
//! derived from the contents, so browsers may cache them forever.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// `(path under /static/, content type, bytes)`.
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "studio.css",
        "text/css; charset=utf-8",
        include_bytes!("../../static/studio/studio.css"),
    ),
    (
        "studio.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../static/studio/studio.js"),
    ),
    (
        "chat.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../static/studio/chat.js"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_bytes!("../../static/studio/favicon.svg"),
    ),
    (
        "vendor/htmx.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../static/vendor/htmx/htmx.min.js"),
    ),
    (
        "vendor/marked.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../static/vendor/marked/marked.min.js"),
    ),
    (
        "vendor/purify.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../static/vendor/dompurify/purify.min.js"),
    ),
    (
        "vendor/highlight.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../static/vendor/highlight/highlight.min.js"),
    ),
    (
        "vendor/github.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../../static/vendor/highlight/github.min.css"),
    ),
    (
        "vendor/github-dark.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../../static/vendor/highlight/github-dark.min.css"),
    ),
];

/// A short hash of every file: changes whenever any asset does.
pub static VERSION: LazyLock<String> = LazyLock::new(|| {
    let mut hash = Sha256::new();
    for (name, _, bytes) in FILES {
        hash.update(name.as_bytes());
        hash.update(bytes);
    }
    hash.finalize()
        .iter()
        .take(5)
        .map(|b| format!("{b:02x}"))
        .collect()
});

pub async fn serve(Path(path): Path<String>) -> Response {
    let Some((_, content_type, bytes)) = FILES.iter().find(|(name, _, _)| *name == path) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut response = (*bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}
