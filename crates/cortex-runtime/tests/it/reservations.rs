//! Budget reservations never leak: a model call cut off by a cancel, an attempt timeout or a dead worker
//! gives its reservation back when the attempt ends, so the agent's day line shows nothing reserved and
//! later turns fit.
//!
//! Every agent here has a day limit that holds one call's worst case but not two, so a leaked
//! reservation would refuse the next turn.

use std::time::Duration;

use cortex_core::event::EventType;
use cortex_core::job::JobStatus;
use cortex_store::Store;
use cortex_store::agents::Agent;
use cortex_store::budgets::{BudgetScope, BudgetUsageRow, day_period};
use cortex_store::jobs::Job;
use cortex_testkit::fake_llm::{FakeLlm, Reply};
use cortex_testkit::{TestStore, both_engines};
use uuid::Uuid;

use crate::support::*;

const DAY_LIMIT: u64 = 12_000;

/// An agent whose calls reserve most of its day limit (8 000 output tokens each).
async fn agent_with_room_for_one_call(store: &Store) -> Agent {
    let mut def = definition("gpt-4o-mini");
    def.model_config.max_tokens = Some(8_000);
    def.resource_limits.token_budget_per_day = Some(DAY_LIMIT);
    create_agent(store, def).await
}

/// The agent's line for today.
async fn today(store: &Store, agent_id: Uuid) -> BudgetUsageRow {
    let rows = store.budget_usage(BudgetScope::Agent, agent_id).await.unwrap();
    let period = day_period(store.clock().now());
    rows.into_iter().find(|row| row.period == period).expect("a day line")
}

/// The tokens the job's first call reserved; checks that two such calls do not fit the day.
async fn reserved_by_first_call(store: &Store, job: &Job) -> i64 {
    let requested =
        of_type(&events(store, job.id).await, EventType::LlmRequest)[0].payload["reserved_tokens"].as_i64().unwrap();
    assert!(requested * 2 > DAY_LIMIT as i64 && requested <= DAY_LIMIT as i64, "{requested} reserved per call");
    requested
}

/// The call is in flight: the model got the request and holds it.
async fn call_in_flight(store: &Store, llm: &FakeLlm, job: &Job) {
    llm.wait_for_requests(1).await;
    let reserved = reserved_by_first_call(store, job).await;
    assert_eq!(today(store, job.agent_id).await.tokens_reserved, reserved);
}

async fn assert_released(store: &Store, agent_id: Uuid) {
    let line = today(store, agent_id).await;
    assert_eq!((line.tokens_reserved, line.tokens_spent), (0, 0), "{line:?}");
    assert_eq!(line.usd_reserved, 0.0);
}

both_engines!(cancelling_a_call_in_flight_releases_its_reservation, |t: TestStore| async move {
    let world = World::new(t).await;
    let store = world.store().clone();
    let agent = agent_with_room_for_one_call(&store).await;
    world.llm.push(Reply::hang());
    world.llm.push(Reply::text("the next turn fits"));
    let job = task(&store, agent.id, "take your time").await;
    call_in_flight(&store, &world.llm, &job).await;

    cortex_jobs::cancel_job(&store, job.id).await.unwrap();
    let cancelled = wait_status(&store, job.id, JobStatus::Failed).await;
    assert_eq!(cancelled.error.unwrap().code, "cancelled");
    assert_released(&store, agent.id).await;

    let next = task(&store, agent.id, "and now quickly").await;
    let done = wait_status(&store, next.id, JobStatus::Completed).await;
    assert_eq!(done.result.unwrap()["response"], "the next turn fits");
    world.finish().await;
});

both_engines!(a_timed_out_attempt_releases_its_reservation, |t: TestStore| async move {
    let world = World::new(t).await;
    let store = world.store().clone();
    let agent = agent_with_room_for_one_call(&store).await;
    world.llm.push(Reply::hang());
    world.llm.push(Reply::text("answered on the retry"));
    let job = task(&store, agent.id, "take your time").await;
    call_in_flight(&store, &world.llm, &job).await;

    world.test.clock.advance(chrono::Duration::seconds(i64::from(job.timeout_seconds) + 1));
    let retrying = wait_status(&store, job.id, JobStatus::Retrying).await;
    assert_eq!(retrying.error.unwrap().code, "attempt_timeout");
    assert_released(&store, agent.id).await;

    world.test.clock.advance(chrono::Duration::seconds(10));
    let done = wait_status(&store, job.id, JobStatus::Completed).await;
    assert_eq!(done.result.unwrap()["response"], "answered on the retry");
    world.finish().await;
});

both_engines!(a_dead_workers_reservation_is_released_by_the_reaper, |t: TestStore| async move {
    let llm = FakeLlm::start().await;
    let store = t.store.clone();
    let agent = agent_with_room_for_one_call(&store).await;
    llm.push(Reply::hang());
    llm.push(Reply::text("answered by the survivor"));
    let job = task(&store, agent.id, "take your time").await;
    let doomed = Doomed::start(&t, env_for(&llm));
    call_in_flight(&store, &llm, &job).await;
    doomed.kill();

    t.clock.advance(chrono::Duration::seconds(25));
    assert_eq!(
        cortex_jobs::reap_once(&store, Duration::from_secs(20), cortex_jobs::AutoQuarantine::On).await.unwrap(),
        1
    );
    let lost = store.get_job(job.id).await.unwrap();
    assert_eq!((lost.status, lost.error.unwrap().code.as_str()), (JobStatus::Retrying, "worker_lost"));
    assert_released(&store, agent.id).await;

    t.clock.advance(chrono::Duration::seconds(3));
    let survivor = runtime_with_env(&t, &store, env_for(&llm)).await;
    let engine = Engine::start(&store, &survivor, 2);
    let done = wait_status(&store, job.id, JobStatus::Completed).await;
    assert_eq!(done.result.unwrap()["response"], "answered by the survivor");
    engine.shutdown().await;
});
