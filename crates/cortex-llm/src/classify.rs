//! Turns provider failure signals — HTTP statuses, error bodies, `Retry-After` headers, in-stream error
//! events — into [`LlmError`]s. Shared by both wire styles: OpenAI and Anthropic use the same
//! `{"error": {"message", "type"|"code"}}` envelope, and compatible servers use looser variants of it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::error::LlmError;

/// Longest provider message kept in an error (characters).
const MAX_MESSAGE_CHARS: usize = 500;

/// Classifies a non-success HTTP response from its status, headers and (possibly non-JSON) body.
pub(crate) fn from_http(status: u16, headers: &HeaderMap, body: &str, now: DateTime<Utc>) -> LlmError {
    let detail = ErrorDetail::from_body(body);
    let retry_after = retry_after_from_headers(headers, now);
    classify(status, &detail, retry_after)
}

/// Classifies an error delivered inside a successful stream (Anthropic `event: error`, or an OpenAI chunk
/// holding `{"error": …}`), where no HTTP status exists: the error type stands in for one.
pub(crate) fn from_stream_error(value: &Value) -> LlmError {
    let detail = ErrorDetail::from_value(value, String::new());
    let status = detail.kind.as_deref().map_or(500, status_for_error_type);
    classify(status, &detail, None)
}

/// Parses a `Retry-After` value: delay-seconds (fractions tolerated) or an HTTP-date relative to `now`.
/// A date in the past means "now" (zero); garbage means no hint.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds.min(86_400.0)));
    }
    let date = DateTime::parse_from_rfc2822(value).ok()?.with_timezone(&Utc);
    Some((date - now).to_std().unwrap_or(Duration::ZERO))
}

/// Reads `retry-after-ms` (OpenAI/Azure, more precise) or `retry-after` (everyone, Anthropic included).
fn retry_after_from_headers(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    if let Some(millis) = header("retry-after-ms").and_then(|value| value.trim().parse::<f64>().ok())
        && millis.is_finite()
        && millis >= 0.0
    {
        return Some(Duration::from_secs_f64(millis.min(86_400_000.0) / 1000.0));
    }
    header("retry-after").and_then(|value| parse_retry_after(value, now))
}

/// The one status table (SPEC §4.6).
fn classify(status: u16, detail: &ErrorDetail, retry_after: Option<Duration>) -> LlmError {
    let message = detail.message.clone();
    let kind = detail.kind.as_deref().unwrap_or_default();
    match status {
        401 | 403 => LlmError::Auth { status, message },
        408 | 504 => LlmError::Timeout { code: "timeout", message },
        429 if kind.contains("insufficient_quota") => {
            LlmError::Resource { code: "quota_exceeded", message, retry_after }
        }
        429 => LlmError::Transient { code: "rate_limit", message, retry_after },
        529 => LlmError::Transient { code: "provider_overloaded", message, retry_after },
        404 => LlmError::Rejected { status, code: "model_unavailable", message },
        413 => LlmError::Rejected { status, code: "request_too_large", message },
        400..=499 => {
            let code = if kind.contains("model_not_found") {
                "model_unavailable"
            } else if kind.contains("context_length_exceeded") {
                "context_length_exceeded"
            } else {
                "bad_request"
            };
            LlmError::Rejected { status, code, message }
        }
        _ => LlmError::Transient { code: "provider_error", message, retry_after },
    }
}

/// Maps the error `type`/`code` strings of both APIs onto the HTTP status they travel with.
fn status_for_error_type(kind: &str) -> u16 {
    match kind {
        "invalid_request_error" => 400,
        "authentication_error" | "invalid_api_key" => 401,
        "permission_error" => 403,
        "not_found_error" | "model_not_found" => 404,
        "request_too_large" => 413,
        "rate_limit_error" | "rate_limit_exceeded" | "insufficient_quota" => 429,
        "overloaded_error" => 529,
        _ => 500,
    }
}

/// What a provider said about its failure.
struct ErrorDetail {
    message: String,
    /// The machine-readable `code` or `type`, whichever is more specific.
    kind: Option<String>,
}

impl ErrorDetail {
    fn from_body(body: &str) -> Self {
        match serde_json::from_str::<Value>(body) {
            Ok(value) => Self::from_value(&value, body.trim().to_owned()),
            Err(_) => Self { message: truncate(body.trim()), kind: None },
        }
    }

    /// Understands `{"error":{"message","code","type"}}`, `{"error":"text"}`, `{"message"}` and `{"detail"}`.
    fn from_value(value: &Value, fallback: String) -> Self {
        let error = value.get("error").unwrap_or(value);
        let text = |field: &str| error.get(field).and_then(Value::as_str).filter(|text| !text.is_empty());
        let message = error
            .as_str()
            .or_else(|| text("message"))
            .or_else(|| text("detail"))
            .map(str::to_owned)
            .unwrap_or(fallback);
        let kind = text("code").or_else(|| text("type")).map(str::to_owned);
        Self { message: truncate(&message), kind }
    }
}

/// Keeps error messages bounded (SPEC: provider text, truncated to about 500 characters).
fn truncate(text: &str) -> String {
    if text.chars().count() <= MAX_MESSAGE_CHARS {
        return text.to_owned();
    }
    let mut short: String = text.chars().take(MAX_MESSAGE_CHARS).collect();
    short.push('…');
    short
}

#[cfg(test)]
mod tests {
    use super::*;
    use cortex_core::job::ErrorClass;
    use reqwest::header::HeaderValue;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z").unwrap().with_timezone(&Utc)
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(parse_retry_after("120", now()), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 1.5 ", now()), Some(Duration::from_millis(1500)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now()), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now()), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now()), None);
        assert_eq!(parse_retry_after("-3", now()), None);
    }

    #[test]
    fn retry_after_ms_wins_over_seconds() {
        let map = headers(&[("retry-after", "20"), ("retry-after-ms", "250")]);
        assert_eq!(retry_after_from_headers(&map, now()), Some(Duration::from_millis(250)));
        let map = headers(&[("Retry-After", "7")]);
        assert_eq!(retry_after_from_headers(&map, now()), Some(Duration::from_secs(7)));
    }

    #[test]
    fn status_table() {
        let cases: &[(u16, &str, ErrorClass, &str)] = &[
            (
                400,
                r#"{"error":{"message":"bad","type":"invalid_request_error"}}"#,
                ErrorClass::Permanent,
                "bad_request",
            ),
            (401, r#"{"error":{"message":"no"}}"#, ErrorClass::Permanent, "auth_failed"),
            (403, "forbidden", ErrorClass::Permanent, "auth_failed"),
            (
                404,
                r#"{"error":{"message":"nope","code":"model_not_found"}}"#,
                ErrorClass::Permanent,
                "model_unavailable",
            ),
            (
                400,
                r#"{"error":{"message":"nope","code":"model_not_found"}}"#,
                ErrorClass::Permanent,
                "model_unavailable",
            ),
            (422, r#"{"detail":"bad field"}"#, ErrorClass::Permanent, "bad_request"),
            (408, "", ErrorClass::Timeout, "timeout"),
            (429, r#"{"error":{"message":"slow","type":"rate_limit_error"}}"#, ErrorClass::Transient, "rate_limit"),
            (429, r#"{"error":{"message":"pay","code":"insufficient_quota"}}"#, ErrorClass::Resource, "quota_exceeded"),
            (500, "<html>oops</html>", ErrorClass::Transient, "provider_error"),
            (502, "", ErrorClass::Transient, "provider_error"),
            (503, "", ErrorClass::Transient, "provider_error"),
            (
                529,
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
                ErrorClass::Transient,
                "provider_overloaded",
            ),
        ];
        for (status, body, class, code) in cases {
            let err = from_http(*status, &HeaderMap::new(), body, now());
            assert_eq!((err.class(), err.code()), (*class, *code), "status {status} body {body}");
        }
    }

    #[test]
    fn messages_come_from_the_body_and_are_truncated() {
        let err = from_http(400, &HeaderMap::new(), r#"{"error":{"message":"max_tokens too big"}}"#, now());
        assert!(err.to_string().contains("max_tokens too big"));
        let err = from_http(400, &HeaderMap::new(), r#"{"error":"model not loaded"}"#, now());
        assert!(err.to_string().contains("model not loaded"));
        let long = "x".repeat(2000);
        let err = from_http(500, &HeaderMap::new(), &long, now());
        let LlmError::Transient { message, .. } = err else { panic!("expected transient") };
        assert_eq!(message.chars().count(), MAX_MESSAGE_CHARS + 1);
    }

    #[test]
    fn retry_after_rides_on_rate_limits() {
        let err = from_http(429, &headers(&[("retry-after", "3")]), "{}", now());
        assert_eq!(err.retry_after(), Some(Duration::from_secs(3)));
    }

    #[test]
    fn stream_errors_classify_by_type() {
        let overloaded = serde_json::json!({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}});
        assert_eq!(from_stream_error(&overloaded).class(), ErrorClass::Transient);
        let invalid = serde_json::json!({"error":{"type":"invalid_request_error","message":"bad"}});
        assert_eq!(from_stream_error(&invalid).code(), "bad_request");
        let unknown = serde_json::json!({"error":{"message":"something"}});
        assert_eq!(from_stream_error(&unknown).code(), "provider_error");
    }
}
