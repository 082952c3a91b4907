//! The real `cortex` binary: start-up, configuration errors, bootstrap, client commands, signals.

mod bench;
mod browser;
mod channels;
mod cli;
mod credentials;
mod e2e;
mod mcp_secrets;
mod memory;
mod memory_backends;
mod otel;
mod process;
mod serve;
mod startup;
mod tidy;
mod tool_crash;
