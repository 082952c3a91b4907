//! Unit tests of the `tool` module.
use serde_json::json;

use cortex_core::approval::RiskTier;

use super::ToolInfo;

#[test]
fn annotations_drive_idempotency_and_destructiveness() {
    let read = ToolInfo::from_json(&json!({"name": "read", "inputSchema": {}, "annotations": {"readOnlyHint": true}}));
    assert!(read.is_idempotent() && !read.is_destructive());
    let delete = ToolInfo::from_json(&json!({"name": "rm", "annotations": {"destructiveHint": true}}));
    assert!(!delete.is_idempotent() && delete.is_destructive());
    assert_eq!(delete.input_schema, json!({"type": "object"}));
    let plain = ToolInfo::from_json(&json!({"name": "x", "description": "d", "annotations": null}));
    assert_eq!((plain.description.as_str(), &plain.annotations), ("d", &None));
    assert!(!plain.is_idempotent() && !plain.is_destructive());
}

#[test]
fn annotations_raise_risk_but_never_lower_it() {
    let read = ToolInfo::from_json(&json!({"name": "read", "annotations": {"readOnlyHint": true}}));
    assert_eq!(read.hints().default_risk(), RiskTier::P2, "a read-only claim is a hint, not trust");
    let delete = ToolInfo::from_json(&json!({"name": "rm", "annotations": {"destructiveHint": true}}));
    assert_eq!(delete.hints().default_risk(), RiskTier::P1);
    assert_eq!(super::Hints(None).default_risk(), RiskTier::P2);
}
