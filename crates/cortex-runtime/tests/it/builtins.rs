//! The store-backed built-in tools and per-tool rate limits, through the loop.

use cortex_core::approval::{ApprovalMode, RiskTier};
use cortex_core::event::EventType;
use cortex_core::job::{JobKind, JobStatus};
use cortex_store::jobs::JobFilter;
use cortex_store::tools::ToolPolicy;
use cortex_testkit::fake_llm::{Reply, When};
use cortex_testkit::{TestStore, both_engines};
use serde_json::json;

use crate::support::*;

both_engines!(memories_are_stored_and_recalled_as_untrusted_data, |t: TestStore| async move {
    let world = World::new(t).await;
    let store = world.store().clone();
    let agent = create_agent(&store, definition("gpt-4o-mini")).await;
    allow_tool(&store, agent.id, "memory_store", ApprovalMode::Risk, None).await;
    allow_tool(&store, agent.id, "memory_query", ApprovalMode::Risk, None).await;
    world.llm.push(Reply::tool_call(
        "memory_store",
        json!({"content": "The user's favourite tea is oolong.", "tags": ["tea"]}),
    ));
    world.llm.push(Reply::tool_call("memory_store", json!({"content": "The user's favourite tea is oolong."})));
    world.llm.push(Reply::tool_call("memory_query", json!({"query": "favourite tea"})));
    world.llm.push(Reply::text("You like oolong."));
    let job = task(&store, agent.id, "remember and recall").await;

    wait_status(&store, job.id, JobStatus::Completed).await;
    let requests = world.llm.requests();
    assert!(requests[1].tool_results()[0].contains("Stored."));
    assert!(requests[2].tool_results()[1].contains("Already remembered"), "identical content is one memory");
    let recalled = requests[3].tool_results()[2].clone();
    assert!(recalled.contains("[UNTRUSTED DATA BEGIN") && recalled.contains("oolong"), "{recalled}");
    let other = create_agent(&store, definition("gpt-4o-mini")).await;
    assert!(
        store.memory_keyword_hits(other.id, &["oolong".into()], 10).await.unwrap().is_empty(),
        "memory is per agent"
    );
    assert_eq!(store.memory_keyword_hits(agent.id, &["oolong".into()], 10).await.unwrap().len(), 1);
    world.finish().await;
});

both_engines!(create_job_schedules_follow_up_work_for_the_agent, |t: TestStore| async move {
    let world = World::new(t).await;
    let store = world.store().clone();
    let mut helper_def = definition("gpt-4o-mini");
    helper_def.slug = format!("helper-{}", uuid::Uuid::now_v7().simple());
    let helper = create_agent(&store, helper_def).await;
    let mut def = definition("gpt-4o");
    def.subagents = vec![helper.slug.clone()];
    let agent = create_agent(&store, def).await;
    // Pinned at p3 so the tool output already in the context does not force a human approval.
    allow_tool(&store, agent.id, "create_job", ApprovalMode::Never, Some(RiskTier::P3)).await;
    world.llm.push_for_model(
        "gpt-4o",
        Reply::tool_call("create_job", json!({"prompt": "escape", "agent": "not-a-subagent"})),
    );
    world.llm.push_for_model(
        "gpt-4o",
        Reply::tool_call("create_job", json!({"prompt": "summarise the inbox", "agent": helper.slug})),
    );
    world.llm.rule(When::LastUserContains("summarise the inbox".into()), Reply::text("summary done"));
    world.llm.rule(When::Always, Reply::text("scheduled"));
    let job = task(&store, agent.id, "plan the day").await;

    wait_status(&store, job.id, JobStatus::Completed).await;
    let created = store
        .list_jobs(&JobFilter { agent_id: Some(helper.id), kind: Some(JobKind::Task), ..Default::default() }, None, 10)
        .await
        .unwrap()
        .items;
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].prompt(), Some("summarise the inbox"));
    assert_eq!((created[0].parent_job_id, created[0].delegation_depth), (Some(job.id), 1));
    let done = wait_status(&store, created[0].id, JobStatus::Completed).await;
    assert_eq!(done.result.unwrap()["response"], "summary done");
    let refused =
        world.llm.requests().iter().flat_map(|r| r.tool_results()).any(|r| r.contains("not one of your sub-agents"));
    assert!(refused);
    world.finish().await;
});

both_engines!(a_rate_limited_tool_tells_the_model_when_to_retry, |t: TestStore| async move {
    let world = World::new(t).await;
    let store = world.store().clone();
    let agent = create_agent(&store, definition("gpt-4o-mini")).await;
    let policy = ToolPolicy {
        approval: ApprovalMode::Never,
        rate_limit: Some(json!({"max_calls": 1, "window_seconds": 60})),
        ..ToolPolicy::enabled_by_risk(agent.id, "echo")
    };
    let mut tx = store.begin().await.unwrap();
    tx.upsert_tool_policy(&policy).await.unwrap();
    tx.commit().await.unwrap();
    world.llm.push(Reply::tool_call("echo", json!({"text": "one"})));
    world.llm.push(Reply::tool_call("echo", json!({"text": "two"})));
    world.llm.push(Reply::text("ok"));
    let job = task(&store, agent.id, "echo twice").await;

    wait_status(&store, job.id, JobStatus::Completed).await;
    let told = world.llm.requests()[2].tool_results()[1].clone();
    assert!(told.contains("rate limited") && told.contains("again in 60 s"), "{told}");
    let limited =
        of_type(&events(&store, job.id).await, EventType::ToolRateLimited).into_iter().cloned().collect::<Vec<_>>();
    assert_eq!(limited.len(), 1);
    assert_eq!(limited[0].payload["retry_after_seconds"], 60);
    world.finish().await;
});
