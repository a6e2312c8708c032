//! Accounts and sessions: registration, login, token refresh and logout, profile
//! changes, and the admin's user management. Used by the REST API and the CLI.

use std::sync::Arc;
use std::time::Duration;

use atelier_store::{
    AuthState, NewSession, NewUser, Role, RotateOutcome, Rotation, Store, StoreError, User, UserPage,
    UserQuery,
};
use chrono::Utc;
use serde_json::json;
use uuid::Uuid;

use super::audit::{Audit, Entry, Event};
use super::keys::{ApiKeys, KeyError, Scope, Scopes};
use super::media::MediaLibrary;
use super::{Origin, chrono_duration};
use crate::auth::jwt::{AccessTokens, Claims, TokenError};
use crate::auth::password::PasswordHasher;
use crate::auth::policy::{self, email_context};
use crate::auth::refresh;
use crate::auth::revocation::{Revocations, Standing};
use crate::auth::throttle::LoginThrottle;
use crate::config::Registration;

/// Everything that can go wrong with an account operation, in the caller's terms.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("registration is closed; ask an administrator for an account")]
    RegistrationClosed,
    #[error("{0}")]
    InvalidEmail(&'static str),
    #[error("an account with this email address already exists")]
    EmailTaken,
    #[error("{0}")]
    WeakPassword(String),
    #[error("email or password is incorrect")]
    InvalidCredentials,
    #[error("too many failed attempts; try again in {} s", .retry_after.as_secs().max(1))]
    Throttled { retry_after: Duration },
    #[error("the refresh token is invalid or was revoked; log in again")]
    InvalidRefreshToken,
    #[error("the refresh token has expired; log in again")]
    RefreshTokenExpired,
    #[error("this refresh token was already used; the session is revoked, log in again")]
    RefreshTokenReused,
    #[error("the access token is invalid")]
    InvalidToken,
    #[error("the access token has expired; refresh it")]
    TokenExpired,
    #[error("the access token was revoked; refresh it or log in again")]
    TokenRevoked,
    #[error("the API key is invalid or was revoked")]
    InvalidApiKey,
    #[error("the API key has expired")]
    ApiKeyExpired,
    #[error("the current password is incorrect")]
    WrongCurrentPassword,
    #[error("nothing to change: give email or new_password")]
    NothingToChange,
    #[error("no such user")]
    UserNotFound,
    #[error("you cannot delete your own account")]
    CannotDeleteSelf,
    #[error("this is the last administrator; promote someone else first")]
    LastAdmin,
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<StoreError> for AccountError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::EmailTaken => AccountError::EmailTaken,
            StoreError::NotFound => AccountError::UserNotFound,
            StoreError::LastAdmin => AccountError::LastAdmin,
            other => AccountError::Store(other),
        }
    }
}

type Result<T, E = AccountError> = std::result::Result<T, E>;

/// What a login or refresh hands out.
#[derive(Debug)]
pub struct TokenPair {
    pub access_token: String,
    pub expires_in: u64,
    pub refresh_token: String,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_id: Uuid,
    pub role: Role,
    pub credential: Credential,
}

/// How the caller proved who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// An access token of this login session (refresh token family).
    Session(Uuid),
    /// An API key, limited to its scopes.
    ApiKey { id: Uuid, scopes: Scopes },
}

impl Principal {
    pub fn session_id(&self) -> Option<Uuid> {
        match self.credential {
            Credential::Session(id) => Some(id),
            Credential::ApiKey { .. } => None,
        }
    }

    /// Whether the credential may be used for this kind of work.
    pub fn allows(&self, scope: Scope) -> bool {
        match &self.credential {
            Credential::Session(_) => true,
            Credential::ApiKey { scopes, .. } => scopes.allows(scope),
        }
    }

    /// Who counts against rate limits: the key, or the user for sessions.
    pub fn limit_key(&self) -> String {
        match &self.credential {
            Credential::Session(_) => format!("user:{}", self.user_id),
            Credential::ApiKey { id, .. } => format!("key:{id}"),
        }
    }
}

/// A change to one's own account; `current_password` proves it is really them.
#[derive(Debug)]
pub struct ProfileChange {
    pub email: Option<String>,
    pub new_password: Option<String>,
    pub current_password: String,
}

/// Lifetimes of refresh tokens.
#[derive(Debug, Clone, Copy)]
pub struct SessionPolicy {
    pub idle: Duration,
    pub absolute: Duration,
}

pub struct Accounts {
    store: Arc<dyn Store>,
    hasher: PasswordHasher,
    tokens: AccessTokens,
    revocations: Revocations,
    throttle: LoginThrottle,
    audit: Audit,
    registration: Registration,
    sessions: SessionPolicy,
    media: MediaLibrary,
}

/// Whether `ensure_admin` had to create the account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bootstrap {
    Created,
    AlreadyExists,
}

impl Accounts {
    #[expect(clippy::too_many_arguments, reason = "built once, in App::build")]
    pub fn new(
        store: Arc<dyn Store>,
        hasher: PasswordHasher,
        tokens: AccessTokens,
        revocations: Revocations,
        throttle: LoginThrottle,
        audit: Audit,
        registration: Registration,
        sessions: SessionPolicy,
        media: MediaLibrary,
    ) -> Self {
        Accounts {
            store,
            hasher,
            tokens,
            revocations,
            throttle,
            audit,
            registration,
            sessions,
            media,
        }
    }

    /// Number of users the revocation cache knows.
    pub fn cached_users(&self) -> usize {
        self.revocations.known_users()
    }

    // ---- registration and creation ----

    pub async fn register(&self, email: &str, password: &str, origin: &Origin) -> Result<User> {
        if self.registration == Registration::Closed {
            return Err(AccountError::RegistrationClosed);
        }
        self.create_user(email, password, Role::User, None, origin).await
    }

    /// Creates an account regardless of the registration setting (admins, the CLI).
    pub async fn create_user(
        &self,
        email: &str,
        password: &str,
        role: Role,
        actor: Option<Uuid>,
        origin: &Origin,
    ) -> Result<User> {
        let email = policy::normalize_email(email).map_err(AccountError::InvalidEmail)?;
        policy::check_new_password(password, &email_context(&email)).map_err(AccountError::WeakPassword)?;
        if self.store.credentials_by_email(&email).await?.is_some() {
            // Checked before hashing so a taken address costs no hash; the store
            // still refuses a duplicate that races past this check.
            return Err(AccountError::EmailTaken);
        }
        let password_hash = self.hasher.hash(password.to_owned()).await?;
        let user = self
            .store
            .create_user(NewUser {
                id: Uuid::now_v7(),
                email,
                password_hash,
                role,
                now: Utc::now(),
            })
            .await?;
        self.revocations.upsert(&AuthState::from(&user));
        self.audit
            .record(Entry {
                event: Event::UserCreated,
                user_id: Some(user.id),
                actor_id: actor,
                origin,
                details: json!({ "role": user.role }),
            })
            .await;
        Ok(user)
    }

    /// Creates the configured admin unless a user with that email exists; never
    /// changes an existing account.
    pub async fn ensure_admin(&self, email: &str, password: &str) -> Result<Bootstrap> {
        let normalized = policy::normalize_email(email).map_err(AccountError::InvalidEmail)?;
        if self.store.credentials_by_email(&normalized).await?.is_some() {
            return Ok(Bootstrap::AlreadyExists);
        }
        let origin = Origin {
            ip: None,
            request_id: Some("startup".into()),
        };
        match self
            .create_user(&normalized, password, Role::Admin, None, &origin)
            .await
        {
            Ok(_) => Ok(Bootstrap::Created),
            // Another instance created it in the meantime.
            Err(AccountError::EmailTaken) => Ok(Bootstrap::AlreadyExists),
            Err(other) => Err(other),
        }
    }

    // ---- sessions ----

    /// Unknown email and wrong password take the same path: one store lookup, one
    /// argon2 verification (against a dummy hash when there is no account), one
    /// audit record, and the same error.
    pub async fn login(&self, email: &str, password: &str, origin: &Origin) -> Result<TokenPair> {
        let account_key = email.trim().to_lowercase();
        if let Some(retry_after) = self.throttle.wait(&account_key, origin.ip) {
            self.audit
                .record(Entry {
                    event: Event::LoginThrottled,
                    user_id: None,
                    actor_id: None,
                    origin,
                    details: json!({ "retry_after_s": retry_after.as_secs() }),
                })
                .await;
            return Err(AccountError::Throttled { retry_after });
        }

        let credentials = self.store.credentials_by_email(&account_key).await?;
        let stored_hash = credentials.as_ref().map(|c| c.password_hash.clone());
        let verified = self.hasher.verify(password.to_owned(), stored_hash).await?;
        let user = match credentials {
            Some(c) if verified.matches => c.user,
            other => {
                self.throttle.record_failure(&account_key, origin.ip);
                self.audit
                    .record(Entry {
                        event: Event::LoginFailed,
                        user_id: other.map(|c| c.user.id),
                        actor_id: None,
                        origin,
                        details: json!({}),
                    })
                    .await;
                return Err(AccountError::InvalidCredentials);
            }
        };
        self.throttle.record_success(&account_key);

        if verified.needs_rehash {
            let fresh = self.hasher.hash(password.to_owned()).await?;
            self.store.set_password_hash(user.id, &fresh).await?;
        }

        let now = Utc::now();
        let (refresh_token, token_hash) = refresh::generate();
        let family_id = Uuid::now_v7();
        self.store
            .create_session(NewSession {
                token_id: Uuid::now_v7(),
                family_id,
                user_id: user.id,
                token_hash,
                now,
                expires_at: now + chrono_duration(self.sessions.idle),
                family_expires_at: now + chrono_duration(self.sessions.absolute),
            })
            .await?;
        let access = self.tokens.issue(user.id, user.role, family_id)?;
        self.audit
            .record(Entry {
                event: Event::Login,
                user_id: Some(user.id),
                actor_id: None,
                origin,
                details: json!({ "session_id": family_id }),
            })
            .await;
        Ok(TokenPair {
            access_token: access.token,
            expires_in: access.expires_in,
            refresh_token,
        })
    }

    pub async fn refresh(&self, refresh_token: &str, origin: &Origin) -> Result<TokenPair> {
        let presented = refresh::hash_presented(refresh_token).ok_or(AccountError::InvalidRefreshToken)?;
        let now = Utc::now();
        let (next_token, next_hash) = refresh::generate();
        let outcome = self
            .store
            .rotate_refresh_token(
                presented,
                Rotation {
                    token_id: Uuid::now_v7(),
                    token_hash: next_hash,
                    now,
                    expires_at: now + chrono_duration(self.sessions.idle),
                },
            )
            .await?;
        match outcome {
            RotateOutcome::Rotated { user, family_id } => {
                // The store's copy is authoritative; keep the cache in step with it.
                self.revocations.upsert(&AuthState::from(&user));
                let access = self.tokens.issue(user.id, user.role, family_id)?;
                Ok(TokenPair {
                    access_token: access.token,
                    expires_in: access.expires_in,
                    refresh_token: next_token,
                })
            }
            RotateOutcome::Reused { user_id, family_id } => {
                self.end_session(family_id);
                self.audit
                    .record(Entry {
                        event: Event::RefreshTokenReused,
                        user_id: Some(user_id),
                        actor_id: None,
                        origin,
                        details: json!({ "session_id": family_id }),
                    })
                    .await;
                Err(AccountError::RefreshTokenReused)
            }
            RotateOutcome::Expired => Err(AccountError::RefreshTokenExpired),
            RotateOutcome::Invalid => Err(AccountError::InvalidRefreshToken),
        }
    }

    /// Ends the session the refresh token belongs to. Unknown tokens are ignored:
    /// logging out twice is not an error.
    pub async fn logout(&self, refresh_token: &str, origin: &Origin) -> Result<()> {
        let Some(presented) = refresh::hash_presented(refresh_token) else {
            return Ok(());
        };
        if let Some(revoked) = self.store.revoke_family(presented, Utc::now()).await? {
            self.end_session(revoked.family_id);
            self.audit
                .record(Entry {
                    event: Event::Logout,
                    user_id: Some(revoked.user_id),
                    actor_id: None,
                    origin,
                    details: json!({ "session_id": revoked.family_id }),
                })
                .await;
        }
        Ok(())
    }

    // ---- changes made by other instances ----

    /// Reloads one user's access-token state from the store (gone: forgotten).
    pub async fn reload_user(&self, id: Uuid) -> std::result::Result<(), StoreError> {
        match self.store.user_by_id(id).await? {
            Some(user) => self.revocations.upsert(&AuthState::from(&user)),
            None => self.revocations.remove_user(id),
        }
        Ok(())
    }

    /// Replaces the whole access-token state with the store's.
    pub async fn reload_users(&self) -> std::result::Result<(), StoreError> {
        self.revocations.replace_all(self.store.auth_states().await?);
        Ok(())
    }

    /// A session another instance ended (logout, reuse detected).
    pub fn session_ended(&self, family_id: Uuid) {
        self.end_session(family_id);
    }

    fn end_session(&self, family_id: Uuid) {
        let ttl_ms = i64::try_from(self.tokens.ttl().as_millis()).unwrap_or(i64::MAX);
        // Plus the largest leeway a verifier may grant.
        self.revocations
            .end_session(family_id, ttl_ms.saturating_add(30_000));
    }

    /// Checks an access token: signature and claims, then revocation in memory. Only
    /// a user the cache does not know costs a store lookup.
    pub async fn authenticate(&self, access_token: &str) -> Result<Principal> {
        let claims = self.tokens.verify(access_token).map_err(|e| match e {
            TokenError::Expired => AccountError::TokenExpired,
            TokenError::Invalid => AccountError::InvalidToken,
        })?;
        let role = match self.revocations.check(&claims) {
            Standing::Valid(role) => role,
            Standing::Revoked => return Err(AccountError::TokenRevoked),
            Standing::UnknownUser => self.load_unknown(&claims).await?,
        };
        Ok(Principal {
            user_id: claims.sub,
            role,
            credential: Credential::Session(claims.sid),
        })
    }

    /// Checks an API key in memory; the user's current role comes from the
    /// revocation cache (a deleted user's keys are gone with them).
    pub async fn authenticate_key(&self, keys: &ApiKeys, presented: &str) -> Result<Principal> {
        let entry = keys.lookup(presented).map_err(|e| match e {
            KeyError::Expired => AccountError::ApiKeyExpired,
            KeyError::Malformed | KeyError::Unknown => AccountError::InvalidApiKey,
        })?;
        let role = match self.revocations.role_of(entry.user_id) {
            Some(role) => role,
            None => {
                let Some(user) = self.store.user_by_id(entry.user_id).await? else {
                    // The user is gone, and with them their keys.
                    keys.forget_user(entry.user_id);
                    return Err(AccountError::InvalidApiKey);
                };
                self.revocations.upsert(&AuthState::from(&user));
                user.role
            }
        };
        Ok(Principal {
            user_id: entry.user_id,
            role,
            credential: Credential::ApiKey {
                id: entry.id,
                scopes: entry.scopes,
            },
        })
    }

    async fn load_unknown(&self, claims: &Claims) -> Result<Role> {
        let Some(user) = self.store.user_by_id(claims.sub).await? else {
            return Err(AccountError::TokenRevoked);
        };
        self.revocations.upsert(&AuthState::from(&user));
        match self.revocations.check(claims) {
            Standing::Valid(role) => Ok(role),
            _ => Err(AccountError::TokenRevoked),
        }
    }

    // ---- one's own account ----

    pub async fn me(&self, user_id: Uuid) -> Result<User> {
        self.store
            .user_by_id(user_id)
            .await?
            .ok_or(AccountError::UserNotFound)
    }

    /// Changes email and/or password after checking the current password. A password
    /// change ends every other session and voids all earlier access tokens (the
    /// caller's own session survives: its refresh token still works).
    pub async fn update_me(&self, who: &Principal, change: ProfileChange, origin: &Origin) -> Result<User> {
        if change.email.is_none() && change.new_password.is_none() {
            return Err(AccountError::NothingToChange);
        }
        let creds = self
            .store
            .credentials_by_id(who.user_id)
            .await?
            .ok_or(AccountError::UserNotFound)?;
        let new_email = change
            .email
            .as_deref()
            .map(policy::normalize_email)
            .transpose()
            .map_err(AccountError::InvalidEmail)?;
        let email_for_context = new_email.as_deref().unwrap_or(&creds.user.email).to_owned();
        if let Some(password) = &change.new_password {
            policy::check_new_password(password, &email_context(&email_for_context))
                .map_err(AccountError::WeakPassword)?;
        }

        // Guessing the current password through this route is throttled like logins.
        let account_key = creds.user.email.clone();
        if let Some(retry_after) = self.throttle.wait(&account_key, origin.ip) {
            return Err(AccountError::Throttled { retry_after });
        }
        let verified = self
            .hasher
            .verify(change.current_password.clone(), Some(creds.password_hash.clone()))
            .await?;
        if !verified.matches {
            self.throttle.record_failure(&account_key, origin.ip);
            return Err(AccountError::WrongCurrentPassword);
        }

        let mut user = creds.user;
        if let Some(email) = new_email.filter(|e| *e != user.email) {
            let old = std::mem::replace(
                &mut user,
                self.store.update_email(who.user_id, &email, Utc::now()).await?,
            );
            self.audit
                .record(Entry {
                    event: Event::EmailChanged,
                    user_id: Some(user.id),
                    actor_id: None,
                    origin,
                    details: json!({ "from": old.email, "to": user.email }),
                })
                .await;
        }
        if let Some(password) = change.new_password {
            let hash = self.hasher.hash(password).await?;
            user = self
                .store
                .change_password(who.user_id, &hash, who.session_id(), Utc::now())
                .await?;
            self.revocations.upsert(&AuthState::from(&user));
            self.audit
                .record(Entry {
                    event: Event::PasswordChanged,
                    user_id: Some(user.id),
                    actor_id: None,
                    origin,
                    details: json!({ "kept_session": who.session_id() }),
                })
                .await;
        }
        Ok(user)
    }

    // ---- administration ----

    pub async fn list_users(&self, query: &UserQuery) -> Result<UserPage> {
        Ok(self.store.list_users(query).await?)
    }

    pub async fn user(&self, id: Uuid) -> Result<User> {
        self.store.user_by_id(id).await?.ok_or(AccountError::UserNotFound)
    }

    pub async fn user_by_email(&self, email: &str) -> Result<User> {
        let email = policy::normalize_email(email).map_err(AccountError::InvalidEmail)?;
        self.store
            .credentials_by_email(&email)
            .await?
            .map(|c| c.user)
            .ok_or(AccountError::UserNotFound)
    }

    /// `actor` is the admin doing it, `None` for the CLI.
    pub async fn set_role(&self, actor: Option<Uuid>, id: Uuid, role: Role, origin: &Origin) -> Result<User> {
        let before = self.user(id).await?;
        let user = self.store.set_role(id, role, Utc::now()).await?;
        self.revocations.upsert(&AuthState::from(&user));
        if before.role != user.role {
            self.audit
                .record(Entry {
                    event: Event::RoleChanged,
                    user_id: Some(id),
                    actor_id: actor,
                    origin,
                    details: json!({ "from": before.role, "to": user.role }),
                })
                .await;
        }
        Ok(user)
    }

    pub async fn delete_user(&self, actor: Option<Uuid>, id: Uuid, origin: &Origin) -> Result<()> {
        if actor == Some(id) {
            return Err(AccountError::CannotDeleteSelf);
        }
        let user = self.user(id).await?;
        let media_keys = self.store.user_media_keys(id).await?;
        self.store.delete_user(id).await?;
        self.revocations.remove_user(id);
        // The records are gone with the account; now the bytes.
        self.media.remove(&media_keys).await;
        self.audit
            .record(Entry {
                event: Event::UserDeleted,
                user_id: Some(id),
                actor_id: actor,
                origin,
                details: json!({ "email": user.email, "role": user.role }),
            })
            .await;
        Ok(())
    }
}
