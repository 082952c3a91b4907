//! The OpenAI-style client against a fake Chat Completions server: replies, streams, tool calls and the
//! exact request shape.

use cortex_llm::{ApiStyle, Message, StopReason, StreamEvent, ToolCall, ToolSpec, build_provider};
use serde_json::{Value, json};

use crate::fake::{FakeServer, Reply, pieces, split_inside};
use crate::{KEY, call, http, openai_sse, openai_text_chunk, provider, request, streamed_text};

fn tool_chunk(index: u64, id: Option<&str>, name: Option<&str>, arguments: &str) -> Value {
    let mut call = json!({"index": index, "function": {"arguments": arguments}});
    if let Some(id) = id {
        call["id"] = json!(id);
        call["type"] = json!("function");
    }
    if let Some(name) = name {
        call["function"]["name"] = json!(name);
    }
    json!({"id": "c", "model": "gpt-4o-2024-08-06",
           "choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": null}]})
}

#[tokio::test]
async fn non_streaming_reply() {
    let server = FakeServer::start().await;
    server.push(Reply::json(
        200,
        json!({"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini-2024-07-18",
               "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there", "tool_calls": null},
                            "finish_reason": "stop"}],
               "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15,
                         "prompt_tokens_details": {"cached_tokens": 4}}}),
    ));
    let provider = provider(ApiStyle::OpenAi, &server);
    let (result, events) = call(provider.as_ref(), &request(false)).await;
    let completion = result.unwrap();

    assert_eq!(completion.text, "Hello there");
    assert_eq!(completion.stop_reason, StopReason::EndTurn);
    assert_eq!(completion.model, "gpt-4o-mini-2024-07-18");
    assert_eq!((completion.usage.tokens_in, completion.usage.tokens_out), (12, 3));
    assert_eq!(completion.usage.cache_read_tokens, 4);
    assert!(!completion.usage.estimated);
    assert_eq!(events, vec![StreamEvent::TextDelta("Hello there".into())], "one event with the full text");

    let received = server.single_request();
    assert_eq!(received.path, "/v1/chat/completions", "a bare host gets /v1");
    assert_eq!(received.headers["authorization"], format!("Bearer {KEY}"));
    assert_eq!(received.body["model"], "test-model");
    assert_eq!(received.body["stream"], false);
    assert!(received.body.get("stream_options").is_none());
    assert_eq!(received.body["max_tokens"], 256);
    assert_eq!(
        received.body["messages"],
        json!([{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello"}])
    );
    assert!(received.body.get("tools").is_none());
}

#[tokio::test]
async fn streaming_text_with_usage_in_the_final_chunk() {
    let server = FakeServer::start().await;
    let mut chunks: Vec<Value> = ["Hel", "lo, ", "wörld"].iter().map(|part| openai_text_chunk(part)).collect();
    chunks.push(json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": null}));
    chunks.push(json!({"choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": 4, "total_tokens": 24}}));
    server.push(Reply::stream(openai_sse(&chunks)));
    // A local server: no key, so no Authorization header at all.
    let config = cortex_llm::ProviderConfig::new("local", ApiStyle::OpenAi, format!("{}/v1/", server.base_url));
    let provider = build_provider(config, http());
    let (result, events) = call(provider.as_ref(), &request(true)).await;
    let completion = result.unwrap();

    assert_eq!(completion.text, "Hello, wörld");
    assert_eq!(
        events,
        ["Hel", "lo, ", "wörld"].iter().map(|part| StreamEvent::TextDelta((*part).into())).collect::<Vec<_>>()
    );
    assert_eq!((completion.usage.tokens_in, completion.usage.tokens_out, completion.usage.estimated), (20, 4, false));
    assert_eq!(completion.stop_reason, StopReason::EndTurn);

    let received = server.single_request();
    assert_eq!(received.path, "/v1/chat/completions");
    assert!(received.headers.get("authorization").is_none());
    assert_eq!(received.body["stream"], true);
    assert_eq!(received.body["stream_options"], json!({"include_usage": true}));
}

#[tokio::test]
async fn two_tool_calls_with_arguments_split_across_many_chunks() {
    let server = FakeServer::start().await;
    let first = r#"{"city": "Zürich", "note": "東京 🦀"}"#;
    let second = r#"{"query": "ß"}"#;
    let mut chunks = vec![json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": null}}]})];
    chunks.push(tool_chunk(0, Some("call_a"), Some("weather"), ""));
    // Fragments of a few characters each, as OpenAI sends them.
    let chars: Vec<char> = first.chars().collect();
    for fragment in chars.chunks(3) {
        chunks.push(tool_chunk(0, None, None, &fragment.iter().collect::<String>()));
    }
    chunks.push(tool_chunk(1, Some("call_b"), Some("search"), ""));
    for fragment in ["{\"que", "ry\": ", "\"ß\"}"] {
        chunks.push(tool_chunk(1, None, None, fragment));
    }
    chunks.push(json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}));
    let body = openai_sse(&chunks);
    // Cut the byte stream inside a multi-byte character, then into 7-byte pieces after that.
    let mut split = split_inside(&body, '東');
    let rest = split.pop().unwrap();
    split.extend(pieces(&rest, 7));
    server.push(Reply::Stream { pieces: split, end: crate::fake::End::Close });

    let provider = provider(ApiStyle::OpenAi, &server);
    let (result, events) = call(provider.as_ref(), &request(true)).await;
    let completion = result.unwrap();

    assert_eq!(completion.text, "");
    assert_eq!(completion.stop_reason, StopReason::ToolUse);
    assert_eq!(
        completion.tool_calls,
        vec![
            ToolCall { id: "call_a".into(), name: "weather".into(), arguments: first.into() },
            ToolCall { id: "call_b".into(), name: "search".into(), arguments: second.into() },
        ]
    );
    assert_eq!(completion.tool_calls[0].parse_arguments().unwrap()["note"], "東京 🦀");
    assert!(completion.usage.estimated, "no usage chunk, so usage is estimated");
    assert!(completion.usage.tokens_out > 0 && completion.usage.tokens_in > 0);

    assert_eq!(events[0], StreamEvent::ToolCallStarted { id: "call_a".into(), name: "weather".into() });
    let first_arguments: String = events
        .iter()
        .filter_map(|event| match event {
            StreamEvent::ToolCallArgumentsDelta { id, fragment } if id == "call_a" => Some(fragment.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(first_arguments, first);
    assert!(events.contains(&StreamEvent::ToolCallStarted { id: "call_b".into(), name: "search".into() }));
}

#[tokio::test]
async fn tools_and_tool_results_use_the_openai_shapes() {
    let server = FakeServer::start().await;
    server.push(Reply::json(200, crate::text_json(ApiStyle::OpenAi, "done")));
    let mut request = request(false);
    request.model = "gpt-4.1-mini".into();
    request.temperature = Some(0.3);
    request.tools = vec![ToolSpec {
        name: "mcp__github__create_issue".into(),
        description: "Create an issue".into(),
        parameters: json!({"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]}),
    }];
    request.messages.extend([
        Message::Assistant {
            text: "Creating it.".into(),
            tool_calls: vec![ToolCall {
                id: "call_1".into(),
                name: "mcp__github__create_issue".into(),
                arguments: "{\"title\":\"Bug\"}".into(),
            }],
        },
        Message::ToolResult { call_id: "call_1".into(), content: "{\"number\":7}".into(), is_error: false },
    ]);
    let provider = provider(ApiStyle::OpenAi, &server);
    let (result, _) = call(provider.as_ref(), &request).await;
    assert_eq!(result.unwrap().text, "done");

    let body = server.single_request().body;
    assert_eq!(
        body["tools"],
        json!([{"type": "function", "function": {
            "name": "mcp__github__create_issue", "description": "Create an issue",
            "parameters": {"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]}}}])
    );
    assert_eq!(
        body["messages"][2],
        json!({"role": "assistant", "content": "Creating it.", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "mcp__github__create_issue", "arguments": "{\"title\":\"Bug\"}"}}]})
    );
    assert_eq!(body["messages"][3], json!({"role": "tool", "tool_call_id": "call_1", "content": "{\"number\":7}"}));
    assert_eq!(body["temperature"].to_string(), "0.3");
    assert_eq!(body["max_completion_tokens"], 256, "OpenAI's own models get max_completion_tokens");
}

#[tokio::test]
async fn a_server_answering_json_to_a_stream_request_is_understood() {
    let server = FakeServer::start().await;
    server.push(Reply::json(200, crate::text_json(ApiStyle::OpenAi, "not streamed")));
    let provider = provider(ApiStyle::OpenAi, &server);
    let (result, events) = call(provider.as_ref(), &request(true)).await;
    assert_eq!(result.unwrap().text, "not streamed");
    assert_eq!(streamed_text(&events), "not streamed");
}

#[tokio::test]
async fn an_error_object_inside_the_stream_is_classified() {
    let server = FakeServer::start().await;
    let mut body = crate::openai_sse_open(&[openai_text_chunk("par")]);
    body.extend_from_slice(
        b"data: {\"error\":{\"message\":\"The server had an error\",\"type\":\"server_error\"}}\n\n",
    );
    server.push(Reply::stream(body));
    let provider = provider(ApiStyle::OpenAi, &server);
    let (result, events) = call(provider.as_ref(), &request(true)).await;
    let err = result.unwrap_err();
    assert_eq!((err.class(), err.code()), (cortex_core::job::ErrorClass::Transient, "provider_error"));
    assert!(err.to_string().contains("The server had an error"));
    assert_eq!(streamed_text(&events), "par");
}
