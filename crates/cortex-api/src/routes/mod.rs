//! Route handlers, one module per resource. Each exposes `routes()`: its handlers with their minimum role
//! ([`crate::guard::Routes`]).

pub mod agent_health;
pub mod agents;
pub mod approvals;
pub mod auth;
pub mod channel_access;
pub mod channels;
pub mod chat;
pub mod credentials;
pub mod docs;
pub mod health;
pub mod jobs;
pub mod keys;
pub mod login;
pub mod mcp;
pub mod memory;
pub mod providers;
pub mod screens;
pub mod sessions;
pub mod steer;
pub mod tools;
pub mod ui;
pub mod ui_access;
pub mod ui_agent;
pub mod ui_login;
pub mod ui_settings;
pub mod users;
