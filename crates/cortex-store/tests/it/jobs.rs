//! The queue: claim order, exclusivity under concurrency, limits, session ordering, fencing.

use std::collections::HashSet;

use cortex_core::job::{JobKind, JobStatus};
use cortex_store::StoreError;
use cortex_store::events::Event;
use cortex_store::jobs::{AttemptEnd, IdempotencyKey, Job, JobFilter, NewJob, Suspend};
use cortex_testkit::{TestStore, both_engines};
use serde_json::json;
use uuid::Uuid;

use crate::support::{agent_with_limit, enqueue, task};

async fn complete(t: &TestStore, job_id: Uuid, worker: Uuid) {
    let mut tx = t.store.begin().await.unwrap();
    tx.end_attempt(job_id, worker, &AttemptEnd::Completed { result: json!({"response": "ok"}) }).await.unwrap();
    tx.commit().await.unwrap();
}

both_engines!(claims_by_priority_then_age_and_respects_run_at, |t: TestStore| async move {
    let agent = agent_with_limit(&t.store, "prio", 10).await;
    let low = enqueue(&t.store, task(agent)).await;
    let high = enqueue(&t.store, cortex_store::jobs::NewJob { priority: 50, ..task(agent) }).await;
    let later = enqueue(
        &t.store,
        cortex_store::jobs::NewJob { priority: 90, run_at: Some(t.clock.now_plus(60)), ..task(agent) },
    )
    .await;
    let worker = Uuid::now_v7();

    assert_eq!(t.store.claim_next(worker, false).await.unwrap().unwrap().id, high.id);
    let claimed = t.store.claim_next(worker, false).await.unwrap().unwrap();
    assert_eq!(claimed.id, low.id);
    assert_eq!(claimed.attempt, 1);
    assert!(t.store.claim_next(worker, false).await.unwrap().is_none(), "delayed job is not due");
    t.clock.advance(chrono::Duration::seconds(61));
    assert_eq!(t.store.claim_next(worker, false).await.unwrap().unwrap().id, later.id);
});

both_engines!(concurrent_claimers_never_share_a_job, |t: TestStore| async move {
    let agent = agent_with_limit(&t.store, "busy", 100).await;
    let total = 120;
    for _ in 0..total {
        enqueue(&t.store, task(agent)).await;
    }
    // On PostgreSQL every claimer gets its own store (its own pool), like separate processes.
    let mut handles = Vec::new();
    for _ in 0..6 {
        let store = if t.store.is_postgres() { t.reopen().await } else { t.store.clone() };
        handles.push(tokio::spawn(async move {
            let worker = Uuid::now_v7();
            let mut mine = Vec::new();
            while let Some(job) = store.claim_next(worker, false).await.unwrap() {
                let mut tx = store.begin().await.unwrap();
                tx.end_attempt(job.id, worker, &AttemptEnd::Completed { result: json!({}) }).await.unwrap();
                tx.commit().await.unwrap();
                mine.push(job.id);
            }
            mine
        }));
    }
    let mut seen = HashSet::new();
    let mut count = 0;
    for handle in handles {
        for id in handle.await.unwrap() {
            count += 1;
            assert!(seen.insert(id), "job {id} claimed twice");
        }
    }
    assert_eq!(count, total);
    let done = t
        .store
        .list_jobs(&JobFilter { status: Some(JobStatus::Completed), ..Default::default() }, None, 200)
        .await
        .unwrap();
    assert_eq!(done.items.len(), total);
});

both_engines!(agent_concurrency_limit_holds, |t: TestStore| async move {
    let agent = agent_with_limit(&t.store, "narrow", 2).await;
    for _ in 0..4 {
        enqueue(&t.store, task(agent)).await;
    }
    let worker = Uuid::now_v7();
    let first = t.store.claim_next(worker, false).await.unwrap().unwrap();
    assert!(t.store.claim_next(worker, false).await.unwrap().is_some());
    assert!(t.store.claim_next(worker, false).await.unwrap().is_none(), "limit of 2 reached");
    complete(&t, first.id, worker).await;
    assert!(t.store.claim_next(worker, false).await.unwrap().is_some(), "a slot freed up");
});

both_engines!(jobs_of_a_session_run_one_at_a_time_in_order, |t: TestStore| async move {
    let agent = agent_with_limit(&t.store, "talker", 4).await;
    let mut tx = t.store.begin().await.unwrap();
    let session = tx.insert_session(agent, None, "rest").await.unwrap();
    tx.commit().await.unwrap();
    let in_session = || cortex_store::jobs::NewJob { session_id: Some(session.id), ..task(agent) };
    let first = enqueue(&t.store, in_session()).await;
    let second = enqueue(&t.store, in_session()).await;
    let third = enqueue(&t.store, in_session()).await;
    assert_eq!(first.status, JobStatus::Scheduled);
    assert_eq!(second.status, JobStatus::Pending);
    assert_eq!(third.status, JobStatus::Pending);

    let worker = Uuid::now_v7();
    assert_eq!(t.store.claim_next(worker, false).await.unwrap().unwrap().id, first.id);
    assert!(t.store.claim_next(worker, false).await.unwrap().is_none(), "session busy");
    complete(&t, first.id, worker).await;
    assert_eq!(t.store.get_job(second.id).await.unwrap().status, JobStatus::Scheduled);
    assert_eq!(t.store.get_job(third.id).await.unwrap().status, JobStatus::Pending);
    assert_eq!(t.store.claim_next(worker, false).await.unwrap().unwrap().id, second.id);
});

fn keyed(agent: Uuid, key: &str, request: serde_json::Value) -> cortex_store::jobs::NewJob {
    let key = IdempotencyKey::for_request(key, &request);
    cortex_store::jobs::NewJob { idempotency_key: Some(key), ..task(agent) }
}

async fn insert(
    t: &TestStore,
    new: &cortex_store::jobs::NewJob,
) -> Result<(cortex_store::jobs::Job, bool), StoreError> {
    let mut tx = t.store.begin().await.unwrap();
    let inserted = tx.insert_job(new).await?;
    tx.commit().await.unwrap();
    Ok(inserted)
}

both_engines!(idempotency_key_returns_the_first_job_of_the_same_request, |t: TestStore| async move {
    let agent = agent_with_limit(&t.store, "idem", 4).await;
    let new = keyed(agent, "req-1", json!({"prompt": "do it", "priority": 1}));
    let first = enqueue(&t.store, new.clone()).await;
    let reordered = keyed(agent, "req-1", json!({"priority": 1, "prompt": "do it"}));
    let (again, created) = insert(&t, &reordered).await.unwrap();
    assert!(!created);
    assert_eq!(again.id, first.id);

    let different = keyed(agent, "req-1", json!({"prompt": "do something else", "priority": 1}));
    let refused = insert(&t, &different).await.unwrap_err();
    assert!(matches!(&refused, StoreError::IdempotencyConflict { key } if key == "req-1"), "{refused:?}");
    let other_agent = agent_with_limit(&t.store, "idem-other", 4).await;
    assert!(insert(&t, &keyed(other_agent, "req-1", json!({}))).await.unwrap().1, "keys are per agent");
});

both_engines!(a_key_stored_before_fingerprints_still_guards_the_job_kind, |t: TestStore| async move {
    let agent = agent_with_limit(&t.store, "legacy", 4).await;
    let first = enqueue(&t.store, keyed(agent, "old-key", json!({"prompt": "do it"}))).await;
    t.execute_raw("UPDATE job SET idempotency_hash = NULL".into()).await.unwrap();
    let (same_kind, created) = insert(&t, &keyed(agent, "old-key", json!({"anything": 1}))).await.unwrap();
    assert_eq!((same_kind.id, created), (first.id, false));
    let chat = cortex_store::jobs::NewJob { kind: JobKind::Chat, ..keyed(agent, "old-key", json!({})) };
    assert!(matches!(insert(&t, &chat).await, Err(StoreError::IdempotencyConflict { .. })));
});

both_engines!(concurrent_requests_with_one_key_create_one_job, |t: TestStore| async move {
    let agent = agent_with_limit(&t.store, "race-key", 4).await;
    let new = keyed(agent, "race", json!({"prompt": "do it"}));
    let mut first = t.store.begin().await.unwrap();
    let (created_first, created) = first.insert_job(&new).await.unwrap();
    assert!(created);
    // The second request starts while the first is uncommitted; it waits and then finds the first job.
    let second = tokio::spawn({
        let (store, new) = (t.store.clone(), new.clone());
        async move {
            let mut tx = store.begin().await.unwrap();
            let inserted = tx.insert_job(&new).await.unwrap();
            tx.commit().await.unwrap();
            inserted
        }
    });
    if t.store.is_postgres() {
        // Commit only once the second insert waits on the first one's row (the ON CONFLICT path); SQLite
        // serialises whole transactions, so there the second one simply starts after the commit.
        let waiting = "SELECT CAST(COUNT(*) AS TEXT) FROM pg_stat_activity \
                       WHERE wait_event_type = 'Lock' AND datname = current_database()";
        let guard = tokio::time::Instant::now() + std::time::Duration::from_secs(180);
        while t.query_text(waiting.into()).await.unwrap()[0] == "0" {
            assert!(tokio::time::Instant::now() < guard, "the second insert never waited for the first");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    first.commit().await.unwrap();
    let (found, created) = second.await.unwrap();
    assert_eq!((found.id, created), (created_first.id, false));
});

both_engines!(a_job_joins_the_callers_transaction, |t: TestStore| async move {
    let agent = agent_with_limit(&t.store, "atomic", 4).await;
    let mut tx = t.store.begin().await.unwrap();
    let (job, _) = tx.insert_job(&task(agent)).await.unwrap();
    drop(tx); // rolled back
    assert!(matches!(t.store.get_job(job.id).await, Err(StoreError::NotFound { .. })));
    assert!(t.store.claim_next(Uuid::now_v7(), false).await.unwrap().is_none());
});

both_engines!(a_fenced_worker_cannot_write, |t: TestStore| async move {
    let agent = agent_with_limit(&t.store, "fenced", 4).await;
    let job = enqueue(&t.store, task(agent)).await;
    let worker = Uuid::now_v7();
    t.store.claim_next(worker, false).await.unwrap().unwrap();
    let mut tx = t.store.begin().await.unwrap();
    let err = tx.end_attempt(job.id, Uuid::now_v7(), &AttemptEnd::Completed { result: json!({}) }).await.unwrap_err();
    assert!(matches!(err, StoreError::StaleState { .. }));
    drop(tx);

    // Released at shutdown: the next claim resumes the same attempt.
    let mut tx = t.store.begin().await.unwrap();
    tx.suspend(job.id, worker, Suspend::Release, None).await.unwrap();
    tx.commit().await.unwrap();
    let again = t.store.claim_next(Uuid::now_v7(), false).await.unwrap().unwrap();
    assert_eq!(again.attempt, 1, "a released attempt is not counted twice");
});

both_engines!(transitions_append_ordered_events, |t: TestStore| async move {
    let agent = agent_with_limit(&t.store, "evented", 4).await;
    let job = enqueue(&t.store, task(agent)).await;
    let worker = Uuid::now_v7();
    t.store.claim_next(worker, false).await.unwrap().unwrap();
    complete(&t, job.id, worker).await;
    let events = t.store.events_after(cortex_store::events::EventScope::Job(job.id), 0, 100).await.unwrap();
    let moves: Vec<String> = events.iter().map(|e| e.payload["to"].as_str().unwrap().to_owned()).collect();
    assert_eq!(moves, ["scheduled", "running", "completed"]);
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
});

both_engines!(queue_statistics_are_refreshed_after_many_changes, |t: TestStore| async move {
    let agent = agent_with_limit(&t.store, "stats", 4).await;
    let mut tx = t.store.begin().await.unwrap();
    for _ in 0..1100 {
        tx.insert_job(&task(agent)).await.unwrap();
    }
    tx.commit().await.unwrap();
    if t.store.is_postgres() {
        // The statistics collector reports changes asynchronously (a backend flushes its counts when idle,
        // at most once a second, later when the server is busy); wait for it to see them, with a guard of
        // minutes, not seconds, on a shared CI machine.
        let guard = tokio::time::Instant::now() + std::time::Duration::from_secs(180);
        while !t.store.refresh_job_statistics().await.unwrap() {
            assert!(tokio::time::Instant::now() < guard, "1 100 inserted rows never triggered an ANALYZE");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(!t.store.refresh_job_statistics().await.unwrap(), "nothing changed since");
    } else {
        assert!(!t.store.refresh_job_statistics().await.unwrap(), "SQLite needs no statistics for the claim");
    }
});

both_engines!(bulk_insert_creates_every_job_in_order_with_its_event, |t: TestStore| async move {
    let agent = agent_with_limit(&t.store, "bulk", 4).await;
    let keyed = cortex_store::jobs::NewJob {
        idempotency_key: Some(IdempotencyKey::for_request("bulk-key", &json!({"n": 1}))),
        ..task(agent)
    };
    // 2,500 plain jobs (one statement on PostgreSQL, three on SQLite); a keyed job and a repeat of it go the
    // one-by-one way.
    let mut jobs: Vec<_> = (0..2_500).map(|n| cortex_store::jobs::NewJob { priority: n % 7, ..task(agent) }).collect();
    jobs.insert(10, keyed.clone());
    jobs.push(keyed);
    let mut tx = t.store.begin().await.unwrap();
    let created = tx.insert_jobs(&jobs).await.unwrap();
    tx.commit().await.unwrap();

    assert_eq!(created.len(), jobs.len());
    for (new, (job, _)) in jobs.iter().zip(&created) {
        assert_eq!(job.priority, new.priority);
        assert_eq!(job.status, JobStatus::Scheduled);
    }
    assert!(created[10].1, "the keyed job is created");
    assert!(!created.last().unwrap().1, "its repeat returns it");
    assert_eq!(created.last().unwrap().0.id, created[10].0.id);
    let ids: HashSet<Uuid> = created.iter().map(|(job, _)| job.id).collect();
    assert_eq!(ids.len(), jobs.len() - 1);
    let counts = t.store.count_jobs_by_status().await.unwrap();
    let scheduled = counts.iter().find(|(status, _)| *status == JobStatus::Scheduled).map(|(_, n)| *n);
    assert_eq!(scheduled, Some((jobs.len() - 1) as i64));
    let events = t.store.events_after(cortex_store::events::EventScope::All, 0, 10_000).await.unwrap();
    let announced: HashSet<Uuid> = events.iter().filter_map(|e| e.job_id).collect();
    assert_eq!(announced, ids, "every created job has its job.state event");
});

/// Jobs of every shape a caller can ask for, the same for any agent: priorities, payloads, limits, due
/// times, parents, creators and kinds vary; every 50th has an idempotency key (those go one by one).
fn varied_jobs(agent: Uuid, parent: Uuid, clock: &cortex_core::clock::ManualClock) -> Vec<NewJob> {
    let kinds = [JobKind::Task, JobKind::Scheduled, JobKind::Heartbeat, JobKind::Replay];
    (0..300_i32)
        .map(|n| {
            let payload = json!({"prompt": format!("job {n} — ✓"), "n": n, "nested": {"list": [1, "two", null, 2.5]}});
            let idempotency_key =
                (n % 50 == 0).then(|| IdempotencyKey::for_request(format!("key-{n}"), &json!({"n": n})));
            NewJob {
                kind: kinds[n as usize % kinds.len()],
                priority: n % 201 - 100,
                payload,
                max_attempts: 1 + n.unsigned_abs() % 100,
                timeout_seconds: 1 + n.unsigned_abs() * 13 % 3600,
                run_at: (n % 3 == 0).then(|| clock.now_plus(i64::from(n))),
                parent_job_id: (n % 4 == 0).then_some(parent),
                delegation_depth: n % 4,
                idempotency_key,
                created_by: (n % 5 != 0).then(|| format!("creator-{n}")),
                ..task(agent)
            }
        })
        .collect()
}

/// Every stored field of a job except its id and agent, for comparing jobs of two agents.
fn stored_fields(job: &Job) -> String {
    format!("{:?}", Job { id: Uuid::nil(), agent_id: Uuid::nil(), ..job.clone() })
}

both_engines!(bulk_jobs_are_stored_like_single_ones, |t: TestStore| async move {
    let one_by_one = agent_with_limit(&t.store, "one-by-one", 4).await;
    let in_bulk = agent_with_limit(&t.store, "in-bulk", 4).await;
    let parent = enqueue(&t.store, task(one_by_one)).await.id;
    let singles = varied_jobs(one_by_one, parent, &t.clock);
    let bulk = varied_jobs(in_bulk, parent, &t.clock);
    let mut single_jobs = Vec::new();
    for new in &singles {
        let mut tx = t.store.begin().await.unwrap();
        single_jobs.push(tx.insert_job(new).await.unwrap());
        tx.commit().await.unwrap();
    }
    let mut tx = t.store.begin().await.unwrap();
    let bulk_jobs = tx.insert_jobs(&bulk).await.unwrap();
    tx.commit().await.unwrap();
    // A repeat of the whole batch: every keyed job comes back, the others are new.
    let mut tx = t.store.begin().await.unwrap();
    let repeated = tx.insert_jobs(&bulk).await.unwrap();
    tx.commit().await.unwrap();

    assert_eq!(bulk_jobs.len(), singles.len());
    for (n, ((single, _), (job, created))) in single_jobs.iter().zip(&bulk_jobs).enumerate() {
        assert!(created, "job {n} is created");
        assert_eq!(job.agent_id, in_bulk);
        assert_eq!(stored_fields(job), stored_fields(single), "job {n} as returned");
        let stored = t.store.get_job(job.id).await.unwrap();
        assert_eq!(stored_fields(&stored), stored_fields(single), "job {n} as stored");
        let (again, created_again) = &repeated[n];
        assert_eq!(*created_again, bulk[n].idempotency_key.is_none(), "job {n}: only keyed jobs are repeats");
        if !created_again {
            assert_eq!(again.id, job.id, "job {n}: its key returns it");
        }
    }

    // What a stream reader of each agent sees: one `job.state` event per created job, the same for both.
    let seen = |agent: Uuid| {
        let store = t.store.clone();
        async move {
            let read = store.read_events(cortex_store::events::EventScope::Agent(agent), 0, 10_000).await.unwrap();
            assert!(!read.pending, "nothing waits behind the watermark once every writer committed");
            read.events
        }
    };
    let single_events = seen(one_by_one).await;
    let bulk_events = seen(in_bulk).await;
    let describe = |events: &[Event], jobs: &[(Job, bool)]| {
        let index: std::collections::HashMap<Uuid, usize> =
            jobs.iter().enumerate().map(|(n, (job, _))| (job.id, n)).collect();
        let mut described: Vec<String> = events
            .iter()
            .filter(|event| event.job_id != Some(parent))
            .map(|event| {
                let job = event.job_id.and_then(|id| index.get(&id)).copied();
                format!(
                    "{job:?} {} {} {:?} {:?}",
                    event.event_type.as_str(),
                    event.payload,
                    event.actor,
                    event.session_id
                )
            })
            .collect();
        described.sort();
        described
    };
    let repeats_created = repeated.iter().filter(|(_, created)| *created).count();
    assert_eq!(bulk_events.len(), bulk_jobs.len() + repeats_created, "one event per created job");
    assert_eq!(describe(&single_events, &single_jobs), describe(&bulk_events[..single_jobs.len()], &bulk_jobs));
    // The plain jobs' events follow the order they were given in.
    let plain_order: Vec<Uuid> =
        bulk_jobs.iter().filter(|(job, _)| job.idempotency_key.is_none()).map(|(job, _)| job.id).collect();
    let event_order: Vec<Uuid> = bulk_events[..single_jobs.len()]
        .iter()
        .filter_map(|event| event.job_id)
        .filter(|id| plain_order.contains(id))
        .collect();
    assert_eq!(event_order, plain_order);
});

both_engines!(a_bulk_load_wakes_readers_once_per_agent, |t: TestStore| async move {
    let loaded = agent_with_limit(&t.store, "loaded", 4).await;
    let marker = agent_with_limit(&t.store, "marker", 4).await;
    let mut notifications = t.store.subscribe();
    if t.store.is_postgres() {
        // `LISTEN` is in place once the listener says so; nothing sent before would arrive.
        while notifications.recv().await.unwrap() != cortex_store::Notification::Resync {}
    }
    let jobs: Vec<_> = (0..1_500).map(|_| task(loaded)).collect();
    let mut tx = t.store.begin().await.unwrap();
    tx.insert_jobs(&jobs).await.unwrap();
    tx.commit().await.unwrap();
    // A later transaction of another agent: its notification arrives after every one of the bulk load.
    enqueue(&t.store, task(marker)).await;

    let mut woken = Vec::new();
    loop {
        match notifications.recv().await.unwrap() {
            cortex_store::Notification::Event { agent_id, .. } if agent_id == marker => break,
            event @ cortex_store::Notification::Event { .. } => woken.push(event),
            _ => {}
        }
    }
    let events = t.store.events_after(cortex_store::events::EventScope::Agent(loaded), 0, 10_000).await.unwrap();
    assert_eq!(events.len(), jobs.len(), "every job has its job.state event");
    let last = events.iter().map(|event| event.seq).max().unwrap();
    assert_eq!(
        woken,
        vec![cortex_store::Notification::Event { seq: last, agent_id: loaded, job_id: None, state_changed: false }],
        "one wake-up for the agent's readers, none per job"
    );
});

both_engines!(a_batch_claim_keeps_order_agent_limits_and_sessions, |t: TestStore| async move {
    let narrow = agent_with_limit(&t.store, "narrow-batch", 2).await;
    let wide = agent_with_limit(&t.store, "wide-batch", 10).await;
    let mut tx = t.store.begin().await.unwrap();
    let session = tx.insert_session(wide, None, "rest").await.unwrap();
    tx.commit().await.unwrap();
    let narrow_jobs: Vec<_> = enqueue_each(4, || enqueue(&t.store, task(narrow))).await;
    let urgent = enqueue(&t.store, cortex_store::jobs::NewJob { priority: 9, ..task(wide) }).await;
    let first_turn = enqueue(&t.store, cortex_store::jobs::NewJob { session_id: Some(session.id), ..task(wide) }).await;
    let second_turn =
        enqueue(&t.store, cortex_store::jobs::NewJob { session_id: Some(session.id), ..task(wide) }).await;
    let plain = enqueue(&t.store, task(wide)).await;
    let not_due =
        enqueue(&t.store, cortex_store::jobs::NewJob { run_at: Some(t.clock.now_plus(60)), ..task(wide) }).await;
    let worker = Uuid::now_v7();

    let claimed: Vec<Uuid> = t.store.claim_batch(worker, 16, false).await.unwrap().iter().map(|job| job.id).collect();
    // Priority first, then age; two of the narrow agent's four (its limit), one turn of the session.
    assert_eq!(claimed, vec![urgent.id, narrow_jobs[0].id, narrow_jobs[1].id, first_turn.id, plain.id]);
    assert!(t.store.claim_batch(worker, 16, false).await.unwrap().is_empty(), "limits and the session hold");
    assert!(!claimed.contains(&second_turn.id) && !claimed.contains(&not_due.id));
    complete(&t, narrow_jobs[0].id, worker).await;
    let next: Vec<Uuid> = t.store.claim_batch(worker, 16, false).await.unwrap().iter().map(|job| job.id).collect();
    assert_eq!(next, vec![narrow_jobs[2].id], "one slot of the narrow agent freed up");
    let events = t.store.events_after(cortex_store::events::EventScope::All, 0, 1_000).await.unwrap();
    let claims = events.iter().filter(|e| e.payload["to"] == "running").count();
    assert_eq!(claims, 6, "every claim has its job.state event");
});

/// Enqueues `n` jobs one after the other (ids and `run_at` in creation order).
async fn enqueue_each<F, Fut>(n: usize, mut make: F) -> Vec<cortex_store::jobs::Job>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = cortex_store::jobs::Job>,
{
    let mut jobs = Vec::with_capacity(n);
    for _ in 0..n {
        jobs.push(make().await);
    }
    jobs
}

both_engines!(concurrent_batch_claimers_never_exceed_agent_limits_or_share_jobs, |t: TestStore| async move {
    let mut agents = Vec::new();
    for n in 0..4 {
        let agent = agent_with_limit(&t.store, &format!("limited-{n}"), 3).await;
        let jobs: Vec<_> = (0..30).map(|_| task(agent)).collect();
        let mut tx = t.store.begin().await.unwrap();
        tx.insert_jobs(&jobs).await.unwrap();
        tx.commit().await.unwrap();
        agents.push(agent);
    }
    // Claimers that never complete anything: together they may hold at most 3 jobs of each agent.
    let mut handles = Vec::new();
    for _ in 0..6 {
        let store = if t.store.is_postgres() { t.reopen().await } else { t.store.clone() };
        handles.push(tokio::spawn(async move {
            let worker = Uuid::now_v7();
            let mut mine = Vec::new();
            loop {
                let batch = store.claim_batch(worker, 5, false).await.unwrap();
                if batch.is_empty() {
                    return mine;
                }
                mine.extend(batch);
            }
        }));
    }
    let mut seen = HashSet::new();
    let mut per_agent: std::collections::HashMap<Uuid, usize> = std::collections::HashMap::new();
    for handle in handles {
        for job in handle.await.unwrap() {
            assert!(seen.insert(job.id), "job {} claimed twice", job.id);
            *per_agent.entry(job.agent_id).or_default() += 1;
        }
    }
    for agent in &agents {
        assert_eq!(per_agent.get(agent), Some(&3), "agent {agent} runs exactly its limit: {per_agent:?}");
    }

    // With completions, six batch claimers drain all 120 jobs and none is claimed twice.
    let mut tx = t.store.begin().await.unwrap();
    for job_id in &seen {
        let job = tx.lock_job(*job_id).await.unwrap();
        let worker = job.claimed_by.unwrap();
        tx.end_attempt(*job_id, worker, &AttemptEnd::Completed { result: json!({}) }).await.unwrap();
    }
    tx.commit().await.unwrap();
    let mut handles = Vec::new();
    for _ in 0..6 {
        let store = if t.store.is_postgres() { t.reopen().await } else { t.store.clone() };
        handles.push(tokio::spawn(async move {
            let worker = Uuid::now_v7();
            let mut mine = Vec::new();
            loop {
                let batch = store.claim_batch(worker, 5, false).await.unwrap();
                if batch.is_empty() {
                    return mine;
                }
                let mut tx = store.begin().await.unwrap();
                for job in &batch {
                    tx.end_attempt(job.id, worker, &AttemptEnd::Completed { result: json!({}) }).await.unwrap();
                }
                tx.commit().await.unwrap();
                mine.extend(batch.into_iter().map(|job| job.id));
            }
        }));
    }
    for handle in handles {
        for id in handle.await.unwrap() {
            assert!(seen.insert(id), "job {id} claimed twice");
        }
    }
    assert_eq!(seen.len(), 120);
});

/// PostgreSQL's claim holds an advisory lock on each candidate's agent until its transaction ends (taken
/// in the statement that picks the candidates), so another claimer's count of the agent's running jobs
/// waits for this claim's commit; agents without candidates stay free.
#[tokio::test]
async fn postgres_claim_locks_its_candidates_agents_until_it_ends() {
    use sqlx::Connection;
    let Some(t) = TestStore::postgres_unless_skipped().await else { return };
    let busy = agent_with_limit(&t.store, "busy", 2).await;
    let quiet = agent_with_limit(&t.store, "quiet", 2).await;
    enqueue(&t.store, task(busy)).await;
    let cortex_store::DatabaseConfig::Postgres { url, .. } = &t.config else { unreachable!("a PostgreSQL store") };
    let mut other = sqlx::PgConnection::connect(url).await.unwrap();
    let mut free = async |agent: Uuid| -> bool {
        // Outside a transaction block the lock ends with the statement.
        sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtextextended($1::uuid::text, 7))")
            .bind(agent)
            .fetch_one(&mut other)
            .await
            .unwrap()
    };
    let mut tx = t.store.begin().await.unwrap();
    let claimed = tx.claim_jobs(Uuid::now_v7(), 4, false).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(!free(busy).await, "the candidate's agent is locked while the claim's transaction is open");
    assert!(free(quiet).await, "an agent without candidates is not locked");
    tx.commit().await.unwrap();
    assert!(free(busy).await, "the lock ends with the transaction");
}

both_engines!(a_batch_of_completions_ends_every_attempt_or_none, |t: TestStore| async move {
    use cortex_store::budgets::{BudgetLine, BudgetScope, TOTAL_PERIOD};
    use cortex_store::events::EventScope;

    let agent = agent_with_limit(&t.store, "batch-done", 10).await;
    let jobs = enqueue_each(4, || enqueue(&t.store, task(agent))).await;
    let worker = Uuid::now_v7();
    assert_eq!(t.store.claim_batch(worker, 4, false).await.unwrap().len(), 4);
    // An open reservation of one attempt is released with its completion, as by `end_attempt`.
    let line = BudgetLine {
        scope: BudgetScope::Agent,
        scope_id: agent,
        period: TOTAL_PERIOD.into(),
        token_limit: Some(1_000),
        usd_limit: None,
    };
    t.store.reserve_budget(jobs[1].id, &[line], 300, 0.0).await.unwrap().unwrap();

    // One job of the batch was taken from this worker meanwhile: nothing of the batch is written.
    let mut tx = t.store.begin().await.unwrap();
    tx.suspend(jobs[3].id, worker, Suspend::Release, None).await.unwrap();
    tx.commit().await.unwrap();
    let done: Vec<(Uuid, serde_json::Value)> =
        jobs.iter().enumerate().map(|(n, job)| (job.id, json!({"response": n}))).collect();
    let mut tx = t.store.begin().await.unwrap();
    let stale = tx.complete_attempts(worker, &done).await;
    assert!(matches!(stale, Err(StoreError::StaleState { .. })), "{stale:?}");
    drop(tx);
    for job in &jobs[..3] {
        assert_eq!(t.store.get_job(job.id).await.unwrap().status, JobStatus::Running);
    }
    assert_eq!(t.store.budget_usage(BudgetScope::Agent, agent).await.unwrap()[0].tokens_reserved, 300);

    // The others end together, in the order given, each with its own result and event.
    let mut tx = t.store.begin().await.unwrap();
    let ended = tx.complete_attempts(worker, &done[..3]).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        ended.iter().map(|job| job.id).collect::<Vec<_>>(),
        jobs[..3].iter().map(|job| job.id).collect::<Vec<_>>()
    );
    for (n, job) in jobs[..3].iter().enumerate() {
        let stored = t.store.get_job(job.id).await.unwrap();
        assert_eq!(
            (stored.status, stored.result, stored.claimed_by),
            (JobStatus::Completed, Some(json!({"response": n})), None)
        );
        let events = t.store.events_after(EventScope::Job(job.id), 0, 100).await.unwrap();
        let moves: Vec<&str> = events.iter().filter_map(|e| e.payload["to"].as_str()).collect();
        assert_eq!(moves, ["scheduled", "running", "completed"]);
    }
    assert_eq!(t.store.budget_usage(BudgetScope::Agent, agent).await.unwrap()[0].tokens_reserved, 0);
    assert_eq!(t.store.get_job(jobs[3].id).await.unwrap().status, JobStatus::Scheduled);
});
