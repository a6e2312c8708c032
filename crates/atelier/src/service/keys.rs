//! API keys: `atl_<public id>_<secret>`, shown once, stored as SHA-256, checked in
//! memory.
//!
//! The public id (12 hex digits) tells keys apart in lists; the secret is 256
//! random bits in hex. Every live key's hash is in an in-memory map filled at
//! start-up and kept current by create and revoke, so checking a key costs a
//! hash and a map lookup. When a key was last used is collected in memory and
//! written every few seconds in one batch.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use atelier_store::{ApiKey, Store, StoreError, TokenHash};
use chrono::{DateTime, Utc};
use parking_lot::{Mutex, RwLock};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::Origin;
use super::audit::{Audit, Entry, Event};

const PREFIX: &str = "atl_";
const PUBLIC_LEN: usize = 12;
const SECRET_LEN: usize = 64;
const FLUSH_EVERY: Duration = Duration::from_secs(5);
const MAX_NAME_CHARS: usize = 100;

/// What a key may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Chat,
    Images,
    Videos,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Chat, Scope::Images, Scope::Videos];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Chat => "chat",
            Scope::Images => "images",
            Scope::Videos => "videos",
        }
    }

    pub fn parse(text: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// A key's scopes; empty means every scope.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes(Vec<Scope>);

impl Scopes {
    pub fn allows(&self, scope: Scope) -> bool {
        self.0.is_empty() || self.0.contains(&scope)
    }

    pub fn names(&self) -> Vec<String> {
        self.0.iter().map(|s| s.as_str().to_owned()).collect()
    }

    fn from_names(names: &[String]) -> Self {
        Scopes(names.iter().filter_map(|n| Scope::parse(n)).collect())
    }
}

/// What the in-memory lookup knows about a live key.
#[derive(Debug, Clone)]
pub struct KeyEntry {
    pub id: Uuid,
    pub user_id: Uuid,
    pub scopes: Scopes,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the API key is malformed")]
    Malformed,
    #[error("the API key is unknown or revoked")]
    Unknown,
    #[error("the API key has expired")]
    Expired,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyAdminError {
    #[error("{0}")]
    Invalid(String),
    #[error("no such API key")]
    NotFound,
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for KeyAdminError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => KeyAdminError::NotFound,
            other => KeyAdminError::Store(other),
        }
    }
}

/// A key just made: the record, and the key itself, which exists nowhere else.
pub struct CreatedKey {
    pub record: ApiKey,
    pub key: String,
}

pub struct ApiKeys {
    store: Arc<dyn Store>,
    audit: Audit,
    live: RwLock<HashMap<TokenHash, KeyEntry>>,
    uses: Mutex<HashMap<Uuid, DateTime<Utc>>>,
}

fn hash(key: &str) -> TokenHash {
    TokenHash(Sha256::digest(key.as_bytes()).into())
}

fn entry(key: &ApiKey) -> KeyEntry {
    KeyEntry {
        id: key.id,
        user_id: key.user_id,
        scopes: Scopes::from_names(&key.scopes),
        expires_at: key.expires_at,
    }
}

fn index(keys: &[ApiKey]) -> HashMap<TokenHash, KeyEntry> {
    keys.iter().map(|k| (k.key_hash, entry(k))).collect()
}

/// Whether a string has the shape of one of our keys (and so should be treated
/// as an API key rather than a JWT).
pub fn looks_like_key(text: &str) -> bool {
    text.starts_with(PREFIX)
}

fn well_formed(key: &str) -> bool {
    let Some(rest) = key.strip_prefix(PREFIX) else {
        return false;
    };
    let Some((public, secret)) = rest.split_once('_') else {
        return false;
    };
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    };
    hex(public, PUBLIC_LEN) && hex(secret, SECRET_LEN)
}

impl ApiKeys {
    pub async fn load(store: Arc<dyn Store>, audit: Audit) -> Result<Self, StoreError> {
        let live = store.live_api_keys().await?;
        Ok(ApiKeys {
            live: RwLock::new(index(&live)),
            store,
            audit,
            uses: Mutex::default(),
        })
    }

    pub fn count(&self) -> usize {
        self.live.read().len()
    }

    /// Checks a presented key. No database round trip.
    pub fn lookup(&self, presented: &str) -> Result<KeyEntry, KeyError> {
        if !well_formed(presented) {
            return Err(KeyError::Malformed);
        }
        let found = self
            .live
            .read()
            .get(&hash(presented))
            .cloned()
            .ok_or(KeyError::Unknown)?;
        let now = Utc::now();
        if found.expires_at.is_some_and(|at| at <= now) {
            return Err(KeyError::Expired);
        }
        self.uses.lock().insert(found.id, now);
        Ok(found)
    }

    pub async fn create(
        &self,
        user_id: Uuid,
        name: &str,
        scopes: &[String],
        expires_in_days: Option<u32>,
        origin: &Origin,
    ) -> Result<CreatedKey, KeyAdminError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
            return Err(KeyAdminError::Invalid(format!(
                "name must have 1 to {MAX_NAME_CHARS} characters"
            )));
        }
        let mut parsed = Vec::new();
        for s in scopes {
            let scope = Scope::parse(s.trim()).ok_or_else(|| {
                KeyAdminError::Invalid(format!("unknown scope {s:?}; use chat, images or videos"))
            })?;
            if !parsed.contains(&scope) {
                parsed.push(scope);
            }
        }
        if expires_in_days.is_some_and(|d| d == 0 || d > 3650) {
            return Err(KeyAdminError::Invalid(
                "expires_in_days must be between 1 and 3650".into(),
            ));
        }
        let public: String = rand::random::<[u8; PUBLIC_LEN / 2]>()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let secret: String = rand::random::<[u8; SECRET_LEN / 2]>()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let key = format!("{PREFIX}{public}_{secret}");
        let now = Utc::now();
        let record = ApiKey {
            id: Uuid::now_v7(),
            user_id,
            public_id: public,
            key_hash: hash(&key),
            name: name.to_owned(),
            scopes: Scopes(parsed).names(),
            expires_at: expires_in_days.map(|d| now + chrono::Duration::days(i64::from(d))),
            created_at: now,
            last_used_at: None,
            revoked_at: None,
        };
        self.store.create_api_key(&record).await?;
        self.live.write().insert(record.key_hash, entry(&record));
        self.audit
            .record(Entry {
                event: Event::ApiKeyCreated,
                user_id: Some(user_id),
                actor_id: None,
                origin,
                details: json!({"key_id": record.id, "name": record.name, "scopes": record.scopes}),
            })
            .await;
        Ok(CreatedKey { record, key })
    }

    pub async fn list(&self, user_id: Uuid) -> Result<Vec<ApiKey>, StoreError> {
        self.flush().await;
        self.store.api_keys(user_id).await
    }

    /// Revokes at once: the key stops working on the next request. `owner` limits
    /// it to that user's keys (`None` for the CLI).
    pub async fn revoke(
        &self,
        id: Uuid,
        owner: Option<Uuid>,
        origin: &Origin,
    ) -> Result<ApiKey, KeyAdminError> {
        let revoked = self.store.revoke_api_key(id, owner, Utc::now()).await?;
        self.live.write().remove(&revoked.key_hash);
        self.audit
            .record(Entry {
                event: Event::ApiKeyRevoked,
                user_id: Some(revoked.user_id),
                actor_id: None,
                origin,
                details: json!({"key_id": revoked.id, "name": revoked.name}),
            })
            .await;
        Ok(revoked)
    }

    /// Reloads one user's live keys from the store (created or revoked elsewhere).
    pub async fn reload_user(&self, user_id: Uuid) -> Result<(), StoreError> {
        let keys = self.store.api_keys(user_id).await?;
        let mut live = self.live.write();
        live.retain(|_, e| e.user_id != user_id);
        live.extend(keys.iter().map(|k| (k.key_hash, entry(k))));
        Ok(())
    }

    /// Replaces every live key with the store's.
    pub async fn reload_all(&self) -> Result<(), StoreError> {
        let keys = self.store.live_api_keys().await?;
        *self.live.write() = index(&keys);
        Ok(())
    }

    /// Forgets the keys of a deleted user (the store has removed them).
    pub fn forget_user(&self, user_id: Uuid) {
        self.live.write().retain(|_, e| e.user_id != user_id);
    }

    /// Writes the collected last-used times.
    pub async fn flush(&self) {
        let uses: Vec<(Uuid, DateTime<Utc>)> = self.uses.lock().drain().collect();
        if !uses.is_empty()
            && let Err(e) = self.store.touch_api_keys(&uses).await
        {
            tracing::warn!(error = %e, "cannot record API key use");
        }
    }

    /// Flushes last-used times every few seconds until `stop`, then once more.
    pub fn start_flusher(self: &Arc<Self>, tracker: &TaskTracker, stop: CancellationToken) {
        let keys = Arc::clone(self);
        tracker.spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(FLUSH_EVERY) => keys.flush().await,
                }
            }
            keys.flush().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_shape() {
        let good = format!("atl_{}_{}", "0123456789ab", "a".repeat(64));
        assert!(well_formed(&good) && looks_like_key(&good));
        assert!(!well_formed(&good.to_uppercase()));
        assert!(!well_formed("atl_0123456789ab"));
        assert!(!well_formed(&format!(
            "atl_{}_{}",
            "0123456789ab",
            "a".repeat(63)
        )));
        assert!(!well_formed(&format!("sk_{}_{}", "0123456789ab", "a".repeat(64))));
        assert!(Scopes::default().allows(Scope::Videos));
        assert!(!Scopes(vec![Scope::Chat]).allows(Scope::Images));
    }
}
