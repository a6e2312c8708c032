//! Everything the user generated, filterable by kind, with costs.

use atelier_store::{GenerationKind, GenerationQuery, nanos_to_usd};
use axum::extract::{Query, State};
use axum::response::Response;
use minijinja::context;
use serde::Deserialize;
use uuid::Uuid;

use super::session::{CsrfToken, StudioUser};
use super::{PageContext, render};
use crate::app::AppState;

const PAGE: u32 = 30;

#[derive(Debug, Deserialize)]
pub struct HistoryQuery {
    kind: Option<String>,
    before: Option<Uuid>,
}

pub async fn page(
    State(state): State<AppState>,
    user: StudioUser,
    csrf: CsrfToken,
    Query(q): Query<HistoryQuery>,
) -> Response {
    let page = PageContext::new(&state, Some(&user), &csrf, "history").await;
    let kind: Option<GenerationKind> = q.kind.as_deref().and_then(|k| k.parse().ok());
    let query = GenerationQuery {
        user_id: user.principal.user_id,
        kind,
        before: q.before,
        limit: PAGE,
    };
    let (rows, more) = state.generator.history(&query).await.unwrap_or_default();
    let next = more.then(|| rows.last().map(|g| g.id.to_string())).flatten();
    let total: i64 = rows.iter().map(|g| g.cost_nanousd).sum();
    let items: Vec<_> = rows
        .iter()
        .map(|g| {
            context! {
                kind => g.kind.as_str(),
                status => g.status.as_str(),
                prompt => g.summary,
                model => g.model_served.clone().unwrap_or_else(|| g.model_requested.clone()),
                tokens => g.prompt_tokens + g.completion_tokens,
                cost => nanos_to_usd(g.cost_nanousd),
                latency_ms => g.latency_ms,
                error => g.error,
                created_at => g.created_at.to_rfc3339(),
                conversation_id => g.conversation_id.map(|c| c.to_string()),
                media => g.media_ids.iter().map(Uuid::to_string).collect::<Vec<_>>(),
            }
        })
        .collect();
    render(
        &state,
        "history.html",
        &page,
        context! {
            items => items,
            kind => kind.map(|k| k.as_str()),
            kinds => GenerationKind::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
            next => next,
            page_cost => nanos_to_usd(total),
            first_page => q.before.is_none(),
        },
    )
}
