//! The [`Tool`] trait and the values that flow through a call: context in, output out.
//!
//! Everything a model can invoke — built-ins here, store-backed tools in the runtime, webhooks, MCP tools —
//! implements [`Tool`], so the runtime's policy pipeline (SPEC §6.5) treats them all alike.

use cortex_core::approval::RiskTier;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::ToolError;

/// One invocable tool. Implementations must honour [`ToolContext::data_scope`] and
/// [`ToolContext::cancel`]; the runtime has already validated the arguments against
/// [`Tool::input_schema`] before calling [`Tool::call`].
#[async_trait::async_trait]
pub trait Tool: Send + Sync {
    /// The tool ref policies use (e.g. "echo", "http_request", "webhook:deploy").
    fn tool_ref(&self) -> &str;
    /// What the model is told the tool does.
    fn description(&self) -> &str;
    /// JSON Schema of the arguments (what the model sees).
    fn input_schema(&self) -> &serde_json::Value;
    /// Default risk for this particular call (http_request: GET/HEAD p3, others p2).
    fn default_risk(&self, input: &serde_json::Value) -> RiskTier;
    /// Whether re-running this call after a crash is harmless (§4.9): reads are.
    fn is_idempotent(&self, input: &serde_json::Value) -> bool;
    /// Whether this call can carry data to a destination nobody vouched for: a host off the policy's
    /// egress allow-list (`scope.allowed_hosts`), a webhook, an MCP server no operator marked trusted.
    /// Once untrusted content is in a job's context such a call needs a human whatever its risk (SPEC
    /// Appendix B "Untrusted content gates egress"). Every tool answers explicitly, so a new tool cannot
    /// leak by forgetting to.
    fn sends_data_out(&self, input: &serde_json::Value, scope: &DataScope) -> bool;
    /// Executes the call.
    async fn call(&self, input: serde_json::Value, ctx: &ToolContext) -> Result<ToolOutput, ToolError>;
}

/// Who is calling and within which limits; built by the runtime for every call.
#[derive(Debug, Clone)]
pub struct ToolContext {
    pub agent_id: Uuid,
    pub job_id: Uuid,
    /// The call's row in the `tool_call` ledger: the same for every execution of this call (a re-run after a
    /// crash included), so tools use it as an idempotency key (`Idempotency-Key` for webhooks).
    pub call_id: Uuid,
    pub data_scope: DataScope,
    /// The job's context already holds untrusted content; work the tool hands on (a created job) carries
    /// that taint along.
    pub untrusted_context: bool,
    /// Fires when the job is cancelled; long-running tools stop and return [`ToolError::Cancelled`].
    pub cancel: CancellationToken,
}

impl ToolContext {
    /// A context with a fresh, uncancelled token and a clean context.
    pub fn new(agent_id: Uuid, job_id: Uuid, call_id: Uuid, data_scope: DataScope) -> Self {
        Self { agent_id, job_id, call_id, data_scope, untrusted_context: false, cancel: CancellationToken::new() }
    }
}

/// The `data_scope` of a tool policy (SPEC §6.5 step 6). Unknown keys are rejected so that a typo in a
/// policy is an error at creation time instead of a silently ignored restriction.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataScope {
    /// The agent's egress allow-list for this tool (exact host names or CIDRs): destinations the operator
    /// vouches for, so they are reachable despite the SSRF guard (on top of `CORTEX_SSRF_ALLOW`) and stay
    /// reachable without a human after untrusted content entered the context.
    pub allowed_hosts: Vec<String>,
    /// Memory record types a memory tool may touch (enforced by the runtime's memory tools).
    pub types: Vec<String>,
    /// Memory tags a memory tool may touch (enforced by the runtime's memory tools).
    pub tags: Vec<String>,
}

/// What a successful call returns. `is_error` marks results that are reported to the model as a failure
/// (for example a webhook answering 500) while still being a completed call in the ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolOutput {
    /// Text the model gets (before hygiene wrapping, see [`crate::hygiene::wrap_untrusted`]).
    pub content: String,
    /// Structured result for the ledger/API.
    pub data: serde_json::Value,
    pub is_error: bool,
}

impl ToolOutput {
    /// A successful result.
    pub fn ok(content: impl Into<String>, data: serde_json::Value) -> Self {
        Self { content: content.into(), data, is_error: false }
    }

    /// A completed call whose result is a failure the model should see.
    pub fn error(content: impl Into<String>, data: serde_json::Value) -> Self {
        Self { content: content.into(), data, is_error: true }
    }
}
