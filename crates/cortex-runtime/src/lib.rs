//! The agent runtime: everything that happens inside one job run (SPEC §5, §6, §7.1–§7.2, §7.5).
//!
//! # Layout
//! - [`runtime`]: [`Runtime`] and [`RuntimeConfig`] — built once per process; hands the job engine its
//!   handler and answers the API (effective tools, breakers, usage).
//! - `agent_loop`: the agentic loop as a `cortex_jobs::JobHandler` — context, budgets, streaming model calls
//!   with failover, tool calls through policy, approvals and the tool-call ledger (at most once for non-idempotent tools, at least once for idempotent ones), checkpoints, steering.
//! - `providers`: `provider_credential` rows as failover-client providers; env providers materialised;
//!   prices.
//! - `tools`: which tools an agent gets and the store-backed built-ins (`memory_*`, `create_job`), webhook
//!   and MCP tools.
//! - `extraction`: the `memory_extract` job handler (SPEC §9.2–§9.3): transcript → model → filed memories.
//! - `policy`: the approval decision and rate limits; `budget`: which budgets apply and the worst case of a
//!   call; `context`: prompt, disclosure and history trimming.
//! - `secrets`: the process's secret set and its redactor, applied where data enters (tool results,
//!   model output, job errors).
//! - [`buffer`]: the JSONL session buffer and its reader.
//! - [`catalog`]: the one registry of built-in tools and what agent definitions may name (API validation).
//! - [`retention`]: the retention timer of one process (database sweep under a lease, own buffers).
//!
//! Architecture invariant: the runtime owns no HTTP routes and no SQL; it reaches the database only
//! through `cortex-store`, and it never ends a job attempt itself except by suspending it for approval in
//! the same transaction as its checkpoint — the job engine records completions, failures and retries.

mod agent_loop;
mod budget;
pub mod buffer;
mod catalog;
mod context;
mod env;
mod extraction;
mod policy;
mod providers;
pub mod retention;
pub mod runtime;
mod secrets;
pub mod signin;
mod tools;

pub use buffer::{BufferRecord, BufferReport, LineProblem, RecordType, buffer_dir, prune_buffers, read_buffer};
pub use catalog::{BuiltinTool, Catalog, DefinitionProblem};
pub use retention::{RETENTION_INTERVAL, RetentionPass};
pub use runtime::{AgentUsage, Runtime, RuntimeConfig, RuntimeError, UsageLimits, UsagePeriod};
pub use signin::{SignInError, SignInRequest, Started};
pub use tools::{EffectiveTool, ToolReport, UnresolvedTool};
