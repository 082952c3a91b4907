//! A scripted handler and helpers to run an engine and wait for job states.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cortex_core::agent::ResourceLimits;
use cortex_core::job::{ErrorClass, JobError, JobKind};
use cortex_jobs::{EngineConfig, JobContext, JobEngine, JobHandler, Outcome, ResumePoint};
use cortex_store::Store;
use cortex_store::jobs::{Job, NewJob};
use cortex_testkit::agent_definition;
pub use cortex_testkit::jobs::{
    insert_agent, insert_job, prompt_job, wait_for_job as wait_for, wait_for_status as wait_status,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Behaviour chosen by the job's prompt:
/// `ok` completes; `transient`/`permanent`/`unknown` fail with that class; `hang` waits to be stopped;
/// `checkpoint` saves `{"step": 1}` then fails transiently on its first run and completes with what it
/// resumed from afterwards; `release` waits for shutdown then releases.
#[derive(Default)]
pub struct Scripted {
    pub runs: Mutex<HashMap<Uuid, Vec<ResumeSeen>>>,
    /// Signalled whenever a run starts (after it is recorded in `runs`).
    started: tokio::sync::Notify,
}

impl Scripted {
    /// Waits until the handler runs `job` for the `attempt`-th time. A job is `running` in the database
    /// as soon as its claim commits, before the engine has taken it in hand; a test that moves the
    /// manual clock in that gap races the engine's own checks (e.g. the orphan check, which recovers a
    /// job its worker owns but does not run once the claim is older than `cancel_recheck`).
    pub async fn wait_started(&self, job: Uuid, attempt: usize) {
        let guard = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let started = self.started.notified();
            tokio::pin!(started);
            started.as_mut().enable();
            if self.runs.lock().unwrap().get(&job).is_some_and(|runs| runs.len() >= attempt) {
                return;
            }
            if tokio::time::timeout_at(guard, started).await.is_err() {
                panic!("the handler never started run {attempt} of job {job}");
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ResumeSeen {
    Fresh,
    Checkpoint(Value),
    Corrupt,
}

#[async_trait]
impl JobHandler for Scripted {
    async fn run(&self, ctx: JobContext) -> Outcome {
        let resume = match ctx.resume_point().await {
            ResumePoint::Fresh => ResumeSeen::Fresh,
            ResumePoint::Checkpoint(value) => ResumeSeen::Checkpoint(value),
            ResumePoint::Corrupt(_) => ResumeSeen::Corrupt,
        };
        self.runs.lock().unwrap().entry(ctx.job.id).or_default().push(resume.clone());
        self.started.notify_waiters();
        match ctx.job.prompt().unwrap_or("ok") {
            "ok" => Outcome::Completed(json!({"response": "done"})),
            "transient" => Outcome::Failed(JobError::new(ErrorClass::Transient, "rate_limit", "slow down")),
            "permanent" => Outcome::Failed(JobError::new(ErrorClass::Permanent, "auth_failed", "bad key")),
            "unknown" => Outcome::Failed(JobError::new(ErrorClass::Unknown, "boom", "surprise")),
            "hang" => {
                ctx.cancel.cancelled().await;
                Outcome::Failed(JobError::cancelled())
            }
            "release" => {
                ctx.shutdown.cancelled().await;
                ctx.checkpoint(&json!({"step": "released"})).await.unwrap();
                Outcome::Release
            }
            "checkpoint" => match resume {
                ResumeSeen::Checkpoint(state) => Outcome::Completed(json!({"resumed_from": state})),
                _ => {
                    ctx.checkpoint(&json!({"step": 1})).await.unwrap();
                    Outcome::Failed(JobError::new(ErrorClass::Transient, "stream_interrupted", "cut"))
                }
            },
            other => Outcome::Failed(JobError::new(ErrorClass::Permanent, "bad_script", other.to_owned())),
        }
    }
}

pub struct Running {
    pub handler: Arc<Scripted>,
    pub stop: CancellationToken,
    pub done: tokio::task::JoinHandle<Result<(), cortex_store::StoreError>>,
}

pub fn test_config(concurrency: usize) -> EngineConfig {
    EngineConfig {
        concurrency,
        // Tests move the clock in big steps; keep the engine's own heartbeat from looking stale.
        worker_dead_after: Duration::from_secs(24 * 3600),
        ..EngineConfig::with_name("test-worker")
    }
}

pub fn start(store: &Store, config: EngineConfig) -> Running {
    let handler = Arc::new(Scripted::default());
    let engine = JobEngine::new(store.clone(), config).with_handler(JobKind::Task, handler.clone());
    let stop = CancellationToken::new();
    let signal = stop.clone();
    let done = tokio::spawn(engine.run(async move { signal.cancelled().await }));
    Running { handler, stop, done }
}

impl Running {
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.done.await.unwrap().unwrap();
    }
}

/// An active agent that runs at most `max_concurrent_jobs` at once.
pub async fn agent(store: &Store, max_concurrent_jobs: u32) -> Uuid {
    let mut definition = agent_definition(&format!("agent-{}", Uuid::now_v7().simple()));
    definition.resource_limits = ResourceLimits { max_concurrent_jobs, ..ResourceLimits::default() };
    insert_agent(store, &definition).await
}

pub async fn enqueue(store: &Store, agent_id: Uuid, prompt: &str, tweak: impl FnOnce(&mut NewJob)) -> Job {
    let mut new = prompt_job(agent_id, prompt);
    tweak(&mut new);
    insert_job(store, &new).await
}
