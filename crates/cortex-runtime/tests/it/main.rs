//! Integration tests of the agent runtime: a real job engine running the loop against the fake LLM (real
//! OpenAI and Anthropic protocols) and in-process peers, on SQLite and PostgreSQL.

mod approvals;
mod arguments;
mod bench;
mod breaker;
mod builtins;
mod chat;
mod delegation;
mod failover;
mod fake_llm;
mod injection;
mod limits;
mod mcp;
mod memory;
mod recovery;
mod reservations;
mod retention;
mod setup;
mod shutdown;
mod steering;
mod support;
mod turncost;
