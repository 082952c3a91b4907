//! The dashboard (SPEC §11): server-rendered pages under `/ui/`, mounted beside the API.
//!
//! - Pages read the store and render a typed template from `cortex-ui`; every page route is guarded with
//!   [`guard::page`] like an API route. Actions on a page (retry, cancel, logout) call the JSON API with
//!   htmx, so the API's role guards and CSRF check apply to them unchanged.
//! - Sign-in and first-run setup are plain HTML forms (they work without JavaScript) posting to this module.
//! - Every response carries a Content-Security-Policy without inline scripts and `X-Frame-Options: DENY`;
//!   static files are served with a fingerprinted URL and an immutable cache header.

use std::collections::HashMap;

use axum::extract::{Form, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use cortex_core::agent::AgentStatus;
use cortex_core::approval::ApprovalStatus;
use cortex_core::event::EventType;
use cortex_core::job::JobStatus;
use cortex_core::role::Role;
use cortex_store::Cursor;
use cortex_store::agents::Agent;
use cortex_store::approvals::{Approval, ApprovalFilter};
use cortex_store::jobs::{Job, JobFilter};
use cortex_ui::Template;
use cortex_ui::views::{
    AgentPage, AgentRow, AgentsPage, ApprovalPage, ApprovalRow, ApprovalsPage, AuditLine, Chrome, ErrorPage, Field,
    FilterOption, JobPage, JobRow, JobsPage, Live, LoginPage, MessageRow, NewAgentPage, OverviewPage, Pager, PolicyRow,
    SetupPage, StepRow, ToolCallRow, ToolChoice,
};
use serde::Deserialize;
use uuid::Uuid;

use crate::auth::{Principal, SessionContext};
use crate::error::{ApiError, Code};
use crate::guard;
use crate::routes::auth::{ClientMeta, check_throttle, normalise_email, password_login, record_failure, start_session};
use crate::state::AppState;

/// Rows per list page.
pub(crate) const PAGE_SIZE: usize = 50;
/// Agents offered by an agent filter or picker.
pub(crate) const AGENT_LOOKUP_LIMIT: usize = 200;

/// The policy every dashboard response carries: scripts and styles only from this server, no framing.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The dashboard's routes: `/` redirects to `/ui/`.
pub fn router(state: &AppState) -> Router<AppState> {
    let viewer = |route| guard::page(state, Role::Viewer, route);
    Router::new()
        .route("/", get(|| async { see_other("/ui/") }))
        .route("/ui", get(|| async { see_other("/ui/") }))
        .route("/ui/login", get(login_page).post(login_form))
        .route("/ui/setup", get(setup_page).post(setup_form))
        .route("/ui/static/{name}", get(static_file))
        .merge(super::screens::router(state))
        .merge(super::ui_access::router(state))
        .merge(super::ui_agent::router(state))
        .route("/ui/", viewer(get(overview)))
        .route("/ui/agents", viewer(get(agents)))
        .route("/ui/agents/new", guard::page(state, Role::Operator, get(new_agent)))
        .route("/ui/agents/{id}", viewer(get(agent)))
        .route("/ui/jobs", viewer(get(jobs)))
        .route("/ui/jobs/{id}", viewer(get(job)))
        .route("/ui/approvals", viewer(get(approvals)))
        .route("/ui/approvals/{id}", viewer(get(approval)))
        .merge(super::ui_settings::router(state))
        .merge(crate::routes::ui_login::router(state))
        .layer(axum::middleware::from_fn(security_headers))
}

/// A 303 redirect (after a form post, or to the sign-in page).
pub(crate) fn see_other(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(value) => (StatusCode::SEE_OTHER, [(header::LOCATION, value)]).into_response(),
        Err(_) => (StatusCode::SEE_OTHER, [(header::LOCATION, HeaderValue::from_static("/ui/"))]).into_response(),
    }
}

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// A page failure rendered in words with the way back, never a blank page (SPEC §11.2).
pub(crate) struct PageError(pub(crate) ApiError);

impl From<ApiError> for PageError {
    fn from(err: ApiError) -> Self {
        Self(err)
    }
}

impl From<cortex_store::StoreError> for PageError {
    fn from(err: cortex_store::StoreError) -> Self {
        Self(err.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = self.0.code.status();
        let message = if self.0.code == Code::Internal {
            tracing::error!(message = %self.0.message, "dashboard page failed");
            "Something went wrong on the server; the log has the details for this request.".to_owned()
        } else {
            self.0.message
        };
        let title = match status {
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::SERVICE_UNAVAILABLE => "Temporarily unavailable",
            _ => "Could not show this page",
        };
        let page = ErrorPage { title: title.into(), message };
        match page.render() {
            Ok(html) => (status, Html(html)).into_response(),
            Err(_) => (status, page.message).into_response(),
        }
    }
}

pub(crate) type PageResult = Result<Response, PageError>;

pub(crate) fn render(template: &impl Template) -> PageResult {
    template
        .render()
        .map(|html| Html(html).into_response())
        .map_err(|err| PageError(ApiError::new(Code::Internal, format!("template failed: {err}"))))
}

fn render_with(status: StatusCode, template: &impl Template) -> PageResult {
    render(template).map(|mut response| {
        *response.status_mut() = status;
        response
    })
}

pub(crate) fn chrome(
    principal: &Principal,
    session: Option<&SessionContext>,
    title: &str,
    active: &'static str,
) -> Chrome {
    Chrome {
        title: title.to_owned(),
        active,
        user: principal.name.clone(),
        role: principal.role.to_string(),
        csrf_token: session.map(|context| context.session.csrf_token.clone()).unwrap_or_default(),
        can_operate: principal.role.includes(Role::Operator),
        can_approve: principal.role.includes(Role::Approver),
        is_admin: principal.role.includes(Role::Admin),
    }
}

pub(crate) fn when(time: chrono::DateTime<chrono::Utc>) -> String {
    time.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

pub(crate) fn opt_when(time: Option<chrono::DateTime<chrono::Utc>>) -> String {
    time.map(when).unwrap_or_else(|| "—".into())
}

/// Dollars with four decimals (model calls cost fractions of a cent).
pub(crate) fn cost(usd: f64) -> String {
    format!("${usd:.4}")
}

/// Event types of a job's step timeline (everything but the streamed deltas and bookkeeping).
const STEP_EVENTS: &[EventType] = &[
    EventType::JobState,
    EventType::LlmMessage,
    EventType::ToolCall,
    EventType::ToolResult,
    EventType::ToolDenied,
    EventType::ToolRateLimited,
    EventType::ApprovalRequested,
    EventType::ApprovalDecided,
    EventType::SteerInjected,
    EventType::SubagentSpawned,
    EventType::SubagentFinished,
    EventType::CostAlert,
    EventType::Error,
    EventType::JobCompleted,
    EventType::JobFailed,
];
/// Steps, tool calls and messages shown on a job page.
const DETAIL_LIMIT: usize = 200;

/// `text` cut to `max` characters with an ellipsis.
pub(crate) fn clip(text: &str, max: usize) -> String {
    if text.chars().count() > max {
        format!("{}…", text.chars().take(max).collect::<String>())
    } else {
        text.to_owned()
    }
}

/// One line saying what a step did.
fn step_summary(event: &cortex_store::events::Event) -> String {
    let payload = &event.payload;
    let text = |name: &str| payload.get(name).and_then(|value| value.as_str()).unwrap_or_default().to_owned();
    match event.event_type {
        EventType::JobState => {
            let from = payload.get("from").and_then(|value| value.as_str()).unwrap_or("new");
            let mut line = format!("{from} → {}", text("to"));
            if let Some(error) = payload.get("error").and_then(|error| error.get("message")).and_then(|m| m.as_str()) {
                line.push_str(&format!(": {error}"));
            }
            line
        }
        EventType::LlmMessage => {
            let calls: Vec<String> = payload
                .get("tool_calls")
                .and_then(|calls| calls.as_array())
                .map(|calls| {
                    calls
                        .iter()
                        .filter_map(|call| call.get("name").or_else(|| call.get("tool")).and_then(|n| n.as_str()))
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            let said = clip(&text("text"), 200);
            match (said.is_empty(), calls.is_empty()) {
                (_, false) if said.is_empty() => format!("model asked for {}", calls.join(", ")),
                (_, false) => format!("{said} (and asked for {})", calls.join(", ")),
                _ => said,
            }
        }
        EventType::ApprovalRequested => format!("waiting for a human: {}", text("summary")),
        EventType::ApprovalDecided => {
            let decision = match text("decision").as_str() {
                "approve" => "approved".to_owned(),
                "reject" => "rejected".to_owned(),
                other => other.to_owned(),
            };
            let reason = text("reason");
            clip(&if reason.is_empty() { decision } else { format!("{decision}: {reason}") }, 200)
        }
        EventType::ToolCall => {
            let input = payload.get("input").map(|input| input.to_string()).unwrap_or_default();
            clip(&format!("{} {input} ({})", text("tool_ref"), text("state").replace('_', " ")), 200)
        }
        EventType::ToolResult => clip(&format!("{} {}: {}", text("tool_ref"), text("state"), text("preview")), 200),
        EventType::JobCompleted => "completed".to_owned(),
        EventType::JobFailed => clip(
            payload.get("error").and_then(|error| error.get("message")).and_then(|m| m.as_str()).unwrap_or("failed"),
            200,
        ),
        _ => clip(&payload.to_string(), 200),
    }
}

/// A list of jobs follows every job's state changes and offers a refresh when one changes.
fn jobs_live(after: i64) -> Live {
    Live { url: "/jobs/stream".into(), after, events: "job.state job.completed job.failed", reload: false }
}

/// Provider presets first, then custom providers that have a credential (as `GET /providers` lists them).
pub(crate) async fn provider_names(state: &AppState) -> Result<Vec<String>, PageError> {
    let mut providers: Vec<String> = cortex_llm::presets::all().iter().map(|preset| preset.name.to_owned()).collect();
    for credential in state.store.credentials_of_kind("llm").await? {
        let name = credential.provider_name().to_owned();
        if !providers.contains(&name) {
            providers.push(name);
        }
    }
    Ok(providers)
}

/// Resource limits as `name value` pairs, leaving out the unset ones (readable where JSON was not).
fn limits_text(limits: &impl serde::Serialize) -> String {
    match serde_json::to_value(limits) {
        Ok(serde_json::Value::Object(map)) => map
            .iter()
            .filter(|(_, value)| !value.is_null())
            .map(|(name, value)| format!("{} {value}", name.replace('_', " ")))
            .collect::<Vec<_>>()
            .join(" · "),
        _ => String::new(),
    }
}

/// Non-archived agents (up to [`AGENT_LOOKUP_LIMIT`]), for pages that offer a choice of agent.
pub(crate) async fn agent_names(state: &AppState) -> Result<Vec<Agent>, PageError> {
    Ok(state.store.list_agents(None, None, AGENT_LOOKUP_LIMIT).await?.items)
}

/// The names of the agents a page's rows refer to: one `IN (…)` over those ids, not a read of every agent.
pub(crate) async fn names_of(
    state: &AppState,
    ids: impl IntoIterator<Item = Uuid>,
) -> Result<HashMap<Uuid, String>, PageError> {
    Ok(state.store.agent_names(&ids.into_iter().collect::<Vec<_>>()).await?)
}

fn job_row(job: &Job, names: &HashMap<Uuid, String>) -> JobRow {
    let id = job.id.to_string();
    JobRow {
        short_id: short(job.id),
        id,
        agent_name: names.get(&job.agent_id).cloned().unwrap_or_else(|| job.agent_id.to_string()),
        agent_id: job.agent_id.to_string(),
        kind: job.kind.to_string(),
        status: job.status.to_string(),
        created: when(job.created_at),
        attempts: format!("{}/{}", job.attempt, job.max_attempts),
        cost: cost(job.cost_usd),
    }
}

fn agent_row(agent: &Agent) -> AgentRow {
    AgentRow {
        id: agent.id.to_string(),
        name: agent.name.clone(),
        slug: agent.slug.clone(),
        status: agent.status.to_string(),
        health: agent.health_state.to_string(),
        model: format!("{} / {}", agent.model_config.provider, agent.model_config.model),
        description: agent.description.clone(),
    }
}

/// The choices of a filter or picker `<select>` over an enum's values (`_` shown as a space), `selected`
/// marked.
pub(crate) fn enum_options<T: Copy + PartialEq + std::fmt::Display>(
    all: &[T],
    selected: Option<T>,
) -> Vec<FilterOption> {
    all.iter()
        .map(|option| FilterOption {
            value: option.to_string(),
            label: option.to_string().replace('_', " "),
            selected: Some(*option) == selected,
        })
        .collect()
}

/// The choices of an agent filter or picker, `selected` marked.
pub(crate) fn agent_options<'a>(
    agents: impl IntoIterator<Item = (Uuid, &'a str)>,
    selected: Option<Uuid>,
) -> Vec<FilterOption> {
    agents
        .into_iter()
        .map(|(id, name)| FilterOption {
            value: id.to_string(),
            label: name.to_owned(),
            selected: Some(id) == selected,
        })
        .collect()
}

/// The query of a list page that has only a cursor.
#[derive(Debug, Deserialize)]
pub(crate) struct CursorQuery {
    pub(crate) cursor: Option<String>,
}

/// Reads an optional enum filter; an unknown value is a 400 in words.
pub(crate) fn parse_filter<T: std::str::FromStr>(name: &str, value: Option<&str>) -> Result<Option<T>, PageError> {
    match value.filter(|value| !value.is_empty()) {
        None => Ok(None),
        Some(text) => {
            text.parse().map(Some).map_err(|_| PageError(ApiError::bad_request(format!("unknown {name} `{text}`"))))
        }
    }
}

pub(crate) fn parse_cursor(cursor: Option<&str>) -> Result<Option<Cursor>, PageError> {
    match cursor.filter(|value| !value.is_empty()) {
        None => Ok(None),
        Some(text) => Cursor::decode(text).map(Some).ok_or_else(|| {
            PageError(ApiError::bad_request("this page link is no longer valid; start from the first page"))
        }),
    }
}

/// A URL for `path` with the given query pairs (empty values left out).
fn link(path: &str, pairs: &[(&str, String)]) -> String {
    let mut serializer = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs.iter().filter(|(_, value)| !value.is_empty()) {
        serializer.append_pair(name, value);
    }
    let query = serializer.finish();
    if query.is_empty() { path.to_owned() } else { format!("{path}?{query}") }
}

pub(crate) fn pager(path: &str, filters: &[(&str, String)], next: Option<Cursor>, at_cursor: bool) -> Pager {
    let with_cursor = |cursor: Cursor| {
        let mut pairs = filters.to_vec();
        pairs.push(("cursor", cursor.encode()));
        link(path, &pairs)
    };
    Pager { next_url: next.map(with_cursor), first_url: at_cursor.then(|| link(path, filters)) }
}

pub(crate) fn resolve_id(text: &str, what: &str) -> Result<Uuid, PageError> {
    Uuid::parse_str(text).map_err(|_| PageError(ApiError::not_found(what)))
}

/// The last eight hex digits of an id, for tables.
pub(crate) fn short(id: Uuid) -> String {
    let text = id.simple().to_string();
    text[text.len() - 8..].to_owned()
}

/// "in 2 h 5 min" until `deadline`, or "overdue".
fn countdown(now: chrono::DateTime<chrono::Utc>, deadline: chrono::DateTime<chrono::Utc>) -> String {
    let left = deadline - now;
    if left <= chrono::Duration::zero() {
        return "overdue".into();
    }
    let (hours, minutes) = (left.num_hours(), left.num_minutes() % 60);
    if hours > 0 { format!("in {hours} h {minutes} min") } else { format!("in {} min", left.num_minutes().max(1)) }
}

fn approval_row(approval: &Approval, names: &HashMap<Uuid, String>, now: chrono::DateTime<chrono::Utc>) -> ApprovalRow {
    ApprovalRow {
        id: approval.id.to_string(),
        short_id: short(approval.id),
        agent_name: names.get(&approval.agent_id).cloned().unwrap_or_else(|| approval.agent_id.to_string()),
        agent_id: approval.agent_id.to_string(),
        risk: approval.risk.to_string(),
        status: approval.status.to_string(),
        summary: approval.action_summary.clone(),
        requested: when(approval.requested_at),
        deadline: match (approval.status, approval.decided_at) {
            (ApprovalStatus::Pending, _) => countdown(now, approval.expires_at),
            (_, Some(decided)) => format!("decided {}", when(decided)),
            (status, None) => status.to_string(),
        },
    }
}

async fn overview(
    State(state): State<AppState>,
    principal: Principal,
    session: Option<Extension<SessionContext>>,
) -> PageResult {
    let seen = state.store.last_event_seq().await?;
    let counts: HashMap<JobStatus, i64> = state.store.count_jobs_by_status().await?.into_iter().collect();
    let count = |status| counts.get(&status).copied().unwrap_or(0);
    let recent = state.store.list_jobs(&JobFilter::default(), None, 10).await?;
    let names = names_of(&state, recent.items.iter().map(|job| job.agent_id)).await?;
    render(&OverviewPage {
        chrome: chrome(&principal, session.as_deref(), "Overview", "overview"),
        agents: state.store.count_agents().await?,
        running_jobs: count(JobStatus::Running),
        waiting_jobs: count(JobStatus::WaitingForApproval),
        pending_approvals: state.store.count_pending_approvals().await?,
        failed_jobs: count(JobStatus::Failed) + count(JobStatus::DeadLetter) + count(JobStatus::TimedOut),
        recent_jobs: recent.items.iter().map(|job| job_row(job, &names)).collect(),
        live: Some(jobs_live(seen)),
        channels: super::screens::channel_rows(&state, &HashMap::new()).await?,
    })
}

#[derive(Debug, Deserialize)]
struct AgentsQuery {
    status: Option<String>,
    cursor: Option<String>,
}

async fn agents(
    State(state): State<AppState>,
    principal: Principal,
    session: Option<Extension<SessionContext>>,
    Query(query): Query<AgentsQuery>,
) -> PageResult {
    let status: Option<AgentStatus> = parse_filter("status", query.status.as_deref())?;
    let cursor = parse_cursor(query.cursor.as_deref())?;
    let page = state.store.list_agents(status, cursor, PAGE_SIZE).await?;
    let filters = [("status", status.map(|status| status.to_string()).unwrap_or_default())];
    render(&AgentsPage {
        chrome: chrome(&principal, session.as_deref(), "Agents", "agents"),
        rows: page.items.iter().map(agent_row).collect(),
        statuses: enum_options(AgentStatus::ALL, status),
        filtered: status.is_some(),
        pager: pager("/ui/agents", &filters, page.next_cursor, cursor.is_some()),
    })
}

async fn agent(
    State(state): State<AppState>,
    principal: Principal,
    session: Option<Extension<SessionContext>>,
    Path(id): Path<String>,
) -> PageResult {
    let agent = state.store.get_agent(&id).await?;
    let filter = JobFilter { agent_id: Some(agent.id), ..JobFilter::default() };
    let recent = state.store.list_jobs(&filter, None, 10).await?;
    let names = HashMap::from([(agent.id, agent.name.clone())]);
    let limits = &agent.resource_limits;
    let fields = vec![
        Field { label: "Id", value: agent.id.to_string() },
        Field { label: "Slug", value: agent.slug.clone() },
        Field { label: "Model", value: format!("{} / {}", agent.model_config.provider, agent.model_config.model) },
        Field { label: "Role", value: agent.role.clone() },
        Field { label: "Description", value: agent.description.clone() },
        Field { label: "Access mode", value: agent.access_mode.to_string() },
        Field { label: "Limits", value: limits_text(limits) },
        Field { label: "Quarantine reason", value: agent.quarantine_reason.clone().unwrap_or_else(|| "—".into()) },
        Field { label: "Created", value: when(agent.created_at) },
        Field { label: "Updated", value: when(agent.updated_at) },
    ];
    let policies = state.store.tool_policies(agent.id).await?;
    let other_tools = crate::routes::tools::catalogue_entries(&state)
        .await?
        .into_iter()
        .filter(|entry| entry.available && entry.agent_id.is_none_or(|owner| owner == agent.id))
        .map(|entry| entry.tool_ref)
        .filter(|tool_ref| !policies.iter().any(|policy| &policy.tool_ref == tool_ref))
        .collect();
    render(&AgentPage {
        chrome: chrome(&principal, session.as_deref(), &agent.name, "agents"),
        id: agent.id.to_string(),
        name: agent.name.clone(),
        status: agent.status.to_string(),
        health: agent.health_state.to_string(),
        fields,
        system_prompt: agent.system_prompt.clone(),
        policies: policies
            .iter()
            .map(|policy| PolicyRow {
                tool_ref: policy.tool_ref.clone(),
                enabled: policy.enabled,
                approval: policy.approval.to_string(),
                risk: policy.risk.map(|risk| risk.to_string()).unwrap_or_else(|| "tool default".into()),
            })
            .collect(),
        other_tools,
        jobs: recent.items.iter().map(|job| job_row(job, &names)).collect(),
        jobs_url: link("/ui/jobs", &[("agent_id", agent.id.to_string())]),
    })
}

async fn new_agent(
    State(state): State<AppState>,
    principal: Principal,
    session: Option<Extension<SessionContext>>,
) -> PageResult {
    let tools = crate::routes::tools::catalogue_entries(&state)
        .await?
        .into_iter()
        .filter(|entry| entry.available && entry.agent_id.is_none())
        .map(|entry| ToolChoice { tool_ref: entry.tool_ref, description: entry.description })
        .collect();
    render(&NewAgentPage {
        chrome: chrome(&principal, session.as_deref(), "Create an agent", "agents"),
        providers: provider_names(&state).await?,
        tools,
    })
}

#[derive(Debug, Deserialize)]
struct JobsQuery {
    status: Option<String>,
    agent_id: Option<String>,
    cursor: Option<String>,
}

async fn jobs(
    State(state): State<AppState>,
    principal: Principal,
    session: Option<Extension<SessionContext>>,
    Query(query): Query<JobsQuery>,
) -> PageResult {
    let status: Option<JobStatus> = parse_filter("status", query.status.as_deref())?;
    let agent_id: Option<Uuid> = parse_filter("agent", query.agent_id.as_deref())?;
    let cursor = parse_cursor(query.cursor.as_deref())?;
    let seen = state.store.last_event_seq().await?;
    let filter = JobFilter { status, agent_id, ..JobFilter::default() };
    let page = state.store.list_jobs(&filter, cursor, PAGE_SIZE).await?;
    let names = names_of(&state, page.items.iter().map(|job| job.agent_id)).await?;
    let agents = state.store.agent_choices(AGENT_LOOKUP_LIMIT).await?;
    let filters = [
        ("status", status.map(|status| status.to_string()).unwrap_or_default()),
        ("agent_id", agent_id.map(|id| id.to_string()).unwrap_or_default()),
    ];
    render(&JobsPage {
        chrome: chrome(&principal, session.as_deref(), "Jobs", "jobs"),
        rows: page.items.iter().map(|job| job_row(job, &names)).collect(),
        statuses: enum_options(JobStatus::ALL, status),
        agents: agent_options(agents.iter().map(|(id, name)| (*id, name.as_str())), agent_id),
        filtered: status.is_some() || agent_id.is_some(),
        pager: pager("/ui/jobs", &filters, page.next_cursor, cursor.is_some()),
        live: Some(jobs_live(seen)),
    })
}

async fn job(
    State(state): State<AppState>,
    principal: Principal,
    session: Option<Extension<SessionContext>>,
    Path(id): Path<String>,
) -> PageResult {
    // The cursor first: whatever happens after it reaches the live region, nothing falls in between.
    let seen = state.store.last_event_seq().await?;
    let job = state.store.get_job(resolve_id(&id, "job")?).await?;
    let steps = state.store.job_events_of_types(job.id, STEP_EVENTS, DETAIL_LIMIT as i64).await?;
    let mut calls = state.store.tool_calls_of_job(job.id).await?;
    calls.truncate(DETAIL_LIMIT);
    let transcript = match job.session_id {
        Some(session) => state.store.list_messages(session, 0, DETAIL_LIMIT).await?,
        None => Vec::new(),
    };
    let agent_name = match state.store.get_agent_by_id(job.agent_id).await {
        Ok(agent) => agent.name,
        Err(_) => job.agent_id.to_string(),
    };
    let optional = |value: Option<Uuid>| value.map(|id| id.to_string()).unwrap_or_else(|| "—".into());
    let fields = vec![
        Field { label: "Kind", value: job.kind.to_string() },
        Field { label: "Priority", value: job.priority.to_string() },
        Field { label: "Attempt", value: format!("{} of {}", job.attempt, job.max_attempts) },
        Field { label: "Timeout", value: format!("{} s", job.timeout_seconds) },
        Field { label: "Created", value: when(job.created_at) },
        Field { label: "Started", value: opt_when(job.started_at) },
        Field { label: "Completed", value: opt_when(job.completed_at) },
        Field { label: "Tokens in / out", value: format!("{} / {}", job.tokens_in, job.tokens_out) },
        Field { label: "Cost", value: cost(job.cost_usd) },
        Field { label: "Model calls / tool calls", value: format!("{} / {}", job.llm_calls, job.tool_calls) },
        Field { label: "Session", value: optional(job.session_id) },
        Field { label: "Parent job", value: optional(job.parent_job_id) },
        Field { label: "Approval", value: optional(job.approval_id) },
    ];
    let text = |value: Option<&serde_json::Value>| value.and_then(|value| value.as_str()).map(str::to_owned);
    render(&JobPage {
        chrome: chrome(&principal, session.as_deref(), "Job", "jobs"),
        id: job.id.to_string(),
        status: job.status.to_string(),
        agent_name,
        agent_id: job.agent_id.to_string(),
        fields,
        response: text(job.result.as_ref().and_then(|result| result.get("response"))),
        error: job.error.as_ref().map(|error| format!("{} / {}: {}", error.class, error.code, error.message)),
        prompt: text(job.payload.get("prompt")),
        can_retry: job.status.is_retryable_by_operator(),
        can_cancel: !job.status.is_terminal() && !job.cancel_requested,
        steps: steps
            .iter()
            .map(|event| StepRow {
                at: when(event.created_at),
                event: event.event_type.to_string(),
                summary: step_summary(event),
            })
            .collect(),
        tool_calls: calls
            .iter()
            .map(|call| ToolCallRow {
                turn: call.turn,
                tool_ref: call.tool_ref.clone(),
                state: call.state.to_string(),
                input: clip(&call.input.to_string(), 500),
                output: call.output.as_ref().map(|output| clip(&output.to_string(), 500)).unwrap_or_else(|| "—".into()),
                is_error: call.is_error,
                duration: call.duration_ms.map(|ms| format!("{ms} ms")).unwrap_or_else(|| "—".into()),
                approval_id: call.approval_id.map(|id| id.to_string()),
            })
            .collect(),
        transcript: transcript
            .iter()
            .map(|message| MessageRow {
                role: message.role.clone(),
                content: message.content.clone(),
                at: when(message.created_at),
                this_job: message.job_id == Some(job.id),
            })
            .collect(),
        live: (!job.status.is_terminal()).then(|| Live {
            url: format!("/jobs/{}/events", job.id),
            after: seen,
            events: "job.state job.completed job.failed",
            reload: true,
        }),
    })
}

#[derive(Debug, Deserialize)]
struct ApprovalsQuery {
    status: Option<String>,
    cursor: Option<String>,
}

async fn approvals(
    State(state): State<AppState>,
    principal: Principal,
    session: Option<Extension<SessionContext>>,
    Query(query): Query<ApprovalsQuery>,
) -> PageResult {
    // Default: the queue (pending); `status=all` shows every state.
    let status: Option<ApprovalStatus> = match query.status.as_deref() {
        None | Some("") => Some(ApprovalStatus::Pending),
        Some("all") => None,
        other => parse_filter("status", other)?,
    };
    let cursor = parse_cursor(query.cursor.as_deref())?;
    let seen = state.store.last_event_seq().await?;
    let page =
        state.store.list_approvals(&ApprovalFilter { status, ..ApprovalFilter::default() }, cursor, PAGE_SIZE).await?;
    let names = names_of(&state, page.items.iter().map(|approval| approval.agent_id)).await?;
    let now = state.store.clock().now();
    let status_value = status.map(|status| status.to_string()).unwrap_or_else(|| "all".into());
    let mut statuses = enum_options(ApprovalStatus::ALL, status);
    statuses.push(FilterOption { value: "all".into(), label: "any status".into(), selected: status.is_none() });
    render(&ApprovalsPage {
        chrome: chrome(&principal, session.as_deref(), "Approvals", "approvals"),
        rows: page.items.iter().map(|approval| approval_row(approval, &names, now)).collect(),
        statuses,
        pending_view: status == Some(ApprovalStatus::Pending),
        pager: pager("/ui/approvals", &[("status", status_value)], page.next_cursor, cursor.is_some()),
        live: Some(Live {
            url: "/approvals/stream".into(),
            after: seen,
            events: "approval.requested approval.decided",
            reload: false,
        }),
    })
}

async fn approval(
    State(state): State<AppState>,
    principal: Principal,
    session: Option<Extension<SessionContext>>,
    Path(id): Path<String>,
) -> PageResult {
    let approval = state.store.get_approval(resolve_id(&id, "approval")?).await?;
    let agent_name = match state.store.get_agent_by_id(approval.agent_id).await {
        Ok(agent) => agent.name,
        Err(_) => approval.agent_id.to_string(),
    };
    let audit = state.store.approval_audit(approval.id).await?;
    let now = state.store.clock().now();
    let pending = approval.status == ApprovalStatus::Pending;
    let fields = vec![
        Field { label: "Action type", value: approval.action_type.clone() },
        Field { label: "Tool", value: approval.tool_ref.clone().unwrap_or_else(|| "—".into()) },
        Field { label: "Arguments hash", value: approval.args_hash.clone().unwrap_or_else(|| "—".into()) },
        Field { label: "Requested", value: when(approval.requested_at) },
        Field {
            label: "Expires",
            value: if pending {
                format!("{} ({})", when(approval.expires_at), countdown(now, approval.expires_at))
            } else {
                when(approval.expires_at)
            },
        },
        Field { label: "Decided", value: opt_when(approval.decided_at) },
        Field {
            label: "Decided via",
            value: approval.decided_via.map(|via| via.to_string()).unwrap_or_else(|| "—".into()),
        },
        Field { label: "Reason", value: approval.reason.clone().unwrap_or_else(|| "—".into()) },
    ];
    render(&ApprovalPage {
        chrome: chrome(&principal, session.as_deref(), "Approval", "approvals"),
        id: approval.id.to_string(),
        status: approval.status.to_string(),
        risk: approval.risk.to_string(),
        summary: approval.action_summary.clone(),
        agent_name,
        agent_id: approval.agent_id.to_string(),
        job_id: approval.job_id.to_string(),
        fields,
        detail_json: serde_json::to_string_pretty(&approval.action_detail).unwrap_or_default(),
        pending,
        audit: audit
            .iter()
            .map(|entry| AuditLine {
                at: when(entry.created_at),
                event: entry.event.clone(),
                actor: entry
                    .actor
                    .get("name")
                    .or_else(|| entry.actor.get("type"))
                    .and_then(|value| value.as_str())
                    .unwrap_or("system")
                    .to_owned(),
                details: entry.details.to_string(),
            })
            .collect(),
        chain_valid: state.store.approval_chain_valid(approval.id).await?,
    })
}

async fn static_file(Path(name): Path<String>) -> Response {
    match cortex_ui::assets::get(&name) {
        Some(asset) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type)),
                (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable")),
            ],
            asset.bytes,
        )
            .into_response(),
        None => PageError(ApiError::not_found("file")).into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct NextQuery {
    next: Option<String>,
}

/// Only dashboard paths are followed after sign-in (no open redirect).
pub(crate) fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(path) if path.starts_with("/ui/") && !path.starts_with("//") && !path.contains('\\') => path.to_owned(),
        _ => "/ui/".to_owned(),
    }
}

async fn setup_open(state: &AppState) -> Result<bool, PageError> {
    Ok(!state.store.dashboard_setup_done().await? && state.store.count_password_users().await? == 0)
}

async fn login_page(State(state): State<AppState>, Query(query): Query<NextQuery>) -> PageResult {
    let next = safe_next(query.next.as_deref());
    render(&LoginPage {
        error: None,
        notice: None,
        email: String::new(),
        providers: crate::routes::ui_login::buttons(&state, &next).await?,
        next,
        setup_open: setup_open(&state).await?,
    })
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    email: String,
    password: String,
    next: Option<String>,
}

async fn login_form(
    State(state): State<AppState>,
    meta: ClientMeta,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> PageResult {
    let next = safe_next(form.next.as_deref());
    let providers = crate::routes::ui_login::buttons(&state, &next).await?;
    let refuse = |status: StatusCode, error: String| {
        LoginPage {
            error: Some(error),
            notice: None,
            email: form.email.clone(),
            next: next.clone(),
            setup_open: false,
            providers: providers.clone(),
        }
        .render()
        .map(|html| (status, Html(html)).into_response())
        .map_err(|err| PageError(ApiError::new(Code::Internal, err.to_string())))
    };
    if !crate::auth::is_same_origin(&state, &headers) {
        return refuse(
            StatusCode::FORBIDDEN,
            "This sign-in did not come from this server's page; open it and try again.".into(),
        );
    }
    match password_login(&state, &meta, &form.email, &form.password).await {
        Ok(user) => {
            let (_, cookie) = start_session(&state, &meta, &user, "password").await?;
            let mut response = see_other(&next);
            response.headers_mut().append(header::SET_COOKIE, cookie);
            Ok(response)
        }
        Err(err) if matches!(err.code, Code::Unauthorized | Code::RateLimited) => {
            let status = err.code.status();
            let retry_after = err.retry_after;
            let mut response = refuse(status, format!("{}.", capitalise(&err.message)))?;
            if let Some(seconds) = retry_after
                && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
            {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            Ok(response)
        }
        Err(err) => Err(err.into()),
    }
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map(|first| first.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

async fn setup_page(State(state): State<AppState>) -> PageResult {
    if !setup_open(&state).await? {
        return render(&LoginPage {
            error: None,
            notice: Some("Setup is complete. Sign in with your email and password.".into()),
            email: String::new(),
            next: "/ui/".into(),
            setup_open: false,
            providers: crate::routes::ui_login::buttons(&state, "/ui/").await?,
        });
    }
    render(&SetupPage { error: None, email: String::new(), display_name: String::new() })
}

#[derive(Debug, Deserialize)]
struct SetupForm {
    bootstrap_key: String,
    display_name: String,
    email: String,
    password: String,
}

/// The throttling account setup attempts count against.
const SETUP_ACCOUNT: &str = "(first-run setup)";

async fn setup_form(
    State(state): State<AppState>,
    meta: ClientMeta,
    headers: HeaderMap,
    Form(form): Form<SetupForm>,
) -> PageResult {
    let refuse = |status: StatusCode, error: &str| {
        render_with(
            status,
            &SetupPage {
                error: Some(error.to_owned()),
                email: form.email.clone(),
                display_name: form.display_name.clone(),
            },
        )
    };
    if !crate::auth::is_same_origin(&state, &headers) {
        return refuse(StatusCode::FORBIDDEN, "This form did not come from this server's page; open it and try again.");
    }
    if !setup_open(&state).await? {
        return refuse(StatusCode::CONFLICT, "Setup was already done. Sign in instead.");
    }
    if let Err(err) = check_throttle(&state, &meta.ip, SETUP_ACCOUNT).await {
        return refuse(StatusCode::TOO_MANY_REQUESTS, &format!("{}.", capitalise(&err.message)));
    }
    let presented = form.bootstrap_key.trim();
    let key = match state.store.find_api_key(&crate::auth::lookup_prefix(presented)).await? {
        Some(found)
            if cortex_core::api_key::verify(presented, &found.hash)
                && found.key.is_active(state.store.clock().now())
                && found.key.role == Role::Admin
                && matches!(found.key.source.as_str(), "bootstrap" | "env") =>
        {
            found.key
        }
        _ => {
            record_failure(&state, &meta.ip, SETUP_ACCOUNT).await?;
            return refuse(
                StatusCode::UNAUTHORIZED,
                "That is not the bootstrap admin key (the one `cortex serve` printed at first start, or CORTEX_API_KEY).",
            );
        }
    };
    let email = normalise_email(&form.email);
    let name = form.display_name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return refuse(StatusCode::BAD_REQUEST, "Your name must be 1–100 characters.");
    }
    if !email.contains('@') || email.len() > 254 {
        return refuse(StatusCode::BAD_REQUEST, "Enter a valid email address.");
    }
    if let Err(weak) = cortex_auth::password::check_policy(&form.password) {
        return refuse(StatusCode::BAD_REQUEST, &format!("{}.", capitalise(&weak.to_string())));
    }
    let password = form.password.clone();
    let hash = tokio::task::spawn_blocking(move || cortex_auth::password::hash(&password))
        .await
        .map_err(|err| ApiError::new(Code::Internal, err.to_string()))?
        .map_err(|err| ApiError::new(Code::Internal, err.to_string()))?;
    let mut tx = state.store.begin().await?;
    let user = match tx.insert_user(name, Some(&email), Role::Admin).await {
        Ok(user) => user,
        Err(cortex_store::StoreError::Conflict { .. }) => {
            return refuse(StatusCode::CONFLICT, "A user with this email exists already.");
        }
        Err(err) => return Err(err.into()),
    };
    tx.set_password_hash(user.id, &hash).await?;
    match tx.complete_dashboard_setup(user.id, key.id).await {
        Ok(()) => {}
        Err(cortex_store::StoreError::StaleState { .. }) => {
            return refuse(StatusCode::CONFLICT, "Setup was already done. Sign in instead.");
        }
        Err(err) => return Err(err.into()),
    }
    tx.audit(cortex_store::audit::NewAudit {
        actor_type: "api_key",
        actor_id: Some(key.id.to_string()),
        action: "user.create".into(),
        target_type: "user",
        target_id: Some(user.id.to_string()),
        details: serde_json::json!({"role": Role::Admin, "via": "first-run setup"}),
        ip: Some(meta.ip.clone()),
        request_id: None,
    })
    .await?;
    tx.commit().await?;
    let (_, cookie) = start_session(&state, &meta, &user, "setup").await?;
    let mut response = see_other("/ui/");
    response.headers_mut().append(header::SET_COOKIE, cookie);
    Ok(response)
}
