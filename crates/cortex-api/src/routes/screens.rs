//! Dashboard screens beyond the first milestone (SPEC §11.2): the memory explorer, the channels pages,
//! editing an agent and the audit log. Same rules as [`super::ui`]: pages read the store (or the runtime's memory service) and render
//! a `cortex-ui` template; every change a page offers is a call of the JSON API from htmx, so the API's
//! role guards, validation and CSRF check apply unchanged.

use std::collections::HashMap;

use axum::Extension;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use cortex_core::agent::{AccessMode, AgentStatus};
use cortex_core::memory::{MemorySource, MemoryType};
use cortex_core::role::Role;
use cortex_memory::{SearchMode, SearchQuery};
use cortex_store::audit::AuditFilter;
use cortex_store::memory::{MemoryFilter, MemoryRecord};
use cortex_ui::views::{
    AllowRow, ApiKeysPage, AuditPage, AuditRow, BindingRow, ChannelPage, ChannelRow, ChannelsPage, EditAgentPage,
    Field, FilterOption, KeyRow, McpPage, McpRow, MemoryItemPage, MemoryPage, MemoryRow, OutboxRow, Pager, ScoreParts,
};
use serde::Deserialize;
use uuid::Uuid;

use super::ui::{
    AGENT_LOOKUP_LIMIT, CursorQuery, PAGE_SIZE, PageError, PageResult, agent_names, agent_options, chrome, clip,
    enum_options, opt_when, pager, parse_cursor, parse_filter, provider_names, render, resolve_id, when,
};
use crate::auth::{Principal, SessionContext};
use crate::error::ApiError;
use crate::guard;
use crate::state::AppState;

/// The routes of these screens (merged into the dashboard router, which adds the security headers).
pub(crate) fn router(state: &AppState) -> Router<AppState> {
    let viewer = |route| guard::page(state, Role::Viewer, route);
    Router::new()
        .route("/ui/memory", viewer(get(memory)))
        .route("/ui/memory/{agent}/{id}", viewer(get(memory_item)))
        .route("/ui/channels", viewer(get(channels)))
        .route("/ui/channels/{id}", viewer(get(channel)))
        .route("/ui/agents/{id}/edit", guard::page(state, Role::Operator, get(edit_agent)))
        .route("/ui/audit", guard::page(state, Role::Admin, get(audit)))
        .route("/ui/settings/api-keys", viewer(get(api_keys)))
        .route("/ui/mcp", viewer(get(mcp_servers)))
}

fn memory_row(record: &MemoryRecord, score: Option<ScoreParts>) -> MemoryRow {
    MemoryRow {
        id: record.id.to_string(),
        memory_type: record.memory_type.replace('_', " "),
        content: record.content.clone(),
        tags: record.tags.join(", "),
        importance: record.importance,
        source: source_name(&record.source),
        created: when(record.created_at),
        score,
    }
}

fn source_name(db: &str) -> String {
    MemorySource::from_db(db).map_or_else(|| db.to_owned(), |source| source.as_str().to_owned())
}

#[derive(Debug, Deserialize)]
struct MemoryQuery {
    agent: Option<String>,
    q: Option<String>,
    #[serde(rename = "type")]
    memory_type: Option<String>,
    cursor: Option<String>,
}

/// Search hits shown per page (a search returns one page, best first).
const SEARCH_LIMIT: usize = 50;

async fn memory(
    State(state): State<AppState>,
    principal: Principal,
    session: Option<Extension<SessionContext>>,
    Query(query): Query<MemoryQuery>,
) -> PageResult {
    // The picker needs ids and names only, not whole agents.
    let agents = state.store.agent_choices(AGENT_LOOKUP_LIMIT).await?;
    let chrome = chrome(&principal, session.as_deref(), "Memory", "memory");
    let memory_type: Option<MemoryType> = parse_filter("memory type", query.memory_type.as_deref())?;
    // The chosen agent, else the first one: the explorer always shows someone's memory.
    let agent = match (query.agent.as_deref().filter(|text| !text.is_empty()), agents.first()) {
        (Some(text), _) => Some(state.store.get_agent(text).await?),
        (None, Some((first, _))) => Some(state.store.get_agent_by_id(*first).await?),
        (None, None) => None,
    };
    let Some(agent) = agent else {
        return render(&MemoryPage {
            chrome,
            agents: Vec::new(),
            agent_id: String::new(),
            agent_name: String::new(),
            query: String::new(),
            types: enum_options(MemoryType::ALL, None),
            rows: Vec::new(),
            mode: String::new(),
            notice: None,
            filtered: false,
            pager: Pager::default(),
        });
    };
    let text = query.q.as_deref().map(str::trim).unwrap_or_default().to_owned();
    if text.chars().count() > 2000 {
        return Err(PageError::from(ApiError::bad_request("the search text is longer than 2000 characters")));
    }
    let (rows, mode, notice, pager) = if text.is_empty() {
        let cursor = parse_cursor(query.cursor.as_deref())?;
        let filter =
            MemoryFilter { memory_type: memory_type.map(|value| value.as_str().to_owned()), ..MemoryFilter::default() };
        let page = state.store.list_memories(agent.id, &filter, cursor, PAGE_SIZE).await?;
        let filters =
            [("agent", agent.id.to_string()), ("type", memory_type.map(|value| value.to_string()).unwrap_or_default())];
        let rows = page.items.iter().map(|record| memory_row(record, None)).collect();
        (rows, String::new(), None, pager("/ui/memory", &filters, page.next_cursor, cursor.is_some()))
    } else {
        let search = SearchQuery {
            text: text.clone(),
            limit: SEARCH_LIMIT,
            types: memory_type.into_iter().collect(),
            tags: Vec::new(),
        };
        let results = state
            .runtime
            .memory
            .search(agent.id, &search)
            .await
            .map_err(|err| PageError::from(ApiError::bad_request(err.to_string())))?;
        let three = |value: f64| format!("{value:.3}");
        let rows = results
            .items
            .iter()
            .map(|hit| {
                let parts = ScoreParts {
                    total: three(hit.score),
                    similarity: three(hit.parts.similarity),
                    recency: three(hit.parts.recency),
                    utility: three(hit.parts.utility),
                };
                memory_row(&hit.record, Some(parts))
            })
            .collect();
        let (mode, notice) = match (results.mode, results.degraded) {
            (SearchMode::Hybrid, _) => ("hybrid (full-text and vector)", None),
            (SearchMode::Keyword, true) => {
                ("keyword", Some("the embedding service or vector index is unavailable right now".to_owned()))
            }
            (SearchMode::Keyword, false) => ("keyword", Some("no embedder is configured".to_owned())),
        };
        (rows, mode.to_owned(), notice, Pager::default())
    };
    render(&MemoryPage {
        chrome,
        agents: agent_options(agents.iter().map(|(id, name)| (*id, name.as_str())), Some(agent.id)),
        agent_id: agent.id.to_string(),
        agent_name: agent.name.clone(),
        query: text.clone(),
        types: enum_options(MemoryType::ALL, memory_type),
        rows,
        mode,
        notice,
        filtered: !text.is_empty() || memory_type.is_some(),
        pager,
    })
}

async fn memory_item(
    State(state): State<AppState>,
    principal: Principal,
    session: Option<Extension<SessionContext>>,
    Path((agent, id)): Path<(String, String)>,
) -> PageResult {
    let agent = state.store.get_agent(&agent).await?;
    let id = resolve_id(&id, "memory")?;
    let record =
        state.runtime.memory.get(agent.id, id).await.map_err(|_| PageError::from(ApiError::not_found("memory")))?;
    let optional = |value: Option<Uuid>| value.map(|id| id.to_string()).unwrap_or_else(|| "—".into());
    let fields = vec![
        Field { label: "Id", value: record.id.to_string() },
        Field { label: "Source", value: source_name(&record.source) },
        Field { label: "Importance", value: record.importance.to_string() },
        Field { label: "Confidence", value: format!("{:.2}", record.confidence) },
        Field { label: "Tags", value: record.tags.join(", ") },
        Field { label: "People", value: record.people.join(", ") },
        Field { label: "Projects", value: record.projects.join(", ") },
        Field {
            label: "Recalled",
            value: format!("{} times, last {}", record.access_count, opt_when(record.last_accessed_at)),
        },
        Field {
            label: "Vector",
            value: record.embedding_model.clone().unwrap_or_else(|| "none (keyword search only)".into()),
        },
        Field { label: "From job", value: optional(record.job_id) },
        Field { label: "Replaced by", value: optional(record.superseded_by) },
        Field { label: "Created", value: when(record.created_at) },
        Field { label: "Updated", value: when(record.updated_at) },
    ];
    let memory_type = record.memory_type.parse::<MemoryType>().ok();
    render(&MemoryItemPage {
        chrome: chrome(&principal, session.as_deref(), "Memory", "memory"),
        agent_id: agent.id.to_string(),
        agent_name: agent.name.clone(),
        id: record.id.to_string(),
        content: record.content.clone(),
        memory_type: record.memory_type.replace('_', " "),
        types: enum_options(MemoryType::ALL, memory_type),
        tags: record.tags.join(", "),
        importance: record.importance,
        confidence: format!("{:.2}", record.confidence),
        fields,
        read_only: record.source == MemorySource::Markdown.db_name(),
    })
}

fn channel_row(
    state: &AppState,
    channel: &cortex_store::channels::Channel,
    names: &HashMap<Uuid, String>,
) -> ChannelRow {
    let view = super::channels::ChannelView::of(state, channel.clone());
    let bot = view
        .bot_identity
        .as_ref()
        .and_then(|identity| identity.get("username").or_else(|| identity.get("name")))
        .and_then(|value| value.as_str())
        .map(|name| format!("@{name}"))
        .unwrap_or_else(|| "—".into());
    ChannelRow {
        id: view.id.to_string(),
        name: view.name,
        channel_type: view.channel_type,
        state: view.state,
        enabled: view.enabled,
        inbound_policy: view.inbound_policy,
        default_agent: view
            .default_agent_id
            .map(|id| names.get(&id).cloned().unwrap_or_else(|| id.to_string()))
            .unwrap_or_else(|| "none".into()),
        bot,
        last_error: view.last_error.unwrap_or_default(),
        last_activity: opt_when(view.last_activity_at),
        source: view.source,
    }
}

/// Every channel as a row, newest first, with its health in this process (the channels list and the
/// overview); a default agent missing from `names` shows as its id.
pub(super) async fn channel_rows(
    state: &AppState,
    names: &HashMap<Uuid, String>,
) -> Result<Vec<ChannelRow>, PageError> {
    let mut list = state.store.channels().await?;
    list.reverse();
    Ok(list.iter().map(|channel| channel_row(state, channel, names)).collect())
}

async fn channels(
    State(state): State<AppState>,
    principal: Principal,
    session: Option<Extension<SessionContext>>,
) -> PageResult {
    let agents = agent_names(&state).await?;
    let names = agents.iter().map(|agent| (agent.id, agent.name.clone())).collect();
    render(&ChannelsPage {
        chrome: chrome(&principal, session.as_deref(), "Channels", "channels"),
        rows: channel_rows(&state, &names).await?,
        agents: agent_options(agents.iter().map(|agent| (agent.id, agent.name.as_str())), None),
    })
}

async fn channel(
    State(state): State<AppState>,
    principal: Principal,
    session: Option<Extension<SessionContext>>,
    Path(id): Path<String>,
    Query(query): Query<CursorQuery>,
) -> PageResult {
    let channel = state.store.channel(resolve_id(&id, "channel")?).await?;
    let agents = agent_names(&state).await?;
    let names: HashMap<Uuid, String> = agents.iter().map(|agent| (agent.id, agent.name.clone())).collect();
    let row = channel_row(&state, &channel, &names);
    let cursor = parse_cursor(query.cursor.as_deref())?;
    let failures = state.store.list_outbox(channel.id, Some("failed"), cursor, PAGE_SIZE).await?;
    let bindings = state.store.channel_bindings(channel.id).await?;
    let settings = serde_json::to_string(&channel.config).unwrap_or_default();
    let fields = vec![
        Field { label: "Type", value: row.channel_type.clone() },
        Field { label: "Bot", value: row.bot.clone() },
        Field { label: "State", value: if row.enabled { "enabled".into() } else { "disabled".into() } },
        Field { label: "Inbound", value: row.inbound_policy.clone() },
        Field { label: "Default agent", value: row.default_agent.clone() },
        Field { label: "Settings", value: settings },
        Field { label: "Secrets set", value: channel.secret_keys.join(", ") },
        Field { label: "Last activity", value: row.last_activity.clone() },
        Field { label: "Source", value: row.source.clone() },
        Field { label: "Created", value: when(channel.created_at) },
    ];
    render(&ChannelPage {
        chrome: chrome(&principal, session.as_deref(), "Channel", "channels"),
        read_only: channel.source == "env",
        agents: agent_options(agents.iter().map(|agent| (agent.id, agent.name.as_str())), channel.default_agent_id),
        bindings: bindings
            .iter()
            .map(|binding| BindingRow {
                id: binding.id.to_string(),
                agent_id: binding.agent_id.to_string(),
                agent_name: names.get(&binding.agent_id).cloned().unwrap_or_else(|| binding.agent_id.to_string()),
                chat_id: binding.chat_id.clone(),
                respond_to: binding.respond_to.clone().unwrap_or_else(|| "all (direct), mentions (groups)".into()),
                created: when(binding.created()),
            })
            .collect(),
        failures: failures
            .items
            .iter()
            .map(|item| OutboxRow {
                id: item.id.to_string(),
                status: item.status.clone(),
                attempts: item.attempts,
                target: item
                    .target
                    .get("chat_id")
                    .map(|chat| chat.to_string())
                    .unwrap_or_else(|| item.target.to_string()),
                last_error: item.last_error.clone().unwrap_or_default(),
                updated: when(item.updated_at),
            })
            .collect(),
        failures_pager: pager(&format!("/ui/channels/{}", channel.id), &[], failures.next_cursor, cursor.is_some()),
        allowlist: state
            .store
            .allowlist(channel.id)
            .await?
            .into_iter()
            .map(|entry| AllowRow {
                platform_user_id: entry.platform_user_id,
                created: when(chrono::DateTime::from_timestamp_millis(entry.created_at).unwrap_or_default()),
            })
            .collect(),
        channel: row,
        fields,
    })
}

async fn edit_agent(
    State(state): State<AppState>,
    principal: Principal,
    session: Option<Extension<SessionContext>>,
    Path(id): Path<String>,
) -> PageResult {
    let agent = state.store.get_agent(&id).await?;
    let mut providers = provider_names(&state).await?;
    if !providers.contains(&agent.model_config.provider) {
        providers.push(agent.model_config.provider.clone());
    }
    let mut statuses = vec![AgentStatus::Active, AgentStatus::Disabled];
    if !statuses.contains(&agent.status) {
        statuses.push(agent.status);
    }
    render(&EditAgentPage {
        chrome: chrome(&principal, session.as_deref(), "Edit agent", "agents"),
        id: agent.id.to_string(),
        name: agent.name.clone(),
        description: agent.description.clone(),
        role: agent.role.clone(),
        system_prompt: agent.system_prompt.clone(),
        providers: providers
            .into_iter()
            .map(|name| {
                let selected = name == agent.model_config.provider;
                FilterOption { label: name.clone(), value: name, selected }
            })
            .collect(),
        model: agent.model_config.model.clone(),
        model_config_json: serde_json::to_string(&agent.model_config).unwrap_or_default(),
        temperature: agent.model_config.temperature.map(|value| value.to_string()).unwrap_or_default(),
        requires_approval: agent.model_config.requires_approval,
        statuses: enum_options(&statuses, Some(agent.status)),
        access_modes: enum_options(AccessMode::ALL, Some(agent.access_mode)),
        memory_enabled: agent.memory.enabled,
        memory_auto_extract: agent.memory.auto_extract,
    })
}

#[derive(Debug, Deserialize)]
struct AuditQuery {
    action: Option<String>,
    target_type: Option<String>,
    cursor: Option<String>,
}

async fn audit(
    State(state): State<AppState>,
    principal: Principal,
    session: Option<Extension<SessionContext>>,
    Query(query): Query<AuditQuery>,
) -> PageResult {
    let text = |value: Option<String>| value.map(|text| text.trim().to_owned()).filter(|text| !text.is_empty());
    let (action, target_type) = (text(query.action), text(query.target_type));
    let cursor = parse_cursor(query.cursor.as_deref())?;
    let filter = AuditFilter { action: action.clone(), target_type: target_type.clone(), target_id: None };
    let page = state.store.list_audit(&filter, cursor, PAGE_SIZE).await?;
    let filters =
        [("action", action.clone().unwrap_or_default()), ("target_type", target_type.clone().unwrap_or_default())];
    render(&AuditPage {
        chrome: chrome(&principal, session.as_deref(), "Audit log", "audit"),
        rows: page
            .items
            .iter()
            .map(|entry| AuditRow {
                at: when(entry.created_at()),
                actor: match &entry.actor_id {
                    Some(id) => format!("{} {id}", entry.actor_type),
                    None => entry.actor_type.clone(),
                },
                action: entry.action.clone(),
                target: match &entry.target_id {
                    Some(id) => format!("{} {id}", entry.target_type),
                    None => entry.target_type.clone(),
                },
                details: clip(&entry.details.to_string(), 300),
                ip: entry.ip.clone().unwrap_or_else(|| "—".into()),
            })
            .collect(),
        filtered: action.is_some() || target_type.is_some(),
        action: action.unwrap_or_default(),
        target_type: target_type.unwrap_or_default(),
        pager: pager("/ui/audit", &filters, page.next_cursor, cursor.is_some()),
    })
}

async fn api_keys(
    State(state): State<AppState>,
    principal: Principal,
    session: Option<Extension<SessionContext>>,
    Query(query): Query<CursorQuery>,
) -> PageResult {
    let cursor = parse_cursor(query.cursor.as_deref())?;
    let listing = super::keys::listing_of(&principal);
    let page = state.store.list_api_keys(listing, cursor, PAGE_SIZE).await?;
    let now = state.store.clock().now();
    render(&ApiKeysPage {
        chrome: chrome(&principal, session.as_deref(), "API keys", "api-keys"),
        rows: page
            .items
            .iter()
            .map(|key| KeyRow {
                id: key.id.to_string(),
                name: key.name.clone(),
                prefix: key.prefix.clone(),
                role: key.role.to_string(),
                source: key.source.clone(),
                state: if key.revoked_at.is_some() {
                    "revoked".into()
                } else if key.is_active(now) {
                    "active".into()
                } else {
                    "expired".into()
                },
                created: when(key.created_at),
                last_used: opt_when(key.last_used_at),
                expires: key.expires_at.map(when).unwrap_or_else(|| "never".into()),
                can_revoke: super::keys::manages(&principal, key),
            })
            .collect(),
        roles: Role::ALL
            .iter()
            .filter(|role| **role != Role::None && principal.role.includes(**role))
            .map(|role| role.to_string())
            .collect(),
        pager: pager("/ui/settings/api-keys", &[], page.next_cursor, cursor.is_some()),
    })
}

async fn mcp_servers(
    State(state): State<AppState>,
    principal: Principal,
    session: Option<Extension<SessionContext>>,
    Query(query): Query<CursorQuery>,
) -> PageResult {
    let cursor = parse_cursor(query.cursor.as_deref())?;
    let page = state.store.list_mcp_servers(cursor, PAGE_SIZE).await?;
    let mut rows = Vec::with_capacity(page.items.len());
    for server in &page.items {
        let tools = state.store.mcp_tools_of_server(server.id).await?;
        let target = match server.transport.as_str() {
            "stdio" => std::iter::once(server.command.clone().unwrap_or_default())
                .chain(server.args.iter().cloned())
                .collect::<Vec<_>>()
                .join(" "),
            _ => server.url.clone().unwrap_or_default(),
        };
        rows.push(McpRow {
            id: server.id.to_string(),
            name: server.name.clone(),
            slug: server.slug.clone(),
            transport: server.transport.clone(),
            target,
            secrets: server.env_keys.iter().chain(server.header_keys.iter()).cloned().collect::<Vec<_>>().join(", "),
            status: server.status.clone(),
            trusted: server.trusted,
            last_error: server.last_error.clone().unwrap_or_default(),
            last_healthy: opt_when(server.last_healthy_at),
            tools: tools
                .iter()
                .map(|tool| if tool.available { tool.name.clone() } else { format!("{} (unavailable)", tool.name) })
                .collect(),
        });
    }
    render(&McpPage {
        chrome: chrome(&principal, session.as_deref(), "MCP servers", "mcp"),
        rows,
        pager: pager("/ui/mcp", &[], page.next_cursor, cursor.is_some()),
    })
}
