//! SSE fan-out (issue 17): one reader per followed scope shared by its subscribers. Every subscriber
//! gets every event exactly once in id order — many at once, a slow one whose broadcast lagged, one
//! resuming mid-stream — while the log is read once per wake-up, not once per subscriber; the reader of
//! a scope stops when its last subscriber leaves.

use std::sync::Arc;
use std::time::Duration;

use cortex_api::sse_hub::{Delivery, SseHub, StreamSpec, Subscription};
use cortex_core::event::EventType;
use cortex_store::Store;
use cortex_store::events::{EventScope, NewEvent};
use cortex_testkit::{TestStore, both_engines};
use futures::StreamExt;
use futures::stream::BoxStream;
use serde_json::json;
use tokio::sync::{Barrier, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::app::TestApp;

/// Longest any wait in these tests may take before it counts as a failure (not a synchronisation).
const PATIENCE: Duration = Duration::from_secs(60);

/// Reads SSE event ids from a response, frame by frame.
struct SseClient {
    body: BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

impl SseClient {
    fn new(response: reqwest::Response) -> Self {
        assert_eq!(response.status(), 200);
        Self { body: response.bytes_stream().boxed(), buffer: String::new() }
    }

    /// The id of the next event (comments such as pings are passed over).
    async fn next_id(&mut self) -> i64 {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                if let Some(id) = frame.lines().find_map(|line| line.strip_prefix("id: ")) {
                    return id.parse().unwrap();
                }
            }
            let chunk = tokio::time::timeout(PATIENCE, self.body.next()).await.expect("an event in time");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk.expect("the stream ended").unwrap()));
        }
    }

    async fn next_ids(&mut self, count: usize) -> Vec<i64> {
        let mut ids = Vec::with_capacity(count);
        for _ in 0..count {
            ids.push(self.next_id().await);
        }
        ids
    }
}

/// Commits `count` events on the agent in one transaction; returns their ids. They are picked out by a
/// tag of their own: on PostgreSQL the head read before the transaction may still lie below an earlier
/// transaction's events (held back by the cluster-wide visibility watermark).
async fn emit(store: &Store, agent: Uuid, count: usize) -> Vec<i64> {
    let head = store.last_event_seq().await.unwrap();
    let tag = Uuid::now_v7().to_string();
    let mut tx = store.begin().await.unwrap();
    for n in 0..count {
        tx.emit(NewEvent::new(agent, None, EventType::Checkpoint, json!({"n": n, "tag": tag})));
    }
    tx.commit().await.unwrap();
    let written = store.events_after(EventScope::Agent(agent), head, 10_000).await.unwrap();
    written.iter().filter(|event| event.payload["tag"] == tag.as_str()).map(|event| event.seq).collect()
}

/// The agent's event ids after `after`, as the log has them.
async fn logged(store: &Store, agent: Uuid, after: i64) -> Vec<i64> {
    store.events_after(EventScope::Agent(agent), after, 10_000).await.unwrap().iter().map(|event| event.seq).collect()
}

async fn subscribe(app: &TestApp, agent: Uuid, last_event_id: Option<i64>) -> SseClient {
    let mut request = app.http.get(app.url(&format!("/agents/{agent}/stream"))).bearer_auth(&app.admin);
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id.to_string());
    }
    SseClient::new(request.send().await.unwrap())
}

/// Waits until `running` feeds are running (the count is announced, so no polling).
async fn running_feeds(feeds: &mut watch::Receiver<usize>, running: usize) {
    let waited = tokio::time::timeout(PATIENCE, feeds.wait_for(|now| *now == running)).await.map(|now| now.map(|_| ()));
    assert!(waited.is_ok(), "{} feeds still run, expected {running}", *feeds.borrow());
}

fn seq(delivery: Option<Delivery>) -> i64 {
    match delivery {
        Some(Delivery::Event { seq, .. }) => seq,
        other => panic!("expected an event, got {other:?}"),
    }
}

async fn next_seqs(subscription: &mut Subscription, count: usize) -> Vec<i64> {
    let mut seqs = Vec::with_capacity(count);
    for _ in 0..count {
        seqs.push(seq(tokio::time::timeout(PATIENCE, subscription.next()).await.expect("an event in time")));
    }
    seqs
}

both_engines!(two_hundred_subscribers_share_one_reader_of_the_agent_stream, |t: TestStore| async move {
    const SUBSCRIBERS: usize = 200;
    const WRITERS: usize = 4;
    const PER_WRITER: usize = 15;
    const EVENTS: usize = WRITERS * PER_WRITER;
    let app = TestApp::spawn(t).await;
    let store = app.test.store.clone();
    let agent = app.test.agent("Fanned out").await;
    let clients = futures::future::join_all((0..SUBSCRIBERS).map(|_| subscribe(&app, agent, None))).await;

    // Every subscriber takes a first event, after which all of them follow the shared feed.
    let warm_up = emit(&store, agent, 1).await[0];
    let ready = Arc::new(Barrier::new(SUBSCRIBERS + 1));
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            let ready = ready.clone();
            tokio::spawn(async move {
                assert_eq!(client.next_id().await, warm_up);
                ready.wait().await;
                client.next_ids(EVENTS).await
            })
        })
        .collect();
    ready.wait().await;
    let before = app.sse.read_counts();

    let writers: Vec<_> = (0..WRITERS)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                for _ in 0..PER_WRITER {
                    emit(&store, agent, 1).await;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let expected = logged(&store, agent, warm_up).await;
    assert_eq!(expected.len(), EVENTS);
    for reader in readers {
        assert_eq!(reader.await.unwrap(), expected, "every event once, in id order");
    }

    let after = app.sse.read_counts();
    assert_eq!(after.subscriber, before.subscriber, "no subscriber read the log itself: {before:?} → {after:?}");
    assert_eq!(after.lagged, before.lagged);
    // One read per wake-up of the feed (plus, on PostgreSQL, short re-reads while a concurrent writer's
    // transaction holds events at the watermark): bounded by the events, not by events × subscribers.
    let feed_reads = after.feed - before.feed;
    assert!(feed_reads <= 8 * EVENTS as u64, "{feed_reads} feed reads for {EVENTS} events");
});

both_engines!(a_subscriber_behind_the_broadcast_still_gets_every_event_once, |t: TestStore| async move {
    const CAPACITY: usize = 16;
    const BURSTS: usize = 4;
    const BURST: usize = 10;
    let store = t.store.clone();
    let agent = t.agent("Slow reader").await;
    let hub = SseHub::with_capacity(store.clone(), CancellationToken::new(), CAPACITY);
    let start = store.last_event_seq().await.unwrap();
    let spec = StreamSpec { scope: EventScope::Agent(agent), after: start, end_on_terminal: false, only: None };
    let mut fast = hub.subscribe(spec);
    let mut slow = hub.subscribe(spec);
    let warm_up = emit(&store, agent, 1).await[0];
    assert_eq!(next_seqs(&mut fast, 1).await, [warm_up]);
    assert_eq!(next_seqs(&mut slow, 1).await, [warm_up]);
    let before = hub.read_counts();

    // Both now follow the feed. The fast one takes each burst (fewer frames than the channel holds, so
    // it never lags and every frame it gets was broadcast); the slow one is not read meanwhile, so more
    // frames than the channel holds pass it by.
    for _ in 0..BURSTS {
        let burst = emit(&store, agent, BURST).await;
        assert_eq!(next_seqs(&mut fast, BURST).await, burst);
    }
    let followed = hub.read_counts();
    assert_eq!(
        (followed.subscriber, followed.lagged),
        (before.subscriber, before.lagged),
        "the fast subscriber followed the broadcast only"
    );

    let expected = logged(&store, agent, warm_up).await;
    assert_eq!(next_seqs(&mut slow, BURSTS * BURST).await, expected, "every event once, in id order");
    let caught_up = hub.read_counts();
    assert_eq!(caught_up.lagged, before.lagged + 1, "the slow subscriber lagged once");
    assert!(caught_up.subscriber > before.subscriber, "and read what it missed from the log");

    // Both follow the broadcast again, without duplicates.
    let last = emit(&store, agent, 1).await;
    assert_eq!(next_seqs(&mut fast, 1).await, last);
    assert_eq!(next_seqs(&mut slow, 1).await, last);
});

both_engines!(a_stream_resumed_mid_way_gets_what_followed_its_last_event_id, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    let store = app.test.store.clone();
    let agent = app.test.agent("Resumed").await;
    let mut live = subscribe(&app, agent, None).await;
    let mut first = Vec::new();
    for _ in 0..10 {
        first.extend(emit(&store, agent, 1).await);
    }
    assert_eq!(live.next_ids(10).await, first);

    // Resume after the fifth event while the scope's feed runs: the rest is replayed, then live events.
    let mut resumed = subscribe(&app, agent, Some(first[4])).await;
    // And with the query parameter, from the last event delivered so far.
    let response = app
        .http
        .get(app.url(&format!("/agents/{agent}/stream?last_event_id={}", first[9])))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap();
    let mut level = SseClient::new(response);
    let mut second = Vec::new();
    for _ in 0..10 {
        second.extend(emit(&store, agent, 1).await);
    }
    assert_eq!(live.next_ids(10).await, second);
    let replayed: Vec<i64> = first[5..].iter().chain(&second).copied().collect();
    assert_eq!(resumed.next_ids(15).await, replayed);
    assert_eq!(level.next_ids(10).await, second);
    assert_eq!(logged(&store, agent, first[4]).await, replayed, "nothing else was written");
});

both_engines!(a_scope_reader_stops_when_its_last_subscriber_leaves, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    let store = app.test.store.clone();
    let (one, other) = (app.test.agent("One").await, app.test.agent("Other").await);
    let mut feeds = app.sse.running_feeds();
    assert_eq!(*feeds.borrow(), 0);

    // Through HTTP: a feed per followed agent, started with its first stream, stopped when the client
    // behind its last stream goes away.
    let mut first = subscribe(&app, one, None).await;
    let second = subscribe(&app, one, None).await;
    let mut third = subscribe(&app, other, None).await;
    assert_eq!(*feeds.borrow(), 2, "one feed per scope");
    let seqs = emit(&store, one, 1).await;
    assert_eq!(first.next_ids(1).await, seqs);
    drop(second);
    drop(first);
    running_feeds(&mut feeds, 1).await;
    let seqs = emit(&store, other, 1).await;
    assert_eq!(third.next_ids(1).await, seqs, "the other scope's feed still runs");
    drop(third);
    running_feeds(&mut feeds, 0).await;

    // A new subscriber starts a new feed and gets what is written after it subscribed.
    let mut again = subscribe(&app, one, None).await;
    assert_eq!(*feeds.borrow(), 1);
    let seqs = emit(&store, one, 1).await;
    assert_eq!(again.next_ids(1).await, seqs);

    // Directly on a hub: dropping the last subscription stops its feed.
    let hub = SseHub::new(store.clone(), CancellationToken::new());
    let mut running = hub.running_feeds();
    let spec = StreamSpec { scope: EventScope::All, after: 0, end_on_terminal: false, only: None };
    let subscriptions = [hub.subscribe(spec), hub.subscribe(spec)];
    assert_eq!(*running.borrow(), 1);
    drop(subscriptions);
    running_feeds(&mut running, 0).await;
});
