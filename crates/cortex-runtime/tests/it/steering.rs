//! Steering reaches the model at the next turn (SPEC §5.6).

use cortex_core::approval::ApprovalMode;
use cortex_core::event::EventType;
use cortex_core::job::JobStatus;
use cortex_testkit::fake_llm::{Gate, Reply, When};
use cortex_testkit::{TestStore, both_engines};
use serde_json::json;

use crate::support::*;

both_engines!(steering_is_injected_before_the_next_model_call, |t: TestStore| async move {
    let world = World::new(t).await;
    let store = world.store().clone();
    let agent = create_agent(&store, definition("gpt-4o-mini")).await;
    allow_tool(&store, agent.id, "echo", ApprovalMode::Never, None).await;
    let gate = Gate::new();
    world.llm.push(Reply::tool_call("echo", json!({"text": "working"})).after(&gate));
    world.llm.rule(When::LastUserContains("answer in French".into()), Reply::text("D'accord."));
    world.llm.rule(When::Always, Reply::text("steering was not seen"));
    let job = chat(&store, agent.id, None, "Do the thing").await;

    world.llm.wait_for_requests(1).await;
    let mut tx = store.begin().await.unwrap();
    let steering = tx
        .insert_steering(agent.id, Some(job.id), "Please answer in French.", "normal", Some("test".into()))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    gate.open();

    let done = wait_status(&store, job.id, JobStatus::Completed).await;
    assert_eq!(done.result.unwrap()["response"], "D'accord.");
    let requests = world.llm.requests();
    assert!(!requests[0].body_text().contains("answer in French"));
    let last_user = requests[1].user_texts().last().cloned().unwrap();
    assert!(last_user.contains("[Operator instruction"), "{last_user}");
    let stored = store.get_steering(steering.id).await.unwrap();
    assert_eq!((stored.state.as_str(), stored.injected_at_turn), ("injected", Some(2)));
    let events = events(&store, job.id).await;
    assert_eq!(of_type(&events, EventType::SteerInjected)[0].payload["steering_id"], json!(steering.id));
    let ack = of_type(&events, EventType::SteerAcknowledged);
    assert_eq!(ack.len(), 1);
    assert_eq!(ack[0].payload["turn"], 2);
    world.finish().await;
});

both_engines!(urgent_steering_aborts_the_call_in_flight, |t: TestStore| async move {
    let world = World::new(t).await;
    let store = world.store().clone();
    let agent = create_agent(&store, definition("gpt-4o-mini")).await;
    world.llm.push(Reply::hang());
    world.llm.rule(When::LastUserContains("stop and say OK".into()), Reply::text("OK"));
    let job = task(&store, agent.id, "write a long essay").await;

    world.llm.wait_for_requests(1).await;
    let mut tx = store.begin().await.unwrap();
    tx.insert_steering(agent.id, Some(job.id), "stop and say OK", "urgent", None).await.unwrap();
    tx.commit().await.unwrap();

    let done = wait_status(&store, job.id, JobStatus::Completed).await;
    assert_eq!(done.result.unwrap()["response"], "OK");
    assert_eq!(world.llm.request_count(), 2);
    let usage = of_type(&events(&store, job.id).await, EventType::LlmUsage).into_iter().cloned().collect::<Vec<_>>();
    assert_eq!(usage.len(), 2);
    assert_eq!(usage[0].payload["aborted"], true);
    world.finish().await;
});
