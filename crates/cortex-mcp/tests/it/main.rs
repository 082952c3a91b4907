//! Integration tests of cortex-mcp against the real MCP reference servers from npm (stdio and Streamable
//! HTTP) and an in-process fake HTTP endpoint for what the real servers cannot show (headers, paging).

mod fake;
mod http;
mod peers;
mod pool;
mod stdio;
