//! The metrics the clients and the failover client emit, captured by a thread-local recorder.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cortex_core::agent::ModelRef;
use cortex_core::clock::ManualClock;
use cortex_llm::{ApiStyle, FailoverClient, NoopObserver, RetryPolicy};
use metrics::{Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, SharedString, Unit};
use serde_json::json;

use crate::fake::{FakeServer, Reply};
use crate::{call, provider, request, text_json};

type Values = Arc<Mutex<BTreeMap<String, f64>>>;

/// Keeps the latest value of every counter and gauge, and the number of samples of every histogram, under
/// `name{label=value,…}` with labels sorted.
#[derive(Default)]
struct Capture(Values);

struct Slot {
    key: String,
    values: Values,
}

impl Slot {
    fn update(&self, change: impl FnOnce(&mut f64)) {
        change(self.values.lock().unwrap().entry(self.key.clone()).or_default());
    }
}

impl CounterFn for Slot {
    fn increment(&self, value: u64) {
        self.update(|total| *total += value as f64);
    }
    fn absolute(&self, value: u64) {
        self.update(|total| *total = value as f64);
    }
}

impl GaugeFn for Slot {
    fn increment(&self, value: f64) {
        self.update(|gauge| *gauge += value);
    }
    fn decrement(&self, value: f64) {
        self.update(|gauge| *gauge -= value);
    }
    fn set(&self, value: f64) {
        self.update(|gauge| *gauge = value);
    }
}

impl HistogramFn for Slot {
    fn record(&self, _value: f64) {
        self.update(|samples| *samples += 1.0);
    }
}

impl Capture {
    fn slot(&self, key: &Key) -> Arc<Slot> {
        let mut labels: Vec<String> = key.labels().map(|label| format!("{}={}", label.key(), label.value())).collect();
        labels.sort();
        Arc::new(Slot { key: format!("{}{{{}}}", key.name(), labels.join(",")), values: self.0.clone() })
    }

    fn value(&self, key: &str) -> Option<f64> {
        self.0.lock().unwrap().get(key).copied()
    }
}

impl metrics::Recorder for Capture {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.slot(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.slot(key))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.slot(key))
    }
}

#[test]
fn calls_tokens_latency_and_breaker_states_are_measured() {
    let capture = Capture::default();
    // The recorder is thread-local, so everything runs on one current-thread runtime.
    metrics::with_local_recorder(&capture, || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let server = FakeServer::start().await;
            server.push(Reply::json(200, text_json(ApiStyle::OpenAi, "hi")));
            server.push(Reply::json(503, json!({"error": {"message": "down"}})));
            let provider = provider(ApiStyle::OpenAi, &server);
            call(provider.as_ref(), &request(false)).await.0.unwrap();
            call(provider.as_ref(), &request(false)).await.0.unwrap_err();

            server.set_fallback(Reply::json(500, json!({"error": {"message": "boom"}})));
            let providers = HashMap::from([("flaky".to_owned(), provider)]);
            let policy = RetryPolicy {
                base_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(2),
                ..RetryPolicy::default()
            };
            let client = FailoverClient::new(providers, Arc::new(ManualClock::new(chrono::Utc::now())), policy);
            let candidates = [ModelRef { provider: "flaky".into(), model: "m1".into() }];
            for _ in 0..2 {
                let mut sink = |_| {};
                client.complete(&candidates, request(false), &mut sink, &NoopObserver).await.unwrap_err();
            }
        });
    });

    let requests = |outcome: &str| {
        capture.value(&format!("cortex_llm_requests_total{{model=test-model,outcome={outcome},provider=openai-fake}}"))
    };
    assert_eq!(requests("ok"), Some(1.0));
    assert_eq!(requests("provider_error"), Some(1.0));
    assert_eq!(
        capture.value("cortex_llm_tokens_total{direction=in,model=test-model,provider=openai-fake}"),
        Some(10.0)
    );
    assert_eq!(
        capture.value("cortex_llm_tokens_total{direction=out,model=test-model,provider=openai-fake}"),
        Some(2.0)
    );
    assert_eq!(
        capture.value("cortex_llm_latency_seconds{model=test-model,provider=openai-fake}"),
        Some(2.0),
        "two samples"
    );
    assert_eq!(
        capture.value("cortex_llm_requests_total{model=m1,outcome=provider_error,provider=openai-fake}"),
        Some(5.0),
        "five failed attempts before the breaker opened"
    );
    assert_eq!(capture.value("cortex_provider_breaker_state{model=m1,provider=flaky}"), Some(2.0), "open");
}
