//! The admin console: statistics, health, users and their budgets, usage and
//! cost, the model allow-list. Invisible to non-admins (404, as if it did not exist).

use atelier_store::{Role, UserQuery, nanos_to_usd};
use axum::Form;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use minijinja::{Value, context};
use serde::Deserialize;
use uuid::Uuid;

use super::session::{CsrfToken, StudioUser};
use super::{PageContext, notice, render};
use crate::api::admin::usage_response;
use crate::api::extract::ClientOrigin;
use crate::api::keys::{BudgetOverrideBody, set_budget as set_user_budget};
use crate::app::AppState;
use crate::error::ApiError;

const USERS_PAGE: u32 = 25;
const USAGE_DAYS: u32 = 30;

/// A signed-in admin. Anyone else is told the console does not exist (404).
pub struct StudioAdmin(StudioUser);

impl FromRequestParts<AppState> for StudioAdmin {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let user = StudioUser::from_request_parts(parts, state).await?;
        if user.principal.role == Role::Admin {
            Ok(StudioAdmin(user))
        } else {
            Err((StatusCode::NOT_FOUND, "Not found").into_response())
        }
    }
}

pub async fn page(
    State(state): State<AppState>,
    StudioAdmin(user): StudioAdmin,
    csrf: CsrfToken,
) -> Response {
    let page = PageContext::new(&state, Some(&user), &csrf, "admin").await;
    let stats = state.admin.stats().await.ok();
    let health = state.admin.db_health().await;
    let usage = usage_response(&state, USAGE_DAYS).await.ok();
    let chart = usage.as_ref().map(|u| cost_chart(&u.by_day, USAGE_DAYS));
    let users = users_context(
        &state,
        &UserQuery {
            limit: USERS_PAGE,
            ..Default::default()
        },
        None,
    )
    .await;
    let count = |role: Role| {
        stats
            .as_ref()
            .and_then(|s| s.users_by_role.iter().find(|(r, _)| *r == role).map(|(_, n)| *n))
            .unwrap_or(0)
    };
    render(
        &state,
        "admin.html",
        &page,
        context! {
            stats => stats.as_ref().map(|s| context! {
                users => count(Role::User) + count(Role::Admin), admins => count(Role::Admin),
                active_tokens => s.refresh_tokens.active, expired_tokens => s.refresh_tokens.expired,
                revoked_tokens => s.refresh_tokens.revoked, rotated_tokens => s.refresh_tokens.rotated,
                logins => s.logins_last_24h.succeeded, failed_logins => s.logins_last_24h.failed,
            }),
            health => context! {
                ok => health.error.is_none(), backend => health.backend,
                latency_ms => (health.latency.as_secs_f64() * 1e4).round() / 10.0, error => health.error,
            },
            usage => usage.as_ref().map(|u| context! {
                days => u.days, total_cost => u.total_cost_usd, total_generations => u.total_generations,
                by_user => u.by_user.iter().map(|t| context! { label => t.label.clone().unwrap_or_else(|| "(deleted user)".into()), generations => t.generations, tokens => t.tokens, cost => t.cost_usd }).collect::<Vec<_>>(),
                by_model => u.by_model.iter().map(|t| context! { label => t.key, generations => t.generations, tokens => t.tokens, cost => t.cost_usd }).collect::<Vec<_>>(),
            }),
            chart => chart,
            users => users,
            me => user.principal.user_id.to_string(),
            allowed_models => state.catalog.allowed().join("\n"),
        },
    )
}

/// A bar chart of cost per day as plain SVG numbers: no script, no inline style.
fn cost_chart(by_day: &[crate::api::admin::UsageTotalResponse], days: u32) -> Value {
    let today = chrono::Utc::now().date_naive();
    let series: Vec<(String, f64)> = (0..days)
        .rev()
        .map(|back| {
            let day = (today - chrono::Duration::days(i64::from(back)))
                .format("%Y-%m-%d")
                .to_string();
            let cost = by_day.iter().find(|d| d.key == day).map_or(0.0, |d| d.cost_usd);
            (day, cost)
        })
        .collect();
    let max = series.iter().map(|(_, c)| *c).fold(0.0_f64, f64::max);
    let (width, height, left, bottom) = (600.0, 160.0, 8.0, 20.0);
    let slot = (width - left) / f64::from(days);
    let bars: Vec<Value> = series
        .iter()
        .enumerate()
        .map(|(i, (day, cost))| {
            let h = if max > 0.0 {
                (cost / max) * (height - bottom - 10.0)
            } else {
                0.0
            };
            context! {
                x => (left + slot * i as f64 + 1.0).round(), y => (height - bottom - h).round(),
                w => (slot - 2.0).max(1.0).round(), h => h.round(), day => day, cost => cost,
            }
        })
        .collect();
    context! {
        width => width, height => height, baseline => height - bottom, bars => bars, max => max,
        first => series.first().map(|(d, _)| d.clone()), last => series.last().map(|(d, _)| d.clone()),
    }
}

async fn users_context(state: &AppState, query: &UserQuery, search: Option<&str>) -> Value {
    match state.accounts.list_users(query).await {
        Ok(page) => {
            let next = page
                .has_more
                .then(|| page.users.last().map(|u| u.id.to_string()))
                .flatten();
            context! {
                rows => page.users.iter().map(|u| context! {
                    id => u.id.to_string(), email => u.email, role => u.role.as_str(), created_at => u.created_at.to_rfc3339(),
                    budget => budget_context(state, u.id, u.role),
                }).collect::<Vec<_>>(),
                total => page.total, next => next, q => search,
            }
        }
        Err(e) => context! { error => ApiError::from(e).message().to_owned(), rows => Vec::<Value>::new() },
    }
}

/// A user's spend today against their caps, and what the admin set.
fn budget_context(state: &AppState, id: Uuid, role: Role) -> Value {
    let standing = state.budgets.standing(id, role);
    let custom = state.budgets.override_of(id);
    let o = custom.clone().unwrap_or_default();
    let default = state.budgets.role_default(role);
    let usd = |n: Option<i64>| n.map(nanos_to_usd);
    context! {
        spent_today => nanos_to_usd(standing.day_nanousd),
        daily => usd(standing.caps.daily_nanousd),
        custom => custom.is_some(),
        set => context! {
            daily_usd => usd(o.daily_nanousd), monthly_usd => usd(o.monthly_nanousd),
            daily_requests => o.daily_requests, monthly_requests => o.monthly_requests,
        },
        default => context! {
            daily_usd => usd(default.daily_nanousd), monthly_usd => usd(default.monthly_nanousd),
            daily_requests => default.daily_requests, monthly_requests => default.monthly_requests,
        },
    }
}

#[derive(Debug, Deserialize)]
pub struct BudgetForm {
    #[serde(default)]
    daily_usd: String,
    #[serde(default)]
    monthly_usd: String,
    #[serde(default)]
    daily_requests: String,
    #[serde(default)]
    monthly_requests: String,
}

/// Reads one optional number of a budget form: empty means the role's default.
fn optional<T: std::str::FromStr>(text: &str, what: &str) -> Result<Option<T>, String> {
    match text.trim() {
        "" => Ok(None),
        t => t
            .parse()
            .map(Some)
            .map_err(|_| format!("{what} must be a number, or empty for the role's default.")),
    }
}

/// Saves a user's caps and answers with their budget cell, saying so.
pub async fn set_budget(
    State(state): State<AppState>,
    StudioAdmin(admin): StudioAdmin,
    ClientOrigin(origin): ClientOrigin,
    Path(id): Path<Uuid>,
    Form(form): Form<BudgetForm>,
) -> Response {
    let user = match state.accounts.user(id).await {
        Ok(user) => user,
        Err(e) => return notice(&state, "error", ApiError::from(e).message()),
    };
    let parsed = (|| {
        Ok::<_, String>(BudgetOverrideBody {
            daily_usd: optional(&form.daily_usd, "The daily amount")?,
            monthly_usd: optional(&form.monthly_usd, "The monthly amount")?,
            daily_requests: optional(&form.daily_requests, "The daily requests")?,
            monthly_requests: optional(&form.monthly_requests, "The monthly requests")?,
        })
    })();
    let outcome = match parsed {
        Ok(body) => set_user_budget(&state, id, &body, Some(admin.principal.user_id), &origin)
            .await
            .map(|()| format!("Budget of {} saved.", user.email))
            .map_err(|e| e.message().to_owned()),
        Err(message) => Err(message),
    };
    let (kind, message) = match outcome {
        Ok(m) => ("ok", m),
        Err(m) => ("error", m),
    };
    let page = PageContext {
        viewer: None,
        csrf: String::new(),
        page: "",
    };
    render(
        &state,
        "admin_budget.html",
        &page,
        context! {
            u => context! { id => id.to_string(), email => user.email, budget => budget_context(&state, id, user.role) },
            kind => kind, message => message, open => kind == "error",
        },
    )
}

#[derive(Debug, Deserialize)]
pub struct UsersQuery {
    q: Option<String>,
    after: Option<Uuid>,
}

/// The users table, searched and paged (an htmx fragment).
pub async fn users(
    State(state): State<AppState>,
    StudioAdmin(user): StudioAdmin,
    Query(q): Query<UsersQuery>,
) -> Response {
    let search = q.q.as_deref().map(str::trim).filter(|s| !s.is_empty());
    let query = UserQuery {
        email_contains: search.map(str::to_owned),
        after: q.after,
        limit: USERS_PAGE,
        ..Default::default()
    };
    let users = users_context(&state, &query, search).await;
    let page = PageContext {
        viewer: None,
        csrf: String::new(),
        page: "",
    };
    render(
        &state,
        "admin_users.html",
        &page,
        context! { users => users, me => user.principal.user_id.to_string() },
    )
}

#[derive(Debug, Deserialize)]
pub struct RoleForm {
    role: String,
}

pub async fn set_role(
    State(state): State<AppState>,
    StudioAdmin(user): StudioAdmin,
    ClientOrigin(origin): ClientOrigin,
    Path(id): Path<Uuid>,
    Form(form): Form<RoleForm>,
) -> Response {
    let Ok(role) = form.role.parse::<Role>() else {
        return status_notice(&state, "error", "Unknown role.");
    };
    match state
        .accounts
        .set_role(Some(user.principal.user_id), id, role, &origin)
        .await
    {
        Ok(u) => status_notice(&state, "ok", &format!("{} is now {}.", u.email, u.role)),
        Err(e) => status_notice(&state, "error", ApiError::from(e).message()),
    }
}

pub async fn delete_user(
    State(state): State<AppState>,
    StudioAdmin(user): StudioAdmin,
    ClientOrigin(origin): ClientOrigin,
    Path(id): Path<Uuid>,
) -> Response {
    match state
        .accounts
        .delete_user(Some(user.principal.user_id), id, &origin)
        .await
    {
        // The row goes; a message says so.
        Ok(()) => {
            let mut response = StatusCode::OK.into_response();
            response
                .headers_mut()
                .insert("hx-trigger", HeaderValue::from_static("user-deleted"));
            response
        }
        Err(e) => {
            let mut response = status_notice(&state, "error", ApiError::from(e).message());
            response
                .headers_mut()
                .insert("hx-retarget", HeaderValue::from_static("#users-status"));
            response
                .headers_mut()
                .insert("hx-reswap", HeaderValue::from_static("innerHTML"));
            response
        }
    }
}

/// A notice for the users table's status line.
fn status_notice(state: &AppState, kind: &str, message: &str) -> Response {
    notice(state, kind, message)
}

pub async fn purge(
    State(state): State<AppState>,
    StudioAdmin(user): StudioAdmin,
    ClientOrigin(origin): ClientOrigin,
) -> Response {
    match state
        .admin
        .purge_tokens(Some(user.principal.user_id), &origin)
        .await
    {
        Ok(n) => notice(
            &state,
            "ok",
            &format!("Removed {n} expired or revoked refresh token(s)."),
        ),
        Err(e) => notice(&state, "error", ApiError::from(e).message()),
    }
}

#[derive(Debug, Deserialize)]
pub struct ModelsForm {
    models: String,
}

pub async fn set_models(
    State(state): State<AppState>,
    _admin: StudioAdmin,
    Form(form): Form<ModelsForm>,
) -> Response {
    let models: Vec<String> = form
        .models
        .lines()
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
        .collect();
    match state.catalog.set_allowed(models).await {
        Ok(list) if list.is_empty() => notice(&state, "ok", "Every model the provider offers is allowed."),
        Ok(list) => notice(&state, "ok", &format!("{} model(s) allowed.", list.len())),
        Err(e) => notice(&state, "error", ApiError::from(e).message()),
    }
}
