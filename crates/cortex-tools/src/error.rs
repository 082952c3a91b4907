//! The one error type every tool returns, with the stable machine codes the ledger and API expose.

/// Why a tool call produced no result. The runtime turns it into an error result for the model and
/// records [`ToolError::code`] in the `tool_call` ledger.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolError {
    /// The arguments do not fit the tool (schema mismatch, bad header, malformed URL).
    #[error("invalid arguments: {0}")]
    InvalidArguments(String),
    /// The SSRF guard (SPEC §17.4) refused the destination; `reason` names the rule that fired.
    #[error("blocked destination {url}: {reason}")]
    BlockedDestination { url: String, reason: String },
    /// The tool cannot run because the operator has not configured what it needs.
    #[error("not configured: {0}")]
    NotConfigured(String),
    /// A limit of the platform refuses the call (delegation depth, fan-out); retrying will not help.
    #[error("limit reached: {0}")]
    LimitReached(String),
    /// The call ran out of its time budget.
    #[error("the tool call timed out")]
    Timeout,
    /// The job was cancelled while the call ran.
    #[error("the tool call was cancelled")]
    Cancelled,
    /// Anything else: network failure, an upstream error, an unexpected response.
    #[error("{0}")]
    Failed(String),
}

impl ToolError {
    /// Stable machine code for the ledger, events and API (`error.code`).
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidArguments(_) => "invalid_arguments",
            Self::BlockedDestination { .. } => "blocked_destination",
            Self::NotConfigured(_) => "not_configured",
            Self::LimitReached(_) => "limit_reached",
            Self::Timeout => "timeout",
            Self::Cancelled => "cancelled",
            Self::Failed(_) => "tool_failed",
        }
    }
}
