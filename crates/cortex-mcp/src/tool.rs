//! What discovery learns about a server and its tools: the data behind `mcp_server.protocol_version /
//! server_info / capabilities` and the `mcp_tool` rows (SPEC §3.2).
//!
//! Tools are read from their wire JSON so the caller gets exactly what the server declared (schemas and
//! annotations are stored verbatim).

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

    /// Safe to re-run after a crash (SPEC §4.9): the server marked it `readOnlyHint` or `idempotentHint`.
    pub fn is_idempotent(&self) -> bool {
        self.hint("readOnlyHint") || self.hint("idempotentHint")
    }

    /// The server marked it `destructiveHint: true`; approval policy treats such tools as risky (SPEC §7.1).
    pub fn is_destructive(&self) -> bool {
        self.hint("destructiveHint")
    }

    fn hint(&self, name: &str) -> bool {
        self.annotations.as_ref().and_then(|annotations| annotations.get(name)).and_then(Value::as_bool) == Some(true)
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
