//! Unit tests of the `error` module.
use std::time::Duration;

use super::{McpError, Operation};

#[test]
fn messages_name_the_server_and_the_cause() {
    let exited = McpError::Exited {
        server: "files".into(),
        command: "npx".into(),
        status: "status 1".into(),
        last_stderr: Some("npm ERR! 404".into()),
    };
    assert_eq!(
        exited.to_string(),
        "mcp server `files`: command `npx` exited with status 1 before initialize: npm ERR! 404"
    );
    let timeout =
        McpError::Timeout { server: "x".into(), operation: Operation::Initialize, after: Duration::from_secs(30) };
    assert_eq!(timeout.to_string(), "mcp server `x`: did not answer initialize within 30 s");
    let short =
        McpError::Timeout { server: "x".into(), operation: Operation::CallTool, after: Duration::from_millis(250) };
    assert_eq!(short.to_string(), "mcp server `x`: did not answer tools/call within 250 ms");
}

#[test]
fn only_failures_before_writing_are_retryable() {
    let server = || "s".to_owned();
    assert!(!McpError::Closed { server: server() }.request_was_sent());
    assert!(
        !McpError::Timeout { server: server(), operation: Operation::Initialize, after: Duration::from_secs(1) }
            .request_was_sent()
    );
    assert!(
        McpError::Timeout { server: server(), operation: Operation::CallTool, after: Duration::from_secs(1) }
            .request_was_sent()
    );
    assert!(
        McpError::Transport { server: server(), operation: Operation::CallTool, reason: "eof".into(), sent: true }
            .request_was_sent()
    );
    assert!(
        McpError::Protocol {
            server: server(),
            operation: Operation::CallTool,
            code: Some(-32602),
            reason: "bad".into()
        }
        .request_was_sent()
    );
}

#[test]
fn answers_are_not_health_failures() {
    let rpc = McpError::Protocol { server: "s".into(), operation: Operation::CallTool, code: None, reason: "x".into() };
    assert!(!rpc.is_server_failure());
    assert_eq!(rpc.code(), "mcp_protocol_error");
    assert!(McpError::Closed { server: "s".into() }.is_server_failure());
}
