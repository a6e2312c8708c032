//! Asynchronous video jobs: submit (202), poll through the states, download.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::catalog::{self, VIDEO_MODELS, VIDEO_SECOND_PRICE};
use crate::media::MOCK_MP4;
use crate::{Mock, error, unauthorized};

const DURATIONS: &[u64] = &[4, 6, 8];
const RESOLUTIONS: &[&str] = &["480p", "720p", "1080p"];
const ASPECT_RATIOS: &[&str] = &["16:9", "9:16", "1:1"];

pub(crate) struct Job {
    model: String,
    duration: u64,
    polls: u32,
    generation_id: String,
}

/// Where a job is after this many polls.
fn status_after(mock: &Mock, job: &Job) -> &'static str {
    let per_state = mock.config.video_polls_per_state.max(1);
    if job.polls <= per_state {
        "pending"
    } else if job.polls <= 2 * per_state {
        "in_progress"
    } else if job.model == "mock/video-fail" {
        "failed"
    } else {
        "completed"
    }
}

pub(crate) async fn submit(State(mock): State<Arc<Mock>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(denied) = unauthorized(&mock, &headers) {
        return denied;
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "Invalid JSON body");
    };
    mock.record_body("POST /api/v1/videos", &body, &request);
    let Some(model) = request["model"].as_str() else {
        return error(StatusCode::BAD_REQUEST, "model is required");
    };
    if let Some(early) = catalog::before_answer(&mock, model).await {
        return early;
    }
    if !VIDEO_MODELS.iter().any(|(id, _)| *id == model) {
        return error(StatusCode::NOT_FOUND, &format!("Model {model} not found"));
    }
    if let Err(problem) = validate(&request) {
        return error(StatusCode::BAD_REQUEST, &problem);
    }
    let n = mock.next_id();
    let id = format!("mockjob{n:013}");
    let job = Job {
        model: model.to_owned(),
        duration: request["duration"].as_u64().unwrap_or(4),
        polls: 0,
        generation_id: format!("gen-1767000100-mockvideo{n:011}"),
    };
    mock.jobs.lock().insert(id.clone(), job);
    let polling_url = polling_url(&mock, &id);
    (
        StatusCode::ACCEPTED,
        axum::Json(json!({"id": id, "polling_url": polling_url, "status": "pending"})),
    )
        .into_response()
}

fn polling_url(mock: &Mock, id: &str) -> String {
    if mock.config.relative_polling_urls {
        format!("/api/v1/videos/{id}")
    } else {
        format!("{}/api/v1/videos/{id}", mock.origin)
    }
}

/// Values outside the model's advertised sets are refused, as upstream does.
fn validate(request: &Value) -> Result<(), String> {
    if let Some(d) = request.get("duration").filter(|v| !v.is_null())
        && !d.as_u64().is_some_and(|d| DURATIONS.contains(&d))
    {
        return Err(format!("duration must be one of {DURATIONS:?}"));
    }
    for (field, allowed) in [("resolution", RESOLUTIONS), ("aspect_ratio", ASPECT_RATIOS)] {
        if let Some(v) = request.get(field).filter(|v| !v.is_null())
            && !v.as_str().is_some_and(|v| allowed.contains(&v))
        {
            return Err(format!("{field} must be one of {allowed:?}"));
        }
    }
    for frame in request["frame_images"].as_array().into_iter().flatten() {
        let kind = frame["frame_type"].as_str().unwrap_or_default();
        if !matches!(kind, "first_frame" | "last_frame") {
            return Err("frame_type must be first_frame or last_frame".into());
        }
        let url = frame["image_url"]["url"].as_str().unwrap_or_default();
        if !(url.starts_with("data:image/") || url.starts_with("https://")) {
            return Err("frame image url must be an https URL or an image data URL".into());
        }
    }
    Ok(())
}

pub(crate) async fn poll(
    State(mock): State<Arc<Mock>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(denied) = unauthorized(&mock, &headers) {
        return denied;
    }
    let mut jobs = mock.jobs.lock();
    let Some(job) = jobs.get_mut(&id) else {
        return error(StatusCode::NOT_FOUND, "Job not found");
    };
    job.polls += 1;
    let status = status_after(&mock, job);
    let mut body = json!({"id": id, "polling_url": polling_url(&mock, &id), "status": status});
    if status != "pending" {
        body["generation_id"] = json!(job.generation_id);
    }
    match status {
        "completed" => {
            body["unsigned_urls"] = json!([format!("{}/api/v1/videos/{id}/content?index=0", mock.origin)]);
            let cost = job.duration as f64 * VIDEO_SECOND_PRICE;
            body["usage"] = json!({"cost": cost, "is_byok": false});
            // Charged once, when the job is first seen completed.
            if job.polls == 2 * mock.config.video_polls_per_state.max(1) + 1 {
                mock.record_cost(cost);
            }
        }
        "failed" => body["error"] = json!("The mock provider failed this job on purpose (mock/video-fail)"),
        _ => {}
    }
    axum::Json(body).into_response()
}

pub(crate) async fn content(
    State(mock): State<Arc<Mock>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(denied) = unauthorized(&mock, &headers) {
        return denied;
    }
    let ready = mock
        .jobs
        .lock()
        .get(&id)
        .map(|job| status_after(&mock, job) == "completed");
    match ready {
        None => error(StatusCode::NOT_FOUND, "Job not found"),
        Some(false) => error(StatusCode::NOT_FOUND, "Video is not ready"),
        Some(true) => ([(header::CONTENT_TYPE, "video/mp4")], MOCK_MP4).into_response(),
    }
}

/// `GET /videos/models` (no auth); prices are strings, as upstream.
pub(crate) async fn models() -> Response {
    let data: Vec<Value> = VIDEO_MODELS
        .iter()
        .map(|(id, name)| {
            json!({
                "id": id, "canonical_slug": id, "name": name, "created": 1_767_000_000,
                "description": format!("{name}: an offline stand-in. Every job yields the same 2-second clip."),
                "allowed_passthrough_parameters": [],
                "supported_resolutions": RESOLUTIONS,
                "supported_aspect_ratios": ASPECT_RATIOS,
                "supported_sizes": null,
                "supported_durations": DURATIONS,
                "supported_frame_images": ["first_frame", "last_frame"],
                "generate_audio": false,
                "seed": null,
                "pricing_skus": {"per-video-second": format!("{VIDEO_SECOND_PRICE:.2}")},
            })
        })
        .collect();
    axum::Json(json!({"data": data})).into_response()
}
