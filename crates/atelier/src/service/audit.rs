//! Security events: logged with `tracing` (target `audit`) and kept in `audit_log`.

use std::sync::Arc;

use atelier_store::{AuditRecord, Store};
use chrono::Utc;
use uuid::Uuid;

use super::Origin;

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
    store: Arc<dyn Store>,
}

impl Audit {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Audit { store }
    }

    /// Logs and stores the entry. A failure to store is logged, not returned: the
    /// action it describes has already happened.
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
        if let Err(err) = self.store.record_audit(record).await {
            tracing::error!(event = event.name(), error = %err, "cannot store audit record");
        }
    }
}
