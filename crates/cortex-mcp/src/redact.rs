//! Keeping an MCP server's secrets out of what we report about it.
//!
//! A server's `env` and `headers` values are credentials, and a failing server often echoes them (an
//! "invalid key sk-…" on stderr, an error body quoting the `Authorization` header). Everything this crate
//! hands out about a server — the errors of [`crate::Pool`] and [`crate::discover`], the stderr lines it
//! logs — goes through the server's [`Redactor`] first, so a secret reaches neither `last_error` (which
//! viewers read and the database stores in plain text) nor the logs.

use crate::config::Transport;

/// What replaces a secret.
pub const REDACTED: &str = "[redacted]";
/// Values shorter than this are not treated as secrets (they would blank out ordinary words).
const MIN_SECRET_LEN: usize = 4;

/// The secret values of one server's configuration, in the forms they are commonly echoed in.
#[derive(Clone, Default)]
pub struct Redactor {
    /// Longest first, so a value is replaced before any part of it.
    needles: Vec<String>,
}

impl Redactor {
    /// The redactor for a transport's `env` (stdio) or `headers` (http) values.
    pub fn of(transport: &Transport) -> Self {
        match transport {
            Transport::Stdio { env, .. } => Self::new(env.values()),
            Transport::Http { headers, .. } => Self::new(headers.values()),
        }
    }

    /// The redactor for these secret values.
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a String>) -> Self {
        let mut needles: Vec<String> =
            secrets.into_iter().flat_map(|value| forms(value)).filter(|n| n.len() >= MIN_SECRET_LEN).collect();
        needles.sort_by_key(|needle| std::cmp::Reverse(needle.len()));
        needles.dedup();
        Self { needles }
    }

    /// `text` with every secret replaced by [`REDACTED`].
    pub fn apply(&self, text: &str) -> String {
        let mut redacted = text.to_owned();
        for needle in &self.needles {
            if redacted.contains(needle.as_str()) {
                redacted = redacted.replace(needle.as_str(), REDACTED);
            }
        }
        redacted
    }
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor").field("secrets", &self.needles.len()).finish()
    }
}

/// A value, the credential of a `Scheme credential` value, and their JSON-escaped and percent-encoded
/// forms.
fn forms(value: &str) -> Vec<String> {
    let mut plain = vec![value.to_owned()];
    if let Some((_, credential)) = value.trim().rsplit_once(' ') {
        plain.push(credential.to_owned());
    }
    let mut all = plain.clone();
    for text in &plain {
        let json = serde_json::to_string(text).unwrap_or_default();
        all.push(json.trim_matches('"').to_owned());
        all.push(percent_encode(text));
    }
    all
}

/// RFC 3986 percent-encoding of everything but unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Transport {
        let headers: BTreeMap<String, String> =
            pairs.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())).collect();
        Transport::Http { url: "https://mcp.example/".into(), headers }
    }

    #[test]
    fn secrets_and_their_common_forms_are_replaced() {
        let redactor = Redactor::of(&headers(&[("Authorization", "Bearer s3cr3t/token+1"), ("X-Small", "1")]));
        let echoed = "401: invalid header Bearer s3cr3t/token+1; token=s3cr3t%2Ftoken%2B1; got \"s3cr3t/token+1\"";
        let redacted = redactor.apply(echoed);
        assert!(!redacted.contains("s3cr3t"), "{redacted}");
        assert_eq!(redacted.matches(REDACTED).count(), 3, "{redacted}");
        assert_eq!(redactor.apply("version 1 of 1"), "version 1 of 1", "short values are not secrets");
        let env =
            Transport::Stdio { command: "x".into(), args: vec![], env: [("KEY".into(), "sk-live-42".into())].into() };
        assert_eq!(Redactor::of(&env).apply("bad key sk-live-42"), "bad key [redacted]");
    }
}
