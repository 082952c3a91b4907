//! Unit tests of the `schema` module.
use serde_json::{Value, json};

use super::*;

fn errors(schema: Value, value: Value) -> Vec<String> {
    validate(&schema, &value).iter().map(ToString::to_string).collect()
}

/// Just the paths, in order.
fn paths(schema: Value, value: Value) -> Vec<String> {
    validate(&schema, &value).into_iter().map(|error| error.path).collect()
}

fn search_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "query": {"type": "string", "minLength": 1, "maxLength": 10},
            "count": {"type": "integer", "minimum": 1, "maximum": 20}
        },
        "required": ["query"],
        "additionalProperties": false
    })
}

#[test]
fn conforming_arguments_pass() {
    assert!(errors(search_schema(), json!({"query": "rust", "count": 5})).is_empty());
    assert!(errors(search_schema(), json!({"query": "rust", "count": 5.0})).is_empty(), "5.0 is an integer");
}

#[test]
fn missing_and_unexpected_properties_are_named_at_their_own_path() {
    let found = errors(search_schema(), json!({"count": 21, "extra": 1}));
    assert!(found.contains(&"$.query: is required".to_owned()), "{found:?}");
    assert!(found.contains(&"$.extra: is not an allowed property".to_owned()), "{found:?}");
    assert!(found.iter().any(|e| e.starts_with("$.count: ") && e.contains("20")), "{found:?}");
    assert_eq!(paths(search_schema(), json!([])), ["$"]);
    let typed_extra = json!({"type": "object", "additionalProperties": {"type": "string"}});
    assert_eq!(paths(typed_extra, json!({"a": "x", "weird key": 1})), [r#"$["weird key"]"#]);
}

#[test]
fn paths_reach_into_arrays_and_objects() {
    let nested = json!({"type": "object", "properties": {"items": {"type": "array", "items": {"type": "object",
        "properties": {"name": {"type": "string"}}, "required": ["name"]}}}});
    assert_eq!(
        errors(nested.clone(), json!({"items": [{"name": "a"}, {"name": "b"}, {}]})),
        ["$.items[2].name: is required"]
    );
    let wrong = errors(nested, json!({"items": [{"name": 7}]}));
    assert_eq!(wrong.len(), 1);
    assert!(wrong[0].starts_with("$.items[0].name: ") && wrong[0].contains("string"), "{wrong:?}");
}

#[test]
fn types_bounds_enums_and_combinators_are_enforced() {
    for (schema, value) in [
        (json!({"type": "integer"}), json!(2.5)),
        (json!({"type": ["string", "null"]}), json!(1)),
        (json!({"minLength": 2}), json!("é")),
        (json!({"exclusiveMinimum": 0}), json!(0)),
        (json!({"multipleOf": 0.5}), json!(1.25)),
        (json!({"enum": ["GET", "POST"]}), json!("PUT")),
        (json!({"const": 1}), json!(2)),
        (json!({"type": "array", "uniqueItems": true}), json!(["a", "a"])),
        (json!({"anyOf": [{"type": "string"}, {"type": "integer", "minimum": 0}]}), json!(-1)),
        (json!({"oneOf": [{"type": "integer"}, {"type": "number"}]}), json!(1)),
        (json!({"not": {"type": "null"}}), json!(null)),
        (json!({"properties": {"a": false}}), json!({"a": 1})),
    ] {
        assert_eq!(paths(schema.clone(), value.clone()).len(), 1, "{schema} should refuse {value}");
    }
    assert!(errors(json!({"minLength": 2}), json!("éé")).is_empty(), "lengths count characters");
    assert!(errors(json!({"multipleOf": 0.1}), json!(0.3)).is_empty());
    assert!(errors(json!({"const": 1}), json!(1.0)).is_empty());
}

#[test]
fn pattern_and_format_are_enforced() {
    let schema = json!({"type": "object", "properties": {
        "code": {"type": "string", "pattern": "^[A-Z]{3}$"},
        "email": {"type": "string", "format": "email"},
        "when": {"type": "string", "format": "date-time"}
    }});
    assert!(
        errors(schema.clone(), json!({"code": "ABC", "email": "a@example.com", "when": "2026-01-02T03:04:05Z"}))
            .is_empty()
    );
    assert_eq!(
        paths(schema, json!({"code": "abc", "email": "not an address", "when": "yesterday"})),
        ["$.code", "$.email", "$.when"]
    );
}

/// The shape MCP servers generated from typed models (pydantic, zod) publish: definitions under `$defs`
/// referenced with `$ref`, nested and in arrays.
fn mcp_style_schema() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "$defs": {
            "Priority": {"type": "string", "enum": ["low", "high"]},
            "Item": {
                "type": "object",
                "properties": {"name": {"type": "string", "minLength": 1}, "priority": {"$ref": "#/$defs/Priority"}},
                "required": ["name", "priority"],
                "additionalProperties": false
            }
        },
        "properties": {
            "owner": {"type": "string", "format": "email"},
            "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}, "minItems": 1}
        },
        "required": ["owner", "items"]
    })
}

#[test]
fn refs_into_defs_are_followed() {
    let valid = json!({"owner": "ops@example.com", "items": [{"name": "a", "priority": "low"}]});
    assert!(errors(mcp_style_schema(), valid).is_empty());
    let invalid = json!({"owner": "ops@example.com", "items": [
        {"name": "a", "priority": "low"},
        {"name": "b", "priority": "urgent"},
        {"priority": "high", "colour": "red"}
    ]});
    assert_eq!(
        paths(mcp_style_schema(), invalid),
        ["$.items[1].priority", "$.items[2].name", "$.items[2].colour"],
        "the violations inside referenced definitions are reported where they are"
    );
}

#[test]
fn a_reference_outside_the_schema_is_never_fetched() {
    let remote = json!({"type": "object", "properties": {"x": {"$ref": "https://schemas.example.com/x.json"}}});
    let error = validator_for(&remote).err().expect("a remote reference cannot be resolved");
    assert!(error.contains("not a usable JSON Schema"), "{error}");
    assert_eq!(validate_arguments(&remote, &json!({"x": 1})).unwrap_err().code(), "not_configured");
}

#[test]
fn validators_are_compiled_once_per_schema() {
    let first = validator_for(&mcp_style_schema()).unwrap();
    let second = validator_for(&mcp_style_schema()).unwrap();
    assert!(Arc::ptr_eq(&first, &second), "the second lookup reuses the compiled validator");
    let other = validator_for(&search_schema()).unwrap();
    assert!(!Arc::ptr_eq(&first, &other));
}

#[test]
fn long_values_do_not_flood_the_message() {
    let found = errors(json!({"type": "integer"}), json!("x".repeat(10_000)));
    assert!(found[0].chars().count() < MESSAGE_CAP + 10, "{}", found[0].len());
}

#[test]
fn validate_arguments_joins_errors() {
    let error = validate_arguments(&search_schema(), &json!({"count": 0})).unwrap_err();
    let ToolError::InvalidArguments(text) = &error else { panic!("{error:?}") };
    let parts: Vec<&str> = text.split("; ").collect();
    assert_eq!(parts.len(), 2, "{text}");
    assert!(parts.contains(&"$.query: is required") && parts.iter().any(|p| p.starts_with("$.count: ")), "{text}");
    assert_eq!(error.code(), "invalid_arguments");
    assert_eq!(validate_arguments(&search_schema(), &json!({"query": "x"})), Ok(()));
}

#[test]
fn object_schema_shape() {
    assert_eq!(check_object_schema(&search_schema()), Ok(()));
    assert_eq!(check_object_schema(&mcp_style_schema()), Ok(()));
    assert!(check_object_schema(&json!({"type": "string"})).is_err());
    assert!(check_object_schema(&json!([])).is_err());
    assert!(check_object_schema(&json!({"type": "object", "properties": []})).is_err());
    assert!(check_object_schema(&json!({"type": "object", "required": [1]})).is_err());
    assert!(check_object_schema(&json!({"type": "object", "properties": {"a": {"type": "bogus"}}})).is_err());
}
