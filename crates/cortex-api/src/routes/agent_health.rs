//! An agent's health (SPEC §5.7, §2.4): `GET /agents/{id}/health` [viewer], and the operator controls
//! `POST /agents/{id}/quarantine {reason}`, `POST /agents/{id}/release` and `POST /agents/{id}/kill {reason}`
//! [operator]. The automatic breaker (3 failed jobs → quarantine) lives in the job engine
//! (`cortex-jobs`, `breaker`); this module only shows its count.
//!
//! Quarantine stops new claims of the agent's jobs (queued jobs wait, they are not failed); release clears
//! it and starts a new breaker window (`health_reset_at = now`); kill quarantines and then cancels the
//! agent's running jobs and the ones waiting for an approval. Each change is audited and emits an
//! `agent.health` event on the agent's stream, so the dashboard's live output shows it.

use crate::guard::routes;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use cortex_core::agent::{AgentStatus, BREAKER_THRESHOLD, HealthState};
use cortex_core::breaker::BreakerState;
use cortex_core::event::{Actor, EventType};
use cortex_core::job::JobStatus;
use cortex_store::StoreError;
use cortex_store::agents::Agent;
use cortex_store::events::NewEvent;
use cortex_store::jobs::JobFilter;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::Json;
use crate::guard::Routes;
use crate::limits::Fields;
use crate::state::AppState;

pub fn routes() -> Routes {
    Routes::new()
        .viewer(routes!(health))
        .operator(routes!(quarantine))
        .operator(routes!(release))
        .operator(routes!(kill))
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

/// An agent's health now (SPEC §5.7).
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentHealthReport {
    pub agent_id: Uuid,
    /// Operator intent: `active`, `disabled` or `archived`.
    pub status: AgentStatus,
    /// `quarantined` as stored (breaker or operator); otherwise derived now: `degraded` when a breaker of
    /// one of the agent's model candidates is not closed or an MCP server of its enabled tools is in
    /// `error`, else `healthy`.
    pub health_state: HealthState,
    /// Why it is quarantined or degraded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub breaker: AgentBreakerView,
    /// The agent's model candidates (primary, then fallbacks) with this process's breaker of each;
    /// `closed` for one not called yet.
    pub providers: Vec<ProviderHealth>,
    /// The MCP servers of the agent's enabled tool policies (servers that no longer exist are left out).
    pub mcp: Vec<McpHealth>,
    pub browser: BrowserHealth,
    pub running_jobs: i64,
    /// When the agent's newest job was created.
    #[serde(serialize_with = "crate::views::millis::option")]
    pub last_job_at: Option<DateTime<Utc>>,
    /// Tokens and cost of the jobs created today (UTC).
    pub usage_today: UsageToday,
}

/// The automatic agent breaker: consecutive counting job failures since the last release.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentBreakerView {
    /// Counted up to `threshold`.
    pub consecutive_failures: u32,
    pub threshold: u32,
}

/// One model candidate of the agent and its provider breaker in this process.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderHealth {
    pub provider: String,
    pub model: String,
    pub breaker_state: BreakerState,
}

/// An MCP server the agent's enabled tools come from.
#[derive(Debug, Serialize, ToSchema)]
pub struct McpHealth {
    pub server: String,
    /// `pending`, `active`, `degraded`, `error` or `disabled`.
    pub status: String,
    pub last_error: Option<String>,
}

/// The browser subsystem (SPEC §6.6) is not built: always `unavailable`, and no browser tool can be
/// enabled, so it never makes the agent `degraded`.
#[derive(Debug, Serialize, ToSchema)]
pub struct BrowserHealth {
    pub state: String,
}

/// What the agent's jobs created today (UTC) spent.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageToday {
    pub tokens: i64,
    pub cost_usd: f64,
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

/// Read an agent's health: status, health state, breaker count, provider breakers, MCP servers, activity and
/// today's usage [viewer].
#[utoipa::path(get, path = "/agents/{id}/health", tag = "agents",
    params(("id" = String, Path, description = "Agent id or slug")), responses(
    (status = 200, body = AgentHealthReport), (status = 404, body = ErrorBody)))]
async fn health(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<axum::Json<AgentHealthReport>> {
    let agent = state.store.get_agent(&id).await?;
    let seen = state.runtime.provider_breakers();
    let providers: Vec<ProviderHealth> = agent
        .model_config
        .candidates()
        .into_iter()
        .map(|candidate| {
            let breaker_state = seen
                .iter()
                .find(|(provider, model, _)| *provider == candidate.provider && *model == candidate.model)
                .map_or(BreakerState::Closed, |(_, _, state)| *state);
            ProviderHealth { provider: candidate.provider, model: candidate.model, breaker_state }
        })
        .collect();
    let mut slugs: Vec<String> = state
        .store
        .tool_policies(agent.id)
        .await?
        .iter()
        .filter(|policy| policy.enabled)
        .filter_map(|policy| {
            cortex_core::tool_ref::parse_mcp_ref(&policy.tool_ref).map(|(server, _)| server.to_owned())
        })
        .collect();
    slugs.sort_unstable();
    slugs.dedup();
    let mut mcp = Vec::with_capacity(slugs.len());
    for slug in slugs {
        match state.store.get_mcp_server(&slug).await {
            Ok(server) => {
                mcp.push(McpHealth { server: server.slug, status: server.status, last_error: server.last_error })
            }
            Err(StoreError::NotFound { .. }) => {}
            Err(err) => return Err(err.into()),
        }
    }
    let consecutive_failures =
        state.store.agent_failure_streak(agent.id, agent.health_reset_at, BREAKER_THRESHOLD).await?;
    let activity = state.store.agent_activity(agent.id).await?;
    let today = state.store.clock().now().date_naive().and_time(chrono::NaiveTime::MIN).and_utc();
    let usage = state.store.agent_usage_by_day(agent.id, today).await?;
    let usage_today = UsageToday {
        tokens: usage.iter().map(|day| day.tokens_in + day.tokens_out).sum(),
        // A fold from +0.0: an empty `f64` sum is −0.0, which would print as `-0.0`.
        cost_usd: usage.iter().map(|day| day.cost_usd).fold(0.0, |total, cost| total + cost),
    };
    let (health_state, reason) = derived_health(&agent, &providers, &mcp);
    Ok(axum::Json(AgentHealthReport {
        agent_id: agent.id,
        status: agent.status,
        health_state,
        reason,
        breaker: AgentBreakerView { consecutive_failures, threshold: BREAKER_THRESHOLD },
        providers,
        mcp,
        browser: BrowserHealth { state: "unavailable".into() },
        running_jobs: activity.running_jobs,
        last_job_at: activity.last_job_at,
        usage_today,
    }))
}

/// The stored quarantine wins; otherwise `degraded` (with what is wrong) when a candidate's breaker is not
/// closed or an MCP server is in `error`.
fn derived_health(agent: &Agent, providers: &[ProviderHealth], mcp: &[McpHealth]) -> (HealthState, Option<String>) {
    if agent.health_state == HealthState::Quarantined {
        return (HealthState::Quarantined, agent.quarantine_reason.clone());
    }
    let problems: Vec<String> = providers
        .iter()
        .filter(|provider| provider.breaker_state != BreakerState::Closed)
        .map(|provider| format!("provider {}/{} breaker {}", provider.provider, provider.model, provider.breaker_state))
        .chain(
            mcp.iter()
                .filter(|server| server.status == "error")
                .map(|server| format!("MCP server {} in error", server.server)),
        )
        .collect();
    if problems.is_empty() { (agent.health_state, None) } else { (HealthState::Degraded, Some(problems.join("; "))) }
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
