//! CRC-protected checkpoints (SPEC §4.8): canonical JSON (sorted keys, no whitespace) plus CRC-32 IEEE.
//! A checkpoint whose CRC does not match is reported as corrupt and never used.

use serde_json::Value;

/// Largest checkpoint we agree to store.
pub const MAX_CHECKPOINT_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CheckpointError {
    #[error("checkpoint is {size} bytes, above the {MAX_CHECKPOINT_BYTES} byte limit")]
    TooLarge { size: usize },
    #[error("checkpoint is corrupt: stored crc {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("checkpoint is corrupt: {0}")]
    Unparsable(String),
}

/// A checkpoint ready to persist.
#[derive(Debug, Clone, PartialEq)]
pub struct SealedCheckpoint {
    pub json: String,
    pub crc: u32,
}

/// Serialises `value` canonically and computes its CRC.
pub fn seal(value: &Value) -> Result<SealedCheckpoint, CheckpointError> {
    let json = canonical_json(value);
    if json.len() > MAX_CHECKPOINT_BYTES {
        return Err(CheckpointError::TooLarge { size: json.len() });
    }
    let crc = crc32fast::hash(json.as_bytes());
    Ok(SealedCheckpoint { json, crc })
}

/// Verifies and parses a stored checkpoint.
pub fn open(json: &str, stored_crc: u32) -> Result<Value, CheckpointError> {
    let computed = crc32fast::hash(json.as_bytes());
    if computed != stored_crc {
        return Err(CheckpointError::CrcMismatch { stored: stored_crc, computed });
    }
    serde_json::from_str(json).map_err(|err| CheckpointError::Unparsable(err.to_string()))
}

/// Compact JSON with object keys sorted at every level, independent of how the map was built.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (idx, (key, item)) in entries.into_iter().enumerate() {
                if idx > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (idx, item) in items.iter().enumerate() {
                if idx > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_form_sorts_keys() {
        let value = json!({"b": 1, "a": {"d": [1, {"z": null, "y": "x"}], "c": true}});
        assert_eq!(canonical_json(&value), r#"{"a":{"c":true,"d":[1,{"y":"x","z":null}]},"b":1}"#);
    }

    #[test]
    fn round_trip_and_corruption() {
        let sealed = seal(&json!({"turn": 3, "messages": ["hi"]})).unwrap();
        assert_eq!(open(&sealed.json, sealed.crc).unwrap()["turn"], 3);
        let tampered = sealed.json.replace('3', "4");
        assert!(matches!(open(&tampered, sealed.crc), Err(CheckpointError::CrcMismatch { .. })));
    }

    #[test]
    fn oversized_checkpoint_is_refused() {
        let big = json!({"blob": "x".repeat(MAX_CHECKPOINT_BYTES)});
        assert!(matches!(seal(&big), Err(CheckpointError::TooLarge { .. })));
    }
}
