//! A thin Discord REST client over our reqwest: `{base}/<path>` with `Authorization: Bot <token>`,
//! errors read from `{message, code}`, 429 `retry_after` (body, seconds with fractions) or
//! `Retry-After`, and per-route buckets: when a route answers `X-RateLimit-Remaining: 0` the next call
//! on it waits `X-RateLimit-Reset-After` first (or reports the wait as a retry hint when it is long).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;
use tokio::time::Instant;

use crate::adapter::{AdapterError, SendError};

/// Timeout of one REST call.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// A bucket wait up to this long is slept through; a longer one is handed back as a retry hint.
const MAX_INLINE_WAIT: Duration = Duration::from_secs(5);

/// Why a REST call failed.
#[derive(Debug, Clone)]
pub(crate) enum RestError {
    Network(String),
    Api { status: u16, code: Option<i64>, message: String, retry_after: Option<Duration> },
    Decode(String),
}

impl RestError {
    fn description(&self) -> String {
        match self {
            RestError::Network(message) => format!("Discord unreachable: {message}"),
            RestError::Api { status, code: Some(code), message, .. } => {
                format!("Discord error {status} ({code}): {message}")
            }
            RestError::Api { status, message, .. } => format!("Discord error {status}: {message}"),
            RestError::Decode(message) => format!("unreadable Discord answer: {message}"),
        }
    }
}

impl From<RestError> for SendError {
    fn from(err: RestError) -> Self {
        let message = err.description();
        match err {
            RestError::Network(_) | RestError::Decode(_) => SendError::transient(message),
            RestError::Api { status: 429, retry_after, .. } => {
                SendError { message, code: Some("rate_limited".into()), retry_after, permanent: false }
            }
            RestError::Api { status, .. } if status >= 500 => SendError::transient(message),
            RestError::Api { status: 401, .. } => {
                SendError { message, code: Some("unauthorized".into()), retry_after: None, permanent: true }
            }
            RestError::Api { .. } => SendError::permanent(message),
        }
    }
}

impl From<RestError> for AdapterError {
    fn from(err: RestError) -> Self {
        let message = err.description();
        match err {
            RestError::Api { status: 401 | 403, .. } => AdapterError::Unauthorized(message),
            RestError::Decode(_) => AdapterError::Protocol(message),
            _ => AdapterError::Unavailable(message),
        }
    }
}

/// One bot's REST endpoint.
pub(crate) struct Rest {
    http: reqwest::Client,
    base: String,
    /// `Bot <token>`; never logged.
    authorization: String,
    /// Route (`METHOD path`) → when its bucket refills.
    blocked: Mutex<HashMap<String, Instant>>,
}

impl std::fmt::Debug for Rest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rest").field("base", &self.base).finish_non_exhaustive()
    }
}

fn seconds(value: &str) -> Option<Duration> {
    value.trim().parse::<f64>().ok().filter(|secs| secs.is_finite() && *secs >= 0.0).map(Duration::from_secs_f64)
}

impl Rest {
    pub fn new(http: reqwest::Client, base: &str, token: &str) -> Self {
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            authorization: format!("Bot {token}"),
            blocked: Mutex::new(HashMap::new()),
        }
    }

    /// Calls `method path` with an optional JSON body; returns the JSON answer (`Null` for 204).
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value, RestError> {
        let route = format!("{method} {path}");
        let blocked_until = self.blocked.lock().unwrap_or_else(PoisonError::into_inner).get(&route).copied();
        if let Some(until) = blocked_until {
            let wait = until.saturating_duration_since(Instant::now());
            if wait > MAX_INLINE_WAIT {
                return Err(RestError::Api {
                    status: 429,
                    code: None,
                    message: "route rate limit exhausted".into(),
                    retry_after: Some(wait),
                });
            }
            tokio::time::sleep(wait).await;
        }
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header(reqwest::header::AUTHORIZATION, &self.authorization)
            .timeout(CALL_TIMEOUT);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|err| RestError::Network(err.without_url().to_string()))?;
        let status = response.status().as_u16();
        let header = |name: &str| response.headers().get(name).and_then(|value| value.to_str().ok()).map(str::to_owned);
        let retry_header = header("retry-after").as_deref().and_then(seconds);
        if header("x-ratelimit-remaining").as_deref().map(str::trim) == Some("0")
            && let Some(reset) = header("x-ratelimit-reset-after").as_deref().and_then(seconds)
        {
            self.blocked.lock().unwrap_or_else(PoisonError::into_inner).insert(route, Instant::now() + reset);
        }
        let bytes = response.bytes().await.map_err(|err| RestError::Network(err.without_url().to_string()))?;
        if status < 300 {
            if bytes.is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_slice(&bytes).map_err(|err| RestError::Decode(err.to_string()));
        }
        let error: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let body_retry =
            error.get("retry_after").and_then(Value::as_f64).filter(|secs| secs.is_finite() && *secs >= 0.0);
        let retry_after = match (body_retry.map(Duration::from_secs_f64), retry_header) {
            (Some(body), Some(header)) => Some(body.max(header)),
            (body, header) => body.or(header),
        };
        Err(RestError::Api {
            status,
            code: error.get("code").and_then(Value::as_i64),
            message: error
                .get("message")
                .and_then(Value::as_str)
                .map_or_else(|| format!("HTTP {status}"), str::to_owned),
            retry_after,
        })
    }
}
