use serde_json::{Value, json};

use super::*;

fn errors(schema: Value, value: Value) -> Vec<String> {
    validate(&schema, &value).iter().map(ToString::to_string).collect()
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
fn object_keywords() {
    assert_eq!(
        errors(search_schema(), json!({"count": 21, "extra": 1})),
        ["$.query: is required", "$.count: must be ≤ 20", "$.extra: is not an allowed property"]
    );
    assert_eq!(errors(search_schema(), json!([])), ["$: must be an object"]);
    let typed_extra = json!({"type": "object", "additionalProperties": {"type": "string"}});
    assert_eq!(errors(typed_extra, json!({"a": "x", "weird key": 1})), [r#"$["weird key"]: must be a string"#]);
}

#[test]
fn integer_is_not_number() {
    assert_eq!(errors(search_schema(), json!({"query": "x", "count": 2.5})), ["$.count: must be an integer"]);
    assert!(errors(json!({"type": "number"}), json!(2.5)).is_empty());
    assert_eq!(errors(json!({"type": "integer"}), json!("3")), ["$: must be an integer"]);
    assert_eq!(errors(json!({"type": ["string", "null"]}), json!(1)), ["$: must be a string or null"]);
}

#[test]
fn string_and_number_bounds() {
    assert_eq!(errors(search_schema(), json!({"query": ""})), ["$.query: must be at least 1 characters long"]);
    assert_eq!(
        errors(search_schema(), json!({"query": "ééééééééééé"})),
        ["$.query: must be at most 10 characters long"]
    );
    assert!(errors(search_schema(), json!({"query": "éééééééééé"})).is_empty(), "lengths count characters");
    assert_eq!(errors(json!({"minimum": 1}), json!(0)), ["$: must be ≥ 1"]);
    assert_eq!(errors(json!({"exclusiveMinimum": 0}), json!(0)), ["$: must be > 0"]);
    assert_eq!(errors(json!({"exclusiveMaximum": 10}), json!(10)), ["$: must be < 10"]);
    assert_eq!(errors(json!({"maximum": 10, "exclusiveMaximum": true}), json!(10)), ["$: must be < 10"]);
    assert_eq!(errors(json!({"multipleOf": 0.5}), json!(1.25)), ["$: must be a multiple of 0.5"]);
    assert!(errors(json!({"multipleOf": 0.1}), json!(0.3)).is_empty());
}

#[test]
fn enum_and_const() {
    let method = json!({"enum": ["GET", "POST"]});
    assert!(errors(method.clone(), json!("GET")).is_empty());
    assert_eq!(errors(method, json!("PUT")), [r#"$: must be one of: "GET", "POST""#]);
    assert_eq!(errors(json!({"const": 1}), json!(2)), ["$: must equal 1"]);
    assert!(errors(json!({"const": 1}), json!(1.0)).is_empty());
}

#[test]
fn array_keywords() {
    let schema =
        json!({"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 2, "uniqueItems": true});
    assert!(errors(schema.clone(), json!(["a", "b"])).is_empty());
    assert_eq!(errors(schema.clone(), json!([])), ["$: must have at least 1 items"]);
    assert_eq!(errors(schema.clone(), json!(["a", "b", "c"])), ["$: must have at most 2 items"]);
    assert_eq!(errors(schema.clone(), json!(["a", "a"])), ["$: must not contain duplicate items"]);
    assert_eq!(errors(schema, json!(["a", 2])), ["$[1]: must be a string"]);
    let nested = json!({"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}}}});
    assert_eq!(errors(nested, json!({"tags": [{"name": "a"}, {}]})), ["$.tags[1].name: is required"]);
    let tuple = json!({"items": [{"type": "string"}, {"type": "integer"}]});
    assert_eq!(errors(tuple, json!(["a", "b", 3])), ["$[1]: must be an integer"]);
}

#[test]
fn combinators() {
    let any_of = json!({"anyOf": [{"type": "string"}, {"type": "integer", "minimum": 0}]});
    assert!(errors(any_of.clone(), json!("x")).is_empty());
    assert!(errors(any_of.clone(), json!(3)).is_empty());
    assert_eq!(errors(any_of, json!(-1)), ["$: must match at least one schema in anyOf (closest: $: must be ≥ 0)"]);
    let one_of = json!({"oneOf": [{"type": "integer"}, {"type": "number"}]});
    assert!(errors(one_of.clone(), json!(1.5)).is_empty());
    assert_eq!(errors(one_of.clone(), json!(1)), ["$: must match exactly one schema in oneOf, but matches 2"]);
    assert_eq!(
        errors(one_of, json!("x")),
        ["$: must match exactly one schema in oneOf (closest: $: must be an integer)"]
    );
    let all_of = json!({"allOf": [{"minimum": 1}, {"maximum": 3}]});
    assert_eq!(errors(all_of, json!(5)), ["$: must be ≤ 3"]);
    assert_eq!(errors(json!({"not": {"type": "null"}}), json!(null)), ["$: must not match the schema in `not`"]);
}

#[test]
fn unknown_keywords_and_boolean_schemas() {
    assert!(
        errors(json!({"type": "string", "pattern": "^x$", "format": "email", "$ref": "#/nope"}), json!("y")).is_empty()
    );
    assert!(errors(json!(true), json!({"anything": 1})).is_empty());
    assert_eq!(errors(json!({"properties": {"a": false}}), json!({"a": 1})), ["$.a: is not allowed here"]);
}

#[test]
fn validate_arguments_joins_errors() {
    let error = validate_arguments(&search_schema(), &json!({"count": 0})).unwrap_err();
    assert_eq!(error, ToolError::InvalidArguments("$.query: is required; $.count: must be ≥ 1".into()));
    assert_eq!(error.code(), "invalid_arguments");
    assert_eq!(validate_arguments(&search_schema(), &json!({"query": "x"})), Ok(()));
}

#[test]
fn object_schema_shape() {
    assert_eq!(check_object_schema(&search_schema()), Ok(()));
    assert!(check_object_schema(&json!({"type": "string"})).is_err());
    assert!(check_object_schema(&json!([])).is_err());
    assert!(check_object_schema(&json!({"type": "object", "properties": []})).is_err());
    assert!(check_object_schema(&json!({"type": "object", "required": [1]})).is_err());
}
