//! `/ai`: the models on offer, chat (whole or streamed), and conversations.

use std::convert::Infallible;
use std::time::Duration;

use atelier_store::{ChatMessage, Conversation, ConversationQuery};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_stream::wrappers::ReceiverStream;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::extract::{ApiJson, ApiPath, ApiQuery};
use crate::app::AppState;
use crate::auth::extract::AuthUser;
use crate::error::{ApiError, ErrorBody};
use crate::service::accounts::Principal;
use crate::service::budgets::Reservation;
use crate::service::catalog::{Modality, ModelInfo};
use crate::service::chat::{ChatDone, ChatEvent, ChatInput, InputMessage, UsageSummary};
use crate::service::keys::Scope;

use super::gate;

// ---------------------------------------------------------------- models

#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ModalityName {
    Text,
    Image,
    Video,
}

impl From<ModalityName> for Modality {
    fn from(m: ModalityName) -> Self {
        match m {
            ModalityName::Text => Modality::Text,
            ModalityName::Image => Modality::Image,
            ModalityName::Video => Modality::Video,
        }
    }
}

impl From<Modality> for ModalityName {
    fn from(m: Modality) -> Self {
        match m {
            Modality::Text => ModalityName::Text,
            Modality::Image => ModalityName::Image,
            Modality::Video => ModalityName::Video,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ModelsQuery {
    /// What the models produce (default `text`).
    pub modality: Option<ModalityName>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelsResponse {
    pub models: Vec<ModelResponse>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelResponse {
    #[schema(example = "openai/gpt-4o-mini")]
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub modality: ModalityName,
    pub context_length: Option<u64>,
    pub pricing: PricingResponse,
    /// What a video model accepts.
    pub video: Option<VideoCapabilitiesResponse>,
}

/// Prices in USD.
#[derive(Debug, Serialize, ToSchema)]
pub struct PricingResponse {
    pub prompt_per_token: Option<f64>,
    pub completion_per_token: Option<f64>,
    pub per_image: Option<f64>,
    pub per_video_second: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VideoCapabilitiesResponse {
    pub durations: Vec<u32>,
    pub resolutions: Vec<String>,
    pub aspect_ratios: Vec<String>,
    /// `first_frame`, `last_frame`: which frames image-to-video accepts.
    pub frame_images: Vec<String>,
}

impl From<ModelInfo> for ModelResponse {
    fn from(m: ModelInfo) -> Self {
        ModelResponse {
            id: m.id,
            name: m.name,
            description: m.description,
            modality: m.modality.into(),
            context_length: m.context_length,
            pricing: PricingResponse {
                prompt_per_token: m.prompt_price,
                completion_per_token: m.completion_price,
                per_image: m.image_price,
                per_video_second: m.video_second_price,
            },
            video: m.video.map(|v| VideoCapabilitiesResponse {
                durations: v.durations,
                resolutions: v.resolutions,
                aspect_ratios: v.aspect_ratios,
                frame_images: v.frame_images,
            }),
        }
    }
}

/// The models on offer, by what they produce.
#[utoipa::path(get, path = "/ai/models", tag = "ai", security(("bearer" = [])), params(ModelsQuery), responses(
    (status = 200, description = "Models", body = ModelsResponse),
    (status = 502, description = "`upstream_unavailable`", body = ErrorBody)))]
pub async fn list_models(
    State(state): State<AppState>,
    _user: AuthUser,
    ApiQuery(q): ApiQuery<ModelsQuery>,
) -> Result<Json<ModelsResponse>, ApiError> {
    let modality = q.modality.unwrap_or(ModalityName::Text).into();
    let models = state.catalog.list(modality).await?;
    Ok(Json(ModelsResponse {
        models: models.into_iter().map(Into::into).collect(),
    }))
}

// ---------------------------------------------------------------- chat

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatMessageIn {
    /// `system`, `user` or `assistant`.
    #[schema(example = "user")]
    pub role: String,
    #[schema(example = "Write a haiku about rivers.")]
    pub content: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatRequestBody {
    #[schema(example = "openai/gpt-4o-mini")]
    pub model: String,
    /// With `conversation_id`: the new messages; without: a new conversation.
    pub messages: Vec<ChatMessageIn>,
    /// Send the answer as server-sent events while it is written.
    #[serde(default)]
    pub stream: bool,
    pub temperature: Option<f64>,
    pub max_tokens: Option<u32>,
    /// Continue this conversation.
    pub conversation_id: Option<Uuid>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageResponse {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    /// USD, when the upstream reports it.
    pub cost_usd: Option<f64>,
}

impl From<&UsageSummary> for UsageResponse {
    fn from(u: &UsageSummary) -> Self {
        UsageResponse {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.prompt_tokens + u.completion_tokens,
            cost_usd: u.cost_usd,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MessageResponse {
    pub id: Uuid,
    pub role: String,
    pub content: String,
    /// `complete`, `failed` (see `error`) or `aborted`.
    pub status: String,
    pub model: Option<String>,
    pub error: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl From<ChatMessage> for MessageResponse {
    fn from(m: ChatMessage) -> Self {
        MessageResponse {
            id: m.id,
            role: m.role,
            content: m.content,
            status: m.status.as_str().to_owned(),
            model: m.model,
            error: m.error,
            created_at: m.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChatResponse {
    pub conversation_id: Uuid,
    pub message: MessageResponse,
    /// The model that served the answer.
    pub model: String,
    pub usage: UsageResponse,
}

/// Chat, multi-turn, in stored conversations.
///
/// Without `stream`, the answer comes whole. With `stream: true` it is relayed as
/// server-sent events as it is written: `start` `{conversation_id, message_id}`,
/// then `delta` `{content}` events, then `done` `{message, model, finish_reason,
/// usage}` or `error` `{error: {code, message}, message_id}`. Errors before the
/// answer starts are ordinary JSON error responses.
#[utoipa::path(post, path = "/ai/chat", tag = "ai", security(("bearer" = [])), request_body = ChatRequestBody, responses(
    (status = 200, description = "The answer (JSON), or a `text/event-stream` when streaming", body = ChatResponse),
    (status = 403, description = "`model_not_allowed`", body = ErrorBody),
    (status = 404, description = "`not_found`: no such conversation", body = ErrorBody),
    (status = 422, description = "`invalid_request`", body = ErrorBody),
    (status = 429, description = "`upstream_rate_limited`", body = ErrorBody),
    (status = 502, description = "`upstream_unavailable`", body = ErrorBody),
    (status = 503, description = "`upstream_not_configured`, `upstream_payment_required`", body = ErrorBody),
    (status = 504, description = "`upstream_timeout`", body = ErrorBody)))]
pub async fn chat(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiJson(body): ApiJson<ChatRequestBody>,
) -> Result<Response, ApiError> {
    let streaming = body.stream;
    let prompt_chars = body.messages.iter().map(|m| m.content.len()).sum();
    let estimate = gate::estimate_chat(&state, &body.model, prompt_chars, body.max_tokens);
    let hold = gate::admit(&state, &user, Scope::Chat, estimate).await?;
    let input = ChatInput {
        model: body.model,
        messages: body
            .messages
            .into_iter()
            .map(|m| InputMessage {
                role: m.role,
                content: m.content,
            })
            .collect(),
        temperature: body.temperature,
        max_tokens: body.max_tokens,
        conversation_id: body.conversation_id,
    };
    if !streaming {
        let reply = state.chat.complete(user.user_id, user.role, input).await?;
        drop(hold);
        return Ok(Json(ChatResponse {
            conversation_id: reply.conversation_id,
            usage: (&reply.usage).into(),
            message: reply.message.into(),
            model: reply.model,
        })
        .into_response());
    }
    stream_response(&state, &user, input, hold).await
}

/// Starts a streamed answer and relays it as server-sent events (the API and the
/// studio share this). `hold` lives until the answer has ended.
pub async fn stream_response(
    state: &AppState,
    user: &Principal,
    input: ChatInput,
    hold: Reservation,
) -> Result<Response, ApiError> {
    let start = state.chat.stream(user.user_id, user.role, input, hold).await?;
    let first = Event::default()
        .event("start")
        .json_data(json!({"conversation_id": start.conversation_id, "message_id": start.message_id}))
        .map_err(ApiError::internal)?;
    let events = ReceiverStream::new(start.events).map(|event| Ok::<_, Infallible>(sse_event(event)));
    let stream = futures_util::stream::once(async move { Ok::<_, Infallible>(first) }).chain(events);
    // Comments while the upstream thinks keep proxies from closing the connection,
    // and reveal a client that has gone.
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(5)))
        .into_response())
}

fn sse_event(event: ChatEvent) -> Event {
    let (name, data) = match event {
        ChatEvent::Delta(content) => ("delta", json!({ "content": content })),
        ChatEvent::Done(done) => {
            let ChatDone {
                message,
                model,
                finish_reason,
                usage,
            } = *done;
            (
                "done",
                json!({
                    "message": MessageResponse::from(message),
                    "model": model,
                    "finish_reason": finish_reason,
                    "usage": UsageResponse::from(&usage),
                }),
            )
        }
        ChatEvent::Failed { message_id, error } => {
            let api = ApiError::from(*error);
            let body =
                json!({"error": {"code": api.code(), "message": api.message()}, "message_id": message_id});
            ("error", body)
        }
    };
    Event::default().event(name).data(data.to_string())
}

// ---------------------------------------------------------------- conversations

#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationResponse {
    pub id: Uuid,
    pub title: String,
    pub model: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

impl From<Conversation> for ConversationResponse {
    fn from(c: Conversation) -> Self {
        ConversationResponse {
            id: c.id,
            title: c.title,
            model: c.model,
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationListResponse {
    pub conversations: Vec<ConversationResponse>,
    /// Pass as `offset` for the next page; absent on the last.
    pub next_offset: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationDetailResponse {
    #[serde(flatten)]
    pub conversation: ConversationResponse,
    /// Oldest first.
    pub messages: Vec<MessageResponse>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1 to 100 (default 50).
    pub limit: Option<u32>,
    pub offset: Option<u32>,
}

/// Your conversations, most recently active first.
#[utoipa::path(get, path = "/ai/conversations", tag = "ai", security(("bearer" = [])), params(PageQuery), responses(
    (status = 200, description = "A page of conversations", body = ConversationListResponse)))]
pub async fn list_conversations(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<ConversationListResponse>, ApiError> {
    let limit = page_limit(q.limit)?;
    let offset = q.offset.unwrap_or(0);
    let (list, more) = state
        .chat
        .conversations(&ConversationQuery {
            user_id: user.user_id,
            limit,
            offset,
        })
        .await?;
    Ok(Json(ConversationListResponse {
        conversations: list.into_iter().map(Into::into).collect(),
        next_offset: more.then_some(offset + limit),
    }))
}

/// Checks a page size: 1 to 100, 50 by default.
pub fn page_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    let limit = limit.unwrap_or(50);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::unprocessable(
            "invalid_query",
            "limit must be between 1 and 100",
        ));
    }
    Ok(limit)
}

/// One conversation with its messages.
#[utoipa::path(get, path = "/ai/conversations/{id}", tag = "ai", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Conversation id")), responses(
    (status = 200, description = "The conversation", body = ConversationDetailResponse),
    (status = 404, description = "`not_found`", body = ErrorBody)))]
pub async fn get_conversation(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<ConversationDetailResponse>, ApiError> {
    let (conversation, messages) = state.chat.conversation(user.user_id, id).await?;
    Ok(Json(ConversationDetailResponse {
        conversation: conversation.into(),
        messages: messages.into_iter().map(Into::into).collect(),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameRequest {
    #[schema(example = "Trip to Lisbon")]
    pub title: String,
}

/// Rename a conversation.
#[utoipa::path(patch, path = "/ai/conversations/{id}", tag = "ai", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Conversation id")), request_body = RenameRequest, responses(
    (status = 200, description = "Renamed", body = ConversationResponse),
    (status = 404, description = "`not_found`", body = ErrorBody),
    (status = 422, description = "`invalid_request`", body = ErrorBody)))]
pub async fn rename_conversation(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<RenameRequest>,
) -> Result<Json<ConversationResponse>, ApiError> {
    Ok(Json(
        state.chat.rename(user.user_id, id, &body.title).await?.into(),
    ))
}

/// Delete a conversation and its messages.
#[utoipa::path(delete, path = "/ai/conversations/{id}", tag = "ai", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Conversation id")), responses(
    (status = 204, description = "Deleted"),
    (status = 404, description = "`not_found`", body = ErrorBody)))]
pub async fn delete_conversation(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    state.chat.delete(user.user_id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
