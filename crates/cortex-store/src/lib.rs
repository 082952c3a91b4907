//! Durable state of Cortex Plane on embedded SQLite or PostgreSQL.
//!
//! [`Store`] is the only place that holds SQL. Every method is written once and runs on either engine:
//! the [`engine`] module's dispatch macros expand a method body once per engine, so each copy is
//! type-checked against that engine's driver while the source stays single. Where the engines truly
//! differ (the job claim, notifications, locking) the code branches explicitly on [`engine::Engine`].
//!
//! Writes go through a [`Tx`]. Events emitted in a transaction are inserted at commit time, numbered so
//! that a stream reading up to the visibility watermark never sees a gap fill in later, with no lock
//! between writers (see [`events`]).
//!
//! Architecture invariants:
//! - `cortex-store` knows no HTTP and no business policy: the job engine decides *what* transition to
//!   make; the store makes it atomically and refuses illegal ones (also enforced by a database trigger).
//! - Times come from the injected [`cortex_core::clock::Clock`], never from the database server, so
//!   tests control time.

mod baseline;
mod engine;
mod error;
mod rows;
mod sqlite_writer;

pub mod agents;
pub mod approvals;
pub mod audit;
pub mod budgets;
pub mod channel_access;
pub mod channels;
pub mod credentials;
pub mod delegation;
pub mod events;
pub mod extraction;
pub mod health;
pub mod jobs;
pub mod login_providers;
pub mod logins;
pub mod mcp;
pub mod memory;
pub mod memory_markdown;
pub mod notify;
pub mod outbox;
pub mod page;
pub mod pgvector;
pub mod reply_drafts;
pub mod retention;
pub mod secrets;
pub mod sessions;
pub mod steering;
pub mod tool_calls;
pub mod tool_catalog;
pub mod tools;
pub mod usage;
pub mod users;
pub mod workers;

pub use engine::{DatabaseConfig, Store, Tx};
pub use error::StoreError;
pub use notify::Notification;
pub use page::{Cursor, Page};

/// Result alias for store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
