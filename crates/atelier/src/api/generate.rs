//! `/generate`: text, images and videos from a prompt; `/generations`: the history.

use atelier_store::{GenerationKind, GenerationQuery, GenerationRecord, MediaRecord, VideoJob, nanos_to_usd};
use axum::Json;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{StatusCode, header};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::ai::{UsageResponse, page_limit};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use crate::app::AppState;
use crate::auth::extract::AuthUser;
use crate::error::{ApiError, ErrorBody};
use crate::service::accounts::Principal;
use crate::service::generate::ImageInput;
use crate::service::keys::Scope;

use super::gate;
use crate::service::video::{FrameInput, VideoInput, progress, typical_duration};

/// Where a stored media item is served.
pub fn media_url(id: Uuid) -> String {
    format!("/media/{id}")
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MediaRef {
    pub id: Uuid,
    /// `GET` it with your token; images and videos of yours only.
    #[schema(example = "/media/0190e1d2-…")]
    pub url: String,
}

impl From<&MediaRecord> for MediaRef {
    fn from(m: &MediaRecord) -> Self {
        MediaRef {
            id: m.id,
            url: media_url(m.id),
        }
    }
}

// ---------------------------------------------------------------- text

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TextRequest {
    #[schema(example = "openai/gpt-4o-mini")]
    pub model: String,
    #[schema(example = "Summarise the plot of Hamlet in two sentences.")]
    pub prompt: String,
    /// An optional system prompt.
    pub system: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TextResponse {
    pub generation_id: Uuid,
    pub text: String,
    /// The model that served it.
    pub model: String,
    pub usage: UsageResponse,
}

/// Generate text from one prompt (and an optional system prompt).
#[utoipa::path(post, path = "/generate/text", tag = "generate", security(("bearer" = [])), request_body = TextRequest, responses(
    (status = 200, description = "The text", body = TextResponse),
    (status = 422, description = "`invalid_request`", body = ErrorBody),
    (status = 502, description = "`upstream_unavailable`", body = ErrorBody),
    (status = 503, description = "`upstream_not_configured`, `upstream_payment_required`", body = ErrorBody)))]
pub async fn generate_text(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiJson(body): ApiJson<TextRequest>,
) -> Result<Json<TextResponse>, ApiError> {
    let chars = body.prompt.len() + body.system.as_ref().map_or(0, String::len);
    let _hold = gate::admit(
        &state,
        &user,
        Scope::Chat,
        gate::estimate_chat(&state, &body.model, chars, None),
    )
    .await?;
    let reply = state
        .generator
        .text(
            user.user_id,
            user.role,
            &body.model,
            &body.prompt,
            body.system.as_deref(),
        )
        .await?;
    Ok(Json(TextResponse {
        generation_id: reply.generation_id,
        text: reply.text,
        model: reply.model,
        usage: (&reply.usage).into(),
    }))
}

// ---------------------------------------------------------------- images

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageRequest {
    #[schema(example = "google/gemini-2.5-flash-image")]
    pub model: String,
    #[schema(example = "A lighthouse at dawn, watercolour")]
    pub prompt: String,
    /// `1:1` (default), `16:9`, `9:16`, `4:3`, `3:4`, `3:2`, `2:3`, `4:5`, `5:4`, `21:9`.
    pub aspect_ratio: Option<String>,
    /// How many images, 1 to 4 (default 1).
    pub n: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ImageResponse {
    pub generation_id: Uuid,
    pub model: String,
    pub images: Vec<MediaRef>,
    pub usage: UsageResponse,
}

/// Generate images; they are stored and served from `/media/{id}`.
#[utoipa::path(post, path = "/generate/image", tag = "generate", security(("bearer" = [])), request_body = ImageRequest, responses(
    (status = 200, description = "The images", body = ImageResponse),
    (status = 422, description = "`invalid_request`", body = ErrorBody),
    (status = 502, description = "`upstream_unavailable`", body = ErrorBody)))]
pub async fn generate_image(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiJson(body): ApiJson<ImageRequest>,
) -> Result<Json<ImageResponse>, ApiError> {
    let input = ImageInput {
        model: body.model,
        prompt: body.prompt,
        aspect_ratio: body.aspect_ratio,
        n: body.n.unwrap_or(1),
    };
    let estimate = gate::estimate_image(&state, &input.model, input.n);
    let _hold = gate::admit(&state, &user, Scope::Images, estimate).await?;
    let reply = state.generator.image(user.user_id, user.role, input).await?;
    Ok(Json(ImageResponse {
        generation_id: reply.generation_id,
        model: reply.model,
        images: reply.images.iter().map(Into::into).collect(),
        usage: (&reply.usage).into(),
    }))
}

// ---------------------------------------------------------------- videos

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VideoRequest {
    #[schema(example = "google/veo-3.1")]
    pub model: String,
    #[schema(example = "Waves rolling onto a beach at sunset")]
    pub prompt: String,
    /// Seconds; one of the model's supported durations.
    pub duration: Option<u32>,
    /// `480p`, `720p`, `1080p`…
    pub resolution: Option<String>,
    pub aspect_ratio: Option<String>,
}

/// Image-to-video as JSON. (Or send `multipart/form-data` with the same text fields
/// and the frames as files `image` and `last_image`.)
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VideoFromImageRequest {
    pub model: String,
    /// What should happen; may be empty.
    #[serde(default)]
    pub prompt: String,
    pub duration: Option<u32>,
    pub resolution: Option<String>,
    pub aspect_ratio: Option<String>,
    /// The first frame as `data:image/png;base64,…` (PNG, JPEG or WebP). URLs are
    /// not fetched.
    pub image: Option<String>,
    /// Or the id of an image of yours (generated or uploaded).
    pub image_media_id: Option<Uuid>,
    /// An optional last frame, the same two ways.
    pub last_image: Option<String>,
    pub last_image_media_id: Option<Uuid>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobResponse {
    pub job_id: Uuid,
    /// `pending`, `in_progress`, `completed`, `failed`, `cancelled`, `expired`.
    pub status: String,
    /// 0 to 1, an estimate; absent once failed.
    pub progress: Option<f64>,
    pub model: String,
    pub prompt: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    pub error: Option<String>,
    /// The video, once completed.
    pub video: Option<MediaRef>,
    pub cost_usd: Option<f64>,
}

impl From<VideoJob> for JobResponse {
    fn from(job: VideoJob) -> Self {
        JobResponse {
            job_id: job.id,
            status: job.status.as_str().to_owned(),
            progress: progress(&job, typical_duration()),
            video: job.media_id.map(|id| MediaRef {
                id,
                url: media_url(id),
            }),
            cost_usd: job.cost_nanousd.map(nanos_to_usd),
            error: job.error,
            model: job.model,
            prompt: job.prompt,
            created_at: job.created_at,
            finished_at: job.finished_at,
        }
    }
}

/// Start a text-to-video job; follow it at `/generate/jobs/{job_id}`.
#[utoipa::path(post, path = "/generate/video", tag = "generate", security(("bearer" = [])), request_body = VideoRequest, responses(
    (status = 202, description = "Accepted", body = JobResponse),
    (status = 422, description = "`invalid_request`", body = ErrorBody),
    (status = 400, description = "`invalid_request` from the upstream", body = ErrorBody)))]
pub async fn generate_video(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiJson(body): ApiJson<VideoRequest>,
) -> Result<(StatusCode, Json<JobResponse>), ApiError> {
    let input = VideoInput {
        model: body.model,
        prompt: body.prompt,
        duration: body.duration,
        resolution: body.resolution,
        aspect_ratio: body.aspect_ratio,
        first_frame: None,
        last_frame: None,
    };
    let job = submit(&state, &user, input).await?;
    Ok((StatusCode::ACCEPTED, Json(job.into())))
}

/// Admits and submits a video job.
async fn submit(state: &AppState, user: &Principal, input: VideoInput) -> Result<VideoJob, ApiError> {
    let estimate = gate::estimate_video(state, &input.model, input.duration);
    let _hold = gate::admit(state, user, Scope::Videos, estimate).await?;
    Ok(state.videos.submit(user.user_id, user.role, input).await?)
}

/// Start an image-to-video job from a first frame (and optionally a last one).
///
/// Send JSON (`VideoFromImageRequest`: frames as data URLs or media ids) or
/// `multipart/form-data` with fields `model`, `prompt`, `duration`, `resolution`,
/// `aspect_ratio` and files `image` and `last_image`.
#[utoipa::path(post, path = "/generate/video/from-image", tag = "generate", security(("bearer" = [])),
    request_body(content(
        (VideoFromImageRequest = "application/json"),
        (VideoFromImageRequest = "multipart/form-data"),
    )),
    responses(
    (status = 202, description = "Accepted", body = JobResponse),
    (status = 404, description = "`not_found`: a media id that is not yours", body = ErrorBody),
    (status = 413, description = "`upload_too_large`", body = ErrorBody),
    (status = 415, description = "`unsupported_media`: not PNG, JPEG or WebP", body = ErrorBody),
    (status = 422, description = "`invalid_request`", body = ErrorBody)))]
pub async fn generate_video_from_image(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    request: Request,
) -> Result<(StatusCode, Json<JobResponse>), ApiError> {
    let is_multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("multipart/form-data"));
    let input = if is_multipart {
        let multipart = Multipart::from_request(request, &state)
            .await
            .map_err(|e| ApiError::bad_request("invalid_body", e.body_text()))?;
        video_input_from_multipart(multipart, state.media.max_upload()).await?
    } else {
        let ApiJson(body) = ApiJson::<VideoFromImageRequest>::from_request(request, &state).await?;
        video_input_from_json(body)?
    };
    if input.first_frame.is_none() {
        return Err(ApiError::unprocessable(
            "invalid_request",
            "a first frame is required: image or image_media_id",
        ));
    }
    let job = submit(&state, &user, input).await?;
    Ok((StatusCode::ACCEPTED, Json(job.into())))
}

fn frame(
    data_url: Option<String>,
    media_id: Option<Uuid>,
    name: &str,
) -> Result<Option<FrameInput>, ApiError> {
    match (data_url, media_id) {
        (Some(_), Some(_)) => Err(ApiError::unprocessable(
            "invalid_request",
            format!("give {name} or {name}_media_id, not both"),
        )),
        (Some(url), None) => Ok(Some(FrameInput::DataUrl(url))),
        (None, Some(id)) => Ok(Some(FrameInput::Media(id))),
        (None, None) => Ok(None),
    }
}

fn video_input_from_json(body: VideoFromImageRequest) -> Result<VideoInput, ApiError> {
    Ok(VideoInput {
        first_frame: frame(body.image, body.image_media_id, "image")?,
        last_frame: frame(body.last_image, body.last_image_media_id, "last_image")?,
        model: body.model,
        prompt: body.prompt,
        duration: body.duration,
        resolution: body.resolution,
        aspect_ratio: body.aspect_ratio,
    })
}

async fn video_input_from_multipart(
    mut multipart: Multipart,
    max_upload: u64,
) -> Result<VideoInput, ApiError> {
    let mut input = VideoInput::default();
    let bad = |m: String| ApiError::bad_request("invalid_body", m);
    while let Some(field) = multipart.next_field().await.map_err(|e| bad(e.body_text()))? {
        let name = field.name().unwrap_or_default().to_owned();
        match name.as_str() {
            "image" | "last_image" => {
                let bytes = read_limited(field, max_upload).await?;
                let slot = if name == "image" {
                    &mut input.first_frame
                } else {
                    &mut input.last_frame
                };
                *slot = Some(FrameInput::Bytes(bytes));
            }
            "model"
            | "prompt"
            | "duration"
            | "resolution"
            | "aspect_ratio"
            | "image_media_id"
            | "last_image_media_id" => {
                let text = field.text().await.map_err(|e| bad(e.body_text()))?;
                let text = text.trim().to_owned();
                match name.as_str() {
                    "model" => input.model = text,
                    "prompt" => input.prompt = text,
                    "duration" if !text.is_empty() => {
                        input.duration = Some(text.parse().map_err(|_| {
                            ApiError::unprocessable(
                                "invalid_request",
                                "duration must be a whole number of seconds",
                            )
                        })?);
                    }
                    "resolution" if !text.is_empty() => input.resolution = Some(text),
                    "aspect_ratio" if !text.is_empty() => input.aspect_ratio = Some(text),
                    "image_media_id" | "last_image_media_id" if !text.is_empty() => {
                        let id = Uuid::parse_str(&text).map_err(|_| {
                            ApiError::unprocessable("invalid_request", format!("{name} is not an id"))
                        })?;
                        let slot = if name == "image_media_id" {
                            &mut input.first_frame
                        } else {
                            &mut input.last_frame
                        };
                        *slot = Some(FrameInput::Media(id));
                    }
                    _ => {}
                }
            }
            other => {
                return Err(ApiError::unprocessable(
                    "invalid_body",
                    format!("unknown field `{other}`"),
                ));
            }
        }
    }
    Ok(input)
}

/// Reads an uploaded file, refusing it as soon as it passes the limit.
async fn read_limited(mut field: axum::extract::multipart::Field<'_>, limit: u64) -> Result<Bytes, ApiError> {
    let mut data = Vec::new();
    while let Some(chunk) = field
        .chunk()
        .await
        .map_err(|e| ApiError::bad_request("invalid_body", e.body_text()))?
    {
        if (data.len() + chunk.len()) as u64 > limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "upload_too_large",
                format!("the image is larger than the {limit} byte limit"),
            ));
        }
        data.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(data))
}

/// A video job of yours.
#[utoipa::path(get, path = "/generate/jobs/{id}", tag = "generate", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Job id")), responses(
    (status = 200, description = "The job", body = JobResponse),
    (status = 404, description = "`not_found`", body = ErrorBody)))]
pub async fn get_job(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<JobResponse>, ApiError> {
    Ok(Json(state.videos.job(user.user_id, id).await?.into()))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobListResponse {
    pub jobs: Vec<JobResponse>,
}

/// Your recent video jobs, newest first.
#[utoipa::path(get, path = "/generate/jobs", tag = "generate", security(("bearer" = [])), responses(
    (status = 200, description = "Jobs", body = JobListResponse)))]
pub async fn list_jobs(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
) -> Result<Json<JobListResponse>, ApiError> {
    let jobs = state.videos.jobs(user.user_id, 50).await?;
    Ok(Json(JobListResponse {
        jobs: jobs.into_iter().map(Into::into).collect(),
    }))
}

// ---------------------------------------------------------------- history

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KindName {
    Chat,
    Text,
    Image,
    Video,
}

impl From<KindName> for GenerationKind {
    fn from(k: KindName) -> Self {
        match k {
            KindName::Chat => GenerationKind::Chat,
            KindName::Text => GenerationKind::Text,
            KindName::Image => GenerationKind::Image,
            KindName::Video => GenerationKind::Video,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    pub kind: Option<KindName>,
    /// 1 to 100 (default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<Uuid>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GenerationResponse {
    pub id: Uuid,
    /// `chat`, `text`, `image`, `video`.
    pub kind: String,
    pub model: String,
    pub model_served: Option<String>,
    /// `succeeded`, `failed`, `aborted`.
    pub status: String,
    /// The start of the prompt.
    pub prompt: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: f64,
    pub latency_ms: u64,
    pub error: Option<String>,
    pub conversation_id: Option<Uuid>,
    pub media: Vec<MediaRef>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl From<GenerationRecord> for GenerationResponse {
    fn from(g: GenerationRecord) -> Self {
        GenerationResponse {
            id: g.id,
            kind: g.kind.as_str().to_owned(),
            model: g.model_requested,
            model_served: g.model_served,
            status: g.status.as_str().to_owned(),
            prompt: g.summary,
            prompt_tokens: g.prompt_tokens,
            completion_tokens: g.completion_tokens,
            cost_usd: nanos_to_usd(g.cost_nanousd),
            latency_ms: g.latency_ms,
            error: g.error,
            conversation_id: g.conversation_id,
            media: g
                .media_ids
                .iter()
                .map(|id| MediaRef {
                    id: *id,
                    url: media_url(*id),
                })
                .collect(),
            created_at: g.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryResponse {
    pub generations: Vec<GenerationResponse>,
    pub next_cursor: Option<Uuid>,
}

/// Your generations of every kind, newest first, with their cost.
#[utoipa::path(get, path = "/generations", tag = "generate", security(("bearer" = [])), params(HistoryQuery), responses(
    (status = 200, description = "A page of history", body = HistoryResponse),
    (status = 422, description = "`invalid_query`", body = ErrorBody)))]
pub async fn list_generations(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<Json<HistoryResponse>, ApiError> {
    let limit = page_limit(q.limit)?;
    let (list, more) = state
        .generator
        .history(&GenerationQuery {
            user_id: user.user_id,
            kind: q.kind.map(Into::into),
            before: q.cursor,
            limit,
        })
        .await?;
    let next_cursor = more.then(|| list.last().map(|g| g.id)).flatten();
    Ok(Json(HistoryResponse {
        generations: list.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}
