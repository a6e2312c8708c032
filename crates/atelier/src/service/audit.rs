//! Security events: logged with `tracing` (target `audit`) at once and kept in
//! `audit_log`, written in batches.
//!
//! Every login used to write its audit record in a transaction of its own, a
//! second one beside its session's: during a login storm that INSERT and its
//! commit were about 40 % of the database work each login did at normal
//! priority, beside the chat requests it was meant not to slow (ADR-0026).
//! The log line is immediate; the row follows within
//! `runtime.usage_write_interval`. Readers of the audit log call
//! [`Audit::flush`] first; shutdown calls [`Audit::close`].

use std::sync::Arc;
use std::time::Duration;

use atelier_store::{AuditRecord, Store};
use chrono::Utc;
use uuid::Uuid;

use super::Origin;
use super::write_behind::WriteBehind;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    UserCreated,
    Login,
    LoginFailed,
    LoginThrottled,
    RefreshTokenReused,
    Logout,
    EmailChanged,
    PasswordChanged,
    RoleChanged,
    UserDeleted,
    TokensPurged,
    ApiKeyCreated,
    ApiKeyRevoked,
    BudgetChanged,
}

impl Event {
    pub fn name(self) -> &'static str {
        match self {
            Event::UserCreated => "user_created",
            Event::Login => "login",
            Event::LoginFailed => "login_failed",
            Event::LoginThrottled => "login_throttled",
            Event::RefreshTokenReused => "refresh_token_reused",
            Event::Logout => "logout",
            Event::EmailChanged => "email_changed",
            Event::PasswordChanged => "password_changed",
            Event::RoleChanged => "role_changed",
            Event::UserDeleted => "user_deleted",
            Event::TokensPurged => "tokens_purged",
            Event::ApiKeyCreated => "api_key_created",
            Event::ApiKeyRevoked => "api_key_revoked",
            Event::BudgetChanged => "budget_changed",
        }
    }
}

/// One audit entry before it is written.
pub struct Entry<'a> {
    pub event: Event,
    /// The account concerned.
    pub user_id: Option<Uuid>,
    /// Who acted, when someone other than the account (an admin).
    pub actor_id: Option<Uuid>,
    pub origin: &'a Origin,
    pub details: serde_json::Value,
}

#[derive(Clone)]
pub struct Audit {
    records: WriteBehind<AuditRecord>,
}

impl Audit {
    /// Starts the writer task; it runs until [`close`](Self::close).
    pub fn start(store: Arc<dyn Store>, interval: Duration) -> Self {
        let records = WriteBehind::start(store, |s, r| s.record_audits(r), "audit", interval);
        Audit { records }
    }

    /// Returns once every entry recorded so far is in the store.
    pub async fn flush(&self) {
        self.records.flush().await;
    }

    /// Writes what is left and stops the writer (at shutdown, and before a CLI
    /// command closes the store).
    pub async fn close(&self) {
        self.records.close().await;
    }

    /// Logs the entry and queues it for the store. A failure to store is logged
    /// and retried by the writer, not returned: the action it describes has
    /// already happened.
    pub async fn record(&self, entry: Entry<'_>) {
        let Entry {
            event,
            user_id,
            actor_id,
            origin,
            details,
        } = entry;
        let ip = origin.ip.map(|ip| ip.to_string());
        tracing::info!(
            target: "audit",
            event = event.name(),
            user_id = user_id.map(tracing::field::display),
            actor_id = actor_id.map(tracing::field::display),
            client_ip = ip.as_deref(),
            request_id = origin.request_id.as_deref(),
            details = %details,
            "security event"
        );
        let record = AuditRecord {
            id: Uuid::now_v7(),
            at: Utc::now(),
            event: event.name().to_owned(),
            user_id,
            actor_id,
            ip,
            request_id: origin.request_id.clone(),
            details: details.to_string(),
        };
        self.records.push(record).await;
    }
}
