//! The OpenAI-compatible `/v1`: models, chat completions (whole and streamed),
//! images and videos, with OpenAI's bodies, chunks and errors, so existing SDKs
//! work unchanged against atelier with a per-user API key (or an access token).

mod error;

use std::convert::Infallible;

use atelier_store::{JobStatus, VideoJob};
use axum::body::Body;
use axum::extract::rejection::{JsonRejection, MissingJsonContentType};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Multipart, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio_stream::wrappers::ReceiverStream;
use uuid::Uuid;

pub use self::error::OpenAiError;
use crate::api::extract::{PublicUrl, body_too_large};
use crate::api::gate;
use crate::app::AppState;
use crate::auth::extract::AuthUser;
use crate::error::ApiError;
use crate::service::accounts::Principal;
use crate::service::catalog::Modality;
use crate::service::chat_body::{BodyError, ChatBody, NotAnObject};
use crate::service::generate::{ASPECT_RATIOS, ImageInput};
use crate::service::generation_error::GenerationError;
use crate::service::keys::Scope;
use crate::service::passthrough::PassEvent;
use crate::service::video::{FrameInput, VideoInput, progress, typical_duration};

/// Chat requests may carry long histories and images.
const V1_BODY_LIMIT: usize = 32 * 1024 * 1024;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/models", get(list_models))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/images/generations", post(image_generations))
        .route("/v1/videos", post(create_video))
        .route("/v1/videos/{id}", get(get_video))
        .route("/v1/videos/{id}/content", get(video_content))
        // The app's own fallback answers in the REST shape; this one in OpenAI's.
        .route(
            "/v1/{*rest}",
            any(|| async { OpenAiError::from(ApiError::not_found("not_found", "no such /v1 route")) }),
        )
        .layer(DefaultBodyLimit::max(V1_BODY_LIMIT))
}

/// A caller with an API key or an access token; refusals in OpenAI's shape.
pub struct V1User(pub Principal);

impl FromRequestParts<AppState> for V1User {
    type Rejection = OpenAiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let AuthUser(principal) = AuthUser::from_request_parts(parts, state).await?;
        Ok(V1User(principal))
    }
}

/// A JSON body; malformed ones are OpenAI `invalid_request_error`s.
fn body(json: Result<Json<Value>, JsonRejection>) -> Result<Value, OpenAiError> {
    match json {
        Ok(Json(Value::Object(map))) => Ok(Value::Object(map)),
        Ok(_) => Err(ApiError::bad_request("invalid_body", "the body must be a JSON object").into()),
        Err(e) => Err(refused(e)),
    }
}

/// A body that could not be read as JSON: one over the limit is 413
/// `body_too_large`, as in the REST API; any other 400 `invalid_body` in
/// axum's words (serde's, with the position, for a syntax error).
fn refused(rejection: JsonRejection) -> OpenAiError {
    match rejection {
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            body_too_large(V1_BODY_LIMIT).into()
        }
        other => ApiError::bad_request("invalid_body", other.body_text()).into(),
    }
}

fn served_header(response: &mut Response, model: &str) {
    if let Ok(v) = HeaderValue::from_str(model) {
        response.headers_mut().insert("x-atelier-model", v);
    }
}

// ---------------------------------------------------------------- models

async fn list_models(
    State(state): State<AppState>,
    V1User(user): V1User,
) -> Result<Json<Value>, OpenAiError> {
    let mut data = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (alias, _) in state.routing.router.aliases() {
        if state.routing.router.role_allows(user.role, &alias) && seen.insert(alias.clone()) {
            data.push(json!({"id": alias, "object": "model", "created": 0, "owned_by": "atelier"}));
        }
    }
    // A model with several outputs (text and images) is listed once.
    for modality in [Modality::Text, Modality::Image, Modality::Video] {
        for m in state.catalog.list(modality).await.map_err(ApiError::from)? {
            if state.routing.router.role_allows(user.role, &m.id) && seen.insert(m.id.clone()) {
                let owner = m.id.split('/').next().unwrap_or("upstream").to_owned();
                data.push(json!({"id": m.id, "object": "model", "created": 0, "owned_by": owner}));
            }
        }
    }
    Ok(Json(json!({"object": "list", "data": data})))
}

// ---------------------------------------------------------------- chat

/// A chat body read straight from the request's bytes, refused with the words
/// axum's `Json` would use (the body is read once, and only a refusal asks
/// `Json` why).
struct V1ChatBody(ChatBody);

impl FromRequest<AppState> for V1ChatBody {
    type Rejection = OpenAiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(refused(MissingJsonContentType::default().into()));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| refused(e.into()))?;
        match ChatBody::parse(bytes) {
            Ok(body) => Ok(V1ChatBody(body)),
            Err(NotAnObject(bytes)) => Err(match Json::<Box<RawValue>>::from_bytes(&bytes) {
                Err(rejection) => refused(rejection),
                Ok(_) => ApiError::bad_request("invalid_body", BodyError::NotAnObject.to_string()).into(),
            }),
        }
    }
}

/// axum's test for a JSON body (`application/json` or `…+json`), private in
/// axum 0.8.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<mime::Mime>().ok())
        .is_some_and(|mime| {
            mime.type_() == "application"
                && (mime.subtype() == "json" || mime.suffix().is_some_and(|name| name == "json"))
        })
}

async fn chat_completions(
    State(state): State<AppState>,
    V1User(user): V1User,
    V1ChatBody(body): V1ChatBody,
) -> Result<Response, OpenAiError> {
    // A request that cannot be sent is refused before it counts against limits.
    let model = body
        .model()
        .map_err(|e| ApiError::from(GenerationError::Invalid(e.to_string())))?;
    let hold = gate::admit(
        &state,
        &user,
        Scope::Chat,
        gate::estimate_chat(&state, &model, body.text_len(), body.max_tokens()),
    )
    .await?;

    if !body.streams() {
        let (answer, served) = state
            .passthrough
            .chat(user.user_id, user.role, &body)
            .await
            .map_err(ApiError::from)?;
        drop(hold);
        let mut response = Response::new(Body::from(answer));
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        served_header(&mut response, &served);
        return Ok(response);
    }

    let (served, events) = state
        .passthrough
        .chat_stream(user.user_id, user.role, &body, hold)
        .await
        .map_err(ApiError::from)?;
    let frames = ReceiverStream::new(events).map(|event| {
        let frame = match event {
            PassEvent::Chunk(raw) => format!("data: {raw}\n\n"),
            // The SDKs raise an error for a chunk that is an error object.
            PassEvent::Failed(e) => format!("data: {}\n\n", OpenAiError::from(ApiError::from(*e)).body()),
        };
        Ok::<_, Infallible>(frame)
    });
    let done = futures_util::stream::once(async { Ok::<_, Infallible>("data: [DONE]\n\n".to_owned()) });
    let mut response = Response::new(Body::from_stream(frames.chain(done)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    served_header(&mut response, &served);
    Ok(response)
}

// ---------------------------------------------------------------- images

/// OpenAI sizes to the nearest supported aspect ratio.
fn aspect_ratio_of(size: &str) -> Option<String> {
    let (w, h) = size.split_once('x')?;
    let ratio = w.trim().parse::<f64>().ok()? / h.trim().parse::<f64>().ok()?;
    ASPECT_RATIOS
        .iter()
        .filter_map(|r| {
            let (a, b) = r.split_once(':')?;
            Some((
                *r,
                (a.parse::<f64>().ok()? / b.parse::<f64>().ok()? - ratio).abs(),
            ))
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(r, _)| r.to_owned())
}

async fn image_generations(
    State(state): State<AppState>,
    V1User(user): V1User,
    PublicUrl(base): PublicUrl,
    json: Result<Json<Value>, JsonRejection>,
) -> Result<Response, OpenAiError> {
    let body = body(json)?;
    let input = ImageInput {
        model: body["model"].as_str().unwrap_or_default().to_owned(),
        prompt: body["prompt"].as_str().unwrap_or_default().to_owned(),
        aspect_ratio: body["size"]
            .as_str()
            .filter(|s| *s != "auto")
            .and_then(aspect_ratio_of),
        n: body["n"]
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(1),
    };
    let b64 = match body["response_format"].as_str().unwrap_or("url") {
        "b64_json" => true,
        "url" => false,
        other => {
            return Err(ApiError::bad_request(
                "invalid_request",
                format!("response_format {other:?} is not url or b64_json"),
            )
            .into());
        }
    };
    let _hold = gate::admit(
        &state,
        &user,
        Scope::Images,
        gate::estimate_image(&state, &input.model, input.n),
    )
    .await?;
    let reply = state
        .generator
        .image(user.user_id, user.role, input)
        .await
        .map_err(ApiError::from)?;
    let now = chrono::Utc::now().timestamp();
    let mut data = Vec::new();
    for image in &reply.images {
        if b64 {
            let bytes = state.media.read_all(image).await.map_err(ApiError::from)?;
            data.push(json!({"b64_json": B64.encode(&bytes)}));
        } else {
            data.push(json!({"url": format!("{base}{}", state.media_links.path(image.id, now))}));
        }
    }
    let mut response = Json(json!({
        "created": now,
        "data": data,
        "usage": {"input_tokens": reply.usage.prompt_tokens, "output_tokens": reply.usage.completion_tokens,
                  "total_tokens": reply.usage.prompt_tokens + reply.usage.completion_tokens},
    }))
    .into_response();
    served_header(&mut response, &reply.model);
    Ok(response)
}

// ---------------------------------------------------------------- videos

/// An OpenAI video object for a job.
fn video_object(job: &VideoJob) -> Value {
    let status = match job.status {
        JobStatus::Pending => "queued",
        JobStatus::InProgress => "in_progress",
        JobStatus::Completed => "completed",
        _ => "failed",
    };
    let params: Value = serde_json::from_str(&job.params).unwrap_or(Value::Null);
    json!({
        "id": job.id,
        "object": "video",
        "model": job.model,
        "status": status,
        "progress": progress(job, typical_duration()).map_or(0, |p| (p * 100.0).round() as u32),
        "created_at": job.created_at.timestamp(),
        "completed_at": job.finished_at.map(|t| t.timestamp()),
        "seconds": params["duration"].as_u64().map(|d| d.to_string()),
        "size": params["resolution"],
        "prompt": job.prompt,
        "error": job.error.as_ref().map(|message| json!({"code": job.status.as_str(), "message": message})),
    })
}

/// `WIDTHxHEIGHT` to a resolution and an aspect ratio.
fn video_size(size: &str) -> Option<(String, String)> {
    let (w, h) = size.split_once('x')?;
    let (w, h): (u32, u32) = (w.trim().parse().ok()?, h.trim().parse().ok()?);
    let short = w.min(h);
    let resolution = match short {
        0..=540 => "480p",
        541..=760 => "720p",
        _ => "1080p",
    };
    Some((resolution.to_owned(), aspect_ratio_of(size)?))
}

/// A video request as OpenAI's SDKs send it: multipart form fields (with an
/// optional `input_reference` image for image-to-video), or the same as JSON.
async fn video_request(state: &AppState, request: Request) -> Result<VideoInput, OpenAiError> {
    let multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("multipart/form-data"));
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut reference = None;
    if multipart {
        let mut form = Multipart::from_request(request, state)
            .await
            .map_err(|e| ApiError::bad_request("invalid_body", e.body_text()))?;
        while let Some(field) = form
            .next_field()
            .await
            .map_err(|e| ApiError::bad_request("invalid_body", e.body_text()))?
        {
            let name = field.name().unwrap_or_default().to_owned();
            let is_file = field.file_name().is_some();
            let bytes = field
                .bytes()
                .await
                .map_err(|e| ApiError::bad_request("invalid_body", e.body_text()))?;
            if name == "input_reference" && is_file {
                reference = Some(FrameInput::Bytes(bytes));
            } else {
                fields.push((name, String::from_utf8_lossy(&bytes).into_owned()));
            }
        }
    } else {
        let json = Json::<Value>::from_request(request, state).await;
        for (name, value) in body(json)?.as_object().into_iter().flatten() {
            match (name.as_str(), value) {
                // A data URL, never a link to fetch.
                ("input_reference", Value::String(url)) => reference = Some(FrameInput::DataUrl(url.clone())),
                ("input_reference", other) => {
                    if let Some(url) = other["image_url"].as_str() {
                        reference = Some(FrameInput::DataUrl(url.to_owned()));
                    }
                }
                (_, Value::String(text)) => fields.push((name.clone(), text.clone())),
                (_, Value::Number(n)) => fields.push((name.clone(), n.to_string())),
                _ => {}
            }
        }
    }
    let field = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    let size = field("size").and_then(video_size);
    Ok(VideoInput {
        model: field("model").unwrap_or_default().to_owned(),
        prompt: field("prompt").unwrap_or_default().to_owned(),
        duration: field("seconds").and_then(|s| s.trim().parse().ok()),
        resolution: size.as_ref().map(|(r, _)| r.clone()),
        aspect_ratio: size.map(|(_, a)| a),
        first_frame: reference,
        last_frame: None,
    })
}

async fn create_video(
    State(state): State<AppState>,
    V1User(user): V1User,
    request: Request,
) -> Result<Response, OpenAiError> {
    let input = video_request(&state, request).await?;
    let _hold = gate::admit(
        &state,
        &user,
        Scope::Videos,
        gate::estimate_video(&state, &input.model, input.duration),
    )
    .await?;
    let job = state
        .videos
        .submit(user.user_id, user.role, input)
        .await
        .map_err(ApiError::from)?;
    Ok(Json(video_object(&job)).into_response())
}

async fn get_video(
    State(state): State<AppState>,
    V1User(user): V1User,
    Path(id): Path<String>,
) -> Result<Json<Value>, OpenAiError> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::not_found("not_found", "no such video"))?;
    let job = state.videos.job(user.user_id, id).await.map_err(ApiError::from)?;
    Ok(Json(video_object(&job)))
}

async fn video_content(
    State(state): State<AppState>,
    V1User(user): V1User,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, OpenAiError> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::not_found("not_found", "no such video"))?;
    let job = state.videos.job(user.user_id, id).await.map_err(ApiError::from)?;
    let Some(media) = job.media_id else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "video_not_ready",
            format!("the video is {}", job.status),
        )
        .into());
    };
    Ok(crate::api::media::serve(&state, user.user_id, user.role, media, &headers).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_map_to_aspect_ratios() {
        assert_eq!(aspect_ratio_of("1024x1024").as_deref(), Some("1:1"));
        assert_eq!(aspect_ratio_of("1792x1024").as_deref(), Some("16:9"));
        assert_eq!(aspect_ratio_of("1024x1536").as_deref(), Some("2:3"));
        assert_eq!(aspect_ratio_of("huge"), None);
        assert_eq!(video_size("1280x720"), Some(("720p".into(), "16:9".into())));
        assert_eq!(video_size("1080x1920"), Some(("1080p".into(), "9:16".into())));
    }
}
