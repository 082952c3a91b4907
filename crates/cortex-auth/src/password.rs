//! Local passwords: Argon2id with the library's recommended parameters (19 MiB, 2 passes), stored in the
//! PHC string format so parameters can change later without invalidating old hashes.

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};

use crate::AuthError;

/// Shortest password accepted for a new local account.
pub const MIN_LENGTH: usize = 10;
/// Longest password accepted (bounds the hashing work an attacker can ask for).
pub const MAX_LENGTH: usize = 1024;

/// Refuses passwords that are too short, too long or all whitespace.
pub fn check_policy(password: &str) -> Result<(), AuthError> {
    let length = password.chars().count();
    if length < MIN_LENGTH {
        return Err(AuthError::WeakPassword(format!("the password needs at least {MIN_LENGTH} characters")));
    }
    if password.len() > MAX_LENGTH {
        return Err(AuthError::WeakPassword(format!("the password may have at most {MAX_LENGTH} bytes")));
    }
    if password.trim().is_empty() {
        return Err(AuthError::WeakPassword("the password may not be only spaces".into()));
    }
    Ok(())
}

/// The Argon2id PHC string of `password` with a fresh random salt.
pub fn hash(password: &str) -> Result<String, AuthError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|err| AuthError::Hashing(err.to_string()))
}

/// True when `password` matches the stored PHC string; false for a mismatch or an unreadable hash.
pub fn verify(password: &str, phc: &str) -> bool {
    if password.len() > MAX_LENGTH {
        return false;
    }
    PasswordHash::new(phc).is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
}

/// Spends the time of one verification without a stored hash, so an unknown email answers as slowly as a
/// known one with a wrong password (no account enumeration by timing).
pub fn verify_nothing(password: &str) {
    static DUMMY: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    if let Some(phc) = DUMMY.get_or_init(|| hash("not a password of anyone").ok()) {
        let _ = verify(password, phc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_only_its_password() {
        let phc = hash("correct horse battery").unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(verify("correct horse battery", &phc));
        assert!(!verify("correct horse batterY", &phc));
        assert!(!verify("correct horse battery", "not a phc string"));
        assert_ne!(hash("correct horse battery").unwrap(), phc, "salts differ");
    }

    #[test]
    fn the_policy_names_what_is_wrong() {
        assert!(check_policy("short").unwrap_err().to_string().contains("at least 10"));
        assert!(check_policy("          ").is_err());
        assert!(check_policy(&"x".repeat(MAX_LENGTH + 1)).is_err());
        assert!(check_policy("long enough pass").is_ok());
    }
}
