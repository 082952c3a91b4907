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
///
/// `serde_json::Map` is a `BTreeMap` in this build (serde_json's `preserve_order` feature is off), so a
/// value's own compact form already lists every object's keys in order: this is that form, written in one
/// pass. The test `canonical_form_sorts_keys` fails if a dependency ever turns the feature on.
pub fn canonical_json(value: &Value) -> String {
    value.to_string()
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

    /// The form stored CRCs and hashes were computed with: keys sorted explicitly at every level, each key
    /// and scalar written on its own.
    fn sorted_by_hand(value: &Value, out: &mut String) {
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
                    sorted_by_hand(item, out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (idx, item) in items.iter().enumerate() {
                    if idx > 0 {
                        out.push(',');
                    }
                    sorted_by_hand(item, out);
                }
                out.push(']');
            }
            scalar => out.push_str(&scalar.to_string()),
        }
    }

    #[test]
    fn canonical_form_is_byte_for_byte_the_stored_one() {
        let mut map = serde_json::Map::new();
        for key in ["zeta", "Alpha", "alpha", "é", "a\"quote", "tab\t", "10", "9", ""] {
            map.insert(key.to_owned(), json!(key.len()));
        }
        let value = json!({
            "strings": ["plain", "quote \" and backslash \\", "control \u{1} \n \r \t", "émoji 🦀 ünï", "</script>"],
            "numbers": [0, -1, 9_007_199_254_740_993_u64, i64::MIN, 0.1, -2.5e-8, 1e300, 3.0, 123_456.789],
            "nested": {"y": [{"b": null, "a": [true, false]}], "x": {}},
            "keys": map,
            "empty": [],
        });
        let mut expected = String::new();
        sorted_by_hand(&value, &mut expected);
        assert_eq!(canonical_json(&value), expected);
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
