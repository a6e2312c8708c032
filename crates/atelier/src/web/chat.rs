//! The chat page: conversations in a sidebar, the answer streamed in place.

use atelier_store::ConversationQuery;
use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use minijinja::{Value, context};
use serde::Deserialize;
use uuid::Uuid;

use super::session::{CsrfToken, StudioUser};
use super::{PageContext, model_options, render};
use crate::api::ai::stream_response;
use crate::api::gate;
use crate::app::AppState;
use crate::error::ApiError;
use crate::service::catalog::Modality;
use crate::service::chat::{ChatInput, InputMessage};
use crate::service::keys::Scope;

const SIDEBAR_SIZE: u32 = 100;

pub async fn page(State(state): State<AppState>, user: StudioUser, csrf: CsrfToken) -> Response {
    show(&state, &user, &csrf, None).await
}

pub async fn conversation_page(
    State(state): State<AppState>,
    user: StudioUser,
    csrf: CsrfToken,
    Path(id): Path<String>,
) -> Response {
    show(
        &state,
        &user,
        &csrf,
        Uuid::parse_str(&id).ok().or(Some(Uuid::nil())),
    )
    .await
}

async fn show(state: &AppState, user: &StudioUser, csrf: &CsrfToken, id: Option<Uuid>) -> Response {
    let page = PageContext::new(state, Some(user), csrf, "chat").await;
    let user_id = user.principal.user_id;
    let current = match id {
        None => None,
        Some(id) => match state.chat.conversation(user_id, id).await {
            Ok(found) => Some(found),
            Err(_) => {
                let mut response = render(
                    state,
                    "error.html",
                    &page,
                    context! { title => "Conversation not found", message => "It may have been deleted." },
                );
                *response.status_mut() = StatusCode::NOT_FOUND;
                return response;
            }
        },
    };
    let conversations = state
        .chat
        .conversations(&ConversationQuery {
            user_id,
            limit: SIDEBAR_SIZE,
            offset: 0,
        })
        .await
        .map(|(list, _)| list)
        .unwrap_or_default();
    let (models, models_error) = model_options(state, Modality::Text).await;
    let selected = current.as_ref().and_then(|(c, _)| c.model.clone()).or_else(|| {
        models
            .first()
            .and_then(|m| m.get_attr("id").ok())
            .map(|v| v.to_string())
    });
    let messages: Vec<Value> = current
        .as_ref()
        .map(|(_, messages)| {
            messages
                .iter()
                .map(|m| {
                    context! {
                        role => m.role, content => m.content, status => m.status.as_str(),
                        model => m.model, error => m.error,
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    render(
        state,
        "chat.html",
        &page,
        context! {
            conversations => conversations.iter().map(|c| context! { id => c.id.to_string(), title => c.title }).collect::<Vec<_>>(),
            current => current.as_ref().map(|(c, _)| context! { id => c.id.to_string(), title => c.title }),
            messages => messages,
            models => models,
            models_error => models_error,
            selected_model => selected,
        },
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendBody {
    model: String,
    content: String,
    conversation_id: Option<Uuid>,
}

/// Sends one message and streams the answer (the same events as `/ai/chat`).
pub async fn send(
    State(state): State<AppState>,
    user: StudioUser,
    axum::Json(body): axum::Json<SendBody>,
) -> Result<Response, ApiError> {
    let estimate = gate::estimate_chat(&state, &body.model, body.content.len(), None);
    let hold = gate::admit(&state, &user.principal, Scope::Chat, estimate).await?;
    let input = ChatInput {
        model: body.model,
        messages: vec![InputMessage {
            role: "user".into(),
            content: body.content,
        }],
        temperature: None,
        max_tokens: None,
        conversation_id: body.conversation_id,
    };
    stream_response(&state, &user.principal, input, hold).await
}

#[derive(Debug, Deserialize)]
pub struct RenameForm {
    title: String,
}

/// Renames a conversation; answers with its new sidebar entry.
pub async fn rename(
    State(state): State<AppState>,
    user: StudioUser,
    Path(id): Path<Uuid>,
    Form(form): Form<RenameForm>,
) -> Response {
    match state.chat.rename(user.principal.user_id, id, &form.title).await {
        Ok(c) => {
            let html = format!(
                "<a href=\"/studio/chat/{id}\">{}</a>",
                minijinja::HtmlEscape(&c.title)
            );
            let mut response = axum::response::Html(html).into_response();
            response
                .headers_mut()
                .insert("hx-trigger", HeaderValue::from_static("renamed"));
            response
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Deletes a conversation. When it is the one on screen, the page moves on.
pub async fn delete(
    State(state): State<AppState>,
    user: StudioUser,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = state.chat.delete(user.principal.user_id, id).await {
        return ApiError::from(e).into_response();
    }
    let showing = headers
        .get("hx-current-url")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|url| url.contains(&id.to_string()));
    let mut response = StatusCode::OK.into_response();
    if showing {
        response
            .headers_mut()
            .insert("hx-redirect", HeaderValue::from_static("/studio/chat"));
    }
    response
}
