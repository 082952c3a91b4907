//! MCP servers (SPEC §2.4 "Tools / MCP", §6.4): register with discovery before answering, list, read
//! with the discovered tools, refresh and delete. `env` and `headers` are write-only: responses carry
//! their names, never their values (SPEC §17.3).

use std::collections::BTreeMap;

use crate::guard::routes;
use axum::extract::{Path, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use cortex_core::agent::{is_valid_slug, slugify};
use cortex_mcp::Transport;
use cortex_store::mcp::{McpServerRecord, McpToolRecord};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Json, PageParams, Query};
use crate::guard::Routes;
use crate::limits::{self, Fields, Text};
use crate::mcp_sync::{self, McpRegistration};
use crate::routes::tools::{conflict_as, validate_display_name};
use crate::state::AppState;
use crate::views::List;

/// The `/mcp-servers` routes, registered in [`crate::router`].
pub fn routes() -> Routes {
    Routes::new()
        .admin(routes!(create_server))
        .viewer(routes!(list_servers))
        .viewer(routes!(get_server))
        .admin(routes!(update_server))
        .admin(routes!(delete_server))
        .admin(routes!(refresh_server))
}

cortex_core::string_enum! {
    /// How the server is reached.
    pub enum TransportKind {
        Stdio = "stdio",
        Http = "http",
    }
}

/// Default and bounds of `probe_interval_seconds` (SPEC §6.4).
const DEFAULT_PROBE_INTERVAL: i64 = 30;
const PROBE_INTERVAL_RANGE: std::ops::RangeInclusive<i64> = 1..=3600;

/// Body of `POST /mcp-servers`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMcpServer {
    #[schema(max_length = 100)]
    pub name: String,
    /// `[a-z0-9-]`, derived from the name when absent; used in tool refs `mcp:<slug>:<tool>`.
    pub slug: Option<String>,
    pub transport: TransportKind,
    /// stdio: the program to start.
    #[schema(max_length = 8192)]
    pub command: Option<String>,
    /// stdio: its arguments (at most 256, each up to 8 192 characters).
    pub args: Option<Vec<String>>,
    /// stdio: environment variables (secret; stored encrypted, never returned; names up to 256
    /// characters, values up to 8 192).
    pub env: Option<BTreeMap<String, String>>,
    /// http: the Streamable HTTP endpoint.
    #[schema(max_length = 2048)]
    pub url: Option<String>,
    /// http: headers sent on every request (secret; stored encrypted, never returned; names up to 256
    /// characters, values up to 8 192).
    pub headers: Option<BTreeMap<String, String>>,
    /// Seconds between health probes, 1–3600 (30).
    pub probe_interval_seconds: Option<i64>,
    /// Vouch for the server (default false): its tools stay callable without a human after untrusted
    /// content entered a job's context. The server's own annotations never make it trusted.
    pub trusted: Option<bool>,
}

/// Body of `PATCH /mcp-servers/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMcpServer {
    /// Vouch for the server, or withdraw that.
    pub trusted: Option<bool>,
}

/// A discovered tool of a server.
#[derive(Debug, Serialize, ToSchema)]
pub struct McpToolView {
    pub name: String,
    /// The ref policies use: `mcp:<server slug>:<tool name>`.
    pub tool_ref: String,
    pub description: String,
    #[schema(value_type = Object)]
    pub input_schema: Value,
    #[schema(value_type = Option<Object>)]
    pub annotations: Option<Value>,
    /// False once the server stopped offering it.
    pub available: bool,
}

impl From<McpToolRecord> for McpToolView {
    fn from(tool: McpToolRecord) -> Self {
        Self {
            name: tool.name,
            tool_ref: tool.tool_ref,
            description: tool.description,
            input_schema: tool.input_schema,
            annotations: tool.annotations,
            available: tool.available,
        }
    }
}

/// A registered server; secrets appear as names only.
#[derive(Debug, Serialize, ToSchema)]
pub struct McpServerView {
    pub id: Uuid,
    pub name: String,
    pub slug: String,
    pub transport: String,
    pub command: Option<String>,
    pub args: Vec<String>,
    pub url: Option<String>,
    /// Names of the configured environment variables.
    pub env: Vec<String>,
    /// Names of the configured headers.
    pub headers: Vec<String>,
    /// `pending`, `active`, `degraded`, `error` or `disabled`.
    pub status: String,
    pub last_error: Option<String>,
    /// An admin vouches for it (SPEC Appendix B "Untrusted content gates egress").
    pub trusted: bool,
    pub protocol_version: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub server_info: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub capabilities: Option<Value>,
    pub probe_interval_seconds: i64,
    #[serde(serialize_with = "crate::views::millis::option")]
    pub last_healthy_at: Option<DateTime<Utc>>,
    pub tools: Vec<McpToolView>,
    #[serde(serialize_with = "crate::views::millis::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::views::millis::serialize")]
    pub updated_at: DateTime<Utc>,
}

impl McpServerView {
    fn new(server: McpServerRecord, tools: Vec<McpToolRecord>) -> Self {
        Self {
            id: server.id,
            name: server.name,
            slug: server.slug,
            transport: server.transport,
            command: server.command,
            args: server.args,
            url: server.url,
            env: server.env_keys,
            headers: server.header_keys,
            status: server.status,
            last_error: server.last_error,
            trusted: server.trusted,
            protocol_version: server.protocol_version,
            server_info: server.server_info,
            capabilities: server.capabilities,
            probe_interval_seconds: server.probe_interval_seconds,
            last_healthy_at: server.last_healthy_at,
            tools: tools.into_iter().map(McpToolView::from).collect(),
            created_at: server.created_at,
            updated_at: server.updated_at,
        }
    }

    async fn load(state: &AppState, server: McpServerRecord) -> ApiResult<Self> {
        let tools = state.store.mcp_tools_of_server(server.id).await?;
        Ok(Self::new(server, tools))
    }
}

/// Checks a registration and turns it into the transport the pool will use; every problem is reported
/// at once as `validation_failed` with `details.fields`.
fn registration(body: CreateMcpServer) -> ApiResult<McpRegistration> {
    let mut checked = Fields::default();
    checked
        .text("name", &body.name, limits::NAME, Text::Name)
        .optional("command", body.command.as_deref(), limits::HEADER_VALUE, Text::Name)
        .optional("url", body.url.as_deref(), limits::URL, Text::Name)
        .names("args", body.args.iter().flatten(), limits::HEADER_VALUE);
    for (field, map) in [("env", &body.env), ("headers", &body.headers)] {
        let map = map.as_ref();
        checked.names(field, map.into_iter().flat_map(|map| map.keys()), limits::HEADER_NAME);
        for value in map.into_iter().flat_map(|map| map.values()) {
            checked.text(field, value, limits::HEADER_VALUE, Text::Name);
        }
    }
    let mut fields = checked.0;
    if let Err(reason) = validate_display_name(&body.name) {
        fields.push(("name", reason));
    }
    let slug = body.slug.unwrap_or_else(|| slugify(&body.name));
    if !is_valid_slug(&slug) {
        fields.push(("slug", "must be 1–64 characters of a-z, 0-9 and inner dashes".into()));
    }
    let probe_interval_seconds = body.probe_interval_seconds.unwrap_or(DEFAULT_PROBE_INTERVAL);
    if !PROBE_INTERVAL_RANGE.contains(&probe_interval_seconds) {
        fields.push(("probe_interval_seconds", "must be between 1 and 3600".into()));
    }
    let transport = match body.transport {
        TransportKind::Stdio => {
            for (field, given) in [("url", body.url.is_some()), ("headers", body.headers.is_some())] {
                if given {
                    fields.push((field, "is only for the http transport".into()));
                }
            }
            let command = body.command.unwrap_or_default();
            if command.trim().is_empty() {
                fields.push(("command", "is required for the stdio transport".into()));
            }
            let env = body.env.unwrap_or_default();
            if let Some(name) = env.keys().find(|name| !is_env_name(name)) {
                fields.push((
                    "env",
                    format!("`{name}` is not a variable name (letters, digits and _, not first a digit)"),
                ));
            }
            Transport::Stdio { command, args: body.args.unwrap_or_default(), env }
        }
        TransportKind::Http => {
            for (field, given) in
                [("command", body.command.is_some()), ("args", body.args.is_some()), ("env", body.env.is_some())]
            {
                if given {
                    fields.push((field, "is only for the stdio transport".into()));
                }
            }
            let url = body.url.unwrap_or_default();
            if let Err(reason) = check_http_url(&url) {
                fields.push(("url", reason));
            }
            let headers = body.headers.unwrap_or_default();
            if let Err(reason) = check_headers(&headers) {
                fields.push(("headers", reason));
            }
            Transport::Http { url, headers }
        }
    };
    if !fields.is_empty() {
        return Err(ApiError::validation(&fields));
    }
    Ok(McpRegistration {
        name: body.name.trim().to_owned(),
        slug,
        transport,
        probe_interval_seconds,
        trusted: body.trusted.unwrap_or(false),
    })
}

fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn check_http_url(text: &str) -> Result<(), String> {
    let url = url::Url::parse(text).map_err(|err| format!("is not a URL: {err}"))?;
    if matches!(url.scheme(), "http" | "https") && url.host().is_some() {
        Ok(())
    } else {
        Err("must be an http:// or https:// URL with a host".into())
    }
}

/// Header names and values that HTTP can carry; values are never quoted back.
fn check_headers(headers: &BTreeMap<String, String>) -> Result<(), String> {
    for (name, value) in headers {
        if HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(format!("`{name}` is not a valid header name"));
        }
        if HeaderValue::from_str(value).is_err() {
            return Err(format!("the value of `{name}` is not a valid header value"));
        }
    }
    Ok(())
}

/// Register an MCP server and discover its tools.
///
/// Discovery runs before the answer (at most 30 s). When it fails the server is still stored, with
/// `status: error` and the reason in `last_error`.
#[utoipa::path(post, path = "/mcp-servers", tag = "mcp", request_body = CreateMcpServer, responses(
    (status = 201, body = McpServerView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
    (status = 409, body = ErrorBody)))]
async fn create_server(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<CreateMcpServer>,
) -> ApiResult<impl IntoResponse> {
    let registration = registration(body)?;
    let slug = registration.slug.clone();
    let server = mcp_sync::register(&state.store, &state.cipher, &state.mcp, registration)
        .await
        .map_err(|err| conflict_as(err.into(), format!("an MCP server with slug `{slug}` already exists")))?;
    let mut tx = state.store.begin().await?;
    tx.audit(principal.audit(
        "mcp_server.create",
        "mcp_server",
        server.id,
        json!({"slug": server.slug, "transport": server.transport, "status": server.status, "trusted": server.trusted}),
    ))
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, axum::Json(McpServerView::load(&state, server).await?)))
}

/// Change what an admin vouches for about an MCP server [admin].
#[utoipa::path(patch, path = "/mcp-servers/{id}", tag = "mcp", params(("id" = String, Path, description = "Server id or slug")),
    request_body = UpdateMcpServer, responses((status = 200, body = McpServerView), (status = 400, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn update_server(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Json(body): Json<UpdateMcpServer>,
) -> ApiResult<axum::Json<McpServerView>> {
    let server = state.store.get_mcp_server(&id).await?;
    let mut tx = state.store.begin().await?;
    if let Some(trusted) = body.trusted {
        tx.set_mcp_trusted(server.id, trusted).await?;
        tx.audit(principal.audit(
            "mcp_server.update",
            "mcp_server",
            server.id,
            json!({"slug": server.slug, "trusted": trusted}),
        ))
        .await?;
    }
    tx.commit().await?;
    let server = state.store.get_mcp_server(&server.id.to_string()).await?;
    Ok(axum::Json(McpServerView::load(&state, server).await?))
}

/// List MCP servers with their tools, newest first [viewer].
#[utoipa::path(get, path = "/mcp-servers", tag = "mcp", params(PageParams), responses(
    (status = 200, body = List<McpServerView>), (status = 400, body = ErrorBody)))]
async fn list_servers(
    State(state): State<AppState>,
    Query(page): Query<PageParams>,
) -> ApiResult<axum::Json<List<McpServerView>>> {
    let (cursor, limit) = page.parse()?;
    let page = state.store.list_mcp_servers(cursor, limit).await?;
    let next_cursor = page.next_cursor.map(|cursor| cursor.encode());
    let mut items = Vec::with_capacity(page.items.len());
    for server in page.items {
        items.push(McpServerView::load(&state, server).await?);
    }
    Ok(axum::Json(List::page(items, next_cursor)))
}

/// Read one MCP server by id or slug, with its discovered tools.
#[utoipa::path(get, path = "/mcp-servers/{id}", tag = "mcp", params(("id" = String, Path, description = "Server id or slug")),
    responses((status = 200, body = McpServerView), (status = 404, body = ErrorBody)))]
async fn get_server(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<axum::Json<McpServerView>> {
    let server = state.store.get_mcp_server(&id).await?;
    Ok(axum::Json(McpServerView::load(&state, server).await?))
}

/// Remove an MCP server and its tools, closing its connection. Policies naming its tools stay
/// and report the tools as unresolvable.
#[utoipa::path(delete, path = "/mcp-servers/{id}", tag = "mcp", params(("id" = String, Path, description = "Server id or slug")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_server(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let server = state.store.get_mcp_server(&id).await?;
    let mut tx = state.store.begin().await?;
    if !tx.delete_mcp_server(server.id).await? {
        return Err(ApiError::not_found("mcp server"));
    }
    tx.audit(principal.audit("mcp_server.delete", "mcp_server", server.id, json!({"slug": server.slug}))).await?;
    tx.commit().await?;
    state.mcp.remove(server.id).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Re-run discovery on an MCP server and return it; a failure is stored as `status: error`.
#[utoipa::path(post, path = "/mcp-servers/{id}/refresh", tag = "mcp", params(("id" = String, Path, description = "Server id or slug")),
    responses((status = 200, body = McpServerView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn refresh_server(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<McpServerView>> {
    let server = state.store.get_mcp_server(&id).await?;
    let server = mcp_sync::refresh(&state.store, &state.cipher, &state.mcp, &server).await?;
    let mut tx = state.store.begin().await?;
    tx.audit(principal.audit(
        "mcp_server.refresh",
        "mcp_server",
        server.id,
        json!({"slug": server.slug, "status": server.status}),
    ))
    .await?;
    tx.commit().await?;
    Ok(axum::Json(McpServerView::load(&state, server).await?))
}
