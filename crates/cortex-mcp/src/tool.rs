//! What discovery learns about a server and its tools: the data behind `mcp_server.protocol_version /
//! server_info / capabilities` and the `mcp_tool` rows (SPEC §3.2).
//!
//! Tools are read from their wire JSON so the caller gets exactly what the server declared (schemas and
//! annotations are stored verbatim). [`Hints`] is the one rule that turns a server's annotations into a
//! default risk and a crash-recovery class; the API's catalogue and the runtime both use it.

use cortex_core::approval::RiskTier;
use serde_json::Value;

/// One tool as declared by `tools/list`.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolInfo {
    pub name: String,
    pub description: String,
    pub input_schema: Value,
    /// The `annotations` object (`readOnlyHint`, `destructiveHint`, `idempotentHint`, `openWorldHint`, …).
    pub annotations: Option<Value>,
}

impl ToolInfo {
    /// Reads one entry of a `tools/list` result.
    pub(crate) fn from_json(tool: &Value) -> Self {
        Self {
            name: tool.get("name").and_then(Value::as_str).unwrap_or_default().to_owned(),
            description: tool.get("description").and_then(Value::as_str).unwrap_or_default().to_owned(),
            input_schema: tool.get("inputSchema").cloned().unwrap_or_else(|| serde_json::json!({"type": "object"})),
            annotations: tool.get("annotations").filter(|value| !value.is_null()).cloned(),
        }
    }

    /// What the server's annotations say about this tool.
    pub fn hints(&self) -> Hints<'_> {
        Hints(self.annotations.as_ref())
    }

    /// Safe to re-run after a crash (SPEC §4.9): the server marked it `readOnlyHint` or `idempotentHint`.
    pub fn is_idempotent(&self) -> bool {
        self.hints().idempotent()
    }

    /// The server marked it `destructiveHint: true`; approval policy treats such tools as risky (SPEC §7.1).
    pub fn is_destructive(&self) -> bool {
        self.hints().destructive()
    }
}

/// A tool's `annotations` read as hints. They may only make a tool look riskier: a server saying
/// `readOnlyHint` does not lower its risk (an untrusted server could claim anything), while
/// `destructiveHint` raises it to the deny-list tier.
#[derive(Debug, Clone, Copy)]
pub struct Hints<'a>(pub Option<&'a Value>);

impl Hints<'_> {
    /// Risk when a policy names none: `p1` for tools marked destructive (SPEC §7.1), `p2` otherwise.
    pub fn default_risk(self) -> RiskTier {
        if self.destructive() { RiskTier::P1 } else { RiskTier::P2 }
    }

    /// `readOnlyHint` or `idempotentHint`: re-run after a crash interrupted it (SPEC §4.9).
    pub fn idempotent(self) -> bool {
        self.flag("readOnlyHint") || self.flag("idempotentHint")
    }

    /// `destructiveHint: true`.
    pub fn destructive(self) -> bool {
        self.flag("destructiveHint")
    }

    fn flag(self, name: &str) -> bool {
        self.0.and_then(|annotations| annotations.get(name)).and_then(Value::as_bool) == Some(true)
    }
}

/// The result of connecting and listing tools.
#[derive(Debug, Clone, PartialEq)]
pub struct Discovery {
    /// The protocol version both sides agreed on.
    pub protocol_version: String,
    /// The server's `serverInfo` (`name`, `version`, …).
    pub server_info: Value,
    pub capabilities: Value,
    pub tools: Vec<ToolInfo>,
}

#[cfg(test)]
mod tests;
