//! Access tokens: HS256 JWTs, verified without touching the database.
//!
//! Validation pins the algorithm, requires every claim and allows at most the
//! configured leeway. Revocation (role or password change, deletion, logout) is not
//! in the token; [`super::revocation`] checks it in memory. For that check the
//! issuing instant must be finer than `iat`'s whole seconds, or a token issued just
//! after a revocation in the same second would be refused; so the `jti` is a UUIDv7
//! and its millisecond timestamp is the issuing instant (it is signed like the rest).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use atelier_store::Role;
use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user.
    pub sub: Uuid,
    pub role: Role,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
    pub aud: String,
    /// Unique id, a UUIDv7 whose timestamp is the issuing instant in milliseconds.
    pub jti: Uuid,
    /// The login session (refresh token family) this token belongs to.
    pub sid: Uuid,
}

impl Claims {
    /// Milliseconds since the epoch at which the token was issued.
    pub fn issued_at_ms(&self) -> i64 {
        self.jti
            .get_timestamp()
            .map_or(self.iat.saturating_mul(1000), |ts| {
                let (secs, nanos) = ts.to_unix();
                i64::try_from(secs).unwrap_or(i64::MAX).saturating_mul(1000) + i64::from(nanos / 1_000_000)
            })
    }
}

/// A freshly signed access token.
#[derive(Debug)]
pub struct Issued {
    pub token: String,
    pub expires_in: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the access token has expired")]
    Expired,
    #[error("the access token is invalid")]
    Invalid,
}

/// Verified tokens kept before the cache starts over.
const VERIFIED_CAPACITY: usize = 4096;

pub struct AccessTokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
    issuer: String,
    audience: String,
    /// Tokens verified before, by their text. A client sends the same token
    /// with every request of its life (minutes), and checking its signature and
    /// parsing its claims again each time was a sixth of a `/v1` request's
    /// instructions (callgrind): a token is verified once, its expiry at every
    /// use. Only tokens that passed verification get in.
    verified: Mutex<HashMap<Box<str>, Arc<Claims>>>,
}

impl AccessTokens {
    pub fn new(secret: &[u8], ttl: Duration, leeway: Duration, issuer: &str, audience: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.leeway = leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = false;
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        AccessTokens {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            verified: Mutex::new(HashMap::new()),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn issue(&self, user_id: Uuid, role: Role, session_id: Uuid) -> anyhow::Result<Issued> {
        let now = Utc::now().timestamp();
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX);
        let claims = Claims {
            sub: user_id,
            role,
            iat: now,
            exp: now.saturating_add(ttl),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            jti: Uuid::now_v7(),
            sid: session_id,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?;
        Ok(Issued {
            token,
            expires_in: self.ttl.as_secs(),
        })
    }

    pub fn verify(&self, token: &str) -> Result<Arc<Claims>, TokenError> {
        let now = Utc::now().timestamp();
        let known = self.verified.lock().get(token).cloned();
        if let Some(claims) = known {
            return if self.expired(&claims, now) {
                Err(TokenError::Expired)
            } else {
                Ok(claims)
            };
        }
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| Arc::new(data.claims))
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })?;
        let mut verified = self.verified.lock();
        if verified.len() >= VERIFIED_CAPACITY {
            verified.retain(|_, c| !self.expired(c, now));
            if verified.len() >= VERIFIED_CAPACITY {
                verified.clear();
            }
        }
        verified.insert(token.into(), Arc::clone(&claims));
        Ok(claims)
    }

    /// jsonwebtoken's own rule: expired once `exp` is more than the leeway ago.
    fn expired(&self, claims: &Claims, now: i64) -> bool {
        claims.exp < now.saturating_sub(i64::try_from(self.validation.leeway).unwrap_or(i64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn tokens() -> AccessTokens {
        AccessTokens::new(
            KEY,
            Duration::from_secs(300),
            Duration::from_secs(5),
            "atelier",
            "atelier",
        )
    }

    fn sign(claims: &serde_json::Value, alg: Algorithm, key: &[u8]) -> String {
        jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(key)).expect("sign")
    }

    fn claims_json(overrides: serde_json::Value) -> serde_json::Value {
        let now = Utc::now().timestamp();
        let mut base = serde_json::json!({
            "sub": Uuid::now_v7(), "role": "user", "iat": now, "exp": now + 300,
            "iss": "atelier", "aud": "atelier", "jti": Uuid::now_v7(), "sid": Uuid::now_v7(),
        });
        if let (Some(base), Some(over)) = (base.as_object_mut(), overrides.as_object()) {
            for (k, v) in over {
                if v.is_null() {
                    base.remove(k);
                } else {
                    base.insert(k.clone(), v.clone());
                }
            }
        }
        base
    }

    #[test]
    fn round_trip() {
        let t = tokens();
        let (user, session) = (Uuid::now_v7(), Uuid::now_v7());
        let issued = t.issue(user, Role::Admin, session).expect("issue");
        assert_eq!(issued.expires_in, 300);
        let claims = t.verify(&issued.token).expect("valid");
        assert_eq!(
            (claims.sub, claims.role, claims.sid),
            (user, Role::Admin, session)
        );
        let ms = claims.issued_at_ms();
        assert!(
            (ms / 1000 - claims.iat).abs() <= 1,
            "jti time {ms} vs iat {}",
            claims.iat
        );
    }

    #[test]
    fn rejects_forgeries_and_wrong_claims() {
        let t = tokens();
        let now = Utc::now().timestamp();
        let cases = [
            (
                "wrong key",
                sign(
                    &claims_json(serde_json::json!({})),
                    Algorithm::HS256,
                    b"another-key-another-key-another-k",
                ),
            ),
            (
                "HS512",
                sign(&claims_json(serde_json::json!({})), Algorithm::HS512, KEY),
            ),
            (
                "issuer",
                sign(
                    &claims_json(serde_json::json!({"iss": "evil"})),
                    Algorithm::HS256,
                    KEY,
                ),
            ),
            (
                "audience",
                sign(
                    &claims_json(serde_json::json!({"aud": "other"})),
                    Algorithm::HS256,
                    KEY,
                ),
            ),
            (
                "no jti",
                sign(
                    &claims_json(serde_json::json!({"jti": null})),
                    Algorithm::HS256,
                    KEY,
                ),
            ),
            (
                "no iat",
                sign(
                    &claims_json(serde_json::json!({"iat": null})),
                    Algorithm::HS256,
                    KEY,
                ),
            ),
            (
                "no sub",
                sign(
                    &claims_json(serde_json::json!({"sub": null})),
                    Algorithm::HS256,
                    KEY,
                ),
            ),
            (
                "no exp",
                sign(
                    &claims_json(serde_json::json!({"exp": null})),
                    Algorithm::HS256,
                    KEY,
                ),
            ),
        ];
        for (name, token) in cases {
            assert_eq!(t.verify(&token), Err(TokenError::Invalid), "{name}");
        }

        let expired = sign(
            &claims_json(serde_json::json!({"iat": now - 600, "exp": now - 60})),
            Algorithm::HS256,
            KEY,
        );
        assert_eq!(t.verify(&expired), Err(TokenError::Expired));
        let within_leeway = sign(
            &claims_json(serde_json::json!({"exp": now - 2})),
            Algorithm::HS256,
            KEY,
        );
        assert!(
            t.verify(&within_leeway).is_ok(),
            "2 s past expiry is inside the 5 s leeway"
        );

        // alg "none" with no signature.
        let header = B64.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = B64.encode(claims_json(serde_json::json!({})).to_string());
        assert_eq!(t.verify(&format!("{header}.{body}.")), Err(TokenError::Invalid));

        // A valid token with one byte of its signature changed.
        let good = t
            .issue(Uuid::now_v7(), Role::User, Uuid::now_v7())
            .expect("issue")
            .token;
        let mut bytes = good.into_bytes();
        let last = bytes.len() - 2;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).expect("ascii");
        assert_eq!(t.verify(&tampered), Err(TokenError::Invalid));

        // A refresh token is not a JWT at all.
        assert_eq!(
            t.verify(&super::super::refresh::generate().0),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn a_token_verified_before_is_still_checked_for_expiry() {
        let t = AccessTokens::new(KEY, Duration::from_secs(1), Duration::ZERO, "atelier", "atelier");
        let token = t
            .issue(Uuid::now_v7(), Role::User, Uuid::now_v7())
            .expect("issue")
            .token;
        let first = t.verify(&token).expect("valid");
        let again = t.verify(&token).expect("still valid");
        assert!(Arc::ptr_eq(&first, &again), "the second use reads the cache");
        std::thread::sleep(Duration::from_millis(2100));
        assert_eq!(t.verify(&token), Err(TokenError::Expired));
        // A token that failed is never remembered as good.
        let mut tampered = token.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).expect("ascii");
        assert_eq!(t.verify(&tampered), Err(TokenError::Invalid));
        assert_eq!(t.verify(&tampered), Err(TokenError::Invalid));
    }
}
