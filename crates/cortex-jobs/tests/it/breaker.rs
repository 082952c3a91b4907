//! The automatic agent breaker (SPEC §5.7) on both engines, stepped with [`JobEngine::run_one`] and a
//! manual clock: three final failures of a counting class quarantine the agent (reason, `breaker.trip` and
//! `agent.health` events, audit entry, operator notice, no more claims); `permanent` failures are skipped;
//! a success and a release start the count afresh; `CORTEX_DISABLE_QUARANTINE` turns the trip off but not
//! a manual quarantine; failures committed concurrently trip it exactly once.

use std::sync::Arc;

use chrono::Duration;
use cortex_core::agent::{ApprovalTarget, HealthState};
use cortex_core::clock::Clock as _;
use cortex_core::event::EventType;
use cortex_core::job::{ErrorClass, JobError, JobKind, JobStatus};
use cortex_jobs::{AutoQuarantine, EngineConfig, JobEngine};
use cortex_store::Store;
use cortex_store::audit::AuditFilter;
use cortex_store::channels::ChannelWrite;
use cortex_store::events::EventScope;
use cortex_store::jobs::AttemptEnd;
use cortex_testkit::{TestStore, both_engines};
use uuid::Uuid;

use crate::support::*;

fn stepped(store: &Store, auto_quarantine: AutoQuarantine) -> JobEngine {
    let config = EngineConfig { auto_quarantine, ..test_config(1) };
    JobEngine::new(store.clone(), config).with_handler(JobKind::Task, Arc::new(Scripted::default()))
}

/// Enqueues one single-attempt job with `prompt` (see [`Scripted`]), runs it to its end and moves the
/// clock on, so every job ends at its own time.
async fn run(t: &TestStore, engine: &JobEngine, agent: Uuid, prompt: &str) -> JobStatus {
    let job = enqueue(&t.store, agent, prompt, |job| job.max_attempts = 1).await;
    assert_eq!(engine.run_one().await.unwrap(), Some(job.id), "{prompt} job claimed");
    t.clock.advance(Duration::seconds(1));
    t.store.get_job(job.id).await.unwrap().status
}

async fn health(store: &Store, agent: Uuid) -> HealthState {
    store.get_agent_by_id(agent).await.unwrap().health_state
}

async fn events_of(store: &Store, agent: Uuid, kind: EventType) -> Vec<serde_json::Value> {
    let events = store.events_after(EventScope::Agent(agent), 0, 1000).await.unwrap();
    events.into_iter().filter(|event| event.event_type == kind).map(|event| event.payload).collect()
}

async fn trips_audited(store: &Store) -> usize {
    let filter = AuditFilter { action: Some("agent.breaker_trip".into()), ..AuditFilter::default() };
    store.list_audit(&filter, None, 100).await.unwrap().items.len()
}

both_engines!(three_counting_failures_quarantine_the_agent, |t: TestStore| async move {
    let engine = stepped(&t.store, AutoQuarantine::On);
    let agent = agent(&t.store, 4).await;
    let channel = cortex_core::new_id();
    let mut tx = t.store.begin().await.unwrap();
    tx.insert_channel(&ChannelWrite {
        id: channel,
        channel_type: "telegram".into(),
        name: "ops-bot".into(),
        config: serde_json::json!({}),
        secrets_enc: None,
        secret_keys: vec![],
        source: "api".into(),
        enabled: false,
        inbound_policy: "open".into(),
        default_agent_id: None,
        bot_identity: None,
    })
    .await
    .unwrap();
    tx.set_approval_notify(agent, &[ApprovalTarget { channel_id: channel, chat_id: "ops".into() }]).await.unwrap();
    tx.commit().await.unwrap();

    // A failed attempt that is retried is not a failed job.
    let retried = enqueue(&t.store, agent, "transient", |job| job.max_attempts = 2).await;
    assert_eq!(engine.run_one().await.unwrap(), Some(retried.id));
    assert_eq!(t.store.get_job(retried.id).await.unwrap().status, JobStatus::Retrying);
    assert_eq!(run(&t, &engine, agent, "transient").await, JobStatus::DeadLetter);
    assert_eq!(run(&t, &engine, agent, "unknown").await, JobStatus::DeadLetter);
    assert_eq!(health(&t.store, agent).await, HealthState::Healthy, "two failed jobs do not trip");
    assert!(events_of(&t.store, agent, EventType::BreakerTrip).await.is_empty());

    assert_eq!(run(&t, &engine, agent, "transient").await, JobStatus::DeadLetter);
    let row = t.store.get_agent_by_id(agent).await.unwrap();
    assert_eq!(row.health_state, HealthState::Quarantined, "the third failed job trips the breaker");
    let reason = row.quarantine_reason.unwrap();
    assert!(reason.contains("3 consecutive failed jobs") && reason.contains("transient/rate_limit"), "{reason}");
    let trips = events_of(&t.store, agent, EventType::BreakerTrip).await;
    assert_eq!(trips.len(), 1, "{trips:?}");
    assert_eq!((trips[0]["consecutive_failures"].as_u64(), trips[0]["threshold"].as_u64()), (Some(3), Some(3)));
    let changes = events_of(&t.store, agent, EventType::AgentHealth).await;
    assert_eq!(changes.len(), 1, "the live page hears of it: {changes:?}");
    assert_eq!((changes[0]["to"].as_str(), changes[0]["action"].as_str()), (Some("quarantined"), Some("breaker.trip")));
    assert_eq!(trips_audited(&t.store).await, 1);
    let notices = t.store.list_outbox(channel, None, None, 10).await.unwrap().items;
    assert_eq!(notices.len(), 1, "one notice to the approval_notify chat");
    assert_eq!(notices[0].channel_id, Some(channel));
    assert_eq!(notices[0].payload["kind"], "notice");
    assert!(notices[0].payload["text"].as_str().unwrap().contains("Agent quarantined"), "{:?}", notices[0].payload);

    // Quarantined: queued work waits, including the retry that came due.
    t.clock.advance(Duration::minutes(10));
    let mut tx = t.store.begin().await.unwrap();
    tx.promote_due_retries().await.unwrap();
    tx.commit().await.unwrap();
    let waiting = enqueue(&t.store, agent, "ok", |_| {}).await;
    assert_eq!(engine.run_one().await.unwrap(), None, "no claims while quarantined");
    assert_eq!(t.store.get_job(waiting.id).await.unwrap().status, JobStatus::Scheduled);
});

both_engines!(permanent_failures_neither_count_nor_reset, |t: TestStore| async move {
    let engine = stepped(&t.store, AutoQuarantine::On);
    let agent = agent(&t.store, 4).await;
    for prompt in ["transient", "permanent", "permanent", "permanent", "unknown"] {
        assert_ne!(run(&t, &engine, agent, prompt).await, JobStatus::Completed);
    }
    assert_eq!(health(&t.store, agent).await, HealthState::Healthy, "configuration errors do not count");
    assert_eq!(t.store.agent_failure_streak(agent, None, 3).await.unwrap(), 2);
    run(&t, &engine, agent, "transient").await;
    assert_eq!(health(&t.store, agent).await, HealthState::Quarantined, "nor do they break the run");
});

both_engines!(a_success_starts_the_count_afresh, |t: TestStore| async move {
    let engine = stepped(&t.store, AutoQuarantine::On);
    let agent = agent(&t.store, 4).await;
    for prompt in ["transient", "transient", "ok", "transient", "transient"] {
        run(&t, &engine, agent, prompt).await;
    }
    assert_eq!(health(&t.store, agent).await, HealthState::Healthy, "the success reset the count");
    assert_eq!(t.store.agent_failure_streak(agent, None, 3).await.unwrap(), 2);
    run(&t, &engine, agent, "unknown").await;
    assert_eq!(health(&t.store, agent).await, HealthState::Quarantined);
});

both_engines!(a_release_starts_a_new_window, |t: TestStore| async move {
    let engine = stepped(&t.store, AutoQuarantine::On);
    let agent = agent(&t.store, 4).await;
    for _ in 0..3 {
        run(&t, &engine, agent, "transient").await;
    }
    assert_eq!(health(&t.store, agent).await, HealthState::Quarantined);
    // What `POST /agents/{id}/release` does.
    let mut tx = t.store.begin().await.unwrap();
    tx.set_agent_health(agent, HealthState::Healthy, None, Some(t.clock.now())).await.unwrap();
    tx.commit().await.unwrap();
    t.clock.advance(Duration::seconds(1));
    assert_eq!(t.store.agent_failure_streak(agent, Some(t.clock.now()), 3).await.unwrap(), 0);

    run(&t, &engine, agent, "transient").await;
    run(&t, &engine, agent, "transient").await;
    assert_eq!(health(&t.store, agent).await, HealthState::Healthy, "failures before the release do not count");
    run(&t, &engine, agent, "transient").await;
    assert_eq!(health(&t.store, agent).await, HealthState::Quarantined, "three after it do");
    assert_eq!(events_of(&t.store, agent, EventType::BreakerTrip).await.len(), 2);
});

both_engines!(disable_quarantine_turns_off_the_trip_only, |t: TestStore| async move {
    let engine = stepped(&t.store, AutoQuarantine::Off);
    let agent = agent(&t.store, 4).await;
    for _ in 0..4 {
        run(&t, &engine, agent, "transient").await;
    }
    assert_eq!(health(&t.store, agent).await, HealthState::Healthy, "no automatic quarantine");
    assert!(events_of(&t.store, agent, EventType::BreakerTrip).await.is_empty());
    assert_eq!(trips_audited(&t.store).await, 0);

    // A manual quarantine still holds the agent's jobs.
    let mut tx = t.store.begin().await.unwrap();
    tx.set_agent_health(agent, HealthState::Quarantined, Some("by hand"), None).await.unwrap();
    tx.commit().await.unwrap();
    enqueue(&t.store, agent, "ok", |_| {}).await;
    assert_eq!(engine.run_one().await.unwrap(), None, "quarantined jobs are not claimed");
});

both_engines!(concurrent_failures_trip_once, |t: TestStore| async move {
    let agent = agent(&t.store, 8).await;
    let worker = Uuid::now_v7();
    t.store.register_worker(worker, "test").await.unwrap();
    for _ in 0..6 {
        enqueue(&t.store, agent, "transient", |job| job.max_attempts = 1).await;
    }
    let claimed = t.store.claim_batch(worker, 6, false).await.unwrap();
    assert_eq!(claimed.len(), 6);
    // Six workers' worth of final failures, each in its own transaction, all at once.
    let failures = claimed.into_iter().map(|job| {
        let store = t.store.clone();
        tokio::spawn(async move {
            let error = JobError::new(ErrorClass::Transient, "server_error", "HTTP 500");
            let mut tx = store.begin().await.unwrap();
            let failed = tx.end_attempt(job.id, worker, &AttemptEnd::Failed { error: error.clone() }).await.unwrap();
            cortex_jobs::settle_failure(&mut tx, failed, &error, AutoQuarantine::On).await.unwrap();
            tx.commit().await.unwrap();
        })
    });
    for failure in failures.collect::<Vec<_>>() {
        failure.await.unwrap();
    }
    assert_eq!(health(&t.store, agent).await, HealthState::Quarantined);
    assert_eq!(events_of(&t.store, agent, EventType::BreakerTrip).await.len(), 1, "tripped exactly once");
    assert_eq!(events_of(&t.store, agent, EventType::AgentHealth).await.len(), 1);
    assert_eq!(trips_audited(&t.store).await, 1);
});
