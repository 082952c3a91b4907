//! How the loop writes and reads `tool_call` rows: the stored output document, the key of a call within its
//! job, argument hashing (what an approval binds to) and redaction (what operators see).

use std::collections::HashMap;

use cortex_core::approval::ToolCallState;
use cortex_core::checkpoint::canonical_json;
use cortex_store::tool_calls::ToolCallRecord;
use cortex_tools::hygiene::wrap_untrusted;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::tools::OUTCOME_UNKNOWN;

/// Characters of a result kept in the ledger (the model sees at most 16 000 of them).
const LEDGER_CONTENT_CAP: usize = 64 * 1024;
/// Bytes of structured data kept in the ledger; larger data is dropped (the content stays).
const LEDGER_DATA_CAP: usize = 64 * 1024;

/// The `output` document of a settled call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct StoredOutput {
    /// What the model is told (before untrusted framing), capped.
    pub content: String,
    pub truncated: bool,
    /// Produced by the tool (framed as untrusted data for the model) rather than by the runtime.
    pub untrusted: bool,
    /// Counts toward the job's tool-error limit.
    pub counts_as_error: bool,
    /// Machine reason of a failure (`invalid_arguments`, `rate_limited`, `blocked_destination`, …).
    pub code: Option<String>,
    #[serde(default)]
    pub data: Value,
}

impl StoredOutput {
    pub(super) fn new(content: &str, untrusted: bool, counts_as_error: bool, code: Option<&str>, data: Value) -> Self {
        let (content, truncated) = match content.char_indices().nth(LEDGER_CONTENT_CAP) {
            Some((cut, _)) => (content[..cut].to_owned(), true),
            None => (content.to_owned(), false),
        };
        let data = if data.to_string().len() > LEDGER_DATA_CAP {
            json!({"omitted": "larger than the ledger keeps"})
        } else {
            data
        };
        StoredOutput { content, truncated, untrusted, counts_as_error, code: code.map(str::to_owned), data }
    }

    pub(super) fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The output of a stored row; rows written by other code read as a plain runtime message.
    pub(super) fn of(record: &ToolCallRecord) -> StoredOutput {
        let fallback = || {
            let content = match record.state {
                ToolCallState::Interrupted => OUTCOME_UNKNOWN.to_owned(),
                state => format!("the call ended `{state}` without a recorded result"),
            };
            StoredOutput::new(&content, false, false, None, Value::Null)
        };
        record.output.clone().and_then(|output| serde_json::from_value(output).ok()).unwrap_or_else(fallback)
    }
}

/// The tool result a model gets for a settled row: tool-produced text framed as untrusted data.
pub(super) fn model_content(record: &ToolCallRecord) -> (String, bool) {
    let output = StoredOutput::of(record);
    let content = if output.untrusted { wrap_untrusted(&record.tool_ref, &output.content) } else { output.content };
    (content, record.is_error)
}

/// The ledger key of a model call id in `turn`: the id itself, unless an earlier turn of the job already
/// used it (some local servers number calls per message), then `<id>~<turn>`.
pub(super) fn key_for(call_id: &str, turn: u32, ledger: &HashMap<String, ToolCallRecord>) -> String {
    match ledger.get(call_id) {
        Some(record) if record.turn != turn => format!("{call_id}~{turn}"),
        _ => call_id.to_owned(),
    }
}

/// SHA-256 hex of the canonical JSON of the arguments: the exact call an approval is for.
pub(super) fn args_hash(input: &Value) -> String {
    hex::encode(Sha256::digest(canonical_json(input).as_bytes()))
}

/// Argument names whose values are never stored or shown.
const SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "authorization",
    "cookie",
    "credential",
    "private_key",
];

/// The arguments with values under secret-looking names replaced, for the ledger, events and approvers.
pub(super) fn redact(input: &Value) -> Value {
    match input {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, value)| {
                    let lower = key.to_ascii_lowercase();
                    let secret = SECRET_WORDS.iter().any(|word| lower.contains(word));
                    (key.clone(), if secret { json!("[redacted]") } else { redact(value) })
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_and_hashing() {
        let input =
            json!({"url": "https://x", "headers": {"Authorization": "Bearer s", "Accept": "a"}, "api_key": "k"});
        let redacted = redact(&input);
        assert_eq!(redacted["headers"]["Authorization"], "[redacted]");
        assert_eq!(redacted["headers"]["Accept"], "a");
        assert_eq!(redacted["api_key"], "[redacted]");
        assert_eq!(args_hash(&json!({"b": 1, "a": 2})), args_hash(&json!({"a": 2, "b": 1})));
        assert_ne!(args_hash(&input), args_hash(&redacted));
    }

    #[test]
    fn long_outputs_are_capped() {
        let output = StoredOutput::new(&"x".repeat(LEDGER_CONTENT_CAP + 10), true, false, None, json!({}));
        assert!(output.truncated);
        assert_eq!(output.content.len(), LEDGER_CONTENT_CAP);
    }
}
