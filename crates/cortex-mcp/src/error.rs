//! The one error type of this crate, named for what the caller can do about a failure.
//!
//! The question that matters most to the runtime is [`McpError::request_was_sent`]: a failure before the
//! request reached the server can be retried on a fresh connection; after that, the tool may have run and
//! the interrupted-call rules of SPEC §4.9 apply. Messages always start with the server slug; texts that
//! came from the server or the transport may echo header or environment values, which is why the pool
//! hands errors out only [`McpError::redacted`].

use std::fmt;
use std::time::Duration;

use crate::redact::Redactor;

/// The MCP request an error or timeout belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Initialize,
    ListTools,
    CallTool,
    Ping,
}

impl Operation {
    /// The JSON-RPC method name.
    pub fn method(self) -> &'static str {
        match self {
            Operation::Initialize => "initialize",
            Operation::ListTools => "tools/list",
            Operation::CallTool => "tools/call",
            Operation::Ping => "ping",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.method())
    }
}

/// Why talking to an MCP server failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum McpError {
    /// The stored configuration cannot be used (empty command, bad URL or header).
    #[error("mcp server `{server}`: invalid configuration: {reason}")]
    InvalidConfig { server: String, reason: String },

    /// The caller passed arguments that cannot be sent (not a JSON object).
    #[error("mcp server `{server}`: invalid arguments for `{tool}`: {reason}")]
    InvalidArguments { server: String, tool: String, reason: String },

    /// The command could not be started at all.
    #[error("mcp server `{server}`: cannot start command `{command}`: {source}")]
    Spawn {
        server: String,
        command: String,
        #[source]
        source: std::io::Error,
    },

    /// The child process ended before completing the initialize handshake.
    #[error(
        "mcp server `{server}`: command `{command}` exited with {status} before initialize{}",
        last_stderr.as_deref().map(|line| format!(": {line}")).unwrap_or_default()
    )]
    Exited {
        server: String,
        command: String,
        /// `status 1` or `signal 9`.
        status: String,
        last_stderr: Option<String>,
    },

    /// The handshake failed for a reason other than a timeout or process exit.
    #[error("mcp server `{server}`: cannot connect: {reason}")]
    Connect { server: String, reason: String },

    /// The server did not answer in time.
    #[error("mcp server `{server}`: did not answer {operation} within {}", format_duration(*after))]
    Timeout { server: String, operation: Operation, after: Duration },

    /// The server answered with a JSON-RPC error or an answer that makes no sense.
    #[error(
        "mcp server `{server}`: {operation} failed: {reason}{}",
        code.map(|code| format!(" (code {code})")).unwrap_or_default()
    )]
    Protocol { server: String, operation: Operation, code: Option<i32>, reason: String },

    /// The transport broke while sending the request or waiting for its answer.
    #[error("mcp server `{server}`: connection failed during {operation}: {reason}")]
    Transport { server: String, operation: Operation, reason: String, sent: bool },

    /// The connection was already closed when the request was about to be sent.
    #[error("mcp server `{server}`: connection is closed")]
    Closed { server: String },

    /// The server's circuit breaker is open after repeated failures.
    #[error("mcp server `{server}`: unavailable after repeated failures (circuit breaker open)")]
    BreakerOpen { server: String },

    /// Every pooled connection is busy and no new one may be opened.
    #[error("mcp server `{server}`: all {max} pooled connections are busy")]
    PoolExhausted { server: String, max: usize },
}

impl McpError {
    /// The same error with the server's secrets replaced in every text that came from outside (stderr,
    /// transport and protocol messages).
    pub fn redacted(self, redactor: &Redactor) -> McpError {
        let clean = |text: String| redactor.apply(&text);
        match self {
            McpError::InvalidConfig { server, reason } => McpError::InvalidConfig { server, reason: clean(reason) },
            McpError::InvalidArguments { server, tool, reason } => {
                McpError::InvalidArguments { server, tool, reason: clean(reason) }
            }
            McpError::Exited { server, command, status, last_stderr } => {
                McpError::Exited { server, command, status, last_stderr: last_stderr.map(clean) }
            }
            McpError::Connect { server, reason } => McpError::Connect { server, reason: clean(reason) },
            McpError::Protocol { server, operation, code, reason } => {
                McpError::Protocol { server, operation, code, reason: clean(reason) }
            }
            McpError::Transport { server, operation, reason, sent } => {
                McpError::Transport { server, operation, reason: clean(reason), sent }
            }
            other => other,
        }
    }

    /// `false` when the failure happened before the request was written, so reconnecting and
    /// retrying cannot run the tool twice.
    pub fn request_was_sent(&self) -> bool {
        match self {
            McpError::Timeout { operation, .. } => *operation != Operation::Initialize,
            McpError::Protocol { .. } => true,
            McpError::Transport { sent, .. } => *sent,
            McpError::InvalidConfig { .. }
            | McpError::InvalidArguments { .. }
            | McpError::Spawn { .. }
            | McpError::Exited { .. }
            | McpError::Connect { .. }
            | McpError::Closed { .. }
            | McpError::BreakerOpen { .. }
            | McpError::PoolExhausted { .. } => false,
        }
    }

    /// Stable machine-readable code for events, `last_error` and API responses.
    pub fn code(&self) -> &'static str {
        match self {
            McpError::InvalidConfig { .. } => "mcp_invalid_config",
            McpError::InvalidArguments { .. } => "mcp_invalid_arguments",
            McpError::Spawn { .. } => "mcp_spawn_failed",
            McpError::Exited { .. } => "mcp_server_exited",
            McpError::Connect { .. } => "mcp_connect_failed",
            McpError::Timeout { .. } => "mcp_timeout",
            McpError::Protocol { .. } => "mcp_protocol_error",
            McpError::Transport { .. } => "mcp_transport_error",
            McpError::Closed { .. } => "mcp_closed",
            McpError::BreakerOpen { .. } => "mcp_breaker_open",
            McpError::PoolExhausted { .. } => "mcp_pool_exhausted",
        }
    }

    /// Whether the failure says something about the server's health (and so counts for its breaker).
    /// A JSON-RPC error is an answer, so a server that sends one is alive.
    pub fn is_server_failure(&self) -> bool {
        !matches!(
            self,
            McpError::Protocol { .. }
                | McpError::InvalidConfig { .. }
                | McpError::InvalidArguments { .. }
                | McpError::BreakerOpen { .. }
                | McpError::PoolExhausted { .. }
        )
    }
}

/// `30 s` for whole seconds, `250 ms` otherwise.
fn format_duration(duration: Duration) -> String {
    if duration.subsec_millis() == 0 && duration.as_secs() > 0 {
        format!("{} s", duration.as_secs())
    } else {
        format!("{} ms", duration.as_millis())
    }
}

#[cfg(test)]
mod tests;
