//! HTTP conformance: authentication on every route, roles, the error envelope, limits and streams.

mod app;
mod approvals;
mod auth;
mod channels;
mod chat;
mod connections;
mod consumers;
mod contract;
mod conversation;
mod credentials;
mod dashboard;
mod errors;
mod idempotency;
mod jobs;
mod keys;
mod login_providers;
mod mcp;
mod memory;
mod ops;
mod redaction;
mod settings_pages;
mod sign_in;
mod sizes;
mod tools;
mod users;
