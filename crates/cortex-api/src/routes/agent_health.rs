//! Operator controls over an agent's health (SPEC §5.7, §2.4): `POST /agents/{id}/quarantine {reason}`,
//! `POST /agents/{id}/release` and `POST /agents/{id}/kill {reason}` [operator].
//!
//! Quarantine stops new claims of the agent's jobs (queued jobs wait, they are not failed); release clears
//! it and starts a new breaker window (`health_reset_at = now`); kill quarantines and then cancels the
//! agent's running jobs and the ones waiting for an approval. Each change is audited and emits an
//! `agent.health` event on the agent's stream, so the dashboard's live output shows it.

use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use cortex_core::agent::HealthState;
use cortex_core::event::{Actor, EventType};
use cortex_core::job::JobStatus;
use cortex_store::agents::Agent;
use cortex_store::events::NewEvent;
use cortex_store::jobs::JobFilter;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::Json;
use crate::guard::Routes;
use crate::limits::Fields;
use crate::state::AppState;

pub fn routes() -> Routes {
    Routes::new().operator(routes!(quarantine)).operator(routes!(release)).operator(routes!(kill))
}

/// Longest reason kept (it is shown on the agent page and in chat notices).
const REASON_MAX: usize = 500;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    /// Why (1–500 characters); shown as the agent's quarantine reason.
    #[schema(max_length = 500)]
    pub reason: String,
}

/// An agent's health after an operator action.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthView {
    pub agent_id: Uuid,
    /// `healthy`, `degraded` or `quarantined`.
    pub health_state: HealthState,
    pub reason: Option<String>,
    /// Jobs a kill cancelled (running ones stop within seconds); 0 for the other actions.
    pub cancelled_jobs: usize,
    #[serde(serialize_with = "crate::views::millis::serialize")]
    pub updated_at: DateTime<Utc>,
}

fn checked_reason(body: &ReasonBody) -> ApiResult<String> {
    let reason = body.reason.trim();
    if reason.is_empty() || reason.chars().count() > REASON_MAX {
        let mut fields = Fields::default();
        fields.0.push(("reason", format!("must be 1–{REASON_MAX} characters")));
        return Err(ApiError::validation(&fields.0));
    }
    Ok(reason.to_owned())
}

/// Writes the health change, its audit entry and its `agent.health` event in one transaction.
async fn set_health(
    state: &AppState,
    principal: &Principal,
    agent: &Agent,
    action: &str,
    health: HealthState,
    reason: Option<&str>,
) -> ApiResult<Agent> {
    let now = state.store.clock().now();
    let mut tx = state.store.begin().await?;
    let reset_at = (health == HealthState::Healthy).then_some(now);
    tx.set_agent_health(agent.id, health, reason, reset_at).await?;
    tx.audit(principal.audit(
        action,
        "agent",
        agent.id,
        json!({"from": agent.health_state, "to": health, "reason": reason}),
    ))
    .await?;
    tx.emit(NewEvent {
        actor: Actor::Operator,
        ..NewEvent::new(
            agent.id,
            None,
            EventType::AgentHealth,
            json!({"from": agent.health_state, "to": health, "reason": reason, "action": action}),
        )
    });
    tx.commit().await?;
    Ok(state.store.get_agent_by_id(agent.id).await?)
}

fn view(agent: Agent, cancelled_jobs: usize) -> axum::Json<HealthView> {
    axum::Json(HealthView {
        agent_id: agent.id,
        health_state: agent.health_state,
        reason: agent.quarantine_reason,
        cancelled_jobs,
        updated_at: agent.updated_at,
    })
}

/// Quarantine an agent: its queued jobs wait and no new job of it is claimed until it is released.
#[utoipa::path(post, path = "/agents/{id}/quarantine", tag = "agents", request_body = ReasonBody,
    params(("id" = String, Path, description = "Agent id or slug")), responses(
    (status = 200, body = HealthView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn quarantine(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Json(body): Json<ReasonBody>,
) -> ApiResult<axum::Json<HealthView>> {
    let reason = checked_reason(&body)?;
    let agent = state.store.get_agent(&id).await?;
    let agent =
        set_health(&state, &principal, &agent, "agent.quarantine", HealthState::Quarantined, Some(&reason)).await?;
    Ok(view(agent, 0))
}

/// Release a quarantined agent: its jobs are claimed again and the failure breaker starts afresh.
#[utoipa::path(post, path = "/agents/{id}/release", tag = "agents",
    params(("id" = String, Path, description = "Agent id or slug")), responses(
    (status = 200, body = HealthView), (status = 404, body = ErrorBody)))]
async fn release(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<HealthView>> {
    let agent = state.store.get_agent(&id).await?;
    let agent = set_health(&state, &principal, &agent, "agent.release", HealthState::Healthy, None).await?;
    Ok(view(agent, 0))
}

/// Kill an agent: quarantine it, then cancel its running jobs and those waiting for an approval.
#[utoipa::path(post, path = "/agents/{id}/kill", tag = "agents", request_body = ReasonBody,
    params(("id" = String, Path, description = "Agent id or slug")), responses(
    (status = 200, body = HealthView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn kill(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Json(body): Json<ReasonBody>,
) -> ApiResult<axum::Json<HealthView>> {
    let reason = checked_reason(&body)?;
    let agent = state.store.get_agent(&id).await?;
    // Quarantine first, so nothing new starts while the running jobs are stopped.
    let agent = set_health(&state, &principal, &agent, "agent.kill", HealthState::Quarantined, Some(&reason)).await?;
    let mut cancelled = 0;
    for status in [JobStatus::Running, JobStatus::WaitingForApproval] {
        let filter = JobFilter { agent_id: Some(agent.id), status: Some(status), ..JobFilter::default() };
        let mut cursor = None;
        loop {
            let page = state.store.list_jobs(&filter, cursor, 200).await?;
            for job in &page.items {
                match cortex_jobs::cancel_job(&state.store, job.id).await {
                    Ok(_) => cancelled += 1,
                    // It ended meanwhile.
                    Err(cortex_jobs::OpError::InvalidState { .. }) => {}
                    Err(err) => return Err(err.into()),
                }
            }
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
    Ok(view(agent, cancelled))
}
