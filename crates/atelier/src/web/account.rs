//! The account page: email and password.

use axum::Form;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;
use serde::Deserialize;

use super::session::{CsrfToken, StudioUser, account_message};
use super::{PageContext, render};
use crate::api::extract::ClientOrigin;
use crate::app::AppState;
use crate::service::accounts::ProfileChange;

#[derive(Debug, Deserialize)]
pub struct AccountQuery {
    saved: Option<String>,
}

pub async fn page(
    State(state): State<AppState>,
    user: StudioUser,
    csrf: CsrfToken,
    Query(q): Query<AccountQuery>,
) -> Response {
    let saved = match q.saved.as_deref() {
        Some("email") => Some("Your email address is changed."),
        Some("password") => Some("Your password is changed. Your other sessions have been logged out."),
        _ => None,
    };
    show(&state, &user, &csrf, saved, None, None).await
}

async fn show(
    state: &AppState,
    user: &StudioUser,
    csrf: &CsrfToken,
    saved: Option<&str>,
    email_error: Option<String>,
    password_error: Option<String>,
) -> Response {
    let page = PageContext::new(state, Some(user), csrf, "account").await;
    let created = state
        .accounts
        .me(user.principal.user_id)
        .await
        .ok()
        .map(|u| u.created_at.to_rfc3339());
    render(
        state,
        "account.html",
        &page,
        context! { saved => saved, email_error => email_error, password_error => password_error, created_at => created },
    )
}

#[derive(Debug, Deserialize)]
pub struct EmailForm {
    email: String,
    current_password: String,
}

pub async fn change_email(
    State(state): State<AppState>,
    user: StudioUser,
    csrf: CsrfToken,
    ClientOrigin(origin): ClientOrigin,
    Form(form): Form<EmailForm>,
) -> Response {
    let change = ProfileChange {
        email: Some(form.email),
        new_password: None,
        current_password: form.current_password,
    };
    match state.accounts.update_me(&user.principal, change, &origin).await {
        Ok(_) => Redirect::to("/studio/account?saved=email").into_response(),
        Err(e) => show(&state, &user, &csrf, None, Some(account_message(&e)), None).await,
    }
}

#[derive(Debug, Deserialize)]
pub struct PasswordForm {
    current_password: String,
    new_password: String,
    confirm_password: String,
}

/// A password change voids every access token, this session's too; the next page
/// refreshes the session transparently with its (kept) refresh token.
pub async fn change_password(
    State(state): State<AppState>,
    user: StudioUser,
    csrf: CsrfToken,
    ClientOrigin(origin): ClientOrigin,
    Form(form): Form<PasswordForm>,
) -> Response {
    if form.new_password != form.confirm_password {
        return show(
            &state,
            &user,
            &csrf,
            None,
            None,
            Some("The new passwords do not match.".into()),
        )
        .await;
    }
    let change = ProfileChange {
        email: None,
        new_password: Some(form.new_password),
        current_password: form.current_password,
    };
    match state.accounts.update_me(&user.principal, change, &origin).await {
        Ok(_) => Redirect::to("/studio/account?saved=password").into_response(),
        Err(e) => show(&state, &user, &csrf, None, None, Some(account_message(&e))).await,
    }
}
