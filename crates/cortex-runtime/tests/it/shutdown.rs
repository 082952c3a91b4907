//! Graceful shutdown (SPEC §4.10): a running job reaches its next turn boundary, checkpoints and is released
//! without using up an attempt; another engine resumes it where it stopped.

use std::sync::Arc;

use async_trait::async_trait;
use cortex_core::approval::ApprovalMode;
use cortex_core::job::{JobKind, JobStatus};
use cortex_jobs::{JobContext, JobEngine, JobHandler, Outcome};
use cortex_testkit::fake_llm::{Gate, Reply, When};
use cortex_testkit::{TestStore, both_engines};
use serde_json::json;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use crate::support::*;

/// Runs the runtime's handler and hands the test each run's shutdown token, so the test can wait until the
/// engine has told the job to stop before letting the model answer.
struct Spy {
    inner: Arc<dyn JobHandler>,
    tokens: UnboundedSender<CancellationToken>,
}

#[async_trait]
impl JobHandler for Spy {
    async fn run(&self, ctx: JobContext) -> Outcome {
        let _ = self.tokens.send(ctx.shutdown.clone());
        self.inner.run(ctx).await
    }
}

both_engines!(shutdown_releases_at_a_turn_boundary_and_another_engine_resumes, |t: TestStore| async move {
    let llm = cortex_testkit::fake_llm::FakeLlm::start().await;
    let store = t.store.clone();
    let runtime = runtime_with_env(&t, &store, env_for(&llm)).await;
    let agent = create_agent(&store, definition("gpt-4o-mini")).await;
    allow_tool(&store, agent.id, "echo", ApprovalMode::Never, None).await;
    let gate = Gate::new();
    llm.push(Reply::tool_call("echo", json!({"text": "first turn"})).after(&gate));
    llm.rule(When::LastIsToolResult, Reply::text("finished after the restart"));

    let (tokens, mut received) = tokio::sync::mpsc::unbounded_channel();
    let spy = Arc::new(Spy { inner: runtime.handler(), tokens });
    let engine = JobEngine::new(store.clone(), engine_config(2)).with_handler(JobKind::Task, spy);
    let stop = CancellationToken::new();
    let signal = stop.clone();
    let running = tokio::spawn(engine.run(async move { signal.cancelled().await }));
    let job = task(&store, agent.id, "two turns please").await;
    let job_shutdown = received.recv().await.unwrap();
    llm.wait_for_requests(1).await;

    stop.cancel();
    job_shutdown.cancelled().await;
    gate.open();
    running.await.unwrap().unwrap();
    let released = store.get_job(job.id).await.unwrap();
    assert_eq!(released.status, JobStatus::Scheduled);
    assert_eq!(llm.request_count(), 1, "the second turn did not start before the release");
    assert_eq!(store.tool_calls_of_job(job.id).await.unwrap().len(), 1, "the first turn's tool ran");

    let engine = Engine::start(&store, &runtime, 2);
    let done = wait_status(&store, job.id, JobStatus::Completed).await;
    assert_eq!(done.result.unwrap()["response"], "finished after the restart");
    assert_eq!(done.attempt, 1, "a release does not use up an attempt");
    assert_eq!(store.tool_calls_of_job(job.id).await.unwrap().len(), 1, "the tool ran once");
    engine.shutdown().await;
});
