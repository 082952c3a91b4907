//! The Anthropic client against a fake Messages server: replies, event streams, tool use blocks and the
//! exact request shape.

use cortex_llm::{ApiStyle, Message, StopReason, StreamEvent, ToolCall, ToolSpec};
use serde_json::{Value, json};

use crate::fake::{End, FakeServer, Reply, pieces, split_inside};
use crate::{KEY, anthropic_sse, call, provider, request, streamed_text};

fn message_start(usage: Value) -> Value {
    json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
           "model": "claude-sonnet-4-5-20250929", "content": [], "stop_reason": null, "usage": usage}})
}

fn text_delta(index: u64, text: &str) -> Value {
    json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}})
}

fn json_delta(index: u64, partial: &str) -> Value {
    json!({"type": "content_block_delta", "index": index,
           "delta": {"type": "input_json_delta", "partial_json": partial}})
}

#[tokio::test]
async fn non_streaming_reply_with_tool_use_and_the_request_shape() {
    let server = FakeServer::start().await;
    server.push(Reply::json(
        200,
        json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-haiku-4-5-20251001",
               "content": [{"type": "text", "text": "Let me check."},
                           {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}],
               "stop_reason": "tool_use",
               "usage": {"input_tokens": 30, "output_tokens": 9, "cache_read_input_tokens": 70,
                         "cache_creation_input_tokens": 0}}),
    ));
    let mut config = crate::config(ApiStyle::Anthropic, &server);
    config.base_url = format!("{}/v1/", server.base_url);
    let provider = cortex_llm::build_provider(config, crate::http());

    let mut request = request(false);
    request.tools = vec![ToolSpec {
        name: "weather".into(),
        description: "Weather by city".into(),
        parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}}),
    }];
    request.messages.extend([
        Message::Assistant {
            text: String::new(),
            tool_calls: vec![
                ToolCall { id: "toolu_a".into(), name: "weather".into(), arguments: "{\"city\":\"Oslo\"}".into() },
                ToolCall { id: "toolu_b".into(), name: "weather".into(), arguments: "{\"city\":".into() },
            ],
        },
        Message::ToolResult { call_id: "toolu_a".into(), content: "cold".into(), is_error: false },
        Message::ToolResult { call_id: "toolu_b".into(), content: "invalid JSON".into(), is_error: true },
    ]);
    let (result, events) = call(provider.as_ref(), &request).await;
    let completion = result.unwrap();

    assert_eq!(completion.text, "Let me check.");
    assert_eq!(
        completion.tool_calls,
        vec![ToolCall { id: "toolu_1".into(), name: "weather".into(), arguments: "{\"city\":\"Paris\"}".into() }]
    );
    assert_eq!(completion.stop_reason, StopReason::ToolUse);
    assert_eq!(completion.model, "claude-haiku-4-5-20251001");
    assert_eq!(
        (completion.usage.tokens_in, completion.usage.cache_read_tokens, completion.usage.tokens_out),
        (100, 70, 9)
    );
    assert!(!completion.usage.estimated);
    assert_eq!(events[0], StreamEvent::TextDelta("Let me check.".into()));

    let received = server.single_request();
    assert_eq!(received.path, "/v1/messages", "a trailing /v1 in the base is tolerated");
    assert_eq!(received.headers["x-api-key"], KEY);
    assert_eq!(received.headers["anthropic-version"], "2023-06-01");
    assert!(received.headers.get("authorization").is_none());
    let body = received.body;
    assert_eq!(body["system"], "You are terse.", "system prompt is top-level");
    assert_eq!(body["max_tokens"], 256);
    assert!(body.get("stream").is_none());
    assert_eq!(
        body["tools"],
        json!([{"name": "weather", "description": "Weather by city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}])
    );
    assert_eq!(
        body["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "Say hello"}]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_a", "name": "weather", "input": {"city": "Oslo"}},
                {"type": "tool_use", "id": "toolu_b", "name": "weather", "input": {}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_a", "content": "cold", "is_error": false},
                {"type": "tool_result", "tool_use_id": "toolu_b", "content": "invalid JSON", "is_error": true}]},
        ])
    );
}

#[tokio::test]
async fn streaming_text_with_usage_pings_and_comments() {
    let server = FakeServer::start().await;
    let mut body = b": opening comment\r\n\r\n".to_vec();
    body.extend(anthropic_sse(&[
        message_start(json!({"input_tokens": 25, "output_tokens": 1, "cache_read_input_tokens": 5})),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "ping"}),
        text_delta(0, "Bonjour"),
        text_delta(0, " à tous"),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
               "usage": {"output_tokens": 12}}),
        json!({"type": "message_stop"}),
    ]));
    server.push(Reply::Stream { pieces: pieces(&body, 11), end: End::Close });
    let provider = provider(ApiStyle::Anthropic, &server);
    let (result, events) = call(provider.as_ref(), &request(true)).await;
    let completion = result.unwrap();

    assert_eq!(completion.text, "Bonjour à tous");
    assert_eq!(events, vec![StreamEvent::TextDelta("Bonjour".into()), StreamEvent::TextDelta(" à tous".into())]);
    assert_eq!(
        (completion.usage.tokens_in, completion.usage.cache_read_tokens, completion.usage.tokens_out),
        (30, 5, 12)
    );
    assert!(!completion.usage.estimated);
    assert_eq!(completion.stop_reason, StopReason::EndTurn);
    assert_eq!(completion.model, "claude-sonnet-4-5-20250929");
    assert_eq!(server.single_request().body["stream"], true);
}

#[tokio::test]
async fn two_tool_use_blocks_with_input_split_across_chunks() {
    let server = FakeServer::start().await;
    let first = r#"{"path": "/tmp/ünïcödé.txt", "mode": "追加"}"#;
    let second = r#"{"n": 2}"#;
    let mut events = vec![
        message_start(json!({"input_tokens": 40, "output_tokens": 1})),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        text_delta(0, "Two calls."),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "content_block_start", "index": 1,
               "content_block": {"type": "tool_use", "id": "toolu_x", "name": "write_file", "input": {}}}),
        json_delta(1, ""),
    ];
    let chars: Vec<char> = first.chars().collect();
    events.extend(chars.chunks(4).map(|fragment| json_delta(1, &fragment.iter().collect::<String>())));
    events.extend([
        json!({"type": "content_block_stop", "index": 1}),
        json!({"type": "content_block_start", "index": 2,
               "content_block": {"type": "tool_use", "id": "toolu_y", "name": "count", "input": {}}}),
        json_delta(2, "{\"n\""),
        json_delta(2, ": 2}"),
        json!({"type": "content_block_stop", "index": 2}),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 60}}),
        json!({"type": "message_stop"}),
    ]);
    let body = anthropic_sse(&events);
    let mut split = split_inside(&body, '追');
    let rest = split.pop().unwrap();
    split.extend(pieces(&rest, 5));
    server.push(Reply::Stream { pieces: split, end: End::Close });

    let provider = provider(ApiStyle::Anthropic, &server);
    let (result, events) = call(provider.as_ref(), &request(true)).await;
    let completion = result.unwrap();

    assert_eq!(completion.text, "Two calls.");
    assert_eq!(
        completion.tool_calls,
        vec![
            ToolCall { id: "toolu_x".into(), name: "write_file".into(), arguments: first.into() },
            ToolCall { id: "toolu_y".into(), name: "count".into(), arguments: second.into() },
        ]
    );
    assert_eq!(completion.tool_calls[0].parse_arguments().unwrap()["mode"], "追加");
    assert_eq!(completion.stop_reason, StopReason::ToolUse);
    assert_eq!((completion.usage.tokens_in, completion.usage.tokens_out), (40, 60));
    assert_eq!(events[1], StreamEvent::ToolCallStarted { id: "toolu_x".into(), name: "write_file".into() });
    assert!(events.contains(&StreamEvent::ToolCallStarted { id: "toolu_y".into(), name: "count".into() }));
    assert_eq!(streamed_text(&events), "Two calls.");
}

#[tokio::test]
async fn usage_absent_is_estimated() {
    let server = FakeServer::start().await;
    let body = anthropic_sse(&[
        json!({"type": "message_start", "message": {"id": "m", "type": "message", "role": "assistant",
               "model": "local", "content": []}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        text_delta(0, "abcdefgh"),
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}}),
        json!({"type": "message_stop"}),
    ]);
    server.push(Reply::stream(body));
    let provider = provider(ApiStyle::Anthropic, &server);
    let (result, _) = call(provider.as_ref(), &request(true)).await;
    let usage = result.unwrap().usage;
    assert!(usage.estimated);
    assert_eq!(usage.tokens_out, 2, "8 characters / 4");
    // "You are terse." (14) + "Say hello" (9) = 23 characters → 6 tokens.
    assert_eq!(usage.tokens_in, 6);
}

#[tokio::test]
async fn an_error_event_mid_stream_is_classified() {
    let server = FakeServer::start().await;
    let mut body = crate::open_text_stream(ApiStyle::Anthropic, &["Hal"]);
    body.extend(anthropic_sse(&[
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    ]));
    server.push(Reply::stream(body));
    let provider = provider(ApiStyle::Anthropic, &server);
    let (result, events) = call(provider.as_ref(), &request(true)).await;
    let err = result.unwrap_err();
    assert_eq!((err.class(), err.code()), (cortex_core::job::ErrorClass::Transient, "provider_overloaded"));
    assert!(err.to_string().contains("Overloaded"));
    assert_eq!(streamed_text(&events), "Hal");
}
