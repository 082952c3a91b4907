//! MCP client of Cortex Plane (SPEC §6.4): talks to operator-configured MCP servers over stdio or
//! Streamable HTTP, discovers their tools, calls them, probes their health and keeps a bounded pool of
//! live connections.
//!
//! # Layout
//! - [`config`]: [`ServerConfig`] and [`Transport`], the decrypted form of an `mcp_server` row.
//! - [`connection`]: one live session ([`Connection`]) and one-shot [`discover`].
//! - [`pool`]: the process-wide [`Pool`] with lazy start, idle close, restart, retry and one circuit
//!   breaker per server.
//! - [`content`], [`tool`]: results in our own types ([`CallOutcome`], [`ToolInfo`], [`Discovery`]).
//! - [`error`]: [`McpError`], which says whether a failed request may have reached the server.
//! - [`redact`]: [`Redactor`], which keeps a server's secrets out of its errors and our logs.
//! - `stdio`, `http`, `handler`: transport and session plumbing.
//!
//! # API boundary
//! The protocol work is done by `rmcp`, which changes its API often; no rmcp type appears in this
//! crate's public API, so upgrades stay inside it. This crate does no persistence: the caller stores
//! discovery results and statuses.

pub mod config;
pub mod connection;
pub mod content;
pub mod error;
mod handler;
mod http;
pub mod pool;
pub mod redact;
mod stdio;
pub mod tool;

pub use config::{DEFAULT_CALL_TIMEOUT, DEFAULT_DISCOVERY_TIMEOUT, ServerConfig, Transport};
pub use connection::{Connection, ServerDetails, discover};
pub use content::{CallOutcome, ContentPart};
pub use error::{McpError, Operation};
pub use pool::{Pool, ProbeOutcome, ProbeResult, ServerStatus};
pub use redact::Redactor;
pub use stdio::KILL_GRACE;
pub use tool::{Discovery, Hints, ToolInfo};
