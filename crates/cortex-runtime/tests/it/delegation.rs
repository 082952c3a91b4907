//! Tool calls know who they are (issue 12): the ledger call id travels with every call — as the
//! `Idempotency-Key` of webhook requests and as the idempotency key of the jobs `create_job` makes —
//! and `create_job` records the parent and depth of its children within configurable limits.

use cortex_core::approval::{ApprovalMode, RiskTier, ToolCallState};
use cortex_core::job::{JobKind, JobStatus};
use cortex_store::Store;
use cortex_store::jobs::{IdempotencyKey, Job, JobFilter, NewJob};
use cortex_store::tool_calls::NewToolCall;
use cortex_testkit::fake_llm::{Reply, When};
use cortex_testkit::jobs::prompt_job;
use cortex_testkit::{TestStore, both_engines};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::*;

/// The jobs `parent` created, oldest first.
async fn children(store: &Store, agent_id: Uuid, parent: Uuid) -> Vec<Job> {
    let filter = JobFilter { agent_id: Some(agent_id), kind: Some(JobKind::Task), ..Default::default() };
    let mut jobs: Vec<Job> = store
        .list_jobs(&filter, None, 200)
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|job| job.parent_job_id == Some(parent))
        .collect();
    jobs.reverse();
    jobs
}

fn create_job(prompt: &str) -> (String, Value) {
    ("create_job".to_owned(), json!({"prompt": prompt}))
}

both_engines!(webhook_requests_carry_the_ledger_call_id, |t: TestStore| async move {
    let world = World::new(t).await;
    let store = world.store().clone();
    let hook = CountingServer::start(json!({"order": "placed"})).await;
    let agent = create_agent(&store, definition("gpt-4o-mini")).await;
    webhook_tool(&store, agent.id, "place_order", &hook.url, ApprovalMode::Never).await;
    world.llm.push(Reply::tool_call("webhook__place_order", json!({"item": "tea"})));
    world.llm.rule(When::LastIsToolResult, Reply::text("Ordered."));
    let job = task(&store, agent.id, "order tea").await;

    wait_status(&store, job.id, JobStatus::Completed).await;
    let ledger = store.tool_calls_of_job(job.id).await.unwrap();
    assert_eq!(hook.idempotency_keys(), vec![Some(ledger[0].id.to_string())]);
    world.finish().await;
});

both_engines!(create_job_records_its_children_within_depth_and_fan_out_limits, |t: TestStore| async move {
    let limits = [("CORTEX_DELEGATION_MAX_DEPTH", "1"), ("CORTEX_DELEGATION_MAX_CHILDREN", "2")];
    let world = World::with_settings(t, 4, &limits).await;
    let store = world.store().clone();
    let agent = create_agent(&store, definition("gpt-4o-mini")).await;
    allow_tool(&store, agent.id, "create_job", ApprovalMode::Never, Some(RiskTier::P3)).await;
    world.llm.rule(When::LastIsToolResult, Reply::text("done"));
    world.llm.rule(
        When::LastUserContains("[root]".into()),
        Reply::tool_calls(vec![create_job("[child] a"), create_job("[child] b"), create_job("[child] c")]),
    );
    world.llm.rule(When::LastUserContains("[child]".into()), Reply::tool_calls(vec![create_job("[grandchild]")]));
    let root = task(&store, agent.id, "[root] split the work").await;

    wait_status(&store, root.id, JobStatus::Completed).await;
    let made = children(&store, agent.id, root.id).await;
    assert_eq!(made.iter().map(|job| job.prompt().unwrap()).collect::<Vec<_>>(), ["[child] a", "[child] b"]);
    assert!(made.iter().all(|job| job.delegation_depth == 1), "a root job's children are at depth 1");
    // The first call ran in a clean context; the second after a tool result (untrusted) was in it, so
    // that child starts with the taint.
    assert_eq!((made[0].untrusted_input(), made[1].untrusted_input()), (false, true));
    let ledger = store.tool_calls_of_job(root.id).await.unwrap();
    let third = ledger.iter().find(|call| call.input["prompt"] == "[child] c").unwrap();
    assert_eq!(third.state, ToolCallState::Failed);
    assert_eq!(third.output.as_ref().unwrap()["code"], "limit_reached", "fan-out limit of 2");

    for child in &made {
        wait_status(&store, child.id, JobStatus::Completed).await;
        assert!(children(&store, agent.id, child.id).await.is_empty(), "depth 2 is beyond the limit of 1");
        let refused = &store.tool_calls_of_job(child.id).await.unwrap()[0];
        assert_eq!(refused.output.as_ref().unwrap()["code"], "limit_reached");
        assert!(refused.output.as_ref().unwrap()["content"].as_str().unwrap().contains("depth"));
    }
    world.finish().await;
});

// A turn resumed after a crash in the middle of `create_job` (its ledger row still `running`) runs the
// call again under the same call id: the child the first execution made is returned, none is added.
both_engines!(a_resumed_create_job_never_creates_the_child_twice, |t: TestStore| async move {
    let world = World::new(t).await;
    let store = world.store().clone();
    let agent = create_agent(&store, definition("gpt-4o-mini")).await;
    allow_tool(&store, agent.id, "create_job", ApprovalMode::Never, Some(RiskTier::P3)).await;
    world.llm.rule(When::LastIsToolResult, Reply::text("done"));
    world.llm.rule(When::LastUserContains("[child]".into()), Reply::text("child done"));

    // Two interrupted roots, written with their ledger rows in one transaction so no worker sees them
    // earlier: the first crashed after its child was committed, the second before.
    let mut roots = Vec::new();
    let mut tx = store.begin().await.unwrap();
    for crashed_after_insert in [true, false] {
        let (root, _) = tx.insert_job(&prompt_job(agent.id, "delegate")).await.unwrap();
        let input = json!({"prompt": "[child] crunch"});
        let row = tx
            .insert_tool_call(&NewToolCall {
                job_id: root.id,
                agent_id: agent.id,
                call_id: "call_crashed".into(),
                turn: 1,
                tool_ref: "create_job".into(),
                input: input.clone(),
                input_hash: "not checked on resume".into(),
                state: ToolCallState::Running,
                output: None,
                is_error: false,
                idempotent: true,
            })
            .await
            .unwrap();
        if crashed_after_insert {
            let first = NewJob {
                parent_job_id: Some(root.id),
                delegation_depth: 1,
                idempotency_key: Some(IdempotencyKey::for_request(
                    format!("tool_call:{}", row.id),
                    &json!("create_job"),
                )),
                ..prompt_job(agent.id, "[child] crunch")
            };
            tx.insert_job(&first).await.unwrap();
        }
        roots.push(root);
    }
    tx.commit().await.unwrap();

    for root in &roots {
        wait_status(&store, root.id, JobStatus::Completed).await;
        let made = children(&store, agent.id, root.id).await;
        assert_eq!(made.len(), 1, "exactly one child for root {}", root.id);
        let ledger = store.tool_calls_of_job(root.id).await.unwrap();
        assert_eq!(ledger[0].state, ToolCallState::Completed);
        assert_eq!(ledger[0].output.as_ref().unwrap()["data"]["job_id"], json!(made[0].id));
    }
    world.finish().await;
});
