//! The event log under concurrent writers: readers following a stream never miss an event, never see
//! one twice, and see ids increase (SPEC Appendix B, Event order) — without writers being serialised.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cortex_core::event::EventType;
use cortex_store::Store;
use cortex_store::events::{EventScope, NewEvent};
use cortex_testkit::{TestStore, both_engines};
use serde_json::json;
use tokio::time::Instant;
use uuid::Uuid;

use crate::support::agent_with_limit;

const WRITERS: usize = 8;
const TRANSACTIONS_PER_WRITER: usize = 40;
const READ_BATCH: i64 = 50;

/// Commits `TRANSACTIONS_PER_WRITER` transactions of 1–3 events each, spread over `agents`.
async fn write(store: Store, writer: usize, agents: Vec<Uuid>) -> usize {
    let mut written = 0;
    for n in 0..TRANSACTIONS_PER_WRITER {
        let mut tx = store.begin().await.unwrap();
        for part in 0..=(writer + n) % 3 {
            let agent = agents[(writer + n + part) % agents.len()];
            tx.emit(NewEvent::new(
                agent,
                None,
                EventType::MessageReceived,
                json!({"writer": writer, "n": n, "part": part}),
            ));
            written += 1;
        }
        // Let other writers interleave between this transaction's inserts and its commit.
        tokio::task::yield_now().await;
        tx.commit().await.unwrap();
    }
    written
}

/// Follows `scope` from the start like an SSE stream and returns every delivered seq, checking on the way
/// that ids only increase. Ends at the first read after the writers are done that finds nothing more
/// (nothing new, nothing pending): every event is committed by then, so a missed one stays missed.
async fn follow(store: Store, scope: EventScope, done: Arc<AtomicBool>) -> Vec<i64> {
    let mut notifications = store.subscribe();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut delivered: Vec<i64> = Vec::new();
    let mut cursor = 0;
    loop {
        // Read before looking at the events, so the last read surely started after the last commit.
        let finished = done.load(Ordering::SeqCst);
        let read = store.read_events(scope, cursor, READ_BATCH).await.unwrap();
        for event in &read.events {
            assert!(event.seq > cursor, "{scope:?}: seq {} delivered after {cursor}", event.seq);
            cursor = event.seq;
            delivered.push(event.seq);
        }
        if finished && read.events.is_empty() && !read.pending {
            return delivered;
        }
        assert!(
            Instant::now() < deadline,
            "{scope:?}: stream stuck after {} events (cursor {cursor}, pending {})",
            delivered.len(),
            read.pending
        );
        if read.events.is_empty() {
            // Like a stream: wait for news, re-reading soon anyway (pending rows announce nothing).
            let _ = tokio::time::timeout(Duration::from_millis(2), notifications.recv()).await;
        }
    }
}

both_engines!(concurrent_writers_leave_no_gaps_behind_readers, |t: TestStore| async move {
    let agents = vec![
        agent_with_limit(&t.store, "ev-a", 1).await,
        agent_with_limit(&t.store, "ev-b", 1).await,
        agent_with_limit(&t.store, "ev-c", 1).await,
    ];
    let done = Arc::new(AtomicBool::new(false));
    let all = tokio::spawn(follow(t.store.clone(), EventScope::All, done.clone()));
    let one_agent = tokio::spawn(follow(t.store.clone(), EventScope::Agent(agents[0]), done.clone()));
    let writers: Vec<_> =
        (0..WRITERS).map(|writer| tokio::spawn(write(t.store.clone(), writer, agents.clone()))).collect();
    let mut total = 0;
    for writer in writers {
        total += writer.await.unwrap();
    }
    done.store(true, Ordering::SeqCst);
    let all = all.await.unwrap();
    let one_agent = one_agent.await.unwrap();

    // The log as it stands now, read in one go: a stream must have delivered exactly this.
    let stored = t.store.events_after(EventScope::All, 0, 100_000).await.unwrap();
    assert_eq!(stored.len(), total);
    let stored_seqs: Vec<i64> = stored.iter().map(|e| e.seq).collect();
    assert_eq!(all.len(), stored_seqs.len(), "the all-jobs stream missed or repeated events");
    assert_eq!(all, stored_seqs, "the all-jobs stream delivered another sequence than the log holds");
    let of_agent: Vec<i64> = stored.iter().filter(|e| e.agent_id == agents[0]).map(|e| e.seq).collect();
    assert_eq!(one_agent, of_agent, "the agent stream missed or repeated events");
    assert_eq!(all.iter().collect::<HashSet<_>>().len(), all.len(), "ids are unique");
    assert_eq!(t.store.last_event_seq().await.unwrap(), *stored_seqs.last().unwrap());
});
