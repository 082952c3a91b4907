//! Chat (SPEC §2.4): a user message becomes a session message plus a durable chat job, in one
//! transaction. With `?wait=true` the request waits for the job's outcome (or gives up with 202).

use std::time::Duration;

use crate::guard::routes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use cortex_core::job::{JobError, JobKind, JobStatus};
use cortex_store::jobs::{Job, NewJob};
use cortex_store::{Notification, Store};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::broadcast;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, Code, ErrorBody};
use crate::extract::{Json, Query};
use crate::guard::Routes;
use crate::routes::jobs::{ensure_accepts_work, idempotency_key};
use crate::state::AppState;

pub fn routes() -> Routes {
    Routes::new().operator(routes!(chat))
}

/// Longest chat message accepted (SPEC §19).
const MAX_TEXT_CHARS: usize = 50_000;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatBody {
    /// The user's message (1–50 000 characters).
    pub text: String,
    /// Continue this session; without it a new session starts.
    pub session_id: Option<Uuid>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ChatParams {
    /// Wait for the outcome instead of answering 202 at once.
    #[serde(default)]
    pub wait: bool,
    /// How long to wait, 1–300 seconds (default 60); after that the answer is 202.
    pub timeout_seconds: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChatReply {
    pub job_id: Uuid,
    pub session_id: Uuid,
    /// `completed`, `waiting_for_approval` or `failed` after a wait; the job's current status otherwise.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<JobError>,
}

/// Send a message to an agent. `?wait=true` → 200 with the outcome (or 202 if it is not done in time);
/// otherwise 202 with the job and session ids to follow (`GET /jobs/{id}/events`). A repeated request
/// with the same `Idempotency-Key` answers for the first message; the same key with a different request
/// is refused (409 `idempotency_conflict`).
#[utoipa::path(post, path = "/agents/{id}/chat", tag = "chat", params(("id" = String, Path, description = "Agent id or slug"), ChatParams),
    request_body = ChatBody, responses((status = 200, body = ChatReply), (status = 202, body = ChatReply),
    (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody)))]
async fn chat(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Query(params): Query<ChatParams>,
    headers: HeaderMap,
    Json(body): Json<ChatBody>,
) -> ApiResult<impl IntoResponse> {
    let wait_for = match params.timeout_seconds {
        None => 60,
        Some(seconds @ 1..=300) => seconds,
        Some(other) => {
            return Err(ApiError::validation(&[(
                "timeout_seconds",
                format!("must be between 1 and 300, got {other}"),
            )]));
        }
    };
    let chars = body.text.chars().count();
    if chars > MAX_TEXT_CHARS {
        return Err(ApiError::new(
            Code::PayloadTooLarge,
            format!("text is {chars} characters; the limit is {MAX_TEXT_CHARS}"),
        ));
    }
    if body.text.trim().is_empty() {
        return Err(ApiError::validation(&[("text", "must not be empty".into())]));
    }
    let agent = state.store.get_agent(&id).await?;
    ensure_accepts_work(&agent)?;
    // Subscribe before creating the job, so no state change can slip between creation and waiting.
    let notifications = state.store.subscribe();

    // Read before the transaction: a request must never hold one pooled connection while it waits for
    // another (concurrent chats would starve the pool).
    let existing_session = match body.session_id {
        Some(session_id) => {
            let session = state.store.get_session(session_id).await?;
            if session.agent_id != agent.id {
                return Err(ApiError::not_found("session"));
            }
            if session.is_closed() {
                return Err(ApiError::new(Code::InvalidState, "the session is closed; start a new one"));
            }
            Some(session.id)
        }
        None => None,
    };
    let mut tx = state.store.begin().await?;
    let session_id = match existing_session {
        Some(session_id) => session_id,
        None => tx.insert_session(agent.id, principal.user_id, "rest").await?.id,
    };
    let (job, created) = tx
        .insert_job(&NewJob {
            agent_id: agent.id,
            session_id: Some(session_id),
            kind: JobKind::Chat,
            priority: 0,
            payload: json!({"surface": "rest"}),
            max_attempts: 3,
            timeout_seconds: agent.resource_limits.timeout_seconds,
            run_at: None,
            parent_job_id: None,
            delegation_depth: 0,
            idempotency_key: idempotency_key(
                &headers,
                json!({"route": "chat", "text": body.text, "session_id": body.session_id}),
            )?,
            created_by: Some(principal.actor_ref()),
        })
        .await?;
    if created {
        tx.append_message(session_id, "user", &body.text, Some(job.id), Some(&json!({"surface": "rest"}))).await?;
        tx.commit().await?;
    }

    if !params.wait {
        return Ok((StatusCode::ACCEPTED, axum::Json(pending_reply(&job))));
    }
    let outcome = wait_for_outcome(&state.store, job.id, notifications, Duration::from_secs(wait_for)).await?;
    Ok(match outcome {
        Some(reply) => (StatusCode::OK, axum::Json(reply)),
        None => (StatusCode::ACCEPTED, axum::Json(pending_reply(&state.store.get_job(job.id).await?))),
    })
}

fn pending_reply(job: &Job) -> ChatReply {
    ChatReply {
        job_id: job.id,
        session_id: job.session_id.unwrap_or_default(),
        status: job.status.as_str().to_owned(),
        response: None,
        approval_id: None,
        error: None,
    }
}

/// The outcome of a chat job once it has one: a reply, a wait for approval or a final failure.
fn outcome_of(job: &Job) -> Option<ChatReply> {
    let base = pending_reply(job);
    match job.status {
        JobStatus::Completed => Some(ChatReply {
            status: "completed".into(),
            response: job.result.as_ref().and_then(|result| result["response"].as_str()).map(str::to_owned),
            ..base
        }),
        JobStatus::WaitingForApproval => {
            Some(ChatReply { status: "waiting_for_approval".into(), approval_id: job.approval_id, ..base })
        }
        // `failed`/`timed_out` are only observed when they rest: retries move on in the same transaction.
        JobStatus::Failed | JobStatus::TimedOut | JobStatus::DeadLetter => {
            Some(ChatReply { status: "failed".into(), error: job.error.clone(), ..base })
        }
        _ => None,
    }
}

async fn wait_for_outcome(
    store: &Store,
    job_id: Uuid,
    mut notifications: broadcast::Receiver<Notification>,
    limit: Duration,
) -> ApiResult<Option<ChatReply>> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let job = store.get_job(job_id).await?;
        if let Some(reply) = outcome_of(&job) {
            return Ok(Some(reply));
        }
        loop {
            match tokio::time::timeout_at(deadline, notifications.recv()).await {
                Err(_) => return Ok(None),
                Ok(Ok(Notification::Event { job_id: Some(id), state_changed: true, .. })) if id == job_id => break,
                Ok(Ok(Notification::Resync) | Err(broadcast::error::RecvError::Lagged(_))) => break,
                Ok(Err(broadcast::error::RecvError::Closed)) => return Ok(None),
                Ok(Ok(_)) => {}
            }
        }
    }
}
