//! Operational views and maintenance for administrators.

use std::sync::Arc;
use std::time::{Duration, Instant};

use atelier_store::{LoginCounts, Role, Store, StoreError, TokenStats};
use chrono::Utc;
use serde_json::json;
use uuid::Uuid;

use super::Origin;
use super::audit::{Audit, Entry, Event};

/// A snapshot of who uses the system and how.
#[derive(Debug, Clone)]
pub struct Stats {
    pub users_by_role: Vec<(Role, u64)>,
    pub refresh_tokens: TokenStats,
    pub logins_last_24h: LoginCounts,
}

/// Whether the database answers, and how fast.
#[derive(Debug, Clone)]
pub struct DbHealth {
    pub backend: &'static str,
    pub latency: Duration,
    /// `None` when healthy; otherwise what went wrong.
    pub error: Option<String>,
}

#[derive(Clone)]
pub struct AdminService {
    store: Arc<dyn Store>,
    audit: Audit,
}

impl AdminService {
    pub fn new(store: Arc<dyn Store>, audit: Audit) -> Self {
        AdminService { store, audit }
    }

    pub async fn stats(&self) -> Result<Stats, StoreError> {
        // The login counts come from the audit log, written in batches.
        self.audit.flush().await;
        let now = Utc::now();
        let (users, tokens, logins) = tokio::try_join!(
            self.store.count_users_by_role(),
            self.store.refresh_token_stats(now),
            self.store.login_counts_since(now - chrono::Duration::hours(24)),
        )?;
        // Every role appears, with 0 where nobody has it.
        let users_by_role = Role::ALL
            .iter()
            .map(|role| {
                (
                    *role,
                    users.iter().find(|(r, _)| r == role).map_or(0, |(_, n)| *n),
                )
            })
            .collect();
        Ok(Stats {
            users_by_role,
            refresh_tokens: tokens,
            logins_last_24h: logins,
        })
    }

    pub async fn db_health(&self) -> DbHealth {
        let started = Instant::now();
        let result = self.store.ping().await;
        DbHealth {
            backend: self.store.backend(),
            latency: started.elapsed(),
            error: result.err().map(|e| e.to_string()),
        }
    }

    /// Usage over the last `days` days, per user, model and day.
    pub async fn usage(&self, days: u32) -> Result<atelier_store::UsageReport, StoreError> {
        self.store
            .usage_report(Utc::now() - chrono::Duration::days(i64::from(days)))
            .await
    }

    pub async fn purge_tokens(&self, actor: Option<Uuid>, origin: &Origin) -> Result<u64, StoreError> {
        let purged = self.store.purge_refresh_tokens(Utc::now()).await?;
        self.audit
            .record(Entry {
                event: Event::TokensPurged,
                user_id: None,
                actor_id: actor,
                origin,
                details: json!({ "purged": purged }),
            })
            .await;
        Ok(purged)
    }
}
