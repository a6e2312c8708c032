//! What can go wrong talking to the upstream, classified for retrying and for the
//! caller's error mapping.

use std::time::Duration;

use serde_json::Value;

/// Which time limit ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutKind {
    Connect,
    /// No response headers in time.
    FirstByte,
    /// Nothing received for too long in the middle of a response.
    Idle,
    /// The whole exchange took too long.
    Total,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// No API key is configured.
    #[error("no upstream API key is configured")]
    NotConfigured,
    /// The upstream could not be reached (DNS, refused, reset).
    #[error("the upstream is unreachable: {0}")]
    Unreachable(String),
    #[error("the upstream timed out ({0:?})")]
    Timeout(TimeoutKind),
    /// The upstream answered with an error status (or an error body inside a 200).
    #[error("the upstream answered {status}: {message}")]
    Status {
        status: u16,
        message: String,
        /// From `Retry-After`, when sent.
        retry_after: Option<Duration>,
        metadata: Option<Value>,
    },
    /// The stream failed after it had started; no retry is possible.
    #[error("the upstream failed mid-stream: {message}")]
    MidStream { code: Option<String>, message: String },
    /// The upstream sent something that is not what the API promises.
    #[error("the upstream sent an invalid response: {0}")]
    InvalidResponse(String),
}

impl UpstreamError {
    /// Whether trying again (after a pause) may succeed: connection failures,
    /// 408, 429, 5xx and Cloudflare's 52x.
    pub fn is_transient(&self) -> bool {
        match self {
            UpstreamError::Unreachable(_) | UpstreamError::Timeout(TimeoutKind::Connect) => true,
            UpstreamError::Status { status, .. } => matches!(status, 408 | 429 | 500..=599),
            _ => false,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            UpstreamError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            UpstreamError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}
