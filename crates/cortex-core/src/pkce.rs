//! PKCE (RFC 7636) for provider sign-in: a random verifier, its S256 challenge, and the random `state`
//! that binds an authorization response to the sign-in that asked for it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// 32 random bytes, base64url without padding: a 43-character verifier (RFC 7636 §4.1).
pub fn verifier() -> String {
    random_token()
}

/// `BASE64URL(SHA256(verifier))`, the `S256` challenge (RFC 7636 §4.2).
pub fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// An unguessable, URL-safe `state` value.
pub fn state() -> String {
    random_token()
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_matches_the_rfc_example() {
        // RFC 7636 Appendix B.
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let verifier = verifier();
        assert_eq!(verifier.len(), 43);
        assert_ne!(verifier, super::verifier());
        assert!(state().chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }
}
