//! A thin Slack Web API client: `POST {base}/<method>` with a JSON body and `Authorization: Bearer`,
//! the `{ok, error}` envelope (failures arrive with HTTP 200), 429 with `Retry-After`. Errors never carry
//! a token.

use std::time::Duration;

use serde_json::Value;

use crate::adapter::{AdapterError, SendError};

const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a Web API call failed.
#[derive(Debug, Clone)]
pub(crate) enum ApiError {
    Network(String),
    /// `status` is the HTTP status; `error` Slack's error code (`channel_not_found`, `ratelimited`, …).
    Api {
        status: u16,
        error: String,
        retry_after: Option<Duration>,
    },
    Decode(String),
}

/// Slack error codes that mean the credentials are bad.
const AUTH_ERRORS: [&str; 5] = ["invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired"];

impl ApiError {
    fn description(&self) -> String {
        match self {
            ApiError::Network(message) => format!("Slack unreachable: {message}"),
            ApiError::Api { status, error, .. } => format!("Slack error {status}: {error}"),
            ApiError::Decode(message) => format!("unreadable Slack answer: {message}"),
        }
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
            ApiError::Api { error, .. } if error == "ratelimited" => {
                SendError { message, code: Some("rate_limited".into()), retry_after: None, permanent: false }
            }
            ApiError::Api { error, .. } if AUTH_ERRORS.contains(&error.as_str()) => {
                SendError { message, code: Some("unauthorized".into()), retry_after: None, permanent: true }
            }
            ApiError::Api { error, .. }
                if matches!(
                    error.as_str(),
                    "internal_error" | "fatal_error" | "service_unavailable" | "request_timeout"
                ) =>
            {
                SendError::transient(message)
            }
            ApiError::Api { .. } => SendError::permanent(message),
        }
    }
}

impl From<ApiError> for AdapterError {
    fn from(err: ApiError) -> Self {
        let message = err.description();
        match err {
            ApiError::Api { status: 401 | 403, .. } => AdapterError::Unauthorized(message),
            ApiError::Api { error, .. } if AUTH_ERRORS.contains(&error.as_str()) => AdapterError::Unauthorized(message),
            ApiError::Decode(_) => AdapterError::Protocol(message),
            _ => AdapterError::Unavailable(message),
        }
    }
}

/// One app's Web API endpoint.
pub(crate) struct WebApi {
    http: reqwest::Client,
    base: String,
    /// `Bearer xoxb-…`; never logged.
    bot_authorization: String,
}

impl WebApi {
    pub fn new(http: reqwest::Client, base: &str, bot_token: &str) -> Self {
        Self { http, base: base.trim_end_matches('/').to_owned(), bot_authorization: format!("Bearer {bot_token}") }
    }

    /// Calls `method` with the bot token, or with `token` (the app-level token for
    /// `apps.connections.open`); returns the whole answer when `ok`.
    pub async fn call(&self, method: &str, body: &Value, token: Option<&str>) -> Result<Value, ApiError> {
        let authorization = token.map_or_else(|| self.bot_authorization.clone(), |token| format!("Bearer {token}"));
        let response = self
            .http
            .post(format!("{}/{method}", self.base))
            .header(reqwest::header::AUTHORIZATION, authorization)
            .json(body)
            .timeout(CALL_TIMEOUT)
            .send()
            .await
            .map_err(|err| ApiError::Network(err.without_url().to_string()))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = response.bytes().await.map_err(|err| ApiError::Network(err.without_url().to_string()))?;
        let answer: Value = match serde_json::from_slice(&bytes) {
            Ok(answer) => answer,
            Err(_) if status >= 400 => {
                return Err(ApiError::Api { status, error: format!("HTTP {status}"), retry_after });
            }
            Err(err) => return Err(ApiError::Decode(err.to_string())),
        };
        if status < 400 && answer["ok"] == true {
            return Ok(answer);
        }
        let error = answer["error"].as_str().map_or_else(|| format!("HTTP {status}"), str::to_owned);
        Err(ApiError::Api { status, error, retry_after })
    }
}
