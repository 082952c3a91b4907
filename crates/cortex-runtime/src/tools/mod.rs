//! Which tools an agent gets (SPEC §6.1): exactly the refs with an enabled `agent_tool_policy` that resolve
//! now — a registered built-in, a defined webhook tool, an available tool of an `active`/`degraded` MCP
//! server. The same resolution feeds the model's tool list, the runtime disclosure and
//! `GET /agents/{id}/tools`, so they cannot disagree.
//!
//! Built-ins come from the one registry in [`crate::catalog`]; the store-backed ones live in the
//! submodules (`memory_store`, `memory_query`, `create_job`), with `request_approval`, which is not
//! executed at all — the agent loop answers it with a human decision.

mod create_job;
pub(crate) mod credentials;
mod mcp;
mod memory;
mod request_approval;
mod webhooks;

use std::sync::Arc;

use cortex_core::approval::{ApprovalMode, RiskTier};
use cortex_core::tool_ref::{WireNames, parse_mcp_ref};
use cortex_llm::ToolSpec;
use cortex_mcp::Pool;
use cortex_store::agents::Agent;
use cortex_store::secrets::Cipher;
use cortex_store::tools::ToolPolicy;
use cortex_store::{Store, StoreError};
use cortex_tools::http::GuardedHttp;
use cortex_tools::{Tool, ToolRegistry};
use serde_json::json;

use self::credentials::CredentialUse;
use crate::policy;
use cortex_tools::builtin::{SearchConfig, WebSearchTool};

pub(crate) use create_job::{CreateJobTool, DelegationLimits};
pub(crate) use mcp::OUTCOME_UNKNOWN;
pub(crate) use memory::{MEMORY_TOOLS, MemoryQueryTool, MemoryStoreTool};
pub(crate) use request_approval::{REQUEST_APPROVAL, RequestApprovalTool};

/// Something the model can call: its description, schema, risk and crash class always come from the
/// [`Tool`]; what differs is who answers a call.
#[derive(Clone)]
pub(crate) enum Callable {
    /// Executed by the tool.
    Tool(Arc<dyn Tool>),
    /// `request_approval`: the job waits for a human; the result is the decision.
    RequestApproval(Arc<dyn Tool>),
}

impl Callable {
    /// The tool behind the call.
    pub(crate) fn tool(&self) -> &Arc<dyn Tool> {
        match self {
            Callable::Tool(tool) | Callable::RequestApproval(tool) => tool,
        }
    }
}

/// One tool given to an agent.
#[derive(Clone)]
pub(crate) struct Resolved {
    pub policy: ToolPolicy,
    pub callable: Callable,
    pub wire_name: String,
    /// On the platform deny-list (SPEC §7.1): always approved by a human at p1 or stricter.
    pub deny_listed: bool,
}

impl Resolved {
    pub(crate) fn tool_ref(&self) -> &str {
        &self.policy.tool_ref
    }
}

/// The tools of one agent for one job.
pub(crate) struct ToolSet {
    pub tools: Vec<Resolved>,
    pub unresolved: Vec<UnresolvedTool>,
    wire: WireNames,
}

impl ToolSet {
    /// What the model is offered.
    pub(crate) fn specs(&self) -> Vec<ToolSpec> {
        self.tools
            .iter()
            .map(|tool| ToolSpec {
                name: tool.wire_name.clone(),
                description: tool.callable.tool().description().to_owned(),
                parameters: tool.callable.tool().input_schema().clone(),
            })
            .collect()
    }

    /// The tool a model meant by `wire_name`, if it was offered.
    pub(crate) fn by_wire_name(&self, wire_name: &str) -> Option<&Resolved> {
        let tool_ref = self.wire.resolve(wire_name)?;
        self.by_ref(tool_ref)
    }

    pub(crate) fn by_ref(&self, tool_ref: &str) -> Option<&Resolved> {
        self.tools.iter().find(|tool| tool.tool_ref() == tool_ref)
    }

    /// The wire name of a ref, for rebuilding calls recorded in the ledger.
    pub(crate) fn wire_name_of(&self, tool_ref: &str) -> String {
        self.by_ref(tool_ref).map_or_else(|| cortex_core::tool_ref::wire_name(tool_ref), |tool| tool.wire_name.clone())
    }
}

/// A tool exactly as the model gets it, for `GET /agents/{id}/tools`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EffectiveTool {
    pub tool_ref: String,
    /// The function name the model sees.
    pub wire_name: String,
    pub description: String,
    /// The policy's risk, else the tool's default (for a call without arguments), raised to p1 for
    /// deny-listed tools.
    pub risk: RiskTier,
    pub approval: ApprovalMode,
}

/// An enabled policy whose ref resolves to nothing now, and why (a warning for operators, SPEC §6.1).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct UnresolvedTool {
    pub tool_ref: String,
    pub reason: String,
}

/// The effective tools plus the enabled refs that resolve to nothing.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ToolReport {
    /// Exactly what the model is offered, in order.
    pub tools: Vec<EffectiveTool>,
    pub unresolved: Vec<UnresolvedTool>,
}

impl From<&ToolSet> for ToolReport {
    fn from(set: &ToolSet) -> Self {
        let tools = set
            .tools
            .iter()
            .map(|tool| {
                let mut risk = tool.policy.risk.unwrap_or_else(|| tool.callable.tool().default_risk(&json!({})));
                if tool.deny_listed {
                    risk = risk.stricter(RiskTier::P1);
                }
                EffectiveTool {
                    tool_ref: tool.tool_ref().to_owned(),
                    wire_name: tool.wire_name.clone(),
                    description: tool.callable.tool().description().to_owned(),
                    risk,
                    approval: tool.policy.approval,
                }
            })
            .collect();
        ToolReport { tools, unresolved: set.unresolved.clone() }
    }
}

/// Resolves tool refs for agents.
pub(crate) struct ToolResolver {
    store: Store,
    cipher: Arc<Cipher>,
    mcp: Arc<Pool>,
    http: Arc<GuardedHttp>,
    builtins: Arc<ToolRegistry>,
}

/// The built-in a `search` credential configures.
const WEB_SEARCH: &str = "web_search";

impl ToolResolver {
    /// `web_search` through the first `search` credential by name that is not disabled (it takes precedence
    /// over `CORTEX_SEARCH_*`); `None` when there is none. The credential's name picks the wire format
    /// (`brave…` or `searxng…`, else by URL as for the environment) and its `base_url` the endpoint.
    async fn search_from_credential(&self) -> Result<Option<Result<Arc<dyn Tool>, String>>, StoreError> {
        let rows = self.store.credentials_of_kind(credentials::SEARCH_KIND).await?;
        let Some(row) = rows.into_iter().find(|row| row.status != "disabled") else { return Ok(None) };
        let tool = credentials::decrypt(&self.cipher, &row).and_then(|key| {
            let config = SearchConfig::from_credential(&row.name, row.base_url.as_deref(), Some(key))
                .map_err(|err| format!("the search credential `{}` is unusable: {err}", row.name))?;
            WebSearchTool::new(config).map_err(|err| err.to_string())
        });
        Ok(Some(tool.map(|tool| {
            CredentialUse::wrap(Arc::new(tool), self.store.clone(), vec![(credentials::SEARCH_KIND, row.name.clone())])
        })))
    }

    /// The resolver over the process's built-ins (the catalogue's registry) and its webhook and MCP tools.
    pub(crate) fn new(
        store: Store,
        cipher: Arc<Cipher>,
        mcp: Arc<Pool>,
        http: Arc<GuardedHttp>,
        builtins: Arc<ToolRegistry>,
    ) -> ToolResolver {
        ToolResolver { store, cipher, mcp, http, builtins }
    }

    /// The tools `agent` may use now.
    pub(crate) async fn tool_set(&self, agent: &Agent) -> Result<ToolSet, StoreError> {
        let mut wire = WireNames::default();
        let mut tools = Vec::new();
        let mut unresolved = Vec::new();
        for policy in self.store.tool_policies(agent.id).await? {
            if !policy.enabled {
                continue;
            }
            match self.resolve(agent, &policy.tool_ref).await? {
                Ok((callable, destructive)) => {
                    let wire_name = wire.insert(&policy.tool_ref);
                    let deny_listed = destructive || policy::deny_listed(&policy.tool_ref);
                    tools.push(Resolved { policy, callable, wire_name, deny_listed });
                }
                Err(reason) => {
                    tracing::debug!(tool_ref = %policy.tool_ref, %reason, "tool not offered");
                    unresolved.push(UnresolvedTool { tool_ref: policy.tool_ref, reason });
                }
            }
        }
        Ok(ToolSet { tools, unresolved, wire })
    }

    /// The callable behind a ref and whether its server marked it destructive, or why nothing answers to it
    /// (including an input schema that cannot be compiled, so its arguments could not be checked).
    pub(crate) async fn resolve(
        &self,
        agent: &Agent,
        tool_ref: &str,
    ) -> Result<Result<(Callable, bool), String>, StoreError> {
        let resolved = self.resolve_ref(agent, tool_ref).await?;
        Ok(resolved.and_then(|(callable, destructive)| {
            match cortex_tools::schema::validator_for(callable.tool().input_schema()) {
                Ok(_) => Ok((callable, destructive)),
                Err(reason) => Err(format!("`{tool_ref}` cannot be offered: its input schema is {reason}")),
            }
        }))
    }

    async fn resolve_ref(&self, agent: &Agent, tool_ref: &str) -> Result<Result<(Callable, bool), String>, StoreError> {
        if tool_ref == WEB_SEARCH
            && let Some(resolved) = self.search_from_credential().await?
        {
            return Ok(resolved.map(|tool| (Callable::Tool(tool), false)));
        }
        if !agent.memory.enabled && MEMORY_TOOLS.contains(&tool_ref) {
            return Ok(Err(format!(
                "`{tool_ref}` is not offered: this agent's memory is switched off (memory.enabled)"
            )));
        }
        if let Some(tool) = self.builtins.get(tool_ref) {
            let callable =
                if tool_ref == REQUEST_APPROVAL { Callable::RequestApproval(tool) } else { Callable::Tool(tool) };
            return Ok(Ok((callable, false)));
        }
        if let Some(name) = tool_ref.strip_prefix("webhook:") {
            let record = match self.store.webhook_tool(name).await? {
                None => return Ok(Err(format!("webhook tool `{name}` is not defined"))),
                Some(record) if record.agent_id.is_some_and(|owner| owner != agent.id) => {
                    return Ok(Err(format!("webhook tool `{name}` belongs to another agent")));
                }
                Some(record) => record,
            };
            return Ok(webhooks::build(record, &self.store, &self.cipher, self.http.clone())
                .await?
                .map(|tool| (Callable::Tool(tool), false))
                .map_err(|reason| format!("webhook tool `{name}` cannot be used: {reason}")));
        }
        if let Some((slug, name)) = parse_mcp_ref(tool_ref) {
            let record = match self.store.mcp_tool(tool_ref).await? {
                None => {
                    return Ok(Err(format!(
                        "MCP server `{slug}` has no discovered tool `{name}` (removed or never listed)"
                    )));
                }
                Some(record) if !record.available => {
                    return Ok(Err(format!("MCP server `{slug}` no longer offers `{name}`")));
                }
                Some(record) => record,
            };
            let server = match self.store.mcp_server_config(record.server_id).await {
                Ok(server) => server,
                Err(StoreError::NotFound { .. }) => return Ok(Err(format!("MCP server `{slug}` was removed"))),
                Err(err) => return Err(err),
            };
            if !matches!(server.status.as_str(), "active" | "degraded") {
                return Ok(Err(format!("MCP server `{slug}` is {}", server.status)));
            }
            return Ok(mcp::McpTool::build(record, &server, &self.cipher, self.mcp.clone())
                .map(|tool| {
                    let destructive = tool.is_destructive();
                    (Callable::Tool(Arc::new(tool)), destructive)
                })
                .map_err(|reason| format!("MCP server `{slug}` cannot be used: {reason}")));
        }
        if tool_ref == WEB_SEARCH {
            return Ok(Err("`web_search` needs a search provider: a `search` credential, or CORTEX_SEARCH_API_URL / \
                 CORTEX_SEARCH_API_KEY"
                .into()));
        }
        Ok(Err(format!("`{tool_ref}` is not a tool of this deployment")))
    }
}
