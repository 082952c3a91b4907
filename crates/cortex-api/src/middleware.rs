//! Per-request plumbing: request ids, tracing spans, HTTP metrics and the guarantee that every error
//! response (including those made by layers such as the body limit or the method router) carries the
//! JSON error envelope.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use tracing::Instrument;

use crate::error::{ApiError, Code};
use crate::server::OverCap;

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
        .is_some_and(|value| value.starts_with("application/json") || value.starts_with("text/html"));
    // Dashboard pages render their own errors in words (HTML); everything else gets the JSON envelope.
    if status.as_u16() < 400 || is_json {
        return response;
    }
    let code = Code::for_status(status);
    let message = match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            "method not allowed on this route; the Allow header lists the allowed ones".to_owned()
        }
        StatusCode::PAYLOAD_TOO_LARGE => "request body is larger than the route's limit".to_owned(),
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

/// Routes a connection of the ops reserve may use (see [`crate::server`]).
const OPS_ROUTES: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// On a connection beyond the cap, answers only the operations routes; everything else gets 503 and the
/// connection is closed, so the slot goes back to probes.
pub async fn ops_reserve(request: Request, next: Next) -> Response {
    if request.extensions().get::<OverCap>().is_none() || OPS_ROUTES.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let error = ApiError {
        retry_after: Some(1),
        ..ApiError::new(Code::Unavailable, "the server is at its connection limit; retry shortly")
    };
    closing(error.into_response())
}

/// Bodies up to this many times the limit are read and discarded before the 413 is sent.
const DRAIN_FACTOR: usize = 16;
/// Longest time spent discarding an oversized body.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Answers a body whose declared length exceeds `limit` with 413 — after reading and discarding it (up
/// to [`DRAIN_FACTOR`] × the limit), because closing a socket with unread data resets it, and a client
/// still sending would see the reset instead of the answer. Bodies without a length are limited further
/// in by the body-limit layer.
pub async fn oversized_bodies(State(limit): State<usize>, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let Some(length) = declared.filter(|length| *length > limit as u64) else {
        return next.run(request).await;
    };
    if length <= limit.saturating_mul(DRAIN_FACTOR) as u64 {
        let mut body = request.into_body().into_data_stream();
        let drain = async { while let Some(Ok(_)) = body.next().await {} };
        if tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_err() {
            tracing::debug!("gave up reading an oversized request body");
        }
    }
    closing(ApiError::new(Code::PayloadTooLarge, too_large_message(limit)).into_response())
}

fn too_large_message(limit: usize) -> String {
    if limit.is_multiple_of(1024 * 1024) {
        format!("request body is larger than the {} MiB limit", limit / (1024 * 1024))
    } else {
        format!("request body is larger than the {limit}-byte limit")
    }
}

/// Asks hyper to close the connection after this response.
fn closing(mut response: Response) -> Response {
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Fallback for unknown routes.
pub async fn not_found() -> ApiError {
    ApiError::new(Code::NotFound, "no such route")
}
