//! Jobs: create, list, inspect, cancel, retry and follow (SPEC §2.4, §4).

use crate::guard::routes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use cortex_core::agent::AgentStatus;
use cortex_core::event::EventType;
use cortex_core::job::{JobKind, JobStatus};
use cortex_store::events::EventScope;
use cortex_store::jobs::{IdempotencyKey, Job, JobFilter, NewJob};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Principal, check_origin};
use crate::error::{ApiError, ApiResult, Code, ErrorBody};
use crate::extract::{Json, PageParams, Query};
use crate::guard::Routes;
use crate::routes::sessions::path_id;
use crate::sse::{self, EventStream, StreamSpec};
use crate::state::AppState;
use crate::views::{JobView, List, StepView};

pub fn routes() -> Routes {
    Routes::new()
        .operator(routes!(create_job))
        .viewer(routes!(list_jobs))
        .viewer(routes!(job_stream))
        .viewer(routes!(get_job))
        .operator(routes!(cancel_job))
        .operator(routes!(retry_job))
        .viewer(routes!(job_events))
        .viewer(routes!(job_transcript))
        .viewer(routes!(agent_stream))
}

/// Body of `POST /agents/{id}/jobs`.
#[derive(Debug, Deserialize, serde::Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJob {
    /// What the agent should do (1–50 000 characters).
    pub prompt: String,
    /// 0–100 (default 0); higher runs first.
    pub priority: Option<i32>,
    /// 1–10 (default 3).
    pub max_attempts: Option<u32>,
    /// 10–3600 (default: the agent's limit, else 300).
    pub timeout_seconds: Option<u32>,
    /// Do not start before this time.
    pub run_at: Option<DateTime<Utc>>,
}

/// Most jobs one batch request may create.
pub const MAX_BATCH_JOBS: usize = 1000;

/// One job of the batch form of `POST /agents/{id}/jobs`: the fields of a single job plus its own
/// idempotency key (the batch form takes no `Idempotency-Key` header).
/// (serde's `flatten` cannot be combined with `deny_unknown_fields`, hence the repeated fields).
#[derive(Debug, Deserialize, serde::Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJobItem {
    pub prompt: String,
    pub priority: Option<i32>,
    pub max_attempts: Option<u32>,
    pub timeout_seconds: Option<u32>,
    pub run_at: Option<DateTime<Utc>>,
    /// 1–200 characters; a repeat of this item with the same key returns the first job.
    pub idempotency_key: Option<String>,
}

impl CreateJobItem {
    /// The job's fields and its key.
    fn split(self) -> (CreateJob, Option<String>) {
        let job = CreateJob {
            prompt: self.prompt,
            priority: self.priority,
            max_attempts: self.max_attempts,
            timeout_seconds: self.timeout_seconds,
            run_at: self.run_at,
        };
        (job, self.idempotency_key)
    }
}

/// Batch form of `POST /agents/{id}/jobs`: 1–1000 jobs created in one transaction (all or none).
#[derive(Debug, Deserialize, serde::Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJobs {
    pub jobs: Vec<CreateJobItem>,
}

/// The body of `POST /agents/{id}/jobs`: one job, or `{"jobs": [...]}`. Only the OpenAPI document uses
/// this type (the handler picks the form by the `jobs` field, for precise errors).
#[derive(Debug, serde::Serialize, ToSchema)]
#[serde(untagged)]
pub enum CreateJobRequest {
    Batch(CreateJobs),
    One(CreateJob),
}

/// One job of a batch answer.
#[derive(serde::Serialize, ToSchema)]
pub struct CreatedJob {
    /// `false` when an earlier request with the same idempotency key made the job.
    pub created: bool,
    pub job: JobView,
}

/// Answer to the batch form, in the order of the request.
#[derive(serde::Serialize, ToSchema)]
pub struct CreatedJobs {
    pub items: Vec<CreatedJob>,
}

/// The answer of `POST /agents/{id}/jobs`: the job, or for the batch form every job.
#[derive(serde::Serialize, ToSchema)]
#[serde(untagged)]
pub enum CreateJobResponse {
    Batch(CreatedJobs),
    One(Box<JobView>),
}

/// Checks that an agent may take new work (SPEC §5.7).
pub fn ensure_accepts_work(agent: &cortex_store::agents::Agent) -> ApiResult<()> {
    if agent.status == AgentStatus::Active {
        Ok(())
    } else {
        Err(ApiError::new(
            Code::AgentNotActive,
            format!("agent `{}` is {} and takes no new work", agent.slug, agent.status),
        ))
    }
}

/// The `Idempotency-Key` header, if well-formed, bound to `request`: what makes this request this one
/// (route and body). Reusing the key with another request is refused (409 `idempotency_conflict`).
pub fn idempotency_key(headers: &HeaderMap, request: Value) -> ApiResult<Option<IdempotencyKey>> {
    let Some(value) = headers.get("idempotency-key") else { return Ok(None) };
    let key = value.to_str().map_err(|_| ApiError::bad_request("Idempotency-Key must be ASCII"))?.trim();
    if key.is_empty() || key.len() > 200 {
        return Err(ApiError::bad_request("Idempotency-Key must be 1–200 characters"));
    }
    Ok(Some(IdempotencyKey::for_request(key, &request)))
}

/// Queue a task for an agent, or up to 1000 with `{"jobs": [...]}` (one transaction: all or none; each
/// item may carry its own `idempotency_key`). A repeated request with the same `Idempotency-Key` (batch:
/// item key) returns the first job; the same key with a different request is refused (409
/// `idempotency_conflict`).
#[utoipa::path(post, path = "/agents/{id}/jobs", tag = "jobs", params(("id" = String, Path, description = "Agent id or slug")),
    request_body = CreateJobRequest, responses(
    (status = 201, body = CreateJobResponse, description = "The job (batch form: every job, in request order)"),
    (status = 200, body = CreateJobResponse, description = "Existing job(s) for the idempotency key(s), nothing created"),
    (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
    (status = 413, body = ErrorBody)))]
async fn create_job(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> ApiResult<impl IntoResponse> {
    // Decided by the `jobs` field rather than an untagged parse, so errors name the offending field.
    let parse_error =
        |err: serde_json::Error| ApiError::new(Code::ValidationFailed, format!("invalid request body: {err}"));
    let request = if body.as_object().is_some_and(|object| object.contains_key("jobs")) {
        CreateJobRequest::Batch(serde_json::from_value(body).map_err(parse_error)?)
    } else {
        CreateJobRequest::One(serde_json::from_value(body).map_err(parse_error)?)
    };
    let agent = state.store.get_agent(&id).await?;
    ensure_accepts_work(&agent)?;
    let actor = principal.actor_ref();
    let body = match request {
        CreateJobRequest::Batch(body) => body,
        CreateJobRequest::One(body) => {
            let fields = invalid_fields(&body, "");
            if !fields.is_empty() {
                return Err(validation(&fields));
            }
            let key = idempotency_key(&headers, fingerprint(&body))?;
            let new = new_job(&agent, body, key, &actor);
            let mut tx = state.store.begin().await?;
            let (job, created) = tx.insert_job(&new).await?;
            tx.commit().await?;
            let status = if created { StatusCode::CREATED } else { StatusCode::OK };
            return Ok((status, axum::Json(CreateJobResponse::One(Box::new(JobView::new(job, Vec::new()))))));
        }
    };
    if headers.contains_key("idempotency-key") {
        return Err(ApiError::bad_request(
            "the batch form takes an `idempotency_key` per job, not the Idempotency-Key header",
        ));
    }
    if body.jobs.is_empty() || body.jobs.len() > MAX_BATCH_JOBS {
        return Err(validation(&[("jobs".to_owned(), format!("must hold 1–{MAX_BATCH_JOBS} jobs"))]));
    }
    let items: Vec<(CreateJob, Option<String>)> = body.jobs.into_iter().map(CreateJobItem::split).collect();
    let mut fields = Vec::new();
    for (index, (job, key)) in items.iter().enumerate() {
        fields.extend(invalid_fields(job, &format!("jobs[{index}].")));
        if key.as_ref().is_some_and(|key| key.trim().is_empty() || key.len() > 200) {
            fields.push((format!("jobs[{index}].idempotency_key"), "must be 1–200 characters".to_owned()));
        }
    }
    if !fields.is_empty() {
        return Err(validation(&fields));
    }
    let jobs: Vec<NewJob> = items
        .into_iter()
        .map(|(job, key)| {
            let key = key.map(|key| IdempotencyKey::for_request(key.trim(), &fingerprint(&job)));
            new_job(&agent, job, key, &actor)
        })
        .collect();
    let mut tx = state.store.begin().await?;
    let created = tx.insert_jobs(&jobs).await?;
    tx.commit().await?;
    let status = if created.iter().any(|(_, created)| *created) { StatusCode::CREATED } else { StatusCode::OK };
    let items = created.into_iter().map(|(job, created)| CreatedJob { created, job: JobView::new(job, Vec::new()) });
    Ok((status, axum::Json(CreateJobResponse::Batch(CreatedJobs { items: items.collect() }))))
}

/// What is wrong with one job's fields; `prefix` places them in a batch (`jobs[3].`).
fn invalid_fields(body: &CreateJob, prefix: &str) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    let prompt_len = body.prompt.chars().count();
    if body.prompt.trim().is_empty() || prompt_len > 50_000 {
        fields.push((format!("{prefix}prompt"), "must be 1–50 000 characters".to_owned()));
    }
    if body.priority.is_some_and(|p| !(0..=100).contains(&p)) {
        fields.push((format!("{prefix}priority"), "must be between 0 and 100".into()));
    }
    if body.max_attempts.is_some_and(|n| !(1..=10).contains(&n)) {
        fields.push((format!("{prefix}max_attempts"), "must be between 1 and 10".into()));
    }
    if body.timeout_seconds.is_some_and(|s| !(10..=3600).contains(&s)) {
        fields.push((format!("{prefix}timeout_seconds"), "must be between 10 and 3600".into()));
    }
    fields
}

fn validation(fields: &[(String, String)]) -> ApiError {
    let fields: Vec<(&str, String)> = fields.iter().map(|(field, reason)| (field.as_str(), reason.clone())).collect();
    ApiError::validation(&fields)
}

/// What makes a job request this one, for its idempotency key (the same for both forms, so a key used
/// by a single request and by a batch item guards the same job).
fn fingerprint(body: &CreateJob) -> Value {
    json!({"route": "create_job", "prompt": body.prompt, "priority": body.priority, "max_attempts": body.max_attempts,
           "timeout_seconds": body.timeout_seconds, "run_at": body.run_at})
}

fn new_job(agent: &cortex_store::agents::Agent, body: CreateJob, key: Option<IdempotencyKey>, actor: &str) -> NewJob {
    NewJob {
        agent_id: agent.id,
        session_id: None,
        kind: JobKind::Task,
        priority: body.priority.unwrap_or(0),
        payload: json!({"prompt": body.prompt}),
        max_attempts: body.max_attempts.unwrap_or(3),
        timeout_seconds: body.timeout_seconds.unwrap_or(agent.resource_limits.timeout_seconds),
        run_at: body.run_at,
        parent_job_id: None,
        delegation_depth: 0,
        idempotency_key: key,
        created_by: Some(actor.to_owned()),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobListParams {
    pub status: Option<JobStatus>,
    /// Agent id or slug.
    pub agent_id: Option<String>,
    pub kind: Option<JobKind>,
}

/// List jobs, newest first.
#[utoipa::path(get, path = "/jobs", tag = "jobs", params(JobListParams, PageParams), responses(
    (status = 200, body = List<JobView>), (status = 400, body = ErrorBody)))]
async fn list_jobs(
    State(state): State<AppState>,
    Query(params): Query<JobListParams>,
    Query(page): Query<PageParams>,
) -> ApiResult<axum::Json<List<JobView>>> {
    let (cursor, limit) = page.parse()?;
    let agent_id = match &params.agent_id {
        Some(agent) => Some(state.store.get_agent(agent).await?.id),
        None => None,
    };
    let filter = JobFilter { status: params.status, agent_id, kind: params.kind, session_id: None };
    let jobs = state.store.list_jobs(&filter, cursor, limit).await?;
    Ok(axum::Json(List::from_page(jobs, |job| JobView::new(job, Vec::new()))))
}

const STEP_EVENTS: &[EventType] = &[
    EventType::LlmUsage,
    EventType::ToolResult,
    EventType::ToolDenied,
    EventType::ApprovalRequested,
    EventType::ApprovalDecided,
];

async fn steps_of(state: &AppState, job: &Job) -> ApiResult<Vec<StepView>> {
    let events = state.store.job_events_of_types(job.id, STEP_EVENTS, 1000).await?;
    Ok(events
        .into_iter()
        .map(|event| StepView {
            kind: match event.event_type {
                EventType::LlmUsage => "llm",
                EventType::ToolResult | EventType::ToolDenied => "tool",
                _ => "approval",
            }
            .to_owned(),
            at: event.created_at,
            detail: event.payload,
        })
        .collect())
}

/// One job with its attempts, error, usage and steps.
#[utoipa::path(get, path = "/jobs/{id}", tag = "jobs", params(("id" = uuid::Uuid, Path)), responses(
    (status = 200, body = JobView), (status = 404, body = ErrorBody)))]
async fn get_job(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<axum::Json<JobView>> {
    let job = state.store.get_job(path_id(&id, "job")?).await?;
    let steps = steps_of(&state, &job).await?;
    Ok(axum::Json(JobView::new(job, steps)))
}

/// Cancel a job: queued jobs fail at once, running ones within seconds. 409 when already terminal.
#[utoipa::path(post, path = "/jobs/{id}/cancel", tag = "jobs", params(("id" = uuid::Uuid, Path)), responses(
    (status = 202, body = JobView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn cancel_job(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let job = cortex_jobs::cancel_job(&state.store, path_id(&id, "job")?).await?;
    let detail = json!({"status": job.status});
    accepted_after_audit(&state, &principal, "job.cancel", job, detail).await
}

/// Retry a failed, timed-out or dead-lettered job. 409 in any other state.
#[utoipa::path(post, path = "/jobs/{id}/retry", tag = "jobs", params(("id" = uuid::Uuid, Path)), responses(
    (status = 202, body = JobView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn retry_job(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let job = cortex_jobs::retry_job(&state.store, path_id(&id, "job")?).await?;
    let detail = json!({"attempt": job.attempt});
    accepted_after_audit(&state, &principal, "job.retry", job, detail).await
}

/// Records an operator's action on a job in the audit log, then answers 202 with the job.
async fn accepted_after_audit(
    state: &AppState,
    principal: &Principal,
    action: &str,
    job: Job,
    detail: serde_json::Value,
) -> ApiResult<(StatusCode, axum::Json<JobView>)> {
    let mut tx = state.store.begin().await?;
    tx.audit(principal.audit(action, "job", job.id, detail)).await?;
    tx.commit().await?;
    Ok((StatusCode::ACCEPTED, axum::Json(JobView::new(job, Vec::new()))))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamParams {
    /// Resume after this event id (the `Last-Event-ID` header takes precedence).
    pub last_event_id: Option<i64>,
}

/// Live events of one job as SSE: stored events first (after `Last-Event-ID`), then new ones; ends after
/// `job.completed` or `job.failed`.
#[utoipa::path(get, path = "/jobs/{id}/events", tag = "jobs", params(("id" = uuid::Uuid, Path), StreamParams), responses(
    (status = 200, content_type = "text/event-stream", description = "Event stream"), (status = 404, body = ErrorBody)))]
async fn job_events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(params): Query<StreamParams>,
) -> ApiResult<EventStream> {
    check_origin(&state, &headers)?;
    let job = state.store.get_job(path_id(&id, "job")?).await?;
    let after = sse::resume_cursor(&headers, params.last_event_id).unwrap_or(0);
    let spec = StreamSpec { scope: EventScope::Job(job.id), after, end_on_terminal: true, only: None };
    Ok(sse::stream(&state.sse, spec))
}

/// Live state changes of all jobs as SSE (`job.state`, `job.completed`, `job.failed`).
#[utoipa::path(get, path = "/jobs/stream", tag = "jobs", params(StreamParams), responses(
    (status = 200, content_type = "text/event-stream", description = "Event stream")))]
async fn job_stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<StreamParams>,
) -> ApiResult<EventStream> {
    check_origin(&state, &headers)?;
    let after = match sse::resume_cursor(&headers, params.last_event_id) {
        Some(cursor) => cursor,
        None => state.store.last_event_seq().await?,
    };
    let spec = StreamSpec {
        scope: EventScope::All,
        after,
        end_on_terminal: false,
        only: Some(&[EventType::JobState, EventType::JobCompleted, EventType::JobFailed]),
    };
    Ok(sse::stream(&state.sse, spec))
}

/// Live output of an agent across its jobs as SSE (deltas, tool calls, state changes, approvals).
#[utoipa::path(get, path = "/agents/{id}/stream", tag = "agents", params(("id" = String, Path, description = "Agent id or slug"), StreamParams),
    responses((status = 200, content_type = "text/event-stream", description = "Event stream"), (status = 404, body = ErrorBody)))]
async fn agent_stream(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(params): Query<StreamParams>,
) -> ApiResult<EventStream> {
    check_origin(&state, &headers)?;
    let agent = state.store.get_agent(&id).await?;
    let after = match sse::resume_cursor(&headers, params.last_event_id) {
        Some(cursor) => cursor,
        None => state.store.last_event_seq().await?,
    };
    let spec = StreamSpec { scope: EventScope::Agent(agent.id), after, end_on_terminal: false, only: None };
    Ok(sse::stream(&state.sse, spec))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TranscriptParams {
    /// `events` (default): the job's recorded events without streaming deltas; `buffer`: the JSONL session
    /// buffer on this server's disk, with any skipped or corrupt lines reported.
    pub source: Option<String>,
}

/// What happened in a job, step by step: from the event log, or from its JSONL session buffer.
#[utoipa::path(get, path = "/jobs/{id}/transcript", tag = "jobs", params(("id" = uuid::Uuid, Path), TranscriptParams), responses(
    (status = 200, description = "`{source, items}` for events; the buffer report (`metadata`, `records`, `skipped_tail`, `errors`) for the buffer"),
    (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn job_transcript(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<TranscriptParams>,
) -> ApiResult<axum::Json<serde_json::Value>> {
    let job = state.store.get_job(path_id(&id, "job")?).await?;
    match params.source.as_deref().unwrap_or("events") {
        "events" => {
            let types: Vec<EventType> = EventType::ALL.iter().copied().filter(|t| *t != EventType::LlmDelta).collect();
            let events = state.store.job_events_of_types(job.id, &types, 5000).await?;
            Ok(axum::Json(json!({"source": "events", "items": events})))
        }
        "buffer" => {
            let dir = state.runtime.buffer_dir(job.id);
            if !dir.is_dir() {
                return Err(ApiError::not_found(
                    "session buffer on this server (it lives on the server that ran the job)",
                ));
            }
            let report = tokio::task::spawn_blocking(move || cortex_runtime::read_buffer(&dir))
                .await
                .map_err(|err| ApiError::new(Code::Internal, format!("reading the buffer: {err}")))?;
            Ok(axum::Json(json!({"source": "buffer", "report": report})))
        }
        other => Err(ApiError::validation(&[("source", format!("must be events or buffer, got `{other}`"))])),
    }
}
