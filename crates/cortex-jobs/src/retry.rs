//! What happens after a failed or timed-out attempt (SPEC §4.6): retry with backoff, dead-letter, or rest.

use cortex_core::event::EventType;
use cortex_core::job::{JobError, JobStatus, RetryDecision, decide_retry};
use cortex_store::events::NewEvent;
use cortex_store::jobs::{Job, QueuedChange};
use cortex_store::{Result, Tx};
use serde_json::json;

use crate::breaker::{AutoQuarantine, count_final_failure};

/// Applies the retry policy to a job that just entered `failed` or `timed_out`, in the same transaction.
/// Emits `job.failed` when the failure is final (rest or dead letter), and counts such a failure toward the
/// agent's breaker (which may quarantine the agent in this transaction).
pub async fn settle_failure(tx: &mut Tx, job: Job, error: &JobError, auto: AutoQuarantine) -> Result<Job> {
    let decision = decide_retry(error, job.attempt, job.max_attempts, job.timeout_seconds, &mut rand::rng());
    metrics::counter!("cortex_jobs_total", "kind" => job.kind.as_str(), "status" => job.status.as_str()).increment(1);
    let job = match decision {
        RetryDecision::Retry { delay, next_timeout_seconds } => {
            metrics::counter!("cortex_job_retries_total", "class" => error.class.as_str()).increment(1);
            let run_at = tx.clock_now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
            let change = QueuedChange {
                run_at: Some(run_at),
                timeout_seconds: Some(next_timeout_seconds),
                ..QueuedChange::default()
            };
            tx.move_job(job.id, job.status, JobStatus::Retrying, &change).await?
        }
        RetryDecision::DeadLetter => {
            tx.move_job(job.id, job.status, JobStatus::DeadLetter, &QueuedChange::default()).await?
        }
        RetryDecision::Rest => job,
    };
    if job.status != JobStatus::Retrying {
        emit_failed(tx, &job, error);
        tx.queue_channel_failure(&job, &error.code).await?;
        count_final_failure(tx, &job, error, auto).await?;
    }
    Ok(job)
}

/// Appends the `job.failed` event of a job whose failure is final.
pub(crate) fn emit_failed(tx: &mut Tx, job: &Job, error: &JobError) {
    tx.emit(NewEvent {
        session_id: job.session_id,
        ..NewEvent::new(
            job.agent_id,
            Some(job.id),
            EventType::JobFailed,
            json!({"status": job.status, "error": {"class": error.class, "code": error.code, "message": error.message}}),
        )
    });
}
