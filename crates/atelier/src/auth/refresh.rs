//! Refresh tokens: 256 random bits, handed out once, stored only as their SHA-256.

use atelier_store::TokenHash;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use sha2::{Digest, Sha256};

/// Length of an encoded token: 32 bytes in unpadded base64url.
const ENCODED_LEN: usize = 43;

/// A new token and the hash to store for it.
pub fn generate() -> (String, TokenHash) {
    let bytes: [u8; 32] = rand::random();
    let token = B64.encode(bytes);
    let hash = hash(&token);
    (token, hash)
}

fn hash(token: &str) -> TokenHash {
    TokenHash(Sha256::digest(token.as_bytes()).into())
}

/// The hash of a presented token, or `None` when it cannot be one of ours.
pub fn hash_presented(token: &str) -> Option<TokenHash> {
    let well_formed = token.len() == ENCODED_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    well_formed.then(|| hash(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hash_consistently() {
        let (a, ha) = generate();
        let (b, hb) = generate();
        assert_ne!(a, b);
        assert_ne!(ha, hb);
        assert_eq!(a.len(), ENCODED_LEN);
        assert_eq!(hash_presented(&a), Some(ha));
        assert_eq!(hash_presented("too-short"), None);
        assert_eq!(hash_presented(&format!("{}=", &a[..42])), None);
    }
}
