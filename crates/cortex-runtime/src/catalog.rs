//! What exists for agents to use (SPEC §5.2, §6.1, §6.2): providers (the presets of `cortex_llm::presets`
//! plus every `llm` credential), and the one registry of built-in tools.
//!
//! Every built-in is registered once, in [`builtin_registry`]; the same registry answers `GET /tools`
//! (through [`Catalog::builtins`]), validates the tool names of agent definitions and policies, and is
//! what the runtime's resolver offers the model. Adding a built-in (channel `send_message`, `spawn_agent`,
//! browser or sandbox tools, `skill_load`) is one `register` line there.

use std::sync::Arc;

use cortex_core::agent::ModelConfig;
use cortex_core::approval::RiskTier;
use cortex_store::Store;
use cortex_tools::builtin::{EchoTool, HttpRequestTool, WebSearchTool};
use cortex_tools::http::GuardedHttp;
use cortex_tools::{Tool, ToolRegistry};
use serde_json::{Value, json};

use crate::providers::LLM_KIND;
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
    UnknownProvider {
        provider: String,
        known: Vec<String>,
    },
    /// `model_config.credential` names no `llm` credential.
    UnknownCredential {
        credential: String,
    },
    /// `model_config.credential` serves another provider than the agent's.
    CredentialMismatch {
        credential: String,
        serves: String,
        provider: String,
    },
}

impl std::fmt::Display for DefinitionProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownProvider { provider, known } => {
                write!(f, "unknown provider `{provider}`; known providers: {}", known.join(", "))
            }
            Self::UnknownCredential { credential } => write!(f, "no llm credential is named `{credential}`"),
            Self::CredentialMismatch { credential, serves, provider } => {
                write!(f, "credential `{credential}` serves provider `{serves}`, not `{provider}`")
            }
        }
    }
}

/// Names of providers and tools that resolve in this deployment.
#[derive(Debug, Clone)]
pub struct Catalog {
    builtins: Arc<ToolRegistry>,
}

impl Catalog {
    /// The given built-ins.
    pub(crate) fn new(builtins: Arc<ToolRegistry>) -> Self {
        Self { builtins }
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

    /// Checks the providers and the credential of a model configuration: every candidate names a preset
    /// or an `llm` credential, and a named credential serves the agent's provider. `Ok(Err(_))` is a
    /// definition that cannot run.
    pub async fn check_models(
        &self,
        store: &Store,
        config: &ModelConfig,
    ) -> Result<Result<(), DefinitionProblem>, cortex_store::StoreError> {
        let credentials = store.credentials_of_kind(LLM_KIND).await?;
        if let Some(name) = &config.credential {
            let Some(credential) = credentials.iter().find(|row| &row.name == name) else {
                return Ok(Err(DefinitionProblem::UnknownCredential { credential: name.clone() }));
            };
            if credential.provider_name() != config.provider {
                return Ok(Err(DefinitionProblem::CredentialMismatch {
                    credential: name.clone(),
                    serves: credential.provider_name().to_owned(),
                    provider: config.provider.clone(),
                }));
            }
        }
        let mut known: Vec<String> = cortex_llm::presets::all().iter().map(|preset| preset.name.to_owned()).collect();
        known.extend(credentials.into_iter().map(|row| row.name));
        known.sort();
        known.dedup();
        for candidate in config.candidates() {
            if !known.contains(&candidate.provider) {
                return Ok(Err(DefinitionProblem::UnknownProvider { provider: candidate.provider, known }));
            }
        }
        Ok(Ok(()))
    }

    /// The refs among `refs` that name nothing (not built in, no webhook tool, no discovered MCP tool).
    pub async fn unknown_tools(&self, store: &Store, refs: &[String]) -> Result<Vec<String>, cortex_store::StoreError> {
        let mut unknown = Vec::new();
        for tool_ref in refs {
            if tool_ref == "web_search"
                && !store.credentials_of_kind(crate::tools::credentials::SEARCH_KIND).await?.is_empty()
            {
                continue;
            }
            if self.builtins.get(tool_ref).is_none() && !store.external_tool_exists(tool_ref).await? {
                unknown.push(tool_ref.clone());
            }
        }
        Ok(unknown)
    }
}
