//! A small circuit breaker shared by LLM providers (SPEC §5.3) and MCP servers (SPEC §6.4).
//!
//! Closed → (`failure_threshold` failures within `window`) → Open → (`open_for` elapsed) → HalfOpen, which
//! admits `half_open_probes` calls at a time; `close_after` consecutive successes close it, any failure
//! re-opens it. Time is passed in so the breaker is deterministic under test.

use std::collections::VecDeque;

use chrono::Duration;

use crate::Timestamp;

crate::string_enum! {
    /// Breaker states as reported in health endpoints and metrics.
    pub enum BreakerState {
        Closed = "closed",
        Open = "open",
        HalfOpen = "half_open",
    }
}

/// Thresholds of one breaker.
#[derive(Debug, Clone, Copy)]
pub struct BreakerConfig {
    pub failure_threshold: u32,
    pub window: Duration,
    pub open_for: Duration,
    pub half_open_probes: u32,
    pub close_after: u32,
}

impl BreakerConfig {
    /// LLM providers: 5 failures / 60 s → open 30 s → 1 probe → 3 successes.
    pub const PROVIDER: Self = Self {
        failure_threshold: 5,
        window: Duration::seconds(60),
        open_for: Duration::seconds(30),
        half_open_probes: 1,
        close_after: 3,
    };
    /// MCP servers: 3 failures / 120 s → open 30 s → 1 probe → 2 successes.
    pub const MCP: Self = Self {
        failure_threshold: 3,
        window: Duration::seconds(120),
        open_for: Duration::seconds(30),
        half_open_probes: 1,
        close_after: 2,
    };
}

/// The state of one breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    config: BreakerConfig,
    state: BreakerState,
    recent_failures: VecDeque<Timestamp>,
    opened_at: Option<Timestamp>,
    probes_in_flight: u32,
    successes_in_half_open: u32,
}

/// A state change worth an event and a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerTransition {
    pub from: BreakerState,
    pub to: BreakerState,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            state: BreakerState::Closed,
            recent_failures: VecDeque::new(),
            opened_at: None,
            probes_in_flight: 0,
            successes_in_half_open: 0,
        }
    }

    /// Current state, moving Open → HalfOpen when the open period is over.
    pub fn state(&mut self, now: Timestamp) -> BreakerState {
        if self.state == BreakerState::Open && self.opened_at.is_some_and(|opened| now - opened >= self.config.open_for)
        {
            self.state = BreakerState::HalfOpen;
            self.probes_in_flight = 0;
            self.successes_in_half_open = 0;
        }
        self.state
    }

    /// Asks to make a call; `false` means skip this target. A `true` in half-open uses up a probe slot.
    pub fn try_acquire(&mut self, now: Timestamp) -> bool {
        match self.state(now) {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen => {
                if self.probes_in_flight < self.config.half_open_probes {
                    self.probes_in_flight += 1;
                    true
                } else {
                    false
                }
            }
        }
    }

    pub fn record_success(&mut self, now: Timestamp) -> Option<BreakerTransition> {
        match self.state(now) {
            BreakerState::HalfOpen => {
                self.probes_in_flight = self.probes_in_flight.saturating_sub(1);
                self.successes_in_half_open += 1;
                if self.successes_in_half_open >= self.config.close_after {
                    self.recent_failures.clear();
                    return Some(self.move_to(BreakerState::Closed, now));
                }
                None
            }
            _ => None,
        }
    }

    /// Records a countable failure (transient, resource or timeout).
    pub fn record_failure(&mut self, now: Timestamp) -> Option<BreakerTransition> {
        match self.state(now) {
            BreakerState::HalfOpen => Some(self.move_to(BreakerState::Open, now)),
            BreakerState::Open => None,
            BreakerState::Closed => {
                self.recent_failures.push_back(now);
                while self.recent_failures.front().is_some_and(|first| now - *first > self.config.window) {
                    self.recent_failures.pop_front();
                }
                if self.recent_failures.len() as u32 >= self.config.failure_threshold {
                    return Some(self.move_to(BreakerState::Open, now));
                }
                None
            }
        }
    }

    fn move_to(&mut self, to: BreakerState, now: Timestamp) -> BreakerTransition {
        let from = self.state;
        self.state = to;
        self.probes_in_flight = 0;
        self.successes_in_half_open = 0;
        self.opened_at = (to == BreakerState::Open).then_some(now);
        if to == BreakerState::Open {
            self.recent_failures.clear();
        }
        BreakerTransition { from, to }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trips_probes_and_closes() {
        let start = chrono::Utc::now();
        let mut breaker = Breaker::new(BreakerConfig::PROVIDER);
        for second in 0..4 {
            assert!(breaker.record_failure(start + Duration::seconds(second)).is_none());
        }
        let trip = breaker.record_failure(start + Duration::seconds(4)).unwrap();
        assert_eq!(trip.to, BreakerState::Open);
        assert!(!breaker.try_acquire(start + Duration::seconds(10)));

        let later = start + Duration::seconds(40);
        assert!(breaker.try_acquire(later), "one half-open probe");
        assert!(!breaker.try_acquire(later), "only one probe at a time");
        assert!(breaker.record_success(later).is_none());
        assert!(breaker.try_acquire(later));
        assert!(breaker.record_success(later).is_none());
        assert!(breaker.try_acquire(later));
        assert_eq!(breaker.record_success(later).unwrap().to, BreakerState::Closed);
        assert!(breaker.try_acquire(later));
    }

    #[test]
    fn failures_outside_the_window_do_not_count() {
        let start = chrono::Utc::now();
        let mut breaker = Breaker::new(BreakerConfig::PROVIDER);
        for minute in 0..10 {
            assert!(breaker.record_failure(start + Duration::minutes(minute)).is_none());
        }
        assert_eq!(breaker.state(start + Duration::minutes(10)), BreakerState::Closed);
    }

    #[test]
    fn half_open_failure_reopens() {
        let start = chrono::Utc::now();
        let mut breaker = Breaker::new(BreakerConfig::MCP);
        for _ in 0..3 {
            breaker.record_failure(start);
        }
        let later = start + Duration::seconds(31);
        assert!(breaker.try_acquire(later));
        assert_eq!(breaker.record_failure(later).unwrap().to, BreakerState::Open);
    }
}
