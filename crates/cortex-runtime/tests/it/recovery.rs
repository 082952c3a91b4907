//! Crash recovery (SPEC §4.9): the process dies between a tool call and the next model call; after
//! recovery the completed tool call is not run again and the turn completes. The "process" is a
//! [`Doomed`] engine.

use std::time::Duration;

use cortex_core::approval::{ApprovalMode, ToolCallState};
use cortex_core::job::JobStatus;
use cortex_testkit::fake_llm::{Reply, When};
use cortex_testkit::{TestStore, both_engines};
use serde_json::json;

use crate::support::*;

both_engines!(a_crash_after_a_tool_call_never_repeats_it, |t: TestStore| async move {
    let llm = cortex_testkit::fake_llm::FakeLlm::start().await;
    let store = t.store.clone();
    let hook = CountingServer::start(json!({"order": "accepted"})).await;
    let agent = create_agent(&store, definition("gpt-4o-mini")).await;
    webhook_tool(&store, agent.id, "place_order", &hook.url, ApprovalMode::Never).await;
    llm.push(Reply::tool_call("webhook__place_order", json!({"item": "tea"})));
    llm.push(Reply::hang());
    llm.rule(When::LastIsToolResult, Reply::text("Your tea is ordered."));

    let job = task(&store, agent.id, "order tea").await;
    let doomed = Doomed::start(&t, env_for(&llm));
    llm.wait_for_requests(2).await;
    assert_eq!(hook.hits(), 1);
    doomed.kill();

    // The worker is silent for longer than 20 s: the reaper hands the job back to the queue.
    t.clock.advance(chrono::Duration::seconds(25));
    assert_eq!(
        cortex_jobs::reap_once(&store, Duration::from_secs(20), cortex_jobs::AutoQuarantine::On).await.unwrap(),
        1
    );
    let lost = store.get_job(job.id).await.unwrap();
    assert_eq!(lost.error.unwrap().code, "worker_lost");
    t.clock.advance(chrono::Duration::seconds(3));

    let second = runtime_with_env(&t, &store, env_for(&llm)).await;
    let engine = Engine::start(&store, &second, 2);
    let done = wait_status(&store, job.id, JobStatus::Completed).await;
    assert_eq!(done.result.unwrap()["response"], "Your tea is ordered.");
    assert_eq!(hook.hits(), 1, "the completed webhook call was not run again");
    let ledger = store.tool_calls_of_job(job.id).await.unwrap();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].state, ToolCallState::Completed);
    let last = llm.requests().last().cloned().unwrap();
    assert!(last.tool_results()[0].contains("accepted"), "the stored result was fed back");
    assert_eq!(done.attempt, 2);
    let reservations = store.budget_usage(cortex_store::budgets::BudgetScope::Job, job.id).await.unwrap();
    assert_eq!(reservations[0].tokens_reserved, 0, "the hung call's reservation was settled");
    engine.shutdown().await;
});
