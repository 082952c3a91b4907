//! API key format, hashing and verification (SPEC §17.2).
//!
//! Keys look like `ctx_<8-char prefix>_<40 base62 chars>`: 48 random base62 characters in all (≈ 285
//! bits). Only the prefix (for lookup) and the SHA-256 of the whole key are stored; keys are
//! high-entropy, so a fast hash is sufficient and comparison is constant-time.

use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const PREFIX_LEN: usize = 8;
const SECRET_LEN: usize = 40;

/// A freshly generated key: the plaintext is shown once and never stored.
#[derive(Debug, Clone)]
pub struct GeneratedKey {
    pub plaintext: String,
    pub prefix: String,
    pub hash: String,
}

/// Generates a new random key.
pub fn generate() -> GeneratedKey {
    let mut rng = rand::rng();
    let mut random =
        |len: usize| -> String { (0..len).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect() };
    let prefix = random(PREFIX_LEN);
    let secret = random(SECRET_LEN);
    let plaintext = format!("ctx_{prefix}_{secret}");
    GeneratedKey { hash: hash(&plaintext), prefix, plaintext }
}

/// SHA-256 hex of the full key text.
pub fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The lookup prefix of a well-formed key, `None` for anything that is not one of ours.
pub fn prefix_of(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("ctx_")?;
    let (prefix, secret) = rest.split_once('_')?;
    let well_formed = prefix.len() == PREFIX_LEN
        && secret.len() >= 32
        && prefix.bytes().chain(secret.bytes()).all(|b| b.is_ascii_alphanumeric());
    well_formed.then_some(prefix)
}

/// Constant-time comparison of a presented key against a stored hash.
pub fn verify(key: &str, stored_hash: &str) -> bool {
    hash(key).as_bytes().ct_eq(stored_hash.as_bytes()).into()
}

/// Why a bootstrap key given in the environment is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WeakKey {
    #[error("is {0} characters long; use at least 32 random characters (e.g. `cortex keys generate`)")]
    TooShort(usize),
    #[error("is a placeholder value (`{0}`); set a real random secret")]
    Placeholder(String),
    #[error("has too little variety ({0} distinct characters); use a random secret")]
    LowVariety(usize),
}

const PLACEHOLDERS: &[&str] = &[
    "changeme",
    "change-me",
    "change_me",
    "undefined",
    "null",
    "none",
    "secret",
    "password",
    "admin",
    "test",
    "example",
    "your-api-key",
    "apikey",
    "api-key",
    "xxx",
    "todo",
    "default",
];

/// Refuses bootstrap keys that are short, placeholders or visibly non-random. Accepts our own format
/// and any other high-entropy secret of at least 32 characters.
pub fn check_bootstrap_strength(key: &str) -> Result<(), WeakKey> {
    let lowered = key.trim().to_ascii_lowercase();
    if PLACEHOLDERS
        .iter()
        .any(|p| lowered == *p || lowered.contains(&format!("{p}{p}")) || lowered.starts_with("changeme"))
    {
        return Err(WeakKey::Placeholder(key.to_owned()));
    }
    if key.chars().count() < 32 {
        return Err(WeakKey::TooShort(key.chars().count()));
    }
    let mut distinct: Vec<char> = key.chars().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 10 {
        return Err(WeakKey::LowVariety(distinct.len()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_verify_and_parse() {
        let key = generate();
        assert_eq!(prefix_of(&key.plaintext), Some(key.prefix.as_str()));
        assert!(verify(&key.plaintext, &key.hash));
        assert!(!verify(&format!("{}x", key.plaintext), &key.hash));
        assert_ne!(generate().plaintext, key.plaintext);
        assert!(check_bootstrap_strength(&key.plaintext).is_ok());
    }

    #[test]
    fn malformed_keys_have_no_prefix() {
        for bad in [
            "",
            "ctx_",
            "ctx_short_abc",
            "Bearer x",
            "ctx_ABCDEFGH_",
            "ctx_ABCDEFG!_0123456789012345678901234567890123",
        ] {
            assert_eq!(prefix_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn weak_bootstrap_keys_are_refused() {
        assert!(matches!(check_bootstrap_strength("changeme"), Err(WeakKey::Placeholder(_))));
        assert!(matches!(check_bootstrap_strength("undefined"), Err(WeakKey::Placeholder(_))));
        assert!(matches!(check_bootstrap_strength("abc123"), Err(WeakKey::TooShort(6))));
        assert!(matches!(check_bootstrap_strength(&"ab".repeat(20)), Err(WeakKey::LowVariety(2))));
        assert!(check_bootstrap_strength("k3J9xQ2mV8pL5rT1wZ7nB4cF6hD0gY2s").is_ok());
    }
}
