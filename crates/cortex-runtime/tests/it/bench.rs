//! Control-plane overhead of one chat turn against a zero-latency fake model (issue 5): from the API's
//! creation transaction (session message + job) to the completed job with its stored answer, p50/p99 —
//! beside the same measurement with a handler that completes at once, which is the job engine's share.
//! A benchmark, so ignored by default: `cargo test --release -p cortex-runtime --test it -- --ignored
//! --nocapture bench`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cortex_core::job::{JobKind, JobStatus};
use cortex_jobs::{JobContext, JobEngine, JobHandler, Outcome};
use cortex_store::Store;
use cortex_testkit::fake_llm::{FakeLlm, Reply, When};
use cortex_testkit::{Engine as StoreEngine, TestStore};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::support::*;

const WARMUP: usize = 20;
const TURNS: usize = 300;

/// Completes every job at once.
struct Noop;

#[async_trait]
impl JobHandler for Noop {
    async fn run(&self, _ctx: JobContext) -> Outcome {
        Outcome::Completed(json!({"response": "ok"}))
    }
}

async fn turns(store: &Store, agent_id: Uuid) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(TURNS);
    for n in 0..TURNS + WARMUP {
        let started = Instant::now();
        let job = chat(store, agent_id, None, "ping").await;
        wait_status(store, job.id, JobStatus::Completed).await;
        if n >= WARMUP {
            samples.push(started.elapsed());
        }
    }
    samples.sort();
    samples
}

fn report(label: &str, samples: &[Duration]) {
    let pick = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    eprintln!("{label}: p50 {:.2} ms, p99 {:.2} ms over {} turns", ms(pick(0.5)), ms(pick(0.99)), samples.len());
}

async fn measure(engine: StoreEngine) {
    let test = TestStore::new(engine).await;
    let store = test.store.clone();
    let llm = FakeLlm::start().await;
    llm.rule(When::Always, Reply::text("ok").usage(10, 1));
    let runtime = runtime_with_env(&test, &store, env_for(&llm)).await;
    let agent = create_agent(&store, definition("gpt-4o-mini")).await;

    let stop = CancellationToken::new();
    let signal = stop.clone();
    let baseline = JobEngine::new(store.clone(), engine_config(4)).with_handler(JobKind::Chat, Arc::new(Noop));
    let running = tokio::spawn(baseline.run(async move { signal.cancelled().await }));
    report(&format!("{engine:?} engine only (no-op handler)"), &turns(&store, agent.id).await);
    stop.cancel();
    running.await.unwrap().unwrap();

    let agent_engine = Engine::start(&store, &runtime, 4);
    report(&format!("{engine:?} chat turn (runtime + engine)"), &turns(&store, agent.id).await);
    agent_engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn bench_chat_turn_overhead() {
    measure(StoreEngine::Sqlite).await;
    if !cortex_testkit::skip_postgres() {
        measure(StoreEngine::Postgres).await;
    }
}
