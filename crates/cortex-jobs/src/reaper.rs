//! Recovery of work held by dead workers (SPEC §4.5).

use std::time::Duration;

use cortex_core::job::{ErrorClass, JobError};
use cortex_store::jobs::AttemptEnd;
use cortex_store::{Result, Store, StoreError};

use crate::breaker::AutoQuarantine;
use crate::retry::settle_failure;

/// Declares workers silent for `dead_after` dead and moves every running job without a live owner to
/// `timed_out/worker_lost`, from where the normal retry rules bring it back within seconds. Also repairs
/// sessions left with waiting jobs and nothing active, expires overdue approval requests, resumes jobs
/// whose request was decided and keeps PostgreSQL's statistics of the queue fresh. Returns the number of
/// recovered jobs.
pub async fn reap_once(store: &Store, dead_after: Duration, auto: AutoQuarantine) -> Result<usize> {
    let now = store.clock().now();
    let mut tx = store.begin().await?;
    let dead = tx.declare_dead_workers(now - chrono::Duration::from_std(dead_after).unwrap_or_default()).await?;
    tx.repair_stuck_sessions().await?;
    tx.commit().await?;
    for worker in &dead {
        tracing::warn!(worker_id = %worker.id, worker = %worker.name, "worker declared dead");
    }

    if store.refresh_job_statistics().await? {
        tracing::debug!("refreshed planner statistics of the job table");
    }
    crate::approvals::expire_due(store).await?;
    crate::approvals::resume_decided(store).await?;
    let mut recovered = 0;
    for job in store.orphaned_running_jobs().await? {
        let Some(owner) = job.claimed_by else { continue };
        let error = JobError::new(ErrorClass::Timeout, "worker_lost", "the worker running this job stopped responding");
        let mut tx = store.begin().await?;
        match tx.end_attempt(job.id, owner, &AttemptEnd::TimedOut { error: error.clone() }).await {
            Ok(timed_out) => {
                let settled = settle_failure(&mut tx, timed_out, &error, auto).await?;
                tx.commit().await?;
                recovered += 1;
                tracing::warn!(job_id = %settled.id, status = %settled.status, "recovered job of a dead worker");
            }
            // Someone else got there first.
            Err(StoreError::StaleState { .. }) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(recovered)
}
