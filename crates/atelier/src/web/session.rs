//! Studio sessions: the same access and refresh tokens as the API, carried in
//! HttpOnly cookies, refreshed transparently, and protected against CSRF.
//!
//! - `atelier_access` and `atelier_refresh` hold the tokens (HttpOnly, SameSite=Lax,
//!   Path=/studio, so the REST API never sees them; Secure over HTTPS). A request with an expired or revoked access
//!   token but a live refresh token is refreshed on the spot and gets new cookies.
//! - Browsers fire several requests at once (a page, its images, htmx fragments).
//!   Refresh tokens are single use and a replay revokes the session, so refreshes
//!   of the same cookie are coalesced: the first one rotates, the others wait for
//!   and share its result for a short while. The API's `/auth/refresh` stays strict.
//! - CSRF: a random token in the `atelier_csrf` cookie must come back with every
//!   unsafe request, as the `X-CSRF-Token` header (htmx, fetch) or the
//!   `csrf_token` form field; and a cross-site `Origin` is refused outright.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use parking_lot::Mutex;
use tokio::sync::OnceCell;

use crate::app::AppState;
use crate::config::CookieSecurity;
use crate::service::Origin;
use crate::service::accounts::{AccountError, Principal, TokenPair};

pub const ACCESS_COOKIE: &str = "atelier_access";
pub const REFRESH_COOKIE: &str = "atelier_refresh";
pub const CSRF_COOKIE: &str = "atelier_csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";
pub const CSRF_FIELD: &str = "csrf_token";
/// How long a coalesced refresh result is shared.
const REFRESH_SHARE: Duration = Duration::from_secs(30);

/// The signed-in user of a studio request.
#[derive(Debug, Clone)]
pub struct StudioUser {
    pub principal: Principal,
}

/// The request's CSRF token, for forms and `hx-headers`.
#[derive(Debug, Clone)]
pub struct CsrfToken(pub String);

/// Reads one cookie from the request headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

/// How to write cookies for this request.
#[derive(Debug, Clone, Copy)]
pub struct CookiePolicy {
    pub secure: bool,
}

impl CookiePolicy {
    pub fn for_request(state: &AppState, headers: &HeaderMap) -> Self {
        let https = state.settings.trust_proxy_headers
            && headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|p| p.eq_ignore_ascii_case("https"));
        let secure = match state.settings.web.secure_cookies {
            CookieSecurity::Always => true,
            CookieSecurity::Never => false,
            CookieSecurity::Auto => https,
        };
        CookiePolicy { secure }
    }

    fn cookie(
        self,
        name: &str,
        value: &str,
        max_age: Option<Duration>,
        http_only: bool,
        same_site: &str,
    ) -> HeaderValue {
        let mut text = format!("{name}={value}; Path=/studio; SameSite={same_site}");
        if let Some(age) = max_age {
            text.push_str(&format!("; Max-Age={}", age.as_secs()));
        }
        if http_only {
            text.push_str("; HttpOnly");
        }
        if self.secure {
            text.push_str("; Secure");
        }
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
    }

    /// The cookies of a signed-in session.
    pub fn session(self, pair: &TokenPair, refresh_lifetime: Duration) -> [HeaderValue; 2] {
        [
            self.cookie(
                ACCESS_COOKIE,
                &pair.access_token,
                Some(Duration::from_secs(pair.expires_in)),
                true,
                "Lax",
            ),
            self.cookie(
                REFRESH_COOKIE,
                &pair.refresh_token,
                Some(refresh_lifetime),
                true,
                "Lax",
            ),
        ]
    }

    /// Cookies that remove the session.
    pub fn clear_session(self) -> [HeaderValue; 2] {
        [
            self.cookie(ACCESS_COOKIE, "", Some(Duration::ZERO), true, "Lax"),
            self.cookie(REFRESH_COOKIE, "", Some(Duration::ZERO), true, "Lax"),
        ]
    }

    pub fn csrf(self, token: &str) -> HeaderValue {
        self.cookie(CSRF_COOKIE, token, None, true, "Strict")
    }
}

pub fn new_csrf_token() -> String {
    B64.encode(rand::random::<[u8; 32]>())
}

/// Coalesces concurrent refreshes of the same refresh token (see the module docs).
/// One refresh's result, filled by the first request and read by the others.
type SharedRefresh = Arc<OnceCell<Result<Arc<TokenPair>, String>>>;

#[derive(Default)]
pub struct RefreshCoalescer {
    recent: Mutex<HashMap<String, (Instant, SharedRefresh)>>,
}

impl RefreshCoalescer {
    async fn refresh(
        &self,
        state: &AppState,
        refresh_token: &str,
        origin: &Origin,
    ) -> Option<Arc<TokenPair>> {
        let cell = {
            let mut recent = self.recent.lock();
            recent.retain(|_, (at, _)| at.elapsed() < REFRESH_SHARE);
            Arc::clone(
                &recent
                    .entry(refresh_token.to_owned())
                    .or_insert_with(|| (Instant::now(), Arc::new(OnceCell::new())))
                    .1,
            )
        };
        let result = cell
            .get_or_init(|| async {
                state
                    .accounts
                    .refresh(refresh_token, origin)
                    .await
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .await;
        result.as_ref().ok().cloned()
    }
}

/// Resolves the session of every `/studio` request: the user (if any) and the CSRF
/// token go into the request's extensions; refreshed or new cookies go on the
/// response. Unsafe methods must carry the CSRF token.
pub async fn session_layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let policy = CookiePolicy::for_request(&state, &parts.headers);
    let mut set_cookies: Vec<HeaderValue> = Vec::new();

    let csrf = match cookie(&parts.headers, CSRF_COOKIE) {
        Some(token) if token.len() >= 32 => token.to_owned(),
        _ => {
            let token = new_csrf_token();
            set_cookies.push(policy.csrf(&token));
            token
        }
    };

    // CSRF: unsafe methods only, before any work is done.
    let body = if is_unsafe(&parts.method) {
        if cross_site(&parts.headers) {
            return forbidden("this request came from another site");
        }
        match csrf_presented(&parts.headers, body).await {
            Ok((presented, body)) if presented.as_deref() == Some(csrf.as_str()) => body,
            Ok(_) => return forbidden("the form has expired; reload the page and try again"),
            Err(response) => return response,
        }
    } else {
        body
    };

    let origin = Origin {
        ip: parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip()),
        request_id: parts
            .extensions
            .get::<crate::api::middleware::RequestId>()
            .map(|r| r.0.clone()),
    };
    let mut user = None;
    if let Some(access) = cookie(&parts.headers, ACCESS_COOKIE) {
        user = state.accounts.authenticate(access).await.ok();
    }
    if user.is_none()
        && let Some(refresh) = cookie(&parts.headers, REFRESH_COOKIE).map(str::to_owned)
    {
        match state.web.refresh.refresh(&state, &refresh, &origin).await {
            Some(pair) => {
                user = state.accounts.authenticate(&pair.access_token).await.ok();
                set_cookies.extend(policy.session(&pair, state.settings.auth.refresh_absolute_ttl));
            }
            // A dead session: forget its cookies.
            None => set_cookies.extend(policy.clear_session()),
        }
    }
    if let Some(principal) = user {
        parts.extensions.insert(StudioUser { principal });
    }
    parts.extensions.insert(CsrfToken(csrf));
    parts.extensions.insert(policy);

    let mut response = next.run(Request::from_parts(parts, body)).await;
    for cookie in set_cookies {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

fn is_unsafe(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// A browser says where a request came from; anything but this host is refused.
fn cross_site(headers: &HeaderMap) -> bool {
    let (Some(origin), Some(host)) = (
        headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        headers.get(header::HOST).and_then(|v| v.to_str().ok()),
    ) else {
        return false;
    };
    let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    origin_host != host
}

/// The token from the header, or from the `csrf_token` field of a urlencoded form
/// (the body is read and handed on unchanged).
async fn csrf_presented(headers: &HeaderMap, body: Body) -> Result<(Option<String>, Body), Response> {
    if let Some(token) = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()) {
        return Ok((Some(token.to_owned()), body));
    }
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Ok((None, body));
    }
    let bytes = to_bytes(body, crate::app::BODY_LIMIT)
        .await
        .map_err(|_| (StatusCode::PAYLOAD_TOO_LARGE, "form too large").into_response())?;
    let token = form_urlencoded_field(&bytes, CSRF_FIELD);
    Ok((token, Body::from(bytes)))
}

fn form_urlencoded_field(body: &[u8], name: &str) -> Option<String> {
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn forbidden(message: &str) -> Response {
    (
        StatusCode::FORBIDDEN,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message.to_owned(),
    )
        .into_response()
}

/// Where to send someone who must sign in first. htmx requests get a header that
/// makes the whole page go there.
pub fn sign_in_redirect(headers: &HeaderMap, path: &str) -> Response {
    let target = format!(
        "/studio/login?next={}",
        url::form_urlencoded::byte_serialize(path.as_bytes()).collect::<String>()
    );
    if headers.contains_key("hx-request") {
        let mut response = StatusCode::UNAUTHORIZED.into_response();
        if let Ok(v) = HeaderValue::from_str(&target) {
            response.headers_mut().insert("hx-redirect", v);
        }
        return response;
    }
    Redirect::to(&target).into_response()
}

/// The user-facing text of an account error in the studio.
pub fn account_message(e: &AccountError) -> String {
    match e {
        AccountError::Throttled { retry_after } => {
            format!(
                "Too many attempts. Try again in {} seconds.",
                retry_after.as_secs().max(1)
            )
        }
        AccountError::Store(_) | AccountError::Internal(_) => {
            "Something went wrong on our side. Please try again.".into()
        }
        other => {
            let text = other.to_string();
            let mut chars = text.chars();
            chars.next().map_or_else(String::new, |c| {
                c.to_uppercase().collect::<String>() + chars.as_str()
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_and_origins() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; atelier_access=xyz; b="),
        );
        assert_eq!(cookie(&headers, ACCESS_COOKIE), Some("xyz"));
        assert_eq!(cookie(&headers, "b"), None);
        assert_eq!(cookie(&headers, "missing"), None);

        headers.insert(header::HOST, HeaderValue::from_static("studio.example.com"));
        assert!(!cross_site(&headers), "no Origin header: not judged");
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://studio.example.com"),
        );
        assert!(!cross_site(&headers));
        headers.insert(header::ORIGIN, HeaderValue::from_static("https://evil.example"));
        assert!(cross_site(&headers));
        assert_eq!(
            form_urlencoded_field(b"email=a%40b.c&csrf_token=t%2Bk", CSRF_FIELD).as_deref(),
            Some("t+k")
        );
    }

    #[test]
    fn cookie_attributes() {
        let pair = TokenPair {
            access_token: "a".into(),
            expires_in: 300,
            refresh_token: "r".into(),
        };
        let plain = CookiePolicy { secure: false }.session(&pair, Duration::from_secs(60));
        let text = plain[0].to_str().expect("text");
        assert!(
            text.contains("HttpOnly") && text.contains("SameSite=Lax") && !text.contains("Secure"),
            "{text}"
        );
        let secure = CookiePolicy { secure: true }.session(&pair, Duration::from_secs(60));
        assert!(secure[1].to_str().expect("text").contains("; Secure"));
    }
}
