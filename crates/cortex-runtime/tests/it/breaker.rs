//! The agent breaker (SPEC §5.7) with the real runtime: model calls failing through the real OpenAI client
//! (the fake answers HTTP 500) fail jobs with a counting class, and three such jobs quarantine the agent;
//! an agent whose provider has no credential fails its jobs with `permanent/no_credential`, which never
//! counts. The engine is stepped with [`JobEngine::run_one`] on a manual clock.

use chrono::Duration;
use cortex_core::agent::HealthState;
use cortex_core::event::EventType;
use cortex_core::job::{ErrorClass, JobKind, JobStatus};
use cortex_jobs::JobEngine;
use cortex_store::events::EventScope;
use cortex_testkit::fake_llm::{FakeLlm, Reply, When};
use cortex_testkit::{TestStore, both_engines};
use serde_json::json;

use crate::support::*;

both_engines!(failing_model_calls_trip_the_breaker_and_missing_credentials_do_not, |t: TestStore| async move {
    let store = t.store.clone();
    let llm = FakeLlm::start().await;
    llm.rule(When::Always, Reply::error(500));
    let runtime = runtime_with_env(&t, &store, env_for(&llm)).await;
    let engine = JobEngine::new(store.clone(), engine_config(1)).with_handler(JobKind::Task, runtime.handler());
    store.register_worker(engine.worker_id(), "breaker").await.unwrap();
    let failing = create_agent(&store, definition("gpt-4o-mini")).await;
    let mut unconfigured = definition("mistral-small");
    unconfigured.model_config.provider = "mistral".into();
    let unconfigured = create_agent(&store, unconfigured).await;

    for round in 1..=3 {
        for agent in [failing.id, unconfigured.id] {
            let job = insert_job(
                &store,
                &cortex_store::jobs::NewJob { max_attempts: 1, ..task_job(agent, json!({"prompt": "hi"})) },
            )
            .await;
            assert_eq!(engine.run_one().await.unwrap(), Some(job.id), "round {round}");
            let ended = store.get_job(job.id).await.unwrap();
            let error = ended.error.unwrap();
            if agent == failing.id {
                assert_eq!(ended.status, JobStatus::DeadLetter);
                assert_ne!(error.class, ErrorClass::Permanent, "an HTTP 500 counts: {error:?}");
            } else {
                assert_eq!((ended.status, error.code.as_str()), (JobStatus::Failed, "no_credential"));
            }
            t.clock.advance(Duration::seconds(1));
        }
        let expected = if round < 3 { HealthState::Healthy } else { HealthState::Quarantined };
        assert_eq!(store.get_agent_by_id(failing.id).await.unwrap().health_state, expected, "round {round}");
    }
    let reason = store.get_agent_by_id(failing.id).await.unwrap().quarantine_reason.unwrap();
    assert!(reason.starts_with("agent breaker: 3 consecutive failed jobs"), "{reason}");
    let trips: Vec<_> = store
        .events_after(EventScope::Agent(failing.id), 0, 1000)
        .await
        .unwrap()
        .into_iter()
        // Provider breakers' transitions share the type; the agent breaker's trip carries the count.
        .filter(|event| {
            event.event_type == EventType::BreakerTrip && event.payload.get("consecutive_failures").is_some()
        })
        .collect();
    assert_eq!(trips.len(), 1);
    assert_eq!(
        store.get_agent_by_id(unconfigured.id).await.unwrap().health_state,
        HealthState::Healthy,
        "three `no_credential` failures do not count"
    );

    // No new claims for the quarantined agent.
    insert_job(&store, &task_job(failing.id, json!({"prompt": "again"}))).await;
    assert_eq!(engine.run_one().await.unwrap(), None);
});
