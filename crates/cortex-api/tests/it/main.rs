//! HTTP conformance: authentication on every route, roles, the error envelope, limits and streams.

mod app;
mod approvals;
mod auth;
mod chat;
mod connections;
mod contract;
mod conversation;
mod credentials;
mod errors;
mod idempotency;
mod jobs;
mod keys;
mod mcp;
mod memory;
mod ops;
mod tools;
