//! Memory in the loop (SPEC §5.4, §9.6): the best memories for the user's message reach the model inside
//! an untrusted "recalled notes" block, unrelated ones stay out, and the recall is counted; an agent with
//! `memory.enabled: false` gets neither the block nor the memory tools, and an extraction queued before
//! the switch went off ends without a model call.

use std::time::Duration;

use cortex_core::agent::MemorySettings;
use cortex_core::approval::ApprovalMode;
use cortex_core::job::{JobKind, JobStatus};
use cortex_core::memory::{MemorySource, MemoryType};
use cortex_jobs::JobEngine;
use cortex_memory::Remember;
use cortex_store::extraction::ExtractionPolicy;
use cortex_testkit::fake_llm::FakeLlm;
use cortex_testkit::fake_llm::Reply;
use cortex_testkit::{TestStore, both_engines};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::support::*;

both_engines!(relevant_memories_reach_the_context_as_untrusted_notes, |t: TestStore| async move {
    let world = World::new(t).await;
    let store = world.store().clone();
    let agent = create_agent(&store, definition("gpt-4o-mini")).await;
    let memory = &world.runtime.memory;
    let coffee = Remember {
        memory_type: MemoryType::Preference,
        ..Remember::new(agent.id, "Ana takes her coffee black, without sugar.", MemorySource::Api)
    };
    let (coffee, _) = memory.remember(coffee).await.unwrap();
    let (report, _) = memory
        .remember(Remember::new(agent.id, "The quarterly report is due on the fifth.", MemorySource::Api))
        .await
        .unwrap();
    world.llm.push(Reply::text("Black, no sugar."));
    let job = task(&store, agent.id, "How does Ana take her coffee?").await;
    wait_status(&store, job.id, JobStatus::Completed).await;

    let system = world.llm.requests()[0].system();
    assert!(system.contains("[Recalled notes"), "{system}");
    assert!(
        system.contains("source=recalled_memory") && system.contains("(preference) Ana takes her coffee black"),
        "{system}"
    );
    assert!(!system.contains("quarterly report"), "unrelated memories stay out: {system}");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let recalled = store.get_memory(agent.id, coffee.id).await.unwrap();
        if recalled.access_count == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "recall never counted: {recalled:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(store.get_memory(agent.id, report.id).await.unwrap().access_count, 0);

    // Another agent's turn sees none of it.
    let other = create_agent(&store, definition("gpt-4o-mini")).await;
    world.llm.push(Reply::text("No idea."));
    let job = task(&store, other.id, "How does Ana take her coffee?").await;
    wait_status(&store, job.id, JobStatus::Completed).await;
    let system = world.llm.requests()[1].system();
    assert!(!system.contains("Recalled notes") && !system.contains("coffee black"), "{system}");
    world.finish().await;
});

both_engines!(an_agent_with_memory_switched_off_recalls_nothing_and_has_no_memory_tools, |t: TestStore| async move {
    let world = World::new(t).await;
    let store = world.store().clone();
    let off = MemorySettings { enabled: false, auto_extract: true };
    let agent =
        create_agent(&store, cortex_store::agents::AgentDefinition { memory: off, ..definition("gpt-4o-mini") }).await;
    allow_tool(&store, agent.id, "memory_store", ApprovalMode::Risk, None).await;
    allow_tool(&store, agent.id, "memory_query", ApprovalMode::Risk, None).await;
    let coffee = Remember::new(agent.id, "Ana takes her coffee black, without sugar.", MemorySource::Api);
    world.runtime.memory.remember(coffee).await.unwrap();
    world.llm.push(Reply::text("I do not know."));
    let job = task(&store, agent.id, "How does Ana take her coffee?").await;
    wait_status(&store, job.id, JobStatus::Completed).await;

    let request = &world.llm.requests()[0];
    let system = request.system();
    assert!(!system.contains("Recalled notes") && !system.contains("coffee black"), "{system}");
    let tools = request.tool_names();
    assert!(!tools.iter().any(|name| name.starts_with("memory_")), "memory tools offered: {tools:?}");
    world.finish().await;
});

both_engines!(an_extraction_queued_before_memory_was_switched_off_skips_the_model, |t: TestStore| async move {
    let store = t.store.clone();
    store.enable_memory_extraction(ExtractionPolicy { every_messages: 1, ..Default::default() });
    let agent = create_agent(&store, definition("gpt-4o-mini")).await;
    let mut tx = store.begin().await.unwrap();
    let session = tx.insert_session(agent.id, None, "api").await.unwrap().id;
    tx.append_message(session, "user", "My sister Ana lives in Lisbon.", None, None).await.unwrap();
    tx.commit().await.unwrap();
    let job_id = store.extraction_state(session).await.unwrap().extraction_job_id.expect("queued, due now");
    let mut off = agent.definition();
    off.memory = MemorySettings { enabled: true, auto_extract: false };
    let mut tx = store.begin().await.unwrap();
    tx.update_agent(agent.id, &off).await.unwrap();
    tx.commit().await.unwrap();

    let llm = FakeLlm::start().await;
    let runtime = runtime_with_env(&t, &store, env_for(&llm)).await;
    let engine = JobEngine::new(store.clone(), engine_config(1))
        .with_handler(JobKind::MemoryExtract, runtime.extraction_handler());
    let stop = CancellationToken::new();
    let signal = stop.clone();
    let done = tokio::spawn(engine.run(async move { signal.cancelled().await }));
    let job = wait_status(&store, job_id, JobStatus::Completed).await;
    stop.cancel();
    done.await.unwrap().unwrap();

    assert_eq!(job.result.as_ref().map(|result| result["skipped"].clone()), Some(json!("memory_switched_off")));
    assert!(llm.requests().is_empty(), "no model call for a switched-off agent");
    let state = store.extraction_state(session).await.unwrap();
    assert_eq!((state.extraction_job_id, state.extracted_through_seq), (None, 0), "slot freed, nothing marked");
});
