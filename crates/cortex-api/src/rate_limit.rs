//! Per-principal request rate limits (SPEC §17.7): token buckets per API key, one for all requests and a
//! stricter one for chat. Over the limit → 429 with `Retry-After`.
//!
//! Buckets live in process memory: limits are a protection, not correctness-relevant state, and with
//! several replicas each enforces its own share.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

/// A refill rate and burst size.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    pub per_minute: u32,
    pub burst: u32,
}

impl Limit {
    /// All requests of one key (600/min, burst 100).
    pub const API: Limit = Limit { per_minute: 600, burst: 100 };
    /// Chat messages of one key (60/min, burst 10).
    pub const CHAT: Limit = Limit { per_minute: 60, burst: 10 };
}

/// Which bucket a request draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bucket {
    Api,
    Chat,
}

#[derive(Debug)]
struct State {
    tokens: f64,
    updated: Instant,
}

/// Token buckets keyed by (principal, bucket).
#[derive(Debug)]
pub struct RateLimiter {
    api: Limit,
    chat: Limit,
    buckets: Mutex<HashMap<(Uuid, Bucket), State>>,
}

/// Forget buckets idle this long (they would be full again anyway).
const IDLE: Duration = Duration::from_secs(600);

impl RateLimiter {
    pub fn new(api: Limit, chat: Limit) -> Self {
        Self { api, chat, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token; `Err(seconds)` says when the next one will be available.
    pub fn check(&self, principal: Uuid, bucket: Bucket) -> Result<(), u64> {
        let limit = match bucket {
            Bucket::Api => self.api,
            Bucket::Chat => self.chat,
        };
        let now = Instant::now();
        let per_second = f64::from(limit.per_minute) / 60.0;
        let Ok(mut buckets) = self.buckets.lock() else { return Ok(()) };
        if buckets.len() > 10_000 {
            buckets.retain(|_, state| now.duration_since(state.updated) < IDLE);
        }
        let state =
            buckets.entry((principal, bucket)).or_insert(State { tokens: f64::from(limit.burst), updated: now });
        let refill = now.duration_since(state.updated).as_secs_f64() * per_second;
        state.tokens = (state.tokens + refill).min(f64::from(limit.burst));
        state.updated = now;
        if state.tokens >= 1.0 {
            state.tokens -= 1.0;
            Ok(())
        } else if per_second > 0.0 {
            Err(((1.0 - state.tokens) / per_second).ceil().max(1.0) as u64)
        } else {
            Err(60)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refuse_with_retry_after() {
        let limiter = RateLimiter::new(Limit { per_minute: 1, burst: 3 }, Limit::CHAT);
        let key = Uuid::now_v7();
        for _ in 0..3 {
            assert!(limiter.check(key, Bucket::Api).is_ok());
        }
        let retry = limiter.check(key, Bucket::Api).unwrap_err();
        assert!((1..=60).contains(&retry));
        assert!(limiter.check(Uuid::now_v7(), Bucket::Api).is_ok(), "other keys have their own bucket");
    }
}
