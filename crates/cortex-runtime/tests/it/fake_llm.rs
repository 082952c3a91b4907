//! The fake LLM speaks the real protocols: the production clients parse what it sends.

use cortex_llm::{ApiStyle, ChatRequest, LlmError, Message, ProviderConfig, StopReason, StreamEvent, ToolSpec};
use cortex_testkit::fake_llm::{FakeLlm, Gate, Reply, Style};
use serde_json::json;

use crate::support::http;

fn request(stream: bool) -> ChatRequest {
    ChatRequest {
        model: "m-1".into(),
        system: Some("be brief".into()),
        messages: vec![Message::User { text: "hi".into() }],
        tools: vec![ToolSpec { name: "lookup".into(), description: "d".into(), parameters: json!({"type": "object"}) }],
        max_tokens: 64,
        temperature: None,
        stream,
    }
}

fn provider(style: ApiStyle, llm: &FakeLlm) -> std::sync::Arc<dyn cortex_llm::LlmProvider> {
    let base = match style {
        ApiStyle::OpenAi => llm.openai_base_url(),
        ApiStyle::Anthropic => llm.anthropic_base_url(),
    };
    cortex_llm::build_provider(ProviderConfig::new("fake", style, base).with_api_key("k"), http())
}

#[tokio::test]
async fn both_styles_stream_text_tool_calls_and_usage() {
    for style in [ApiStyle::OpenAi, ApiStyle::Anthropic] {
        for stream in [true, false] {
            let llm = FakeLlm::start().await;
            llm.push(
                Reply::tool_call("lookup", json!({"query": "weather in Paris", "days": 3}))
                    .with_text("Checking.")
                    .usage(21, 7),
            );
            let mut events = Vec::new();
            let mut sink = |event| events.push(event);
            let completion = provider(style, &llm).complete(&request(stream), &mut sink).await.unwrap();
            assert_eq!(completion.text, "Checking.", "{style} stream={stream}");
            assert_eq!(completion.tool_calls.len(), 1);
            assert_eq!(completion.tool_calls[0].name, "lookup");
            assert_eq!(
                completion.tool_calls[0].parse_arguments().unwrap(),
                json!({"query": "weather in Paris", "days": 3})
            );
            assert_eq!((completion.usage.tokens_in, completion.usage.tokens_out), (21, 7));
            assert!(!completion.usage.estimated);
            assert_eq!(completion.stop_reason, StopReason::ToolUse);
            if stream {
                let fragments =
                    events.iter().filter(|e| matches!(e, StreamEvent::ToolCallArgumentsDelta { .. })).count();
                assert!(fragments >= 2, "{style}: arguments split across chunks ({fragments})");
            }
            let recorded = &llm.requests()[0];
            assert_eq!(recorded.style, if style == ApiStyle::OpenAi { Style::OpenAi } else { Style::Anthropic });
            assert_eq!(recorded.tool_names(), vec!["lookup"]);
            assert_eq!(recorded.system(), "be brief");
            assert_eq!(recorded.stream(), stream);
        }
    }
}

#[tokio::test]
async fn scripted_failures_are_classified_by_the_clients() {
    for style in [ApiStyle::OpenAi, ApiStyle::Anthropic] {
        let llm = FakeLlm::start().await;
        let client = provider(style, &llm);
        let mut sink = |_| {};
        llm.push(Reply::error(429).header("retry-after", "7"));
        let err = client.complete(&request(true), &mut sink).await.unwrap_err();
        assert_eq!(err.retry_after(), Some(std::time::Duration::from_secs(7)));
        llm.push(Reply::error(401));
        assert!(matches!(client.complete(&request(true), &mut sink).await, Err(LlmError::Auth { .. })));
        llm.push(Reply::drop_mid_stream("a long answer that never ends properly"));
        assert_eq!(
            client.complete(&request(true), &mut sink).await.unwrap_err().code(),
            "stream_interrupted",
            "{style}"
        );
        llm.push(Reply::malformed());
        assert!(client.complete(&request(true), &mut sink).await.is_err());
    }
}

#[tokio::test]
async fn gated_replies_wait_and_arrivals_can_be_awaited() {
    let llm = FakeLlm::start().await;
    let gate = Gate::new();
    llm.push(Reply::text("late").after(&gate));
    let client = provider(ApiStyle::OpenAi, &llm);
    let call = tokio::spawn(async move {
        let mut sink = |_| {};
        client.complete(&request(false), &mut sink).await.map(|completion| completion.text)
    });
    llm.wait_for_requests(1).await;
    assert!(!call.is_finished());
    gate.open();
    assert_eq!(call.await.unwrap().unwrap(), "late");
}
