//! Images: real PNGs drawn from the prompt, for `POST /images` and chat `modalities`.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::catalog::{self, IMAGE_MODELS, IMAGE_PRICE};
use crate::{Mock, error, unauthorized};

/// A tiny but real video (H.264 in MP4, 2 s, 320×180), the output of every job.
pub(crate) const MOCK_MP4: &[u8] = include_bytes!("../assets/mock.mp4");

/// Pixel size for an aspect ratio; small, since only the shape matters.
fn dimensions(aspect_ratio: &str) -> (u32, u32) {
    let (w, h) = aspect_ratio
        .split_once(':')
        .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
        .filter(|(w, h)| *w > 0 && *h > 0 && *w <= 21 && *h <= 21)
        .unwrap_or((1, 1));
    let long = 96;
    if w >= h {
        (long, (long * h / w).max(1))
    } else {
        ((long * w / h).max(1), long)
    }
}

/// A PNG whose colours come from the prompt: the same prompt, the same picture.
pub(crate) fn png(prompt: &str, aspect_ratio: &str, index: u32) -> Vec<u8> {
    let seed = Sha256::digest(format!("{index}:{prompt}").as_bytes());
    let (width, height) = dimensions(aspect_ratio);
    let (a, b) = ([seed[0], seed[1], seed[2]], [seed[3], seed[4], seed[5]]);
    let mut pixels = Vec::with_capacity((width * height * 3) as usize);
    for y in 0..height {
        for x in 0..width {
            // A diagonal gradient between two colours, with a stripe to tell images apart.
            let t = (x + y) as f32 / (width + height) as f32;
            let stripe = ((x / 8 + y / 8) % 2 == 0) as u8 * 24;
            for c in 0..3 {
                let v = f32::from(a[c]) * (1.0 - t) + f32::from(b[c]) * t;
                pixels.push((v as u8).saturating_add(stripe));
            }
        }
    }
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    // Writing into memory cannot fail for a well-formed header and buffer.
    if let Ok(mut writer) = encoder.write_header() {
        let _ = writer.write_image_data(&pixels);
    }
    out
}

pub(crate) fn png_data_url(prompt: &str, aspect_ratio: &str, index: u32) -> String {
    format!(
        "data:image/png;base64,{}",
        B64.encode(png(prompt, aspect_ratio, index))
    )
}

/// `POST /images`: raw base64 (not data URLs) in `data[].b64_json`.
pub(crate) async fn images(State(mock): State<Arc<Mock>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(denied) = unauthorized(&mock, &headers) {
        return denied;
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "Invalid JSON body");
    };
    mock.record_body("POST /api/v1/images", &body, &request);
    let (Some(model), Some(prompt)) = (request["model"].as_str(), request["prompt"].as_str()) else {
        return error(StatusCode::BAD_REQUEST, "model and prompt are required");
    };
    if let Some(early) = catalog::before_answer(&mock, model).await {
        return early;
    }
    if !IMAGE_MODELS.iter().any(|(id, _, _)| *id == model) {
        return error(
            StatusCode::NOT_FOUND,
            &format!("Model {model} not found or does not output images"),
        );
    }
    let n = request["n"].as_u64().unwrap_or(1);
    if !(1..=10).contains(&n) {
        return error(StatusCode::BAD_REQUEST, "n must be between 1 and 10");
    }
    let ratio = request["aspect_ratio"].as_str().unwrap_or("1:1");
    let data: Vec<Value> = (0..n as u32)
        .map(|i| json!({"b64_json": B64.encode(png(prompt, ratio, i)), "media_type": "image/png"}))
        .collect();
    let cost = n as f64 * IMAGE_PRICE;
    mock.record_cost(cost);
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    axum::Json(json!({
        "created": created,
        "data": data,
        "usage": {"prompt_tokens": prompt.split_whitespace().count(), "completion_tokens": n * 1290,
                  "total_tokens": prompt.split_whitespace().count() as u64 + n * 1290, "cost": cost},
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pngs_are_real_deterministic_and_shaped() {
        let a = png("a red fox", "16:9", 0);
        assert_eq!(&a[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(a, png("a red fox", "16:9", 0));
        assert_ne!(a, png("a red fox", "16:9", 1));
        let decoder = png::Decoder::new(std::io::Cursor::new(a));
        let info = decoder.read_info().expect("decodes").info().clone();
        assert_eq!((info.width, info.height), (96, 54));
        assert_eq!(&MOCK_MP4[4..8], b"ftyp");
    }
}
