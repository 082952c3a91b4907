//! Tools (SPEC §2.4 "Tools / MCP", §6, §7.1): the catalogue, per-agent tool policies and
//! operator-defined webhook tools.
//!
//! A policy is the only thing that exposes a tool to an agent (SPEC §6.1); `GET /agents/{id}/tools`
//! shows every policy with whether its tool resolves right now, so an operator sees why an enabled tool
//! is not offered. Policy documents are typed here, so typos and unknown `condition` operators are
//! refused when the policy is saved rather than ignored when a call is judged.

use std::collections::BTreeMap;

use crate::guard::routes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use cortex_core::approval::{ApprovalMode, RiskTier};
use cortex_store::StoreError;
use cortex_store::secrets::SecretRef;
use cortex_store::tools::{ToolPolicy, WebhookToolRecord};
use cortex_tools::DataScope;
use cortex_tools::webhook::{CredentialRef, DEFAULT_WEBHOOK_TIMEOUT_MS, WebhookToolDef};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, Code, ErrorBody};
use crate::extract::{Json, PageParams, Query};
use crate::guard::Routes;
use crate::limits::{self, Fields, Text};
use crate::state::AppState;
use crate::views::List;

/// The catalogue, policy and webhook-tool routes, registered in [`crate::router`].
pub fn routes() -> Routes {
    Routes::new()
        .viewer(routes!(catalogue))
        .viewer(routes!(list_policies))
        .operator(routes!(put_policy))
        .operator(routes!(delete_policy))
        .admin(routes!(create_webhook_tool))
        .viewer(routes!(list_webhook_tools))
        .viewer(routes!(get_webhook_tool))
        .admin(routes!(delete_webhook_tool))
}

const MAX_NAME_LEN: usize = 100;
/// Longest window a rate limit or cost budget may span (30 days).
const MAX_WINDOW_SECONDS: u32 = 30 * 24 * 3600;

/// Names shown to people (servers, tools): 1–100 characters after trimming.
pub(crate) fn validate_display_name(name: &str) -> Result<(), String> {
    let length = name.trim().chars().count();
    if (1..=MAX_NAME_LEN).contains(&length) { Ok(()) } else { Err(format!("must be 1–{MAX_NAME_LEN} characters")) }
}

/// A uniqueness violation reworded for the resource at hand; other errors pass through.
pub(crate) fn conflict_as(err: ApiError, message: String) -> ApiError {
    if err.code == Code::Conflict { ApiError::new(Code::Conflict, message) } else { err }
}

// ---------------------------------------------------------------------------------------------------
// Policies

/// `rate_limit` of a policy: at most `max_calls` per `window_seconds` for this agent and tool.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub max_calls: u32,
    pub window_seconds: u32,
}

/// `cost_budget` of a policy: at most `max_usd` of priced calls per `window_seconds`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CostBudget {
    pub max_usd: f64,
    pub window_seconds: u32,
}

cortex_core::string_enum! {
    /// Comparison of a `condition` (SPEC §7.1); `matches` takes a glob with `*`.
    pub enum ConditionOp {
        Eq = "eq",
        Ne = "ne",
        Matches = "matches",
        NotMatches = "not_matches",
        In = "in",
        NotIn = "not_in",
    }
}

/// `condition` of a policy: approval rules apply only to calls whose input `field` satisfies `op value`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// Name of an input argument (dotted for nested values).
    pub field: String,
    pub op: ConditionOp,
    #[schema(value_type = Object)]
    pub value: Value,
}

/// Body of `PUT /agents/{id}/tools/{tool}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutToolPolicy {
    pub enabled: bool,
    /// `never`, `always` or `risk` (default).
    pub approval: Option<ApprovalMode>,
    /// Overrides the tool's default risk tier.
    pub risk: Option<RiskTier>,
    pub rate_limit: Option<RateLimit>,
    pub cost_budget: Option<CostBudget>,
    /// `{allowed_hosts?, types?, tags?}`, enforced by the tool.
    #[schema(value_type = Option<Object>)]
    pub data_scope: Option<DataScope>,
    pub condition: Option<Condition>,
}

/// A stored policy and whether its tool resolves now (SPEC §6.1).
#[derive(Debug, Serialize, ToSchema)]
pub struct ToolPolicyView {
    pub tool_ref: String,
    pub enabled: bool,
    pub approval: ApprovalMode,
    pub risk: Option<RiskTier>,
    #[schema(value_type = Option<Object>)]
    pub rate_limit: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub cost_budget: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub data_scope: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub condition: Option<Value>,
    /// Whether the tool exists and can be used right now.
    pub resolvable: bool,
    /// Why the tool cannot be used, when it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    #[serde(serialize_with = "crate::views::millis::serialize")]
    pub updated_at: DateTime<Utc>,
}

impl ToolPolicyView {
    async fn load(state: &AppState, policy: ToolPolicy) -> ApiResult<Self> {
        let warning = unresolvable_reason(state, policy.agent_id, &policy.tool_ref).await?;
        Ok(Self {
            tool_ref: policy.tool_ref,
            enabled: policy.enabled,
            approval: policy.approval,
            risk: policy.risk,
            rate_limit: policy.rate_limit,
            cost_budget: policy.cost_budget,
            data_scope: policy.data_scope,
            condition: policy.condition,
            resolvable: warning.is_none(),
            warning,
            updated_at: policy.updated_at,
        })
    }
}

/// Why `tool_ref` cannot be offered to `agent_id` right now, or `None` when it can: the runtime's rule
/// (SPEC §6.1), so the API and the loop never disagree.
async fn unresolvable_reason(state: &AppState, agent_id: Uuid, tool_ref: &str) -> ApiResult<Option<String>> {
    state.runtime.unresolvable_reason(agent_id, tool_ref).await.map_err(|err| match err {
        cortex_runtime::RuntimeError::Store(store) => store.into(),
        other => ApiError::new(Code::Internal, other.to_string()),
    })
}

/// Checks the parts of a policy serde cannot, reporting every problem at once.
fn validate_policy(body: &PutToolPolicy) -> ApiResult<()> {
    let mut fields: Vec<(&str, String)> = Vec::new();
    let window_ok = |seconds: u32| (1..=MAX_WINDOW_SECONDS).contains(&seconds);
    if let Some(limit) = &body.rate_limit
        && (limit.max_calls == 0 || !window_ok(limit.window_seconds))
    {
        fields.push(("rate_limit", format!("max_calls must be ≥ 1 and window_seconds 1–{MAX_WINDOW_SECONDS}")));
    }
    if let Some(budget) = &body.cost_budget
        && (!budget.max_usd.is_finite() || budget.max_usd <= 0.0 || !window_ok(budget.window_seconds))
    {
        fields.push(("cost_budget", format!("max_usd must be > 0 and window_seconds 1–{MAX_WINDOW_SECONDS}")));
    }
    if let Some(scope) = &body.data_scope
        && let Err(err) = scope.validate()
    {
        fields.push(("data_scope", err.to_string()));
    }
    if let Some(condition) = &body.condition
        && let Err(reason) = check_condition(condition)
    {
        fields.push(("condition", reason));
    }
    if fields.is_empty() { Ok(()) } else { Err(ApiError::validation(&fields)) }
}

fn check_condition(condition: &Condition) -> Result<(), String> {
    if condition.field.trim().is_empty() {
        return Err("field must name an input argument".into());
    }
    match condition.op {
        ConditionOp::In | ConditionOp::NotIn if !condition.value.is_array() => {
            Err(format!("{} needs a list value", condition.op))
        }
        ConditionOp::Matches | ConditionOp::NotMatches if !condition.value.is_string() => {
            Err(format!("{} needs a glob string value", condition.op))
        }
        ConditionOp::Eq | ConditionOp::Ne if condition.value.is_object() || condition.value.is_array() => {
            Err(format!("{} needs a string, number, boolean or null value", condition.op))
        }
        _ => Ok(()),
    }
}

fn to_json<T: Serialize>(value: Option<&T>) -> ApiResult<Option<Value>> {
    value.map(serde_json::to_value).transpose().map_err(|err| ApiError::new(Code::Internal, err.to_string()))
}

/// The policies of an agent by tool ref, each with whether its tool resolves now.
#[utoipa::path(get, path = "/agents/{id}/tools", tag = "tools", params(("id" = String, Path, description = "Agent id or slug"), PageParams),
    responses((status = 200, body = List<ToolPolicyView>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn list_policies(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(page): Query<PageParams>,
) -> ApiResult<axum::Json<List<ToolPolicyView>>> {
    let agent = state.store.get_agent(&id).await?;
    let mut items = Vec::new();
    for policy in state.store.tool_policies(agent.id).await? {
        items.push(ToolPolicyView::load(&state, policy).await?);
    }
    Ok(axum::Json(List::from_all(items, &page, |policy| policy.tool_ref.clone())?))
}

/// Create or replace the policy of one tool for an agent. The tool ref may contain `:`
/// (`mcp:<server>:<tool>`, `webhook:<name>`), plain or URL-encoded.
#[utoipa::path(put, path = "/agents/{id}/tools/{tool}", tag = "tools",
    params(("id" = String, Path, description = "Agent id or slug"), ("tool" = String, Path, description = "Tool ref")),
    request_body = PutToolPolicy, responses((status = 200, body = ToolPolicyView), (status = 400, body = ErrorBody),
    (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn put_policy(
    State(state): State<AppState>,
    principal: Principal,
    Path((id, tool_ref)): Path<(String, String)>,
    Json(body): Json<PutToolPolicy>,
) -> ApiResult<axum::Json<ToolPolicyView>> {
    let agent = state.store.get_agent(&id).await?;
    validate_policy(&body)?;
    let unknown = state.runtime.catalog.unknown_tools(&state.store, std::slice::from_ref(&tool_ref)).await?;
    if !unknown.is_empty() {
        return Err(ApiError::new(Code::UnknownTool, format!("unknown tool `{tool_ref}`"))
            .with_details(json!({"unknown_tools": unknown})));
    }
    let policy = ToolPolicy {
        agent_id: agent.id,
        tool_ref: tool_ref.clone(),
        enabled: body.enabled,
        approval: body.approval.unwrap_or(ApprovalMode::Risk),
        risk: body.risk,
        condition: to_json(body.condition.as_ref())?,
        rate_limit: to_json(body.rate_limit.as_ref())?,
        cost_budget: to_json(body.cost_budget.as_ref())?,
        data_scope: to_json(body.data_scope.as_ref())?,
        updated_at: cortex_core::Timestamp::default(),
    };
    let mut tx = state.store.begin().await?;
    tx.upsert_tool_policy(&policy).await?;
    tx.audit(principal.audit(
        "tool_policy.put",
        "agent",
        agent.id,
        json!({"tool_ref": tool_ref, "enabled": policy.enabled, "approval": policy.approval, "risk": policy.risk}),
    ))
    .await?;
    tx.commit().await?;
    let stored = state
        .store
        .tool_policies(agent.id)
        .await?
        .into_iter()
        .find(|stored| stored.tool_ref == tool_ref)
        .ok_or_else(|| ApiError::not_found("tool policy"))?;
    Ok(axum::Json(ToolPolicyView::load(&state, stored).await?))
}

/// Remove the policy of one tool for an agent, so the tool is no longer offered.
#[utoipa::path(delete, path = "/agents/{id}/tools/{tool}", tag = "tools",
    params(("id" = String, Path, description = "Agent id or slug"), ("tool" = String, Path, description = "Tool ref")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_policy(
    State(state): State<AppState>,
    principal: Principal,
    Path((id, tool_ref)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let agent = state.store.get_agent(&id).await?;
    let mut tx = state.store.begin().await?;
    if !tx.delete_tool_policy(agent.id, &tool_ref).await? {
        return Err(ApiError::not_found("tool policy"));
    }
    tx.audit(principal.audit("tool_policy.delete", "agent", agent.id, json!({"tool_ref": tool_ref}))).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------------------------------
// Catalogue

/// One tool that policies can name.
#[derive(Debug, Serialize, ToSchema)]
pub struct CatalogueEntry {
    pub tool_ref: String,
    /// `builtin`, `webhook` or `mcp`.
    pub kind: &'static str,
    pub description: String,
    /// JSON Schema of the arguments, exactly as the model gets it.
    #[schema(value_type = Object)]
    pub input_schema: Value,
    /// Risk used when a policy says `approval: risk` without its own tier (for a call without
    /// arguments: `http_request` is p3 for GET, p2 for other methods).
    pub default_risk: RiskTier,
    /// Whether a call interrupted by a crash is run again (SPEC §4.9); others are reported to the model
    /// as "outcome unknown".
    pub idempotent: bool,
    /// Whether it can be used right now (MCP: server active/degraded and tool still offered).
    pub available: bool,
    /// Webhook tools: the only agent that may use it (`null` = shared).
    pub agent_id: Option<Uuid>,
    /// MCP tools: the server's slug.
    pub server: Option<String>,
}

/// Every tool policies can name: built-ins, webhook tools and discovered MCP tools [viewer]. Built-ins
/// come from the runtime's one registry, so this answer, the names agent definitions may use and the
/// tools given to the model agree. Ordered built-ins, webhook tools, MCP tools, each by tool ref.
#[utoipa::path(get, path = "/tools", tag = "tools", params(PageParams), responses(
    (status = 200, body = List<CatalogueEntry>), (status = 400, body = ErrorBody)))]
async fn catalogue(
    State(state): State<AppState>,
    Query(page): Query<PageParams>,
) -> ApiResult<axum::Json<List<CatalogueEntry>>> {
    let order = |entry: &CatalogueEntry| {
        let rank = match entry.kind {
            "builtin" => 0,
            "webhook" => 1,
            _ => 2,
        };
        format!("{rank}{}", entry.tool_ref)
    };
    Ok(axum::Json(List::from_all(catalogue_entries(&state).await?, &page, order)?))
}

/// Every tool policies can name (the catalogue; also the dashboard's tool pickers).
pub(crate) async fn catalogue_entries(state: &AppState) -> ApiResult<Vec<CatalogueEntry>> {
    let mut items: Vec<CatalogueEntry> = state
        .runtime
        .catalog
        .builtins()
        .into_iter()
        .map(|tool| CatalogueEntry {
            tool_ref: tool.tool_ref,
            kind: "builtin",
            description: tool.description,
            input_schema: tool.input_schema,
            default_risk: tool.default_risk,
            idempotent: tool.idempotent,
            available: true,
            agent_id: None,
            server: None,
        })
        .collect();
    for tool in state.store.list_webhook_tools().await? {
        items.push(CatalogueEntry {
            tool_ref: tool.tool_ref(),
            kind: "webhook",
            description: tool.description,
            input_schema: tool.input_schema,
            default_risk: tool.risk.parse().unwrap_or(RiskTier::P2),
            idempotent: tool.idempotent,
            available: true,
            agent_id: tool.agent_id,
            server: None,
        });
    }
    for server in state.store.probed_mcp_servers().await? {
        let usable = matches!(server.status.as_str(), "active" | "degraded");
        for tool in state.store.mcp_tools_of_server(server.id).await? {
            let hints = cortex_mcp::Hints(tool.annotations.as_ref());
            items.push(CatalogueEntry {
                default_risk: hints.default_risk(),
                idempotent: hints.idempotent(),
                tool_ref: tool.tool_ref,
                kind: "mcp",
                description: tool.description,
                input_schema: tool.input_schema,
                available: usable && tool.available,
                agent_id: None,
                server: Some(server.slug.clone()),
            });
        }
    }
    Ok(items)
}

// ---------------------------------------------------------------------------------------------------
// Webhook tools

/// Body of `POST /webhook-tools` (SPEC §6.3).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookTool {
    /// `[a-z0-9_-]`, at most 48 characters; the tool ref is `webhook:<name>`.
    #[schema(max_length = 48)]
    pub name: String,
    #[schema(max_length = 4000)]
    pub description: String,
    /// JSON Schema (`"type": "object"`) of the arguments the model sends.
    #[schema(value_type = Object)]
    pub input_schema: Value,
    #[schema(max_length = 2048)]
    pub url: String,
    /// `GET`, `POST` (default), `PUT`, `PATCH` or `DELETE`.
    pub method: Option<String>,
    /// Sent with every call (secret; stored encrypted, never returned). At most 256 headers, names up to
    /// 256 characters, values up to 8 192.
    pub headers: Option<BTreeMap<String, String>>,
    /// 1–60 000 (30 000).
    pub timeout_ms: Option<u64>,
    /// Default risk tier (`p2`).
    pub risk: Option<RiskTier>,
    /// Restrict the tool to one agent (id or slug); shared when absent.
    pub agent_id: Option<String>,
    /// The endpoint honours the `Idempotency-Key` header every call carries (or is harmless to repeat),
    /// so a call interrupted by a crash is sent again; default false (reported as "outcome unknown").
    pub idempotent: Option<bool>,
    /// `tool_secret` credentials sent as headers, resolved when the tool is used (SPEC §6.3): each
    /// `{credential, inject_as: "header", header_name ("Authorization"), format: "bearer"|"raw"}`.
    #[schema(value_type = Option<Vec<Object>>)]
    pub credential_refs: Option<Vec<CredentialRef>>,
}

/// A webhook tool; header values are never shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookToolView {
    pub id: Uuid,
    pub name: String,
    pub tool_ref: String,
    pub agent_id: Option<Uuid>,
    pub description: String,
    #[schema(value_type = Object)]
    pub input_schema: Value,
    /// The endpoint without user info or query, which may carry credentials.
    pub url: String,
    pub method: String,
    /// Names of the configured headers.
    pub headers: Vec<String>,
    pub timeout_ms: i64,
    pub risk: String,
    /// Re-sent after a crash interrupted a call.
    pub idempotent: bool,
    /// The `tool_secret` credentials it sends (names and placement only).
    #[schema(value_type = Vec<Object>)]
    pub credential_refs: Value,
}

impl From<WebhookToolRecord> for WebhookToolView {
    fn from(tool: WebhookToolRecord) -> Self {
        let url = url::Url::parse(&tool.url).map(|url| cortex_tools::http::redact_url(&url)).unwrap_or_default();
        Self {
            id: tool.id,
            tool_ref: tool.tool_ref(),
            name: tool.name,
            agent_id: tool.agent_id,
            description: tool.description,
            input_schema: tool.input_schema,
            url,
            method: tool.method,
            headers: tool.header_keys,
            timeout_ms: tool.timeout_ms,
            risk: tool.risk,
            idempotent: tool.idempotent,
            credential_refs: tool.credential_refs,
        }
    }
}

/// Query of `DELETE /webhook-tools/{name}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteWebhookToolParams {
    /// Delete even while agent policies enable it (they then report it as unresolvable).
    #[serde(default)]
    pub force: bool,
}

/// Define a webhook tool; its headers are stored encrypted.
#[utoipa::path(post, path = "/webhook-tools", tag = "tools", request_body = CreateWebhookTool, responses(
    (status = 201, body = WebhookToolView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
    (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_webhook_tool(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<CreateWebhookTool>,
) -> ApiResult<impl IntoResponse> {
    let def = WebhookToolDef {
        name: body.name,
        description: body.description,
        input_schema: body.input_schema,
        url: body.url,
        method: body.method.unwrap_or_else(|| "POST".to_owned()).to_ascii_uppercase(),
        headers: body.headers.unwrap_or_default(),
        timeout_ms: body.timeout_ms.unwrap_or(DEFAULT_WEBHOOK_TIMEOUT_MS),
        risk: body.risk.unwrap_or(RiskTier::P2),
        idempotent: body.idempotent.unwrap_or(false),
    };
    let mut fields = Fields::default();
    fields
        .text("name", &def.name, limits::NAME, Text::Name)
        .text("description", &def.description, limits::DESCRIPTION, Text::Free)
        .text("url", &def.url, limits::URL, Text::Name)
        .names("headers", def.headers.keys(), limits::HEADER_NAME);
    for value in def.headers.values() {
        fields.text("headers", value, limits::HEADER_VALUE, Text::Name);
    }
    if !fields.is_empty() {
        return Err(ApiError::validation(&fields.0));
    }
    def.validate().map_err(|reasons| ApiError::validation(&[("definition", reasons)]))?;
    let credential_refs = body.credential_refs.unwrap_or_default();
    for reference in &credential_refs {
        reference.validate().map_err(|reasons| ApiError::validation(&[("credential_refs", reasons)]))?;
        if state
            .store
            .credential(crate::routes::credentials::CredentialKind::ToolSecret.as_str(), &reference.credential)
            .await?
            .is_none()
        {
            return Err(ApiError::new(
                Code::Unprocessable,
                format!("credential_refs: there is no tool_secret credential named `{}`", reference.credential),
            ));
        }
    }
    let agent_id = match body.agent_id {
        None => None,
        Some(agent) => match state.store.get_agent(&agent).await {
            Ok(agent) => Some(agent.id),
            Err(StoreError::NotFound { .. }) => {
                return Err(ApiError::new(Code::Unprocessable, format!("agent `{agent}` does not exist")));
            }
            Err(err) => return Err(err.into()),
        },
    };
    let id = cortex_core::new_id();
    let headers_enc = (!def.headers.is_empty())
        .then(|| state.cipher.encrypt_json(&SecretRef::new("webhook_tool", "headers_enc", id), &def.headers));
    let record = WebhookToolRecord {
        id,
        agent_id,
        name: def.name.clone(),
        description: def.description.clone(),
        input_schema: def.input_schema.clone(),
        url: def.url.clone(),
        method: def.method.clone(),
        headers_enc,
        header_keys: def.headers.keys().cloned().collect(),
        timeout_ms: i64::try_from(def.timeout_ms).unwrap_or(i64::MAX),
        risk: def.risk.as_str().to_owned(),
        idempotent: def.idempotent,
        credential_refs: json!(credential_refs),
    };
    let mut tx = state.store.begin().await?;
    tx.insert_webhook_tool(&record)
        .await
        .map_err(|err| conflict_as(err.into(), format!("a webhook tool named `{}` already exists", record.name)))?;
    tx.audit(principal.audit(
        "webhook_tool.create",
        "webhook_tool",
        id,
        json!({"name": record.name, "method": record.method, "headers": record.header_keys, "agent_id": agent_id}),
    ))
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, axum::Json(WebhookToolView::from(record))))
}

/// List webhook tools by name.
#[utoipa::path(get, path = "/webhook-tools", tag = "tools", params(PageParams), responses(
    (status = 200, body = List<WebhookToolView>), (status = 400, body = ErrorBody)))]
async fn list_webhook_tools(
    State(state): State<AppState>,
    Query(page): Query<PageParams>,
) -> ApiResult<axum::Json<List<WebhookToolView>>> {
    let items = state.store.list_webhook_tools().await?.into_iter().map(WebhookToolView::from).collect();
    Ok(axum::Json(List::from_all(items, &page, |tool| tool.name.clone())?))
}

/// Read one webhook tool.
#[utoipa::path(get, path = "/webhook-tools/{name}", tag = "tools", params(("name" = String, Path)),
    responses((status = 200, body = WebhookToolView), (status = 404, body = ErrorBody)))]
async fn get_webhook_tool(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<WebhookToolView>> {
    let tool = state.store.webhook_tool(&name).await?.ok_or_else(|| ApiError::not_found("webhook tool"))?;
    Ok(axum::Json(tool.into()))
}

/// Delete a webhook tool; refused with 409 while an agent policy enables it, unless `force`.
#[utoipa::path(delete, path = "/webhook-tools/{name}", tag = "tools", params(("name" = String, Path), DeleteWebhookToolParams),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn delete_webhook_tool(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    Query(params): Query<DeleteWebhookToolParams>,
) -> ApiResult<StatusCode> {
    let tool = state.store.webhook_tool(&name).await?.ok_or_else(|| ApiError::not_found("webhook tool"))?;
    let users = state.store.agents_enabling_tool(&tool.tool_ref()).await?;
    if !users.is_empty() && !params.force {
        return Err(ApiError::new(
            Code::Conflict,
            format!(
                "webhook tool `{name}` is enabled for {} agent(s); disable it there or retry with ?force=true",
                users.len()
            ),
        )
        .with_details(json!({"agent_ids": users})));
    }
    let mut tx = state.store.begin().await?;
    if !tx.delete_webhook_tool(&name).await? {
        return Err(ApiError::not_found("webhook tool"));
    }
    tx.audit(principal.audit(
        "webhook_tool.delete",
        "webhook_tool",
        tool.id,
        json!({"name": name, "forced": params.force}),
    ))
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
