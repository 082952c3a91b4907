//! One reader of the event log per stream scope, shared by that scope's SSE subscribers (issue 17).
//!
//! Without it every SSE stream re-read the log itself when woken, so one event on an agent with 1,000
//! subscribers cost 1,000 identical queries queued on a pool of 10 connections. [`SseHub`] runs, for each
//! [`EventScope`] someone follows, one *feed* task: it reads new events once per wake-up and broadcasts
//! each, rendered once, on a bounded `tokio::sync::broadcast` channel that the scope's subscribers take
//! it from. Per-subscriber choices (type filters, ending after a job's terminal event) stay with the
//! subscriber, so `/jobs/stream` and `/approvals/stream` share the feed of [`EventScope::All`].
//!
//! Invariants (ARCHITECTURE.md, "SSE fan-out"):
//! - A frame carries `prev`, the feed's cursor before its event: no deliverable event of the scope lies
//!   between `prev` and the frame's `seq`, because the feed reads the log in order below the visibility
//!   watermark ([`Store::read_events`]). A subscriber delivers a frame only when `prev <= cursor < seq`;
//!   a frame at or below its cursor is a duplicate and skipped; a frame with `prev > cursor` is a gap.
//!   After a gap, after the broadcast lagged (`Lagged`), and to replay after `Last-Event-ID`, the
//!   subscriber reads the log itself from its cursor until it is level, then follows the broadcast
//!   again. So a subscriber never misses an event, never sees one twice, and its ids increase strictly,
//!   however the feed and it interleave.
//! - A subscriber subscribes to the broadcast before it reads the feed's position, and the feed
//!   publishes its position before it sends a batch: a subscriber whose cursor is at or past that
//!   position needs no read of its own (every later frame reaches it).
//! - A feed starts at the cursor of the subscriber that started it (its position is known before the
//!   task runs) and lives exactly as long as a subscriber holds it: the last one to leave stops the task
//!   (no idle cost), the next one starts a new feed. Starting it at the head of the log instead would
//!   lose the events committed between that subscriber's own catch-up read and the feed's first read:
//!   the subscriber would believe itself level and wait for frames that never come.
//! - A feed that ends while subscribers remain (it cannot read notifications any more) ends their
//!   streams; clients resume from their `Last-Event-ID` on a new feed.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use axum::response::sse::Event as SseEvent;
use cortex_core::event::EventType;
use cortex_store::events::{Event, EventRead, EventScope};
use cortex_store::{Notification, Store};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::sse::to_sse;

/// What a stream follows.
#[derive(Debug, Clone, Copy)]
pub struct StreamSpec {
    pub scope: EventScope,
    /// Sequence number after which to start.
    pub after: i64,
    /// End the stream after a job's terminal event.
    pub end_on_terminal: bool,
    /// Only these event types (all when `None`).
    pub only: Option<&'static [EventType]>,
}

/// Frames a feed keeps for subscribers that have not taken them yet; a subscriber further behind falls
/// back to reading the log itself.
pub const DEFAULT_CAPACITY: usize = 1024;
const BATCH: i64 = 500;
/// Longest a feed waits without a notification before it reads again (notifications are hints).
const SAFETY_REREAD: Duration = Duration::from_secs(5);
/// First pause before re-reading events held at the watermark; doubled up to [`PENDING_REREAD_MAX`]
/// (PostgreSQL: the transaction holding them back may end without a notification of its own).
const PENDING_REREAD_FIRST: Duration = Duration::from_millis(1);
const PENDING_REREAD_MAX: Duration = Duration::from_millis(100);

/// One event of a scope, rendered once for all its subscribers.
#[derive(Debug)]
struct Frame {
    /// The feed's cursor before this event: no deliverable event of the scope lies in `(prev, seq)`.
    prev: i64,
    seq: i64,
    event_type: EventType,
    event: SseEvent,
}

/// What a [`Subscription`] yields.
#[derive(Debug)]
pub enum Delivery {
    /// An event in its wire form, with its id (`seq`) and type.
    Event { seq: i64, event_type: EventType, event: SseEvent },
    /// The process is shutting down; the subscription ends after this.
    Shutdown,
}

/// Reads of the event log made for streams, and broadcast lags, since the hub was built (tests, and the
/// `cortex_sse_reads_total` / `cortex_sse_lagged_total` counters of `/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadCounts {
    /// Reads by feeds: one per wake-up of a scope whatever its number of subscribers.
    pub feed: u64,
    /// Reads by subscribers themselves: replays after `Last-Event-ID`, after a gap, after a lag.
    pub subscriber: u64,
    /// Times a subscriber fell behind its feed's broadcast and went back to its own reads.
    pub lagged: u64,
}

/// The process's SSE feeds, one per followed scope; cheap to clone.
#[derive(Clone)]
pub struct SseHub {
    inner: Arc<HubInner>,
}

struct HubInner {
    store: Store,
    shutdown: CancellationToken,
    capacity: usize,
    /// The feed of each followed scope; an entry whose feed is gone is replaced or removed.
    feeds: Mutex<HashMap<EventScope, Weak<Feed>>>,
    /// Feed tasks running (a task outlives its [`Feed`] only while it notices the stop).
    running: watch::Sender<usize>,
    feed_reads: AtomicU64,
    subscriber_reads: AtomicU64,
    lagged: AtomicU64,
}

/// What a feed task and its subscribers share.
struct FeedState {
    sender: broadcast::Sender<Arc<Frame>>,
    /// The highest `seq` the feed has sent or is about to send (at first, where it starts).
    position: AtomicI64,
    /// Cancelled when the feed task has ended.
    ended: CancellationToken,
}

/// A subscriber's hold on its scope's feed: dropping the last one stops the feed task.
struct Feed {
    scope: EventScope,
    state: Arc<FeedState>,
    hub: Weak<HubInner>,
    _stop: DropGuard,
}

impl Drop for Feed {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.upgrade() {
            let mut feeds = hub.feeds.lock().unwrap_or_else(PoisonError::into_inner);
            // A new feed may already stand in this one's place; leave it.
            if feeds.get(&self.scope).is_some_and(|feed| feed.strong_count() == 0) {
                feeds.remove(&self.scope);
            }
        }
    }
}

/// Counts a running feed task until dropped (also when the task never ran).
struct RunningFeed(Arc<HubInner>);

impl RunningFeed {
    fn start(hub: Arc<HubInner>) -> Self {
        hub.running.send_modify(|running| *running += 1);
        metrics::gauge!("cortex_sse_feeds").increment(1.0);
        Self(hub)
    }
}

impl Drop for RunningFeed {
    fn drop(&mut self) {
        self.0.running.send_modify(|running| *running -= 1);
        metrics::gauge!("cortex_sse_feeds").decrement(1.0);
    }
}

#[derive(Clone, Copy)]
enum Reader {
    Feed,
    Subscriber,
}

impl HubInner {
    async fn read(&self, reader: Reader, scope: EventScope, after: i64) -> cortex_store::Result<EventRead> {
        let (counter, label) = match reader {
            Reader::Feed => (&self.feed_reads, "feed"),
            Reader::Subscriber => (&self.subscriber_reads, "subscriber"),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("cortex_sse_reads_total", "reader" => label).increment(1);
        self.store.read_events(scope, after, BATCH).await
    }
}

impl SseHub {
    /// A hub whose feeds keep [`DEFAULT_CAPACITY`] frames; feeds and subscriptions end at `shutdown`.
    pub fn new(store: Store, shutdown: CancellationToken) -> Self {
        Self::with_capacity(store, shutdown, DEFAULT_CAPACITY)
    }

    /// A hub whose feeds keep `capacity` frames (at least one) for subscribers that lag behind.
    pub fn with_capacity(store: Store, shutdown: CancellationToken, capacity: usize) -> Self {
        Self {
            inner: Arc::new(HubInner {
                store,
                shutdown,
                capacity: capacity.max(1),
                feeds: Mutex::default(),
                running: watch::Sender::new(0),
                feed_reads: AtomicU64::new(0),
                subscriber_reads: AtomicU64::new(0),
                lagged: AtomicU64::new(0),
            }),
        }
    }

    /// Follows `spec`: events after `spec.after`, first from the log, then from the scope's feed
    /// (started now if nobody follows the scope yet). Every event committed in the scope after this call
    /// reaches the subscription. Must be called within the Tokio runtime.
    pub fn subscribe(&self, spec: StreamSpec) -> Subscription {
        let feed = self.feed(spec.scope, spec.after);
        // Subscribe before reading the position (module docs): frames sent after it was read are ours.
        let frames = feed.state.sender.subscribe();
        let replaying = spec.after < feed.state.position.load(Ordering::SeqCst);
        metrics::gauge!("cortex_sse_clients").increment(1.0);
        Subscription {
            hub: self.inner.clone(),
            spec,
            cursor: spec.after,
            feed,
            frames,
            replaying,
            backlog: VecDeque::new(),
            done: false,
        }
    }

    /// Reads made so far by feeds and by subscribers, and lags.
    pub fn read_counts(&self) -> ReadCounts {
        ReadCounts {
            feed: self.inner.feed_reads.load(Ordering::Relaxed),
            subscriber: self.inner.subscriber_reads.load(Ordering::Relaxed),
            lagged: self.inner.lagged.load(Ordering::Relaxed),
        }
    }

    /// The number of feed tasks running, as it changes.
    pub fn running_feeds(&self) -> watch::Receiver<usize> {
        self.inner.running.subscribe()
    }

    /// The scope's feed, started after `start` if there is none.
    fn feed(&self, scope: EventScope, start: i64) -> Arc<Feed> {
        let mut feeds = self.inner.feeds.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(feed) = feeds.get(&scope).and_then(Weak::upgrade) {
            return feed;
        }
        let state = Arc::new(FeedState {
            sender: broadcast::Sender::new(self.inner.capacity),
            position: AtomicI64::new(start),
            ended: CancellationToken::new(),
        });
        let stop = CancellationToken::new();
        let running = RunningFeed::start(self.inner.clone());
        tokio::spawn(run_feed(running, scope, start, state.clone(), stop.clone()));
        let feed = Arc::new(Feed { scope, state, hub: Arc::downgrade(&self.inner), _stop: stop.drop_guard() });
        feeds.insert(scope, Arc::downgrade(&feed));
        feed
    }
}

/// The feed of one scope: reads the log after `start` once per wake-up and broadcasts what it read,
/// until `stop` (its last subscriber left) or shutdown.
async fn run_feed(running: RunningFeed, scope: EventScope, start: i64, state: Arc<FeedState>, stop: CancellationToken) {
    let hub = running.0.clone();
    let _ended = state.ended.clone().drop_guard();
    // Subscribed before the first read: no event committed after that read goes unannounced.
    let mut notifications = hub.store.subscribe();
    let mut cursor = start;
    let mut pending_pause = PENDING_REREAD_FIRST;
    while !stop.is_cancelled() {
        let mut reread_after = SAFETY_REREAD;
        match hub.read(Reader::Feed, scope, cursor).await {
            Ok(read) => {
                let full = read.events.len() as i64 == BATCH;
                if read.pending {
                    reread_after = pending_pause;
                    pending_pause = (pending_pause * 2).min(PENDING_REREAD_MAX);
                } else {
                    pending_pause = PENDING_REREAD_FIRST;
                }
                if let Some(last) = read.events.last() {
                    state.position.store(last.seq, Ordering::SeqCst);
                }
                for event in &read.events {
                    let frame =
                        Frame { prev: cursor, seq: event.seq, event_type: event.event_type, event: to_sse(event) };
                    cursor = event.seq;
                    // No receiver: every subscriber is leaving, and the feed stops with the last one.
                    let _ = state.sender.send(Arc::new(frame));
                }
                if full {
                    continue;
                }
            }
            Err(err) => tracing::warn!(error = %err, "reading events for a stream failed"),
        }
        if !wait_for_news(scope, cursor, reread_after, &mut notifications, &stop, &hub.shutdown).await {
            return;
        }
    }
}

/// Waits until something of `scope` after `cursor` may have been appended, at most `reread_after`;
/// `false` when the feed should end.
async fn wait_for_news(
    scope: EventScope,
    cursor: i64,
    reread_after: Duration,
    notifications: &mut broadcast::Receiver<Notification>,
    stop: &CancellationToken,
    shutdown: &CancellationToken,
) -> bool {
    let safety = tokio::time::sleep(reread_after);
    tokio::pin!(safety);
    loop {
        tokio::select! {
            () = stop.cancelled() => return false,
            () = shutdown.cancelled() => return false,
            () = &mut safety => return true,
            received = notifications.recv() => match received {
                Ok(Notification::Event { seq, agent_id, job_id, .. }) => {
                    let relevant = seq > cursor && match scope {
                        EventScope::Job(id) => job_id == Some(id),
                        EventScope::Agent(id) => agent_id == id,
                        EventScope::All => true,
                    };
                    if relevant {
                        return true;
                    }
                }
                Ok(Notification::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => return true,
                Ok(_) => {}
                Err(broadcast::error::RecvError::Closed) => return false,
            },
        }
    }
}

/// One subscriber of a scope: its own reads while it replays or catches up, the feed's frames otherwise.
pub struct Subscription {
    hub: Arc<HubInner>,
    spec: StreamSpec,
    /// The last event id delivered or passed over (filtered out); everything up to it is done.
    cursor: i64,
    feed: Arc<Feed>,
    frames: broadcast::Receiver<Arc<Frame>>,
    /// Reading the log itself (replay, a gap, a lag) instead of following the frames.
    replaying: bool,
    /// Events read by this subscriber and not yet delivered.
    backlog: VecDeque<Event>,
    done: bool,
}

impl Subscription {
    /// The next event (or the shutdown notice); `None` once the subscription has ended: after a job's
    /// terminal event when asked, after shutdown, or when its feed ended.
    pub async fn next(&mut self) -> Option<Delivery> {
        loop {
            if self.done {
                return None;
            }
            if let Some(event) = self.backlog.pop_front() {
                if self.admit(event.seq, event.event_type) {
                    return Some(Delivery::Event {
                        seq: event.seq,
                        event_type: event.event_type,
                        event: to_sse(&event),
                    });
                }
                continue;
            }
            if self.hub.shutdown.is_cancelled() {
                self.done = true;
                return Some(Delivery::Shutdown);
            }
            if self.replaying {
                self.replay().await;
            } else if let Some(delivery) = self.follow().await {
                return Some(delivery);
            }
        }
    }

    /// One read of the log from the cursor into the backlog.
    async fn replay(&mut self) {
        match self.hub.read(Reader::Subscriber, self.spec.scope, self.cursor).await {
            Ok(read) => {
                // Short of a full batch this subscriber is level with the log: the feed's frames take
                // over, also for events held back at the watermark (the feed re-reads those).
                self.replaying = read.events.len() as i64 == BATCH;
                self.backlog.extend(read.events);
            }
            Err(err) => {
                tracing::warn!(error = %err, "reading events for a stream failed");
                tokio::select! {
                    () = self.hub.shutdown.cancelled() => {}
                    () = self.feed.state.ended.cancelled() => self.done = true,
                    () = tokio::time::sleep(SAFETY_REREAD) => {}
                }
            }
        }
    }

    /// Waits for the feed's next frame; returns it when this subscriber delivers it.
    async fn follow(&mut self) -> Option<Delivery> {
        tokio::select! {
            biased;
            () = self.hub.shutdown.cancelled() => None,
            () = self.feed.state.ended.cancelled() => {
                self.done = true;
                None
            }
            received = self.frames.recv() => match received {
                Ok(frame) if frame.seq <= self.cursor => None,
                Ok(frame) if frame.prev > self.cursor => {
                    self.replaying = true;
                    None
                }
                Ok(frame) => self.admit(frame.seq, frame.event_type).then(|| Delivery::Event {
                    seq: frame.seq,
                    event_type: frame.event_type,
                    event: frame.event.clone(),
                }),
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.hub.lagged.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("cortex_sse_lagged_total").increment(1);
                    self.replaying = true;
                    None
                }
                Err(broadcast::error::RecvError::Closed) => {
                    self.done = true;
                    None
                }
            },
        }
    }

    /// Moves the cursor past an event; whether this subscriber delivers it (its type filter). A job's
    /// terminal event ends the subscription after it when asked.
    fn admit(&mut self, seq: i64, event_type: EventType) -> bool {
        self.cursor = seq;
        if self.spec.only.is_some_and(|types| !types.contains(&event_type)) {
            return false;
        }
        if self.spec.end_on_terminal && event_type.ends_job_stream() {
            self.done = true;
        }
        true
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        metrics::gauge!("cortex_sse_clients").decrement(1.0);
    }
}
