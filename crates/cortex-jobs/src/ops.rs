//! Operator actions on jobs: cancel and manual retry (SPEC §4.1, §4.7).

use cortex_core::job::{JobError, JobStatus};
use cortex_store::jobs::{Job, QueuedChange};
use cortex_store::{Store, StoreError};
use uuid::Uuid;

use crate::retry::emit_failed;

/// Why an operator action was refused.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error("job not found")]
    NotFound,
    #[error("job is {status}; {action} is not possible in this state")]
    InvalidState { status: JobStatus, action: &'static str },
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for OpError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound { .. } => Self::NotFound,
            other => Self::Store(other),
        }
    }
}

/// Cancels a job. A running job is flagged and its worker stops it within seconds (the job ends
/// `failed/cancelled` then); queued or waiting jobs fail at once. Terminal jobs cannot be cancelled.
pub async fn cancel_job(store: &Store, job_id: Uuid) -> Result<Job, OpError> {
    let mut tx = store.begin().await?;
    let job = tx.lock_job(job_id).await?;
    let job = match job.status {
        JobStatus::Running => {
            tx.request_cancel(job_id).await?;
            job
        }
        JobStatus::Pending | JobStatus::Scheduled | JobStatus::Retrying | JobStatus::WaitingForApproval => {
            let error = JobError::cancelled();
            let change = QueuedChange { error: Some(error.clone()), ..QueuedChange::default() };
            let job = tx.move_job(job_id, job.status, JobStatus::Failed, &change).await?;
            tx.expire_pending_approvals_of_job(job_id, "job_cancelled").await?;
            emit_failed(&mut tx, &job, &error);
            job
        }
        status => return Err(OpError::InvalidState { status, action: "cancel" }),
    };
    tx.commit().await?;
    Ok(job)
}

/// Queues a failed, timed-out or dead-lettered job again now (through `retrying`), granting one more attempt when the
/// attempts were used up.
pub async fn retry_job(store: &Store, job_id: Uuid) -> Result<Job, OpError> {
    let mut tx = store.begin().await?;
    let job = tx.lock_job(job_id).await?;
    if !job.status.is_retryable_by_operator() {
        return Err(OpError::InvalidState { status: job.status, action: "retry" });
    }
    let change = QueuedChange {
        run_at: Some(tx.clock_now()),
        max_attempts: (job.attempt >= job.max_attempts).then_some(job.attempt + 1),
        ..QueuedChange::default()
    };
    tx.move_job(job_id, job.status, JobStatus::Retrying, &change).await?;
    // Due now: skip the backoff wait.
    let job = tx.move_job(job_id, JobStatus::Retrying, JobStatus::Scheduled, &QueuedChange::default()).await?;
    tx.commit().await?;
    Ok(job)
}
