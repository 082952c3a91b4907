//! Domain vocabulary of Cortex Plane: identifiers, enums with their wire names, the job state machine,
//! retry policy, checkpoints, circuit breakers and the clock.
//!
//! Architecture invariant: this crate does no IO and knows nothing about HTTP, SQL or async runtimes, so
//! every rule here is a pure function that can be tested exhaustively.

pub mod agent;
pub mod api_key;
pub mod approval;
pub mod breaker;
pub mod checkpoint;
pub mod clock;
pub mod event;
pub mod job;
pub mod memory;
pub mod pkce;
pub mod redact;
pub mod role;
mod string_enum;
pub mod tool_ref;

pub use string_enum::UnknownVariant;

/// Every row id is a time-ordered UUIDv7 so that ids sort by creation and index well.
pub fn new_id() -> uuid::Uuid {
    uuid::Uuid::now_v7()
}

/// Timestamps are UTC everywhere; the storage layer persists them as unix milliseconds.
pub type Timestamp = chrono::DateTime<chrono::Utc>;
