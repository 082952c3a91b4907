//! A small JSON Schema validator for tool arguments (SPEC §6.5 step 2).
//!
//! It covers the keywords tool schemas use in practice: `type` (with `integer` distinct from `number`),
//! `properties`, `required`, `additionalProperties`, `enum`, `const`, `items`, `minItems`/`maxItems`,
//! `uniqueItems`, `minLength`/`maxLength`, `minimum`/`maximum`, `exclusiveMinimum`/`exclusiveMaximum`,
//! `multipleOf`, `anyOf`/`oneOf`/`allOf`/`not`. Unknown keywords (`pattern`, `format`, `$ref`, …) are
//! ignored, so the validator is permissive rather than wrong: the tool itself still checks what it needs.

use std::fmt;

use serde_json::{Map, Value};

use crate::ToolError;

/// One violation: where (`$.items[2].name`) and what ("must be ≤ 20").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every violation of `schema` by `value`; empty when it conforms.
pub fn validate(schema: &Value, value: &Value) -> Vec<SchemaError> {
    let mut errors = Vec::new();
    check(schema, value, "$", &mut errors);
    errors
}

/// Validates tool arguments, joining the violations into one [`ToolError::InvalidArguments`].
pub fn validate_arguments(schema: &Value, arguments: &Value) -> Result<(), ToolError> {
    let errors = validate(schema, arguments);
    if errors.is_empty() {
        return Ok(());
    }
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    Err(ToolError::InvalidArguments(text.join("; ")))
}

/// Whether `schema` can describe tool arguments: an object schema (`"type": "object"`) whose
/// `properties` is an object and whose `required` is a list of names.
pub fn check_object_schema(schema: &Value) -> Result<(), String> {
    let Some(object) = schema.as_object() else {
        return Err("the schema must be a JSON object".into());
    };
    if object.get("type") != Some(&Value::from("object")) {
        return Err("the schema must have \"type\": \"object\"".into());
    }
    if object.get("properties").is_some_and(|properties| !properties.is_object()) {
        return Err("\"properties\" must be an object".into());
    }
    if let Some(required) = object.get("required") {
        let names = required.as_array().is_some_and(|names| names.iter().all(Value::is_string));
        if !names {
            return Err("\"required\" must be a list of property names".into());
        }
    }
    Ok(())
}

fn check(schema: &Value, value: &Value, path: &str, errors: &mut Vec<SchemaError>) {
    let schema = match schema {
        Value::Bool(true) => return,
        Value::Bool(false) => return push(errors, path, "is not allowed here".into()),
        Value::Object(schema) => schema,
        _ => return,
    };
    if let Some(expected) = schema.get("type")
        && !type_matches(expected, value)
    {
        return push(errors, path, format!("must be {}", describe_type(expected)));
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.iter().any(|candidate| json_eq(candidate, value))
    {
        let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
        push(errors, path, format!("must be one of: {}", list.join(", ")));
    }
    if let Some(expected) = schema.get("const")
        && !json_eq(expected, value)
    {
        push(errors, path, format!("must equal {expected}"));
    }
    match value {
        Value::String(text) => check_string(schema, text, path, errors),
        Value::Number(_) => check_number(schema, value, path, errors),
        Value::Array(items) => check_array(schema, items, path, errors),
        Value::Object(object) => check_object(schema, object, path, errors),
        Value::Null | Value::Bool(_) => {}
    }
    check_combinators(schema, value, path, errors);
}

fn check_string(schema: &Map<String, Value>, text: &str, path: &str, errors: &mut Vec<SchemaError>) {
    let n_chars = text.chars().count() as f64;
    if let Some(min) = number(schema, "minLength")
        && n_chars < min
    {
        push(errors, path, format!("must be at least {} characters long", schema["minLength"]));
    }
    if let Some(max) = number(schema, "maxLength")
        && n_chars > max
    {
        push(errors, path, format!("must be at most {} characters long", schema["maxLength"]));
    }
}

fn check_number(schema: &Map<String, Value>, value: &Value, path: &str, errors: &mut Vec<SchemaError>) {
    let Some(n) = value.as_f64() else { return };
    // Draft 4 spells exclusive bounds as booleans next to minimum/maximum.
    let exclusive = |key: &str| schema.get(key) == Some(&Value::Bool(true));
    if let Some(min) = number(schema, "minimum") {
        if exclusive("exclusiveMinimum") && n <= min {
            push(errors, path, format!("must be > {}", schema["minimum"]));
        } else if n < min {
            push(errors, path, format!("must be ≥ {}", schema["minimum"]));
        }
    }
    if let Some(max) = number(schema, "maximum") {
        if exclusive("exclusiveMaximum") && n >= max {
            push(errors, path, format!("must be < {}", schema["maximum"]));
        } else if n > max {
            push(errors, path, format!("must be ≤ {}", schema["maximum"]));
        }
    }
    if let Some(min) = number(schema, "exclusiveMinimum")
        && n <= min
    {
        push(errors, path, format!("must be > {}", schema["exclusiveMinimum"]));
    }
    if let Some(max) = number(schema, "exclusiveMaximum")
        && n >= max
    {
        push(errors, path, format!("must be < {}", schema["exclusiveMaximum"]));
    }
    if let Some(step) = number(schema, "multipleOf")
        && step > 0.0
        && ((n / step) - (n / step).round()).abs() > 1e-9
    {
        push(errors, path, format!("must be a multiple of {}", schema["multipleOf"]));
    }
}

fn check_array(schema: &Map<String, Value>, items: &[Value], path: &str, errors: &mut Vec<SchemaError>) {
    let n_items = items.len() as f64;
    if let Some(min) = number(schema, "minItems")
        && n_items < min
    {
        push(errors, path, format!("must have at least {} items", schema["minItems"]));
    }
    if let Some(max) = number(schema, "maxItems")
        && n_items > max
    {
        push(errors, path, format!("must have at most {} items", schema["maxItems"]));
    }
    if schema.get("uniqueItems") == Some(&Value::Bool(true))
        && items.iter().enumerate().any(|(i, a)| items[..i].iter().any(|b| json_eq(a, b)))
    {
        push(errors, path, "must not contain duplicate items".into());
    }
    match schema.get("items") {
        Some(Value::Array(positional)) => {
            for (idx, (item_schema, item)) in positional.iter().zip(items).enumerate() {
                check(item_schema, item, &format!("{path}[{idx}]"), errors);
            }
        }
        Some(item_schema) => {
            for (idx, item) in items.iter().enumerate() {
                check(item_schema, item, &format!("{path}[{idx}]"), errors);
            }
        }
        None => {}
    }
}

fn check_object(schema: &Map<String, Value>, object: &Map<String, Value>, path: &str, errors: &mut Vec<SchemaError>) {
    let properties = schema.get("properties").and_then(Value::as_object);
    for name in schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
        if !object.contains_key(name) {
            push(errors, &child_path(path, name), "is required".into());
        }
    }
    for (name, value) in object {
        let child = child_path(path, name);
        match (properties.and_then(|properties| properties.get(name)), schema.get("additionalProperties")) {
            (Some(property_schema), _) => check(property_schema, value, &child, errors),
            (None, Some(Value::Bool(false))) => push(errors, &child, "is not an allowed property".into()),
            (None, Some(extra_schema)) => check(extra_schema, value, &child, errors),
            (None, None) => {}
        }
    }
}

fn check_combinators(schema: &Map<String, Value>, value: &Value, path: &str, errors: &mut Vec<SchemaError>) {
    let branches = |key: &str| -> Vec<Branch> {
        let schemas = schema.get(key).and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        schemas
            .iter()
            .map(|branch| Branch {
                type_matches: branch.get("type").is_none_or(|expected| type_matches(expected, value)),
                errors: validate_at(branch, value, path),
            })
            .collect()
    };
    for branch in branches("allOf") {
        errors.extend(branch.errors);
    }
    let any_of = branches("anyOf");
    if !any_of.is_empty() && any_of.iter().all(|branch| !branch.errors.is_empty()) {
        push(errors, path, format!("must match at least one schema in anyOf ({})", closest(&any_of)));
    }
    let one_of = branches("oneOf");
    let n_matches = one_of.iter().filter(|branch| branch.errors.is_empty()).count();
    if !one_of.is_empty() && n_matches == 0 {
        push(errors, path, format!("must match exactly one schema in oneOf ({})", closest(&one_of)));
    } else if n_matches > 1 {
        push(errors, path, format!("must match exactly one schema in oneOf, but matches {n_matches}"));
    }
    if let Some(forbidden) = schema.get("not")
        && validate_at(forbidden, value, path).is_empty()
    {
        push(errors, path, "must not match the schema in `not`".into());
    }
}

/// The outcome of one alternative of `anyOf`/`oneOf`/`allOf`.
struct Branch {
    type_matches: bool,
    errors: Vec<SchemaError>,
}

fn validate_at(schema: &Value, value: &Value, path: &str) -> Vec<SchemaError> {
    let mut errors = Vec::new();
    check(schema, value, path, &mut errors);
    errors
}

/// The violations of the alternative that came closest: one of the right type, with the fewest errors.
fn closest(branches: &[Branch]) -> String {
    let best = branches.iter().min_by_key(|branch| (!branch.type_matches, branch.errors.len()));
    let text: Vec<String> = best.into_iter().flat_map(|branch| &branch.errors).map(ToString::to_string).collect();
    format!("closest: {}", text.join("; "))
}

fn type_matches(expected: &Value, value: &Value) -> bool {
    match expected {
        Value::String(name) => is_type(name, value),
        Value::Array(names) => names.iter().filter_map(Value::as_str).any(|name| is_type(name, value)),
        _ => true,
    }
}

fn is_type(name: &str, value: &Value) -> bool {
    match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "number" => value.is_number(),
        // 1.0 is an integer in JSON Schema, 1.5 is not.
        "integer" => value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|n| n.fract() == 0.0),
        _ => true,
    }
}

fn describe_type(expected: &Value) -> String {
    let article = |name: &str| {
        let article = if name.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
        if name == "null" { "null".to_owned() } else { format!("{article} {name}") }
    };
    match expected {
        Value::String(name) => article(name),
        Value::Array(names) => {
            let names: Vec<String> = names.iter().filter_map(Value::as_str).map(article).collect();
            names.join(" or ")
        }
        other => format!("of type {other}"),
    }
}

/// JSON equality where `1` and `1.0` are the same number.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        (Value::Array(xs), Value::Array(ys)) => xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| json_eq(x, y)),
        (Value::Object(xs), Value::Object(ys)) => {
            xs.len() == ys.len() && xs.iter().all(|(key, x)| ys.get(key).is_some_and(|y| json_eq(x, y)))
        }
        _ => a == b,
    }
}

fn number(schema: &Map<String, Value>, key: &str) -> Option<f64> {
    schema.get(key).and_then(Value::as_f64)
}

/// `$.name` for identifier-like keys, `$["odd key"]` otherwise.
fn child_path(path: &str, key: &str) -> String {
    let plain = key.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain { format!("{path}.{key}") } else { format!("{path}[{}]", Value::from(key)) }
}

fn push(errors: &mut Vec<SchemaError>, path: &str, message: String) {
    errors.push(SchemaError { path: path.to_owned(), message });
}

#[cfg(test)]
mod tests;
