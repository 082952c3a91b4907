//! Keeping an MCP server's secrets out of what we report about it.
//!
//! A server's `env` and `headers` values are credentials, and a failing server often echoes them (an
//! "invalid key sk-…" on stderr, an error body quoting the `Authorization` header). Everything this crate
//! hands out about a server — the errors of [`crate::Pool`] and [`crate::discover`], the stderr lines it
//! logs — goes through the server's [`Redactor`] first, so a secret reaches neither `last_error` (which
//! viewers read and the database stores in plain text) nor the logs.

use crate::config::Transport;

pub use cortex_core::redact::{REDACTED, Redactor};

/// The redactor for a transport's `env` (stdio) or `headers` (http) values, in every form
/// [`cortex_core::redact`] knows (plain, `Scheme credential`, JSON, percent, hex, base64).
pub fn of(transport: &Transport) -> Redactor {
    match transport {
        Transport::Stdio { env, .. } => Redactor::new(env.values()),
        Transport::Http { headers, .. } => Redactor::new(headers.values()),
    }
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
        let redactor = of(&headers(&[("Authorization", "Bearer s3cr3t/token+1"), ("X-Small", "1")]));
        let echoed = "401: invalid header Bearer s3cr3t/token+1; token=s3cr3t%2Ftoken%2B1; got \"s3cr3t/token+1\"";
        let redacted = redactor.apply(echoed);
        assert!(!redacted.contains("s3cr3t"), "{redacted}");
        assert_eq!(redacted.matches(REDACTED).count(), 3, "{redacted}");
        assert_eq!(redactor.apply("version 1 of 1"), "version 1 of 1", "short values are not secrets");
        let env =
            Transport::Stdio { command: "x".into(), args: vec![], env: [("KEY".into(), "sk-live-42".into())].into() };
        assert_eq!(of(&env).apply("bad key sk-live-42"), "bad key [redacted]");
    }
}
