//! The creation pages: text, images, video; and media for the studio.

use atelier_store::{GenerationKind, GenerationQuery, VideoJob, nanos_to_usd};
use axum::Form;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use minijinja::{Value, context};
use serde::Deserialize;
use uuid::Uuid;

use super::session::{CsrfToken, StudioUser};
use super::{PageContext, model_options, render};
use crate::api::gate;
use crate::app::AppState;
use crate::error::ApiError;
use crate::service::catalog::Modality;
use crate::service::generate::{ASPECT_RATIOS, ImageInput, MAX_IMAGES};
use crate::service::keys::Scope;
use crate::service::video::{FrameInput, RESOLUTIONS, VideoInput, progress, typical_duration};

/// An error shown in place of a form's result: htmx swaps only 2xx answers, so
/// this is a 200 that retargets itself to the form's status area.
fn inline_error(state: &AppState, target: &'static str, message: &str) -> Response {
    let mut response = super::notice(state, "error", message);
    let headers = response.headers_mut();
    headers.insert("hx-retarget", HeaderValue::from_static(target));
    headers.insert("hx-reswap", HeaderValue::from_static("innerHTML"));
    response
}

fn fragment(state: &AppState, name: &str, extra: Value) -> Response {
    let page = PageContext {
        viewer: None,
        csrf: String::new(),
        page: "",
    };
    render(state, name, &page, extra)
}

// ---------------------------------------------------------------- text

pub async fn text_page(State(state): State<AppState>, user: StudioUser, csrf: CsrfToken) -> Response {
    let page = PageContext::new(&state, Some(&user), &csrf, "text").await;
    let (models, models_error) = model_options(&state, Modality::Text).await;
    render(
        &state,
        "text.html",
        &page,
        context! { models => models, models_error => models_error },
    )
}

#[derive(Debug, Deserialize)]
pub struct TextForm {
    model: String,
    prompt: String,
    #[serde(default)]
    system: String,
}

pub async fn text(State(state): State<AppState>, user: StudioUser, Form(form): Form<TextForm>) -> Response {
    let system = Some(form.system.as_str()).filter(|s| !s.trim().is_empty());
    let estimate = gate::estimate_chat(&state, &form.model, form.prompt.len() + form.system.len(), None);
    let _hold = match gate::admit(&state, &user.principal, Scope::Chat, estimate).await {
        Ok(hold) => hold,
        Err(e) => return inline_error(&state, "#text-status", e.message()),
    };
    let who = &user.principal;
    match state
        .generator
        .text(who.user_id, who.role, &form.model, &form.prompt, system)
        .await
    {
        Ok(reply) => fragment(
            &state,
            "text_result.html",
            context! {
                text => reply.text, model => reply.model,
                tokens => reply.usage.prompt_tokens + reply.usage.completion_tokens,
                cost => reply.usage.cost_usd.unwrap_or(0.0),
            },
        ),
        Err(e) => inline_error(&state, "#text-status", ApiError::from(e).message()),
    }
}

// ---------------------------------------------------------------- images

pub async fn images_page(State(state): State<AppState>, user: StudioUser, csrf: CsrfToken) -> Response {
    let page = PageContext::new(&state, Some(&user), &csrf, "images").await;
    let (models, models_error) = model_options(&state, Modality::Image).await;
    let recent = recent_images(&state, user.principal.user_id, 48).await;
    render(
        &state,
        "images.html",
        &page,
        context! {
            models => models, models_error => models_error, images => recent,
            aspect_ratios => ASPECT_RATIOS, max_images => MAX_IMAGES,
        },
    )
}

/// The user's latest generated images, newest first.
async fn recent_images(state: &AppState, user_id: Uuid, limit: u32) -> Vec<Value> {
    let query = GenerationQuery {
        user_id,
        kind: Some(GenerationKind::Image),
        before: None,
        limit: 50,
    };
    let generations = state
        .generator
        .history(&query)
        .await
        .map(|(g, _)| g)
        .unwrap_or_default();
    generations
        .iter()
        .flat_map(|g| {
            g.media_ids
                .iter()
                .map(move |id| context! { id => id.to_string(), prompt => g.summary.clone() })
        })
        .take(limit as usize)
        .collect()
}

#[derive(Debug, Deserialize)]
pub struct ImageForm {
    model: String,
    prompt: String,
    #[serde(default)]
    aspect_ratio: String,
    #[serde(default)]
    n: Option<u32>,
}

pub async fn images(
    State(state): State<AppState>,
    user: StudioUser,
    Form(form): Form<ImageForm>,
) -> Response {
    let input = ImageInput {
        model: form.model,
        prompt: form.prompt.clone(),
        aspect_ratio: Some(form.aspect_ratio).filter(|a| !a.is_empty()),
        n: form.n.unwrap_or(1),
    };
    let estimate = gate::estimate_image(&state, &input.model, input.n);
    let _hold = match gate::admit(&state, &user.principal, Scope::Images, estimate).await {
        Ok(hold) => hold,
        Err(e) => return inline_error(&state, "#image-status", e.message()),
    };
    match state
        .generator
        .image(user.principal.user_id, user.principal.role, input)
        .await
    {
        Ok(reply) => fragment(
            &state,
            "image_results.html",
            context! {
                images => reply.images.iter().map(|m| context! { id => m.id.to_string(), prompt => form.prompt.clone() }).collect::<Vec<_>>(),
                cost => reply.usage.cost_usd.unwrap_or(0.0),
            },
        ),
        Err(e) => inline_error(&state, "#image-status", ApiError::from(e).message()),
    }
}

// ---------------------------------------------------------------- video

#[derive(Debug, Deserialize)]
pub struct VideoPageQuery {
    mode: Option<String>,
}

pub async fn video_page(
    State(state): State<AppState>,
    user: StudioUser,
    csrf: CsrfToken,
    Query(q): Query<VideoPageQuery>,
) -> Response {
    let page = PageContext::new(&state, Some(&user), &csrf, "video").await;
    let (models, models_error) = model_options(&state, Modality::Video).await;
    let jobs = state
        .videos
        .jobs(user.principal.user_id, 20)
        .await
        .unwrap_or_default();
    let from_image = q.mode.as_deref() == Some("image");
    let images = if from_image {
        recent_images(&state, user.principal.user_id, 24).await
    } else {
        Vec::new()
    };
    let durations: Vec<u32> = models
        .first()
        .and_then(|m| m.get_attr("video").ok())
        .and_then(|v| v.get_attr("durations").ok())
        .and_then(|d| {
            d.try_iter()
                .ok()
                .map(|it| it.filter_map(|x| u32::try_from(x).ok()).collect())
        })
        .unwrap_or_default();
    render(
        &state,
        "video.html",
        &page,
        context! {
            models => models, models_error => models_error, from_image => from_image, images => images,
            jobs => jobs.iter().map(job_context).collect::<Vec<_>>(),
            durations => durations, resolutions => RESOLUTIONS, aspect_ratios => ASPECT_RATIOS,
        },
    )
}

fn job_context(job: &VideoJob) -> Value {
    context! {
        id => job.id.to_string(),
        status => job.status.as_str(),
        finished => job.status.is_terminal(),
        progress => progress(job, typical_duration()).map(|p| (p * 100.0).round()),
        prompt => job.prompt,
        model => job.model,
        error => job.error,
        media_id => job.media_id.map(|m| m.to_string()),
        cost => job.cost_nanousd.map(nanos_to_usd),
    }
}

#[derive(Debug, Deserialize)]
pub struct VideoForm {
    model: String,
    prompt: String,
    #[serde(default)]
    duration: String,
    #[serde(default)]
    resolution: String,
    #[serde(default)]
    aspect_ratio: String,
}

pub async fn video(State(state): State<AppState>, user: StudioUser, Form(form): Form<VideoForm>) -> Response {
    let input = VideoInput {
        model: form.model,
        prompt: form.prompt,
        duration: form.duration.parse().ok(),
        resolution: Some(form.resolution).filter(|r| !r.is_empty()),
        aspect_ratio: Some(form.aspect_ratio).filter(|a| !a.is_empty()),
        first_frame: None,
        last_frame: None,
    };
    submit_video(&state, &user, input).await
}

async fn submit_video(state: &AppState, user: &StudioUser, input: VideoInput) -> Response {
    let estimate = gate::estimate_video(state, &input.model, input.duration);
    let _hold = match gate::admit(state, &user.principal, Scope::Videos, estimate).await {
        Ok(hold) => hold,
        Err(e) => return inline_error(state, "#video-status", e.message()),
    };
    match state
        .videos
        .submit(user.principal.user_id, user.principal.role, input)
        .await
    {
        Ok(job) => fragment(state, "video_job.html", context! { job => job_context(&job) }),
        Err(e) => inline_error(state, "#video-status", ApiError::from(e).message()),
    }
}

/// Image-to-video from an upload or one of the user's images (multipart form).
pub async fn video_from_image(State(state): State<AppState>, user: StudioUser, request: Request) -> Response {
    let multipart = match Multipart::from_request(request, &state).await {
        Ok(m) => m,
        Err(e) => return inline_error(&state, "#video-status", &e.body_text()),
    };
    let input = match read_video_form(multipart, state.media.max_upload()).await {
        Ok(input) => input,
        Err(message) => return inline_error(&state, "#video-status", &message),
    };
    if input.first_frame.is_none() {
        return inline_error(
            &state,
            "#video-status",
            "Choose one of your images or upload one as the first frame.",
        );
    }
    submit_video(&state, &user, input).await
}

async fn read_video_form(mut multipart: Multipart, limit: u64) -> Result<VideoInput, String> {
    let mut input = VideoInput::default();
    while let Some(mut field) = multipart.next_field().await.map_err(|e| e.body_text())? {
        let name = field.name().unwrap_or_default().to_owned();
        if name == "image" {
            let mut data = Vec::new();
            while let Some(chunk) = field.chunk().await.map_err(|e| e.body_text())? {
                if (data.len() + chunk.len()) as u64 > limit {
                    return Err(format!("The image is larger than {} MiB.", limit / (1024 * 1024)));
                }
                data.extend_from_slice(&chunk);
            }
            if !data.is_empty() {
                input.first_frame = Some(FrameInput::Bytes(Bytes::from(data)));
            }
            continue;
        }
        let text = field.text().await.map_err(|e| e.body_text())?.trim().to_owned();
        match name.as_str() {
            "model" => input.model = text,
            "prompt" => input.prompt = text,
            "duration" => input.duration = text.parse().ok(),
            "resolution" if !text.is_empty() => input.resolution = Some(text),
            "aspect_ratio" if !text.is_empty() => input.aspect_ratio = Some(text),
            // An upload wins over a picked image.
            "image_media_id" if input.first_frame.is_none() => {
                input.first_frame = Uuid::parse_str(&text).ok().map(FrameInput::Media);
            }
            _ => {}
        }
    }
    Ok(input)
}

/// A job's card; it keeps polling itself until the job ends.
pub async fn video_job(State(state): State<AppState>, user: StudioUser, Path(id): Path<Uuid>) -> Response {
    match state.videos.job(user.principal.user_id, id).await {
        Ok(job) => fragment(&state, "video_job.html", context! { job => job_context(&job) }),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Media for the studio: the same rules as `/media/{id}`, with the session cookie.
pub async fn media(
    State(state): State<AppState>,
    user: StudioUser,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
) -> Response {
    match crate::api::media::serve(&state, user.principal.user_id, user.principal.role, id, &headers).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}
