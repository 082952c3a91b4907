//! Unit tests of the `http` module.
use std::collections::BTreeMap;

use super::header_map;

fn headers(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())).collect()
}

#[test]
fn header_values_are_sensitive() {
    let map = header_map(&headers(&[("Authorization", "Bearer s3cret")])).unwrap();
    let value = map.values().next().unwrap();
    assert!(value.is_sensitive());
    assert!(!format!("{value:?}").contains("s3cret"));
}

#[test]
fn bad_headers_are_rejected_without_echoing_values() {
    let error = header_map(&headers(&[("x-key", "line\nbreak s3cret")])).unwrap_err();
    assert!(error.contains("x-key") && !error.contains("s3cret"), "{error}");
    assert!(header_map(&headers(&[("bad name", "v")])).is_err());
    assert!(header_map(&headers(&[("Mcp-Session-Id", "v")])).unwrap_err().contains("managed"));
}
