//! The agent detail tabs beyond the overview (SPEC §11.2 "Agent detail"): live output (the agent's SSE
//! stream, steer box, quarantine / release / kill), sessions with their history, and cost per day and
//! per job kind. Same rules as [`super::ui`]: pages read the store and render a `cortex-ui` template;
//! every action is a call of the JSON API from htmx (`/agents/{id}/steer`, `routes/agent_health.rs`), so
//! its operator guard and CSRF check apply whatever the page shows. Viewers see no controls.

use axum::Extension;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use cortex_core::agent::HealthState;
use cortex_core::role::Role;
use cortex_store::usage::{UsageBucket, UsageKey, day_of};
use cortex_ui::agent::{AgentCostPage, AgentLivePage, AgentSessionPage, AgentSessionsPage, SessionRow, UsageRow, bar};
use cortex_ui::views::{Field, MessageRow};
use serde::Deserialize;

use super::ui::{
    CursorQuery, PAGE_SIZE, PageError, PageResult, chrome, cost, opt_when, pager, parse_cursor, render, resolve_id,
    short, when,
};
use crate::auth::{Principal, SessionContext};
use crate::error::ApiError;
use crate::guard;
use crate::state::AppState;

/// Days the cost charts cover, today included.
pub(crate) const COST_DAYS: u32 = 14;
/// Messages per page of a session's history.
const MESSAGES_PER_PAGE: usize = 200;

/// The routes of these tabs (merged into the dashboard router, which adds the security headers).
pub(crate) fn router(state: &AppState) -> Router<AppState> {
    let viewer = |route| guard::page(state, Role::Viewer, route);
    Router::new()
        .route("/ui/agents/{id}/live", viewer(get(live)))
        .route("/ui/agents/{id}/sessions", viewer(get(sessions)))
        .route("/ui/agents/{id}/sessions/{session}", viewer(get(session)))
        .route("/ui/agents/{id}/cost", viewer(get(usage)))
}

async fn live(
    State(state): State<AppState>,
    principal: Principal,
    session: Option<Extension<SessionContext>>,
    Path(id): Path<String>,
) -> PageResult {
    // The cursor first: whatever happens after it reaches the stream, nothing falls in between.
    let seen = state.store.last_event_seq().await?;
    let agent = state.store.get_agent(&id).await?;
    let active = state.store.count_active_jobs(agent.id).await?;
    let fields = vec![
        Field { label: "Unfinished jobs", value: active.to_string() },
        Field { label: "Breaker window since", value: opt_when(agent.health_reset_at) },
    ];
    render(&AgentLivePage {
        chrome: chrome(&principal, session.as_deref(), &format!("Live output: {}", agent.name), "agents"),
        id: agent.id.to_string(),
        name: agent.name.clone(),
        status: agent.status.to_string(),
        health: agent.health_state.to_string(),
        quarantined: agent.health_state == HealthState::Quarantined,
        reason: agent.quarantine_reason.clone().unwrap_or_else(|| "—".into()),
        fields,
        after: seen,
    })
}

async fn sessions(
    State(state): State<AppState>,
    principal: Principal,
    session: Option<Extension<SessionContext>>,
    Path(id): Path<String>,
    Query(query): Query<CursorQuery>,
) -> PageResult {
    let agent = state.store.get_agent(&id).await?;
    let cursor = parse_cursor(query.cursor.as_deref())?;
    let page = state.store.list_sessions(agent.id, cursor, PAGE_SIZE).await?;
    let users: Vec<_> = page.items.iter().filter_map(|session| session.user_id).collect();
    let names = state.store.user_names(&users).await?;
    let rows = page
        .items
        .iter()
        .map(|item| SessionRow {
            id: item.id.to_string(),
            short_id: short(item.id),
            user: match item.user_id {
                Some(user) => names.get(&user).cloned().unwrap_or_else(|| user.to_string()),
                None => "API caller".into(),
            },
            origin: item.origin.clone(),
            status: item.status.clone(),
            messages: item.message_count,
            tokens: format!("{} / {}", item.tokens_in, item.tokens_out),
            cost: cost(item.cost_usd),
            last_activity: when(item.last_activity_at),
        })
        .collect();
    render(&AgentSessionsPage {
        chrome: chrome(&principal, session.as_deref(), &format!("Sessions: {}", agent.name), "agents"),
        id: agent.id.to_string(),
        name: agent.name.clone(),
        rows,
        pager: pager(&format!("/ui/agents/{}/sessions", agent.id), &[], page.next_cursor, cursor.is_some()),
    })
}

#[derive(Debug, Deserialize)]
struct HistoryQuery {
    /// Show the messages after this sequence number.
    after: Option<i64>,
}

async fn session(
    State(state): State<AppState>,
    principal: Principal,
    web_session: Option<Extension<SessionContext>>,
    Path((id, session_id)): Path<(String, String)>,
    Query(query): Query<HistoryQuery>,
) -> PageResult {
    let agent = state.store.get_agent(&id).await?;
    let item = state.store.get_session(resolve_id(&session_id, "session")?).await?;
    if item.agent_id != agent.id {
        return Err(PageError::from(ApiError::not_found("session of this agent")));
    }
    let after = query.after.unwrap_or(0).max(0);
    let messages = state.store.list_messages(item.id, after, MESSAGES_PER_PAGE).await?;
    let user = match item.user_id {
        Some(user) => state.store.user_names(&[user]).await?.remove(&user).unwrap_or_else(|| user.to_string()),
        None => "API caller".into(),
    };
    let fields = vec![
        Field { label: "User", value: user },
        Field { label: "Origin", value: item.origin.clone() },
        Field { label: "Messages", value: item.message_count.to_string() },
        Field { label: "Tokens in / out", value: format!("{} / {}", item.tokens_in, item.tokens_out) },
        Field { label: "Cost", value: cost(item.cost_usd) },
        Field { label: "Started", value: when(item.created_at) },
        Field { label: "Last activity", value: when(item.last_activity_at) },
        Field { label: "Closed", value: opt_when(item.closed_at) },
    ];
    let later_url = (messages.len() == MESSAGES_PER_PAGE).then(|| {
        let last = messages.last().map_or(after, |message| message.seq);
        format!("/ui/agents/{}/sessions/{}?after={last}", agent.id, item.id)
    });
    render(&AgentSessionPage {
        chrome: chrome(&principal, web_session.as_deref(), "Session", "agents"),
        id: agent.id.to_string(),
        name: agent.name.clone(),
        session_id: item.id.to_string(),
        status: item.status.clone(),
        fields,
        messages: messages
            .iter()
            .map(|message| MessageRow {
                role: message.role.clone(),
                content: message.content.clone(),
                at: when(message.created_at),
                this_job: true,
            })
            .collect(),
        later_url,
    })
}

/// Rows of a chart with bar lengths relative to its largest tokens and cost values.
fn usage_rows(buckets: Vec<(String, Option<&UsageBucket>)>) -> Vec<UsageRow> {
    let tokens = |bucket: Option<&UsageBucket>| bucket.map_or(0, |b| b.tokens_in + b.tokens_out);
    let max_tokens = buckets.iter().map(|(_, bucket)| tokens(*bucket)).max().unwrap_or(0) as f64;
    let max_cost = buckets.iter().map(|(_, bucket)| bucket.map_or(0.0, |b| b.cost_usd)).fold(0.0, f64::max);
    buckets
        .into_iter()
        .map(|(label, bucket)| {
            let usd = bucket.map_or(0.0, |b| b.cost_usd);
            UsageRow {
                label,
                jobs: bucket.map_or(0, |b| b.jobs),
                tokens_in: bucket.map_or(0, |b| b.tokens_in),
                tokens_out: bucket.map_or(0, |b| b.tokens_out),
                tokens: tokens(bucket),
                cost: cost(usd),
                tokens_bar: bar(tokens(bucket) as f64, max_tokens),
                cost_bar: bar(usd, max_cost),
            }
        })
        .collect()
}

/// The date of a day number (days since 1970-01-01, UTC).
fn day_label(day: i64) -> String {
    chrono::DateTime::from_timestamp(day * 86_400, 0).map(|time| time.date_naive().to_string()).unwrap_or_default()
}

async fn usage(
    State(state): State<AppState>,
    principal: Principal,
    session: Option<Extension<SessionContext>>,
    Path(id): Path<String>,
) -> PageResult {
    let agent = state.store.get_agent(&id).await?;
    let today = day_of(state.store.clock().now());
    let first = today - i64::from(COST_DAYS) + 1;
    let since = chrono::DateTime::from_timestamp(first * 86_400, 0).unwrap_or_default();
    let by_day = state.store.agent_usage_by_day(agent.id, since).await?;
    let by_kind = state.store.agent_usage_by_kind(agent.id, since).await?;
    let days = (first..=today)
        .map(|day| (day_label(day), by_day.iter().find(|bucket| bucket.key == UsageKey::Day(day))))
        .collect();
    let kinds = by_kind
        .iter()
        .map(|bucket| match &bucket.key {
            UsageKey::Kind(kind) => (kind.replace('_', " "), Some(bucket)),
            UsageKey::Day(day) => (day_label(*day), Some(bucket)),
        })
        .collect();
    render(&AgentCostPage {
        chrome: chrome(&principal, session.as_deref(), &format!("Cost: {}", agent.name), "agents"),
        id: agent.id.to_string(),
        name: agent.name.clone(),
        days: COST_DAYS,
        total_jobs: by_kind.iter().map(|bucket| bucket.jobs).sum(),
        total_tokens: by_kind.iter().map(|bucket| bucket.tokens_in + bucket.tokens_out).sum(),
        total_cost: cost(by_kind.iter().map(|bucket| bucket.cost_usd).sum()),
        by_day: usage_rows(days),
        by_kind: usage_rows(kinds),
    })
}
