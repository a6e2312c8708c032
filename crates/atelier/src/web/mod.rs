//! The web studio: server-rendered pages under `/studio`, built on the same
//! services as the REST API.
//!
//! Templates are Jinja (minijinja), compiled into the binary and auto-escaped. The
//! little JavaScript there is (htmx, the chat stream, Markdown rendering) is
//! vendored under `/static` and runs under a Content-Security-Policy that forbids
//! inline script. Pages work without JavaScript where that is reasonable.

mod account;
mod admin;
mod assets;
mod auth_pages;
mod chat;
mod create;
mod history;
pub mod session;

use axum::Router;
use axum::extract::{FromRequestParts, OptionalFromRequestParts, OriginalUri, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{delete, get, post, put};
use minijinja::{Environment, Value, context};
use serde::Serialize;

use self::session::{CsrfToken, RefreshCoalescer, StudioUser};
use crate::app::AppState;
use crate::service::catalog::Modality;

/// What the studio needs besides the services.
pub struct Web {
    templates: Environment<'static>,
    /// Shares one refresh among a browser's concurrent requests.
    pub refresh: RefreshCoalescer,
}

impl Web {
    pub fn new() -> Result<Self, minijinja::Error> {
        let mut templates = Environment::new();
        for (name, source) in TEMPLATES {
            templates.add_template(name, source)?;
        }
        templates.add_filter("usd", usd);
        templates.add_filter("when", when);
        Ok(Web {
            templates,
            refresh: RefreshCoalescer::default(),
        })
    }
}

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../../templates/base.html")),
    ("macros.html", include_str!("../../templates/macros.html")),
    ("login.html", include_str!("../../templates/login.html")),
    ("signup.html", include_str!("../../templates/signup.html")),
    ("chat.html", include_str!("../../templates/chat.html")),
    ("text.html", include_str!("../../templates/text.html")),
    (
        "text_result.html",
        include_str!("../../templates/text_result.html"),
    ),
    ("images.html", include_str!("../../templates/images.html")),
    (
        "image_results.html",
        include_str!("../../templates/image_results.html"),
    ),
    ("video.html", include_str!("../../templates/video.html")),
    ("video_job.html", include_str!("../../templates/video_job.html")),
    ("history.html", include_str!("../../templates/history.html")),
    ("account.html", include_str!("../../templates/account.html")),
    ("admin.html", include_str!("../../templates/admin.html")),
    (
        "admin_users.html",
        include_str!("../../templates/admin_users.html"),
    ),
    (
        "admin_budget.html",
        include_str!("../../templates/admin_budget.html"),
    ),
    ("notice.html", include_str!("../../templates/notice.html")),
    ("error.html", include_str!("../../templates/error.html")),
];

/// USD with as many decimals as small amounts need.
fn usd(value: f64) -> String {
    if value == 0.0 {
        "$0".into()
    } else if value.abs() < 0.01 {
        format!("${value:.6}").trim_end_matches('0').to_owned()
    } else {
        format!("${value:.2}")
    }
}

/// A timestamp as `YYYY-MM-DD HH:MM` UTC.
fn when(value: String) -> String {
    chrono::DateTime::parse_from_rfc3339(&value)
        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or(value)
}

pub fn router(state: AppState) -> Router<AppState> {
    let studio = Router::new()
        .route("/", get(|| async { Redirect::to("/studio/chat") }))
        .route("/login", get(auth_pages::login_page).post(auth_pages::login))
        .route("/signup", get(auth_pages::signup_page).post(auth_pages::signup))
        .route("/logout", post(auth_pages::logout))
        .route("/chat", get(chat::page))
        .route("/chat/send", post(chat::send))
        .route("/chat/{id}", get(chat::conversation_page).delete(chat::delete))
        .route("/chat/{id}/rename", post(chat::rename))
        .route("/text", get(create::text_page).post(create::text))
        .route("/images", get(create::images_page).post(create::images))
        .route("/video", get(create::video_page).post(create::video))
        .route("/video/from-image", post(create::video_from_image))
        .route("/video/jobs/{id}", get(create::video_job))
        .route("/media/{id}", get(create::media))
        .route("/history", get(history::page))
        .route("/account", get(account::page))
        .route("/account/email", post(account::change_email))
        .route("/account/password", post(account::change_password))
        .route("/account/keys", post(account::create_key))
        .route("/account/keys/{id}/revoke", post(account::revoke_key))
        .route("/admin", get(admin::page))
        .route("/admin/users", get(admin::users))
        .route("/admin/users/{id}/role", put(admin::set_role))
        .route("/admin/users/{id}", delete(admin::delete_user))
        .route("/admin/users/{id}/budget", put(admin::set_budget))
        .route("/admin/purge", post(admin::purge))
        .route("/admin/models", post(admin::set_models))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state, session::session_layer))
        .layer(middleware::from_fn(security_headers));
    Router::new()
        .route("/", get(|| async { Redirect::to("/studio/chat") }))
        .route("/static/{*path}", get(assets::serve))
        .nest("/studio", studio)
}

/// Pages may load scripts, styles and media from this origin only; no inline
/// script, no framing.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
             media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
             form-action 'self'; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

impl FromRequestParts<AppState> for StudioUser {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<StudioUser>().cloned().ok_or_else(|| {
            // Inside the `/studio` nest the request's URI lost its prefix; the original has it.
            let uri = parts.extensions.get::<OriginalUri>().map_or(&parts.uri, |o| &o.0);
            let path = uri.path_and_query().map_or("/studio/chat", |p| p.as_str());
            let next = if parts.method == axum::http::Method::GET {
                path
            } else {
                "/studio/chat"
            };
            session::sign_in_redirect(&parts.headers, next)
        })
    }
}

impl OptionalFromRequestParts<AppState> for StudioUser {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<StudioUser>().cloned())
    }
}

impl FromRequestParts<AppState> for CsrfToken {
    type Rejection = StatusCode;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<CsrfToken>()
            .cloned()
            .ok_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

/// The signed-in user as templates see them.
#[derive(Debug, Serialize)]
pub struct Viewer {
    pub id: String,
    pub email: String,
    pub role: String,
    pub is_admin: bool,
}

/// Everything a full page needs: who is looking, the CSRF token, the page's name.
pub struct PageContext {
    pub viewer: Option<Viewer>,
    pub csrf: String,
    pub page: &'static str,
}

impl PageContext {
    pub async fn new(
        state: &AppState,
        user: Option<&StudioUser>,
        csrf: &CsrfToken,
        page: &'static str,
    ) -> Self {
        let viewer = match user {
            Some(u) => state
                .accounts
                .me(u.principal.user_id)
                .await
                .ok()
                .map(|me| Viewer {
                    id: me.id.to_string(),
                    email: me.email,
                    role: me.role.as_str().to_owned(),
                    is_admin: u.principal.role == atelier_store::Role::Admin,
                }),
            None => None,
        };
        PageContext {
            viewer,
            csrf: csrf.0.clone(),
            page,
        }
    }
}

/// Renders a template with the common context merged in.
pub fn render(state: &AppState, name: &str, page: &PageContext, extra: Value) -> Response {
    let base = context! {
        viewer => page.viewer,
        csrf => page.csrf,
        page => page.page,
        demo => state.settings.demo,
        v => assets::VERSION.as_str(),
    };
    let ctx = context! { ..base, ..extra };
    match state.web.templates.get_template(name).and_then(|t| t.render(ctx)) {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(template = name, error = %e, "template failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered",
            )
                .into_response()
        }
    }
}

/// A small piece of HTML for htmx: an inline notice (error or success).
pub fn notice(state: &AppState, kind: &str, message: &str) -> Response {
    let page = PageContext {
        viewer: None,
        csrf: String::new(),
        page: "",
    };
    render(
        state,
        "notice.html",
        &page,
        context! { kind => kind, message => message },
    )
}

async fn not_found(
    axum::extract::State(state): axum::extract::State<AppState>,
    user: Option<StudioUser>,
    csrf: CsrfToken,
) -> Response {
    let page = PageContext::new(&state, user.as_ref(), &csrf, "").await;
    let mut response = render(
        &state,
        "error.html",
        &page,
        context! { title => "Not found", message => "There is nothing here." },
    );
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
}

/// Models of a modality for a picker; an unreachable upstream gives an empty list
/// and a message rather than a broken page.
pub async fn model_options(state: &AppState, modality: Modality) -> (Vec<Value>, Option<String>) {
    match state.catalog.list(modality).await {
        Ok(models) => (
            models
                .into_iter()
                .map(|m| context! { id => m.id, name => m.name, video => m.video.map(|v| context! {
                    durations => v.durations, resolutions => v.resolutions, aspect_ratios => v.aspect_ratios,
                }) })
                .collect(),
            None,
        ),
        Err(e) => (Vec::new(), Some(crate::error::ApiError::from(e).message().to_owned())),
    }
}
