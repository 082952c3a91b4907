//! Agents: create, list, read, update, archive and purge (SPEC §2.4, §3.2).

use crate::guard::routes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use cortex_core::agent::{
    AccessMode, AgentStatus, ApprovalTarget, MemorySettings, ModelConfig, ResourceLimits, is_valid_slug, slugify,
};
use cortex_core::role::Role;
use cortex_store::agents::{Agent, AgentDefinition};
use cortex_store::tools::ToolPolicy;
use serde::Deserialize;
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, Code, ErrorBody};
use crate::extract::{Json, PageParams, Query};
use crate::guard::Routes;
use crate::limits::{self, Fields, Text};
use crate::state::AppState;
use crate::views::{AgentView, List};

pub fn routes() -> Routes {
    Routes::new()
        .operator(routes!(create_agent))
        .viewer(routes!(list_agents))
        .viewer(routes!(get_agent))
        .operator(routes!(update_agent))
        .operator(routes!(delete_agent))
}

/// Body of `POST /agents`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAgent {
    #[schema(max_length = 100)]
    pub name: String,
    #[schema(max_length = 64)]
    pub slug: Option<String>,
    #[schema(max_length = 200)]
    pub role: Option<String>,
    #[schema(max_length = 4000)]
    pub description: Option<String>,
    /// At most 100 000 bytes.
    #[schema(max_length = 100000)]
    pub system_prompt: Option<String>,
    pub model_config: ModelConfig,
    /// Tool refs to enable (each gets a policy with `approval: risk`).
    pub tools: Option<Vec<String>>,
    pub resource_limits: Option<ResourceLimits>,
    pub skills: Option<Vec<String>>,
    pub subagents: Option<Vec<String>>,
    pub access_mode: Option<AccessMode>,
    /// Memory switches; both default to `true`.
    pub memory: Option<MemorySettings>,
    /// Chats that also get the approval notices of this agent's waiting jobs (default none).
    pub approval_notify: Option<Vec<ApprovalTarget>>,
}

/// Body of `PATCH /agents/{id}`: only the given fields change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAgent {
    #[schema(max_length = 100)]
    pub name: Option<String>,
    #[schema(max_length = 64)]
    pub slug: Option<String>,
    #[schema(max_length = 200)]
    pub role: Option<String>,
    #[schema(max_length = 4000)]
    pub description: Option<String>,
    /// At most 100 000 bytes.
    #[schema(max_length = 100000)]
    pub system_prompt: Option<String>,
    pub model_config: Option<ModelConfig>,
    /// Replaces the set of enabled tools (policies of tools no longer listed are disabled).
    pub tools: Option<Vec<String>>,
    pub resource_limits: Option<ResourceLimits>,
    pub skills: Option<Vec<String>>,
    pub subagents: Option<Vec<String>>,
    pub access_mode: Option<AccessMode>,
    /// Replaces the memory switches as a whole (a key left out is `true`).
    pub memory: Option<MemorySettings>,
    /// Replaces the chats that also get approval notices (`[]` removes them all).
    pub approval_notify: Option<Vec<ApprovalTarget>>,
    pub status: Option<AgentStatus>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListAgentsParams {
    /// Filter by status; archived agents are listed only when asked for.
    pub status: Option<AgentStatus>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteAgentParams {
    /// Delete permanently instead of archiving [admin].
    #[serde(default)]
    pub purge: bool,
    /// Archive even while jobs are active (they are cancelled).
    #[serde(default)]
    pub force: bool,
}

const MAX_PROMPT_LEN: usize = 100_000;

/// Checks a definition the way every write path must (typed fields already passed serde).
async fn validate(state: &AppState, def: &AgentDefinition, tools: &[String]) -> ApiResult<()> {
    let mut checked = Fields::default();
    if def.name.trim().is_empty() {
        checked.0.push(("name", format!("must be 1–{} characters", limits::NAME)));
    }
    checked
        .text("name", &def.name, limits::NAME, Text::Name)
        .text("role", &def.role, limits::LABEL, Text::Free)
        .text("description", &def.description, limits::DESCRIPTION, Text::Free)
        .text("model_config.provider", &def.model_config.provider, limits::REFERENCE, Text::Name)
        .text("model_config.model", &def.model_config.model, limits::REFERENCE, Text::Name)
        .optional(
            "model_config.extraction_model",
            def.model_config.extraction_model.as_deref(),
            limits::REFERENCE,
            Text::Name,
        )
        .names(
            "model_config.fallbacks",
            def.model_config.fallbacks.iter().flat_map(|f| [&f.provider, &f.model]),
            limits::REFERENCE,
        )
        .names("tools", tools, limits::REFERENCE)
        .names("skills", &def.skills, limits::REFERENCE)
        .names("subagents", &def.subagents, limits::REFERENCE);
    let mut fields = checked.0;
    if !is_valid_slug(&def.slug) {
        fields.push(("slug", "must be 1–64 characters of a-z, 0-9 and inner dashes".into()));
    }
    if def.system_prompt.len() > MAX_PROMPT_LEN {
        fields.push(("system_prompt", format!("must be at most {MAX_PROMPT_LEN} bytes")));
    } else if let Some(bad) = def.system_prompt.chars().find(|c| !limits::allowed(*c, Text::Free)) {
        fields.push(("system_prompt", format!("must not contain control character U+{:04X}", u32::from(bad))));
    }
    if let Err(reason) = def.model_config.validate() {
        fields.push(("model_config", reason));
    }
    if let Err(reason) = def.resource_limits.validate() {
        fields.push(("resource_limits", reason));
    }
    if !fields.is_empty() {
        return Err(ApiError::validation(&fields));
    }
    if let Err(problem) = state.runtime.catalog.check_models(&state.store, &def.model_config).await? {
        return Err(ApiError::new(Code::ProviderUnavailable, problem.to_string()));
    }
    let unknown = state.runtime.catalog.unknown_tools(&state.store, tools).await?;
    if !unknown.is_empty() {
        return Err(ApiError::new(Code::UnknownTool, format!("unknown tools: {}", unknown.join(", ")))
            .with_details(json!({"unknown_tools": unknown})));
    }
    Ok(())
}

/// `approval_notify` names existing channels and chat ids of sane size, at most [`limits::LIST_ITEMS`].
async fn validate_approval_notify(state: &AppState, targets: &[ApprovalTarget]) -> ApiResult<()> {
    let mut checked = Fields::default();
    if targets.len() > limits::LIST_ITEMS {
        checked.0.push(("approval_notify", format!("must have at most {} entries", limits::LIST_ITEMS)));
    }
    for target in targets {
        if target.chat_id.trim().is_empty() {
            checked.0.push(("approval_notify.chat_id", "must not be empty".into()));
        }
        checked.text("approval_notify.chat_id", &target.chat_id, limits::REFERENCE, Text::Name);
        match state.store.channel(target.channel_id).await {
            Ok(_) => {}
            Err(cortex_store::StoreError::NotFound { .. }) => {
                checked.0.push(("approval_notify.channel_id", format!("no channel {}", target.channel_id)));
            }
            Err(err) => return Err(err.into()),
        }
    }
    if !checked.is_empty() {
        return Err(ApiError::validation(&checked.0));
    }
    Ok(())
}

/// Enabled tool refs of an agent.
pub async fn enabled_tools(state: &AppState, agent: &Agent) -> ApiResult<Vec<String>> {
    Ok(state.store.tool_policies(agent.id).await?.into_iter().filter(|p| p.enabled).map(|p| p.tool_ref).collect())
}

fn conflict_on_name(err: ApiError) -> ApiError {
    if err.code == Code::Conflict {
        ApiError::new(Code::Conflict, "an agent with this name or slug already exists")
    } else {
        err
    }
}

/// Create an agent.
#[utoipa::path(post, path = "/agents", tag = "agents", request_body = CreateAgent, responses(
    (status = 201, body = AgentView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_agent(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<CreateAgent>,
) -> ApiResult<impl IntoResponse> {
    let slug = match body.slug {
        Some(slug) => slug,
        None => slugify(&body.name),
    };
    let def = AgentDefinition {
        name: body.name.trim().to_owned(),
        slug,
        role: body.role.unwrap_or_default(),
        description: body.description.unwrap_or_default(),
        system_prompt: body.system_prompt.unwrap_or_default(),
        model_config: body.model_config,
        resource_limits: body.resource_limits.unwrap_or_default(),
        access_mode: body.access_mode.unwrap_or(AccessMode::BoundChats),
        skills: body.skills.unwrap_or_default(),
        subagents: body.subagents.unwrap_or_default(),
        memory: body.memory.unwrap_or_default(),
        status: AgentStatus::Active,
    };
    let tools = dedup(body.tools.unwrap_or_default());
    validate(&state, &def, &tools).await?;
    let approval_notify = body.approval_notify.unwrap_or_default();
    validate_approval_notify(&state, &approval_notify).await?;
    let mut tx = state.store.begin().await?;
    let id = tx.insert_agent(&def).await.map_err(|err| conflict_on_name(err.into()))?;
    if !approval_notify.is_empty() {
        tx.set_approval_notify(id, &approval_notify).await?;
    }
    for tool_ref in &tools {
        tx.upsert_tool_policy(&ToolPolicy::enabled_by_risk(id, tool_ref)).await?;
    }
    tx.audit(principal.audit("agent.create", "agent", id, json!({"name": def.name, "tools": tools}))).await?;
    tx.commit().await?;
    let agent = state.store.get_agent_by_id(id).await?;
    Ok((StatusCode::CREATED, axum::Json(AgentView::new(agent, tools))))
}

fn dedup(mut refs: Vec<String>) -> Vec<String> {
    refs.sort();
    refs.dedup();
    refs
}

/// List agents, newest first.
#[utoipa::path(get, path = "/agents", tag = "agents", params(ListAgentsParams, PageParams), responses(
    (status = 200, body = List<AgentView>), (status = 400, body = ErrorBody)))]
async fn list_agents(
    State(state): State<AppState>,
    Query(filter): Query<ListAgentsParams>,
    Query(page): Query<PageParams>,
) -> ApiResult<axum::Json<List<AgentView>>> {
    let (cursor, limit) = page.parse()?;
    let agents = state.store.list_agents(filter.status, cursor, limit).await?;
    let mut items = Vec::with_capacity(agents.items.len());
    for agent in &agents.items {
        items.push(enabled_tools(&state, agent).await?);
    }
    let mut tools = items.into_iter();
    let list = List::from_page(agents, |agent| AgentView::new(agent, tools.next().unwrap_or_default()));
    Ok(axum::Json(list))
}

/// Read one agent by id or slug.
#[utoipa::path(get, path = "/agents/{id}", tag = "agents", params(("id" = String, Path, description = "Agent id or slug")),
    responses((status = 200, body = AgentView), (status = 404, body = ErrorBody)))]
async fn get_agent(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<axum::Json<AgentView>> {
    let agent = state.store.get_agent(&id).await?;
    let tools = enabled_tools(&state, &agent).await?;
    Ok(axum::Json(AgentView::new(agent, tools)))
}

/// Change an agent; only the given fields change.
#[utoipa::path(patch, path = "/agents/{id}", tag = "agents", params(("id" = String, Path, description = "Agent id or slug")),
    request_body = UpdateAgent, responses((status = 200, body = AgentView), (status = 400, body = ErrorBody),
    (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_agent(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Json(body): Json<UpdateAgent>,
) -> ApiResult<axum::Json<AgentView>> {
    let agent = state.store.get_agent(&id).await?;
    let mut def = agent.definition();
    if let Some(name) = body.name {
        def.name = name.trim().to_owned();
    }
    if let Some(slug) = body.slug {
        def.slug = slug;
    }
    if let Some(role) = body.role {
        def.role = role;
    }
    if let Some(description) = body.description {
        def.description = description;
    }
    if let Some(prompt) = body.system_prompt {
        def.system_prompt = prompt;
    }
    if let Some(model_config) = body.model_config {
        def.model_config = model_config;
    }
    if let Some(limits) = body.resource_limits {
        def.resource_limits = limits;
    }
    if let Some(skills) = body.skills {
        def.skills = skills;
    }
    if let Some(subagents) = body.subagents {
        def.subagents = subagents;
    }
    if let Some(access_mode) = body.access_mode {
        def.access_mode = access_mode;
    }
    if let Some(memory) = body.memory {
        def.memory = memory;
    }
    if let Some(status) = body.status {
        if status == AgentStatus::Archived
            && agent.status != AgentStatus::Archived
            && state.store.count_active_jobs(agent.id).await? > 0
        {
            return Err(ApiError::new(
                Code::InvalidState,
                "the agent has active jobs; cancel them or DELETE with ?force=true",
            ));
        }
        def.status = status;
    }
    let current_tools = enabled_tools(&state, &agent).await?;
    let tools = body.tools.map(dedup);
    validate(&state, &def, tools.as_deref().unwrap_or(&current_tools)).await?;
    if let Some(targets) = &body.approval_notify {
        validate_approval_notify(&state, targets).await?;
    }
    let mut tx = state.store.begin().await?;
    tx.update_agent(agent.id, &def).await.map_err(|err| conflict_on_name(err.into()))?;
    if let Some(targets) = &body.approval_notify {
        tx.set_approval_notify(agent.id, targets).await?;
    }
    if let Some(tools) = &tools {
        for removed in current_tools.iter().filter(|t| !tools.contains(t)) {
            let mut policy = ToolPolicy::enabled_by_risk(agent.id, removed);
            policy.enabled = false;
            tx.upsert_tool_policy(&policy).await?;
        }
        for added in tools.iter().filter(|t| !current_tools.contains(t)) {
            tx.upsert_tool_policy(&ToolPolicy::enabled_by_risk(agent.id, added)).await?;
        }
    }
    tx.audit(principal.audit("agent.update", "agent", agent.id, json!({"name": def.name, "status": def.status})))
        .await?;
    tx.commit().await?;
    let updated = state.store.get_agent_by_id(agent.id).await?;
    let tools = enabled_tools(&state, &updated).await?;
    Ok(axum::Json(AgentView::new(updated, tools)))
}

/// Archive an agent (soft delete), or purge it permanently with `?purge=true` [admin].
#[utoipa::path(delete, path = "/agents/{id}", tag = "agents", params(("id" = String, Path, description = "Agent id or slug"), DeleteAgentParams),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn delete_agent(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Query(params): Query<DeleteAgentParams>,
) -> ApiResult<StatusCode> {
    if params.purge {
        principal.require(Role::Admin)?;
    }
    let agent = state.store.get_agent(&id).await?;
    let active = state.store.count_active_jobs(agent.id).await?;
    if active > 0 && params.purge {
        return Err(ApiError::new(
            Code::InvalidState,
            format!("the agent has {active} active jobs; a purge needs none"),
        ));
    }
    if active > 0 && !params.force {
        return Err(ApiError::new(
            Code::InvalidState,
            format!("the agent has {active} active jobs; retry with ?force=true to cancel them"),
        ));
    }
    if active > 0 {
        cancel_active_jobs(&state, agent.id).await?;
    }
    let mut tx = state.store.begin().await?;
    if params.purge {
        tx.purge_agent(agent.id).await?;
    } else {
        let mut def = agent.definition();
        def.status = AgentStatus::Archived;
        tx.update_agent(agent.id, &def).await?;
    }
    let action = if params.purge { "agent.purge" } else { "agent.archive" };
    tx.audit(principal.audit(action, "agent", agent.id, json!({"name": agent.name}))).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn cancel_active_jobs(state: &AppState, agent_id: uuid::Uuid) -> ApiResult<()> {
    let filter = cortex_store::jobs::JobFilter { agent_id: Some(agent_id), ..Default::default() };
    let mut cursor = None;
    loop {
        let page = state.store.list_jobs(&filter, cursor, 200).await?;
        for job in &page.items {
            if !job.status.is_terminal() {
                match cortex_jobs::cancel_job(&state.store, job.id).await {
                    Ok(_) | Err(cortex_jobs::OpError::InvalidState { .. }) => {}
                    Err(err) => return Err(err.into()),
                }
            }
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(()),
        }
    }
}
