//! Tools an agent can call, and the safety machinery around them (SPEC §6, §17.4, §17.6).
//!
//! # Layout
//! - [`tool`]: the [`Tool`] trait every tool implements, [`ToolContext`], [`DataScope`], [`ToolOutput`].
//! - [`error`]: [`ToolError`] and its stable codes.
//! - [`registry`]: [`ToolRegistry`], tools by ref.
//! - [`ssrf`]: the SSRF rules ([`ssrf::SsrfPolicy`]) and the pinning resolver hook.
//! - [`http`]: [`http::GuardedHttp`], the guarded client (manual redirects, body cap) shared by
//!   `http_request` and webhook tools.
//! - [`builtin`]: `echo`, `http_request`, `web_search`.
//! - [`webhook`]: operator-defined webhook tools.
//! - [`schema`]: the argument validator the runtime runs before every call.
//! - [`hygiene`]: framing tool output as untrusted data for the model's context.
//!
//! Not here: store-backed tools (memory, jobs, schedules …) and the policy pipeline, which live in the
//! runtime and implement [`Tool`] like these.

pub mod builtin;
pub mod error;
pub mod http;
pub mod hygiene;
pub mod registry;
pub mod schema;
pub mod ssrf;
pub mod tool;
pub mod webhook;

pub use error::ToolError;
pub use registry::ToolRegistry;
pub use tool::{DataScope, Tool, ToolContext, ToolOutput};
