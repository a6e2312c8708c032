//! The models on offer: the upstream's list per output modality, cached for a
//! while, restricted to the admins' allow-list when one is set.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use atelier_openrouter::Client;
use atelier_store::Store;
use chrono::Utc;
use parking_lot::RwLock;

use super::generation_error::GenerationError;

/// Name of the stored allow-list setting (a JSON array of model ids).
const ALLOWED_MODELS: &str = "allowed_models";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Modality {
    Text,
    Image,
    Video,
}

/// A model as atelier presents it.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub modality: Modality,
    pub context_length: Option<u64>,
    /// USD per token in and out (text and image models).
    pub prompt_price: Option<f64>,
    pub completion_price: Option<f64>,
    /// USD per image (image models).
    pub image_price: Option<f64>,
    /// USD per second of video (video models).
    pub video_second_price: Option<f64>,
    pub video: Option<VideoCapabilities>,
}

#[derive(Debug, Clone, Default)]
pub struct VideoCapabilities {
    pub durations: Vec<u32>,
    pub resolutions: Vec<String>,
    pub aspect_ratios: Vec<String>,
    pub frame_images: Vec<String>,
}

/// A fetched list and when it was fetched.
type Cached = (Instant, Arc<Vec<ModelInfo>>);

pub struct ModelCatalog {
    client: Client,
    store: Arc<dyn Store>,
    ttl: Duration,
    cache: RwLock<HashMap<Modality, Cached>>,
    /// `None`: every model is allowed.
    allowed: RwLock<Option<BTreeSet<String>>>,
}

impl ModelCatalog {
    /// Loads the allow-list from the store.
    pub async fn load(client: Client, store: Arc<dyn Store>, ttl: Duration) -> Result<Self, GenerationError> {
        let allowed = stored_allowed(store.as_ref()).await?;
        Ok(ModelCatalog {
            client,
            store,
            ttl,
            cache: RwLock::default(),
            allowed: RwLock::new(allowed),
        })
    }

    /// The upstream client the catalog asks.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A model from the cached lists, without asking the upstream (for estimates on
    /// the hot path).
    pub fn cached(&self, id: &str) -> Option<ModelInfo> {
        self.cache
            .read()
            .values()
            .find_map(|(_, models)| models.iter().find(|m| m.id == id).cloned())
    }

    /// The models of a modality that this server offers.
    pub async fn list(&self, modality: Modality) -> Result<Vec<ModelInfo>, GenerationError> {
        let all = self.all(modality).await?;
        let allowed = self.allowed.read();
        Ok(all
            .iter()
            .filter(|m| allowed.as_ref().is_none_or(|set| set.contains(&m.id)))
            .cloned()
            .collect())
    }

    async fn all(&self, modality: Modality) -> Result<Arc<Vec<ModelInfo>>, GenerationError> {
        if let Some((at, models)) = self.cache.read().get(&modality)
            && at.elapsed() < self.ttl
        {
            return Ok(Arc::clone(models));
        }
        let models = Arc::new(self.fetch(modality).await?);
        self.cache
            .write()
            .insert(modality, (Instant::now(), Arc::clone(&models)));
        Ok(models)
    }

    async fn fetch(&self, modality: Modality) -> Result<Vec<ModelInfo>, GenerationError> {
        if modality == Modality::Video {
            let models = self.client.video_models().await?;
            return Ok(models
                .into_iter()
                .map(|m| ModelInfo {
                    name: m.name.clone().unwrap_or_else(|| m.id.clone()),
                    description: m.description.clone(),
                    modality,
                    context_length: None,
                    prompt_price: None,
                    completion_price: None,
                    image_price: None,
                    video_second_price: m
                        .pricing_skus
                        .as_ref()
                        .and_then(|skus| skus.get("per-video-second"))
                        .map(|p| p.0),
                    video: Some(VideoCapabilities {
                        durations: m.supported_durations.unwrap_or_default(),
                        resolutions: m.supported_resolutions.unwrap_or_default(),
                        aspect_ratios: m.supported_aspect_ratios.unwrap_or_default(),
                        frame_images: m.supported_frame_images.unwrap_or_default(),
                    }),
                    id: m.id,
                })
                .collect());
        }
        let filter = if modality == Modality::Image {
            "image"
        } else {
            "text"
        };
        let models = self.client.models(Some(filter)).await?;
        Ok(models
            .into_iter()
            // An image model may also output text; it belongs in the list that asked.
            .filter(|m| {
                m.architecture
                    .as_ref()
                    .is_none_or(|a| a.output_modalities.iter().any(|o| o == filter))
            })
            .map(|m| {
                let pricing = m.pricing.clone().unwrap_or_default();
                ModelInfo {
                    name: m.name.clone().unwrap_or_else(|| m.id.clone()),
                    description: m.description.clone(),
                    modality,
                    context_length: m.context_length,
                    prompt_price: Some(pricing.prompt.0),
                    completion_price: Some(pricing.completion.0),
                    image_price: pricing.image.map(|p| p.0).filter(|p| *p > 0.0),
                    video_second_price: None,
                    video: None,
                    id: m.id,
                }
            })
            .collect())
    }

    /// Refuses models outside the allow-list, when there is one.
    pub fn check_allowed(&self, model: &str) -> Result<(), GenerationError> {
        match &*self.allowed.read() {
            Some(set) if !set.contains(model) => Err(GenerationError::ModelNotAllowed(model.to_owned())),
            _ => Ok(()),
        }
    }

    /// The allow-list; empty when every model is allowed.
    pub fn allowed(&self) -> Vec<String> {
        self.allowed.read().iter().flatten().cloned().collect()
    }

    /// Reloads the allow-list from the store (changed by another instance).
    pub async fn reload_allowed(&self) -> Result<(), GenerationError> {
        let allowed = stored_allowed(self.store.as_ref()).await?;
        *self.allowed.write() = allowed;
        Ok(())
    }

    /// Replaces the allow-list; an empty list allows every model.
    pub async fn set_allowed(&self, models: Vec<String>) -> Result<Vec<String>, GenerationError> {
        let set: BTreeSet<String> = models
            .into_iter()
            .map(|m| m.trim().to_owned())
            .filter(|m| !m.is_empty())
            .collect();
        let json = serde_json::to_string(&set).map_err(anyhow::Error::from)?;
        self.store.set_setting(ALLOWED_MODELS, &json, Utc::now()).await?;
        let list: Vec<String> = set.iter().cloned().collect();
        *self.allowed.write() = (!set.is_empty()).then_some(set);
        Ok(list)
    }
}

async fn stored_allowed(store: &dyn Store) -> Result<Option<BTreeSet<String>>, GenerationError> {
    match store.setting(ALLOWED_MODELS).await? {
        Some(json) => parse_allowed(&json),
        None => Ok(None),
    }
}

fn parse_allowed(json: &str) -> Result<Option<BTreeSet<String>>, GenerationError> {
    let set: BTreeSet<String> = serde_json::from_str(json).map_err(|e| {
        GenerationError::Internal(anyhow::anyhow!("stored allow-list is not a JSON array: {e}"))
    })?;
    Ok((!set.is_empty()).then_some(set))
}
