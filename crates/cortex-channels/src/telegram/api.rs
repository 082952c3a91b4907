//! A thin Bot API client over our reqwest: `POST {base}/bot<token>/<method>` with a JSON body, the
//! `{ok, result | description, error_code, parameters.retry_after}` envelope read leniently. Errors
//! never carry the URL (it contains the token).

use std::time::Duration;

use serde_json::Value;

use crate::adapter::{AdapterError, SendError};
use crate::telegram::wire::Envelope;

/// Why a Bot API call failed.
#[derive(Debug, Clone)]
pub(crate) enum ApiError {
    /// No answer (connect, timeout, reset).
    Network(String),
    /// The API answered with an error.
    Api { status: u16, description: String, retry_after: Option<Duration> },
    /// The answer was not the envelope.
    Decode(String),
}

impl ApiError {
    fn description(&self) -> String {
        match self {
            ApiError::Network(message) => format!("Telegram unreachable: {message}"),
            ApiError::Api { status, description, .. } => format!("Telegram error {status}: {description}"),
            ApiError::Decode(message) => format!("unreadable Telegram answer: {message}"),
        }
    }

    /// True when the text's formatting was refused (resend as plain text).
    pub fn is_parse_error(&self) -> bool {
        matches!(self, ApiError::Api { status: 400, description, .. } if description.contains("can't parse entities"))
    }

    /// True for "message is not modified" (an edit that changes nothing succeeded already).
    pub fn is_not_modified(&self) -> bool {
        matches!(self, ApiError::Api { status: 400, description, .. } if description.contains("message is not modified"))
    }
}

impl From<ApiError> for SendError {
    fn from(err: ApiError) -> Self {
        let message = err.description();
        match err {
            ApiError::Network(_) | ApiError::Decode(_) => SendError::transient(message),
            ApiError::Api { status: 429, retry_after, .. } => {
                SendError { message, code: Some("rate_limited".into()), retry_after, permanent: false }
            }
            ApiError::Api { status, .. } if status >= 500 => SendError::transient(message),
            ApiError::Api { status: 401, .. } => {
                SendError { message, code: Some("unauthorized".into()), retry_after: None, permanent: true }
            }
            ApiError::Api { .. } => SendError::permanent(message),
        }
    }
}

impl From<ApiError> for AdapterError {
    fn from(err: ApiError) -> Self {
        let message = err.description();
        match err {
            ApiError::Api { status: 401 | 404, .. } => AdapterError::Unauthorized(message),
            ApiError::Decode(_) => AdapterError::Protocol(message),
            _ => AdapterError::Unavailable(message),
        }
    }
}

/// One bot's API endpoint.
#[derive(Clone)]
pub(crate) struct BotApi {
    http: reqwest::Client,
    /// `{base}/bot<token>/`; never logged.
    prefix: String,
}

impl std::fmt::Debug for BotApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BotApi { .. }")
    }
}

impl BotApi {
    pub fn new(http: reqwest::Client, api_base: &str, token: &str) -> Self {
        Self { http, prefix: format!("{}/bot{token}/", api_base.trim_end_matches('/')) }
    }

    /// Calls `method` and returns its `result` (JSON `null` when the API sent none).
    pub async fn call(&self, method: &str, body: &Value, timeout: Duration) -> Result<Value, ApiError> {
        let response = self
            .http
            .post(format!("{}{method}", self.prefix))
            .json(body)
            .timeout(timeout)
            .send()
            .await
            .map_err(|err| ApiError::Network(err.without_url().to_string()))?;
        let status = response.status().as_u16();
        let retry_header = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok());
        let bytes = response.bytes().await.map_err(|err| ApiError::Network(err.without_url().to_string()))?;
        let envelope: Envelope = serde_json::from_slice(&bytes).map_err(|err| {
            if status >= 400 {
                ApiError::Api {
                    status,
                    description: format!("HTTP {status}"),
                    retry_after: retry_header.map(Duration::from_secs),
                }
            } else {
                ApiError::Decode(err.to_string())
            }
        })?;
        let ok = envelope.ok.unwrap_or(status < 400 && envelope.message.is_none());
        if ok && status < 400 {
            return Ok(envelope.result.unwrap_or(Value::Null));
        }
        let code = envelope.error_code.and_then(|code| u16::try_from(code).ok()).filter(|code| *code >= 400);
        let retry_after = envelope.parameters.and_then(|p| p.retry_after).or(retry_header).map(Duration::from_secs);
        Err(ApiError::Api {
            status: code.unwrap_or(if status >= 400 { status } else { 400 }),
            description: envelope.description.or(envelope.message).unwrap_or_else(|| "no description".into()),
            retry_after,
        })
    }
}
