//! Errors of the generation services, in their own terms; the API maps them to
//! statuses (`error.rs`).

use atelier_openrouter::UpstreamError;
use atelier_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum GenerationError {
    /// The upstream failed or refused; see [`UpstreamError`].
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The admins' allow-list does not include this model.
    #[error("the model {0} is not enabled on this server")]
    ModelNotAllowed(String),
    /// The request itself is unacceptable; the text says why.
    #[error("{0}")]
    Invalid(String),
    /// A conversation, job or media item that does not exist for this user.
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("the upload is larger than the {limit} byte limit")]
    UploadTooLarge { limit: u64 },
    #[error("{0}")]
    UnsupportedMedia(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<object_store::Error> for GenerationError {
    fn from(e: object_store::Error) -> Self {
        GenerationError::Internal(anyhow::Error::new(e).context("media storage"))
    }
}
