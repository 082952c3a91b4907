//! Liveness, readiness and metrics: the only routes open without credentials.

use crate::guard::routes;
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

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
    /// Channels this process runs: `{id, type, state}`; an unhealthy one makes the status `degraded`
    /// (still 200).
    pub channels: Vec<ChannelCheck>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelCheck {
    pub id: uuid::Uuid,
    #[serde(rename = "type")]
    pub channel_type: String,
    /// `starting|healthy|unhealthy|recovering|circuit_open|stopped`.
    pub state: String,
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
    let channels: Vec<ChannelCheck> = state
        .channels
        .health()
        .into_iter()
        .map(|health| ChannelCheck {
            id: health.id,
            channel_type: health.channel_type,
            state: health.state.as_str().into(),
        })
        .collect();
    let channels_ok = channels.iter().all(|check| matches!(check.state.as_str(), "healthy" | "starting"));
    let report = ReadinessReport {
        status: if ready && channels_ok { "ok" } else { "degraded" }.into(),
        checks: ReadinessChecks { db: db.into(), workers: workers.into(), channels },
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
