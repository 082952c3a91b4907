//! The set of tools available in this process, looked up by tool ref.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::Tool;

/// Registry of available tools by ref. The runtime registers the built-ins from this crate plus its own
/// store-backed tools; a ref that is not here is "unresolvable" in the sense of SPEC §6.1.
#[derive(Clone, Default)]
pub struct ToolRegistry {
    tools: BTreeMap<String, Arc<dyn Tool>>,
}

impl ToolRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `tool` under its ref, replacing a tool previously registered under the same ref.
    pub fn register(&mut self, tool: Arc<dyn Tool>) {
        self.tools.insert(tool.tool_ref().to_owned(), tool);
    }

    /// The tool registered under `tool_ref`.
    pub fn get(&self, tool_ref: &str) -> Option<Arc<dyn Tool>> {
        self.tools.get(tool_ref).cloned()
    }

    /// Every registered ref, sorted.
    pub fn refs(&self) -> Vec<String> {
        self.tools.keys().cloned().collect()
    }
}

impl std::fmt::Debug for ToolRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolRegistry").field("refs", &self.refs()).finish()
    }
}
