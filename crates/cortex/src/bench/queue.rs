//! `cortex bench queue`: the job queue alone (SPEC §4, §16).
//!
//! It runs the real engine ([`JobEngine`], claims, heartbeats, records) with a handler that does no
//! work, on a throw-away database, and reports:
//! - **bulk enqueue**: jobs/s inserting `--jobs` jobs in transactions of `--enqueue-batch` (default
//!   [`ENQUEUE_BATCH`]) with `Tx::insert_jobs`, the path of `POST /agents/{id}/jobs`'s batch form;
//! - **processing** with 1, 16 and 64 concurrent jobs: jobs/s from engine start until every job's
//!   completion is committed (a fresh backlog of `--jobs` jobs each time);
//! - **enqueue→start latency** p50/p99: [`LATENCY_SAMPLES`] jobs enqueued one per transaction at a
//!   steady [`LATENCY_RATE_PER_SECOND`]/s into a running, idle engine, from the enqueuing commit
//!   returning to the handler starting the job.
//!
//! On PostgreSQL, planner statistics are refreshed (`ANALYZE job`) after each bulk load, as autovacuum
//! does on a running server: without them every claim sorts the whole backlog and the figures would
//! describe a freshly created database rather than a deployment.
//!
//! With `--workers N` (PostgreSQL) it measures scale-out across processes instead
//! ([`worker_processes`]): real `cortex worker` children running task jobs through the agent runtime.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_trait::async_trait;
use clap::Args;
use cortex_core::agent::ResourceLimits;
use cortex_core::clock::SystemClock;
use cortex_core::job::{JobKind, JobStatus};
use cortex_jobs::{EngineConfig, JobContext, JobEngine, JobHandler, Outcome};
use cortex_store::agents::AgentDefinition;
use cortex_store::jobs::NewJob;
use cortex_store::{DatabaseConfig, Store};
use serde_json::json;
use sqlx::Connection;
use sqlx::postgres::PgConnection;
use tokio::sync::watch;
use uuid::Uuid;

use super::{Report, Scratch, ScratchArgs, millis, percentile, rate, time};

mod worker_processes;

/// Jobs inserted per transaction in the bulk enqueue measurement unless `--enqueue-batch` says otherwise.
pub const ENQUEUE_BATCH: usize = 5_000;
/// Jobs enqueued one by one for the latency measurement (fewer when `--jobs` is smaller).
pub const LATENCY_SAMPLES: usize = 500;
/// Steady enqueue rate of the latency measurement: modest, so the engine is idle between jobs.
pub const LATENCY_RATE_PER_SECOND: u64 = 100;
/// Worker concurrency of the latency measurement.
const LATENCY_CONCURRENCY: usize = 16;
/// Worker concurrencies of the processing measurements (a fresh backlog each).
const PROCESS_CONCURRENCIES: [usize; 3] = [1, 16, 64];

/// Options of `cortex bench queue`.
#[derive(Debug, Args)]
pub struct QueueArgs {
    #[command(flatten)]
    pub scratch: ScratchArgs,
    /// Jobs per enqueue and processing measurement (the backlog waiting when processing starts)
    /// [default: 20000; with --workers 5000, or 1000 when --job-wait-ms is set].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub jobs: Option<u32>,
    /// Instead of the in-process engine, drain the queue with `cortex worker` child processes
    /// (PostgreSQL): 1, 2, 4 … up to this many in turn, each run a fresh backlog of task jobs.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub workers: Option<u32>,
    /// With --workers: milliseconds the fake model waits before answering, i.e. each job's model wait.
    #[arg(long, default_value_t = 0, requires = "workers", value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub job_wait_ms: u64,
    /// With --workers: job slots per worker process (`CORTEX_WORKER_CONCURRENCY`).
    #[arg(long, default_value_t = 5, requires = "workers", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub worker_concurrency: u32,
    /// Jobs per transaction when enqueuing in bulk (one `Tx::insert_jobs` call each).
    #[arg(long, default_value_t = ENQUEUE_BATCH as u32, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub enqueue_batch: u32,
}

/// Backlog per run with `--workers` and a model that waits, unless `--jobs` says otherwise: task jobs
/// through the runtime are far slower than the in-process no-op jobs.
const WORKER_JOBS: u32 = 1_000;
/// Backlog per run with `--workers` and an instant model: 1,000 jobs drain in about 5 s, too short for a
/// steady rate once new processes start up (docs/PERFORMANCE.md section 14).
const INSTANT_WORKER_JOBS: u32 = 5_000;
/// Backlog per run without `--workers` unless `--jobs` says otherwise.
const IN_PROCESS_JOBS: u32 = 20_000;

/// Measures the queue on the scratch database.
pub(crate) async fn measure(scratch: &Scratch, args: &QueueArgs) -> anyhow::Result<Report> {
    if let Some(workers) = args.workers {
        let default = if args.job_wait_ms == 0 { INSTANT_WORKER_JOBS } else { WORKER_JOBS };
        let jobs = args.jobs.unwrap_or(default) as usize;
        return worker_processes::measure(scratch, args, workers as usize, jobs).await;
    }
    let jobs = args.jobs.unwrap_or(IN_PROCESS_JOBS) as usize;
    let database = &scratch.database;
    let store = Store::open(database, Arc::new(SystemClock)).await.context("opening the scratch database")?;
    store.migrate().await.context("migrating the scratch database")?;
    let agent_id = bench_agent(&store).await?;
    let mut report = Report::new(
        "queue",
        store.engine_name(),
        format!("{jobs} no-op jobs per run, real engine on a scratch database"),
    );

    let batch = args.enqueue_batch as usize;
    let enqueued = rate(jobs, time(enqueue_bulk(&store, agent_id, jobs, batch)).await?);
    report.figure("enqueue_jobs_per_second", format!("bulk enqueue ({batch} per transaction)"), enqueued, "jobs/s");
    for (run, concurrency) in PROCESS_CONCURRENCIES.into_iter().enumerate() {
        if run > 0 {
            enqueue_bulk(&store, agent_id, jobs, batch).await?;
        }
        refresh_statistics(database).await?;
        let processed = rate(jobs, process(&store, jobs, concurrency).await?);
        report.figure(
            format!("process_concurrency_{concurrency}_jobs_per_second"),
            format!("process, concurrency {concurrency}, {jobs} waiting"),
            processed,
            "jobs/s",
        );
    }
    let samples = jobs.min(LATENCY_SAMPLES);
    let mut latencies = latency(&store, agent_id, samples).await?;
    latencies.sort();
    store.close().await;
    let label = format!("enqueue→start, {samples} jobs at {LATENCY_RATE_PER_SECOND}/s");
    report.figure("latency_p50_ms", format!("{label}, p50"), millis(percentile(&latencies, 0.50)), "ms");
    report.figure("latency_p99_ms", format!("{label}, p99"), millis(percentile(&latencies, 0.99)), "ms");
    Ok(report)
}

/// An agent whose concurrency limit never caps the engine.
pub(super) async fn bench_agent(store: &Store) -> anyhow::Result<Uuid> {
    agent_with_slots(store, 100).await
}

/// An agent that may run `slots` jobs at once (at most 100).
async fn agent_with_slots(store: &Store, slots: u32) -> anyhow::Result<Uuid> {
    let definition = AgentDefinition {
        description: "cortex bench queue".into(),
        resource_limits: ResourceLimits { max_concurrent_jobs: slots, ..ResourceLimits::default() },
        ..AgentDefinition::new("bench", "openai", "gpt-4o-mini")
    };
    let mut tx = store.begin().await?;
    let id = tx.insert_agent(&definition).await?;
    tx.commit().await?;
    Ok(id)
}

fn bench_job(agent_id: Uuid) -> NewJob {
    NewJob { created_by: Some("bench".into()), ..NewJob::task(agent_id, json!({"prompt": "no-op"})) }
}

/// Inserts `jobs` jobs in transactions of `batch`, each with the store's bulk insert.
async fn enqueue_bulk(store: &Store, agent_id: Uuid, jobs: usize, batch: usize) -> anyhow::Result<()> {
    let size = batch.min(jobs);
    let batch = vec![bench_job(agent_id); size];
    let mut left = jobs;
    while left > 0 {
        let size = left.min(size);
        let mut tx = store.begin().await?;
        tx.insert_jobs(&batch[..size]).await?;
        tx.commit().await?;
        left -= size;
    }
    Ok(())
}

/// Refreshes PostgreSQL's statistics of the job table after a bulk load (see the module docs).
async fn refresh_statistics(database: &DatabaseConfig) -> anyhow::Result<()> {
    if let DatabaseConfig::Postgres { url, .. } = database {
        let mut conn = PgConnection::connect(url).await.context("connecting to the scratch database")?;
        sqlx::query("ANALYZE job").execute(&mut conn).await.context("refreshing planner statistics")?;
        conn.close().await?;
    }
    Ok(())
}

/// Runs an engine with `concurrency` slots over the queued backlog of `jobs` jobs; returns the time
/// from its start until every completion is committed (its graceful shutdown drains them all).
async fn process(store: &Store, jobs: usize, concurrency: usize) -> anyhow::Result<Duration> {
    let completed_before = count_completed(store).await?;
    let handler = Arc::new(NoOp::default());
    let mut runs = handler.runs.subscribe();
    let engine = bench_engine(store, concurrency, &handler);
    let elapsed = time(engine.run(async move {
        let _ = runs.wait_for(|n| *n >= jobs).await;
    }))
    .await?;
    let completed = count_completed(store).await? - completed_before;
    if completed != jobs {
        bail!("the engine completed {completed} of {jobs} jobs");
    }
    Ok(elapsed)
}

/// Enqueues `samples` jobs one per transaction at a steady rate into a running engine and returns each
/// job's delay from commit to handler start.
async fn latency(store: &Store, agent_id: Uuid, samples: usize) -> anyhow::Result<Vec<Duration>> {
    let handler = Arc::new(NoOp::default());
    let mut runs = handler.runs.subscribe();
    let engine = bench_engine(store, LATENCY_CONCURRENCY, &handler);
    let all_ran = async move {
        let _ = runs.wait_for(|n| *n > samples).await;
    };
    let running = tokio::spawn(engine.run(all_ran));

    // A first job, not measured, proves the engine is up and listening.
    let mut warm_up = handler.runs.subscribe();
    enqueue_one(store, agent_id).await?;
    warm_up.wait_for(|n| *n >= 1).await.context("the engine stopped during warm-up")?;

    let mut committed = HashMap::with_capacity(samples);
    let mut ticks = tokio::time::interval(Duration::from_micros(1_000_000 / LATENCY_RATE_PER_SECOND));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for _ in 0..samples {
        ticks.tick().await;
        let id = enqueue_one(store, agent_id).await?;
        committed.insert(id, Instant::now());
    }
    running.await.context("the engine task failed")??;

    let started = handler.started.lock().map_err(|_| anyhow::anyhow!("latency records are unreadable"))?;
    committed
        .iter()
        .map(|(id, at)| {
            // The engine may start a job before the commit acknowledgement reaches the enqueuer.
            started.get(id).map(|start| start.saturating_duration_since(*at)).context("a sampled job never started")
        })
        .collect()
}

async fn enqueue_one(store: &Store, agent_id: Uuid) -> anyhow::Result<Uuid> {
    let mut tx = store.begin().await?;
    let (job, _) = tx.insert_job(&bench_job(agent_id)).await?;
    tx.commit().await?;
    Ok(job.id)
}

fn bench_engine(store: &Store, concurrency: usize, handler: &Arc<NoOp>) -> JobEngine {
    let config = EngineConfig { concurrency, ..EngineConfig::with_name(format!("bench:{}", std::process::id())) };
    JobEngine::new(store.clone(), config).with_handler(JobKind::Task, handler.clone())
}

async fn count_completed(store: &Store) -> anyhow::Result<usize> {
    let counts = store.count_jobs_by_status().await?;
    let completed = counts.into_iter().find(|(status, _)| *status == JobStatus::Completed).map_or(0, |(_, n)| n);
    Ok(usize::try_from(completed)?)
}

/// Completes every job at once, counting runs and noting when each job started.
struct NoOp {
    runs: watch::Sender<usize>,
    started: Mutex<HashMap<Uuid, Instant>>,
}

impl Default for NoOp {
    fn default() -> Self {
        Self { runs: watch::Sender::new(0), started: Mutex::new(HashMap::new()) }
    }
}

#[async_trait]
impl JobHandler for NoOp {
    async fn run(&self, ctx: JobContext) -> Outcome {
        let now = Instant::now();
        if let Ok(mut started) = self.started.lock() {
            started.insert(ctx.job.id, now);
        }
        self.runs.send_modify(|n| *n += 1);
        Outcome::Completed(json!({}))
    }
}
