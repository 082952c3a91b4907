//! Approvals (SPEC §7): list, inspect with the audit trail, decide by id (approver role) or by one-time
//! token, and follow as a stream.

use crate::guard::routes;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use cortex_core::approval::{ApprovalStatus, DecidedVia, Decision, RiskTier};
use cortex_core::event::EventType;
use cortex_core::role::Role;
use cortex_jobs::approvals::{DecisionError, decide};
use cortex_store::approvals::{Approval, ApprovalAuditEntry, ApprovalFilter, Decider};
use cortex_store::events::EventScope;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::{Principal, check_origin};
use crate::error::{ApiError, ApiResult, Code, ErrorBody};
use crate::extract::{Json, PageParams, Query};
use crate::guard::Routes;
use crate::routes::jobs::StreamParams;
use crate::routes::sessions::path_id;
use crate::sse::{self, EventStream, StreamSpec};
use crate::state::AppState;
use crate::views::List;

pub fn routes() -> Routes {
    Routes::new()
        .viewer(routes!(list_approvals))
        .viewer(routes!(approval_stream))
        .viewer(routes!(get_approval))
        .at_least_recording(Role::Approver, routes!(decide_approval), record_refused_decision)
        .viewer(routes!(decide_by_token))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApprovalView {
    pub id: Uuid,
    pub job_id: Uuid,
    pub agent_id: Uuid,
    /// `tool`, `job` or `request`.
    pub action_type: String,
    pub action_summary: String,
    /// The exact action awaiting the decision (tool ref, arguments with secrets redacted, argument hash).
    #[schema(value_type = Object)]
    pub action_detail: Value,
    pub tool_ref: Option<String>,
    pub risk: RiskTier,
    pub status: ApprovalStatus,
    #[serde(serialize_with = "crate::views::millis::serialize")]
    pub requested_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::views::millis::serialize")]
    pub expires_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::views::millis::option")]
    pub decided_at: Option<DateTime<Utc>>,
    pub decided_via: Option<DecidedVia>,
    pub decided_by: Option<Uuid>,
    pub reason: Option<String>,
    #[serde(serialize_with = "crate::views::millis::option")]
    pub executed_at: Option<DateTime<Utc>>,
}

impl From<Approval> for ApprovalView {
    fn from(approval: Approval) -> Self {
        Self {
            id: approval.id,
            job_id: approval.job_id,
            agent_id: approval.agent_id,
            action_type: approval.action_type,
            action_summary: approval.action_summary,
            action_detail: approval.action_detail,
            tool_ref: approval.tool_ref,
            risk: approval.risk,
            status: approval.status,
            requested_at: approval.requested_at,
            expires_at: approval.expires_at,
            decided_at: approval.decided_at,
            decided_via: approval.decided_via,
            decided_by: approval.decided_by,
            reason: approval.reason,
            executed_at: approval.executed_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntryView {
    pub seq: i64,
    pub event: String,
    #[schema(value_type = Object)]
    pub actor: Value,
    #[schema(value_type = Object)]
    pub details: Value,
    pub entry_hash: String,
    pub prev_hash: String,
    #[serde(serialize_with = "crate::views::millis::serialize")]
    pub created_at: DateTime<Utc>,
}

impl From<ApprovalAuditEntry> for AuditEntryView {
    fn from(entry: ApprovalAuditEntry) -> Self {
        Self {
            seq: entry.seq,
            event: entry.event,
            actor: entry.actor,
            details: entry.details,
            entry_hash: entry.entry_hash,
            prev_hash: entry.prev_hash,
            created_at: entry.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApprovalDetail {
    #[serde(flatten)]
    pub approval: ApprovalView,
    pub audit: Vec<AuditEntryView>,
    /// Whether the audit trail's hash chain is intact.
    pub chain_valid: bool,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ApprovalListParams {
    pub status: Option<ApprovalStatus>,
    pub agent_id: Option<Uuid>,
    pub job_id: Option<Uuid>,
}

/// List approval requests, newest first (e.g. `?status=pending`).
#[utoipa::path(get, path = "/approvals", tag = "approvals", params(ApprovalListParams, PageParams), responses(
    (status = 200, body = List<ApprovalView>), (status = 400, body = ErrorBody)))]
async fn list_approvals(
    State(state): State<AppState>,
    Query(params): Query<ApprovalListParams>,
    Query(page): Query<PageParams>,
) -> ApiResult<axum::Json<List<ApprovalView>>> {
    let (cursor, limit) = page.parse()?;
    let filter = ApprovalFilter { status: params.status, agent_id: params.agent_id, job_id: params.job_id };
    let approvals = state.store.list_approvals(&filter, cursor, limit).await?;
    Ok(axum::Json(List::from_page(approvals, ApprovalView::from)))
}

/// One approval request with its audit trail and the chain check.
#[utoipa::path(get, path = "/approvals/{id}", tag = "approvals", params(("id" = Uuid, Path)), responses(
    (status = 200, body = ApprovalDetail), (status = 404, body = ErrorBody)))]
async fn get_approval(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<axum::Json<ApprovalDetail>> {
    let approval = state.store.get_approval(path_id(&id, "approval")?).await?;
    Ok(axum::Json(detail(&state, approval).await?))
}

async fn detail(state: &AppState, approval: Approval) -> ApiResult<ApprovalDetail> {
    let audit = state.store.approval_audit(approval.id).await?;
    let chain_valid = state.store.approval_chain_valid(approval.id).await?;
    Ok(ApprovalDetail {
        approval: approval.into(),
        audit: audit.into_iter().map(AuditEntryView::from).collect(),
        chain_valid,
    })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecideBody {
    pub decision: Decision,
    /// Why (≤ 1000 characters); shown to the agent on rejection.
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecideByTokenBody {
    /// The one-time token (`cortex_apr_1_…`) sent to the approver.
    pub token: String,
    pub decision: Decision,
    pub reason: Option<String>,
}

fn check_reason(reason: &Option<String>) -> ApiResult<()> {
    if reason.as_ref().is_some_and(|reason| reason.chars().count() > 1000) {
        return Err(ApiError::validation(&[("reason", "must be at most 1000 characters".into())]));
    }
    Ok(())
}

/// How a decision through the API arrived: from a dashboard session or with an API key.
fn decided_via(principal: &Principal) -> DecidedVia {
    match principal.credential {
        crate::auth::Credential::Session(_) => DecidedVia::Dashboard,
        crate::auth::Credential::ApiKey(_) => DecidedVia::Api,
    }
}

fn decider(principal: &Principal, via: DecidedVia) -> Decider {
    let mut actor = principal.actor_json();
    actor["surface"] = json!(via);
    Decider { user_id: principal.user_id, api_key_id: principal.key_id(), via, actor }
}

fn decision_error(err: DecisionError) -> ApiError {
    match err {
        DecisionError::NotFound => ApiError::not_found("approval"),
        DecisionError::AlreadyDecided(status) => {
            ApiError::new(Code::AlreadyDecided, format!("the approval was already {status}"))
        }
        DecisionError::Expired => ApiError::new(Code::ApprovalExpired, "the approval expired before the decision"),
        DecisionError::Store(store) => store.into(),
    }
}

/// Approve or reject a request. Final: a second decision gets 409.
#[utoipa::path(post, path = "/approvals/{id}/decide", tag = "approvals", params(("id" = Uuid, Path)), request_body = DecideBody,
    responses((status = 200, body = ApprovalDetail), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn decide_approval(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Json(body): Json<DecideBody>,
) -> ApiResult<axum::Json<ApprovalDetail>> {
    check_reason(&body.reason)?;
    let approval = state.store.get_approval(path_id(&id, "approval")?).await?;
    if approval.approver_user_id.is_some_and(|user| Some(user) != principal.user_id) && principal.role != Role::Admin {
        record_unauthorized_attempt(&state, approval.id, &principal, json!({"decision": body.decision})).await?;
        return Err(ApiError::forbidden("this approval names another approver; only they or an admin may decide"));
    }
    let decided = decide(
        &state.store,
        approval.id,
        body.decision,
        &decider(&principal, decided_via(&principal)),
        body.reason.as_deref(),
    )
    .await
    .map_err(decision_error)?;
    let mut tx = state.store.begin().await?;
    tx.audit(principal.audit(
        "approval.decide",
        "approval",
        decided.id,
        json!({"decision": body.decision, "reason": body.reason}),
    ))
    .await?;
    tx.commit().await?;
    Ok(axum::Json(detail(&state, decided).await?))
}

/// Writes an `unauthorized_attempt` entry into the approval's audit trail (SPEC §7.3).
async fn record_unauthorized_attempt(
    state: &AppState,
    approval_id: Uuid,
    principal: &Principal,
    details: Value,
) -> ApiResult<()> {
    let mut tx = state.store.begin().await?;
    tx.append_approval_audit(approval_id, "unauthorized_attempt", principal.actor_json(), details).await?;
    tx.commit().await?;
    Ok(())
}

/// The guard's refusal of a caller below `approver` on `POST /approvals/{id}/decide`, recorded on the
/// approval it aimed at (unknown ids are only logged).
fn record_refused_decision(state: AppState, principal: Principal, mut parts: Parts) -> BoxFuture<'static, ()> {
    Box::pin(async move {
        let Ok(Path(id)) = Path::<String>::from_request_parts(&mut parts, &state).await else { return };
        let Ok(approval_id) = Uuid::parse_str(&id) else { return };
        let details = json!({"reason": "role below approver"});
        match record_unauthorized_attempt(&state, approval_id, &principal, details).await {
            Ok(()) => {}
            Err(err) if err.code == Code::NotFound => {}
            Err(err) => tracing::warn!(error = %err.message, "could not record an unauthorized approval attempt"),
        }
    })
}

/// Decide with the one-time token; the token is the authority, any authenticated caller may present it.
#[utoipa::path(post, path = "/approvals/decide-by-token", tag = "approvals", request_body = DecideByTokenBody,
    responses((status = 200, body = ApprovalDetail), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn decide_by_token(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<DecideByTokenBody>,
) -> ApiResult<axum::Json<ApprovalDetail>> {
    check_reason(&body.reason)?;
    let approval = state
        .store
        .find_approval_by_token(body.token.trim())
        .await?
        .ok_or_else(|| ApiError::not_found("approval for this token"))?;
    let decided = decide(
        &state.store,
        approval.id,
        body.decision,
        &decider(&principal, DecidedVia::Token),
        body.reason.as_deref(),
    )
    .await
    .map_err(decision_error)?;
    let mut tx = state.store.begin().await?;
    tx.audit(principal.audit(
        "approval.decide",
        "approval",
        decided.id,
        json!({"decision": body.decision, "via": "token"}),
    ))
    .await?;
    tx.commit().await?;
    Ok(axum::Json(detail(&state, decided).await?))
}

/// Live approval events as SSE (`approval.requested`, `approval.decided`).
#[utoipa::path(get, path = "/approvals/stream", tag = "approvals", params(StreamParams), responses(
    (status = 200, content_type = "text/event-stream", description = "Event stream")))]
async fn approval_stream(
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
        only: Some(&[EventType::ApprovalRequested, EventType::ApprovalDecided]),
    };
    Ok(sse::stream(&state.sse, spec))
}
