//! Signed, expiring links to stored media, for clients that cannot send a key
//! with the request: OpenAI's image `url` answers are fetched by plain HTTP GETs.
//! The signature covers the media id and the expiry; its key is derived from the
//! token signing key, so every instance sharing that key accepts the links.

use std::time::Duration;

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use uuid::Uuid;

type HmacSha256 = Hmac<Sha256>;

/// How long a signed link works.
pub const LINK_LIFETIME: Duration = Duration::from_secs(60 * 60);

#[derive(Clone)]
pub struct MediaLinks {
    key: [u8; 32],
}

impl MediaLinks {
    /// Derives a key of its own so a link signature never doubles as a token one.
    pub fn new(signing_secret: &[u8]) -> Self {
        let key = Sha256::new()
            .chain_update(b"atelier media links v1\0")
            .chain_update(signing_secret)
            .finalize();
        MediaLinks { key: key.into() }
    }

    fn mac(&self, id: Uuid, expires: i64) -> HmacSha256 {
        // HMAC pads a short key with zeros to the block size; padding it here
        // lets the infallible constructor take it.
        let mut block = [0u8; 64];
        block[..32].copy_from_slice(&self.key);
        let mut mac = <HmacSha256 as KeyInit>::new(&block.into());
        mac.update(id.as_bytes());
        mac.update(&expires.to_be_bytes());
        mac
    }

    /// The path and query of a link to `id` that works until `now + LINK_LIFETIME`.
    pub fn path(&self, id: Uuid, now: i64) -> String {
        let expires = now.saturating_add(LINK_LIFETIME.as_secs() as i64);
        let signature = hex::encode(self.mac(id, expires).finalize().into_bytes());
        format!("/media/signed/{id}?expires={expires}&signature={signature}")
    }

    /// Whether the signature is right (compared in constant time) and not expired.
    pub fn verify(&self, id: Uuid, expires: i64, signature: &str, now: i64) -> bool {
        let Ok(signature) = hex::decode(signature) else {
            return false;
        };
        now <= expires && self.mac(id, expires).verify_slice(&signature).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(path: &str) -> (i64, String) {
        let query = path.split_once('?').unwrap().1;
        let mut expires = 0;
        let mut signature = String::new();
        for pair in query.split('&') {
            match pair.split_once('=').unwrap() {
                ("expires", v) => expires = v.parse().unwrap(),
                ("signature", v) => signature = v.to_owned(),
                _ => {}
            }
        }
        (expires, signature)
    }

    #[test]
    fn links_verify_until_they_expire_and_only_for_their_item() {
        let links = MediaLinks::new(b"a secret of some length for tests");
        let id = Uuid::now_v7();
        let (expires, signature) = parts(&links.path(id, 1_000));
        assert_eq!(expires, 1_000 + LINK_LIFETIME.as_secs() as i64);
        assert!(links.verify(id, expires, &signature, 1_001));
        assert!(links.verify(id, expires, &signature, expires));
        assert!(!links.verify(id, expires, &signature, expires + 1), "expired");
        assert!(
            !links.verify(Uuid::now_v7(), expires, &signature, 1_001),
            "another item"
        );
        assert!(
            !links.verify(id, expires + 3600, &signature, 1_001),
            "extended expiry"
        );
        assert!(!links.verify(id, expires, "zz", 1_001), "not hex");
        let other = MediaLinks::new(b"another secret of some length....");
        assert!(!other.verify(id, expires, &signature, 1_001), "another key");
    }
}
