//! The registry, the built-in set and `echo`.

use cortex_core::approval::RiskTier;
use cortex_tools::builtin::{EchoTool, HttpRequestTool};
use cortex_tools::{Tool, ToolError, ToolRegistry};
use serde_json::json;
use std::sync::Arc;

use crate::support::{ctx, guarded};

#[tokio::test]
async fn echo_returns_its_text() {
    let echo = EchoTool::new();
    let output = echo.call(json!({"text": "hi there"}), &ctx()).await.unwrap();
    assert_eq!(output.content, "hi there");
    assert_eq!(output.data, json!({"text": "hi there"}));
    assert!(!output.is_error);
    assert_eq!(echo.default_risk(&json!({})), RiskTier::P3);
    assert!(echo.is_idempotent(&json!({})));
    let error = echo.call(json!({"text": 1}), &ctx()).await.unwrap_err();
    assert!(matches!(error, ToolError::InvalidArguments(_)), "{error}");
}

#[test]
fn registry_resolves_registered_refs() {
    let mut registry = ToolRegistry::new();
    assert!(registry.refs().is_empty());
    registry.register(Arc::new(HttpRequestTool::new(guarded(""))));
    registry.register(Arc::new(EchoTool::new()));
    assert_eq!(registry.refs(), ["echo", "http_request"], "sorted by ref");
    assert!(registry.get("web_search").is_none(), "an unregistered ref is unresolvable");
    assert_eq!(registry.get("echo").unwrap().tool_ref(), "echo");

    registry.register(Arc::new(EchoTool::new()));
    assert_eq!(registry.refs().len(), 2, "re-registering replaces");
}

#[test]
fn error_codes_are_stable() {
    let cases = [
        (ToolError::InvalidArguments("x".into()), "invalid_arguments"),
        (ToolError::BlockedDestination { url: "u".into(), reason: "r".into() }, "blocked_destination"),
        (ToolError::NotConfigured("x".into()), "not_configured"),
        (ToolError::LimitReached("x".into()), "limit_reached"),
        (ToolError::Timeout, "timeout"),
        (ToolError::Cancelled, "cancelled"),
        (ToolError::Failed("x".into()), "tool_failed"),
    ];
    for (error, code) in cases {
        assert_eq!(error.code(), code);
    }
}
