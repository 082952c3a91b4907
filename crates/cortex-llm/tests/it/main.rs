//! Integration tests: both clients against in-process fakes speaking real HTTP and SSE, and the failover
//! client on top of them. Helpers shared by the modules live here.

mod anthropic;
mod failover;
mod fake;
mod metrics;
mod openai;
mod transport;

use std::sync::Arc;
use std::time::Duration;

use cortex_llm::{ApiStyle, ChatRequest, Completion, LlmError, LlmProvider, Message, ProviderConfig, StreamEvent};
use serde_json::{Value, json};

use crate::fake::FakeServer;

/// The API key used by tests; assertions check it never leaks into errors.
pub const KEY: &str = "sk-test-secret-1234";

/// A reqwest client on the ring provider (STACK §2.3).
pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

pub fn config(style: ApiStyle, server: &FakeServer) -> ProviderConfig {
    ProviderConfig::new(format!("{style}-fake"), style, server.base_url.clone()).with_api_key(KEY)
}

pub fn provider(style: ApiStyle, server: &FakeServer) -> Arc<dyn LlmProvider> {
    cortex_llm::build_provider(config(style, server), http())
}

/// A provider with the given limits, for stall tests. Only tests whose server never answers use short
/// limits, so a slow machine can never turn an expected answer into a timeout.
pub fn provider_with_timeouts(
    style: ApiStyle,
    server: &FakeServer,
    idle_timeout: Duration,
    total_timeout: Duration,
) -> Arc<dyn LlmProvider> {
    let config = ProviderConfig { idle_timeout, total_timeout, ..config(style, server) };
    cortex_llm::build_provider(config, http())
}

pub fn request(stream: bool) -> ChatRequest {
    ChatRequest {
        model: "test-model".into(),
        system: Some("You are terse.".into()),
        messages: vec![Message::User { text: "Say hello".into() }],
        tools: vec![],
        max_tokens: 256,
        temperature: None,
        stream,
    }
}

/// Runs one call, collecting every forwarded event.
pub async fn call(
    provider: &dyn LlmProvider,
    request: &ChatRequest,
) -> (Result<Completion, LlmError>, Vec<StreamEvent>) {
    let mut events = Vec::new();
    let mut sink = |event| events.push(event);
    let result = provider.complete(request, &mut sink).await;
    (result, events)
}

/// The text deltas of `events`, joined.
pub fn streamed_text(events: &[StreamEvent]) -> String {
    events
        .iter()
        .filter_map(|event| match event {
            StreamEvent::TextDelta(text) => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

/// An OpenAI stream body: one `data:` event per chunk, then `[DONE]`.
pub fn openai_sse(chunks: &[Value]) -> Vec<u8> {
    let mut body = openai_sse_open(chunks);
    body.extend_from_slice(b"data: [DONE]\n\n");
    body
}

/// The beginning of an OpenAI stream, without the end marker.
pub fn openai_sse_open(chunks: &[Value]) -> Vec<u8> {
    chunks.iter().flat_map(|chunk| format!("data: {chunk}\n\n").into_bytes()).collect()
}

/// An Anthropic stream body: each event named after its `type`, CRLF line endings as some proxies send.
pub fn anthropic_sse(events: &[Value]) -> Vec<u8> {
    events
        .iter()
        .flat_map(|event| format!("event: {}\r\ndata: {event}\r\n\r\n", event["type"].as_str().unwrap()).into_bytes())
        .collect()
}

pub fn openai_text_chunk(text: &str) -> Value {
    json!({"id": "c", "object": "chat.completion.chunk", "model": "test-model",
           "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]})
}

/// The start of a text-streaming response in `style`, with `parts` as deltas and no end.
pub fn open_text_stream(style: ApiStyle, parts: &[&str]) -> Vec<u8> {
    match style {
        ApiStyle::OpenAi => openai_sse_open(&parts.iter().map(|part| openai_text_chunk(part)).collect::<Vec<_>>()),
        ApiStyle::Anthropic => {
            let mut events = vec![
                json!({"type": "message_start", "message": {"id": "m", "type": "message", "role": "assistant",
                       "model": "test-model", "content": [], "usage": {"input_tokens": 5, "output_tokens": 1}}}),
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ];
            events.extend(parts.iter().map(|part| {
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": part}})
            }));
            anthropic_sse(&events)
        }
    }
}

/// A complete text-streaming response in `style`.
pub fn text_stream(style: ApiStyle, parts: &[&str]) -> Vec<u8> {
    let mut body = open_text_stream(style, parts);
    body.extend(match style {
        ApiStyle::OpenAi => openai_sse(&[json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})]),
        ApiStyle::Anthropic => anthropic_sse(&[
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 3}}),
            json!({"type": "message_stop"}),
        ]),
    });
    body
}

/// A complete non-streaming success body in `style`.
pub fn text_json(style: ApiStyle, text: &str) -> Value {
    match style {
        ApiStyle::OpenAi => json!({"id": "c", "object": "chat.completion", "model": "test-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 2}}),
        ApiStyle::Anthropic => {
            json!({"id": "m", "type": "message", "role": "assistant", "model": "test-model",
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
            "usage": {"input_tokens": 10, "output_tokens": 2}})
        }
    }
}

pub const STYLES: [ApiStyle; 2] = [ApiStyle::OpenAi, ApiStyle::Anthropic];
