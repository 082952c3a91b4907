//! Operator-defined webhook tools (SPEC §6.3): a model call becomes an HTTP request to a fixed URL.
//!
//! The model's arguments are the JSON body (or the query string for GET). Every request carries
//! `Idempotency-Key: <ledger call id>`, the same for a re-run of the same call after a crash, so an endpoint
//! that honours it can be declared `idempotent` (re-run after a crash instead of reported as "outcome
//! unknown", SPEC Appendix B "Failover"). Configured headers are secrets:
//! they are sent only to the webhook's own origin and never appear in outputs, errors, logs or `Debug`
//! output; a response that echoes one has it redacted. The SSRF guard applies like for `http_request`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cortex_core::approval::RiskTier;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};
use url::Url;

use crate::http::{GuardedHttp, GuardedRequest, GuardedResponse, headers, redact_url};
use crate::{DataScope, Tool, ToolContext, ToolError, ToolOutput, schema};

/// Default per-call timeout (SPEC §19).
pub const DEFAULT_WEBHOOK_TIMEOUT_MS: u64 = 30_000;
/// Longest timeout an operator may configure (SPEC §19).
pub const MAX_WEBHOOK_TIMEOUT_MS: u64 = 60_000;
/// How much of an error response body the model sees.
const ERROR_EXCERPT_BYTES: usize = 2048;
const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];
const MAX_NAME_LEN: usize = 48;
/// The header carrying the ledger call id.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// A webhook tool as the operator defines it. `headers` hold secret values (credential refs are resolved
/// into them by the caller at call time), so the type is not `Serialize` and its `Debug` hides them.
#[derive(Clone, Deserialize)]
pub struct WebhookToolDef {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub input_schema: Value,
    pub url: String,
    #[serde(default = "default_method")]
    pub method: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_risk")]
    pub risk: RiskTier,
    /// The endpoint honours `Idempotency-Key` (or is harmless to repeat): a call interrupted by a crash
    /// is sent again. Default false: such a call is reported to the model as "outcome unknown".
    #[serde(default)]
    pub idempotent: bool,
}

/// A `tool_secret` credential a webhook sends (SPEC §6.3). Only the name is stored with the tool; the
/// value is looked up when the tool is resolved for a run and goes into a secret header, so the model,
/// the ledger and the logs never see it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialRef {
    /// Name of a `tool_secret` credential.
    pub credential: String,
    /// Where the value goes; only `header` exists.
    #[serde(default = "default_inject_as")]
    pub inject_as: String,
    #[serde(default = "default_header_name")]
    pub header_name: String,
    /// `bearer` (`Bearer <value>`) or `raw` (the value as it is).
    #[serde(default = "default_format")]
    pub format: String,
}

fn default_inject_as() -> String {
    "header".to_owned()
}

fn default_header_name() -> String {
    "Authorization".to_owned()
}

fn default_format() -> String {
    "bearer".to_owned()
}

impl CredentialRef {
    /// Every problem with the reference (the credential's existence is checked by the caller).
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        if self.credential.trim().is_empty() {
            problems.push("credential must name a tool_secret credential".to_owned());
        }
        if self.inject_as != "header" {
            problems.push(format!("inject_as `{}` is not supported (only `header`)", self.inject_as));
        }
        if !matches!(self.format.as_str(), "bearer" | "raw") {
            problems.push(format!("format `{}` must be bearer or raw", self.format));
        }
        let probe = [(self.header_name.clone(), "x".to_owned())];
        if let Err(problem) = headers::build(&probe, true) {
            problems.push(format!("header_name: {problem}"));
        }
        if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
    }

    /// The header this reference adds for `value`.
    pub fn header(&self, value: &str) -> (String, String) {
        let rendered = if self.format == "raw" { value.to_owned() } else { format!("Bearer {value}") };
        (self.header_name.clone(), rendered)
    }
}

fn default_method() -> String {
    "POST".to_owned()
}

fn default_timeout_ms() -> u64 {
    DEFAULT_WEBHOOK_TIMEOUT_MS
}

fn default_risk() -> RiskTier {
    RiskTier::P2
}

impl fmt::Debug for WebhookToolDef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header_names: Vec<&String> = self.headers.keys().collect();
        f.debug_struct("WebhookToolDef")
            .field("name", &self.name)
            .field("url", &self.url.parse::<Url>().map(|url| redact_url(&url)).unwrap_or_default())
            .field("method", &self.method)
            .field("headers", &header_names)
            .field("timeout_ms", &self.timeout_ms)
            .field("risk", &self.risk)
            .field("idempotent", &self.idempotent)
            .finish_non_exhaustive()
    }
}

impl WebhookToolDef {
    /// The ref policies use: `webhook:<name>`.
    pub fn tool_ref(&self) -> String {
        format!("webhook:{}", self.name)
    }

    /// Every problem with the definition, joined with "; " (for a 422 at creation time).
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        let name_ok = (1..=MAX_NAME_LEN).contains(&self.name.len())
            && self.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !name_ok {
            problems.push(format!("name must be 1–{MAX_NAME_LEN} characters of a-z, 0-9, _ and -"));
        }
        if let Err(problem) = parse_url(&self.url) {
            problems.push(problem);
        }
        if let Err(problem) = schema::check_object_schema(&self.input_schema) {
            problems.push(format!("input_schema: {problem}"));
        }
        if !(1..=MAX_WEBHOOK_TIMEOUT_MS).contains(&self.timeout_ms) {
            problems.push(format!("timeout_ms must be between 1 and {MAX_WEBHOOK_TIMEOUT_MS}"));
        }
        if let Err(problem) = parse_method(&self.method) {
            problems.push(problem);
        }
        let pairs: Vec<(String, String)> = self.headers.clone().into_iter().collect();
        if let Err(problem) = headers::build(&pairs, true) {
            problems.push(format!("headers: {problem}"));
        }
        if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
    }
}

fn parse_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|error| format!("url: {error}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err("url must be an http:// or https:// URL with a host".into());
    }
    Ok(url)
}

fn parse_method(name: &str) -> Result<Method, String> {
    let upper = name.to_ascii_uppercase();
    if !METHODS.contains(&upper.as_str()) {
        return Err(format!("method must be one of {}", METHODS.join(", ")));
    }
    Method::from_bytes(upper.as_bytes()).map_err(|_| format!("invalid method {name}"))
}

/// A validated webhook definition ready to be called.
pub struct WebhookTool {
    def: WebhookToolDef,
    tool_ref: String,
    url: Url,
    method: Method,
    secret_headers: Vec<(String, String)>,
    http: Arc<GuardedHttp>,
}

impl WebhookTool {
    /// Validates `def` and binds it to the guarded client.
    pub fn new(def: WebhookToolDef, http: Arc<GuardedHttp>) -> Result<Self, String> {
        def.validate()?;
        let url = parse_url(&def.url)?;
        let method = parse_method(&def.method)?;
        let secret_headers = def.headers.clone().into_iter().collect();
        Ok(Self { tool_ref: def.tool_ref(), def, url, method, secret_headers, http })
    }

    fn request(&self, input: &Value, call_id: uuid::Uuid) -> Result<GuardedRequest, ToolError> {
        let mut request = GuardedRequest::new(self.method.clone(), self.url.clone());
        request.secret_headers = self.secret_headers.clone();
        request.headers.push((IDEMPOTENCY_KEY.into(), call_id.to_string()));
        request.timeout = Duration::from_millis(self.def.timeout_ms);
        if self.method == Method::GET {
            let Value::Object(args) = input else {
                return Err(ToolError::InvalidArguments("arguments must be a JSON object".into()));
            };
            if !args.is_empty() {
                let mut query = request.url.query_pairs_mut();
                for (name, value) in args {
                    query.append_pair(name, &query_value(value));
                }
            }
        } else {
            request.headers.push(("content-type".into(), "application/json".into()));
            request.body = Some(Bytes::from(input.to_string()));
        }
        Ok(request)
    }

    /// `text` with every configured secret value (and the credential part of `Scheme credential`
    /// values) replaced.
    fn redact(&self, text: &str) -> String {
        let mut redacted = text.to_owned();
        for (_, value) in &self.secret_headers {
            let credential = value.rsplit(' ').next().unwrap_or_default();
            for secret in [value.as_str(), credential] {
                if secret.len() >= 4 {
                    redacted = redacted.replace(secret, "<redacted>");
                }
            }
        }
        redacted
    }

    fn render(&self, response: &GuardedResponse) -> ToolOutput {
        let status = response.status;
        let text = match response.text() {
            Some(text) => self.redact(&text),
            None => {
                let (size, content_type) = response.binary_summary();
                format!("[binary body omitted: {size} bytes of {content_type}]")
            }
        };
        if !status.is_success() {
            let excerpt = prefix(&text, ERROR_EXCERPT_BYTES);
            let truncated = response.truncated || excerpt.len() < text.len();
            let content = format!("webhook `{}` answered HTTP {status}: {excerpt}", self.def.name);
            return ToolOutput::error(
                content,
                json!({ "status": status.as_u16(), "body": excerpt, "truncated": truncated }),
            );
        }
        let body = match serde_json::from_str::<Value>(&text) {
            Ok(parsed) if response.media_type().is_some_and(|media_type| media_type.contains("json")) => parsed,
            _ => Value::from(text.as_str()),
        };
        ToolOutput::ok(text, json!({ "status": status.as_u16(), "body": body, "truncated": response.truncated }))
    }
}

/// Strings go into the query as they are; everything else as JSON text.
fn query_value(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// At most `max_bytes` of `text`, cut at a character boundary.
fn prefix(text: &str, max_bytes: usize) -> &str {
    let mut end = max_bytes.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[async_trait::async_trait]
impl Tool for WebhookTool {
    fn tool_ref(&self) -> &str {
        &self.tool_ref
    }

    fn description(&self) -> &str {
        &self.def.description
    }

    fn input_schema(&self) -> &Value {
        &self.def.input_schema
    }

    fn default_risk(&self, _input: &Value) -> RiskTier {
        self.def.risk
    }

    fn is_idempotent(&self, _input: &Value) -> bool {
        self.def.idempotent
    }

    /// A webhook's purpose is to hand the arguments to another system.
    fn sends_data_out(&self, _input: &Value, _scope: &DataScope) -> bool {
        true
    }

    async fn call(&self, input: Value, ctx: &ToolContext) -> Result<ToolOutput, ToolError> {
        let request = self.request(&input, ctx.call_id)?;
        let response = self.http.send_for_call(request, ctx).await?;
        tracing::info!(tool = %self.tool_ref, status = response.status.as_u16(), "webhook called");
        Ok(self.render(&response))
    }
}
