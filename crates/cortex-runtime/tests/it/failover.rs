//! Provider errors inside the loop: in-call retry, failover to declared fallbacks only, refused credentials.

use cortex_core::breaker::BreakerState;
use cortex_core::event::{Actor, EventType};
use cortex_core::job::{ErrorClass, JobStatus};
use cortex_testkit::fake_llm::{Reply, When};
use cortex_testkit::{TestStore, both_engines};

use serde_json::json;

use crate::support::*;

both_engines!(rate_limited_call_is_retried_in_call_and_succeeds, |t: TestStore| async move {
    let world = World::new(t).await;
    let store = world.store().clone();
    let agent = create_agent(&store, definition("gpt-4o-mini")).await;
    world.llm.push(Reply::error(429).header("retry-after", "0"));
    world.llm.push(Reply::text("after the wait"));
    let job = task(&store, agent.id, "hi").await;

    let done = wait_status(&store, job.id, JobStatus::Completed).await;
    assert_eq!(done.result.unwrap()["response"], "after the wait");
    assert_eq!(done.attempt, 1, "retried inside the call, not as a new attempt");
    assert_eq!(world.llm.request_count(), 2);
    world.finish().await;
});

both_engines!(primary_errors_fail_over_to_the_declared_fallback_only, |t: TestStore| async move {
    let world = World::new(t).await;
    let store = world.store().clone();
    let mut def = definition("primary-model");
    def.model_config.fallbacks = vec![fallback("openai", "fallback-model")];
    let agent = create_agent(&store, def).await;
    world.llm.rule(When::Model("primary-model".into()), Reply::error(500));
    world.llm.rule(When::Model("fallback-model".into()), Reply::text("from the fallback"));
    let job = task(&store, agent.id, "hi").await;

    let done = wait_status(&store, job.id, JobStatus::Completed).await;
    assert_eq!(done.result.unwrap()["response"], "from the fallback");
    let models: Vec<String> = world.llm.requests().iter().map(|request| request.model().to_owned()).collect();
    assert_eq!(models.iter().filter(|model| *model == "primary-model").count(), 4, "1 call + 3 in-call retries");
    assert_eq!(models.last().map(String::as_str), Some("fallback-model"));
    assert!(models.iter().all(|model| model == "primary-model" || model == "fallback-model"), "{models:?}");
    let usage = of_type(&events(&store, job.id).await, EventType::LlmUsage)[0].payload.clone();
    assert_eq!(usage["model"], "fallback-model");

    // When every declared candidate fails the job fails; nothing undeclared is ever tried.
    world.llm.rule(When::Always, Reply::error(500));
    let mut def = definition("primary-model");
    def.model_config.fallbacks = vec![fallback("openai", "also-broken")];
    let agent = create_agent(&store, def).await;
    let before = world.llm.request_count();
    let job = task(&store, agent.id, "hi").await;
    let failed = wait_for(&store, job.id, "a failed attempt", |job| job.error.is_some()).await;
    assert!(failed.error.unwrap().retryable, "provider outages are retried as a job");
    let tried: Vec<String> = world.llm.requests()[before..].iter().map(|r| r.model().to_owned()).collect();
    assert!(tried.iter().all(|model| model == "primary-model" || model == "also-broken"), "{tried:?}");
    world.finish().await;
});

both_engines!(refused_credential_is_marked_and_the_fallback_serves, |t: TestStore| async move {
    let world = World::new(t).await;
    let store = world.store().clone();
    let mut def = definition("gpt-4o-mini");
    def.model_config.fallbacks = vec![fallback("anthropic", "claude-haiku-4-5")];
    let agent = create_agent(&store, def).await;
    world.llm.rule(When::Model("gpt-4o-mini".into()), Reply::error(401));
    world.llm.rule(When::Model("claude-haiku-4-5".into()), Reply::text("anthropic answered"));
    let job = task(&store, agent.id, "hi").await;

    let done = wait_status(&store, job.id, JobStatus::Completed).await;
    assert_eq!(done.result.unwrap()["response"], "anthropic answered");
    let credential = store.credential("llm", "openai").await.unwrap().unwrap();
    assert_eq!(credential.status, "error");
    assert_eq!(credential.error_count, 1);
    assert!(credential.last_error.unwrap().contains("auth_failed"));
    assert_eq!(store.credential("llm", "anthropic").await.unwrap().unwrap().status, "active");
    let events = events(&store, job.id).await;
    let notice: Vec<_> = of_type(&events, EventType::Error)
        .into_iter()
        .filter(|event| event.payload["code"] == "provider_auth_failed")
        .collect();
    assert_eq!(notice.len(), 1);
    assert_eq!(notice[0].actor, Actor::System);
    assert_eq!(notice[0].payload["notice"], "operator");
    world.finish().await;
});

both_engines!(missing_credential_fails_permanently, |t: TestStore| async move {
    let world = World::new(t).await;
    let store = world.store().clone();
    let mut def = definition("llama3");
    def.model_config.provider = "groq-local".into();
    let agent = create_agent(&store, def).await;
    let job = task(&store, agent.id, "hi").await;
    let failed = wait_status(&store, job.id, JobStatus::Failed).await;
    let error = failed.error.unwrap();
    assert_eq!((error.class, error.code.as_str()), (ErrorClass::Permanent, "no_credential"));
    assert_eq!(world.llm.request_count(), 0);
    world.finish().await;
});

both_engines!(a_failing_primary_trips_its_breaker_and_recovers, |t: TestStore| async move {
    let world = World::new(t).await;
    let store = world.store().clone();
    let mut def = definition("primary-model");
    def.model_config.fallbacks = vec![fallback("openai", "fallback-model")];
    let agent = create_agent(&store, def).await;
    world.llm.rule(When::Model("primary-model".into()), Reply::error(503));
    world.llm.rule(When::Model("fallback-model".into()), Reply::text("fallback"));
    let state = |runtime: &cortex_runtime::Runtime| {
        runtime
            .provider_breakers()
            .into_iter()
            .find(|(_, model, _)| model == "primary-model")
            .map(|(_, _, state)| state)
    };

    // 4 failures (a call and 3 retries) stay under the threshold of 5; the 5th, in the next job, trips it.
    let first = task(&store, agent.id, "one").await;
    wait_status(&store, first.id, JobStatus::Completed).await;
    assert_eq!(state(&world.runtime), Some(BreakerState::Closed));
    let second = task(&store, agent.id, "two").await;
    assert_eq!(wait_status(&store, second.id, JobStatus::Completed).await.result.unwrap()["response"], "fallback");
    assert_eq!(state(&world.runtime), Some(BreakerState::Open));
    let trips =
        of_type(&events(&store, second.id).await, EventType::BreakerTrip).into_iter().cloned().collect::<Vec<_>>();
    assert_eq!((trips[0].payload["from"].clone(), trips[0].payload["to"].clone()), (json!("closed"), json!("open")));

    // While open the primary is skipped without a request.
    let before = world.llm.requests().iter().filter(|r| r.model() == "primary-model").count();
    let third = task(&store, agent.id, "three").await;
    wait_status(&store, third.id, JobStatus::Completed).await;
    assert_eq!(world.llm.requests().iter().filter(|r| r.model() == "primary-model").count(), before);

    // After 30 s one probe is let through; three successes close the breaker.
    world.test.clock.advance(chrono::Duration::seconds(31));
    for n in 0..3 {
        world.llm.push_for_model("primary-model", Reply::text("primary is back"));
        let job = task(&store, agent.id, &format!("probe {n}")).await;
        let done = wait_status(&store, job.id, JobStatus::Completed).await;
        assert_eq!(done.result.unwrap()["response"], "primary is back");
    }
    assert_eq!(state(&world.runtime), Some(BreakerState::Closed));
    world.finish().await;
});
