use serde_json::json;

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
