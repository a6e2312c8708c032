//! The OpenAPI document and an interactive page for it, served from files vendored
//! into the binary (no CDN: it works offline).

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::app::AppState;

const INDEX_HTML: &str = include_str!("../../static/docs/index.html");
const INIT_JS: &str = include_str!("../../static/docs/init.js");
const SWAGGER_JS: &str = include_str!("../../static/vendor/swagger-ui/swagger-ui-bundle.js");
const SWAGGER_CSS: &str = include_str!("../../static/vendor/swagger-ui/swagger-ui.css");

/// Swagger UI styles itself inline and shows data: images; scripts only from here.
const DOCS_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                        img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'";

pub fn routes(openapi_json: String) -> Router<AppState> {
    let openapi_json: Arc<str> = openapi_json.into();
    Router::new()
        .route(
            "/openapi.json",
            get(move || {
                let body = Arc::clone(&openapi_json);
                async move { ([(header::CONTENT_TYPE, "application/json")], body.to_string()) }
            }),
        )
        .route("/docs", get(|| async { page() }))
        .route(
            "/docs/init.js",
            get(|| async { asset("text/javascript; charset=utf-8", INIT_JS) }),
        )
        .route(
            "/docs/swagger-ui-bundle.js",
            get(|| async { asset("text/javascript; charset=utf-8", SWAGGER_JS) }),
        )
        .route(
            "/docs/swagger-ui.css",
            get(|| async { asset("text/css; charset=utf-8", SWAGGER_CSS) }),
        )
}

fn page() -> Response {
    let mut response = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX_HTML).into_response();
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(DOCS_CSP),
    );
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        body,
    )
        .into_response()
}
