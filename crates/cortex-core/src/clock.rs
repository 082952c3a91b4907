//! The clock is injected everywhere time matters (leases, backoff, expiry, timeouts) so tests can move
//! time by hand instead of sleeping: waiting on a [`ManualClock`] ends when the test advances it.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use crate::Timestamp;

/// A boxed future returned by [`Clock::sleep_until`].
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Source of "now" and of waiting. All durable time arithmetic goes through it.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> Timestamp;

    /// Resolves once `now() >= deadline`.
    fn sleep_until(&self, deadline: Timestamp) -> Sleep;

    /// Resolves after `duration` of this clock's time.
    fn sleep(&self, duration: std::time::Duration) -> Sleep {
        let delta = chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX);
        self.sleep_until(self.now() + delta)
    }
}

/// Wall-clock time, truncated to milliseconds to match what the database stores.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        truncate_to_millis(chrono::Utc::now())
    }

    fn sleep_until(&self, deadline: Timestamp) -> Sleep {
        let wait = (deadline - chrono::Utc::now()).to_std().unwrap_or_default();
        Box::pin(tokio::time::sleep(wait))
    }
}

/// A clock that only moves when told to; shared by cloning.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<Timestamp>>,
    moved: Arc<tokio::sync::Notify>,
}

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        Self { now: Arc::new(Mutex::new(truncate_to_millis(start))), moved: Arc::new(tokio::sync::Notify::new()) }
    }

    /// Moves time forward by `delta`, waking every sleeper whose deadline has come.
    pub fn advance(&self, delta: chrono::Duration) {
        *self.lock() += delta;
        self.moved.notify_waiters();
    }

    /// The current time plus `seconds` (handy for "due in a minute" fixtures).
    pub fn now_plus(&self, seconds: i64) -> Timestamp {
        self.now() + chrono::Duration::seconds(seconds)
    }

    pub fn set(&self, to: Timestamp) {
        *self.lock() = truncate_to_millis(to);
        self.moved.notify_waiters();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Timestamp> {
        self.now.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.lock()
    }

    fn sleep_until(&self, deadline: Timestamp) -> Sleep {
        let clock = self.clone();
        Box::pin(async move {
            loop {
                // Register interest before checking, so an advance between the check and the wait is seen.
                let moved = clock.moved.notified();
                tokio::pin!(moved);
                moved.as_mut().enable();
                if clock.now() >= deadline {
                    return;
                }
                moved.await;
            }
        })
    }
}

/// The API's one text form of a timestamp: RFC 3339 UTC with exactly three fractional digits
/// (`2026-12-06T01:02:03.000Z`), fixed-width so that timestamps sort as text; used for event payloads
/// as well as response bodies.
pub fn rfc3339_millis(t: Timestamp) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Databases keep milliseconds; truncating early keeps round-trips exact.
pub fn truncate_to_millis(t: Timestamp) -> Timestamp {
    chrono::DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}
