//! What the upstream speaks, as Rust types. Tolerant on input: every field that the
//! reference does not promise is optional, unknown fields are ignored, prices may be
//! strings or numbers, and error codes numbers or strings.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

// ---------------------------------------------------------------- chat

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user`, `assistant` (also `developer`, `tool`).
    pub role: String,
    pub content: Content,
}

impl Message {
    pub fn new(role: &str, text: impl Into<String>) -> Self {
        Message {
            role: role.to_owned(),
            content: Content::Text(text.into()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
}

impl Content {
    /// The text of the content, parts joined.
    pub fn text(&self) -> String {
        match self {
            Content::Text(t) => t.clone(),
            Content::Parts(parts) => parts
                .iter()
                .filter_map(|p| match p {
                    Part::Text { text } => Some(text.as_str()),
                    Part::ImageUrl { .. } => None,
                })
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Part {
    Text { text: String },
    ImageUrl { image_url: ImageUrl },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageUrl {
    pub url: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<Message>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Output modalities, e.g. `["image", "text"]` for image generation via chat.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modalities: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_config: Option<Map<String, Value>>,
    /// Any other parameter, passed through unchanged.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
    /// USD; absent from servers that do not account costs.
    #[serde(default)]
    pub cost: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ChatResponse {
    #[serde(default)]
    pub id: String,
    /// The model that actually served the request.
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub choices: Vec<Choice>,
    #[serde(default)]
    pub usage: Option<Usage>,
}

impl ChatResponse {
    pub fn text(&self) -> String {
        self.choices
            .first()
            .and_then(|c| c.message.content.clone())
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Choice {
    #[serde(default)]
    pub index: u32,
    pub message: ResponseMessage,
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// Set when the provider failed after partial output (`finish_reason: "error"`).
    #[serde(default)]
    pub error: Option<ErrorObject>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ResponseMessage {
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub images: Option<Vec<ImageItem>>,
}

/// An image in a chat answer: `{"type": "image_url", "image_url": {"url": "data:…"}}`
/// (`type` is optional in streams).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ImageItem {
    pub image_url: ImageUrl,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ChatChunk {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
    /// Sent once, in its own chunk, after the finish chunk.
    #[serde(default)]
    pub usage: Option<Usage>,
    /// A mid-stream failure.
    #[serde(default)]
    pub error: Option<ErrorObject>,
    /// The chunk's JSON exactly as received, for relaying it unchanged.
    #[serde(skip)]
    pub raw: String,
}

impl ChatChunk {
    pub fn content(&self) -> &str {
        self.choices
            .first()
            .and_then(|c| c.delta.content.as_deref())
            .unwrap_or("")
    }

    pub fn finish_reason(&self) -> Option<&str> {
        self.choices.iter().find_map(|c| c.finish_reason.as_deref())
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct ChunkChoice {
    #[serde(default)]
    pub index: u32,
    #[serde(default)]
    pub delta: Delta,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Delta {
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub images: Option<Vec<ImageItem>>,
}

// ---------------------------------------------------------------- errors

/// `{"error": {"code", "message", "metadata"}}`: `code` is the HTTP status as a
/// number, or a string inside streams.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ErrorObject {
    #[serde(default, deserialize_with = "number_or_string")]
    pub code: Option<String>,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub metadata: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ErrorEnvelope {
    pub error: ErrorObject,
}

fn number_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::String(s)) => Some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

// ---------------------------------------------------------------- models

/// A price: a decimal string in the upstream (`"0.0000025"`), a number here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Price(pub f64);

impl<'de> Deserialize<'de> for Price {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => s.trim().parse().map(Price).map_err(serde::de::Error::custom),
            Value::Number(n) => n
                .as_f64()
                .map(Price)
                .ok_or_else(|| serde::de::Error::custom("price out of range")),
            Value::Null => Ok(Price(0.0)),
            other => Err(serde::de::Error::custom(format!("not a price: {other}"))),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct ModelList {
    pub data: Vec<Model>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Model {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub context_length: Option<u64>,
    #[serde(default)]
    pub architecture: Option<Architecture>,
    #[serde(default)]
    pub pricing: Option<Pricing>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Architecture {
    #[serde(default)]
    pub input_modalities: Vec<String>,
    #[serde(default)]
    pub output_modalities: Vec<String>,
}

/// USD per token (`prompt`, `completion`), per image, per request.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Pricing {
    #[serde(default)]
    pub prompt: Price,
    #[serde(default)]
    pub completion: Price,
    #[serde(default)]
    pub image: Option<Price>,
    #[serde(default)]
    pub request: Option<Price>,
}

// ---------------------------------------------------------------- images

/// `POST /images`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImagesRequest {
    pub model: String,
    pub prompt: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aspect_ratio: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ImagesResponse {
    #[serde(default)]
    pub data: Vec<ImageData>,
    #[serde(default)]
    pub usage: Option<Usage>,
}

/// Raw base64 (not a data URL), with its media type when known.
#[derive(Debug, Clone, Deserialize)]
pub struct ImageData {
    pub b64_json: String,
    #[serde(default)]
    pub media_type: Option<String>,
}

// ---------------------------------------------------------------- videos

#[derive(Debug, Clone, Default, Serialize)]
pub struct VideoRequest {
    pub model: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aspect_ratio: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub frame_images: Vec<FrameImage>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameImage {
    #[serde(rename = "type")]
    pub kind: String,
    pub image_url: ImageUrl,
    /// `first_frame` or `last_frame`.
    pub frame_type: String,
}

impl FrameImage {
    pub fn new(url: String, frame_type: &str) -> Self {
        FrameImage {
            kind: "image_url".into(),
            image_url: ImageUrl { url },
            frame_type: frame_type.to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VideoStatus {
    Pending,
    InProgress,
    Completed,
    Failed,
    Cancelled,
    Expired,
    #[serde(other)]
    Unknown,
}

impl VideoStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            VideoStatus::Completed | VideoStatus::Failed | VideoStatus::Cancelled | VideoStatus::Expired
        )
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct VideoJob {
    pub id: String,
    /// Absolute or relative (`/api/v1/videos/<id>`): both happen.
    #[serde(default)]
    pub polling_url: Option<String>,
    pub status: VideoStatus,
    #[serde(default)]
    pub generation_id: Option<String>,
    #[serde(default)]
    pub unsigned_urls: Option<Vec<String>>,
    #[serde(default)]
    pub usage: Option<VideoUsage>,
    #[serde(default)]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct VideoUsage {
    #[serde(default)]
    pub cost: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct VideoModelList {
    pub data: Vec<VideoModel>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct VideoModel {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub supported_durations: Option<Vec<u32>>,
    #[serde(default)]
    pub supported_resolutions: Option<Vec<String>>,
    #[serde(default)]
    pub supported_aspect_ratios: Option<Vec<String>>,
    #[serde(default)]
    pub supported_frame_images: Option<Vec<String>>,
    /// String prices in the upstream, e.g. `{"per-video-second": "0.50"}`.
    #[serde(default)]
    pub pricing_skus: Option<BTreeMap<String, Price>>,
}

// ---------------------------------------------------------------- key

#[derive(Debug, Clone, Deserialize)]
pub struct KeyInfoEnvelope {
    pub data: KeyInfo,
}

#[derive(Debug, Clone, Deserialize)]
pub struct KeyInfo {
    #[serde(default)]
    pub label: Option<String>,
    /// USD; `None` means unlimited.
    #[serde(default)]
    pub limit: Option<f64>,
    #[serde(default)]
    pub limit_remaining: Option<f64>,
    #[serde(default)]
    pub usage: Option<f64>,
    #[serde(default)]
    pub is_free_tier: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerant_parsing_of_the_documented_traps() {
        let model: Model = serde_json::from_str(
            r#"{"id":"a/b","pricing":{"prompt":"0.0000025","completion":0.00001,"image":"0"},"extra":1}"#,
        )
        .expect("model");
        let pricing = model.pricing.expect("pricing");
        assert_eq!((pricing.prompt.0, pricing.completion.0), (0.0000025, 0.00001));

        let err: ErrorEnvelope =
            serde_json::from_str(r#"{"error":{"code":"server_error","message":"x"}}"#).expect("string code");
        assert_eq!(err.error.code.as_deref(), Some("server_error"));
        let err: ErrorEnvelope =
            serde_json::from_str(r#"{"error":{"code":502,"message":"y"}}"#).expect("number");
        assert_eq!(err.error.code.as_deref(), Some("502"));

        let usage_chunk: ChatChunk = serde_json::from_str(
            r#"{"id":"g","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5,"cost":0.1}}"#,
        )
        .expect("usage chunk with empty choices");
        assert_eq!(usage_chunk.usage.map(|u| u.total_tokens), Some(5));

        let job: VideoJob =
            serde_json::from_str(r#"{"id":"j","status":"queued_somewhere_new"}"#).expect("job");
        assert_eq!(job.status, VideoStatus::Unknown);
    }
}
