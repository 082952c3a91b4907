//! The real `cortex` binary: start-up, configuration errors, bootstrap, client commands, signals.

mod bench;
mod cli;
mod e2e;
mod mcp_secrets;
mod otel;
mod process;
mod serve;
mod startup;
mod tool_crash;
