//! Liveness, readiness and metrics: the only routes open without credentials.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::routes;

use crate::guard::Routes;
use crate::state::AppState;

pub fn routes() -> Routes {
    Routes::new().public(routes!(healthz)).public(routes!(readyz)).public(routes!(metrics))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: String,
}

/// Liveness: 200 while the process runs.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok".into() })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReadinessChecks {
    /// `ok`, or `unavailable` when the database cannot be reached (the cause is logged).
    pub db: String,
    /// `ok` when this process's job engine loop is running.
    pub workers: String,
    /// Channel adapters and their state (none yet).
    pub channels: Vec<serde_json::Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReadinessReport {
    /// `ok` or `degraded`.
    pub status: String,
    pub checks: ReadinessChecks,
}

/// Readiness: 503 when the database is unreachable, no worker loop runs, or the process is draining.
#[utoipa::path(get, path = "/readyz", tag = "health", responses(
    (status = 200, body = ReadinessReport), (status = 503, body = ReadinessReport)))]
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    // The route is open without credentials: the cause goes to the log, never into the answer.
    let db = match state.store.ping().await {
        Ok(()) => "ok",
        Err(err) => {
            tracing::warn!(error = %err, "readiness: database unreachable");
            "unavailable"
        }
    };
    let workers = if state.readiness.draining() {
        "draining"
    } else if state.readiness.engine_alive() {
        "ok"
    } else {
        "stopped"
    };
    let ready = db == "ok" && workers == "ok";
    let report = ReadinessReport {
        status: if ready { "ok" } else { "degraded" }.into(),
        checks: ReadinessChecks { db: db.into(), workers: workers.into(), channels: Vec::new() },
    };
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(report))
}

/// Prometheus metrics in text format. Database-derived gauges are recounted at most once a second.
#[utoipa::path(get, path = "/metrics", tag = "health", responses((status = 200, content_type = "text/plain")))]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    state.gauges.refresh_if_due(&state.store).await;
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}
