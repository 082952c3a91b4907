//! The error type of every model call and its mapping onto the job error classes of SPEC §4.6.
//!
//! Variants are the retry behaviour (what the failover client and the job system do next); `code` is the
//! specific reason shown to operators. Messages carry the provider's own words, truncated, never a key.

use std::time::Duration;

use cortex_core::job::{ErrorClass, JobError};

/// A failed model call, already classified.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LlmError {
    /// Worth retrying soon: 429 rate limits, 5xx, connection failures, streams cut short or garbled.
    #[error("{code}: {message}")]
    Transient {
        /// Specific reason (`rate_limit`, `provider_error`, `connection`, `stream_interrupted`, …).
        code: &'static str,
        /// What the provider or transport said, truncated, never containing a key.
        message: String,
        /// The provider's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
    /// Worth retrying later: quota exhausted for now, or every provider's breaker open.
    #[error("{code}: {message}")]
    Resource {
        /// `quota_exceeded` or `providers_unavailable`.
        code: &'static str,
        /// What the provider said, or why nothing could be tried.
        message: String,
        /// The provider's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
    /// The provider went silent (idle timeout) or the call ran past its total budget; also HTTP 408/504.
    #[error("{code}: {message}")]
    Timeout {
        /// Always `timeout`.
        code: &'static str,
        /// Which limit was hit.
        message: String,
    },
    /// 401/403: the credential is wrong or lacks access; the caller marks it `error`.
    #[error("auth_failed (HTTP {status}): {message}")]
    Auth {
        /// 401 or 403 (0 when the key cannot even be sent as a header).
        status: u16,
        /// What the provider said, with any echo of the key redacted.
        message: String,
    },
    /// Any other 4xx: the request itself is wrong and will fail the same way on a retry.
    #[error("{code} (HTTP {status}): {message}")]
    Rejected {
        /// The HTTP status (the equivalent status for errors reported inside a stream; 0 for a
        /// request that could not be built, e.g. an invalid base URL).
        status: u16,
        /// `bad_request`, `model_unavailable`, `request_too_large`, `context_length_exceeded` or
        /// `invalid_provider_config`.
        code: &'static str,
        /// What the provider said.
        message: String,
    },
    /// A candidate names a provider that is not configured (no credential for it).
    #[error("no_credential: no provider named `{provider}` is configured")]
    NoProvider {
        /// The unknown provider name.
        provider: String,
    },
}

impl LlmError {
    /// The job error class (SPEC §4.6) that decides retries.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Transient { .. } => ErrorClass::Transient,
            Self::Resource { .. } => ErrorClass::Resource,
            Self::Timeout { .. } => ErrorClass::Timeout,
            Self::Auth { .. } | Self::Rejected { .. } | Self::NoProvider { .. } => ErrorClass::Permanent,
        }
    }

    /// The machine reason stored as `error.code` (`rate_limit`, `auth_failed`, `model_unavailable`, …).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Transient { code, .. }
            | Self::Resource { code, .. }
            | Self::Timeout { code, .. }
            | Self::Rejected { code, .. } => code,
            Self::Auth { .. } => "auth_failed",
            Self::NoProvider { .. } => "no_credential",
        }
    }

    /// The provider-requested wait (`Retry-After`), when it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Transient { retry_after, .. } | Self::Resource { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The form stored on the job and shown by the API; `Retry-After` is rounded up to whole seconds.
    pub fn to_job_error(&self) -> JobError {
        let retry_after_seconds = self.retry_after().map(|wait| wait.as_secs() + u64::from(wait.subsec_nanos() > 0));
        JobError::new(self.class(), self.code(), self.to_string()).with_retry_after(retry_after_seconds)
    }

    /// Whether the failure says the provider is unhealthy, so it counts against its breaker (SPEC §5.3).
    pub fn counts_against_breaker(&self) -> bool {
        matches!(self.class(), ErrorClass::Transient | ErrorClass::Resource | ErrorClass::Timeout)
    }

    pub(crate) fn transient(code: &'static str, message: impl Into<String>) -> Self {
        Self::Transient { code, message: message.into(), retry_after: None }
    }

    pub(crate) fn timeout(message: impl Into<String>) -> Self {
        Self::Timeout { code: "timeout", message: message.into() }
    }

    /// Replaces every occurrence of `secret` in the message, in case a provider echoes the key back.
    pub(crate) fn redact(self, secret: Option<&str>) -> Self {
        let Some(secret) = secret.filter(|secret| !secret.is_empty()) else {
            return self;
        };
        let clean = |message: String| message.replace(secret, "[redacted]");
        match self {
            Self::Transient { code, message, retry_after } => {
                Self::Transient { code, message: clean(message), retry_after }
            }
            Self::Resource { code, message, retry_after } => {
                Self::Resource { code, message: clean(message), retry_after }
            }
            Self::Timeout { code, message } => Self::Timeout { code, message: clean(message) },
            Self::Auth { status, message } => Self::Auth { status, message: clean(message) },
            Self::Rejected { status, code, message } => Self::Rejected { status, code, message: clean(message) },
            Self::NoProvider { provider } => Self::NoProvider { provider },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_error_carries_class_code_and_rounded_retry_after() {
        let err = LlmError::Transient {
            code: "rate_limit",
            message: "slow down".into(),
            retry_after: Some(Duration::from_millis(1500)),
        };
        let job = err.to_job_error();
        assert_eq!(job.class, ErrorClass::Transient);
        assert_eq!(job.code, "rate_limit");
        assert_eq!(job.retry_after_seconds, Some(2));
        assert!(job.retryable);
        assert!(job.message.contains("slow down"));

        let auth = LlmError::Auth { status: 401, message: "bad key".into() }.to_job_error();
        assert_eq!((auth.class, auth.code.as_str(), auth.retryable), (ErrorClass::Permanent, "auth_failed", false));

        let missing = LlmError::NoProvider { provider: "groq".into() };
        assert_eq!(missing.code(), "no_credential");
        assert_eq!(missing.class(), ErrorClass::Permanent);
    }

    #[test]
    fn redact_removes_the_key_everywhere() {
        let err = LlmError::Auth { status: 401, message: "key sk-123 is wrong; sk-123".into() }.redact(Some("sk-123"));
        assert_eq!(err.to_string(), "auth_failed (HTTP 401): key [redacted] is wrong; [redacted]");
        let untouched = LlmError::timeout("idle").redact(None);
        assert_eq!(untouched, LlmError::timeout("idle"));
    }

    #[test]
    fn only_health_signals_count_against_the_breaker() {
        assert!(LlmError::transient("provider_error", "x").counts_against_breaker());
        assert!(LlmError::timeout("x").counts_against_breaker());
        assert!(!LlmError::Rejected { status: 400, code: "bad_request", message: "x".into() }.counts_against_breaker());
        assert!(!LlmError::Auth { status: 403, message: "x".into() }.counts_against_breaker());
    }
}
