//! Unit tests of the `content` module.
use serde_json::json;

use super::{CallOutcome, ContentPart};

#[test]
fn text_joins_parts_and_summarises_the_rest() {
    let outcome = CallOutcome::from_result_json(&json!({
        "content": [
            {"type": "text", "text": "first"},
            {"type": "image", "mimeType": "image/png", "data": "aGVsbG8="},
            {"type": "resource", "resource": {"uri": "file:///a.txt", "mimeType": "text/plain", "text": "body"}},
            {"type": "resource", "resource": {"uri": "demo://blob", "mimeType": "application/gzip", "blob": "AAAA"}},
            {"type": "resource_link", "uri": "demo://x", "name": "x", "description": "an x"},
            {"type": "hologram"}
        ],
        "isError": false
    }));
    assert!(!outcome.is_error);
    assert_eq!(outcome.parts[1], ContentPart::Image { mime_type: "image/png".into(), data_base64: "aGVsbG8=".into() });
    assert_eq!(
        outcome.text(),
        "first\n[image image/png, 5 bytes]\n[resource file:///a.txt]\nbody\n[resource demo://blob]\n\
         [binary application/gzip, 3 bytes]\n[resource demo://x]\nx: an x\n[unsupported content type `hologram`]"
    );
}

#[test]
fn error_flag_and_structured_fallback() {
    let outcome =
        CallOutcome::from_result_json(&json!({"content": [], "structuredContent": {"t": 1}, "isError": true}));
    assert!(outcome.is_error);
    assert_eq!(outcome.text(), r#"{"t":1}"#);
}
