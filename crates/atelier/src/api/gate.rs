//! Admission of generation requests, before the upstream is called: the
//! credential's scope, the rate limit of the principal, and the user's budget
//! (which holds an estimate of the cost until the request ends). Logins are
//! limited per client address.

use std::time::Duration;

use atelier_store::{Role, usd_to_nanos};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use serde_json::json;

use crate::app::AppState;
use crate::error::{ApiError, sentence};
use crate::service::Origin;
use crate::service::accounts::Principal;
use crate::service::budgets::Reservation;
use crate::service::keys::Scope;
use crate::service::limits::{Decision, LimitScope};

/// Rough tokens in a text, for estimates: about four characters a token.
fn tokens_in(chars: usize) -> f64 {
    chars as f64 / 4.0
}

/// What a chat or text request may cost: the model's prices when known, else the
/// configured default.
pub fn estimate_chat(state: &AppState, model: &str, prompt_chars: usize, max_tokens: Option<u32>) -> i64 {
    match state.catalog.cached(model) {
        Some(m) => {
            let prompt = tokens_in(prompt_chars) * m.prompt_price.unwrap_or(0.0);
            let completion = f64::from(max_tokens.unwrap_or(1024)) * m.completion_price.unwrap_or(0.0);
            usd_to_nanos(prompt + completion)
        }
        None => usd_to_nanos(state.settings.budgets.estimate_chat_usd),
    }
}

pub fn estimate_image(state: &AppState, model: &str, n: u32) -> i64 {
    let each = state
        .catalog
        .cached(model)
        .and_then(|m| m.image_price)
        .unwrap_or(state.settings.budgets.estimate_image_usd);
    usd_to_nanos(each * f64::from(n.max(1)))
}

pub fn estimate_video(state: &AppState, model: &str, duration: Option<u32>) -> i64 {
    match state.catalog.cached(model).and_then(|m| m.video_second_price) {
        Some(per_second) => usd_to_nanos(per_second * f64::from(duration.unwrap_or(8))),
        None => usd_to_nanos(state.settings.budgets.estimate_video_usd),
    }
}

/// Lets a request through, or says why not. The returned hold must live until the
/// request has ended.
pub async fn admit(
    state: &AppState,
    who: &Principal,
    scope: Scope,
    estimate_nanousd: i64,
) -> Result<Reservation, ApiError> {
    if !who.allows(scope) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            format!("this API key may not be used for {}", scope.as_str()),
        ));
    }
    let limit_scope = match scope {
        Scope::Chat => LimitScope::Chat,
        Scope::Images => LimitScope::Images,
        Scope::Videos => LimitScope::Videos,
    };
    if let Some(decision) = state.limiter.hit(&who.limit_key(), who.role, limit_scope).await
        && !decision.allowed
    {
        return Err(rate_limited(limit_scope, decision));
    }
    state
        .budgets
        .reserve(who.user_id, who.role, estimate_nanousd)
        .map_err(|e| {
            ApiError::new(
                StatusCode::PAYMENT_REQUIRED,
                "budget_exceeded",
                sentence(&e.to_string()),
            )
            .with_detail("remaining_usd", json!(e.remaining_usd))
            .with_detail("resets_at", json!(e.resets_at))
            .with_detail("period", json!(e.period))
        })
}

/// Login attempts per client address, whatever their outcome (the throttle in
/// `auth::throttle` slows failures down; this caps the volume).
pub async fn admit_login(state: &AppState, origin: &Origin) -> Result<(), ApiError> {
    let address = origin
        .ip
        .map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
    match state.limiter.hit(&address, Role::User, LimitScope::Login).await {
        Some(decision) if !decision.allowed => Err(rate_limited(LimitScope::Login, decision)),
        _ => Ok(()),
    }
}

/// `429` with `Retry-After` and the `RateLimit-*` headers.
pub fn rate_limited(scope: LimitScope, d: Decision) -> ApiError {
    let wait = d.reset_after.max(Duration::from_millis(1));
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let header = |value: String| HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("0"));
    ApiError::too_many_requests(
        "rate_limited",
        format!(
            "rate limit reached: {} {} requests per {}; try again in {secs} s",
            d.limit,
            scope.as_str(),
            humantime::format_duration(Duration::from_secs(secs.max(1)))
        ),
        wait,
    )
    .with_header(
        HeaderName::from_static("ratelimit-limit"),
        header(d.limit.to_string()),
    )
    .with_header(
        HeaderName::from_static("ratelimit-remaining"),
        header(d.remaining.to_string()),
    )
    .with_header(
        HeaderName::from_static("ratelimit-reset"),
        header(secs.to_string()),
    )
}
