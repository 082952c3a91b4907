//! Retries, dead letters, timeouts, cancellation, checkpoints, recovery and shutdown.

use std::time::Duration;

use cortex_core::clock::Clock;
use cortex_core::event::EventType;
use cortex_core::job::JobStatus;
use cortex_store::events::EventScope;
use cortex_testkit::{TestStore, both_engines};
use uuid::Uuid;

use crate::support::*;

both_engines!(a_job_completes_and_says_so, |t: TestStore| async move {
    let engine = start(&t.store, test_config(2));
    let agent = agent(&t.store, 4).await;
    let job = enqueue(&t.store, agent, "ok", |_| {}).await;
    let done = wait_status(&t.store, job.id, JobStatus::Completed).await;
    assert_eq!(done.result.unwrap()["response"], "done");
    assert_eq!(done.attempt, 1);
    let events = t.store.events_after(EventScope::Job(job.id), 0, 100).await.unwrap();
    assert_eq!(events.last().unwrap().event_type, EventType::JobCompleted);
    engine.shutdown().await;
});

both_engines!(transient_failures_back_off_then_dead_letter, |t: TestStore| async move {
    let engine = start(&t.store, test_config(1));
    let agent = agent(&t.store, 4).await;
    let job = enqueue(&t.store, agent, "transient", |_| {}).await;
    for attempt in 1..=2u32 {
        let retrying =
            wait_for(&t.store, job.id, "retrying", |j| j.status == JobStatus::Retrying && j.attempt == attempt).await;
        let delay = (retrying.run_at - t.clock.now()).num_milliseconds();
        let base = 1000 * 2i64.pow(attempt);
        assert!(
            delay >= base * 3 / 4 && delay <= base * 5 / 4,
            "attempt {attempt}: delay {delay} ms outside ±25% of {base} ms"
        );
        // Not yet due: stays put.
        t.clock.advance(chrono::Duration::milliseconds(delay / 2));
        assert_eq!(t.store.get_job(job.id).await.unwrap().status, JobStatus::Retrying);
        t.clock.advance(chrono::Duration::milliseconds(delay));
    }
    let dead = wait_status(&t.store, job.id, JobStatus::DeadLetter).await;
    assert_eq!(dead.attempt, 3);
    assert_eq!(dead.error.unwrap().code, "rate_limit");
    let events = t.store.events_after(EventScope::Job(job.id), 0, 100).await.unwrap();
    assert!(events.iter().any(|e| e.event_type == EventType::JobFailed && e.payload["status"] == "dead_letter"));
    engine.shutdown().await;
});

both_engines!(permanent_failures_rest_and_unknown_retries_once, |t: TestStore| async move {
    let engine = start(&t.store, test_config(2));
    let agent = agent(&t.store, 4).await;
    let permanent = enqueue(&t.store, agent, "permanent", |_| {}).await;
    let unknown = enqueue(&t.store, agent, "unknown", |j| j.max_attempts = 5).await;
    let failed = wait_status(&t.store, permanent.id, JobStatus::Failed).await;
    assert_eq!(failed.attempt, 1);
    assert!(failed.completed_at.is_some());

    let retrying = wait_status(&t.store, unknown.id, JobStatus::Retrying).await;
    t.clock.set(retrying.run_at);
    let dead = wait_status(&t.store, unknown.id, JobStatus::DeadLetter).await;
    assert_eq!(dead.attempt, 2, "unknown errors are retried once only");
    assert_eq!(t.store.get_job(permanent.id).await.unwrap().status, JobStatus::Failed);
    engine.shutdown().await;
});

both_engines!(an_attempt_that_runs_too_long_times_out, |t: TestStore| async move {
    let engine = start(&t.store, test_config(1));
    let agent = agent(&t.store, 4).await;
    let job = enqueue(&t.store, agent, "hang", |j| j.timeout_seconds = 10).await;
    // Not merely `running` in the database: the clock moves only once the engine runs the attempt.
    engine.handler.wait_started(job.id, 1).await;
    t.clock.advance(chrono::Duration::seconds(11));
    let retrying = wait_status(&t.store, job.id, JobStatus::Retrying).await;
    assert_eq!(retrying.error.as_ref().unwrap().code, "attempt_timeout");
    assert_eq!(retrying.timeout_seconds, 15, "the next attempt gets 1.5× the time");
    engine.shutdown().await;
});

both_engines!(cancel_stops_a_running_job, |t: TestStore| async move {
    let engine = start(&t.store, test_config(1));
    let agent = agent(&t.store, 4).await;
    let job = enqueue(&t.store, agent, "hang", |_| {}).await;
    wait_status(&t.store, job.id, JobStatus::Running).await;
    cortex_jobs::cancel_job(&t.store, job.id).await.unwrap();
    let failed = wait_status(&t.store, job.id, JobStatus::Failed).await;
    assert_eq!(failed.error.unwrap().code, "cancelled");
    assert!(matches!(cortex_jobs::cancel_job(&t.store, job.id).await, Err(cortex_jobs::OpError::InvalidState { .. })));
    // Queued jobs are cancelled directly.
    let queued = enqueue(&t.store, agent, "ok", |j| j.run_at = Some(t.clock.now_plus(3600))).await;
    let cancelled = cortex_jobs::cancel_job(&t.store, queued.id).await.unwrap();
    assert_eq!(cancelled.status, JobStatus::Failed);
    engine.shutdown().await;
});

both_engines!(a_cancel_that_overtakes_the_claim_is_not_lost, |t: TestStore| async move {
    // The request is announced before this worker's supervisor has registered the job (here: before the
    // job is even due). No periodic re-check helps: the manual clock never reaches one.
    let engine = start(&t.store, test_config(1));
    let agent = agent(&t.store, 4).await;
    let warm_up = enqueue(&t.store, agent, "ok", |_| {}).await;
    wait_status(&t.store, warm_up.id, JobStatus::Completed).await; // the engine listens by now
    let job = enqueue(&t.store, agent, "hang", |j| j.run_at = Some(t.clock.now_plus(60))).await;
    let announced = cortex_store::Notification::CancelRequested { job_id: job.id };
    let mut notifications = t.store.subscribe();
    let mut tx = t.store.begin().await.unwrap();
    tx.notify(announced.clone());
    tx.commit().await.unwrap();
    // Delivered in this process (PostgreSQL: through LISTEN) before the job becomes due.
    while notifications.recv().await.unwrap() != announced {}
    t.clock.advance(chrono::Duration::seconds(61));
    let failed = wait_status(&t.store, job.id, JobStatus::Failed).await;
    assert_eq!(failed.error.unwrap().code, "cancelled");
    engine.shutdown().await;
});

both_engines!(a_retried_attempt_resumes_from_its_checkpoint, |t: TestStore| async move {
    let engine = start(&t.store, test_config(1));
    let agent = agent(&t.store, 4).await;
    let job = enqueue(&t.store, agent, "checkpoint", |_| {}).await;
    let retrying = wait_status(&t.store, job.id, JobStatus::Retrying).await;
    t.clock.set(retrying.run_at);
    let done = wait_status(&t.store, job.id, JobStatus::Completed).await;
    assert_eq!(done.result.unwrap()["resumed_from"]["step"], 1);
    let runs = engine.handler.runs.lock().unwrap().get(&job.id).cloned().unwrap();
    assert_eq!(runs[0], ResumeSeen::Fresh);
    assert!(matches!(runs[1], ResumeSeen::Checkpoint(_)));
    engine.shutdown().await;
});

both_engines!(a_corrupt_checkpoint_is_reported_and_not_used, |t: TestStore| async move {
    let engine = start(&t.store, test_config(1));
    let agent = agent(&t.store, 4).await;
    let job = enqueue(&t.store, agent, "checkpoint", |_| {}).await;
    let retrying = wait_status(&t.store, job.id, JobStatus::Retrying).await;
    let id = match t.store.engine_name() {
        "sqlite" => format!("X'{}'", job.id.simple()),
        _ => format!("'{}'", job.id),
    };
    t.execute_raw(format!("UPDATE job SET checkpoint = '{{\"step\":2}}' WHERE id = {id}")).await.unwrap();
    t.clock.set(retrying.run_at);
    // The corrupt checkpoint is ignored: the run starts fresh, checkpoints again and fails again.
    wait_for(&t.store, job.id, "second failure", |j| j.status == JobStatus::Retrying && j.attempt == 2).await;
    let runs = engine.handler.runs.lock().unwrap().get(&job.id).cloned().unwrap();
    assert_eq!(runs[1], ResumeSeen::Corrupt);
    let events = t.store.events_after(EventScope::Job(job.id), 0, 100).await.unwrap();
    assert!(events.iter().any(|e| e.event_type == EventType::Error && e.payload["code"] == "checkpoint_corrupt"));
    engine.shutdown().await;
});

both_engines!(jobs_of_a_dead_worker_are_recovered, |t: TestStore| async move {
    let agent = agent(&t.store, 4).await;
    let job = enqueue(&t.store, agent, "ok", |_| {}).await;
    // A worker claims the job and dies without a trace.
    let ghost = Uuid::now_v7();
    t.store.register_worker(ghost, "ghost").await.unwrap();
    assert_eq!(t.store.claim_next(ghost, false).await.unwrap().unwrap().id, job.id);
    t.clock.advance(chrono::Duration::seconds(21));
    assert_eq!(
        cortex_jobs::reap_once(&t.store, Duration::from_secs(20), cortex_jobs::AutoQuarantine::On).await.unwrap(),
        1
    );
    let recovered = t.store.get_job(job.id).await.unwrap();
    assert_eq!(recovered.status, JobStatus::Retrying);
    assert_eq!(recovered.error.as_ref().unwrap().code, "worker_lost");
    assert!(recovered.run_at - t.clock.now() <= chrono::Duration::seconds(2), "first retry within 2 s");
    // A live engine picks it up as soon as it is due.
    let engine = start(&t.store, test_config(1));
    t.clock.set(recovered.run_at);
    let done = wait_status(&t.store, job.id, JobStatus::Completed).await;
    assert_eq!(done.attempt, 2);
    engine.shutdown().await;
});

both_engines!(shutdown_releases_running_jobs_for_another_worker, |t: TestStore| async move {
    let engine = start(&t.store, test_config(1));
    let agent = agent(&t.store, 4).await;
    let job = enqueue(&t.store, agent, "release", |_| {}).await;
    wait_status(&t.store, job.id, JobStatus::Running).await;
    engine.shutdown().await;
    let released = t.store.get_job(job.id).await.unwrap();
    assert_eq!(released.status, JobStatus::Scheduled);
    assert!(released.resume);
    assert!(released.checkpoint.unwrap().contains("released"));
    assert!(t.store.live_workers().await.unwrap().is_empty(), "the worker deregistered");
});

both_engines!(operators_can_retry_dead_letters, |t: TestStore| async move {
    let engine = start(&t.store, test_config(1));
    let agent = agent(&t.store, 4).await;
    let job = enqueue(&t.store, agent, "transient", |j| j.max_attempts = 1).await;
    wait_status(&t.store, job.id, JobStatus::DeadLetter).await;
    assert!(matches!(cortex_jobs::retry_job(&t.store, Uuid::now_v7()).await, Err(cortex_jobs::OpError::NotFound)));
    let again = cortex_jobs::retry_job(&t.store, job.id).await.unwrap();
    assert_eq!(again.max_attempts, 2);
    let dead =
        wait_for(&t.store, job.id, "second dead letter", |j| j.status == JobStatus::DeadLetter && j.attempt == 2).await;
    assert_eq!(dead.attempt, 2);
    engine.shutdown().await;
});

both_engines!(high_priority_jobs_are_not_starved_by_a_flood, |t: TestStore| async move {
    let agent = agent(&t.store, 4).await;
    for _ in 0..40 {
        enqueue(&t.store, agent, "ok", |_| {}).await;
    }
    let urgent = enqueue(&t.store, agent, "ok", |j| j.priority = 100).await;
    let engine = start(&t.store, test_config(1));
    let urgent_done = wait_status(&t.store, urgent.id, JobStatus::Completed).await;
    let finished_before = t
        .store
        .list_jobs(
            &cortex_store::jobs::JobFilter { status: Some(JobStatus::Completed), ..Default::default() },
            None,
            200,
        )
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|j| j.completed_at.unwrap() < urgent_done.completed_at.unwrap())
        .count();
    assert!(finished_before <= 1, "{finished_before} low-priority jobs ran first");
    engine.shutdown().await;
});

both_engines!(a_job_held_back_by_the_agent_limit_starts_when_a_slot_frees, |t: TestStore| async move {
    // The manual clock never moves here, so no poll interval elapses: only the wake-up sent when the
    // running attempt ends can start the held-back job.
    let engine = start(&t.store, test_config(2));
    let agent = agent(&t.store, 1).await;
    let first = enqueue(&t.store, agent, "hang", |_| {}).await;
    wait_status(&t.store, first.id, JobStatus::Running).await;
    let second = enqueue(&t.store, agent, "ok", |_| {}).await;
    assert_eq!(t.store.get_job(second.id).await.unwrap().status, JobStatus::Scheduled, "the agent is at its limit");
    cortex_jobs::cancel_job(&t.store, first.id).await.unwrap();
    wait_status(&t.store, first.id, JobStatus::Failed).await;
    let done = wait_status(&t.store, second.id, JobStatus::Completed).await;
    assert_eq!(done.attempt, 1);
    engine.shutdown().await;
});

both_engines!(a_worker_claims_all_its_free_slots_in_one_transaction, |t: TestStore| async move {
    let narrow = agent(&t.store, 3).await;
    let wide = agent(&t.store, 10).await;
    let mut jobs = Vec::new();
    for n in 0..6 {
        jobs.push(enqueue(&t.store, if n % 2 == 0 { narrow } else { wide }, "hang", |_| {}).await);
    }
    let engine = start(&t.store, test_config(4));
    for job in &jobs[..4] {
        engine.handler.wait_started(job.id, 1).await;
    }
    // Four slots, first four jobs in order (two of each agent); the rest wait for a slot.
    for job in &jobs[4..] {
        assert_eq!(t.store.get_job(job.id).await.unwrap().status, JobStatus::Scheduled);
    }
    let events = t.store.events_after(EventScope::All, 0, 1_000).await.unwrap();
    let claims: Vec<i64> = events.iter().filter(|e| e.payload["to"] == "running").map(|e| e.seq).collect();
    assert_eq!(claims.len(), 4);
    if t.store.is_postgres() {
        // Event numbers carry their transaction id above bit 20 (ARCHITECTURE.md, "Event order").
        assert!(claims.iter().all(|seq| seq >> 20 == claims[0] >> 20), "one claim transaction: {claims:?}");
    }
    for job in &jobs {
        cortex_jobs::cancel_job(&t.store, job.id).await.unwrap();
    }
    for job in &jobs {
        wait_for(&t.store, job.id, "ended", |j| j.status.is_terminal()).await;
    }
    engine.shutdown().await;
});
