//! Persistence models of generation: conversations, media, the usage record of
//! every generation, and video jobs.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Declares a string-backed enum with `as_str`, `Display` and `FromStr`: these
/// values are stored as text and must round-trip exactly.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(concat!("unknown ", stringify!($name), " {:?}"), other)),
                }
            }
        }
    };
}

text_enum!(
    /// How a stored chat message ended.
    MessageStatus { Complete => "complete", Failed => "failed", Aborted => "aborted" }
);
text_enum!(
    /// What a piece of media is.
    MediaKind { Image => "image", Video => "video", Upload => "upload" }
);
text_enum!(
    /// What kind of generation a usage record is about.
    GenerationKind { Chat => "chat", Text => "text", Image => "image", Video => "video" }
);
text_enum!(
    /// How a generation ended.
    GenerationStatus { Succeeded => "succeeded", Failed => "failed", Aborted => "aborted" }
);
text_enum!(
    /// Where a video job is; the names are the upstream's.
    JobStatus {
        Pending => "pending",
        InProgress => "in_progress",
        Completed => "completed",
        Failed => "failed",
        Cancelled => "cancelled",
        Expired => "expired",
    }
);

impl JobStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled | JobStatus::Expired
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    pub id: Uuid,
    pub user_id: Uuid,
    pub title: String,
    /// The model last used in it.
    pub model: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChatMessage {
    pub id: Uuid,
    pub conversation_id: Uuid,
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
    pub status: MessageStatus,
    /// For assistant messages: the model that wrote it.
    pub model: Option<String>,
    /// Why it failed, when it did.
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// One page of a user's conversations, most recently active first.
#[derive(Debug, Clone)]
pub struct ConversationQuery {
    pub user_id: Uuid,
    pub limit: u32,
    pub offset: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MediaRecord {
    pub id: Uuid,
    pub user_id: Uuid,
    pub kind: MediaKind,
    pub content_type: String,
    pub size_bytes: u64,
    /// Where the bytes are in the media object store.
    pub storage_key: String,
    pub generation_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

/// The usage record of one generation: written in batches, never updated.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationRecord {
    pub id: Uuid,
    pub user_id: Uuid,
    pub kind: GenerationKind,
    pub model_requested: String,
    /// The model the upstream says served it, when known.
    pub model_served: Option<String>,
    pub status: GenerationStatus,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// USD × 10⁹: exact sums, no floating point.
    pub cost_nanousd: i64,
    pub latency_ms: u64,
    pub error: Option<String>,
    /// The start of the prompt, for history lists.
    pub summary: String,
    pub conversation_id: Option<Uuid>,
    pub media_ids: Vec<Uuid>,
    pub created_at: DateTime<Utc>,
}

/// A user's generations, newest first, keyset-paginated by id.
#[derive(Debug, Clone)]
pub struct GenerationQuery {
    pub user_id: Uuid,
    pub kind: Option<GenerationKind>,
    /// Only generations older than this one.
    pub before: Option<Uuid>,
    pub limit: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VideoJob {
    pub id: Uuid,
    pub user_id: Uuid,
    /// The id its usage record will have.
    pub generation_id: Uuid,
    pub model: String,
    pub prompt: String,
    /// The submitted parameters (duration, resolution…), as JSON.
    pub params: String,
    pub upstream_id: String,
    pub polling_url: Option<String>,
    pub status: JobStatus,
    pub error: Option<String>,
    pub media_id: Option<Uuid>,
    pub cost_nanousd: Option<i64>,
    pub polls: u32,
    pub next_poll_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// A non-terminal step of a job, written by the instance holding its lease; the
/// lease is released with it.
#[derive(Debug, Clone)]
pub struct JobProgress {
    pub id: Uuid,
    pub owner: String,
    pub status: JobStatus,
    pub polls: u32,
    pub next_poll_at: DateTime<Utc>,
    pub now: DateTime<Utc>,
}

/// The end of a job.
#[derive(Debug, Clone)]
pub struct JobOutcome {
    pub id: Uuid,
    pub status: JobStatus,
    pub error: Option<String>,
    pub media_id: Option<Uuid>,
    pub cost_nanousd: Option<i64>,
    pub now: DateTime<Utc>,
}

/// USD to the stored integer unit.
pub fn usd_to_nanos(usd: f64) -> i64 {
    if usd.is_finite() {
        (usd * 1e9).round() as i64
    } else {
        0
    }
}

pub fn nanos_to_usd(nanos: i64) -> f64 {
    nanos as f64 / 1e9
}

/// Usage since some instant, summed three ways, for the admin console.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsageReport {
    /// Per user, biggest spender first (at most 100).
    pub by_user: Vec<UsageTotal>,
    /// Per model (the one that served, else the one asked for), biggest first.
    pub by_model: Vec<UsageTotal>,
    /// Per UTC day, oldest first; days without usage are absent.
    pub by_day: Vec<UsageTotal>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UsageTotal {
    /// The user id, model id, or day (`YYYY-MM-DD`).
    pub key: String,
    /// The user's email, for per-user totals of users that still exist.
    pub label: Option<String>,
    pub generations: u64,
    pub tokens: u64,
    pub cost_nanousd: i64,
}

/// An API key as stored: never the key itself, only its SHA-256.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKey {
    pub id: Uuid,
    pub user_id: Uuid,
    /// The non-secret middle part of the key, shown to tell keys apart.
    pub public_id: String,
    pub key_hash: crate::TokenHash,
    pub name: String,
    /// `chat`, `images`, `videos`; empty means all.
    pub scopes: Vec<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// An admin's per-user budget caps; `None` fields fall back to the role's default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BudgetOverride {
    pub user_id: Uuid,
    pub daily_nanousd: Option<i64>,
    pub monthly_nanousd: Option<i64>,
    pub daily_requests: Option<u64>,
    pub monthly_requests: Option<u64>,
}

/// What one user has spent since some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spend {
    pub user_id: Uuid,
    pub cost_nanousd: i64,
    pub requests: u64,
}
