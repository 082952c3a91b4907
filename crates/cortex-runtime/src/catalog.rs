//! What exists for agents to use (SPEC §5.2, §6.1, §6.2): providers, and the one registry of built-in
//! tools.
//!
//! Every built-in is registered once, in [`builtin_registry`]; the same registry answers `GET /tools`
//! (through [`Catalog::builtins`]), validates the tool names of agent definitions and policies, and is
//! what the runtime's resolver offers the model. Adding a built-in (channel `send_message`, `spawn_agent`,
//! browser or sandbox tools, `skill_load`) is one `register` line there.

use std::sync::Arc;

use cortex_core::approval::RiskTier;
use cortex_store::Store;
use cortex_tools::builtin::{EchoTool, HttpRequestTool, WebSearchTool};
use cortex_tools::http::GuardedHttp;
use cortex_tools::{Tool, ToolRegistry};
use serde_json::{Value, json};

use crate::tools::{CreateJobTool, DelegationLimits, MemoryQueryTool, MemoryStoreTool, RequestApprovalTool};

/// What the built-ins need from the process.
pub(crate) struct BuiltinDeps {
    pub store: Store,
    pub memory: Arc<cortex_memory::Memory>,
    /// The SSRF-guarded client of `http_request`.
    pub http: Arc<GuardedHttp>,
    /// `web_search`, when a search provider is configured (otherwise the tool does not exist here).
    pub web_search: Option<WebSearchTool>,
    /// Limits of `create_job`.
    pub delegation: DelegationLimits,
}

/// Every built-in tool of this deployment, by ref.
pub(crate) fn builtin_registry(deps: BuiltinDeps) -> ToolRegistry {
    let BuiltinDeps { store, memory, http, web_search, delegation } = deps;
    let mut registry = ToolRegistry::new();
    registry.register(Arc::new(EchoTool::new()));
    registry.register(Arc::new(HttpRequestTool::new(http)));
    if let Some(web_search) = web_search {
        registry.register(Arc::new(web_search));
    }
    registry.register(Arc::new(MemoryStoreTool::new(memory.clone())));
    registry.register(Arc::new(MemoryQueryTool::new(memory)));
    registry.register(Arc::new(CreateJobTool::new(store, delegation)));
    registry.register(Arc::new(RequestApprovalTool::new()));
    registry
}

/// A built-in tool as the catalogue shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BuiltinTool {
    pub tool_ref: String,
    /// What the model is told the tool does.
    pub description: String,
    /// JSON Schema of its arguments, exactly as the model gets it.
    pub input_schema: Value,
    /// Risk of a call without arguments when the policy names none (`http_request`: GET).
    pub default_risk: RiskTier,
    /// Whether a call without arguments is re-run after a crash interrupted it (SPEC §4.9).
    pub idempotent: bool,
}

impl BuiltinTool {
    fn of(tool: &dyn Tool) -> Self {
        let no_arguments = json!({});
        Self {
            tool_ref: tool.tool_ref().to_owned(),
            description: tool.description().to_owned(),
            input_schema: tool.input_schema().clone(),
            default_risk: tool.default_risk(&no_arguments),
            idempotent: tool.is_idempotent(&no_arguments),
        }
    }
}

/// Why an agent definition cannot run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DefinitionProblem {
    UnknownProvider { provider: String, known: Vec<String> },
}

/// Names of providers and tools that resolve in this deployment.
#[derive(Debug, Clone)]
pub struct Catalog {
    /// Providers configured through the environment or always present (`openai`, `anthropic`).
    pub providers: Vec<String>,
    builtins: Arc<ToolRegistry>,
}

impl Catalog {
    /// Both wire protocols and the given built-ins.
    pub(crate) fn new(builtins: Arc<ToolRegistry>) -> Self {
        Self { providers: vec!["openai".into(), "anthropic".into()], builtins }
    }

    /// Every built-in tool, sorted by ref.
    pub fn builtins(&self) -> Vec<BuiltinTool> {
        self.builtins
            .refs()
            .iter()
            .filter_map(|tool_ref| self.builtins.get(tool_ref))
            .map(|tool| BuiltinTool::of(&*tool))
            .collect()
    }

    /// Checks the provider of every model in a definition.
    pub fn check_provider(&self, provider: &str) -> Result<(), DefinitionProblem> {
        if self.providers.iter().any(|known| known == provider) {
            Ok(())
        } else {
            Err(DefinitionProblem::UnknownProvider { provider: provider.to_owned(), known: self.providers.clone() })
        }
    }

    /// The refs among `refs` that name nothing (not built in, no webhook tool, no discovered MCP tool).
    pub async fn unknown_tools(&self, store: &Store, refs: &[String]) -> Result<Vec<String>, cortex_store::StoreError> {
        let mut unknown = Vec::new();
        for tool_ref in refs {
            if self.builtins.get(tool_ref).is_none() && !store.external_tool_exists(tool_ref).await? {
                unknown.push(tool_ref.clone());
            }
        }
        Ok(unknown)
    }
}
