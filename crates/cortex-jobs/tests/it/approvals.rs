//! Decisions resume waiting jobs exactly once; expiry times them out; the audit chain detects tampering.

use cortex_core::approval::{ApprovalStatus, DecidedVia, Decision, RiskTier};
use cortex_core::job::JobStatus;
use cortex_jobs::approvals::{DecisionError, decide, expire_due};
use cortex_store::Store;
use cortex_store::approvals::{Decider, NewApproval};
use cortex_store::jobs::{Job, Suspend};
use cortex_testkit::{TestStore, both_engines};
use serde_json::json;
use uuid::Uuid;

use crate::support::{agent, enqueue};

/// A job parked in `waiting_for_approval` on a fresh request; returns the job, approval id and token.
async fn waiting_job(store: &Store, action_type: &'static str) -> (Job, Uuid, String) {
    let agent_id = agent(store, 4).await;
    let job = enqueue(store, agent_id, "ok", |_| {}).await;
    let worker = Uuid::now_v7();
    store.claim_next(worker, false).await.unwrap().unwrap();
    let mut tx = store.begin().await.unwrap();
    let (approval, token) = tx
        .insert_approval(&NewApproval {
            job_id: job.id,
            tool_call_id: None,
            agent_id,
            action_type,
            action_summary: "send the report".into(),
            action_detail: json!({"tool_ref": "webhook:report", "arguments": {"to": "ops"}}),
            tool_ref: Some("webhook:report".into()),
            args_hash: Some("abc".into()),
            risk: RiskTier::P2,
            expires_at: store.clock().now() + chrono::Duration::hours(72),
        })
        .await
        .unwrap();
    tx.suspend(job.id, worker, Suspend::AwaitApproval, Some(approval.id)).await.unwrap();
    tx.commit().await.unwrap();
    (store.get_job(job.id).await.unwrap(), approval.id, token)
}

fn approver() -> Decider {
    Decider { user_id: None, api_key_id: Some(Uuid::now_v7()), via: DecidedVia::Api, actor: json!({"type": "api_key"}) }
}

both_engines!(approval_resumes_the_job_once, |t: TestStore| async move {
    let (job, approval_id, token) = waiting_job(&t.store, "tool").await;
    assert_eq!(job.status, JobStatus::WaitingForApproval);
    assert!(token.starts_with("cortex_apr_1_"));
    assert_eq!(t.store.find_approval_by_token(&token).await.unwrap().unwrap().id, approval_id);

    let approved = decide(&t.store, approval_id, Decision::Approve, &approver(), Some("looks fine")).await.unwrap();
    assert_eq!(approved.status, ApprovalStatus::Approved);
    let resumed = t.store.get_job(job.id).await.unwrap();
    assert_eq!(resumed.status, JobStatus::Scheduled);
    assert!(resumed.resume);
    assert!(matches!(
        decide(&t.store, approval_id, Decision::Reject, &approver(), None).await,
        Err(DecisionError::AlreadyDecided(ApprovalStatus::Approved))
    ));

    let mut tx = t.store.begin().await.unwrap();
    assert!(tx.claim_approved_execution(approval_id).await.unwrap());
    assert!(!tx.claim_approved_execution(approval_id).await.unwrap(), "an approval is good for one execution");
    tx.commit().await.unwrap();

    let audit = t.store.approval_audit(approval_id).await.unwrap();
    assert_eq!(audit.iter().map(|e| e.event.as_str()).collect::<Vec<_>>(), ["created", "decided", "executed"]);
    assert!(t.store.approval_chain_valid(approval_id).await.unwrap());
    t.execute_raw("UPDATE approval_audit SET details = '{\"decision\":\"reject\"}' WHERE event = 'decided'".into())
        .await
        .unwrap();
    assert!(!t.store.approval_chain_valid(approval_id).await.unwrap(), "tampering breaks the chain");
});

both_engines!(racing_approvers_have_one_winner, |t: TestStore| async move {
    let (_, approval_id, _) = waiting_job(&t.store, "tool").await;
    let store_a = t.store.clone();
    let store_b = if t.store.is_postgres() { t.reopen().await } else { t.store.clone() };
    let a =
        tokio::spawn(async move { decide(&store_a, approval_id, Decision::Approve, &approver(), None).await.is_ok() });
    let b =
        tokio::spawn(async move { decide(&store_b, approval_id, Decision::Reject, &approver(), None).await.is_ok() });
    let wins = [a.await.unwrap(), b.await.unwrap()].iter().filter(|won| **won).count();
    assert_eq!(wins, 1);
});

both_engines!(rejecting_a_job_gate_fails_the_job, |t: TestStore| async move {
    let (job, approval_id, _) = waiting_job(&t.store, "job").await;
    decide(&t.store, approval_id, Decision::Reject, &approver(), Some("not today")).await.unwrap();
    let failed = t.store.get_job(job.id).await.unwrap();
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(failed.error.unwrap().code, "approval_rejected");
});

both_engines!(expiry_times_the_job_out_without_retry, |t: TestStore| async move {
    let (job, approval_id, _) = waiting_job(&t.store, "tool").await;
    t.clock.advance(chrono::Duration::hours(71));
    assert_eq!(expire_due(&t.store).await.unwrap(), 0);
    t.clock.advance(chrono::Duration::hours(2));
    assert!(matches!(
        decide(&t.store, approval_id, Decision::Approve, &approver(), None).await,
        Err(DecisionError::Expired)
    ));
    let timed_out = t.store.get_job(job.id).await.unwrap();
    assert_eq!(timed_out.status, JobStatus::TimedOut, "expired before anyone decided");
    assert_eq!(timed_out.error.unwrap().code, "approval_expired");
    assert_eq!(t.store.get_approval(approval_id).await.unwrap().status, ApprovalStatus::Expired);
    assert!(matches!(
        decide(&t.store, approval_id, Decision::Approve, &approver(), None).await,
        Err(DecisionError::AlreadyDecided(ApprovalStatus::Expired))
    ));
});

both_engines!(cancelling_a_waiting_job_expires_its_request, |t: TestStore| async move {
    let (job, approval_id, _) = waiting_job(&t.store, "tool").await;
    cortex_jobs::cancel_job(&t.store, job.id).await.unwrap();
    assert_eq!(t.store.get_approval(approval_id).await.unwrap().status, ApprovalStatus::Expired);
    assert_eq!(t.store.get_job(job.id).await.unwrap().status, JobStatus::Failed);
});
