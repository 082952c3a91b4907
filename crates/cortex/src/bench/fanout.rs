//! `cortex bench fanout`: many agents with one job each (issue 17 point 3).
//!
//! Creates `--agents` agents on the scratch database, each with one queued no-op task job, then runs
//! the real engine ([`JobEngine`]: claims, per-agent limits, records) with `--concurrency` slots and
//! reports the time from its start until every completion is committed (its graceful shutdown drains
//! them all), and the process's RSS before the drain and its peak during it. The peak is sampled every
//! [`RSS_SAMPLE_INTERVAL`] from `/proc/self/status`, so a shorter spike may be missed.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use async_trait::async_trait;
use clap::Args;
use cortex_core::clock::SystemClock;
use cortex_core::job::{JobKind, JobStatus};
use cortex_jobs::{EngineConfig, JobContext, JobEngine, JobHandler, Outcome};
use cortex_store::Store;
use cortex_store::agents::AgentDefinition;
use cortex_store::jobs::NewJob;
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::startup::{mib, rss_kib};
use super::{Report, Scratch, ScratchArgs, millis, rate, time};

/// Agents (and their jobs) written per transaction during set-up.
const SETUP_BATCH: usize = 500;
/// How often the RSS is sampled while the engine drains.
pub(crate) const RSS_SAMPLE_INTERVAL: Duration = Duration::from_millis(5);

/// Options of `cortex bench fanout`.
#[derive(Debug, Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub scratch: ScratchArgs,
    /// Agents, each with one queued job.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub agents: u32,
    /// Engine slots (jobs running at once).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub concurrency: u32,
}

/// Measures how fast one engine drains one job on each of many agents.
pub(crate) async fn measure(scratch: &Scratch, args: &FanoutArgs) -> anyhow::Result<Report> {
    let agents = args.agents as usize;
    let store = Store::open(&scratch.database, Arc::new(SystemClock)).await.context("opening the scratch database")?;
    store.migrate().await.context("migrating the scratch database")?;
    let measured = drain(&store, agents, args.concurrency as usize).await;
    store.close().await;
    let (elapsed, before, peak) = measured?;
    let mut report = Report::new(
        "fanout",
        scratch.engine_name(),
        format!("{agents} agents with one no-op job each, one engine with {} slots", args.concurrency),
    );
    report.figure("drain_ms", "time to drain (engine start → all completed)", millis(elapsed), "ms");
    report.figure("drain_jobs_per_second", "jobs/s while draining", rate(agents, elapsed), "jobs/s");
    report.figure("rss_before_mib", "RSS before the drain (this process)", mib(before), "MiB");
    report.figure("peak_rss_mib", "peak RSS during the drain (this process)", mib(peak), "MiB");
    Ok(report)
}

/// Sets up the agents and jobs, then drains them; returns the drain time, the RSS before and its peak.
async fn drain(store: &Store, agents: usize, concurrency: usize) -> anyhow::Result<(Duration, u64, u64)> {
    for first in (0..agents).step_by(SETUP_BATCH) {
        let mut tx = store.begin().await?;
        let mut jobs = Vec::with_capacity(SETUP_BATCH);
        for n in first..agents.min(first + SETUP_BATCH) {
            let definition = AgentDefinition {
                description: "cortex bench fanout".into(),
                ..AgentDefinition::new(&format!("fanout-{n}"), "openai", "gpt-4o-mini")
            };
            let agent_id = tx.insert_agent(&definition).await?;
            jobs.push(NewJob {
                created_by: Some("bench".into()),
                ..NewJob::task(agent_id, json!({"prompt": "no-op"}))
            });
        }
        tx.insert_jobs(&jobs).await?;
        tx.commit().await?;
    }
    let before = rss_kib(std::process::id())?;
    let sampling = CancellationToken::new();
    let sampler = tokio::spawn(peak_rss(sampling.clone()));
    let handler = Arc::new(Counter::default());
    let mut runs = handler.runs.subscribe();
    let config =
        EngineConfig { concurrency, ..EngineConfig::with_name(format!("bench-fanout:{}", std::process::id())) };
    let engine = JobEngine::new(store.clone(), config).with_handler(JobKind::Task, handler.clone());
    let elapsed = time(engine.run(async move {
        let _ = runs.wait_for(|n| *n >= agents).await;
    }))
    .await;
    sampling.cancel();
    let peak = sampler.await.context("the RSS sampler failed")??.max(before);
    let elapsed = elapsed?;
    let counts = store.count_jobs_by_status().await?;
    let completed = counts.into_iter().find(|(status, _)| *status == JobStatus::Completed).map_or(0, |(_, n)| n);
    if usize::try_from(completed)? != agents {
        bail!("the engine completed {completed} of {agents} jobs");
    }
    Ok((elapsed, before, peak))
}

/// Samples this process's RSS until `stop` and returns the highest value seen, in KiB.
pub(crate) async fn peak_rss(stop: CancellationToken) -> anyhow::Result<u64> {
    let mut peak = 0;
    let mut ticks = tokio::time::interval(RSS_SAMPLE_INTERVAL);
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(peak),
            _ = ticks.tick() => peak = peak.max(rss_kib(std::process::id())?),
        }
    }
}

/// Completes every job at once and counts the runs.
#[derive(Default)]
pub(crate) struct Counter {
    /// Jobs run so far.
    pub(crate) runs: watch::Sender<usize>,
}

#[async_trait]
impl JobHandler for Counter {
    async fn run(&self, _ctx: JobContext) -> Outcome {
        self.runs.send_modify(|n| *n += 1);
        Outcome::Completed(json!({}))
    }
}
