//! The HTTP half shared by both API styles: sending the request, idle and total timeouts, mapping transport
//! failures and error statuses, pumping SSE bytes into a wire decoder, metrics and tracing.
//!
//! A wire style ([`WireProtocol`]) only says how to shape the request and how to read the response; this
//! module is the only place that touches reqwest, so both clients fail, time out and report the same way.

use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderMap};
use serde_json::Value;
use tokio::time::Instant;
use tracing::Instrument;

use crate::accumulate::CompletionBuilder;
use crate::classify;
use crate::error::LlmError;
use crate::sse::{SseEvent, SseParser};
use crate::types::{ChatRequest, Completion, LlmProvider, ProviderConfig, StreamEvent};

/// Largest error body read for its message; the rest is not worth waiting for.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// Whether a decoder has seen the end of the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    Done,
}

/// One API style: request shape, auth headers and response parsing.
pub(crate) trait WireProtocol: Send + Sync + 'static {
    /// Incremental reader of this style's SSE events.
    type Decoder: StreamDecoder;

    /// The full endpoint URL for a configured base URL.
    fn endpoint(&self, base_url: &str) -> String;
    /// The model listing URL for a configured base URL.
    fn models_endpoint(&self, base_url: &str) -> String;
    /// Authentication and version headers; values must be marked sensitive.
    fn headers(&self, api_key: Option<&str>) -> Result<HeaderMap, LlmError>;
    /// The JSON request body.
    fn body(&self, request: &ChatRequest) -> Value;
    /// Reads a complete (non-streaming) response body.
    fn parse_response(&self, body: &Value, out: &mut CompletionBuilder<'_>) -> Result<(), LlmError>;
}

/// Reads one style's stream, event by event.
pub(crate) trait StreamDecoder: Default + Send {
    fn on_event(&mut self, event: SseEvent, out: &mut CompletionBuilder<'_>) -> Result<Flow, LlmError>;
}

/// A provider client for one wire style over a shared reqwest client.
pub(crate) struct HttpProvider<P: WireProtocol> {
    protocol: P,
    name: String,
    endpoint: String,
    headers: Result<HeaderMap, LlmError>,
    /// Kept only to scrub it from error messages.
    api_key: Option<String>,
    idle_timeout: Duration,
    total_timeout: Duration,
    http: reqwest::Client,
}

impl<P: WireProtocol> HttpProvider<P> {
    pub(crate) fn new(protocol: P, config: ProviderConfig, http: reqwest::Client) -> Self {
        Self {
            endpoint: protocol.endpoint(&config.base_url),
            headers: protocol.headers(config.api_key.as_deref()),
            protocol,
            name: config.name,
            api_key: config.api_key,
            idle_timeout: config.idle_timeout,
            total_timeout: config.total_timeout,
            http,
        }
    }

    async fn call(
        &self,
        request: &ChatRequest,
        on_event: &mut (dyn FnMut(StreamEvent) + Send),
    ) -> Result<Completion, LlmError> {
        let deadline = Deadline {
            total_at: Instant::now() + self.total_timeout,
            total: self.total_timeout,
            // A non-streaming server sends nothing until it is done, so silence is only suspicious when streaming.
            idle: request.stream.then_some(self.idle_timeout),
        };
        let headers = self.headers.clone()?;
        let send = self.http.post(&self.endpoint).headers(headers).json(&self.protocol.body(request)).send();
        let mut response = deadline.run(send).await?.map_err(transport_error)?;

        let status = response.status();
        if !status.is_success() {
            let body = read_capped(&mut response, &deadline).await?;
            let body = String::from_utf8_lossy(&body);
            return Err(classify::from_http(status.as_u16(), response.headers(), &body, chrono::Utc::now()));
        }

        let mut out = CompletionBuilder::new(on_event);
        if request.stream && !is_json(response.headers()) {
            self.read_stream(&mut response, &deadline, &mut out).await?;
        } else {
            // Also the path for servers that ignore `stream: true` and answer with one JSON document.
            let body = deadline.run(response.bytes()).await?.map_err(body_error)?;
            let value: Value = serde_json::from_slice(&body).map_err(|err| malformed("response is not JSON", err))?;
            if let Some(error) = value.get("error").filter(|error| !error.is_null()) {
                return Err(classify::from_stream_error(error));
            }
            self.protocol.parse_response(&value, &mut out)?;
        }
        Ok(out.finish(request))
    }

    async fn read_stream(
        &self,
        response: &mut reqwest::Response,
        deadline: &Deadline,
        out: &mut CompletionBuilder<'_>,
    ) -> Result<(), LlmError> {
        let mut parser = SseParser::new();
        let mut decoder = P::Decoder::default();
        loop {
            let Some(chunk) = deadline.run(response.chunk()).await?.map_err(body_error)? else {
                break;
            };
            let events = parser
                .feed(&chunk)
                .map_err(|_| LlmError::transient("malformed_response", "stream contained invalid UTF-8"))?;
            for event in events {
                if decoder.on_event(event, out)? == Flow::Done {
                    return Ok(());
                }
            }
        }
        if let Some(event) = parser.finish()
            && decoder.on_event(event, out)? == Flow::Done
        {
            return Ok(());
        }
        // Lenient towards servers that close without the final marker once the model has finished.
        if out.has_stop_reason() {
            return Ok(());
        }
        Err(LlmError::transient("stream_interrupted", "the stream ended before the response was complete"))
    }
}

/// Longest a model listing may take.
const LIST_MODELS_TIMEOUT: Duration = Duration::from_secs(15);

/// `GET` the style's model listing and return the ids of `data[]` (the shape OpenAI, Anthropic and the
/// OpenAI-compatible servers share).
pub(crate) async fn list_models<P: WireProtocol>(
    protocol: &P,
    config: &ProviderConfig,
    http: &reqwest::Client,
) -> Result<Vec<String>, LlmError> {
    let headers = protocol.headers(config.api_key.as_deref())?;
    let fetch = async {
        let response = http
            .get(protocol.models_endpoint(&config.base_url))
            .headers(headers)
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        let retry_headers = response.headers().clone();
        let body = response.bytes().await.map_err(body_error)?;
        if !status.is_success() {
            let body = String::from_utf8_lossy(&body);
            return Err(classify::from_http(status.as_u16(), &retry_headers, &body, chrono::Utc::now()));
        }
        let value: Value = serde_json::from_slice(&body).map_err(|err| malformed("model list is not JSON", err))?;
        let ids = value
            .get("data")
            .and_then(Value::as_array)
            .ok_or_else(|| LlmError::transient("malformed_response", "the model list has no `data` array"))?
            .iter()
            .filter_map(|model| model.get("id").and_then(Value::as_str).map(str::to_owned))
            .collect();
        Ok(ids)
    };
    let result = match tokio::time::timeout(LIST_MODELS_TIMEOUT, fetch).await {
        Ok(result) => result,
        Err(_) => Err(LlmError::transient("timeout", "the model list did not arrive in time")),
    };
    result.map_err(|err| err.redact(config.api_key.as_deref()))
}

#[async_trait::async_trait]
impl<P: WireProtocol> LlmProvider for HttpProvider<P> {
    fn name(&self) -> &str {
        &self.name
    }

    async fn complete(
        &self,
        request: &ChatRequest,
        on_event: &mut (dyn FnMut(StreamEvent) + Send),
    ) -> Result<Completion, LlmError> {
        let span =
            tracing::info_span!("llm.call", provider = %self.name, model = %request.model, stream = request.stream);
        let started = std::time::Instant::now();
        let result = self
            .call(request, on_event)
            .instrument(span.clone())
            .await
            .map_err(|err| err.redact(self.api_key.as_deref()));

        let provider = self.name.clone();
        let model = request.model.clone();
        metrics::histogram!("cortex_llm_latency_seconds", "provider" => provider.clone(), "model" => model.clone())
            .record(started.elapsed().as_secs_f64());
        let outcome = match &result {
            Ok(completion) => {
                for (direction, tokens) in [("in", completion.usage.tokens_in), ("out", completion.usage.tokens_out)] {
                    metrics::counter!(
                        "cortex_llm_tokens_total",
                        "provider" => provider.clone(), "model" => model.clone(), "direction" => direction
                    )
                    .increment(tokens);
                }
                span.in_scope(|| {
                    tracing::debug!(
                        tokens_in = completion.usage.tokens_in,
                        tokens_out = completion.usage.tokens_out,
                        estimated = completion.usage.estimated,
                        "model call finished"
                    );
                });
                "ok"
            }
            Err(err) => {
                span.in_scope(|| tracing::warn!(code = err.code(), error = %err, "model call failed"));
                err.code()
            }
        };
        metrics::counter!("cortex_llm_requests_total", "provider" => provider, "model" => model, "outcome" => outcome)
            .increment(1);
        result
    }
}

/// An `f32` setting as the JSON number a person wrote (`0.7`, not `0.699999988079071`).
pub(crate) fn json_f32(value: f32) -> Value {
    value.to_string().parse::<f64>().ok().and_then(serde_json::Number::from_f64).map_or(Value::Null, Value::Number)
}

/// A token count at a JSON pointer, when present.
pub(crate) fn count_at(value: &Value, pointer: &str) -> Option<u64> {
    value.pointer(pointer).and_then(Value::as_u64)
}

/// The malformed-stream error for a data payload that is not the JSON the style promises.
pub(crate) fn malformed(what: &str, err: impl std::fmt::Display) -> LlmError {
    LlmError::transient("malformed_response", format!("{what}: {err}"))
}

/// The time limits of one call.
struct Deadline {
    total_at: Instant,
    total: Duration,
    idle: Option<Duration>,
}

impl Deadline {
    /// Awaits `future` unless the idle limit (from now) or the total limit passes first.
    async fn run<F: Future>(&self, future: F) -> Result<F::Output, LlmError> {
        let idle_at = self.idle.map(|idle| Instant::now() + idle);
        let at = idle_at.map_or(self.total_at, |idle_at| idle_at.min(self.total_at));
        match tokio::time::timeout_at(at, future).await {
            Ok(output) => Ok(output),
            Err(_) => match (self.idle, idle_at) {
                (Some(idle), Some(idle_at)) if idle_at < self.total_at => {
                    Err(LlmError::timeout(format!("no data from the provider for {} ms", idle.as_millis())))
                }
                _ => Err(LlmError::timeout(format!("the call exceeded its {} ms limit", self.total.as_millis()))),
            },
        }
    }
}

/// Reads at most [`MAX_ERROR_BODY_BYTES`] of an error response; a broken error body still yields what arrived.
async fn read_capped(response: &mut reqwest::Response, deadline: &Deadline) -> Result<Vec<u8>, LlmError> {
    let mut body = Vec::new();
    while body.len() < MAX_ERROR_BODY_BYTES {
        match deadline.run(response.chunk()).await? {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    body.truncate(MAX_ERROR_BODY_BYTES);
    Ok(body)
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.trim_start().starts_with("application/json"))
}

/// Failures before a response arrived.
fn transport_error(err: reqwest::Error) -> LlmError {
    let timeout = err.is_timeout();
    let builder = err.is_builder();
    let message = error_chain(err);
    if timeout {
        LlmError::timeout(message)
    } else if builder {
        // The request could not even be built: the provider's base URL is unusable.
        LlmError::Rejected { status: 0, code: "invalid_provider_config", message }
    } else {
        LlmError::transient("connection", message)
    }
}

/// Failures while reading a response body: the connection broke mid-response.
fn body_error(err: reqwest::Error) -> LlmError {
    if err.is_timeout() {
        return LlmError::timeout(error_chain(err));
    }
    LlmError::transient("stream_interrupted", error_chain(err))
}

/// reqwest's own message is generic ("error sending request"); the useful part is in the sources. The URL
/// is shown without user info, query or fragment, which may carry credentials.
fn error_chain(err: reqwest::Error) -> String {
    let endpoint = err.url().map(|url| {
        let mut url = url.clone();
        let _ = url.set_username("");
        let _ = url.set_password(None);
        url.set_query(None);
        url.set_fragment(None);
        url
    });
    let err = err.without_url();
    let mut message = endpoint.map(|url| format!("{url}: ")).unwrap_or_default();
    message.push_str(&err.to_string());
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_and_total_limits_are_told_apart() {
        let now = Instant::now();
        let idle = Deadline {
            total_at: now + Duration::from_secs(60),
            total: Duration::from_secs(60),
            idle: Some(Duration::from_millis(10)),
        };
        let err = idle.run(std::future::pending::<()>()).await.unwrap_err();
        assert!(err.to_string().contains("no data"), "{err}");

        let total =
            Deadline { total_at: now + Duration::from_millis(20), total: Duration::from_millis(20), idle: None };
        let err = total.run(std::future::pending::<()>()).await.unwrap_err();
        assert!(err.to_string().contains("exceeded"), "{err}");
        assert_eq!(err.code(), "timeout");
    }

    #[test]
    fn temperatures_keep_their_decimal_form() {
        assert_eq!(json_f32(0.7).to_string(), "0.7");
        assert_eq!(json_f32(1.0).to_string(), "1.0");
    }

    #[test]
    fn json_content_type_detection() {
        let mut headers = HeaderMap::new();
        assert!(!is_json(&headers));
        headers.insert(CONTENT_TYPE, "application/json; charset=utf-8".parse().unwrap());
        assert!(is_json(&headers));
        headers.insert(CONTENT_TYPE, "text/event-stream".parse().unwrap());
        assert!(!is_json(&headers));
    }
}
