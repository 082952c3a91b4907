//! Budget reservations: atomic across lines, never overspent under concurrency, settled to actual usage,
//! released when an attempt ends without settling.

use cortex_core::clock::Clock;
use cortex_core::job::JobError;
use cortex_store::StoreError;
use cortex_store::budgets::{BudgetLine, BudgetScope, LimitKind, TOTAL_PERIOD, day_period};
use cortex_store::jobs::{AttemptEnd, Suspend};
use cortex_testkit::{TestStore, both_engines};
use uuid::Uuid;

use crate::support::{agent_with_limit, enqueue, task};

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
