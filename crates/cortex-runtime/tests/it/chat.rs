//! The basic loop: answers, tool calls, streaming, both wire styles, task jobs.

use cortex_core::approval::{ApprovalMode, ToolCallState};
use cortex_core::event::EventType;
use cortex_core::job::JobStatus;
use cortex_testkit::fake_llm::{Reply, When};
use cortex_testkit::{TestStore, both_engines};
use serde_json::json;

use crate::support::*;

both_engines!(final_answer_is_stored_once_with_usage_and_cost, |t: TestStore| async move {
    let world = World::new(t).await;
    let store = world.store().clone();
    let agent = create_agent(&store, definition("gpt-4o-mini")).await;
    world.llm.push(Reply::text("Hello there, friend.").usage(1_000, 200));
    let job = chat(&store, agent.id, None, "Say hello").await;

    let done = wait_status(&store, job.id, JobStatus::Completed).await;
    assert_eq!(done.result.as_ref().unwrap()["response"], "Hello there, friend.");
    assert_eq!(done.result.as_ref().unwrap()["stop_reason"], "end_turn");
    assert_eq!((done.tokens_in, done.tokens_out, done.llm_calls), (1_000, 200, 1));
    let expected_cost = (1_000.0 * 0.15 + 200.0 * 0.60) / 1e6;
    assert!((done.cost_usd - expected_cost).abs() < 1e-12, "{}", done.cost_usd);

    let messages = store.list_messages(done.session_id.unwrap(), 0, 100).await.unwrap();
    let roles: Vec<&str> = messages.iter().map(|m| m.role.as_str()).collect();
    assert_eq!(roles, vec!["user", "assistant"]);
    assert_eq!(messages[1].content, "Hello there, friend.");
    let session = store.get_session(done.session_id.unwrap()).await.unwrap();
    assert_eq!((session.tokens_in, session.tokens_out), (1_000, 200));
    assert!((session.cost_usd - expected_cost).abs() < 1e-12);

    let events = events(&store, job.id).await;
    assert_eq!(of_type(&events, EventType::LlmRequest).len(), 1);
    let message = of_type(&events, EventType::LlmMessage);
    assert_eq!(message[0].payload["text"], "Hello there, friend.");
    let usage = of_type(&events, EventType::LlmUsage);
    assert_eq!(usage[0].payload["tokens_in"], 1_000);
    assert_eq!(usage[0].payload["model"], "gpt-4o-mini");
    assert!((usage[0].payload["cost_usd"].as_f64().unwrap() - expected_cost).abs() < 1e-12);
    assert_eq!(usage[0].payload["priced"], true);

    let request = &world.llm.requests()[0];
    assert!(request.stream());
    assert_eq!(request.header("authorization"), Some("Bearer sk-test-openai"));
    assert!(request.system().contains("You are a careful assistant."));
    assert!(request.system().contains("Tools in this request: none"));
    assert_eq!(request.user_texts(), vec!["Say hello"]);
    world.finish().await;
});

both_engines!(echo_result_reaches_the_next_call_wrapped_as_untrusted, |t: TestStore| async move {
    let world = World::new(t).await;
    let store = world.store().clone();
    let agent = create_agent(&store, definition("gpt-4o-mini")).await;
    allow_tool(&store, agent.id, "echo", ApprovalMode::Risk, None).await;
    world.llm.push(Reply::tool_call("echo", json!({"text": "ping from the tool"})));
    world.llm.rule(When::LastIsToolResult, Reply::text("The tool said ping."));
    let job = chat(&store, agent.id, None, "Use echo").await;

    let done = wait_status(&store, job.id, JobStatus::Completed).await;
    assert_eq!(done.result.unwrap()["response"], "The tool said ping.");
    assert_eq!((done.llm_calls, done.tool_calls), (2, 1));
    let requests = world.llm.requests();
    assert_eq!(requests[0].tool_names(), vec!["echo"]);
    assert!(requests[0].system().contains("Tools in this request: echo"));
    let results = requests[1].tool_results();
    assert_eq!(results.len(), 1);
    assert!(results[0].contains("[UNTRUSTED DATA BEGIN"), "{}", results[0]);
    assert!(results[0].contains("source=echo"));
    assert!(results[0].contains("ping from the tool"));

    let ledger = store.tool_calls_of_job(job.id).await.unwrap();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].state, ToolCallState::Completed);
    assert_eq!(ledger[0].tool_ref, "echo");
    let events = events(&store, job.id).await;
    let call = of_type(&events, EventType::ToolCall);
    assert_eq!(call[0].payload["approval"], "policy", "p3 under `risk` is auto-approved");
    assert_eq!(of_type(&events, EventType::ToolResult)[0].payload["state"], "completed");
    let audit = store
        .list_audit(
            &cortex_store::audit::AuditFilter { action: Some("tool.call".into()), ..Default::default() },
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(audit.items.len(), 1);
    assert_eq!(audit.items[0].details["args_hash"], ledger[0].input_hash);
    world.finish().await;
});

both_engines!(anthropic_tool_round_trip, |t: TestStore| async move {
    let world = World::new(t).await;
    let store = world.store().clone();
    let mut def = definition("claude-sonnet-4-5");
    def.model_config.provider = "anthropic".into();
    let agent = create_agent(&store, def).await;
    allow_tool(&store, agent.id, "echo", ApprovalMode::Never, None).await;
    world.llm.push(Reply::tool_call("echo", json!({"text": "anthropic says hi"})).with_text("Let me check."));
    world.llm.rule(When::LastIsToolResult, Reply::text("Done.").usage(40, 5));
    let job = task(&store, agent.id, "Echo something").await;

    let done = wait_status(&store, job.id, JobStatus::Completed).await;
    assert_eq!(done.result.unwrap()["response"], "Done.");
    let requests = world.llm.requests();
    assert!(requests.iter().all(|request| request.path == "/v1/messages"));
    assert_eq!(requests[0].header("x-api-key"), Some("sk-test-anthropic"));
    assert!(requests[1].tool_results()[0].contains("anthropic says hi"));
    assert!(requests[1].messages().iter().any(|m| m.role == "assistant" && m.text == "Let me check."));
    world.finish().await;
});

both_engines!(streamed_text_is_coalesced_into_few_delta_events, |t: TestStore| async move {
    let world = World::new(t).await;
    let store = world.store().clone();
    let agent = create_agent(&store, definition("gpt-4o-mini")).await;
    let text: String = (0..300).map(|n| format!("w{n} ")).collect();
    world.llm.push(Reply::text(text.clone()).chunk_chars(5));
    let job = task(&store, agent.id, "Talk a lot").await;

    wait_status(&store, job.id, JobStatus::Completed).await;
    let events = events(&store, job.id).await;
    let deltas = of_type(&events, EventType::LlmDelta);
    let joined: String = deltas.iter().filter_map(|event| event.payload["text"].as_str()).collect();
    assert_eq!(joined, text);
    let chunks = text.chars().count().div_ceil(5);
    assert!(deltas.len() * 10 <= chunks, "{} delta events for {chunks} streamed chunks", deltas.len());
    assert!(deltas.iter().all(|event| event.payload["text"].as_str().is_none_or(|t| t.chars().count() <= 512 + 5)));
    assert_eq!(of_type(&events, EventType::LlmMessage)[0].payload["text"], text.as_str());
    world.finish().await;
});

both_engines!(effective_tools_are_exactly_what_the_model_gets, |t: TestStore| async move {
    let world = World::new(t).await;
    let store = world.store().clone();
    let agent = create_agent(&store, definition("gpt-4o-mini")).await;
    allow_tool(&store, agent.id, "echo", ApprovalMode::Risk, None).await;
    allow_tool(&store, agent.id, "http_request", ApprovalMode::Never, None).await;
    allow_tool(&store, agent.id, "web_search", ApprovalMode::Risk, None).await;
    allow_tool(&store, agent.id, "mcp:nowhere:tool", ApprovalMode::Risk, None).await;
    let mut disabled = cortex_store::tools::ToolPolicy::enabled_by_risk(agent.id, "memory_query");
    disabled.enabled = false;
    let mut tx = store.begin().await.unwrap();
    tx.upsert_tool_policy(&disabled).await.unwrap();
    tx.commit().await.unwrap();

    let report = world.runtime.tool_report(agent.id).await.unwrap();
    let refs: Vec<&str> = report.tools.iter().map(|tool| tool.tool_ref.as_str()).collect();
    assert_eq!(refs, vec!["echo", "http_request"]);
    let unresolved: Vec<&str> = report.unresolved.iter().map(|tool| tool.tool_ref.as_str()).collect();
    assert_eq!(unresolved, vec!["mcp:nowhere:tool", "web_search"]);
    assert!(report.unresolved[1].reason.contains("CORTEX_SEARCH_API_URL"), "{:?}", report.unresolved);

    world.llm.push(Reply::text("ok"));
    let job = task(&store, agent.id, "What can you use?").await;
    wait_status(&store, job.id, JobStatus::Completed).await;
    let offered = world.llm.requests()[0].tool_names();
    let wire: Vec<String> = report.tools.iter().map(|tool| tool.wire_name.clone()).collect();
    assert_eq!(offered, wire);
    world.finish().await;
});

both_engines!(a_stream_cut_mid_answer_is_retried_and_viewers_are_told_to_reset, |t: TestStore| async move {
    let world = World::new(t).await;
    let store = world.store().clone();
    let agent = create_agent(&store, definition("gpt-4o-mini")).await;
    world
        .llm
        .push(Reply::drop_mid_stream("This first answer is cut off somewhere in the middle of it.").chunk_chars(4));
    world.llm.push(Reply::text("The complete answer."));
    let job = task(&store, agent.id, "answer").await;

    let done = wait_status(&store, job.id, JobStatus::Completed).await;
    assert_eq!(done.result.unwrap()["response"], "The complete answer.");
    let events = events(&store, job.id).await;
    let deltas = of_type(&events, EventType::LlmDelta);
    let reset = deltas.iter().position(|event| event.payload["reset"] == true).expect("a reset delta");
    let after: String = deltas[reset + 1..].iter().filter_map(|event| event.payload["text"].as_str()).collect();
    assert_eq!(after, "The complete answer.");
    assert_eq!(of_type(&events, EventType::LlmMessage)[0].payload["text"], "The complete answer.");
    world.finish().await;
});
