//! The OpenAI Chat Completions wire style (`POST {base}/chat/completions`), also spoken by OpenAI-compatible
//! servers (vLLM, Ollama, llama.cpp, LiteLLM, Groq, OpenRouter, …). SPEC §5.2, left column.
//!
//! Streaming: `data:` chunks with `choices[0].delta.content` and `delta.tool_calls[{index, id,
//! function:{name, arguments}}]` fragments, a `finish_reason`, a last chunk with `usage` (because we ask
//! for `stream_options.include_usage`) and `data: [DONE]`. Compatible servers deviate (no index, no ids,
//! arguments as objects); the decoder tolerates those.

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use serde_json::{Value, json};

use crate::accumulate::CompletionBuilder;
use crate::catalogue;
use crate::classify;
use crate::client::{Flow, StreamDecoder, WireProtocol, count_at, json_f32, malformed};
use crate::error::LlmError;
use crate::sse::SseEvent;
use crate::types::{ApiStyle, ChatRequest, Message, StopReason};

/// Marker type selecting the OpenAI wire style.
pub(crate) struct OpenAi;

impl WireProtocol for OpenAi {
    type Decoder = OpenAiDecoder;

    fn endpoint(&self, base_url: &str) -> String {
        format!("{}/chat/completions", versioned_base(base_url))
    }

    fn models_endpoint(&self, base_url: &str) -> String {
        format!("{}/models", versioned_base(base_url))
    }

    fn headers(&self, api_key: Option<&str>) -> Result<HeaderMap, LlmError> {
        let mut headers = HeaderMap::new();
        if let Some(key) = api_key.filter(|key| !key.is_empty()) {
            let mut value = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| LlmError::Auth {
                status: 0,
                message: "the API key contains characters not allowed in an HTTP header".into(),
            })?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        Ok(headers)
    }

    fn body(&self, request: &ChatRequest) -> Value {
        let mut messages = Vec::with_capacity(request.messages.len() + 1);
        if let Some(system) = &request.system {
            messages.push(json!({"role": "system", "content": system}));
        }
        messages.extend(request.messages.iter().map(message_json));

        let mut body = json!({"model": request.model, "messages": messages, "stream": request.stream});
        // OpenAI's own models want `max_completion_tokens` (reasoning models reject `max_tokens`);
        // compatible servers reliably understand only the older `max_tokens`.
        let known_openai_model =
            catalogue::lookup(&request.model).is_some_and(|info| info.api_style == ApiStyle::OpenAi);
        let max_tokens_field = if known_openai_model { "max_completion_tokens" } else { "max_tokens" };
        body[max_tokens_field] = json!(request.max_tokens);
        if let Some(temperature) = request.temperature {
            body["temperature"] = json_f32(temperature);
        }
        if !request.tools.is_empty() {
            let tools: Vec<Value> = request
                .tools
                .iter()
                .map(|tool| {
                    json!({"type": "function", "function": {
                        "name": tool.name, "description": tool.description, "parameters": tool.parameters,
                    }})
                })
                .collect();
            body["tools"] = Value::Array(tools);
        }
        if request.stream {
            body["stream_options"] = json!({"include_usage": true});
        }
        body
    }

    fn parse_response(&self, body: &Value, out: &mut CompletionBuilder<'_>) -> Result<(), LlmError> {
        let choice = body.pointer("/choices/0").ok_or_else(|| {
            malformed("response has no choices", body.to_string().chars().take(200).collect::<String>())
        })?;
        if let Some(model) = body.get("model").and_then(Value::as_str) {
            out.model(model);
        }
        let message = choice.get("message").unwrap_or(&Value::Null);
        out.text(&content_text(message.get("content").unwrap_or(&Value::Null)));
        for (position, call) in message.get("tool_calls").and_then(Value::as_array).into_iter().flatten().enumerate() {
            let key = position as u64;
            let function = call.get("function").unwrap_or(&Value::Null);
            let name = function.get("name").and_then(Value::as_str).unwrap_or_default();
            out.tool_call_start(key, call.get("id").and_then(Value::as_str), name);
            out.tool_call_arguments(key, &arguments_text(function.get("arguments")));
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            out.stop_reason(stop_reason(reason));
        }
        record_usage(body.get("usage"), out);
        Ok(())
    }
}

/// Stream state: everything lives in the builder, keyed by the wire's own indices.
#[derive(Debug, Default)]
pub(crate) struct OpenAiDecoder;

impl StreamDecoder for OpenAiDecoder {
    fn on_event(&mut self, event: SseEvent, out: &mut CompletionBuilder<'_>) -> Result<Flow, LlmError> {
        let data = event.data.trim();
        if data == "[DONE]" {
            return Ok(Flow::Done);
        }
        if data.is_empty() {
            return Ok(Flow::Continue);
        }
        let chunk: Value = serde_json::from_str(data).map_err(|err| malformed("stream chunk is not JSON", err))?;
        if let Some(error) = chunk.get("error").filter(|error| !error.is_null()) {
            return Err(classify::from_stream_error(error));
        }
        if let Some(model) = chunk.get("model").and_then(Value::as_str) {
            out.model(model);
        }
        // We never ask for n > 1, so only the first choice matters.
        let choice = chunk.get("choices").and_then(Value::as_array).and_then(|choices| {
            choices.iter().find(|choice| choice.get("index").and_then(Value::as_u64).unwrap_or(0) == 0)
        });
        if let Some(choice) = choice {
            let delta = choice.get("delta").unwrap_or(&Value::Null);
            if let Some(text) = delta.get("content").and_then(Value::as_str) {
                out.text(text);
            }
            for call in delta.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
                let key = tool_call_key(out, call);
                let function = call.get("function").unwrap_or(&Value::Null);
                let name = function.get("name").and_then(Value::as_str).unwrap_or_default();
                out.tool_call_start(key, call.get("id").and_then(Value::as_str), name);
                out.tool_call_arguments(key, &arguments_text(function.get("arguments")));
            }
            if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                out.stop_reason(stop_reason(reason));
            }
        }
        record_usage(chunk.get("usage"), out);
        Ok(Flow::Continue)
    }
}

/// `{base}` must end in the API version; a bare host gets `/v1`, a base already naming a version
/// (`/v1`, Gemini's `/v1beta/openai`, Zhipu's `/api/paas/v4`) is kept as given.
pub fn versioned_base(base_url: &str) -> String {
    let base = base_url.trim_end_matches('/');
    let names_version = url::Url::parse(base).ok().is_some_and(|url| {
        url.path_segments().into_iter().flatten().any(|segment| {
            let mut chars = segment.chars();
            chars.next() == Some('v') && chars.next().is_some_and(|c| c.is_ascii_digit())
        })
    });
    if names_version { base.to_owned() } else { format!("{base}/v1") }
}

fn message_json(message: &Message) -> Value {
    match message {
        Message::User { text } => json!({"role": "user", "content": text}),
        Message::Assistant { text, tool_calls } => {
            let content = if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { json!(text) };
            let mut message = json!({"role": "assistant", "content": content});
            if !tool_calls.is_empty() {
                let calls: Vec<Value> = tool_calls
                    .iter()
                    .map(|call| {
                        json!({"id": call.id, "type": "function",
                               "function": {"name": call.name, "arguments": call.arguments}})
                    })
                    .collect();
                message["tool_calls"] = Value::Array(calls);
            }
            message
        }
        // The style has no error flag for tool results, so the failure is said in the text.
        Message::ToolResult { call_id, content, is_error } => {
            let content = if *is_error { format!("Error: {content}") } else { content.clone() };
            json!({"role": "tool", "tool_call_id": call_id, "content": content})
        }
    }
}

/// Which accumulated tool call a streamed fragment belongs to. OpenAI always sends `index`; some compatible
/// servers send only an id on the first fragment, or nothing at all on continuations.
fn tool_call_key(out: &CompletionBuilder<'_>, call: &Value) -> u64 {
    if let Some(index) = call.get("index").and_then(Value::as_u64) {
        return index;
    }
    match call.get("id").and_then(Value::as_str).filter(|id| !id.is_empty()) {
        Some(id) => out.tool_call_key_by_id(id).unwrap_or_else(|| out.last_tool_call_key().map_or(0, |key| key + 1)),
        None => out.last_tool_call_key().unwrap_or(0),
    }
}

/// Arguments are a JSON string per the API; some servers send the object itself.
fn arguments_text(arguments: Option<&Value>) -> String {
    match arguments {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
    }
}

/// `content` is a string, null, or (some servers) an array of `{type: "text", text}` parts.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts.iter().filter_map(|part| part.get("text").and_then(Value::as_str)).collect(),
        _ => String::new(),
    }
}

fn stop_reason(reason: &str) -> StopReason {
    match reason {
        "stop" => StopReason::EndTurn,
        "tool_calls" | "function_call" => StopReason::ToolUse,
        "length" => StopReason::MaxTokens,
        other => StopReason::Other(other.to_owned()),
    }
}

/// `prompt_tokens` already includes the cached share reported in `prompt_tokens_details.cached_tokens`.
fn record_usage(usage: Option<&Value>, out: &mut CompletionBuilder<'_>) {
    let Some(usage) = usage.filter(|usage| usage.is_object()) else {
        return;
    };
    if let Some(prompt) = count_at(usage, "/prompt_tokens") {
        out.input_tokens(prompt, count_at(usage, "/prompt_tokens_details/cached_tokens").unwrap_or(0));
    }
    if let Some(completion) = count_at(usage, "/completion_tokens") {
        out.output_tokens(completion);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ToolCall, ToolSpec};

    #[test]
    fn base_urls_get_a_version_only_when_missing() {
        assert_eq!(OpenAi.endpoint("https://api.openai.com/v1"), "https://api.openai.com/v1/chat/completions");
        assert_eq!(OpenAi.endpoint("https://api.openai.com/v1/"), "https://api.openai.com/v1/chat/completions");
        assert_eq!(OpenAi.endpoint("http://localhost:11434"), "http://localhost:11434/v1/chat/completions");
        assert_eq!(OpenAi.endpoint("http://localhost:8000/"), "http://localhost:8000/v1/chat/completions");
        assert_eq!(
            OpenAi.endpoint("https://generativelanguage.googleapis.com/v1beta/openai"),
            "https://generativelanguage.googleapis.com/v1beta/openai/chat/completions"
        );
        assert_eq!(
            OpenAi.endpoint("https://api.groq.com/openai/v1"),
            "https://api.groq.com/openai/v1/chat/completions"
        );
        assert_eq!(OpenAi.endpoint("https://proxy.example/video"), "https://proxy.example/video/v1/chat/completions");
    }

    #[test]
    fn no_key_means_no_authorization_header() {
        assert!(OpenAi.headers(None).unwrap().is_empty());
        assert!(OpenAi.headers(Some("")).unwrap().is_empty());
        let headers = OpenAi.headers(Some("sk-1")).unwrap();
        assert_eq!(headers[AUTHORIZATION], "Bearer sk-1");
        assert!(headers[AUTHORIZATION].is_sensitive());
        assert_eq!(OpenAi.headers(Some("bad\nkey")).unwrap_err().code(), "auth_failed");
    }

    #[test]
    fn request_body_shape() {
        let request = ChatRequest {
            model: "llama3".into(),
            system: Some("be brief".into()),
            messages: vec![
                Message::User { text: "hi".into() },
                Message::Assistant {
                    text: String::new(),
                    tool_calls: vec![ToolCall { id: "c1".into(), name: "echo".into(), arguments: "{\"x\":1}".into() }],
                },
                Message::ToolResult { call_id: "c1".into(), content: "boom".into(), is_error: true },
            ],
            tools: vec![ToolSpec {
                name: "echo".into(),
                description: "d".into(),
                parameters: json!({"type": "object"}),
            }],
            max_tokens: 100,
            temperature: Some(0.2),
            stream: false,
        };
        let body = OpenAi.body(&request);
        assert_eq!(body["messages"][0], json!({"role": "system", "content": "be brief"}));
        assert_eq!(body["messages"][2]["content"], Value::Null);
        assert_eq!(body["messages"][2]["tool_calls"][0]["function"]["arguments"], "{\"x\":1}");
        assert_eq!(body["messages"][3], json!({"role": "tool", "tool_call_id": "c1", "content": "Error: boom"}));
        assert_eq!(body["tools"][0]["function"]["parameters"], json!({"type": "object"}));
        assert_eq!(body["max_tokens"], 100);
        assert_eq!(body["temperature"].to_string(), "0.2");
        assert!(body.get("stream_options").is_none());

        let official = OpenAi.body(&ChatRequest { model: "gpt-4o-mini".into(), stream: true, ..request });
        assert_eq!(official["max_completion_tokens"], 100);
        assert!(official.get("max_tokens").is_none());
        assert_eq!(official["stream_options"], json!({"include_usage": true}));
    }

    #[test]
    fn streams_without_indices_or_ids_still_aggregate() {
        let request = ChatRequest {
            model: "m".into(),
            system: None,
            messages: vec![],
            tools: vec![],
            max_tokens: 10,
            temperature: None,
            stream: true,
        };
        let mut sink = |_| {};
        let mut out = CompletionBuilder::new(&mut sink);
        let mut decoder = OpenAiDecoder;
        let chunks = [
            r#"{"choices":[{"delta":{"tool_calls":[{"id":"a","function":{"name":"one","arguments":"{\"p\":"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"function":{"arguments":"1}"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"id":"b","function":{"name":"two","arguments":{"q":2}}}]}}]}"#,
            r#"{"choices":[{"delta":{},"finish_reason":"tool_calls"}],"usage":null}"#,
        ];
        for data in chunks {
            let event = SseEvent { event: String::new(), data: data.into() };
            assert_eq!(decoder.on_event(event, &mut out).unwrap(), Flow::Continue);
        }
        let completion = out.finish(&request);
        let calls: Vec<_> = completion.tool_calls.iter().map(|c| (c.id.as_str(), c.arguments.as_str())).collect();
        assert_eq!(calls, vec![("a", "{\"p\":1}"), ("b", "{\"q\":2}")]);
        assert_eq!(completion.stop_reason, StopReason::ToolUse);
        assert!(completion.usage.estimated);
    }
}
