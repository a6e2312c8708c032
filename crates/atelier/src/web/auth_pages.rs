//! Sign up, log in, log out.

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;
use serde::Deserialize;

use super::session::{CookiePolicy, CsrfToken, REFRESH_COOKIE, StudioUser, account_message, cookie};
use super::{PageContext, render};
use crate::api::extract::ClientOrigin;
use crate::app::AppState;
use crate::config::Registration;

#[derive(Debug, Default, Deserialize)]
pub struct NextQuery {
    next: Option<String>,
    info: Option<String>,
}

/// Only local paths: a `next` pointing elsewhere would make an open redirect.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with("/studio") && !n.starts_with("//") && !n.contains("://") => n.to_owned(),
        _ => "/studio/chat".to_owned(),
    }
}

pub async fn login_page(
    State(state): State<AppState>,
    user: Option<StudioUser>,
    csrf: CsrfToken,
    Query(q): Query<NextQuery>,
) -> Response {
    if user.is_some() {
        return Redirect::to(&safe_next(q.next.as_deref())).into_response();
    }
    let page = PageContext::new(&state, None, &csrf, "login").await;
    let info = match q.info.as_deref() {
        Some("signed_up") => Some("Your account is ready. Log in to start."),
        Some("logged_out") => Some("You are logged out."),
        _ => None,
    };
    render(
        &state,
        "login.html",
        &page,
        context! { next => safe_next(q.next.as_deref()), info => info, email => "" },
    )
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    email: String,
    password: String,
    #[serde(default)]
    next: Option<String>,
}

pub async fn login(
    State(state): State<AppState>,
    csrf: CsrfToken,
    policy: axum::Extension<CookiePolicy>,
    ClientOrigin(origin): ClientOrigin,
    Form(form): Form<LoginForm>,
) -> Response {
    let attempt = match crate::api::gate::admit_login(&state, &origin).await {
        Ok(()) => state
            .accounts
            .login(&form.email, &form.password, &origin)
            .await
            .map_err(|e| (account_message(&e), crate::error::ApiError::from(e).status())),
        Err(limited) => Err((limited.message().to_owned(), limited.status())),
    };
    match attempt {
        Ok(pair) => {
            let mut response = Redirect::to(&safe_next(form.next.as_deref())).into_response();
            for c in policy.session(&pair, state.settings.auth.refresh_absolute_ttl) {
                response.headers_mut().append(header::SET_COOKIE, c);
            }
            response
        }
        Err((message, status)) => {
            let page = PageContext::new(&state, None, &csrf, "login").await;
            let mut response = render(
                &state,
                "login.html",
                &page,
                context! { error => message, email => form.email, next => safe_next(form.next.as_deref()) },
            );
            *response.status_mut() = status;
            response
        }
    }
}

pub async fn signup_page(
    State(state): State<AppState>,
    user: Option<StudioUser>,
    csrf: CsrfToken,
) -> Response {
    if user.is_some() {
        return Redirect::to("/studio/chat").into_response();
    }
    let page = PageContext::new(&state, None, &csrf, "signup").await;
    let closed = state.settings.registration == Registration::Closed;
    render(
        &state,
        "signup.html",
        &page,
        context! { closed => closed, email => "" },
    )
}

#[derive(Debug, Deserialize)]
pub struct SignupForm {
    email: String,
    password: String,
}

pub async fn signup(
    State(state): State<AppState>,
    csrf: CsrfToken,
    ClientOrigin(origin): ClientOrigin,
    Form(form): Form<SignupForm>,
) -> Response {
    match state
        .accounts
        .register(&form.email, &form.password, &origin)
        .await
    {
        Ok(_) => Redirect::to("/studio/login?info=signed_up").into_response(),
        Err(e) => {
            let page = PageContext::new(&state, None, &csrf, "signup").await;
            let closed = state.settings.registration == Registration::Closed;
            let mut response = render(
                &state,
                "signup.html",
                &page,
                context! { error => account_message(&e), email => form.email, closed => closed },
            );
            *response.status_mut() = crate::error::ApiError::from(e).status();
            response
        }
    }
}

pub async fn logout(
    State(state): State<AppState>,
    policy: axum::Extension<CookiePolicy>,
    ClientOrigin(origin): ClientOrigin,
    headers: HeaderMap,
) -> Response {
    if let Some(refresh) = cookie(&headers, REFRESH_COOKIE)
        && let Err(e) = state.accounts.logout(refresh, &origin).await
    {
        tracing::warn!(error = %e, "logout failed");
    }
    let mut response = Redirect::to("/studio/login?info=logged_out").into_response();
    for c in policy.clear_session() {
        response.headers_mut().append(header::SET_COOKIE, c);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_the_studio() {
        assert_eq!(safe_next(Some("/studio/images")), "/studio/images");
        assert_eq!(safe_next(Some("https://evil.example")), "/studio/chat");
        assert_eq!(safe_next(Some("//evil.example/studio")), "/studio/chat");
        assert_eq!(safe_next(Some("/studio/x?u=https://evil")), "/studio/chat");
        assert_eq!(safe_next(None), "/studio/chat");
    }
}
