//! `cortex bench queue --workers N`: scale-out of the job queue across processes on PostgreSQL (issue 17:
//! more processes never slower than one with instant jobs, ≥ 3× with four when each job waits 100 ms on
//! its model; SPEC Appendix B, Event order).
//!
//! For each process count of [`process_counts`] (1, 2, 4 … up to N), this very binary is started that many
//! times as `cortex worker` on the scratch database (one master key for all, `--worker-concurrency` slots
//! each), each waited for until it prints its running line; then the bench enqueues `--jobs` task jobs
//! (transactions of 500) and times from the first enqueue until none is unfinished (the agent's
//! unfinished jobs are counted every [`POLL`]), then checks that every one completed. The jobs run
//! through the real agent runtime against a loopback OpenAI-compatible model in the bench process that
//! answers after `--job-wait-ms`. Memory extraction and embeddings are off. The workers are stopped
//! (SIGTERM) after each run.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cortex_core::job::JobStatus;
use cortex_store::{DatabaseConfig, Store};
use uuid::Uuid;

use super::super::chat::InstantModel;
use super::super::startup::CortexChild;
use super::super::{Report, Scratch, rate};
use super::{ENQUEUE_BATCH, QueueArgs, agent_with_slots, enqueue_bulk, refresh_statistics};
use crate::config::ConfigError;

/// How long a worker may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one backlog may take to drain before the run is abandoned.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Pause between two counts of the completed jobs: the figure's resolution.
const POLL: Duration = Duration::from_millis(25);

/// Process counts measured for at most `max` processes: powers of two below it, then `max`.
pub(super) fn process_counts(max: usize) -> Vec<usize> {
    let mut counts: Vec<usize> =
        std::iter::successors(Some(1_usize), |n| n.checked_mul(2)).take_while(|n| *n < max).collect();
    counts.push(max.max(1));
    counts
}

/// Drains a fresh backlog of `jobs` task jobs with 1, 2, 4 … `max_processes` worker processes.
pub(super) async fn measure(
    scratch: &Scratch,
    args: &QueueArgs,
    max_processes: usize,
    jobs: usize,
) -> anyhow::Result<Report> {
    if !matches!(scratch.database, DatabaseConfig::Postgres { .. }) {
        bail!(ConfigError("--workers needs --engine postgres: worker processes share a PostgreSQL database".into()));
    }
    let slots = u32::try_from(max_processes)?.saturating_mul(args.worker_concurrency);
    if slots > 100 {
        bail!(ConfigError(format!(
            "--workers × --worker-concurrency is {slots}; the bench agent may run at most 100 jobs at once"
        )));
    }
    let store = Store::open(&scratch.database, std::sync::Arc::new(cortex_core::clock::SystemClock))
        .await
        .context("opening the scratch database")?;
    store.migrate().await.context("migrating the scratch database")?;
    let agent_id = agent_with_slots(&store, slots).await?;
    let model = InstantModel::start(Duration::from_millis(args.job_wait_ms)).await?;
    let master_key: String = rand::random::<[u8; 32]>().iter().map(|b| format!("{b:02x}")).collect();
    let concurrency = args.worker_concurrency.to_string();
    let env = [
        ("CORTEX_MASTER_KEY", master_key.as_str()),
        ("CORTEX_WORKER_CONCURRENCY", concurrency.as_str()),
        ("OPENAI_BASE_URL", model.base_url.as_str()),
        ("OPENAI_API_KEY", "bench"),
        ("CORTEX_EMBEDDINGS", "none"),
        ("CORTEX_MEMORY_EXTRACTION", "off"),
    ];
    let counts = process_counts(max_processes);
    let mut rates = Vec::new();
    for processes in &counts {
        let drained = drain(scratch, &store, agent_id, jobs, *processes, &env).await;
        match drained {
            Ok(elapsed) => rates.push((*processes, rate(jobs, elapsed))),
            Err(err) => {
                store.close().await;
                return Err(err.context(format!("the run with {processes} worker process(es)")));
            }
        }
    }
    store.close().await;

    let mut report = Report::new(
        "queue",
        "postgres",
        format!(
            "{jobs} task jobs per run drained by `cortex worker` processes with {} slots each, model answering after \
             {} ms",
            args.worker_concurrency, args.job_wait_ms
        ),
    );
    for (processes, jobs_per_second) in &rates {
        report.figure(
            format!("workers_{processes}_jobs_per_second"),
            format!("{processes} worker process(es)"),
            *jobs_per_second,
            "jobs/s",
        );
    }
    if let (Some((_, one)), Some((most, rate_most))) = (rates.first(), rates.last())
        && *most > 1
    {
        let ratio = (rate_most / one.max(f64::EPSILON) * 100.0).round() / 100.0;
        report.figure(format!("scale_out_{most}_over_1"), format!("{most} processes / 1 process"), ratio, "×");
    }
    Ok(report)
}

/// Starts `processes` workers, enqueues the backlog, and returns the time from the first enqueue until
/// every job is completed.
async fn drain(
    scratch: &Scratch,
    store: &Store,
    agent_id: Uuid,
    jobs: usize,
    processes: usize,
    env: &[(&str, &str)],
) -> anyhow::Result<Duration> {
    // Started one after the other: the first one records the master key's check in the database.
    let mut workers = Vec::with_capacity(processes);
    for n in 0..processes {
        let mut worker = CortexChild::spawn(scratch, &format!("worker-{processes}-{n}"), &["worker"], env)?;
        let running = worker.watch_stdout("Cortex Plane worker running")?;
        let started = tokio::time::timeout(START_TIMEOUT, running).await;
        if !matches!(started, Ok(Ok(_))) {
            let log = worker.stop().unwrap_or_default();
            bail!("worker {n} did not start within {START_TIMEOUT:?}; its log:\n{log}");
        }
        workers.push(worker);
    }
    // Statistics of what earlier runs left, as autovacuum would have them on a running server.
    refresh_statistics(&scratch.database).await?;
    let before = counts(store).await?;
    let started = Instant::now();
    enqueue_bulk(store, agent_id, jobs, ENQUEUE_BATCH).await?;
    // Polled through the agent's status index: counting the whole job table 40 times a second took CPU
    // from the workers being measured.
    let elapsed = loop {
        if store.count_active_jobs(agent_id).await? == 0 {
            break started.elapsed();
        }
        if started.elapsed() > DRAIN_TIMEOUT {
            bail!("the backlog of {jobs} jobs did not drain within {DRAIN_TIMEOUT:?}");
        }
        tokio::time::sleep(POLL).await;
    };
    let now = counts(store).await?;
    if now.failed > before.failed || now.completed - before.completed != jobs {
        let logs: Vec<String> = workers.iter().map(CortexChild::log).collect();
        bail!(
            "{} of {jobs} jobs completed, {} failed; the workers' logs:\n{}",
            now.completed - before.completed,
            now.failed - before.failed,
            logs.join("\n")
        );
    }
    for worker in workers {
        worker.stop()?;
    }
    Ok(elapsed)
}

/// Jobs completed and jobs ended unsuccessfully.
struct Counts {
    completed: usize,
    failed: usize,
}

async fn counts(store: &Store) -> anyhow::Result<Counts> {
    let mut counts = Counts { completed: 0, failed: 0 };
    for (status, n) in store.count_jobs_by_status().await? {
        let n = usize::try_from(n)?;
        match status {
            JobStatus::Completed => counts.completed += n,
            JobStatus::Failed | JobStatus::TimedOut | JobStatus::DeadLetter => counts.failed += n,
            _ => {}
        }
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::process_counts;

    #[test]
    fn process_counts_double_up_to_the_maximum() {
        assert_eq!(process_counts(1), [1]);
        assert_eq!(process_counts(2), [1, 2]);
        assert_eq!(process_counts(3), [1, 2, 3]);
        assert_eq!(process_counts(4), [1, 2, 4]);
        assert_eq!(process_counts(6), [1, 2, 4, 6]);
    }
}
