//! Per-request plumbing: request ids, tracing spans, HTTP metrics and the guarantee that every error
//! response (including those made by layers such as the body limit or the method router) carries the
//! JSON error envelope.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use crate::error::{ApiError, Code};

/// Header carrying the request id in both directions.
pub const REQUEST_ID: &str = "x-request-id";

/// Assigns (or echoes) the request id, opens the request span and records metrics.
pub async fn request_context(request: Request, next: Next) -> Response {
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .filter(|id| is_acceptable_request_id(id))
        .map(str::to_owned)
        .unwrap_or_else(|| cortex_core::new_id().to_string());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().clone();
    // Only the path is logged: query strings may carry user data.
    let span = tracing::info_span!("http", %method, path = %request.uri().path(), %route, request_id = %request_id, principal = tracing::field::Empty);
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    span.in_scope(|| {
        if status.is_server_error() {
            tracing::error!(
                status = status.as_u16(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "request failed"
            );
        } else {
            tracing::debug!(status = status.as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "request");
        }
    });
    metrics::counter!("cortex_http_requests_total", "route" => route.clone(), "method" => method.to_string(), "status" => status.as_u16().to_string())
        .increment(1);
    metrics::histogram!("cortex_http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

fn is_acceptable_request_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// Rewrites non-JSON error responses into the envelope, keeping headers such as `Allow`.
pub async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if status.as_u16() < 400 || is_json {
        return response;
    }
    let code = Code::for_status(status);
    let message = match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            "method not allowed on this route; the Allow header lists the allowed ones".to_owned()
        }
        StatusCode::PAYLOAD_TOO_LARGE => "request body is larger than the 1 MiB limit".to_owned(),
        StatusCode::NOT_FOUND => "no such route".to_owned(),
        other => other.canonical_reason().unwrap_or("error").to_lowercase(),
    };
    let (mut parts, _) = response.into_parts();
    let rebuilt = ApiError::new(code, message).into_response();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let (_, body) = rebuilt.into_parts();
    Response::from_parts(parts, Body::new(body))
}

/// Fallback for unknown routes.
pub async fn not_found() -> ApiError {
    ApiError::new(Code::NotFound, "no such route")
}
