//! Tool argument validation (SPEC §6.5 step 2) with the `jsonschema` crate: every draft's keywords,
//! including `$defs`/`$ref` (which MCP servers generated from typed models use everywhere), `pattern`
//! and `format`.
//!
//! Each distinct schema is compiled once and cached by its JSON text, so tools that are rebuilt for every
//! job (webhooks, MCP tools) do not recompile. References are resolved only inside the schema itself:
//! the crate is built without remote or file resolution, so a schema can never make us fetch anything.
//!
//! Violations are reported as `path: message`, with the path in the form the model reads best
//! (`$.items[2].name`), a missing property at its own path (`$.query: is required`) and an unexpected
//! one likewise (`$.extra: is not an allowed property`), so the model can correct its call.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use jsonschema::error::ValidationErrorKind;
use jsonschema::paths::LocationSegment;
use serde_json::Value;

use crate::ToolError;

/// Distinct schemas kept compiled; the cache is emptied when it grows past this (schemas of deleted or
/// changed tools would otherwise stay forever).
const CACHE_CAPACITY: usize = 1024;
/// Characters of one violation's message; messages quote the offending value, which may be large.
const MESSAGE_CAP: usize = 300;

/// One violation: where (`$.items[2].name`) and what.
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

/// A compiled schema.
pub struct ArgumentValidator {
    validator: jsonschema::Validator,
}

impl ArgumentValidator {
    /// Every violation of the schema by `value`; empty when it conforms.
    pub fn violations(&self, value: &Value) -> Vec<SchemaError> {
        let mut errors = Vec::new();
        for error in self.validator.iter_errors(value) {
            let path = json_path(error.instance_path().segments());
            match error.kind() {
                ValidationErrorKind::Required { property } => {
                    let name = property.as_str().map_or_else(|| property.to_string(), str::to_owned);
                    push(&mut errors, child_path(&path, &name), "is required".into());
                }
                ValidationErrorKind::AdditionalProperties { unexpected } => {
                    for name in unexpected {
                        push(&mut errors, child_path(&path, name), "is not an allowed property".into());
                    }
                }
                _ => push(&mut errors, path, error.to_string()),
            }
        }
        errors
    }
}

/// The compiled validator of `schema`, from the cache when it was compiled before; the error says why
/// the schema cannot be used (it is not valid JSON Schema, or refers to something outside itself).
pub fn validator_for(schema: &Value) -> Result<Arc<ArgumentValidator>, String> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<ArgumentValidator>>>> = OnceLock::new();
    let key = schema.to_string();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(compiled) = cache.lock().unwrap_or_else(PoisonError::into_inner).get(&key) {
        return Ok(compiled.clone());
    }
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(schema)
        .map_err(|error| format!("not a usable JSON Schema: {error}"))?;
    let compiled = Arc::new(ArgumentValidator { validator });
    let mut cache = cache.lock().unwrap_or_else(PoisonError::into_inner);
    if cache.len() >= CACHE_CAPACITY {
        cache.clear();
    }
    cache.insert(key, compiled.clone());
    Ok(compiled)
}

/// Every violation of `schema` by `value`; a schema that cannot be compiled is one violation at `$`.
pub fn validate(schema: &Value, value: &Value) -> Vec<SchemaError> {
    match validator_for(schema) {
        Ok(validator) => validator.violations(value),
        Err(reason) => vec![SchemaError { path: "$".into(), message: format!("the tool's input schema is {reason}") }],
    }
}

/// Validates tool arguments, joining the violations into one [`ToolError::InvalidArguments`]; a tool
/// whose schema cannot be compiled is [`ToolError::NotConfigured`].
pub fn validate_arguments(schema: &Value, arguments: &Value) -> Result<(), ToolError> {
    let validator = validator_for(schema)
        .map_err(|reason| ToolError::NotConfigured(format!("the tool's input schema is {reason}")))?;
    let errors = validator.violations(arguments);
    if errors.is_empty() {
        return Ok(());
    }
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    Err(ToolError::InvalidArguments(text.join("; ")))
}

/// Whether `schema` can describe tool arguments: an object schema (`"type": "object"`) whose
/// `properties` is an object and whose `required` is a list of names, and that compiles.
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
    validator_for(schema).map(drop)
}

/// `$`, then `.name` for identifier-like keys, `["odd key"]` for others and `[2]` for indexes.
fn json_path<'a>(segments: impl Iterator<Item = LocationSegment<'a>>) -> String {
    let mut path = String::from("$");
    for segment in segments {
        path = match segment {
            LocationSegment::Property(name) => child_path(&path, &name),
            LocationSegment::Index(index) => format!("{path}[{index}]"),
        };
    }
    path
}

fn child_path(path: &str, key: &str) -> String {
    let plain = key.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain { format!("{path}.{key}") } else { format!("{path}[{}]", Value::from(key)) }
}

fn push(errors: &mut Vec<SchemaError>, path: String, message: String) {
    let message = match message.char_indices().nth(MESSAGE_CAP) {
        Some((cut, _)) => format!("{}…", &message[..cut]),
        None => message,
    };
    errors.push(SchemaError { path, message });
}

#[cfg(test)]
mod tests;
