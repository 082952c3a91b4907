//! Random secrets of the dashboard: session ids and CSRF tokens, 256 bits each (SPEC §11.1, §19).
//!
//! The cookie carries the session id; the database holds only its SHA-256, so a copy of the database
//! does not yield a usable session.

use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A freshly generated session id: the plaintext for the cookie, the hash for the store.
#[derive(Debug, Clone)]
pub struct SessionToken {
    pub plaintext: String,
    pub hash: String,
}

/// 32 random bytes, URL-safe base64 without padding (43 characters).
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl SessionToken {
    pub fn generate() -> Self {
        let plaintext = random_token();
        let hash = hash(&plaintext);
        Self { plaintext, hash }
    }
}

/// The stored form of a session id (SHA-256, lowercase hex).
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new CSRF token (synchroniser token stored with the session).
pub fn csrf_token() -> String {
    random_token()
}

/// Compares a presented secret with the expected one in constant time.
pub fn matches(presented: &str, expected: &str) -> bool {
    presented.len() == expected.len() && bool::from(presented.as_bytes().ct_eq(expected.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_hashed() {
        let one = SessionToken::generate();
        let two = SessionToken::generate();
        assert_eq!(one.plaintext.len(), 43);
        assert_ne!(one.plaintext, two.plaintext);
        assert_eq!(one.hash, hash(&one.plaintext));
        assert_eq!(one.hash.len(), 64);
        assert!(matches(&one.plaintext, &one.plaintext.clone()));
        assert!(!matches(&one.plaintext, &two.plaintext));
        assert!(!matches("", &one.plaintext));
    }
}
