//! Storage conformance suite: every test runs on SQLite and on PostgreSQL.

mod agents;
mod budgets;
mod channels;
mod connections;
mod credentials;
mod events;
mod extraction;
mod jobs;
mod logins;
mod migrations;
mod notify;
mod schema;
mod secrets;
mod support;
mod tool_calls;
