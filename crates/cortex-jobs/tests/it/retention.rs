//! Retention on both engines, with time moved by the manual clock: old ended jobs go with everything
//! hanging off them, recent and unfinished work stays, deltas are compacted, approvals and the audit log
//! follow their longer period, and one process sweeps at a time.

use std::time::Duration;

use cortex_core::approval::{DecidedVia, Decision, RiskTier, ToolCallState};
use cortex_core::event::EventType;
use cortex_jobs::retention::{LEASE_TTL, RetentionPolicy, Sweeper};
use cortex_store::Store;
use cortex_store::approvals::{ApprovalFilter, Decider, NewApproval};
use cortex_store::audit::{AuditFilter, NewAudit};
use cortex_store::budgets::{BudgetLine, BudgetScope, TOTAL_PERIOD};
use cortex_store::events::{EventScope, NewEvent};
use cortex_store::jobs::{AttemptEnd, Job};
use cortex_store::tool_calls::NewToolCall;
use cortex_testkit::{TestStore, both_engines};
use serde_json::json;
use uuid::Uuid;

use crate::support::{agent, enqueue};

const DAY: chrono::Duration = chrono::Duration::days(1);

/// Small batches, so every step needs several transactions.
fn policy() -> RetentionPolicy {
    RetentionPolicy { batch_size: 2, ..RetentionPolicy::with_days(30, 365) }
}

/// What a job leaves behind while it runs.
struct Traces {
    session: bool,
    approval: bool,
}

/// A job claimed by a worker that streamed three deltas and a message, made a tool call, spent budget
/// and (optionally) asked for an approval that was granted; it is still running.
async fn running_job(store: &Store, agent_id: Uuid, traces: Traces) -> Job {
    let session_id = if traces.session {
        let mut tx = store.begin().await.unwrap();
        let session = tx.insert_session(agent_id, None, "rest").await.unwrap();
        tx.commit().await.unwrap();
        Some(session.id)
    } else {
        None
    };
    let job = enqueue(store, agent_id, "ok", |new| new.session_id = session_id).await;
    let worker = Uuid::now_v7();
    store.register_worker(worker, "retention-test").await.unwrap();
    let claimed = store.claim_next(worker, false).await.unwrap().unwrap();
    assert_eq!(claimed.id, job.id);

    let mut tx = store.begin().await.unwrap();
    if let Some(session_id) = session_id {
        tx.append_message(session_id, "user", "hello", Some(job.id), None).await.unwrap();
    }
    for text in ["Hel", "lo ", "there"] {
        tx.emit(NewEvent::new(agent_id, Some(job.id), EventType::LlmDelta, json!({"text": text})));
    }
    tx.emit(NewEvent::new(agent_id, Some(job.id), EventType::LlmMessage, json!({"text": "Hello there"})));
    let call = tx
        .insert_tool_call(&NewToolCall {
            job_id: job.id,
            agent_id,
            call_id: "call-1".into(),
            turn: 1,
            tool_ref: "echo".into(),
            input: json!({}),
            input_hash: "h".into(),
            state: ToolCallState::Running,
            output: None,
            is_error: false,
            idempotent: true,
        })
        .await
        .unwrap();
    let line = BudgetLine {
        scope: BudgetScope::Job,
        scope_id: job.id,
        period: TOTAL_PERIOD.into(),
        token_limit: None,
        usd_limit: None,
    };
    let reservation = tx.reserve_budget(job.id, &[line], 10, 0.0).await.unwrap().unwrap();
    tx.settle_budget(reservation, 7, 0.0).await.unwrap();
    if traces.approval {
        let (approval, _) = tx
            .insert_approval(&NewApproval {
                job_id: job.id,
                tool_call_id: Some(call.id),
                agent_id,
                action_type: "tool",
                action_summary: "echo".into(),
                action_detail: json!({}),
                tool_ref: Some("echo".into()),
                args_hash: None,
                risk: RiskTier::P2,
                expires_at: store.clock().now() + chrono::Duration::hours(72),
            })
            .await
            .unwrap();
        let decider = Decider { user_id: None, api_key_id: None, via: DecidedVia::Api, actor: json!({"type": "test"}) };
        tx.decide_approval(approval.id, Decision::Approve, &decider, None).await.unwrap().unwrap();
    }
    tx.commit().await.unwrap();
    store.get_job(job.id).await.unwrap()
}

async fn ended_job(store: &Store, agent_id: Uuid, traces: Traces) -> Job {
    let job = running_job(store, agent_id, traces).await;
    let mut tx = store.begin().await.unwrap();
    let worker = job.claimed_by.unwrap();
    let done = tx.end_attempt(job.id, worker, &AttemptEnd::Completed { result: json!({"response": "hi"}) }).await;
    tx.commit().await.unwrap();
    done.unwrap()
}

async fn audit(store: &Store, action: &str) {
    let mut tx = store.begin().await.unwrap();
    tx.audit(NewAudit {
        actor_type: "system",
        actor_id: None,
        action: action.into(),
        target_type: "job",
        target_id: None,
        details: json!({}),
        ip: None,
        request_id: None,
    })
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

async fn loose_event(store: &Store, agent_id: Uuid) -> i64 {
    let mut tx = store.begin().await.unwrap();
    tx.emit(NewEvent::new(agent_id, None, EventType::BreakerTrip, json!({"provider": "openai"})));
    tx.commit().await.unwrap();
    store.last_event_seq().await.unwrap()
}

async fn event_types(store: &Store, job_id: Uuid) -> Vec<EventType> {
    let events = store.events_after(EventScope::Job(job_id), 0, 1000).await.unwrap();
    events.into_iter().map(|event| event.event_type).collect()
}

fn without_state_events(types: Vec<EventType>) -> Vec<EventType> {
    types.into_iter().filter(|t| *t != EventType::JobState && *t != EventType::ApprovalDecided).collect()
}

both_engines!(old_ended_work_goes_and_everything_else_stays, |t: TestStore| async move {
    let store = t.store.clone();
    let agent_id = agent(&store, 10).await;
    let mut sweeper = Sweeper::new(Uuid::now_v7());

    // Day 0: a job whose approval is as old as it is, an audit entry, an agent-level event.
    let approved_long_ago = ended_job(&store, agent_id, Traces { session: false, approval: true }).await;
    audit(&store, "old.action").await;
    let old_loose = loose_event(&store, agent_id).await;

    // Day 370: a plain job, a job with a fresh approval, an audit entry, a job that never ends.
    t.clock.advance(DAY * 370);
    let plain = ended_job(&store, agent_id, Traces { session: true, approval: false }).await;
    let approved_lately = ended_job(&store, agent_id, Traces { session: false, approval: true }).await;
    audit(&store, "recent.action").await;
    let still_running = running_job(&store, agent_id, Traces { session: false, approval: false }).await;

    // Day 405: a job ends; an hour later the sweep runs.
    t.clock.advance(DAY * 35);
    let recent = ended_job(&store, agent_id, Traces { session: false, approval: false }).await;
    let recent_loose = loose_event(&store, agent_id).await;
    let delta_seqs: Vec<i64> = store
        .events_after(EventScope::Job(recent.id), 0, 100)
        .await
        .unwrap()
        .iter()
        .filter(|event| event.event_type == EventType::LlmDelta)
        .map(|event| event.seq)
        .collect();
    t.clock.advance(chrono::Duration::hours(1));

    let report = sweeper.sweep(&store, &policy()).await.unwrap().expect("the only sweeper leads");
    assert_eq!((report.jobs, report.approvals, report.audit_entries, report.loose_events), (2, 1, 1, 1), "{report:?}");

    for gone in [&approved_long_ago, &plain] {
        assert!(store.get_job(gone.id).await.is_err(), "job ended 405 and 35 days ago is deleted");
        assert!(event_types(&store, gone.id).await.is_empty());
        assert!(store.tool_calls_of_job(gone.id).await.unwrap().is_empty());
        assert!(store.budget_usage(BudgetScope::Job, gone.id).await.unwrap().is_empty());
    }
    let session = plain.session_id.unwrap();
    let messages = store.list_messages(session, 0, 10).await.unwrap();
    assert_eq!((messages.len(), messages[0].job_id), (1, None), "the conversation stays, unlinked");

    // Kept for its approval (365 days), without its events.
    assert!(store.get_job(approved_lately.id).await.is_ok());
    assert_eq!(store.tool_calls_of_job(approved_lately.id).await.unwrap().len(), 1);
    assert!(event_types(&store, approved_lately.id).await.is_empty());
    let approvals = store.list_approvals(&ApprovalFilter::default(), None, 10).await.unwrap();
    assert_eq!(approvals.items.len(), 1);
    assert!(store.approval_chain_valid(approvals.items[0].id).await.unwrap());

    // Running work keeps everything, deltas included.
    let running_types = without_state_events(event_types(&store, still_running.id).await);
    assert_eq!(running_types.iter().filter(|t| **t == EventType::LlmDelta).count(), 3);

    // A recently ended job loses its deltas only; a reader resuming after a deleted delta goes on.
    assert!(store.get_job(recent.id).await.is_ok());
    let kept = without_state_events(event_types(&store, recent.id).await);
    assert_eq!(kept, [EventType::LlmMessage]);
    let resumed = store.events_after(EventScope::Job(recent.id), delta_seqs[1], 100).await.unwrap();
    assert!(resumed.iter().any(|event| event.event_type == EventType::LlmMessage), "{resumed:?}");
    assert_eq!(store.tool_calls_of_job(recent.id).await.unwrap().len(), 1);

    let loose: Vec<i64> =
        store.events_after(EventScope::Agent(agent_id), 0, 1000).await.unwrap().iter().map(|e| e.seq).collect();
    assert!(!loose.contains(&old_loose) && loose.contains(&recent_loose));
    let audit = store.list_audit(&AuditFilter::default(), None, 10).await.unwrap();
    let actions: Vec<&str> = audit.items.iter().map(|entry| entry.action.as_str()).collect();
    assert_eq!(actions, ["recent.action"]);

    let again = sweeper.sweep(&store, &policy()).await.unwrap().unwrap();
    assert!(again.is_empty(), "a second sweep finds nothing: {again:?}");
});

both_engines!(deltas_wait_out_their_grace_and_retention_can_be_off, |t: TestStore| async move {
    let store = t.store.clone();
    let agent_id = agent(&store, 4).await;
    let job = ended_job(&store, agent_id, Traces { session: false, approval: false }).await;
    let forever = RetentionPolicy { keep: None, keep_audit: None, ..policy() };
    let mut sweeper = Sweeper::new(Uuid::now_v7());

    let early = sweeper.sweep(&store, &forever).await.unwrap().unwrap();
    assert_eq!(early.deltas, 0, "a reader may still be replaying the stream");
    t.clock.advance(DAY * 400);
    let report = sweeper.sweep(&store, &forever).await.unwrap().unwrap();
    assert_eq!(report, cortex_jobs::retention::RetentionReport { deltas: 3, ..Default::default() });
    assert!(store.get_job(job.id).await.is_ok(), "with retention off nothing else goes");

    // The next sweeps go on from where this one stopped: what ends later is compacted in turn, also
    // jobs that ended at the same instant, more of them than a batch holds.
    let mut later = Vec::new();
    for _ in 0..3 {
        later.push(ended_job(&store, agent_id, Traces { session: false, approval: false }).await);
    }
    assert_eq!(sweeper.sweep(&store, &forever).await.unwrap().unwrap().deltas, 0, "still within its grace");
    t.clock.advance(chrono::Duration::hours(1));
    assert_eq!(sweeper.sweep(&store, &forever).await.unwrap().unwrap().deltas, 9);
    for job in &later {
        assert_eq!(without_state_events(event_types(&store, job.id).await), [EventType::LlmMessage]);
    }
});

both_engines!(one_process_sweeps_at_a_time, |t: TestStore| async move {
    let store = t.store.clone();
    let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
    let policy = policy();
    let (mut one, mut two) = (Sweeper::new(first), Sweeper::new(second));
    let (a, b) = tokio::join!(one.sweep(&store, &policy), two.sweep(&store, &policy));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a.is_some() != b.is_some(), "exactly one leads: {a:?} / {b:?}");
    let (leader, other) = if a.is_some() { (first, second) } else { (second, first) };
    assert!(Sweeper::new(leader).sweep(&store, &policy).await.unwrap().is_some(), "the leader keeps its lease");
    assert!(Sweeper::new(other).sweep(&store, &policy).await.unwrap().is_none());

    // The leader stops renewing (it died): the lease passes on once it expires.
    t.clock.advance(chrono::Duration::from_std(LEASE_TTL + Duration::from_secs(1)).unwrap());
    assert!(Sweeper::new(other).sweep(&store, &policy).await.unwrap().is_some());
    assert!(Sweeper::new(leader).sweep(&store, &policy).await.unwrap().is_none());
});
