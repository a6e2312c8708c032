//! The account page: usage against the budget, API keys, email and password.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::{Value, context};
use serde::Deserialize;
use uuid::Uuid;

use super::session::{CsrfToken, StudioUser, account_message};
use super::{PageContext, render};
use crate::api::extract::{ClientOrigin, PublicUrl};
use crate::api::keys::{BudgetPeriod, budget_response};
use crate::app::AppState;
use crate::error::{ApiError, sentence};
use crate::service::accounts::ProfileChange;
use crate::service::keys::CreatedKey;

#[derive(Debug, Deserialize)]
pub struct AccountQuery {
    saved: Option<String>,
}

/// What one rendering of the page says besides the account itself.
#[derive(Default)]
struct Notices {
    saved: Option<&'static str>,
    email_error: Option<String>,
    password_error: Option<String>,
    key_error: Option<String>,
    /// A key just created: shown this once.
    new_key: Option<CreatedKey>,
}

pub async fn page(
    State(state): State<AppState>,
    user: StudioUser,
    csrf: CsrfToken,
    PublicUrl(base): PublicUrl,
    Query(q): Query<AccountQuery>,
) -> Response {
    let saved = match q.saved.as_deref() {
        Some("email") => Some("Your email address is changed."),
        Some("password") => Some("Your password is changed. Your other sessions have been logged out."),
        Some("revoked") => Some("The key is revoked. Programs using it are refused from now on."),
        _ => None,
    };
    show(
        &state,
        &user,
        &csrf,
        &base,
        Notices {
            saved,
            ..Notices::default()
        },
    )
    .await
}

fn period(p: &BudgetPeriod) -> Value {
    let percent = match p.limit_usd {
        Some(limit) if limit > 0.0 => (p.spent_usd / limit * 100.0).clamp(0.0, 100.0).round(),
        Some(_) => 100.0,
        None => 0.0,
    };
    context! {
        spent => p.spent_usd, limit => p.limit_usd, remaining => p.remaining_usd, percent => percent,
        requests => p.requests, request_limit => p.request_limit, resets_at => p.resets_at.to_rfc3339(),
    }
}

async fn show(
    state: &AppState,
    user: &StudioUser,
    csrf: &CsrfToken,
    base: &str,
    notices: Notices,
) -> Response {
    let me = user.principal.user_id;
    let page = PageContext::new(state, Some(user), csrf, "account").await;
    let created = state
        .accounts
        .me(me)
        .await
        .ok()
        .map(|u| u.created_at.to_rfc3339());
    let budget = budget_response(&state.budgets.standing(me, user.principal.role));
    let keys: Vec<Value> = state
        .keys
        .list(me)
        .await
        .unwrap_or_default()
        .iter()
        .map(|k| {
            context! {
                id => k.id.to_string(), name => k.name, prefix => format!("atl_{}_…", k.public_id),
                scopes => if k.scopes.is_empty() { "all".to_owned() } else { k.scopes.join(", ") },
                created_at => k.created_at.to_rfc3339(),
                last_used_at => k.last_used_at.map(|t| t.to_rfc3339()),
                expires_at => k.expires_at.map(|t| t.to_rfc3339()),
            }
        })
        .collect();
    let new_key = notices
        .new_key
        .as_ref()
        .map(|k| context! { name => k.record.name, key => k.key });
    let mut response = render(
        state,
        "account.html",
        &page,
        context! {
            saved => notices.saved, email_error => notices.email_error, password_error => notices.password_error,
            key_error => notices.key_error, new_key => new_key, keys => keys, created_at => created,
            today => period(&budget.daily), month => period(&budget.monthly), api_base => format!("{base}/v1"),
        },
    );
    // A page with a fresh key must not linger in caches or history.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[derive(Debug, Deserialize)]
pub struct KeyForm {
    name: String,
    #[serde(default)]
    scope_chat: Option<String>,
    #[serde(default)]
    scope_images: Option<String>,
    #[serde(default)]
    scope_videos: Option<String>,
    /// Days, or empty for a key that does not expire.
    #[serde(default)]
    expires_in_days: String,
}

/// Creates a key and shows it on the page this once (no redirect: the key would
/// have to travel in a URL or be stored to survive one).
pub async fn create_key(
    State(state): State<AppState>,
    user: StudioUser,
    csrf: CsrfToken,
    PublicUrl(base): PublicUrl,
    ClientOrigin(origin): ClientOrigin,
    Form(form): Form<KeyForm>,
) -> Response {
    let scopes: Vec<String> = [
        ("chat", &form.scope_chat),
        ("images", &form.scope_images),
        ("videos", &form.scope_videos),
    ]
    .into_iter()
    .filter(|(_, on)| on.is_some())
    .map(|(name, _)| name.to_owned())
    .collect();
    let expires = match form.expires_in_days.trim() {
        "" => Ok(None),
        days => days.parse::<u32>().map(Some),
    };
    let created = match expires {
        Ok(expires) => state
            .keys
            .create(user.principal.user_id, &form.name, &scopes, expires, &origin)
            .await
            .map_err(|e| ApiError::from(e).message().to_owned()),
        Err(_) => Err("Choose how long the key works.".to_owned()),
    };
    let notices = match created {
        Ok(key) => Notices {
            new_key: Some(key),
            ..Notices::default()
        },
        Err(message) => Notices {
            key_error: Some(sentence(&message)),
            ..Notices::default()
        },
    };
    show(&state, &user, &csrf, &base, notices).await
}

pub async fn revoke_key(
    State(state): State<AppState>,
    user: StudioUser,
    csrf: CsrfToken,
    PublicUrl(base): PublicUrl,
    ClientOrigin(origin): ClientOrigin,
    Path(id): Path<Uuid>,
) -> Response {
    match state.keys.revoke(id, Some(user.principal.user_id), &origin).await {
        Ok(_) => Redirect::to("/studio/account?saved=revoked").into_response(),
        Err(e) => {
            let notices = Notices {
                key_error: Some(ApiError::from(e).message().to_owned()),
                ..Notices::default()
            };
            show(&state, &user, &csrf, &base, notices).await
        }
    }
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
    PublicUrl(base): PublicUrl,
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
        Err(e) => {
            let notices = Notices {
                email_error: Some(account_message(&e)),
                ..Notices::default()
            };
            show(&state, &user, &csrf, &base, notices).await
        }
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
    PublicUrl(base): PublicUrl,
    ClientOrigin(origin): ClientOrigin,
    Form(form): Form<PasswordForm>,
) -> Response {
    let failed = |message: String| Notices {
        password_error: Some(message),
        ..Notices::default()
    };
    if form.new_password != form.confirm_password {
        return show(
            &state,
            &user,
            &csrf,
            &base,
            failed("The new passwords do not match.".into()),
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
        Err(e) => show(&state, &user, &csrf, &base, failed(account_message(&e))).await,
    }
}
