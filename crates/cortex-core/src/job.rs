//! The job state machine (SPEC §4.1), error classes and the retry policy (SPEC §4.6).
//!
//! `JobStatus::can_transition_to` is the single code-side authority on legal moves; the storage layer
//! seeds the same pairs into a `job_transition` table that a database trigger checks, and a test keeps
//! the two identical.

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

crate::string_enum! {
    /// Lifecycle of a job. `completed` is final; `failed`, `timed_out` and `dead_letter` are resting
    /// states that only a retry leaves.
    pub enum JobStatus {
        Pending = "pending",
        Scheduled = "scheduled",
        Running = "running",
        WaitingForApproval = "waiting_for_approval",
        Completed = "completed",
        Failed = "failed",
        TimedOut = "timed_out",
        Retrying = "retrying",
        DeadLetter = "dead_letter",
    }
}

/// Every legal `(from, to)` pair. Anything else is rejected in code and by the database.
pub const TRANSITIONS: &[(JobStatus, JobStatus)] = {
    use JobStatus::*;
    &[
        (Pending, Scheduled),
        (Pending, Failed),
        (Scheduled, Running),
        (Scheduled, Failed),
        (Running, Completed),
        (Running, Failed),
        (Running, TimedOut),
        (Running, WaitingForApproval),
        (Running, Pending),
        (Running, Scheduled),
        (WaitingForApproval, Scheduled),
        (WaitingForApproval, Failed),
        (WaitingForApproval, TimedOut),
        (Failed, Retrying),
        (Failed, DeadLetter),
        (TimedOut, Retrying),
        (TimedOut, DeadLetter),
        (Retrying, Scheduled),
        (Retrying, Failed),
        (DeadLetter, Retrying),
    ]
};

impl JobStatus {
    pub fn can_transition_to(self, to: JobStatus) -> bool {
        TRANSITIONS.contains(&(self, to))
    }

    /// No work will happen without a human (or retry) acting: the API calls these "terminal".
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::TimedOut | Self::DeadLetter)
    }

    /// States in which a job still occupies its session (later jobs of the session wait as `pending`).
    pub fn holds_session(self) -> bool {
        matches!(self, Self::Scheduled | Self::Running | Self::WaitingForApproval | Self::Retrying)
    }

    /// States from which an operator may ask for a retry.
    pub fn is_retryable_by_operator(self) -> bool {
        matches!(self, Self::Failed | Self::TimedOut | Self::DeadLetter)
    }
}

crate::string_enum! {
    /// What created a job; decides which handler runs it.
    pub enum JobKind {
        Chat = "chat",
        Task = "task",
        Scheduled = "scheduled",
        Subagent = "subagent",
        Replay = "replay",
        Heartbeat = "heartbeat",
        MemoryExtract = "memory_extract",
        ContentPublish = "content_publish",
    }
}

crate::string_enum! {
    /// Error classes decide whether a failure is retried (SPEC §4.6).
    pub enum ErrorClass {
        Transient = "transient",
        Timeout = "timeout",
        Resource = "resource",
        Permanent = "permanent",
        Unknown = "unknown",
    }
}

impl ErrorClass {
    pub fn is_retryable(self) -> bool {
        !matches!(self, Self::Permanent)
    }

    /// Whether a job's final failure of this class counts toward its agent's breaker (SPEC §5.7):
    /// `transient`, `timeout`, `resource` and `unknown` do; `permanent` ones are configuration errors
    /// (`no_credential`, `context_budget_exceeded`, budgets, cancellation) that quarantine would not fix.
    pub fn counts_toward_agent_breaker(self) -> bool {
        !matches!(self, Self::Permanent)
    }
}

/// A classified failure as stored on the job and shown by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobError {
    pub class: ErrorClass,
    /// Specific machine reason, e.g. `rate_limit`, `worker_lost`, `cancelled`.
    pub code: String,
    pub message: String,
    /// False overrides the class for failures that must never be retried automatically
    /// (cancellation, expired approvals).
    pub retryable: bool,
    /// Server-requested minimum delay before retrying (`Retry-After`), in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
}

impl JobError {
    pub fn new(class: ErrorClass, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            class,
            code: code.into(),
            message: message.into(),
            retryable: class.is_retryable(),
            retry_after_seconds: None,
        }
    }

    /// A failure that is recorded but never retried automatically.
    pub fn final_(class: ErrorClass, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { retryable: false, ..Self::new(class, code, message) }
    }

    pub fn cancelled() -> Self {
        Self::final_(ErrorClass::Permanent, "cancelled", "the job was cancelled")
    }

    pub fn with_retry_after(mut self, seconds: Option<u64>) -> Self {
        self.retry_after_seconds = seconds;
        self
    }
}

/// What happens to a job after a failed or timed-out attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RetryDecision {
    /// Move to `retrying`, runnable again after `delay`; `next_timeout_seconds` applies to the next attempt.
    Retry { delay: Duration, next_timeout_seconds: u32 },
    /// Retryable but out of attempts: `dead_letter`.
    DeadLetter,
    /// Not retryable: stay in the resting state.
    Rest,
}

/// Upper bound of the exponential backoff.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Minimum delay for `resource` errors.
pub const RESOURCE_MIN_DELAY: Duration = Duration::from_secs(30);
/// Longest allowed attempt.
pub const MAX_TIMEOUT_SECONDS: u32 = 3600;

/// `min(1 s × 2^attempt, 300 s)` before jitter; `attempt` is the 1-based number of the failed attempt.
pub fn base_backoff(attempt: u32) -> Duration {
    let seconds = 1u64.checked_shl(attempt.min(20)).unwrap_or(u64::MAX);
    Duration::from_secs(seconds).min(MAX_BACKOFF)
}

/// Multiplies by a uniform factor in [0.75, 1.25] so that a failing batch does not retry in lock-step.
pub fn jitter(delay: Duration, rng: &mut impl Rng) -> Duration {
    delay.mul_f64(rng.random_range(0.75..=1.25))
}

/// Decides the fate of a failed attempt (SPEC §4.6). `attempt` is the number of the attempt that failed.
pub fn decide_retry(
    error: &JobError,
    attempt: u32,
    max_attempts: u32,
    timeout_seconds: u32,
    rng: &mut impl Rng,
) -> RetryDecision {
    if !error.retryable {
        return RetryDecision::Rest;
    }
    // `unknown` failures are retried once only.
    let allowed_attempts = if error.class == ErrorClass::Unknown { max_attempts.min(2) } else { max_attempts };
    if attempt >= allowed_attempts {
        return RetryDecision::DeadLetter;
    }
    let mut delay = if error.code == "worker_lost" {
        // A crashed worker is not the job's fault: come back quickly (SPEC §4.5, first retry ≤ 2 s).
        jitter(Duration::from_secs(1), rng)
    } else {
        jitter(base_backoff(attempt), rng)
    };
    let mut next_timeout_seconds = timeout_seconds;
    match error.class {
        ErrorClass::Timeout => {
            next_timeout_seconds = ((timeout_seconds as f64) * 1.5).round().min(MAX_TIMEOUT_SECONDS as f64) as u32;
        }
        ErrorClass::Resource => {
            let retry_after = Duration::from_secs(error.retry_after_seconds.unwrap_or(0));
            delay = delay.max(retry_after).max(RESOURCE_MIN_DELAY);
        }
        _ => {
            if let Some(seconds) = error.retry_after_seconds {
                delay = delay.max(Duration::from_secs(seconds));
            }
        }
    }
    RetryDecision::Retry { delay, next_timeout_seconds }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn transitions_follow_the_spec_table() {
        use JobStatus::*;
        assert!(Scheduled.can_transition_to(Running));
        assert!(WaitingForApproval.can_transition_to(Scheduled));
        assert!(!Completed.can_transition_to(Retrying));
        assert!(!Running.can_transition_to(Running));
        assert!(!Pending.can_transition_to(Running));
        for status in JobStatus::ALL {
            assert!(!Completed.can_transition_to(*status), "completed is final");
        }
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(base_backoff(1), Duration::from_secs(2));
        assert_eq!(base_backoff(2), Duration::from_secs(4));
        assert_eq!(base_backoff(8), Duration::from_secs(256));
        assert_eq!(base_backoff(9), MAX_BACKOFF);
        assert_eq!(base_backoff(64), MAX_BACKOFF);
    }

    #[test]
    fn jitter_stays_within_a_quarter() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for attempt in 1..12 {
            let base = base_backoff(attempt);
            for _ in 0..200 {
                let delay = jitter(base, &mut rng);
                assert!(delay >= base.mul_f64(0.75) && delay <= base.mul_f64(1.25));
            }
        }
    }

    #[test]
    fn retry_decisions_follow_classes() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let transient = JobError::new(ErrorClass::Transient, "rate_limit", "x");
        assert!(matches!(decide_retry(&transient, 1, 3, 300, &mut rng), RetryDecision::Retry { .. }));
        assert_eq!(decide_retry(&transient, 3, 3, 300, &mut rng), RetryDecision::DeadLetter);

        let permanent = JobError::new(ErrorClass::Permanent, "auth_failed", "x");
        assert_eq!(decide_retry(&permanent, 1, 3, 300, &mut rng), RetryDecision::Rest);
        assert_eq!(decide_retry(&JobError::cancelled(), 1, 3, 300, &mut rng), RetryDecision::Rest);

        let unknown = JobError::new(ErrorClass::Unknown, "boom", "x");
        assert!(matches!(decide_retry(&unknown, 1, 5, 300, &mut rng), RetryDecision::Retry { .. }));
        assert_eq!(decide_retry(&unknown, 2, 5, 300, &mut rng), RetryDecision::DeadLetter);

        let timeout = JobError::new(ErrorClass::Timeout, "attempt_timeout", "x");
        match decide_retry(&timeout, 1, 3, 3000, &mut rng) {
            RetryDecision::Retry { next_timeout_seconds, .. } => assert_eq!(next_timeout_seconds, MAX_TIMEOUT_SECONDS),
            other => panic!("unexpected {other:?}"),
        }

        let resource = JobError::new(ErrorClass::Resource, "quota", "x").with_retry_after(Some(90));
        match decide_retry(&resource, 1, 3, 300, &mut rng) {
            RetryDecision::Retry { delay, .. } => assert_eq!(delay, Duration::from_secs(90)),
            other => panic!("unexpected {other:?}"),
        }

        let lost = JobError::new(ErrorClass::Timeout, "worker_lost", "x");
        match decide_retry(&lost, 1, 3, 300, &mut rng) {
            RetryDecision::Retry { delay, .. } => assert!(delay <= Duration::from_secs(2)),
            other => panic!("unexpected {other:?}"),
        }
    }
}
