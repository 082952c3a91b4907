//! `echo`: returns its input text; a diagnostic tool for checking the tool pipeline end to end.

use cortex_core::approval::RiskTier;
use serde::Deserialize;
use serde_json::{Value, json};

use super::parse_args;
use crate::{DataScope, Tool, ToolContext, ToolError, ToolOutput};

/// The `echo` tool.
pub struct EchoTool {
    schema: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    text: String,
}

impl EchoTool {
    /// The tool with its schema.
    pub fn new() -> Self {
        let schema = json!({
            "type": "object",
            "properties": {"text": {"type": "string", "description": "Text to return unchanged."}},
            "required": ["text"],
            "additionalProperties": false
        });
        Self { schema }
    }
}

impl Default for EchoTool {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait::async_trait]
impl Tool for EchoTool {
    fn tool_ref(&self) -> &str {
        "echo"
    }

    fn description(&self) -> &str {
        "Returns the given text unchanged. Useful for testing."
    }

    fn input_schema(&self) -> &Value {
        &self.schema
    }

    fn default_risk(&self, _input: &Value) -> RiskTier {
        RiskTier::P3
    }

    fn is_idempotent(&self, _input: &Value) -> bool {
        true
    }

    fn sends_data_out(&self, _input: &Value, _scope: &DataScope) -> bool {
        false
    }

    async fn call(&self, input: Value, _ctx: &ToolContext) -> Result<ToolOutput, ToolError> {
        let Args { text } = parse_args(input)?;
        Ok(ToolOutput::ok(text.clone(), json!({ "text": text })))
    }
}
