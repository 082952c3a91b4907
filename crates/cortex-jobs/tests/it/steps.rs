//! The engine stepped by hand ([`JobEngine::run_one`]): one job claimed, run and recorded in the
//! caller's task, with no background loop — what the per-turn statement budget and the instruction
//! counts of `scripts/instructions.sh` rely on.

use std::sync::Arc;

use cortex_core::event::EventType;
use cortex_core::job::{JobKind, JobStatus};
use cortex_jobs::JobEngine;
use cortex_store::events::EventScope;
use cortex_testkit::{Engine, TestStore, both_engines};

use crate::support::*;

both_engines!(run_one_claims_runs_and_completes_one_job, |t: TestStore| async move {
    let handler = Arc::new(Scripted::default());
    let engine = JobEngine::new(t.store.clone(), test_config(1)).with_handler(JobKind::Task, handler);
    assert_eq!(engine.run_one().await.unwrap(), None, "nothing queued");
    let agent = agent(&t.store, 4).await;
    let first = enqueue(&t.store, agent, "ok", |_| {}).await;
    let second = enqueue(&t.store, agent, "ok", |_| {}).await;
    assert_eq!(engine.run_one().await.unwrap(), Some(first.id));
    let done = t.store.get_job(first.id).await.unwrap();
    assert_eq!((done.status, done.result.unwrap()["response"].clone()), (JobStatus::Completed, "done".into()));
    let events = t.store.events_after(EventScope::Job(first.id), 0, 100).await.unwrap();
    assert_eq!(events.last().unwrap().event_type, EventType::JobCompleted);
    assert_eq!(t.store.get_job(second.id).await.unwrap().status, JobStatus::Scheduled, "one job per step");
    assert_eq!(engine.run_one().await.unwrap(), Some(second.id));
    assert_eq!(engine.run_one().await.unwrap(), None);
});

/// No-op jobs for `scripts/instructions.sh`: `CORTEX_INSTRUCTION_ROUNDS` jobs (default 10), each enqueued
/// in its own transaction then claimed, run and completed by [`JobEngine::run_one`], on SQLite. The
/// script runs two sizes under callgrind and divides the difference by the difference in jobs.
#[tokio::test(flavor = "current_thread")]
#[ignore = "run by scripts/instructions.sh"]
async fn instructions_noop_jobs() {
    let rounds: usize = std::env::var("CORTEX_INSTRUCTION_ROUNDS").ok().and_then(|n| n.parse().ok()).unwrap_or(10);
    let t = TestStore::new(Engine::Sqlite).await;
    let handler = Arc::new(Scripted::default());
    let engine = JobEngine::new(t.store.clone(), test_config(1)).with_handler(JobKind::Task, handler);
    let agent = agent(&t.store, 4).await;
    for _ in 0..rounds {
        let job = enqueue(&t.store, agent, "ok", |_| {}).await;
        assert_eq!(engine.run_one().await.unwrap(), Some(job.id));
    }
}
