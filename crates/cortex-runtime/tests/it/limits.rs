//! Turn, context, budget and tool-error limits.

use cortex_core::approval::ApprovalMode;
use cortex_core::event::EventType;
use cortex_core::job::{ErrorClass, JobStatus};
use cortex_store::budgets::{BudgetScope, day_period};
use cortex_testkit::fake_llm::{Reply, When};
use cortex_testkit::{TestStore, both_engines};
use serde_json::json;

use crate::support::*;

both_engines!(the_last_turn_is_a_final_call_without_tools, |t: TestStore| async move {
    let world = World::new(t).await;
    let store = world.store().clone();
    let mut def = definition("gpt-4o-mini");
    def.resource_limits.max_turns = 2;
    let agent = create_agent(&store, def).await;
    allow_tool(&store, agent.id, "echo", ApprovalMode::Never, None).await;
    world.llm.rule(
        When::Custom(std::sync::Arc::new(|r| !r.tool_names().is_empty())),
        Reply::tool_call("echo", json!({"text": "again"})),
    );
    world.llm.rule(When::Always, Reply::text("Here is my final answer."));
    let job = task(&store, agent.id, "loop forever").await;

    let done = wait_status(&store, job.id, JobStatus::Completed).await;
    let result = done.result.unwrap();
    assert_eq!(result["stop_reason"], "max_turns");
    assert_eq!(result["response"], "Here is my final answer.");
    let requests = world.llm.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].tool_names(), vec!["echo"]);
    assert!(requests[1].body.get("tools").is_none(), "the last turn offers no tools");
    assert!(requests[1].system().contains("Tools in this request: none"));
    assert!(requests[1].user_texts().last().unwrap().contains("last turn"));
    assert!(requests[1].body_text().contains("again"), "earlier tool calls are kept as text");
    world.finish().await;
});

both_engines!(long_history_is_trimmed_to_fit_the_context, |t: TestStore| async move {
    let world = World::new(t).await;
    let store = world.store().clone();
    let agent = create_agent(&store, definition("local-model")).await;
    let mut tx = store.begin().await.unwrap();
    let session = tx.insert_session(agent.id, None, "rest").await.unwrap();
    for n in 0..60 {
        let role = if n % 2 == 0 { "user" } else { "assistant" };
        tx.append_message(session.id, role, &format!("message {n} {}", "x".repeat(10_000)), None, None).await.unwrap();
    }
    tx.commit().await.unwrap();
    world.llm.push(Reply::text("fits"));
    let job = chat(&store, agent.id, Some(session.id), "the newest question").await;

    let done = wait_status(&store, job.id, JobStatus::Completed).await;
    assert_eq!(done.result.unwrap()["response"], "fits");
    let request = &world.llm.requests()[0];
    let sent: usize = request.messages().iter().map(|m| m.text.chars().count()).sum();
    assert!(sent <= 120_000, "{sent} characters sent for an unknown model (fallback 120 000)");
    let texts: Vec<String> = request.messages().iter().map(|m| m.text.clone()).collect();
    assert_eq!(texts.last().unwrap(), "the newest question");
    assert!(texts.iter().any(|t| t.starts_with("message 59 ")), "the newest history is kept");
    assert!(!texts.iter().any(|t| t.starts_with("message 10 ")), "the oldest history is dropped");
    assert!(texts.len() > 2);
    assert_eq!(request.messages().iter().find(|m| m.role != "system").unwrap().role, "user");
    world.finish().await;
});

both_engines!(concurrent_turns_never_overspend_the_budget, |t: TestStore| async move {
    let world = World::with_concurrency(t, 50).await;
    let store = world.store().clone();
    let per_job = 150;
    let limit = 10 * per_job;
    let mut def = definition("gpt-4o-mini");
    def.resource_limits.max_concurrent_jobs = 100;
    def.resource_limits.token_budget_per_day = Some(limit as u64);
    def.model_config.max_tokens = Some(100);
    def.system_prompt = "Be terse. ".repeat(40);
    let agent = create_agent(&store, def).await;
    world.llm.rule(When::Always, Reply::text("ok").usage(50, 100));
    let mut jobs = Vec::new();
    for n in 0..50 {
        jobs.push(task(&store, agent.id, &format!("turn {n}")).await);
    }
    let mut completed = 0;
    for job in &jobs {
        let done = wait_settled(&store, job.id).await;
        match done.status {
            JobStatus::Completed => completed += 1,
            _ => {
                let error = done.error.unwrap();
                assert_eq!((error.class, error.code.as_str()), (ErrorClass::Permanent, "token_budget_exceeded"));
            }
        }
    }
    let rows = store.budget_usage(BudgetScope::Agent, agent.id).await.unwrap();
    let today = rows.iter().find(|row| row.period == day_period(store.clock().now())).unwrap();
    assert!(today.tokens_spent <= limit, "spent {} of {limit}", today.tokens_spent);
    assert_eq!(today.tokens_reserved, 0);
    assert_eq!(today.tokens_spent, completed * per_job);
    assert!((1..=10).contains(&completed), "{completed} turns completed");
    assert_eq!(world.llm.request_count() as i64, completed, "refused turns never reach the model");
    world.finish().await;
});

both_engines!(unpriced_model_with_a_cost_budget_fails_closed, |t: TestStore| async move {
    let world = World::new(t).await;
    let store = world.store().clone();
    let mut def = definition("my-local-llama");
    def.resource_limits.cost_budget_usd_per_job = Some(1.0);
    let agent = create_agent(&store, def).await;
    let job = task(&store, agent.id, "hi").await;
    let failed = wait_status(&store, job.id, JobStatus::Failed).await;
    let error = failed.error.unwrap();
    assert_eq!((error.class, error.code.as_str()), (ErrorClass::Permanent, "unpriced_model"));
    assert_eq!(world.llm.request_count(), 0);

    // Without a cost budget the same model runs, costing 0 and saying it is unpriced.
    let agent = create_agent(&store, definition("my-local-llama")).await;
    world.llm.push(Reply::text("free"));
    let job = task(&store, agent.id, "hi").await;
    let done = wait_status(&store, job.id, JobStatus::Completed).await;
    assert_eq!(done.cost_usd, 0.0);
    let usage = of_type(&events(&store, job.id).await, EventType::LlmUsage)[0].payload.clone();
    assert_eq!((usage["priced"].clone(), usage["cost_estimated"].clone()), (json!(false), json!(false)));
    world.finish().await;
});

both_engines!(a_cost_alert_fires_once_at_eighty_percent, |t: TestStore| async move {
    let world = World::new(t).await;
    let store = world.store().clone();
    let mut def = definition("gpt-4o-mini");
    def.resource_limits.token_budget = 10_000;
    def.model_config.max_tokens = Some(100);
    let agent = create_agent(&store, def).await;
    allow_tool(&store, agent.id, "echo", ApprovalMode::Never, None).await;
    world.llm.push(Reply::tool_call("echo", json!({"text": "a"})).usage(4_000, 100));
    world.llm.push(Reply::tool_call("echo", json!({"text": "b"})).usage(3_900, 100));
    world.llm.push(Reply::text("done").usage(1_000, 50));
    let job = task(&store, agent.id, "spend").await;
    wait_status(&store, job.id, JobStatus::Completed).await;
    let alerts = of_type(&events(&store, job.id).await, EventType::CostAlert).into_iter().cloned().collect::<Vec<_>>();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].payload["scope"], "job");
    assert_eq!(alerts[0].payload["kind"], "tokens");
    world.finish().await;
});

both_engines!(malformed_arguments_get_one_repair_round_then_count_as_errors, |t: TestStore| async move {
    let world = World::new(t).await;
    let store = world.store().clone();
    let agent = create_agent(&store, definition("gpt-4o-mini")).await;
    allow_tool(&store, agent.id, "echo", ApprovalMode::Never, None).await;
    world.llm.push(Reply::raw_tool_call("echo", r#"{"text": "unterminated"#));
    world.llm.push(Reply::tool_call("echo", json!({"wrong": 1})));
    world.llm.push(Reply::text("gave up"));
    let job = task(&store, agent.id, "call echo").await;
    wait_status(&store, job.id, JobStatus::Completed).await;
    let requests = world.llm.requests();
    assert!(requests[1].tool_results()[0].contains("not valid JSON"), "{:?}", requests[1].tool_results());
    assert!(requests[2].tool_results()[1].contains("invalid arguments"), "{:?}", requests[2].tool_results());
    let ledger = store.tool_calls_of_job(job.id).await.unwrap();
    assert_eq!(ledger.len(), 2);
    assert!(ledger.iter().all(|call| call.is_error && call.duration_ms.is_none()), "refused calls never ran");
    world.finish().await;
});

both_engines!(ten_tool_errors_fail_the_job, |t: TestStore| async move {
    let world = World::new(t).await;
    let store = world.store().clone();
    let agent = create_agent(&store, definition("gpt-4o-mini")).await;
    world.llm.rule(When::Always, Reply::tool_call("no_such_tool", json!({})));
    let job = task(&store, agent.id, "flail").await;
    let failed = wait_status(&store, job.id, JobStatus::Failed).await;
    let error = failed.error.unwrap();
    assert_eq!((error.class, error.code.as_str()), (ErrorClass::Permanent, "tool_error_limit"));
    assert_eq!(store.tool_calls_of_job(job.id).await.unwrap().len(), 10);
    let denied = of_type(&events(&store, job.id).await, EventType::ToolDenied).len();
    assert_eq!(denied, 10);
    world.finish().await;
});
