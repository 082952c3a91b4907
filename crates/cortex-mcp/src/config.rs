//! How to reach one MCP server: the transport (a child process or a Streamable HTTP endpoint) and its
//! timeouts. This is the decrypted, in-memory form of an `mcp_server` row (SPEC §3.2); the caller owns
//! persistence and secrets, this crate only uses the values.
//!
//! `Debug` output never shows `env` or header values, because both usually carry credentials.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// Default `tools/call` timeout (SPEC §6.4, §19).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time allowed for connecting plus `tools/list` (SPEC §19).
pub const DEFAULT_DISCOVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// The way JSON-RPC reaches the server.
#[derive(Clone, PartialEq, Eq)]
pub enum Transport {
    /// A child process speaking newline-delimited JSON-RPC on stdin/stdout.
    Stdio {
        command: String,
        args: Vec<String>,
        /// Variables added to the otherwise cleared environment of the child.
        env: BTreeMap<String, String>,
    },
    /// An MCP Streamable HTTP endpoint.
    Http {
        url: String,
        /// Sent on every request (typically auth headers).
        headers: BTreeMap<String, String>,
    },
}

impl Transport {
    /// `stdio` or `http`, as stored in `mcp_server.transport`.
    pub fn kind(&self) -> &'static str {
        match self {
            Transport::Stdio { .. } => "stdio",
            Transport::Http { .. } => "http",
        }
    }
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transport::Stdio { command, args, env } => f
                .debug_struct("Stdio")
                .field("command", command)
                .field("args", args)
                .field("env", &env.keys().collect::<Vec<_>>())
                .finish(),
            Transport::Http { url, headers } => {
                f.debug_struct("Http").field("url", url).field("headers", &headers.keys().collect::<Vec<_>>()).finish()
            }
        }
    }
}

/// Everything needed to connect to one server; cheap to clone and compare, so the pool can notice
/// that a server was reconfigured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub id: uuid::Uuid,
    /// Used in error messages, logs, metrics and tool refs (`mcp:<slug>:<tool>`).
    pub slug: String,
    pub transport: Transport,
    /// Limit for one `tools/call` (per-server override of the 30 s default).
    pub call_timeout: Duration,
    /// Limit for the initialize handshake, and for handshake plus `tools/list` in [`crate::discover`].
    pub discovery_timeout: Duration,
}

impl ServerConfig {
    /// What hides this server's `env`/`headers` values in errors and logs.
    pub fn redactor(&self) -> crate::Redactor {
        crate::redact::of(&self.transport)
    }

    /// A config with the default timeouts.
    pub fn new(id: uuid::Uuid, slug: impl Into<String>, transport: Transport) -> Self {
        Self {
            id,
            slug: slug.into(),
            transport,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            discovery_timeout: DEFAULT_DISCOVERY_TIMEOUT,
        }
    }
}
