//! `request_approval {summary, detail?, risk}` (SPEC §6.2): the agent asks a human before doing something
//! no tool policy covers. It is registered like every built-in so the catalogue, the API and the model see
//! the same description and schema; the agent loop never executes it — it suspends the job for a human
//! and feeds the decision back as the result.

use cortex_core::approval::RiskTier;
use cortex_tools::{DataScope, Tool, ToolContext, ToolError, ToolOutput};
use serde_json::{Value, json};

/// The ref the loop answers with a human decision.
pub(crate) const REQUEST_APPROVAL: &str = "request_approval";

pub(crate) struct RequestApprovalTool {
    schema: Value,
}

impl RequestApprovalTool {
    pub(crate) fn new() -> Self {
        let schema = json!({
            "type": "object",
            "properties": {
                "summary": {"type": "string", "minLength": 1, "maxLength": 500, "description": "What you want to do, in one sentence."},
                "detail": {"type": "string", "description": "Anything the approver needs to judge it."},
                "risk": {"type": "string", "enum": ["p0", "p1", "p2", "p3"], "description": "p0 critical … p3 low."}
            },
            "required": ["summary", "risk"],
            "additionalProperties": false
        });
        Self { schema }
    }
}

#[async_trait::async_trait]
impl Tool for RequestApprovalTool {
    fn tool_ref(&self) -> &str {
        REQUEST_APPROVAL
    }

    fn description(&self) -> &str {
        "Ask a human operator to approve an action that no tool policy covers. The job waits for the \
         decision; the result says whether it was approved and why."
    }

    fn input_schema(&self) -> &Value {
        &self.schema
    }

    /// The tier the request names (p2 when it names none the loop understands).
    fn default_risk(&self, input: &Value) -> RiskTier {
        input.get("risk").and_then(Value::as_str).and_then(|risk| risk.parse().ok()).unwrap_or(RiskTier::P2)
    }

    fn is_idempotent(&self, _input: &Value) -> bool {
        false
    }

    fn sends_data_out(&self, _input: &Value, _scope: &DataScope) -> bool {
        false
    }

    /// Never reached: the loop routes this ref to the approval gate instead of executing it.
    async fn call(&self, _input: Value, _ctx: &ToolContext) -> Result<ToolOutput, ToolError> {
        Err(ToolError::Failed("request_approval is decided by a human, not executed".into()))
    }
}
