//! A committed notification reaches the committing process's own subscribers when the commit returns, and
//! once (issue 17): on PostgreSQL a chat turn's wake-ups (job ready, job finished) no longer wait for
//! `LISTEN` to bring them back, and the listener drops that echo. An event notification says whether
//! its transaction changed the job's state, so a task waiting for a job's outcome re-reads it only then.

use std::collections::HashMap;
use std::time::Duration;

use cortex_core::event::EventType;
use cortex_store::events::{EventScope, NewEvent};
use cortex_store::{DatabaseConfig, Notification};
use cortex_testkit::{TestStore, both_engines};
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::support::{agent_with_limit, enqueue, task};

both_engines!(a_committed_notification_reaches_this_process_at_commit_and_once, |t: TestStore| async move {
    let mut notifications = t.store.subscribe();
    let postgres = matches!(t.config, DatabaseConfig::Postgres { .. });
    if postgres {
        // The listener announces a resync once it listens; from then on every NOTIFY reaches it.
        wait_for(&mut notifications, |n| *n == Notification::Resync).await;
    }
    let ours = Notification::CancelRequested { job_id: Uuid::now_v7() };
    let mut tx = t.store.begin().await.unwrap();
    tx.notify(ours.clone());
    tx.commit().await.unwrap();
    assert_eq!(notifications.try_recv(), Ok(ours.clone()), "not published when the commit returned");

    if postgres {
        // Another process's notification, committed after ours: `LISTEN` delivers in commit order, so an
        // echo of ours would arrive before it.
        let other = t.reopen().await;
        let marker = Notification::Steered { job_id: Uuid::now_v7() };
        let mut tx = other.begin().await.unwrap();
        tx.notify(marker.clone());
        tx.commit().await.unwrap();
        let before_marker = wait_for(&mut notifications, |n| *n == marker).await;
        assert!(!before_marker.contains(&ours), "our own notification came back through LISTEN: {before_marker:?}");
    }
});

both_engines!(an_event_notification_says_whether_the_job_changed_state, |t: TestStore| async move {
    let agent_id = agent_with_limit(&t.store, "notified", 1).await;
    let mut notifications = t.store.subscribe();
    let job = enqueue(&t.store, task(agent_id)).await;
    let mut tx = t.store.begin().await.unwrap();
    tx.emit(NewEvent::new(agent_id, Some(job.id), EventType::LlmDelta, serde_json::json!({"text": "hi"})));
    tx.commit().await.unwrap();

    let mut changes = Vec::new();
    while let Ok(notification) = notifications.try_recv() {
        if let Notification::Event { job_id: Some(id), state_changed, .. } = notification
            && id == job.id
        {
            changes.push(state_changed);
        }
    }
    assert_eq!(changes, [true, false], "the insert changed the state (job.state), the delta did not");
});

// Every event notification carries the seq its stream's last event was stored with, in this process and
// (PostgreSQL: numbered in the statement that sends the `NOTIFY`) in another one; 300 jobs' notifications
// need several payloads.
both_engines!(event_notifications_carry_the_stored_seqs_here_and_elsewhere, |t: TestStore| async move {
    let agent_id = agent_with_limit(&t.store, "numbered", 1).await;
    let jobs: Vec<Uuid> = {
        let mut jobs = Vec::new();
        for _ in 0..300 {
            jobs.push(enqueue(&t.store, task(agent_id)).await.id);
        }
        jobs
    };
    let mut here = t.store.subscribe();
    // Another process on the same database (SQLite has one process).
    let other = match t.config {
        DatabaseConfig::Postgres { .. } => Some(t.reopen().await),
        _ => None,
    };
    let mut elsewhere = other.as_ref().map(|other| other.subscribe());
    if let Some(elsewhere) = &mut elsewhere {
        wait_for(elsewhere, |n| *n == Notification::Resync).await;
    }
    let mut tx = t.store.begin().await.unwrap();
    for (i, job_id) in jobs.iter().enumerate() {
        for step in 0..(i % 3 + 1) {
            let payload = serde_json::json!({"text": step});
            tx.emit(NewEvent::new(agent_id, Some(*job_id), EventType::LlmDelta, payload));
        }
    }
    let marker = Notification::Steered { job_id: Uuid::now_v7() };
    tx.notify(marker.clone());
    tx.commit().await.unwrap();

    let stored = t.store.events_after(EventScope::Agent(agent_id), 0, 10_000).await.unwrap();
    let mut last: HashMap<Uuid, i64> = HashMap::new();
    for event in stored.iter().filter(|event| event.event_type == EventType::LlmDelta) {
        last.insert(event.job_id.unwrap(), event.seq);
    }
    assert_eq!(last.len(), 300);
    let announced = |notifications: Vec<Notification>| -> HashMap<Uuid, i64> {
        notifications
            .into_iter()
            .filter_map(|n| match n {
                Notification::Event { seq, job_id: Some(job_id), agent_id: a, .. } if a == agent_id => {
                    Some((job_id, seq))
                }
                _ => None,
            })
            .collect()
    };
    let mut local = Vec::new();
    while let Ok(notification) = here.try_recv() {
        // This store's own listener announces when it starts listening, at any moment.
        if notification != Notification::Resync {
            local.push(notification);
        }
    }
    assert_eq!(local.first(), Some(&marker), "the transaction's own notifications come first");
    assert_eq!(announced(local), last, "this process's notifications");
    if let Some(mut elsewhere) = elsewhere {
        let mut remote = Vec::new();
        while remote.iter().filter(|n| matches!(n, Notification::Event { .. })).count() < 300 {
            remote.push(
                tokio::time::timeout(Duration::from_secs(60), elsewhere.recv())
                    .await
                    .expect("the notifications never came")
                    .unwrap(),
            );
        }
        assert!(remote.contains(&marker));
        assert_eq!(announced(remote), last, "the notifications LISTEN delivered");
    }
});

/// Receives until `done` matches and returns what came before it. The timeout only keeps a broken build
/// from hanging; nothing waits on it.
async fn wait_for(
    notifications: &mut broadcast::Receiver<Notification>,
    done: impl Fn(&Notification) -> bool,
) -> Vec<Notification> {
    let receive = async {
        let mut seen = Vec::new();
        loop {
            match notifications.recv().await {
                Ok(notification) if done(&notification) => return seen,
                Ok(notification) => seen.push(notification),
                Err(err) => panic!("notifications ended: {err}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), receive).await.expect("the notification never came")
}
