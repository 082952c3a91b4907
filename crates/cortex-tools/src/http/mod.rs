//! The SSRF-guarded HTTP client shared by `http_request` and webhook tools (SPEC §17.4).
//!
//! [`GuardedHttp::send`] judges every hop's URL, connects only to addresses the policy vetted (see
//! [`crate::ssrf::resolve`]), follows at most five redirects by hand so each is judged, and reads the
//! response body as a stream up to a cap. Operator-trusted endpoints (search providers, LLM APIs) do not
//! use this client.

mod body;
pub(crate) mod headers;
mod redirect;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use url::Url;

use crate::ssrf::resolve::PinningResolver;
use crate::ssrf::{Denied, Resolver, SsrfPolicy};
use crate::{ToolContext, ToolError};

/// Response bodies are cut after this many bytes (SPEC §19: 1 MiB).
pub const DEFAULT_BODY_CAP: usize = 1024 * 1024;
/// At most this many redirects are followed (SPEC §19).
pub const MAX_REDIRECTS: usize = 5;
/// Time allowed to establish a TCP/TLS connection, within the request's own timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Tunables of a [`GuardedHttp`]; the defaults are the SPEC numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    pub body_cap: usize,
    pub max_redirects: usize,
    pub connect_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self { body_cap: DEFAULT_BODY_CAP, max_redirects: MAX_REDIRECTS, connect_timeout: CONNECT_TIMEOUT }
    }
}

/// One outbound request. Header values in `secret_headers` are sent only while the request stays on the
/// origin of `url`, and never appear in errors, logs or `Debug` output.
#[derive(Clone)]
pub struct GuardedRequest {
    pub method: Method,
    pub url: Url,
    pub headers: Vec<(String, String)>,
    pub secret_headers: Vec<(String, String)>,
    pub body: Option<Bytes>,
    /// Budget for the whole exchange: every redirect hop and reading the body.
    pub timeout: Duration,
}

impl GuardedRequest {
    /// A request without headers or body and a 30 s budget.
    pub fn new(method: Method, url: Url) -> Self {
        Self {
            method,
            url,
            headers: Vec::new(),
            secret_headers: Vec::new(),
            body: None,
            timeout: Duration::from_secs(30),
        }
    }
}

impl std::fmt::Debug for GuardedRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret_names: Vec<&str> = self.secret_headers.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("GuardedRequest")
            .field("method", &self.method)
            .field("url", &redact_url(&self.url))
            .field("headers", &self.headers)
            .field("secret_headers", &secret_names)
            .field("body_len", &self.body.as_ref().map(Bytes::len))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The final response after redirects, with a body of at most the cap.
#[derive(Debug, Clone)]
pub struct GuardedResponse {
    pub status: StatusCode,
    /// The URL that produced this response (after redirects).
    pub url: Url,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Whether the body was cut at the cap.
    pub truncated: bool,
}

impl GuardedResponse {
    /// The media type without parameters, lowercased (`text/html`).
    pub fn media_type(&self) -> Option<String> {
        body::media_type(&self.headers)
    }

    /// Size (from `Content-Length` when present, as the body may be truncated) and media type of a body,
    /// for the note that replaces a binary body.
    pub fn binary_summary(&self) -> (u64, String) {
        let size = self
            .headers
            .get(reqwest::header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok()?.parse().ok())
            .unwrap_or(self.body.len() as u64);
        (size, self.media_type().unwrap_or_else(|| "application/octet-stream".into()))
    }

    /// The body as text, or `None` when the content type (or, without one, the bytes) say it is binary.
    pub fn text(&self) -> Option<String> {
        body::is_textual(self.media_type().as_deref(), &self.body).then(|| body::decode_text(&self.body))
    }
}

/// The guarded client. Cheap to clone; one instance per process, narrowed per call with
/// [`GuardedHttp::scoped`] when a tool policy adds host exceptions.
#[derive(Clone)]
pub struct GuardedHttp {
    policy: Arc<SsrfPolicy>,
    resolver: Arc<dyn Resolver>,
    limits: HttpLimits,
    client: reqwest::Client,
}

impl GuardedHttp {
    /// A client enforcing `policy`, resolving names through `resolver`, with the default limits.
    pub fn new(policy: SsrfPolicy, resolver: Arc<dyn Resolver>) -> Result<Self, ToolError> {
        Self::with_limits(policy, resolver, HttpLimits::default())
    }

    /// A client with explicit limits.
    pub fn with_limits(policy: SsrfPolicy, resolver: Arc<dyn Resolver>, limits: HttpLimits) -> Result<Self, ToolError> {
        let policy = Arc::new(policy);
        let pinning = PinningResolver { policy: Arc::clone(&policy), resolver: Arc::clone(&resolver) };
        // No proxy: a proxy would resolve and connect on our behalf, bypassing the pinning resolver.
        let client = cortex_tls::client_builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(pinning)
            .connect_timeout(limits.connect_timeout)
            .user_agent(concat!("cortex-plane/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| ToolError::NotConfigured(format!("cannot build the HTTP client: {error}")))?;
        Ok(Self { policy, resolver, limits, client })
    }

    /// The policy this client enforces.
    pub fn policy(&self) -> &SsrfPolicy {
        &self.policy
    }

    /// This client with the scope's `allowed_hosts` added as exceptions. Builds a separate client (and
    /// connection pool) when the scope adds anything, so connections vetted under a wider policy are
    /// never reused by a narrower one.
    pub fn scoped(&self, scope: &crate::DataScope) -> Result<Cow<'_, Self>, ToolError> {
        if scope.allowed_hosts.is_empty() {
            return Ok(Cow::Borrowed(self));
        }
        let policy = self.policy.with_extra_hosts(scope);
        Self::with_limits(policy, Arc::clone(&self.resolver), self.limits.clone()).map(Cow::Owned)
    }

    /// Sends `req` on behalf of a tool call: applies the call's data scope and stops when the job is cancelled.
    pub async fn send_for_call(&self, req: GuardedRequest, ctx: &ToolContext) -> Result<GuardedResponse, ToolError> {
        let http = self.scoped(&ctx.data_scope)?;
        tokio::select! {
            biased;
            () = ctx.cancel.cancelled() => Err(ToolError::Cancelled),
            res = http.send(req) => res,
        }
    }

    /// Sends `req`, following redirects, within `req.timeout`.
    pub async fn send(&self, req: GuardedRequest) -> Result<GuardedResponse, ToolError> {
        let timeout = req.timeout;
        tokio::time::timeout(timeout, self.exchange(req)).await.unwrap_or(Err(ToolError::Timeout))
    }

    async fn exchange(&self, req: GuardedRequest) -> Result<GuardedResponse, ToolError> {
        let mut headers = headers::build(&req.headers, false).map_err(ToolError::InvalidArguments)?;
        let secrets = headers::build(&req.secret_headers, true).map_err(ToolError::InvalidArguments)?;
        let origin = req.url.origin();
        let mut hop = redirect::Hop { method: req.method, url: req.url, body: req.body };
        let mut n_redirects = 0;
        loop {
            self.policy.check_url(&hop.url).map_err(|denied| blocked(&hop.url, denied))?;
            let first_party = hop.url.origin() == origin;
            let mut builder = self.client.request(hop.method.clone(), hop.url.clone());
            builder =
                builder.headers(if first_party { headers.clone() } else { headers::without_credentials(&headers) });
            if first_party {
                builder = builder.headers(secrets.clone());
            }
            if let Some(body) = &hop.body {
                builder = builder.body(body.clone());
            }
            tracing::debug!(method = %hop.method, url = %redact_url(&hop.url), "guarded request");
            let response = builder.send().await.map_err(|error| send_error(&hop.url, error))?;
            let Some(next) = redirect::next_hop(&hop, &response)? else {
                return body::read(response, hop.url, self.limits.body_cap).await;
            };
            if n_redirects == self.limits.max_redirects {
                return Err(ToolError::Failed(format!(
                    "stopped after {} redirects: {} redirects again",
                    self.limits.max_redirects,
                    redact_url(&hop.url)
                )));
            }
            n_redirects += 1;
            if next.body.is_none() {
                headers.remove(reqwest::header::CONTENT_TYPE);
            }
            hop = next;
        }
    }
}

fn blocked(url: &Url, denied: Denied) -> ToolError {
    ToolError::BlockedDestination { url: redact_url(url), reason: denied.reason }
}

/// Maps a transport error: a refusal by the pinning resolver becomes `blocked_destination`.
fn send_error(url: &Url, error: reqwest::Error) -> ToolError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(current) = source {
        if let Some(denied) = current.downcast_ref::<Denied>() {
            return blocked(url, denied.clone());
        }
        source = current.source();
    }
    if error.is_timeout() {
        return ToolError::Timeout;
    }
    ToolError::Failed(format!("request to {} failed: {}", redact_url(url), error_chain(&error.without_url())))
}

/// An error and its causes on one line ("error sending request: connection refused").
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source = Some(error);
    while let Some(current) = source {
        let text = current.to_string();
        if !parts.contains(&text) {
            parts.push(text);
        }
        source = current.source();
    }
    parts.join(": ")
}

/// A URL safe to show in errors and logs: no user info, query or fragment.
pub fn redact_url(url: &Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.set_fragment(None);
    // Both fail only for URLs that cannot have credentials, which then have none to hide.
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.to_string()
}
