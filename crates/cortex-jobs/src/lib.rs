//! The durable job engine (SPEC §4): a worker pool that claims jobs from the store, runs them through
//! registered [`JobHandler`]s with heartbeats, timeouts and cancellation, applies the retry policy,
//! recovers jobs of dead workers and shuts down gracefully; and the [`retention`] policy that removes
//! what ended long ago.
//!
//! The engine owns *policy* (what happens after a failure, when a worker is dead); the store owns
//! atomicity and the database-enforced state machine. Handlers own the work itself and checkpoint
//! through [`JobContext`] so that a retried or recovered attempt resumes where the last one stopped.
//!
//! Every wait goes through the injected clock, so tests drive time with a manual clock and never sleep.

pub mod approvals;
mod breaker;
mod config;
mod engine;
mod handler;
mod ops;
mod reaper;
pub mod retention;
mod retry;

pub use breaker::AutoQuarantine;
pub use config::EngineConfig;
pub use engine::JobEngine;
pub use handler::{CheckpointFailure, JobContext, JobHandler, Outcome, ResumePoint};
pub use ops::{OpError, cancel_job, retry_job};
pub use reaper::reap_once;
pub use retry::settle_failure;
