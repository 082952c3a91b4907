//! Per-principal request rate limits (SPEC §17.7, Appendix B): token buckets, one for all requests and a
//! stricter one for chat messages. Over the limit → 429 with `Retry-After`.
//!
//! A bucket belongs to a rate scope, not to a key: keys a non-admin created draw on their creator's scope,
//! so handing out keys never multiplies a budget. A key may carry its own API limit. A limit of 0 per
//! minute disables that bucket.
//!
//! Failed authentication is throttled per client address ([`FailedAuth`]): once an address has used up
//! its allowance of wrong keys, every attempt from it is refused with 429 until the bucket refills — the
//! right key too, so guessing gains nothing.
//!
//! Buckets live in process memory: limits are a protection, not correctness-relevant state, and with
//! several replicas each enforces its own share.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

/// A refill rate and burst size; `per_minute == 0` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub per_minute: u32,
    pub burst: u32,
}

impl Limit {
    /// All requests of one scope (SPEC Appendix B: 6000/min, burst 1000).
    pub const API: Limit = Limit { per_minute: 6000, burst: 1000 };
    /// Chat messages of one scope (600/min, burst 100).
    pub const CHAT: Limit = Limit { per_minute: 600, burst: 100 };
    /// No limit.
    pub const OFF: Limit = Limit { per_minute: 0, burst: 0 };
    /// Failed authentications of one client address: 20 a minute, all of them at once.
    pub const AUTH_FAILURES: Limit = Limit { per_minute: 20, burst: 20 };

    /// A limit of `per_minute` with the burst the defaults use: a sixth of a minute's allowance.
    pub fn per_minute(per_minute: u32) -> Limit {
        Limit { per_minute, burst: per_minute.div_ceil(6).max(1) }
    }

    fn is_off(self) -> bool {
        self.per_minute == 0
    }
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

/// Token buckets by key.
#[derive(Debug)]
struct Buckets<K> {
    buckets: Mutex<HashMap<K, State>>,
}

/// Forget buckets idle this long (they would be full again anyway).
const IDLE: Duration = Duration::from_secs(600);

impl<K: Hash + Eq> Buckets<K> {
    fn new() -> Self {
        Self { buckets: Mutex::new(HashMap::new()) }
    }

    /// Refills `key`'s bucket; with `take`, takes a token. `Err(seconds)` when the bucket has no whole
    /// token: the time until it has one again.
    fn check(&self, key: K, limit: Limit, take: bool) -> Result<(), u64> {
        if limit.is_off() {
            return Ok(());
        }
        let now = Instant::now();
        let per_second = f64::from(limit.per_minute) / 60.0;
        let Ok(mut buckets) = self.buckets.lock() else { return Ok(()) };
        if buckets.len() > 10_000 {
            buckets.retain(|_, state| now.duration_since(state.updated) < IDLE);
        }
        let state = buckets.entry(key).or_insert(State { tokens: f64::from(limit.burst), updated: now });
        let refill = now.duration_since(state.updated).as_secs_f64() * per_second;
        state.tokens = (state.tokens + refill).min(f64::from(limit.burst));
        state.updated = now;
        if state.tokens >= 1.0 {
            if take {
                state.tokens -= 1.0;
            }
            Ok(())
        } else {
            Err(((1.0 - state.tokens) / per_second).ceil().max(1.0) as u64)
        }
    }
}

/// Token buckets keyed by (rate scope, bucket).
#[derive(Debug)]
pub struct RateLimiter {
    api: Limit,
    chat: Limit,
    buckets: Buckets<(Uuid, Bucket)>,
}

impl RateLimiter {
    pub fn new(api: Limit, chat: Limit) -> Self {
        Self { api, chat, buckets: Buckets::new() }
    }

    /// Takes one token from `scope`'s bucket; `own_api_limit` (a key's `rate_limit_per_minute`) replaces
    /// the server-wide API limit. `Err(seconds)` says when the next token will be available.
    pub fn check(&self, scope: Uuid, bucket: Bucket, own_api_limit: Option<u32>) -> Result<(), u64> {
        let limit = match bucket {
            Bucket::Api => own_api_limit.map_or(self.api, Limit::per_minute),
            Bucket::Chat => self.chat,
        };
        self.buckets.check((scope, bucket), limit, true)
    }
}

/// Failed authentications per client address.
#[derive(Debug)]
pub struct FailedAuth {
    limit: Limit,
    buckets: Buckets<IpAddr>,
}

impl FailedAuth {
    pub fn new(limit: Limit) -> Self {
        Self { limit, buckets: Buckets::new() }
    }

    /// `Err(seconds)` while `address` has used up its failures: refuse before even looking at the key.
    pub fn check(&self, address: IpAddr) -> Result<(), u64> {
        self.buckets.check(address, self.limit, false)
    }

    /// Counts one failed authentication from `address`.
    pub fn failed(&self, address: IpAddr) {
        let _ = self.buckets.check(address, self.limit, true);
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
            assert!(limiter.check(key, Bucket::Api, None).is_ok());
        }
        let retry = limiter.check(key, Bucket::Api, None).unwrap_err();
        assert!((1..=60).contains(&retry));
        assert!(limiter.check(Uuid::now_v7(), Bucket::Api, None).is_ok(), "other scopes have their own bucket");
    }

    #[test]
    fn zero_disables_and_an_own_limit_replaces_the_global_one() {
        let limiter = RateLimiter::new(Limit::OFF, Limit::OFF);
        let scope = Uuid::now_v7();
        for _ in 0..10_000 {
            assert!(limiter.check(scope, Bucket::Api, None).is_ok());
            assert!(limiter.check(scope, Bucket::Chat, None).is_ok());
        }
        let limited = Uuid::now_v7();
        // 6 per minute → a burst of 1.
        assert!(limiter.check(limited, Bucket::Api, Some(6)).is_ok());
        assert!(limiter.check(limited, Bucket::Api, Some(6)).is_err());
    }

    #[test]
    fn failed_authentications_block_an_address_until_refilled() {
        let failures = FailedAuth::new(Limit::AUTH_FAILURES);
        let address: IpAddr = [192, 0, 2, 1].into();
        for _ in 0..20 {
            assert!(failures.check(address).is_ok());
            failures.failed(address);
        }
        let retry = failures.check(address).unwrap_err();
        assert!((1..=3).contains(&retry), "one failure refills in 3 s, got {retry}");
        assert!(failures.check([192, 0, 2, 2].into()).is_ok(), "other addresses are not blocked");
    }

    #[test]
    fn bursts_are_a_sixth_of_a_minute() {
        assert_eq!(Limit::per_minute(6000), Limit::API);
        assert_eq!(Limit::per_minute(600), Limit::CHAT);
        assert_eq!(Limit::per_minute(1).burst, 1);
    }
}
