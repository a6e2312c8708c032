//! Every table of atelier's schema, described once, for moving a deployment from
//! one backend to another (`atelier db copy`). Both backends use these table and
//! column names; the types say how a value crosses (DuckDB keeps ids as text,
//! PostgreSQL as `uuid`, and so on).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::StoreResult;

/// What a backend's schema actually holds, to check it against [`TABLES`].
#[async_trait]
pub trait Introspect {
    /// The tables, sorted, but `schema_migrations`.
    async fn table_names(&self) -> StoreResult<Vec<String>>;

    /// One table's columns, in order.
    async fn column_names(&self, table: &'static str) -> StoreResult<Vec<String>>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Uuid,
    Text,
    Int,
    Bytes,
    Time,
}

#[derive(Debug, Clone, Copy)]
pub struct Table {
    pub name: &'static str,
    /// The first column is the primary key: rows are copied in its order, a page
    /// at a time.
    pub columns: &'static [(&'static str, ColumnType)],
}

/// One value of a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Uuid(Uuid),
    Text(String),
    Int(i64),
    Bytes(Vec<u8>),
    Time(DateTime<Utc>),
}

pub type Row = Vec<Cell>;

use ColumnType::{Bytes, Int, Text, Time, Uuid as Id};

/// Every table but `schema_migrations` (each backend keeps its own).
pub const TABLES: &[Table] = &[
    Table {
        name: "users",
        columns: &[
            ("id", Id),
            ("email", Text),
            ("password_hash", Text),
            ("role", Text),
            ("created_at", Time),
            ("updated_at", Time),
            ("tokens_valid_after", Time),
        ],
    },
    Table {
        name: "refresh_tokens",
        columns: &[
            ("id", Id),
            ("family_id", Id),
            ("user_id", Id),
            ("token_hash", Bytes),
            ("created_at", Time),
            ("expires_at", Time),
            ("family_expires_at", Time),
            ("used_at", Time),
            ("revoked_at", Time),
        ],
    },
    Table {
        name: "audit_log",
        columns: &[
            ("id", Id),
            ("occurred_at", Time),
            ("event", Text),
            ("user_id", Id),
            ("actor_id", Id),
            ("ip", Text),
            ("request_id", Text),
            ("details", Text),
        ],
    },
    Table {
        name: "server_secrets",
        columns: &[("name", Text), ("value", Bytes), ("created_at", Time)],
    },
    Table {
        name: "server_settings",
        columns: &[("name", Text), ("value", Text), ("updated_at", Time)],
    },
    Table {
        name: "conversations",
        columns: &[
            ("id", Id),
            ("user_id", Id),
            ("title", Text),
            ("model", Text),
            ("created_at", Time),
            ("updated_at", Time),
        ],
    },
    Table {
        name: "messages",
        columns: &[
            ("id", Id),
            ("conversation_id", Id),
            ("role", Text),
            ("content", Text),
            ("status", Text),
            ("model", Text),
            ("error", Text),
            ("created_at", Time),
        ],
    },
    Table {
        name: "media",
        columns: &[
            ("id", Id),
            ("user_id", Id),
            ("kind", Text),
            ("content_type", Text),
            ("size_bytes", Int),
            ("storage_key", Text),
            ("generation_id", Id),
            ("created_at", Time),
        ],
    },
    Table {
        name: "generations",
        columns: &[
            ("id", Id),
            ("user_id", Id),
            ("kind", Text),
            ("model_requested", Text),
            ("model_served", Text),
            ("status", Text),
            ("prompt_tokens", Int),
            ("completion_tokens", Int),
            ("cost_nanousd", Int),
            ("latency_ms", Int),
            ("error", Text),
            ("summary", Text),
            ("conversation_id", Id),
            ("media_ids", Text),
            ("created_at", Time),
        ],
    },
    Table {
        name: "video_jobs",
        columns: &[
            ("id", Id),
            ("user_id", Id),
            ("generation_id", Id),
            ("model", Text),
            ("prompt", Text),
            ("params", Text),
            ("upstream_id", Text),
            ("polling_url", Text),
            ("status", Text),
            ("error", Text),
            ("media_id", Id),
            ("cost_nanousd", Int),
            ("polls", Int),
            ("next_poll_at", Time),
            ("lease_owner", Text),
            ("lease_expires_at", Time),
            ("created_at", Time),
            ("updated_at", Time),
            ("finished_at", Time),
        ],
    },
    Table {
        name: "api_keys",
        columns: &[
            ("id", Id),
            ("user_id", Id),
            ("public_id", Text),
            ("key_hash", Bytes),
            ("name", Text),
            ("scopes", Text),
            ("expires_at", Time),
            ("created_at", Time),
            ("last_used_at", Time),
            ("revoked_at", Time),
        ],
    },
    Table {
        name: "user_budgets",
        columns: &[
            ("user_id", Id),
            ("daily_nanousd", Int),
            ("monthly_nanousd", Int),
            ("daily_requests", Int),
            ("monthly_requests", Int),
            ("updated_at", Time),
        ],
    },
];

impl Table {
    /// The column names, comma-separated, for a SELECT or INSERT.
    pub fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|(name, _)| *name)
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn key(&self) -> &'static str {
        self.columns[0].0
    }
}
