//! The failover client over real HTTP fakes: in-call retries, breakers tripping, skipping, half-open
//! probing and closing on a manual clock, auth and permanent failures, and the no-silent-downgrade rule.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cortex_core::agent::ModelRef;
use cortex_core::breaker::{BreakerState, BreakerTransition};
use cortex_core::clock::ManualClock;
use cortex_llm::{
    ApiStyle, FailoverClient, FailoverObserver, LlmError, LlmProvider, NoopObserver, RetryPolicy, Served, StreamEvent,
};
use serde_json::json;

use crate::fake::{End, FakeServer, Reply};
use crate::{open_text_stream, request, text_json, text_stream};

/// Records everything the failover client reports.
#[derive(Default)]
struct Recorder {
    transitions: Mutex<Vec<(String, BreakerState, BreakerState)>>,
    failures: Mutex<Vec<(String, &'static str)>>,
}

impl FailoverObserver for Recorder {
    fn breaker_transition(&self, provider: &str, _model: &str, t: BreakerTransition) {
        self.transitions.lock().unwrap().push((provider.to_owned(), t.from, t.to));
    }

    fn attempt_failed(&self, provider: &str, _model: &str, err: &LlmError) {
        self.failures.lock().unwrap().push((provider.to_owned(), err.code()));
    }
}

impl Recorder {
    fn transitions(&self) -> Vec<(String, BreakerState, BreakerState)> {
        self.transitions.lock().unwrap().clone()
    }

    fn failures(&self) -> Vec<(String, &'static str)> {
        self.failures.lock().unwrap().clone()
    }
}

/// Retries without meaningful waiting, so tests never depend on wall-clock speed.
fn fast_policy() -> RetryPolicy {
    RetryPolicy {
        max_in_call_retries: 3,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        jitter: 0.25,
    }
}

struct Setup {
    client: FailoverClient,
    clock: ManualClock,
    servers: HashMap<&'static str, FakeServer>,
}

/// One OpenAI-style fake per name, registered as a provider of that name.
async fn setup(names: &[&'static str]) -> Setup {
    let mut servers = HashMap::new();
    let mut providers: HashMap<String, Arc<dyn LlmProvider>> = HashMap::new();
    for name in names {
        let server = FakeServer::start().await;
        let config = cortex_llm::ProviderConfig::new(*name, ApiStyle::OpenAi, server.base_url.clone());
        providers.insert((*name).to_owned(), cortex_llm::build_provider(config, crate::http()));
        servers.insert(*name, server);
    }
    let clock = ManualClock::new(chrono::Utc::now());
    let client = FailoverClient::new(providers, Arc::new(clock.clone()), fast_policy());
    Setup { client, clock, servers }
}

fn candidates(names: &[&str]) -> Vec<ModelRef> {
    names.iter().map(|name| ModelRef { provider: (*name).into(), model: format!("{name}-model") }).collect()
}

fn ok(text: &str) -> Reply {
    Reply::json(200, text_json(ApiStyle::OpenAi, text))
}

fn server_error() -> Reply {
    Reply::json(500, json!({"error": {"message": "boom", "type": "server_error"}}))
}

async fn serve(setup: &Setup, names: &[&str], observer: &dyn FailoverObserver) -> Result<Served, LlmError> {
    let mut sink = |_| {};
    setup.client.complete(&candidates(names), request(false), &mut sink, observer).await
}

#[tokio::test]
async fn failing_primary_trips_its_breaker_then_recovers_through_half_open() {
    let setup = setup(&["primary", "secondary"]).await;
    let (primary, secondary) = (&setup.servers["primary"], &setup.servers["secondary"]);
    primary.set_fallback(server_error());
    secondary.set_fallback(ok("from secondary"));
    let recorder = Recorder::default();
    let both = ["primary", "secondary"];

    // First turn: 1 call + 3 in-call retries on the primary, then the fallback serves.
    let served = serve(&setup, &both, &recorder).await.unwrap();
    assert_eq!(
        (served.candidate_index, served.provider.as_str(), served.model.as_str()),
        (1, "secondary", "secondary-model")
    );
    assert_eq!(served.completion.text, "from secondary");
    assert_eq!(served.failed_attempts, 4);
    assert_eq!(primary.request_count(), 4);
    assert_eq!(secondary.requests()[0].body["model"], "secondary-model", "the model is set per candidate");
    assert!(recorder.transitions().is_empty(), "four failures do not trip it");

    // Second turn: the fifth countable failure opens the breaker, so no more retries on the primary.
    let served = serve(&setup, &both, &recorder).await.unwrap();
    assert_eq!(served.candidate_index, 1);
    assert_eq!(primary.request_count(), 5);
    assert_eq!(recorder.transitions(), vec![("primary".into(), BreakerState::Closed, BreakerState::Open)]);

    // Third turn: the open breaker is skipped without a request.
    let served = serve(&setup, &both, &recorder).await.unwrap();
    assert_eq!((served.candidate_index, served.failed_attempts), (1, 0));
    assert_eq!(primary.request_count(), 5);
    assert!(setup.client.breaker_states().contains(&("primary".into(), "primary-model".into(), BreakerState::Open)));

    // 30 s later the primary is healthy again: one half-open probe, then three successes close it.
    setup.clock.advance(chrono::Duration::seconds(31));
    primary.set_fallback(ok("from primary"));
    for turn in 0..3 {
        let served = serve(&setup, &both, &recorder).await.unwrap();
        assert_eq!((served.candidate_index, served.completion.text.as_str()), (0, "from primary"), "turn {turn}");
    }
    assert_eq!(primary.request_count(), 8);
    assert_eq!(secondary.request_count(), 3);
    assert_eq!(
        recorder.transitions(),
        vec![
            ("primary".into(), BreakerState::Closed, BreakerState::Open),
            ("primary".into(), BreakerState::Open, BreakerState::HalfOpen),
            ("primary".into(), BreakerState::HalfOpen, BreakerState::Closed),
        ]
    );
    let states = setup.client.breaker_states();
    assert_eq!(
        states,
        vec![
            ("primary".into(), "primary-model".into(), BreakerState::Closed),
            ("secondary".into(), "secondary-model".into(), BreakerState::Closed),
        ]
    );
    assert_eq!(recorder.failures().len(), 5);
}

#[tokio::test]
async fn a_failed_half_open_probe_reopens_the_breaker() {
    let setup = setup(&["primary", "secondary"]).await;
    setup.servers["primary"].set_fallback(server_error());
    setup.servers["secondary"].set_fallback(ok("fallback"));
    let recorder = Recorder::default();
    serve(&setup, &["primary", "secondary"], &recorder).await.unwrap();
    serve(&setup, &["primary", "secondary"], &recorder).await.unwrap();
    assert_eq!(setup.servers["primary"].request_count(), 5);

    setup.clock.advance(chrono::Duration::seconds(31));
    let served = serve(&setup, &["primary", "secondary"], &recorder).await.unwrap();
    assert_eq!(served.candidate_index, 1);
    assert_eq!(setup.servers["primary"].request_count(), 6, "exactly one probe, no in-call retries once it re-opens");
    assert_eq!(recorder.transitions().last().unwrap(), &("primary".into(), BreakerState::HalfOpen, BreakerState::Open));
}

#[tokio::test]
async fn every_breaker_open_means_providers_unavailable() {
    let setup = setup(&["only"]).await;
    setup.servers["only"].set_fallback(server_error());
    let first = serve(&setup, &["only"], &NoopObserver).await.unwrap_err();
    assert_eq!(first.code(), "provider_error", "retries exhausted: the last error is returned");
    serve(&setup, &["only"], &NoopObserver).await.unwrap_err();
    assert_eq!(setup.servers["only"].request_count(), 5);

    let err = serve(&setup, &["only"], &NoopObserver).await.unwrap_err();
    assert_eq!(err.class(), cortex_core::job::ErrorClass::Resource);
    assert_eq!(err.code(), "providers_unavailable");
    assert_eq!(setup.servers["only"].request_count(), 5);
}

#[tokio::test]
async fn auth_failure_is_reported_and_moves_to_the_fallback() {
    let setup = setup(&["primary", "secondary"]).await;
    setup.servers["primary"].set_fallback(Reply::json(401, json!({"error": {"message": "invalid key"}})));
    setup.servers["secondary"].set_fallback(ok("fallback"));
    let recorder = Recorder::default();
    let served = serve(&setup, &["primary", "secondary"], &recorder).await.unwrap();
    assert_eq!(served.candidate_index, 1);
    assert_eq!(setup.servers["primary"].request_count(), 1, "auth failures are not retried");
    assert_eq!(recorder.failures(), vec![("primary".into(), "auth_failed")]);
    assert!(recorder.transitions().is_empty(), "auth failures do not count against the breaker");

    // With no fallback left the job fails permanently with auth_failed.
    let err = serve(&setup, &["primary"], &recorder).await.unwrap_err();
    assert_eq!(err.code(), "auth_failed");
}

#[tokio::test]
async fn a_bad_request_stops_at_once_but_a_missing_model_moves_on() {
    let setup = setup(&["primary", "secondary"]).await;
    setup.servers["secondary"].set_fallback(ok("fallback"));

    setup.servers["primary"].push(Reply::json(400, json!({"error": {"message": "messages: invalid"}})));
    let err = serve(&setup, &["primary", "secondary"], &NoopObserver).await.unwrap_err();
    assert_eq!(err.code(), "bad_request");
    assert_eq!(setup.servers["secondary"].request_count(), 0, "a bad request is not sent elsewhere");

    setup.servers["primary"]
        .push(Reply::json(404, json!({"error": {"message": "no such model", "code": "model_not_found"}})));
    let served = serve(&setup, &["primary", "secondary"], &NoopObserver).await.unwrap();
    assert_eq!(served.candidate_index, 1);
    assert_eq!(setup.servers["primary"].request_count(), 2);
}

#[tokio::test]
async fn only_declared_candidates_are_used() {
    let setup = setup(&["a", "b", "spare"]).await;
    setup.servers["a"].set_fallback(server_error());
    setup.servers["b"].set_fallback(server_error());
    setup.servers["spare"].set_fallback(ok("never"));
    let err = serve(&setup, &["a", "b"], &NoopObserver).await.unwrap_err();
    assert_eq!(err.code(), "provider_error");
    assert_eq!(setup.servers["a"].request_count(), 4);
    assert_eq!(setup.servers["b"].request_count(), 4);
    assert_eq!(setup.servers["spare"].request_count(), 0, "no silent downgrade");
}

#[tokio::test]
async fn unknown_providers_are_skipped_and_reported_as_missing_credentials() {
    let setup = setup(&["real"]).await;
    setup.servers["real"].set_fallback(ok("served"));
    let recorder = Recorder::default();
    let served = serve(&setup, &["ghost", "real"], &recorder).await.unwrap();
    assert_eq!(served.candidate_index, 1);
    assert_eq!(recorder.failures(), vec![("ghost".into(), "no_credential")]);

    let err = serve(&setup, &["ghost"], &NoopObserver).await.unwrap_err();
    assert_eq!((err.code(), err.class()), ("no_credential", cortex_core::job::ErrorClass::Permanent));

    setup.client.remove_provider("real");
    let err = serve(&setup, &["real"], &NoopObserver).await.unwrap_err();
    assert_eq!(err.code(), "no_credential");
}

#[tokio::test]
async fn a_retry_after_longer_than_the_retry_budget_moves_on_without_waiting() {
    let setup = setup(&["primary", "secondary"]).await;
    setup.servers["primary"].set_fallback(Reply::Full {
        status: 429,
        headers: vec![("retry-after", "60".into())],
        body: "{}".into(),
    });
    setup.servers["secondary"].set_fallback(ok("fallback"));
    let served = serve(&setup, &["primary", "secondary"], &NoopObserver).await.unwrap();
    assert_eq!(served.candidate_index, 1);
    assert_eq!(setup.servers["primary"].request_count(), 1);
}

#[tokio::test]
async fn a_retry_after_forwarded_deltas_is_preceded_by_a_reset() {
    let setup = setup(&["primary"]).await;
    let primary = &setup.servers["primary"];
    primary.push(Reply::Stream { pieces: vec![open_text_stream(ApiStyle::OpenAi, &["Hel"])], end: End::Drop });
    primary.push(Reply::stream(text_stream(ApiStyle::OpenAi, &["Hello", "!"])));
    let mut events = Vec::new();
    let mut sink = |event| events.push(event);
    let served =
        setup.client.complete(&candidates(&["primary"]), request(true), &mut sink, &NoopObserver).await.unwrap();
    assert_eq!(served.completion.text, "Hello!");
    assert_eq!(served.failed_attempts, 1);
    assert_eq!(
        events,
        vec![
            StreamEvent::TextDelta("Hel".into()),
            StreamEvent::Reset,
            StreamEvent::TextDelta("Hello".into()),
            StreamEvent::TextDelta("!".into()),
        ]
    );

    // A failure before anything was forwarded needs no reset.
    primary.push(server_error());
    primary.push(Reply::stream(text_stream(ApiStyle::OpenAi, &["Hi"])));
    let mut events = Vec::new();
    let mut sink = |event| events.push(event);
    setup.client.complete(&candidates(&["primary"]), request(true), &mut sink, &NoopObserver).await.unwrap();
    assert_eq!(events, vec![StreamEvent::TextDelta("Hi".into())]);
}

#[tokio::test]
async fn an_abandoned_half_open_probe_does_not_wedge_the_breaker() {
    let setup = setup(&["primary"]).await;
    let primary = &setup.servers["primary"];
    primary.set_fallback(server_error());
    serve(&setup, &["primary"], &NoopObserver).await.unwrap_err();
    serve(&setup, &["primary"], &NoopObserver).await.unwrap_err();
    setup.clock.advance(chrono::Duration::seconds(31));

    // The probe's call never answers and the caller gives up on it (e.g. an urgent steer aborts the turn).
    primary.push(Reply::Stall);
    let abandoned = tokio::time::timeout(Duration::from_millis(100), serve(&setup, &["primary"], &NoopObserver)).await;
    assert!(abandoned.is_err(), "the stalled call was abandoned");
    assert_eq!(setup.client.breaker_states(), vec![("primary".into(), "primary-model".into(), BreakerState::Open)]);

    // After another open period a fresh probe is admitted.
    setup.clock.advance(chrono::Duration::seconds(31));
    primary.set_fallback(ok("back"));
    let served = serve(&setup, &["primary"], &NoopObserver).await.unwrap();
    assert_eq!(served.completion.text, "back");
}

/// Trips the primary's breaker (five countable failures) and lets the open period pass: it is half-open.
async fn half_open(setup: &Setup, candidates: &[&str]) {
    setup.servers["primary"].set_fallback(server_error());
    while setup.servers["primary"].request_count() < 5 {
        let _ = serve(setup, candidates, &NoopObserver).await;
    }
    assert_eq!(setup.client.breaker_states()[0].2, BreakerState::Open);
    setup.clock.advance(chrono::Duration::seconds(31));
}

/// A gate for held replies, closed until `send(true)`.
fn gate() -> (tokio::sync::watch::Sender<bool>, tokio::sync::watch::Receiver<bool>) {
    tokio::sync::watch::channel(false)
}

#[tokio::test]
async fn a_healed_provider_comes_back_under_steady_concurrent_traffic() {
    let setup = setup(&["primary"]).await;
    half_open(&setup, &["primary"]).await;
    let primary = &setup.servers["primary"];
    let (open, held) = gate();
    primary.push(Reply::Held(held, Box::new(ok("healed"))));
    primary.set_fallback(ok("healed"));
    let recorder = Recorder::default();

    // Steady traffic: while the probe is in flight, eight more calls arrive for the same provider.
    let calls = futures::future::join_all((0..9).map(|_| serve(&setup, &["primary"], &recorder)));
    let release = async {
        primary.wait_for_requests(6).await;
        assert_eq!(primary.request_count(), 6, "one probe while half-open; the others wait for it");
        open.send_replace(true);
    };
    let (results, ()) = tokio::join!(calls, release);

    for result in results {
        let served = result.expect("every call is served once the probe succeeded");
        assert_eq!(served.completion.text, "healed");
    }
    assert_eq!(primary.request_count(), 5 + 9, "no call was refused or sent twice");
    assert_eq!(setup.client.breaker_states()[0].2, BreakerState::Closed, "three successful probes close it");
    assert_eq!(
        recorder.transitions(),
        vec![
            ("primary".into(), BreakerState::Open, BreakerState::HalfOpen),
            ("primary".into(), BreakerState::HalfOpen, BreakerState::Closed),
        ],
        "a refused call never counted as a failed probe"
    );
}

#[tokio::test]
async fn while_the_probe_runs_other_calls_go_to_the_next_candidate() {
    let setup = setup(&["primary", "secondary"]).await;
    setup.servers["secondary"].set_fallback(ok("from secondary"));
    half_open(&setup, &["primary", "secondary"]).await;
    let primary = &setup.servers["primary"];
    let (open, held) = gate();
    primary.push(Reply::Held(held, Box::new(ok("from primary"))));
    primary.set_fallback(ok("from primary"));
    let both = ["primary", "secondary"];
    let recorder = Recorder::default();

    let probe = serve(&setup, &both, &recorder);
    let others = async {
        primary.wait_for_requests(6).await;
        let others = futures::future::join_all((0..4).map(|_| serve(&setup, &both, &recorder))).await;
        open.send_replace(true);
        others
    };
    let (probe, others) = tokio::join!(probe, others);
    assert_eq!(probe.unwrap().candidate_index, 0, "the probe is answered by the healed primary");
    for served in others {
        assert_eq!(served.unwrap().candidate_index, 1, "refused the probe slot, served by the fallback");
    }
    assert_eq!(primary.request_count(), 6, "exactly one probe");
    assert!(!recorder.transitions().contains(&("primary".into(), BreakerState::HalfOpen, BreakerState::Open)));

    for _ in 0..2 {
        assert_eq!(serve(&setup, &both, &recorder).await.unwrap().candidate_index, 0);
    }
    assert_eq!(setup.client.breaker_states()[0], ("primary".into(), "primary-model".into(), BreakerState::Closed));
}
