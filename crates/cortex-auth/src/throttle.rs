//! Login throttling (SPEC §11.1, Appendix B): at most 10 failed attempts per 15 minutes per client address
//! and per account. Once either limit is reached every attempt is refused until the oldest failure in the
//! window ages out, even one with the right password, so guessing cannot continue by getting lucky.

use chrono::Duration;
use cortex_core::Timestamp;

/// Failed attempts seen for one key (an address or an account) inside the window.
#[derive(Debug, Clone, Copy, Default)]
pub struct Failures {
    pub count: i64,
    /// The oldest failure inside the window, if any.
    pub oldest: Option<Timestamp>,
}

/// What to do with a login attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Refuse; a retry can succeed after this many seconds.
    Refuse {
        retry_after_seconds: u64,
    },
}

/// The limits.
#[derive(Debug, Clone, Copy)]
pub struct LoginThrottle {
    pub max_failures: i64,
    pub window: Duration,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self { max_failures: 10, window: Duration::minutes(15) }
    }
}

impl LoginThrottle {
    /// Where the counting window of an attempt at `now` starts.
    pub fn window_start(&self, now: Timestamp) -> Timestamp {
        now - self.window
    }

    /// Decides from the failures counted per address and per account.
    pub fn decide(&self, now: Timestamp, by_address: Failures, by_account: Failures) -> Decision {
        let retry_after = [by_address, by_account]
            .into_iter()
            .filter(|failures| failures.count >= self.max_failures)
            .filter_map(|failures| failures.oldest)
            .map(|oldest| (oldest + self.window - now).num_seconds().max(1))
            .max();
        match retry_after {
            Some(seconds) => Decision::Refuse { retry_after_seconds: seconds.unsigned_abs() },
            None => Decision::Allow,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn either_limit_refuses_until_the_oldest_failure_ages_out() {
        let throttle = LoginThrottle::default();
        let now = chrono::DateTime::from_timestamp(1_790_000_000, 0).unwrap_or_default();
        let oldest = Some(now - Duration::minutes(5));
        let nine = Failures { count: 9, oldest };
        let ten = Failures { count: 10, oldest };
        assert_eq!(throttle.decide(now, nine, nine), Decision::Allow);
        assert_eq!(throttle.decide(now, ten, Failures::default()), Decision::Refuse { retry_after_seconds: 600 });
        assert_eq!(throttle.decide(now, Failures::default(), ten), Decision::Refuse { retry_after_seconds: 600 });
    }
}
