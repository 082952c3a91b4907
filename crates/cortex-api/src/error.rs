//! The one error envelope (SPEC §2.3): every failure leaves the API as
//! `{"error": {"code", "message", "details"?}}` with a status fixed by its code.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cortex_jobs::OpError;
use cortex_store::StoreError;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// Machine codes and their HTTP status, in one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    BadRequest,
    ValidationFailed,
    Unauthorized,
    Forbidden,
    /// A cookie-authenticated unsafe request without a valid CSRF token or from another origin.
    CsrfFailed,
    NotFound,
    MethodNotAllowed,
    Conflict,
    IdempotencyConflict,
    InvalidState,
    AlreadyDecided,
    ApprovalExpired,
    AgentNotActive,
    /// The record comes from a markdown file; edit the file (SPEC §9.7).
    ReadOnlySource,
    PayloadTooLarge,
    UnsupportedMediaType,
    Unprocessable,
    UnknownTool,
    ProviderUnavailable,
    RateLimited,
    Unavailable,
    Internal,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::ValidationFailed => "validation_failed",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::CsrfFailed => "csrf_failed",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Conflict => "conflict",
            Self::IdempotencyConflict => "idempotency_conflict",
            Self::InvalidState => "invalid_state",
            Self::AlreadyDecided => "already_decided",
            Self::ApprovalExpired => "approval_expired",
            Self::AgentNotActive => "agent_not_active",
            Self::ReadOnlySource => "read_only_source",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::Unprocessable => "unprocessable",
            Self::UnknownTool => "unknown_tool",
            Self::ProviderUnavailable => "provider_unavailable",
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Self::BadRequest | Self::ValidationFailed => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden | Self::CsrfFailed => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict
            | Self::IdempotencyConflict
            | Self::InvalidState
            | Self::AlreadyDecided
            | Self::ApprovalExpired
            | Self::AgentNotActive
            | Self::ReadOnlySource => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unprocessable | Self::UnknownTool | Self::ProviderUnavailable => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The code a bare status maps to (for responses produced outside handlers, e.g. by layers).
    pub fn for_status(status: StatusCode) -> Code {
        match status.as_u16() {
            401 => Self::Unauthorized,
            403 => Self::Forbidden,
            404 => Self::NotFound,
            405 => Self::MethodNotAllowed,
            409 => Self::Conflict,
            413 => Self::PayloadTooLarge,
            415 => Self::UnsupportedMediaType,
            422 => Self::Unprocessable,
            429 => Self::RateLimited,
            503 => Self::Unavailable,
            400..=499 => Self::BadRequest,
            _ => Self::Internal,
        }
    }
}

/// An API failure.
#[derive(Debug)]
pub struct ApiError {
    pub code: Code,
    pub message: String,
    pub details: Option<Value>,
    /// Seconds for `Retry-After` (429/503).
    pub retry_after: Option<u64>,
}

/// The wire form of an error, documented in the OpenAPI schema.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `validation_failed`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), details: None, retry_after: None }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(Code::BadRequest, message)
    }

    /// 400 naming the offending fields: `details.fields = {field: reason}`.
    pub fn validation(fields: &[(&str, String)]) -> Self {
        let summary = fields.iter().map(|(field, reason)| format!("{field}: {reason}")).collect::<Vec<_>>().join("; ");
        let map: serde_json::Map<String, Value> =
            fields.iter().map(|(field, reason)| ((*field).to_owned(), Value::String(reason.clone()))).collect();
        Self::new(Code::ValidationFailed, summary).with_details(serde_json::json!({ "fields": map }))
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(Code::NotFound, format!("{what} not found"))
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(Code::Forbidden, message)
    }

    pub fn unauthorized() -> Self {
        Self::new(Code::Unauthorized, "missing or invalid credentials")
    }

    pub fn internal() -> Self {
        Self::new(Code::Internal, "internal error; see the server log for this request id")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.code.status();
        if status.is_server_error() && self.code == Code::Internal {
            tracing::error!(message = %self.message, "internal error");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.as_str().to_owned(),
                // Internal causes stay in the log; clients get a generic sentence.
                message: if self.code == Code::Internal { ApiError::internal().message } else { self.message },
                details: self.details,
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after
            && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound { entity } => ApiError::not_found(entity),
            StoreError::Conflict { constraint } => {
                ApiError::new(Code::Conflict, format!("already exists ({constraint})"))
                    .with_details(serde_json::json!({"constraint": constraint}))
            }
            StoreError::IdempotencyConflict { .. } => {
                ApiError::new(Code::IdempotencyConflict, format!("{err}; send a new Idempotency-Key for a new request"))
            }
            StoreError::StaleState { entity } => {
                ApiError::new(Code::InvalidState, format!("{entity} changed state; retry"))
            }
            StoreError::Unavailable(source) => {
                tracing::warn!(error = %source, "database unavailable");
                ApiError {
                    retry_after: Some(1),
                    ..ApiError::new(Code::Unavailable, "the database is unavailable; retry shortly")
                }
            }
            other => ApiError::new(Code::Internal, other.to_string()),
        }
    }
}

impl From<OpError> for ApiError {
    fn from(err: OpError) -> Self {
        match err {
            OpError::NotFound => ApiError::not_found("job"),
            OpError::InvalidState { .. } => ApiError::new(Code::InvalidState, err.to_string()),
            OpError::Store(store) => store.into(),
        }
    }
}

/// Result alias for handlers.
pub type ApiResult<T> = Result<T, ApiError>;
