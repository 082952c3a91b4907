//! The lifetime of a web session (SPEC §11.1): 7 days, sliding. Activity extends it once more than a
//! tenth of the lifetime has passed since the last extension, so an active user stays signed in without
//! every request writing to the database.

use chrono::Duration;
use cortex_core::Timestamp;

/// Lifetime rules of web sessions.
#[derive(Debug, Clone, Copy)]
pub struct SessionPolicy {
    pub ttl: Duration,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        Self { ttl: Duration::days(7) }
    }
}

impl SessionPolicy {
    /// When a session created or extended at `now` expires.
    pub fn expires_at(&self, now: Timestamp) -> Timestamp {
        now + self.ttl
    }

    /// Whether a session last extended at `last_extended_at` should be extended now.
    pub fn needs_extension(&self, last_extended_at: Timestamp, now: Timestamp) -> bool {
        now - last_extended_at > self.ttl / 10
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_waits_for_a_tenth_of_the_lifetime() {
        let policy = SessionPolicy::default();
        let start = chrono::DateTime::from_timestamp(1_790_000_000, 0).unwrap_or_default();
        assert_eq!(policy.expires_at(start) - start, Duration::days(7));
        assert!(!policy.needs_extension(start, start + Duration::hours(16)));
        assert!(policy.needs_extension(start, start + Duration::hours(17)));
    }
}
