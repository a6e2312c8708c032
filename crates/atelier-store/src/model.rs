//! Persistence models: what the store reads and writes. These are not the API's
//! schemas; handlers map them to response types of their own.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A user's role. Ordered from least to most privileged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Admin,
}

impl Role {
    pub const ALL: [Role; 2] = [Role::User, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text was not one of the known role names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?} (expected \"user\" or \"admin\")")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "user" => Ok(Role::User),
            "admin" => Ok(Role::Admin),
            other => Err(UnknownRole(other.to_owned())),
        }
    }
}

/// A user account as the application sees it (never with its password hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: Uuid,
    /// Normalised: trimmed and lower-cased by the service before it reaches the store.
    pub email: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Access tokens issued before this instant are no longer accepted.
    pub tokens_valid_after: DateTime<Utc>,
}

/// A user together with the PHC string of their password hash, for verification.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user: User,
    pub password_hash: String,
}

/// Everything needed to create a user; the service has already validated and hashed.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub id: Uuid,
    pub email: String,
    pub password_hash: String,
    pub role: Role,
    pub now: DateTime<Utc>,
}

/// A filtered, keyset-paginated listing of users, in creation order.
#[derive(Debug, Clone, Default)]
pub struct UserQuery {
    pub role: Option<Role>,
    /// Case-insensitive substring of the email.
    pub email_contains: Option<String>,
    /// Only users created after this one (its id); ids are UUIDv7, so id order is creation order.
    pub after: Option<Uuid>,
    pub limit: u32,
}

/// One page of users.
#[derive(Debug, Clone)]
pub struct UserPage {
    pub users: Vec<User>,
    /// Number of users matching the filters, over all pages.
    pub total: u64,
    /// Whether more users follow the last one of this page.
    pub has_more: bool,
}

/// What the in-memory access-token check needs to know about a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthState {
    pub user_id: Uuid,
    pub role: Role,
    pub tokens_valid_after: DateTime<Utc>,
}

impl From<&User> for AuthState {
    fn from(user: &User) -> Self {
        AuthState {
            user_id: user.id,
            role: user.role,
            tokens_valid_after: user.tokens_valid_after,
        }
    }
}

/// The SHA-256 of a refresh token. The token itself is never stored.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Enough to correlate in a debugger, not enough to matter.
        write!(f, "TokenHash({:02x}{:02x}…)", self.0[0], self.0[1])
    }
}

/// A refresh token that starts a new family (a login).
#[derive(Debug, Clone)]
pub struct NewSession {
    pub token_id: Uuid,
    pub family_id: Uuid,
    pub user_id: Uuid,
    pub token_hash: TokenHash,
    pub now: DateTime<Utc>,
    /// When this token stops being accepted if not used (the idle lifetime).
    pub expires_at: DateTime<Utc>,
    /// When the whole family stops being accepted, however often it is rotated.
    pub family_expires_at: DateTime<Utc>,
}

impl NewSession {
    /// The token's own expiry: its idle lifetime, never past the family's.
    pub fn token_expires_at(&self) -> DateTime<Utc> {
        self.expires_at.min(self.family_expires_at)
    }
}

/// The replacement issued when a refresh token is rotated.
#[derive(Debug, Clone)]
pub struct Rotation {
    pub token_id: Uuid,
    pub token_hash: TokenHash,
    pub now: DateTime<Utc>,
    /// The idle expiry of the new token; the store caps it at the family's absolute expiry.
    pub expires_at: DateTime<Utc>,
}

impl Rotation {
    /// The new token's expiry in a family that ends at `family_expires_at`.
    pub fn expires_at_within(&self, family_expires_at: DateTime<Utc>) -> DateTime<Utc> {
        self.expires_at.min(family_expires_at)
    }
}

/// What presenting a refresh token for rotation came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotateOutcome {
    /// The token was live; it is now used and its replacement stored.
    Rotated { user: User, family_id: Uuid },
    /// The token had already been rotated: the whole family is now revoked (committed).
    Reused { user_id: Uuid, family_id: Uuid },
    /// The token's idle or absolute lifetime is over.
    Expired,
    /// Unknown, or its family was revoked (logout, reuse, password change).
    Invalid,
}

/// A family revoked on logout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevokedFamily {
    pub user_id: Uuid,
    pub family_id: Uuid,
}

/// Refresh tokens by state, for the admin statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenStats {
    /// Unused, unrevoked and unexpired: can be exchanged now.
    pub active: u64,
    /// Unused and unrevoked, but past their lifetime.
    pub expired: u64,
    /// Revoked by logout, reuse detection, password change or user deletion.
    pub revoked: u64,
    /// Exchanged for a successor; kept so that a replay is recognised as reuse.
    pub rotated: u64,
}

/// A security-relevant event, kept in the audit log.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    /// Stable snake_case name, e.g. `login`, `login_failed`, `role_changed`.
    pub event: String,
    /// The account the event is about, when there is one.
    pub user_id: Option<Uuid>,
    /// Who caused it, when not the user themself (an admin, or none for the CLI).
    pub actor_id: Option<Uuid>,
    pub ip: Option<String>,
    pub request_id: Option<String>,
    /// Event-specific details as a JSON object.
    pub details: String,
}

/// Successful and failed logins over a period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoginCounts {
    pub succeeded: u64,
    pub failed: u64,
}

/// Outcome of applying migrations at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigrationReport {
    /// Highest schema version now in place.
    pub version: u32,
    /// How many migrations this call applied.
    pub applied: u32,
}
