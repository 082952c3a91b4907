//! What a human decision (or its absence) does to a waiting job (SPEC §7.3–§7.5).
//!
//! Approve or reject: the request is decided with a guarded update and the job goes back to the queue
//! (`waiting_for_approval` → `scheduled`, resuming its attempt), in one transaction; the resumed run finds
//! the decision on the request and runs the call at most once (or tells the model it was refused).
//! Rejecting a whole-job gate fails the job instead. Expiry times the job out with
//! `approval_expired`, which is never retried.

use cortex_core::approval::{ApprovalStatus, Decision};
use cortex_core::event::EventType;
use cortex_core::job::{ErrorClass, JobError, JobStatus};
use cortex_store::approvals::{Approval, DecideRefusal, Decider};
use cortex_store::events::NewEvent;
use cortex_store::jobs::QueuedChange;
use cortex_store::{Store, StoreError, Tx};
use serde_json::json;
use uuid::Uuid;

use crate::retry::emit_failed;

/// Why a decision was refused.
#[derive(Debug, thiserror::Error)]
pub enum DecisionError {
    #[error("approval not found")]
    NotFound,
    #[error("the approval was already {0}")]
    AlreadyDecided(ApprovalStatus),
    #[error("the approval expired before the decision")]
    Expired,
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for DecisionError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound { .. } => Self::NotFound,
            other => Self::Store(other),
        }
    }
}

/// Applies a decision and puts the job back in motion. Final and idempotent: a second decision gets
/// `AlreadyDecided`, and racing deciders cannot both win.
pub async fn decide(
    store: &Store,
    approval_id: Uuid,
    decision: Decision,
    decider: &Decider,
    reason: Option<&str>,
) -> Result<Approval, DecisionError> {
    let mut tx = store.begin().await?;
    let approval = match tx.decide_approval(approval_id, decision, decider, reason).await? {
        Ok(approval) => approval,
        Err(DecideRefusal::AlreadyDecided(status)) => return Err(DecisionError::AlreadyDecided(status)),
        Err(DecideRefusal::Expired) => {
            // Found overdue before the sweeper: settle it now so the job is not left waiting.
            drop(tx);
            expire_due(store).await?;
            return Err(DecisionError::Expired);
        }
    };
    resume_job(&mut tx, &approval, decision).await?;
    tx.commit().await?;
    let outcome = if decision == Decision::Approve { "approved" } else { "rejected" };
    count_decision(&approval, outcome);
    Ok(approval)
}

/// `cortex_approvals_total{risk,outcome}` (SPEC §16.5), counted once a decision is committed.
fn count_decision(approval: &Approval, outcome: &'static str) {
    metrics::counter!("cortex_approvals_total", "risk" => approval.risk.as_str(), "outcome" => outcome).increment(1);
}

async fn resume_job(tx: &mut Tx, approval: &Approval, decision: Decision) -> Result<(), StoreError> {
    let job = tx.lock_job(approval.job_id).await?;
    if job.status != JobStatus::WaitingForApproval || job.approval_id != Some(approval.id) {
        // The job moved on (cancelled, or waits for another request): nothing to resume.
        return Ok(());
    }
    if approval.action_type == "job" && decision == Decision::Reject {
        let error = JobError::final_(ErrorClass::Permanent, "approval_rejected", "a human rejected this job");
        let change = QueuedChange { error: Some(error.clone()), ..QueuedChange::default() };
        let failed = tx.move_job(job.id, JobStatus::WaitingForApproval, JobStatus::Failed, &change).await?;
        emit_failed(tx, &failed, &error);
        return Ok(());
    }
    let change = QueuedChange { resume: true, run_at: Some(tx.clock_now()), ..QueuedChange::default() };
    tx.move_job(job.id, JobStatus::WaitingForApproval, JobStatus::Scheduled, &change).await?;
    Ok(())
}

/// Expires overdue requests and times out their jobs; returns how many requests expired.
pub async fn expire_due(store: &Store) -> Result<usize, StoreError> {
    let mut expired_total = 0;
    loop {
        let mut tx = store.begin().await?;
        let expired = tx.expire_due_approvals(100).await?;
        for approval in &expired {
            let job = tx.lock_job(approval.job_id).await?;
            if job.status == JobStatus::WaitingForApproval && job.approval_id == Some(approval.id) {
                let error = JobError::final_(
                    ErrorClass::Timeout,
                    "approval_expired",
                    "nobody decided the approval request in time",
                );
                let change = QueuedChange { error: Some(error.clone()), ..QueuedChange::default() };
                let timed_out =
                    tx.move_job(job.id, JobStatus::WaitingForApproval, JobStatus::TimedOut, &change).await?;
                emit_failed(&mut tx, &timed_out, &error);
            }
            tx.emit(NewEvent::new(
                approval.agent_id,
                Some(approval.job_id),
                EventType::ApprovalDecided,
                json!({"approval_id": approval.id, "status": "expired", "via": "expiry"}),
            ));
        }
        tx.commit().await?;
        for approval in &expired {
            count_decision(approval, "expired");
        }
        expired_total += expired.len();
        if expired.len() < 100 {
            return Ok(expired_total);
        }
    }
}

/// Re-queues jobs left waiting although their request was already decided (a crash between the two
/// writes of an older version, or a manual repair). Returns how many were resumed.
pub async fn resume_decided(store: &Store) -> Result<usize, StoreError> {
    let stuck = store.waiting_jobs_with_decided_approvals().await?;
    let mut resumed = 0;
    for (job_id, approval_id) in stuck {
        let mut tx = store.begin().await?;
        let approval = tx.lock_approval(approval_id).await?;
        let decision = match approval.status {
            ApprovalStatus::Approved => Decision::Approve,
            ApprovalStatus::Rejected => Decision::Reject,
            _ => continue,
        };
        let job = tx.lock_job(job_id).await?;
        if job.status == JobStatus::WaitingForApproval {
            resume_job(&mut tx, &approval, decision).await?;
            resumed += 1;
        }
        tx.commit().await?;
    }
    Ok(resumed)
}
