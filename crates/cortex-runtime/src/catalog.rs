//! What exists for agents to use: providers and tool refs (SPEC §5.2, §6.1).

use cortex_store::Store;

/// Built-in tools that need no configuration.
pub const BUILTIN_TOOLS: &[&str] =
    &["echo", "http_request", "memory_store", "memory_query", "create_job", "request_approval"];

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
    /// Built-in tools available here (`web_search` only when a search provider is configured).
    pub builtin_tools: Vec<String>,
}

impl Catalog {
    /// The default catalogue: both wire protocols and the always-available built-ins.
    pub fn new(web_search_configured: bool) -> Self {
        let mut builtin_tools: Vec<String> = BUILTIN_TOOLS.iter().map(|name| (*name).to_owned()).collect();
        if web_search_configured {
            builtin_tools.push("web_search".into());
        }
        Self { providers: vec!["openai".into(), "anthropic".into()], builtin_tools }
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
            if !self.builtin_tools.contains(tool_ref) && !store.external_tool_exists(tool_ref).await? {
                unknown.push(tool_ref.clone());
            }
        }
        Ok(unknown)
    }
}
