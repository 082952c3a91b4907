//! The Anthropic Messages wire style (`POST {base}/v1/messages`). SPEC §5.2, right column.
//!
//! Streaming: `message_start` (model, input usage), `content_block_start` (`text` or `tool_use` with id and
//! name), `content_block_delta` (`text_delta` or `input_json_delta.partial_json`), `content_block_stop`,
//! `message_delta` (stop reason, cumulative output usage), `message_stop`; `ping` keeps the connection
//! alive and `error` ends the stream with a failure.

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value, json};

use crate::accumulate::CompletionBuilder;
use crate::classify;
use crate::client::{Flow, StreamDecoder, WireProtocol, count_at, json_f32, malformed};
use crate::error::LlmError;
use crate::sse::SseEvent;
use crate::types::{ChatRequest, Message, StopReason};

/// The API version this client speaks (SPEC §5.2).
const ANTHROPIC_VERSION: &str = "2023-06-01";

/// Marker type selecting the Anthropic wire style.
pub(crate) struct Anthropic;

impl WireProtocol for Anthropic {
    type Decoder = AnthropicDecoder;

    fn endpoint(&self, base_url: &str) -> String {
        let base = base_url.trim_end_matches('/');
        let base = base.strip_suffix("/v1").unwrap_or(base);
        format!("{base}/v1/messages")
    }

    fn models_endpoint(&self, base_url: &str) -> String {
        let base = base_url.trim_end_matches('/');
        let base = base.strip_suffix("/v1").unwrap_or(base);
        format!("{base}/v1/models")
    }

    fn headers(&self, api_key: Option<&str>) -> Result<HeaderMap, LlmError> {
        let mut headers = HeaderMap::new();
        headers.insert(HeaderName::from_static("anthropic-version"), HeaderValue::from_static(ANTHROPIC_VERSION));
        if let Some(key) = api_key.filter(|key| !key.is_empty()) {
            let mut value = HeaderValue::from_str(key).map_err(|_| LlmError::Auth {
                status: 0,
                message: "the API key contains characters not allowed in an HTTP header".into(),
            })?;
            value.set_sensitive(true);
            headers.insert(HeaderName::from_static("x-api-key"), value);
        }
        Ok(headers)
    }

    fn body(&self, request: &ChatRequest) -> Value {
        let mut body = json!({
            "model": request.model,
            "max_tokens": request.max_tokens,
            "messages": messages_json(&request.messages),
        });
        if let Some(system) = request.system.as_deref().filter(|system| !system.is_empty()) {
            body["system"] = json!(system);
        }
        if let Some(temperature) = request.temperature {
            body["temperature"] = json_f32(temperature);
        }
        if !request.tools.is_empty() {
            let tools: Vec<Value> = request
                .tools
                .iter()
                .map(
                    |tool| json!({"name": tool.name, "description": tool.description, "input_schema": tool.parameters}),
                )
                .collect();
            body["tools"] = Value::Array(tools);
        }
        if request.stream {
            body["stream"] = json!(true);
        }
        body
    }

    fn parse_response(&self, body: &Value, out: &mut CompletionBuilder<'_>) -> Result<(), LlmError> {
        let content = body.get("content").and_then(Value::as_array).ok_or_else(|| {
            malformed("response has no content", body.to_string().chars().take(200).collect::<String>())
        })?;
        if let Some(model) = body.get("model").and_then(Value::as_str) {
            out.model(model);
        }
        for (index, block) in content.iter().enumerate() {
            open_block(index as u64, block, out);
        }
        if let Some(reason) = body.get("stop_reason").and_then(Value::as_str) {
            out.stop_reason(stop_reason(reason));
        }
        if let Some(usage) = body.get("usage") {
            record_usage(usage, out);
        }
        Ok(())
    }
}

/// Stream state: everything lives in the builder, keyed by content block index.
#[derive(Debug, Default)]
pub(crate) struct AnthropicDecoder;

impl StreamDecoder for AnthropicDecoder {
    fn on_event(&mut self, event: SseEvent, out: &mut CompletionBuilder<'_>) -> Result<Flow, LlmError> {
        if event.data.trim().is_empty() {
            return Ok(Flow::Continue);
        }
        let value: Value =
            serde_json::from_str(&event.data).map_err(|err| malformed("stream event is not JSON", err))?;
        // The payload's `type` repeats the SSE event name and survives proxies that drop `event:` lines.
        let kind = value.get("type").and_then(Value::as_str).unwrap_or(event.event.as_str());
        let index = value.get("index").and_then(Value::as_u64).unwrap_or(0);
        match kind {
            "message_start" => {
                let message = value.get("message").unwrap_or(&Value::Null);
                if let Some(model) = message.get("model").and_then(Value::as_str) {
                    out.model(model);
                }
                if let Some(usage) = message.get("usage") {
                    record_usage(usage, out);
                }
            }
            "content_block_start" => {
                let block = value.get("content_block").ok_or_else(|| malformed("content_block_start", "no block"))?;
                open_block(index, block, out);
            }
            "content_block_delta" => {
                let delta = value.get("delta").unwrap_or(&Value::Null);
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => out.text(delta.get("text").and_then(Value::as_str).unwrap_or_default()),
                    Some("input_json_delta") => out.tool_call_arguments(
                        index,
                        delta.get("partial_json").and_then(Value::as_str).unwrap_or_default(),
                    ),
                    // thinking_delta, signature_delta, citations_delta: not part of the answer.
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(reason) = value.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    out.stop_reason(stop_reason(reason));
                }
                if let Some(usage) = value.get("usage") {
                    record_usage(usage, out);
                }
            }
            "message_stop" => return Ok(Flow::Done),
            "error" => return Err(classify::from_stream_error(&value)),
            // ping, content_block_stop and event types added after this client was written.
            _ => {}
        }
        Ok(Flow::Continue)
    }
}

/// Opens a content block: text is forwarded, `tool_use` starts a call. A complete `input` (non-streaming
/// responses, or a proxy that skips `input_json_delta`) becomes the arguments at once.
fn open_block(index: u64, block: &Value, out: &mut CompletionBuilder<'_>) {
    match block.get("type").and_then(Value::as_str) {
        Some("text") => out.text(block.get("text").and_then(Value::as_str).unwrap_or_default()),
        Some("tool_use") => {
            let name = block.get("name").and_then(Value::as_str).unwrap_or_default();
            out.tool_call_start(index, block.get("id").and_then(Value::as_str), name);
            if let Some(input) = block.get("input").filter(|input| input.as_object().is_some_and(|map| !map.is_empty()))
            {
                out.tool_call_arguments(index, &input.to_string());
            }
        }
        // thinking, redacted_thinking, server tool blocks: not part of the answer.
        _ => {}
    }
}

/// Consecutive messages of one role become one message of content blocks; in particular consecutive tool
/// results form the single user turn the API requires after an assistant turn with several `tool_use`s.
fn messages_json(messages: &[Message]) -> Vec<Value> {
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for message in messages {
        let (role, blocks) = match message {
            Message::User { text } => ("user", text_block(text).into_iter().collect()),
            Message::Assistant { text, tool_calls } => {
                let mut blocks: Vec<Value> = text_block(text).into_iter().collect();
                blocks.extend(tool_calls.iter().map(|call| {
                    // The API needs an object; arguments the model garbled are replayed as `{}`.
                    let input = call
                        .parse_arguments()
                        .ok()
                        .filter(Value::is_object)
                        .unwrap_or_else(|| Value::Object(Map::new()));
                    json!({"type": "tool_use", "id": call.id, "name": call.name, "input": input})
                }));
                ("assistant", blocks)
            }
            Message::ToolResult { call_id, content, is_error } => (
                "user",
                vec![json!({"type": "tool_result", "tool_use_id": call_id, "content": content, "is_error": is_error})],
            ),
        };
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((last_role, last_blocks)) if *last_role == role => last_blocks.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    turns.into_iter().map(|(role, content)| json!({"role": role, "content": content})).collect()
}

/// The API rejects empty text blocks, so empty text sends none.
fn text_block(text: &str) -> Option<Value> {
    (!text.is_empty()).then(|| json!({"type": "text", "text": text}))
}

fn stop_reason(reason: &str) -> StopReason {
    match reason {
        "end_turn" => StopReason::EndTurn,
        "tool_use" => StopReason::ToolUse,
        "max_tokens" => StopReason::MaxTokens,
        other => StopReason::Other(other.to_owned()),
    }
}

/// `input_tokens` excludes cache reads and cache writes; `Usage::tokens_in` counts all input, so they are added.
fn record_usage(usage: &Value, out: &mut CompletionBuilder<'_>) {
    if let Some(input) = count_at(usage, "/input_tokens") {
        let cache_read = count_at(usage, "/cache_read_input_tokens").unwrap_or(0);
        let cache_write = count_at(usage, "/cache_creation_input_tokens").unwrap_or(0);
        out.input_tokens(input + cache_read + cache_write, cache_read);
    }
    if let Some(output) = count_at(usage, "/output_tokens") {
        out.output_tokens(output);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ToolCall;

    #[test]
    fn endpoint_tolerates_a_trailing_version() {
        for base in [
            "https://api.anthropic.com",
            "https://api.anthropic.com/",
            "https://api.anthropic.com/v1",
            "https://api.anthropic.com/v1/",
        ] {
            assert_eq!(Anthropic.endpoint(base), "https://api.anthropic.com/v1/messages", "{base}");
        }
    }

    #[test]
    fn headers_carry_version_and_sensitive_key() {
        let headers = Anthropic.headers(Some("sk-ant")).unwrap();
        assert_eq!(headers["anthropic-version"], "2023-06-01");
        assert_eq!(headers["x-api-key"], "sk-ant");
        assert!(headers["x-api-key"].is_sensitive());
        assert!(Anthropic.headers(None).unwrap().get("x-api-key").is_none());
    }

    #[test]
    fn tool_results_merge_and_garbled_arguments_become_empty_objects() {
        let messages = vec![
            Message::User { text: "go".into() },
            Message::Assistant {
                text: "calling".into(),
                tool_calls: vec![
                    ToolCall { id: "a".into(), name: "one".into(), arguments: "{\"x\":1}".into() },
                    ToolCall { id: "b".into(), name: "two".into(), arguments: "{oops".into() },
                ],
            },
            Message::ToolResult { call_id: "a".into(), content: "1".into(), is_error: false },
            Message::ToolResult { call_id: "b".into(), content: "bad".into(), is_error: true },
            Message::User { text: "and?".into() },
        ];
        let json = messages_json(&messages);
        assert_eq!(json.len(), 3);
        assert_eq!(json[1]["content"][1], json!({"type": "tool_use", "id": "a", "name": "one", "input": {"x": 1}}));
        assert_eq!(json[1]["content"][2]["input"], json!({}));
        assert_eq!(json[2]["role"], "user");
        assert_eq!(
            json[2]["content"],
            json!([
                {"type": "tool_result", "tool_use_id": "a", "content": "1", "is_error": false},
                {"type": "tool_result", "tool_use_id": "b", "content": "bad", "is_error": true},
                {"type": "text", "text": "and?"},
            ])
        );
    }

    #[test]
    fn usage_adds_cache_reads_and_writes_to_input() {
        let mut sink = |_| {};
        let mut out = CompletionBuilder::new(&mut sink);
        record_usage(
            &json!({"input_tokens": 10, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 5,
                    "output_tokens": 3}),
            &mut out,
        );
        let request = ChatRequest {
            model: "m".into(),
            system: None,
            messages: vec![],
            tools: vec![],
            max_tokens: 1,
            temperature: None,
            stream: false,
        };
        let usage = out.finish(&request).usage;
        assert_eq!((usage.tokens_in, usage.cache_read_tokens, usage.tokens_out, usage.estimated), (115, 100, 3, false));
    }
}
