//! One-shot generations: text from a prompt, images from a prompt.

use std::sync::Arc;
use std::time::Instant;

use atelier_openrouter::{ChatRequest, Client, ImagesRequest, Message};
use atelier_store::{
    GenerationKind, GenerationQuery, GenerationRecord, GenerationStatus, MediaKind, MediaRecord, Role, Store,
    usd_to_nanos,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use chrono::Utc;
use serde_json::json;
use uuid::Uuid;

use super::Routing;
use super::chat::{UsageSummary, excerpt, served_and_usage};
use super::generation_error::GenerationError;
use super::media::{MediaLibrary, sniff_image};
use super::routing::Action;
use super::usage::UsageRecorder;
use crate::config::ImageEndpoint;

pub const ASPECT_RATIOS: &[&str] = &[
    "1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9",
];
pub const MAX_IMAGES: u32 = 4;
const MAX_PROMPT_CHARS: usize = 20_000;

#[derive(Debug)]
pub struct TextReply {
    pub generation_id: Uuid,
    pub text: String,
    pub model: String,
    pub usage: UsageSummary,
}

#[derive(Debug)]
pub struct ImageReply {
    pub generation_id: Uuid,
    pub model: String,
    pub images: Vec<MediaRecord>,
    pub usage: UsageSummary,
}

#[derive(Debug, Clone)]
pub struct ImageInput {
    pub model: String,
    pub prompt: String,
    pub aspect_ratio: Option<String>,
    pub n: u32,
}

#[derive(Clone)]
pub struct Generator {
    client: Client,
    store: Arc<dyn Store>,
    routing: Routing,
    media: MediaLibrary,
    usage: UsageRecorder,
    image_endpoint: ImageEndpoint,
}

/// Everything a usage record needs besides the outcome.
struct Attempt {
    id: Uuid,
    user_id: Uuid,
    kind: GenerationKind,
    model: String,
    summary: String,
    started: Instant,
}

impl Generator {
    pub fn new(
        client: Client,
        store: Arc<dyn Store>,
        routing: Routing,
        media: MediaLibrary,
        usage: UsageRecorder,
        image_endpoint: ImageEndpoint,
    ) -> Self {
        Generator {
            client,
            store,
            routing,
            media,
            usage,
            image_endpoint,
        }
    }

    pub async fn text(
        &self,
        user_id: Uuid,
        role: Role,
        model: &str,
        prompt: &str,
        system: Option<&str>,
    ) -> Result<TextReply, GenerationError> {
        check_prompt(model, prompt)?;
        let plan = self.routing.plan(model, Action::Text, role)?;
        let attempt = Attempt::new(user_id, GenerationKind::Text, model, prompt);
        let mut messages = Vec::new();
        if let Some(system) = system.filter(|s| !s.trim().is_empty()) {
            messages.push(Message::new("system", system));
        }
        messages.push(Message::new("user", prompt));
        let result = self
            .routing
            .router
            .run(&plan, |model| {
                let request = ChatRequest {
                    model,
                    messages: messages.clone(),
                    ..ChatRequest::default()
                };
                async move { self.client.chat(&request).await.map_err(GenerationError::from) }
            })
            .await;
        match result {
            Ok((response, tried)) => {
                let (served, usage) = served_and_usage(&response, tried);
                self.record(
                    &attempt,
                    GenerationStatus::Succeeded,
                    Some(served.clone()),
                    &usage,
                    None,
                    Vec::new(),
                )
                .await;
                Ok(TextReply {
                    generation_id: attempt.id,
                    text: response.text(),
                    model: served,
                    usage,
                })
            }
            Err(e) => {
                self.record(
                    &attempt,
                    GenerationStatus::Failed,
                    None,
                    &UsageSummary::default(),
                    Some(e.to_string()),
                    Vec::new(),
                )
                .await;
                Err(e)
            }
        }
    }

    pub async fn image(
        &self,
        user_id: Uuid,
        role: Role,
        input: ImageInput,
    ) -> Result<ImageReply, GenerationError> {
        check_prompt(&input.model, &input.prompt)?;
        if !(1..=MAX_IMAGES).contains(&input.n) {
            return Err(GenerationError::Invalid(format!(
                "n must be between 1 and {MAX_IMAGES}"
            )));
        }
        if let Some(ratio) = &input.aspect_ratio
            && !ASPECT_RATIOS.contains(&ratio.as_str())
        {
            return Err(GenerationError::Invalid(format!(
                "aspect_ratio must be one of {}",
                ASPECT_RATIOS.join(", ")
            )));
        }
        let plan = self.routing.plan(&input.model, Action::Image, role)?;
        let attempt = Attempt::new(user_id, GenerationKind::Image, &input.model, &input.prompt);
        let result = match self.image_endpoint {
            ImageEndpoint::Images => {
                self.routing
                    .router
                    .run(&plan, |m| self.images_endpoint(&input, m))
                    .await
            }
            ImageEndpoint::Chat => {
                self.routing
                    .router
                    .run(&plan, |m| self.images_by_chat(&input, m))
                    .await
            }
        };
        let (encoded, usage, served) = match result {
            Ok(((images, usage, served), tried)) => (images, usage, served.or(Some(tried))),
            Err(e) => {
                self.record(
                    &attempt,
                    GenerationStatus::Failed,
                    None,
                    &UsageSummary::default(),
                    Some(e.to_string()),
                    Vec::new(),
                )
                .await;
                return Err(e);
            }
        };
        let mut images = Vec::with_capacity(encoded.len());
        for bytes in encoded {
            let Some(sniffed) = sniff_image(&bytes) else {
                tracing::warn!(
                    model = input.model,
                    "the upstream returned an image in an unknown format; skipped"
                );
                continue;
            };
            images.push(
                self.media
                    .save(user_id, MediaKind::Image, sniffed, bytes, Some(attempt.id))
                    .await?,
            );
        }
        let (status, error) = if images.is_empty() {
            (
                GenerationStatus::Failed,
                Some("the upstream returned no usable image".to_owned()),
            )
        } else {
            (GenerationStatus::Succeeded, None)
        };
        let media_ids = images.iter().map(|m| m.id).collect();
        self.record(&attempt, status, served.clone(), &usage, error.clone(), media_ids)
            .await;
        if let Some(error) = error {
            return Err(GenerationError::Upstream(
                atelier_openrouter::UpstreamError::InvalidResponse(error),
            ));
        }
        Ok(ImageReply {
            generation_id: attempt.id,
            model: served.unwrap_or(input.model),
            images,
            usage,
        })
    }

    /// `POST /images`: raw base64 in `b64_json`.
    async fn images_endpoint(
        &self,
        input: &ImageInput,
        model: String,
    ) -> Result<(Vec<Bytes>, UsageSummary, Option<String>), GenerationError> {
        let response = self
            .client
            .images(&ImagesRequest {
                model,
                prompt: input.prompt.clone(),
                n: Some(input.n),
                aspect_ratio: input.aspect_ratio.clone(),
                resolution: None,
            })
            .await?;
        let images = response
            .data
            .iter()
            .filter_map(|d| B64.decode(d.b64_json.trim()).ok().map(Bytes::from))
            .collect();
        Ok((images, UsageSummary::of(response.usage.as_ref()), None))
    }

    /// Chat completions with `modalities`: images as data URLs in the message.
    async fn images_by_chat(
        &self,
        input: &ImageInput,
        model: String,
    ) -> Result<(Vec<Bytes>, UsageSummary, Option<String>), GenerationError> {
        let mut image_config = serde_json::Map::new();
        if let Some(ratio) = &input.aspect_ratio {
            image_config.insert("aspect_ratio".into(), json!(ratio));
        }
        let request = ChatRequest {
            model,
            messages: vec![Message::new("user", input.prompt.clone())],
            modalities: Some(vec!["image".into(), "text".into()]),
            image_config: Some(image_config),
            ..ChatRequest::default()
        };
        let (mut images, mut usage, mut served) = (Vec::new(), UsageSummary::default(), None);
        // One image per call: chat image models make one picture per answer.
        for _ in 0..input.n {
            let response = self.client.chat(&request).await?;
            served = Some(response.model.clone()).filter(|m| !m.is_empty());
            let part = UsageSummary::of(response.usage.as_ref());
            usage.prompt_tokens += part.prompt_tokens;
            usage.completion_tokens += part.completion_tokens;
            usage.cost_usd = Some(usage.cost_usd.unwrap_or(0.0) + part.cost_usd.unwrap_or(0.0));
            let urls = response
                .choices
                .iter()
                .flat_map(|c| c.message.images.iter().flatten());
            images.extend(urls.filter_map(|i| decode_data_url(&i.image_url.url)));
        }
        Ok((images, usage, served))
    }

    async fn record(
        &self,
        attempt: &Attempt,
        status: GenerationStatus,
        served: Option<String>,
        usage: &UsageSummary,
        error: Option<String>,
        media_ids: Vec<Uuid>,
    ) {
        self.usage
            .record(GenerationRecord {
                id: attempt.id,
                user_id: attempt.user_id,
                kind: attempt.kind,
                model_requested: attempt.model.clone(),
                model_served: served,
                status,
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
                cost_nanousd: usage.cost_usd.map_or(0, usd_to_nanos),
                latency_ms: u64::try_from(attempt.started.elapsed().as_millis()).unwrap_or(u64::MAX),
                error,
                summary: attempt.summary.clone(),
                conversation_id: None,
                media_ids,
                created_at: Utc::now(),
            })
            .await;
    }

    /// Waits until queued usage records are stored.
    pub async fn flush_usage(&self) {
        self.usage.flush().await;
    }

    /// The user's history, newest first; waits for queued usage records first so a
    /// generation shows up as soon as it has answered.
    pub async fn history(
        &self,
        query: &GenerationQuery,
    ) -> Result<(Vec<GenerationRecord>, bool), GenerationError> {
        self.usage.flush().await;
        Ok(self.store.generations(query).await?)
    }
}

impl Attempt {
    fn new(user_id: Uuid, kind: GenerationKind, model: &str, prompt: &str) -> Self {
        Attempt {
            id: Uuid::now_v7(),
            user_id,
            kind,
            model: model.to_owned(),
            summary: excerpt(prompt, 200),
            started: Instant::now(),
        }
    }
}

pub fn check_prompt(model: &str, prompt: &str) -> Result<(), GenerationError> {
    if model.trim().is_empty() || model.len() > 200 {
        return Err(GenerationError::Invalid("model must be a model id".into()));
    }
    if prompt.trim().is_empty() || prompt.chars().count() > MAX_PROMPT_CHARS {
        return Err(GenerationError::Invalid(format!(
            "prompt must have 1 to {MAX_PROMPT_CHARS} characters"
        )));
    }
    Ok(())
}

/// The bytes of a `data:<type>;base64,<data>` URL.
pub fn decode_data_url(url: &str) -> Option<Bytes> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    if !meta.ends_with(";base64") {
        return None;
    }
    B64.decode(data.trim()).ok().map(Bytes::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_urls_decode_only_when_base64() {
        assert_eq!(
            decode_data_url("data:image/png;base64,aGk=").as_deref(),
            Some(&b"hi"[..])
        );
        assert_eq!(decode_data_url("data:text/plain,hi"), None);
        assert_eq!(decode_data_url("https://example.com/a.png"), None);
    }
}
