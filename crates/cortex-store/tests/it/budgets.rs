//! Budget reservations: atomic across lines, never overspent under concurrency, settled to actual usage,
//! released when an attempt ends without settling; a line without a limit spread over shards that sum
//! exactly and do not make the calls of different jobs wait for each other.

use cortex_core::clock::Clock;
use cortex_core::job::JobError;
use cortex_store::StoreError;
use cortex_store::budgets::{BudgetLine, BudgetScope, LimitKind, TOTAL_PERIOD, day_period};
use cortex_store::jobs::{AttemptEnd, Suspend};
use cortex_testkit::{TestStore, both_engines};
use uuid::Uuid;

use crate::support::{agent_with_limit, enqueue, job_on_shard, task};

fn line(scope: BudgetScope, scope_id: Uuid, token_limit: Option<i64>, usd_limit: Option<f64>) -> BudgetLine {
    BudgetLine { scope, scope_id, period: TOTAL_PERIOD.into(), token_limit, usd_limit }
}

both_engines!(a_refused_line_reserves_nothing_anywhere, |t: TestStore| async move {
    let agent = agent_with_limit(&t.store, "budget", 4).await;
    let job = enqueue(&t.store, task(agent)).await;
    let lines = [
        line(BudgetScope::Job, job.id, Some(1_000), None),
        BudgetLine { period: day_period(t.clock.now()), ..line(BudgetScope::Agent, agent, None, Some(0.5)) },
    ];
    let refused = t.store.reserve_budget(job.id, &lines, 400, 0.6).await.unwrap().unwrap_err();
    assert_eq!(refused.kind, LimitKind::Usd);
    assert_eq!(refused.line.scope, BudgetScope::Agent);
    let job_rows = t.store.budget_usage(BudgetScope::Job, job.id).await.unwrap();
    assert!(job_rows.iter().all(|row| row.tokens_reserved == 0), "{job_rows:?}");

    let reservation = t.store.reserve_budget(job.id, &lines, 400, 0.3).await.unwrap().unwrap();
    let refused = t.store.reserve_budget(job.id, &lines, 700, 0.0).await.unwrap().unwrap_err();
    assert_eq!((refused.kind, refused.reserved, refused.requested), (LimitKind::Tokens, 400.0, 700.0));

    let mut tx = t.store.begin().await.unwrap();
    let settled = tx.settle_budget(reservation, 250, 0.2).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(settled.len(), 2);
    let job_line = settled.iter().find(|s| s.line.scope == BudgetScope::Job).unwrap();
    assert_eq!((job_line.tokens_before, job_line.tokens_after), (0, 250));
    let rows = t.store.budget_usage(BudgetScope::Agent, agent).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].tokens_spent, rows[0].tokens_reserved), (250, 0));
    assert!((rows[0].usd_spent - 0.2).abs() < 1e-9 && rows[0].usd_reserved.abs() < 1e-9);

    let mut tx = t.store.begin().await.unwrap();
    assert!(tx.settle_budget(reservation, 250, 0.2).await.unwrap().is_empty(), "settling twice is a no-op");
});

both_engines!(concurrent_reservations_never_exceed_the_limit, |t: TestStore| async move {
    let agent = agent_with_limit(&t.store, "race", 4).await;
    let job = enqueue(&t.store, task(agent)).await;
    let limit = 1_000;
    let mut handles = Vec::new();
    for _ in 0..30 {
        let store = t.store.clone();
        let lines = vec![line(BudgetScope::Agent, agent, Some(limit), None)];
        handles
            .push(tokio::spawn(async move { store.reserve_budget(job.id, &lines, 100, 0.0).await.unwrap().is_ok() }));
    }
    let mut granted = 0;
    for handle in handles {
        granted += usize::from(handle.await.unwrap());
    }
    assert_eq!(granted, 10);
    let rows = t.store.budget_usage(BudgetScope::Agent, agent).await.unwrap();
    assert_eq!(rows[0].tokens_reserved, limit);
});

both_engines!(an_attempt_that_ends_unsettled_releases_its_reservations, |t: TestStore| async move {
    let agent = agent_with_limit(&t.store, "orphan", 4).await;
    let job = enqueue(&t.store, task(agent)).await;
    let worker = Uuid::now_v7();
    t.store.register_worker(worker, "budget-test").await.unwrap();
    let claimed = t.store.claim_next(worker, false).await.unwrap().unwrap();
    assert_eq!(claimed.id, job.id);
    let lines = [
        line(BudgetScope::Job, job.id, Some(10_000), None),
        BudgetLine { period: day_period(t.clock.now()), ..line(BudgetScope::Agent, agent, Some(500), None) },
    ];
    let reservation = t.store.reserve_budget(job.id, &lines, 300, 0.01).await.unwrap().unwrap();

    // A stale end (another worker) changes nothing, the reservation included.
    let mut tx = t.store.begin().await.unwrap();
    let stale = tx.end_attempt(job.id, Uuid::now_v7(), &AttemptEnd::Failed { error: JobError::cancelled() }).await;
    assert!(matches!(stale, Err(StoreError::StaleState { .. })), "{stale:?}");
    drop(tx);
    let day = t.store.budget_usage(BudgetScope::Agent, agent).await.unwrap();
    assert_eq!(day[0].tokens_reserved, 300);

    let mut tx = t.store.begin().await.unwrap();
    tx.end_attempt(job.id, worker, &AttemptEnd::Failed { error: JobError::cancelled() }).await.unwrap();
    tx.commit().await.unwrap();
    for scope in [(BudgetScope::Agent, agent), (BudgetScope::Job, job.id)] {
        let rows = t.store.budget_usage(scope.0, scope.1).await.unwrap();
        assert_eq!((rows[0].tokens_spent, rows[0].tokens_reserved), (0, 0), "{scope:?}: {rows:?}");
        assert!(rows[0].usd_reserved.abs() < 1e-12);
    }
    let mut tx = t.store.begin().await.unwrap();
    assert!(tx.settle_budget(reservation, 300, 0.01).await.unwrap().is_empty(), "a late settlement finds nothing");
    drop(tx);
    let fits = t.store.reserve_budget(job.id, &lines, 500, 0.0).await.unwrap();
    assert!(fits.is_ok(), "the whole day limit is free again: {fits:?}");
});

both_engines!(a_suspended_attempt_releases_its_reservations, |t: TestStore| async move {
    let agent = agent_with_limit(&t.store, "release", 4).await;
    let job = enqueue(&t.store, task(agent)).await;
    let worker = Uuid::now_v7();
    t.store.register_worker(worker, "budget-test").await.unwrap();
    t.store.claim_next(worker, false).await.unwrap().unwrap();
    let lines = [line(BudgetScope::Job, job.id, Some(10_000), None)];
    t.store.reserve_budget(job.id, &lines, 300, 0.0).await.unwrap().unwrap();
    let mut tx = t.store.begin().await.unwrap();
    tx.suspend(job.id, worker, Suspend::Release, None).await.unwrap();
    tx.commit().await.unwrap();
    let rows = t.store.budget_usage(BudgetScope::Job, job.id).await.unwrap();
    assert_eq!((rows[0].tokens_spent, rows[0].tokens_reserved), (0, 0));
});

both_engines!(a_limit_counts_spend_recorded_on_every_shard, |t: TestStore| async move {
    // Three jobs record spend while the agent's day has no limit: three shards of the line.
    let agent = agent_with_limit(&t.store, "shards", 4).await;
    let day = |limit| BudgetLine { period: day_period(t.clock.now()), ..line(BudgetScope::Agent, agent, limit, None) };
    let jobs = [job_on_shard(1), job_on_shard(2), job_on_shard(3)];
    for job in &jobs {
        let reservation = t.store.reserve_budget(*job, &[day(None)], 500, 0.0).await.unwrap().unwrap();
        let mut tx = t.store.begin().await.unwrap();
        let settled = tx.settle_budget(reservation, 300, 0.0).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(settled[0].tokens_after - settled[0].tokens_before, 300, "{settled:?}");
    }
    let usage = t.store.budget_usage(BudgetScope::Agent, agent).await.unwrap();
    assert_eq!((usage.len(), usage[0].tokens_spent, usage[0].tokens_reserved), (1, 900, 0), "{usage:?}");

    // Then a limit of 1,000 is configured: it sees all 900, wherever they were recorded.
    let refused = t.store.reserve_budget(jobs[0], &[day(Some(1_000))], 200, 0.0).await.unwrap().unwrap_err();
    assert_eq!((refused.spent, refused.reserved, refused.requested), (900.0, 0.0, 200.0));
    let granted = t.store.reserve_budget(jobs[1], &[day(Some(1_000))], 100, 0.0).await.unwrap().unwrap();
    let refused = t.store.reserve_budget(jobs[2], &[day(Some(1_000))], 1, 0.0).await.unwrap().unwrap_err();
    assert_eq!((refused.spent, refused.reserved), (900.0, 100.0));
    let mut tx = t.store.begin().await.unwrap();
    let settled = tx.settle_budget(granted, 60, 0.0).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!((settled[0].tokens_before, settled[0].tokens_after), (900, 960), "the line's total: {settled:?}");
});

both_engines!(unlimited_spend_from_many_jobs_sums_exactly, |t: TestStore| async move {
    let agent = agent_with_limit(&t.store, "sum", 4).await;
    let mut jobs = Vec::new();
    for _ in 0..24 {
        jobs.push(enqueue(&t.store, task(agent)).await.id);
    }
    let day = BudgetLine { period: day_period(t.clock.now()), ..line(BudgetScope::Agent, agent, None, None) };
    let mut calls = Vec::new();
    for job in jobs {
        let (store, day) = (t.store.clone(), day.clone());
        calls.push(tokio::spawn(async move {
            let lines = [line(BudgetScope::Job, job, Some(1_000), None), day];
            let reservation = store.reserve_budget(job, &lines, 400, 0.004).await.unwrap().unwrap();
            let mut tx = store.begin().await.unwrap();
            tx.settle_budget(reservation, 7, 0.001).await.unwrap();
            tx.commit().await.unwrap();
        }));
    }
    for call in calls {
        call.await.unwrap();
    }
    let usage = t.store.budget_usage(BudgetScope::Agent, agent).await.unwrap();
    assert_eq!((usage.len(), usage[0].tokens_spent, usage[0].tokens_reserved), (1, 24 * 7, 0), "{usage:?}");
    assert!((usage[0].usd_spent - 0.024).abs() < 1e-9 && usage[0].usd_reserved.abs() < 1e-9, "{usage:?}");
});

/// PostgreSQL holds a row lock to commit; two jobs' calls on a line without a limit use different rows, so
/// one call's open transaction does not hold up the other's. (SQLite has one writer at a time anyway.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_of_two_jobs_on_an_unlimited_line_do_not_wait_for_each_other() {
    let Some(t) = TestStore::postgres_unless_skipped().await else { return };
    let agent = agent_with_limit(&t.store, "apart", 4).await;
    let jobs = [job_on_shard(1), job_on_shard(2)];
    let day = BudgetLine { period: day_period(t.clock.now()), ..line(BudgetScope::Agent, agent, None, None) };
    // Both rows exist first, so neither reservation waits on the other's insert either.
    for job in &jobs {
        t.store.reserve_budget(*job, std::slice::from_ref(&day), 1, 0.0).await.unwrap().unwrap();
    }
    let mut open = t.store.begin().await.unwrap();
    open.reserve_budget(jobs[0], std::slice::from_ref(&day), 10, 0.0).await.unwrap().unwrap();
    // With one row per line this would wait for `open` forever; the timeout only turns that into a failure.
    let other = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        t.store.reserve_budget(jobs[1], std::slice::from_ref(&day), 10, 0.0),
    )
    .await
    .expect("the second job's reservation waited for the first one's transaction");
    assert!(other.unwrap().is_ok());
    open.commit().await.unwrap();
    let usage = t.store.budget_usage(BudgetScope::Agent, agent).await.unwrap();
    assert_eq!(usage[0].tokens_reserved, 22);
}
