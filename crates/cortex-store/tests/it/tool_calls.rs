//! The tool-call ledger: guarded state changes, per-job keys, rate-limit counts.

use cortex_core::approval::ToolCallState;
use cortex_core::clock::Clock;
use cortex_store::StoreError;
use cortex_store::tool_calls::{NewToolCall, ToolCallEnd};
use cortex_testkit::{TestStore, both_engines};
use serde_json::json;
use uuid::Uuid;

use crate::support::{agent_with_limit, enqueue, task};

fn call(job_id: Uuid, agent_id: Uuid, call_id: &str, state: ToolCallState) -> NewToolCall {
    NewToolCall {
        job_id,
        agent_id,
        call_id: call_id.into(),
        turn: 1,
        tool_ref: "echo".into(),
        input: json!({"text": "hi"}),
        input_hash: "h".into(),
        state,
        output: None,
        is_error: false,
        idempotent: true,
    }
}

fn done(state: ToolCallState) -> ToolCallEnd {
    ToolCallEnd { state, output: json!({"content": "hi"}), is_error: false, duration_ms: Some(3), cost_usd: 0.0 }
}

both_engines!(a_settled_call_cannot_be_settled_again, |t: TestStore| async move {
    let agent = agent_with_limit(&t.store, "ledger", 4).await;
    let job = enqueue(&t.store, task(agent)).await;
    let mut tx = t.store.begin().await.unwrap();
    let running = tx.insert_tool_call(&call(job.id, agent, "c1", ToolCallState::Running)).await.unwrap();
    tx.commit().await.unwrap();

    let mut tx = t.store.begin().await.unwrap();
    let finished =
        tx.finish_tool_call(running.id, ToolCallState::Running, &done(ToolCallState::Completed)).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(finished.state, ToolCallState::Completed);
    assert_eq!(finished.duration_ms, Some(3));

    let mut tx = t.store.begin().await.unwrap();
    let again = tx.finish_tool_call(running.id, ToolCallState::Running, &done(ToolCallState::Failed)).await;
    assert!(matches!(again, Err(StoreError::StaleState { .. })));
    drop(tx);

    let mut tx = t.store.begin().await.unwrap();
    let duplicate = tx.insert_tool_call(&call(job.id, agent, "c1", ToolCallState::Running)).await;
    assert!(matches!(duplicate, Err(StoreError::Conflict { .. })), "{duplicate:?}");
    drop(tx);

    let stored = t.store.tool_calls_of_job(job.id).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].output, Some(json!({"content": "hi"})));
});

both_engines!(approval_waits_are_moved_once, |t: TestStore| async move {
    let agent = agent_with_limit(&t.store, "waits", 4).await;
    let job = enqueue(&t.store, task(agent)).await;
    let mut tx = t.store.begin().await.unwrap();
    let waiting = tx.insert_tool_call(&call(job.id, agent, "c1", ToolCallState::AwaitingApproval)).await.unwrap();
    tx.commit().await.unwrap();

    let mut tx = t.store.begin().await.unwrap();
    tx.move_tool_call(waiting.id, ToolCallState::AwaitingApproval, ToolCallState::Running).await.unwrap();
    tx.commit().await.unwrap();
    let mut tx = t.store.begin().await.unwrap();
    let twice = tx.move_tool_call(waiting.id, ToolCallState::AwaitingApproval, ToolCallState::Running).await;
    assert!(matches!(twice, Err(StoreError::StaleState { .. })));
});

both_engines!(rate_limit_counts_only_executions_in_the_window, |t: TestStore| async move {
    let agent = agent_with_limit(&t.store, "rate", 4).await;
    let job = enqueue(&t.store, task(agent)).await;
    let start = t.clock.now();
    let mut tx = t.store.begin().await.unwrap();
    let first = tx.insert_tool_call(&call(job.id, agent, "a", ToolCallState::Running)).await.unwrap();
    tx.finish_tool_call(first.id, ToolCallState::Running, &done(ToolCallState::Completed)).await.unwrap();
    // Refused before execution: never counts.
    tx.insert_tool_call(&NewToolCall {
        output: Some(json!({"content": "invalid"})),
        is_error: true,
        ..call(job.id, agent, "b", ToolCallState::Failed)
    })
    .await
    .unwrap();
    tx.commit().await.unwrap();
    t.clock.advance(chrono::Duration::seconds(30));
    let mut tx = t.store.begin().await.unwrap();
    tx.insert_tool_call(&call(job.id, agent, "c", ToolCallState::Running)).await.unwrap();
    tx.commit().await.unwrap();

    let all = t.store.recent_tool_calls(agent, "echo", start).await.unwrap();
    assert_eq!(all.count, 2);
    assert_eq!(all.oldest, Some(start));
    let later = t.store.recent_tool_calls(agent, "echo", start + chrono::Duration::seconds(1)).await.unwrap();
    assert_eq!(later.count, 1);
    assert_eq!(t.store.count_agent_tool_calls_since(agent, start).await.unwrap(), 2);
});
