//! Steering and spend of one agent (SPEC §5.6, issue 5): operators inject instructions into a running
//! job and read spend against the agent's budgets.

use crate::guard::routes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use cortex_core::job::JobStatus;
use cortex_store::jobs::JobFilter;
use cortex_store::steering::SteeringRecord;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, Code, ErrorBody};
use crate::extract::Json;
use crate::guard::Routes;
use crate::routes::sessions::path_id;
use crate::state::AppState;

pub fn routes() -> Routes {
    Routes::new().operator(routes!(steer)).viewer(routes!(get_steer)).viewer(routes!(usage))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SteerBody {
    /// The instruction (1–10 000 characters), injected before the job's next model call.
    pub instruction: String,
    /// `normal` (default) or `urgent` (also aborts the model call in flight).
    pub priority: Option<String>,
    /// The job to steer; default: the agent's only running job.
    pub job_id: Option<Uuid>,
    /// With no running job, keep the instruction for the agent's next job instead of refusing.
    #[serde(default)]
    pub queue: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SteerView {
    pub steer_id: Uuid,
    pub job_id: Option<Uuid>,
    /// `queued`, `injected` or `expired`.
    pub state: String,
    pub priority: String,
    pub injected_at_turn: Option<i64>,
    #[serde(serialize_with = "crate::views::millis::serialize")]
    pub created_at: DateTime<Utc>,
}

impl From<SteeringRecord> for SteerView {
    fn from(record: SteeringRecord) -> Self {
        Self {
            steer_id: record.id,
            job_id: record.job_id,
            state: record.state,
            priority: record.priority,
            injected_at_turn: record.injected_at_turn,
            created_at: record.created_at,
        }
    }
}

/// Send an instruction to an agent's running job; it reaches the model at the next turn.
#[utoipa::path(post, path = "/agents/{id}/steer", tag = "agents", params(("id" = String, Path, description = "Agent id or slug")),
    request_body = SteerBody, responses((status = 202, body = SteerView), (status = 400, body = ErrorBody),
    (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn steer(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Json(body): Json<SteerBody>,
) -> ApiResult<impl IntoResponse> {
    let chars = body.instruction.chars().count();
    if body.instruction.trim().is_empty() || chars > 10_000 {
        return Err(ApiError::validation(&[("instruction", "must be 1–10 000 characters".into())]));
    }
    let priority = body.priority.as_deref().unwrap_or("normal");
    if !matches!(priority, "normal" | "urgent") {
        return Err(ApiError::validation(&[("priority", "must be normal or urgent".into())]));
    }
    let agent = state.store.get_agent(&id).await?;
    let target = match body.job_id {
        Some(job_id) => {
            let job = state.store.get_job(job_id).await?;
            if job.agent_id != agent.id {
                return Err(ApiError::not_found("job"));
            }
            if job.status.is_terminal() {
                return Err(ApiError::new(
                    Code::InvalidState,
                    format!("job {job_id} is {}; nothing to steer", job.status),
                ));
            }
            Some(job_id)
        }
        None => {
            let filter = JobFilter { status: Some(JobStatus::Running), agent_id: Some(agent.id), ..Default::default() };
            let running = state.store.list_jobs(&filter, None, 2).await?.items;
            match running.as_slice() {
                [job] => Some(job.id),
                [] if body.queue => None,
                [] => {
                    return Err(ApiError::new(
                        Code::InvalidState,
                        "the agent has no running job; pass queue: true to steer its next job",
                    ));
                }
                _ => return Err(ApiError::new(Code::InvalidState, "several jobs are running; name one with job_id")),
            }
        }
    };
    let mut tx = state.store.begin().await?;
    let record =
        tx.insert_steering(agent.id, target, body.instruction.trim(), priority, Some(principal.actor_ref())).await?;
    tx.audit(principal.audit("agent.steer", "agent", agent.id, json!({"job_id": target, "priority": priority})))
        .await?;
    tx.commit().await?;
    Ok((StatusCode::ACCEPTED, axum::Json(SteerView::from(record))))
}

/// Where a steering instruction is: queued, injected (at which turn) or expired.
#[utoipa::path(get, path = "/agents/{id}/steer/{steer_id}", tag = "agents", params(("id" = String, Path, description = "Agent id or slug"), ("steer_id" = Uuid, Path)),
    responses((status = 200, body = SteerView), (status = 404, body = ErrorBody)))]
async fn get_steer(
    State(state): State<AppState>,
    Path((id, steer_id)): Path<(String, String)>,
) -> ApiResult<axum::Json<SteerView>> {
    let agent = state.store.get_agent(&id).await?;
    let record = state.store.get_steering(path_id(&steer_id, "steering instruction")?).await?;
    if record.agent_id != agent.id {
        return Err(ApiError::not_found("steering instruction"));
    }
    Ok(axum::Json(record.into()))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PeriodUsage {
    /// `day:YYYY-MM-DD` or `month:YYYY-MM`.
    pub period: String,
    pub tokens_spent: i64,
    pub tokens_reserved: i64,
    pub usd_spent: f64,
    pub usd_reserved: f64,
    pub token_limit: Option<u64>,
    pub usd_limit: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AgentUsage {
    pub agent_id: Uuid,
    pub today: PeriodUsage,
    pub this_month: PeriodUsage,
    /// Per-job limits that apply to every job of the agent.
    pub job_token_budget: u64,
    pub job_usd_budget: Option<f64>,
    /// Earlier periods with recorded spend, newest first.
    pub history: Vec<PeriodUsage>,
}

/// Spend of an agent against its day and month limits (reservations of calls in flight included).
#[utoipa::path(get, path = "/agents/{id}/usage", tag = "agents", params(("id" = String, Path, description = "Agent id or slug")),
    responses((status = 200, body = AgentUsage), (status = 404, body = ErrorBody)))]
async fn usage(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<axum::Json<AgentUsage>> {
    let agent = state.store.get_agent(&id).await?;
    let usage = state.runtime.usage(agent.id).await.map_err(runtime_error)?;
    let spend = |name: &str, token_limit: Option<u64>, usd_limit: Option<f64>| {
        let found = usage.periods.iter().find(|period| period.period == name);
        PeriodUsage {
            period: name.to_owned(),
            tokens_spent: found.map_or(0, |p| p.tokens_spent),
            tokens_reserved: found.map_or(0, |p| p.tokens_reserved),
            usd_spent: found.map_or(0.0, |p| p.usd_spent),
            usd_reserved: found.map_or(0.0, |p| p.usd_reserved),
            token_limit,
            usd_limit,
        }
    };
    let today = spend(&usage.today, usage.limits.tokens_per_day, usage.limits.usd_per_day);
    let this_month = spend(&usage.this_month, usage.limits.tokens_per_month, usage.limits.usd_per_month);
    let history = usage
        .periods
        .iter()
        .rev()
        .filter(|period| period.period != usage.today && period.period != usage.this_month)
        .map(|period| spend(&period.period, None, None))
        .collect();
    Ok(axum::Json(AgentUsage {
        agent_id: agent.id,
        today,
        this_month,
        job_token_budget: usage.limits.tokens_per_job,
        job_usd_budget: usage.limits.usd_per_job,
        history,
    }))
}

/// The runtime's failures are storage failures as far as the API is concerned.
fn runtime_error(err: cortex_runtime::RuntimeError) -> ApiError {
    match err {
        cortex_runtime::RuntimeError::Store(store) => store.into(),
        other => ApiError::new(Code::Internal, other.to_string()),
    }
}
