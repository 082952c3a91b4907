//! The Streamable HTTP transport (SPEC §6.4): rmcp's client does the protocol work (POST per message,
//! JSON or SSE answers, `Mcp-Session-Id`, `MCP-Protocol-Version` after initialize); this module turns
//! our config into it and makes sure the configured headers go out on every request without ever
//! appearing in logs or errors.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;

use crate::error::McpError;

/// Headers the transport manages itself; configuring them would break the session.
const RESERVED_HEADERS: [&str; 4] = ["accept", "mcp-session-id", "mcp-protocol-version", "last-event-id"];

/// The rmcp transport for `url`, sending `headers` on every request.
pub(crate) fn transport(
    server: &str,
    url: &str,
    headers: &BTreeMap<String, String>,
    connect_timeout: Duration,
) -> Result<StreamableHttpClientTransport<reqwest::Client>, McpError> {
    let invalid = |reason: String| McpError::InvalidConfig { server: server.to_owned(), reason };
    let parsed = reqwest::Url::parse(url).map_err(|error| invalid(format!("url `{url}`: {error}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid(format!("url `{url}`: scheme must be http or https")));
    }
    let custom_headers = header_map(headers).map_err(invalid)?;
    let client = cortex_tls::client_builder()
        .connect_timeout(connect_timeout)
        .build()
        .map_err(|error| McpError::Connect { server: server.to_owned(), reason: error.to_string() })?;
    let config = StreamableHttpClientTransportConfig::with_uri(url).custom_headers(custom_headers);
    Ok(StreamableHttpClientTransport::with_client(client, config))
}

/// Validated, log-redacted headers. Errors name the header but never show its value.
fn header_map(headers: &BTreeMap<String, String>) -> Result<HashMap<HeaderName, HeaderValue>, String> {
    headers
        .iter()
        .map(|(name, value)| {
            let header_name =
                HeaderName::try_from(name.as_str()).map_err(|_| format!("invalid header name `{name}`"))?;
            if RESERVED_HEADERS.contains(&header_name.as_str()) {
                return Err(format!("header `{name}` is managed by the MCP transport and cannot be configured"));
            }
            let mut header_value =
                HeaderValue::try_from(value.as_str()).map_err(|_| format!("header `{name}` has an invalid value"))?;
            header_value.set_sensitive(true);
            Ok((header_name, header_value))
        })
        .collect()
}

#[cfg(test)]
mod tests;
