//! Server-sent event streams over the event log (SPEC §2.3, §4.11).
//!
//! A stream first replays stored events after the client's `Last-Event-ID`, then follows new ones as
//! store notifications announce them. The event id is the log's global sequence number, so a client can
//! reconnect to any replica and continue where it stopped. Notifications are hints: after each one (and
//! at least every few seconds) the stream re-reads the log, so a lost notification only adds latency.
//! On PostgreSQL a read may stop at the visibility watermark (`cortex_store::events`): committed events
//! wait there until older transactions end, which need not announce themselves, so the stream re-reads
//! after a short, growing pause ([`PENDING_REREAD_FIRST`] up to [`PENDING_REREAD_MAX`]) until they pass.

use std::convert::Infallible;
use std::time::Duration;

use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, KeepAliveStream, Sse};
use cortex_core::event::EventType;
use cortex_store::events::{Event, EventScope};
use cortex_store::{Notification, Store};
use serde_json::json;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

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

const BATCH: i64 = 500;
const SAFETY_REREAD: Duration = Duration::from_secs(5);
/// First pause before re-reading events held at the watermark; doubled up to [`PENDING_REREAD_MAX`].
const PENDING_REREAD_FIRST: Duration = Duration::from_millis(1);
const PENDING_REREAD_MAX: Duration = Duration::from_millis(100);

/// The cursor a client asked to resume from: `Last-Event-ID` header, else `?last_event_id=`.
pub fn resume_cursor(headers: &HeaderMap, query: Option<i64>) -> Option<i64> {
    headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse().ok())
        .or(query)
}

pub type EventStream = Sse<KeepAliveStream<ReceiverStream<Result<SseEvent, Infallible>>>>;

/// Starts a stream; it ends when the client goes away, after a terminal event if asked, or at shutdown.
pub fn stream(store: Store, spec: StreamSpec, shutdown: CancellationToken) -> EventStream {
    let (sender, receiver) = mpsc::channel(256);
    metrics::gauge!("cortex_sse_clients").increment(1.0);
    tokio::spawn(async move {
        follow(store, spec, shutdown, sender).await;
        metrics::gauge!("cortex_sse_clients").decrement(1.0);
    });
    Sse::new(ReceiverStream::new(receiver)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)).text("ping"))
}

async fn follow(
    store: Store,
    spec: StreamSpec,
    shutdown: CancellationToken,
    sender: mpsc::Sender<Result<SseEvent, Infallible>>,
) {
    let mut notifications = store.subscribe();
    let mut cursor = spec.after;
    let mut pending_pause = PENDING_REREAD_FIRST;
    loop {
        let mut reread_after = SAFETY_REREAD;
        match store.read_events(spec.scope, cursor, BATCH).await {
            Ok(read) => {
                let full = read.events.len() as i64 == BATCH;
                if read.pending {
                    reread_after = pending_pause;
                    pending_pause = (pending_pause * 2).min(PENDING_REREAD_MAX);
                } else {
                    pending_pause = PENDING_REREAD_FIRST;
                }
                for event in read.events {
                    cursor = event.seq;
                    if spec.only.is_some_and(|types| !types.contains(&event.event_type)) {
                        continue;
                    }
                    let terminal = event.event_type.ends_job_stream();
                    if sender.send(Ok(to_sse(&event))).await.is_err() {
                        return;
                    }
                    if terminal && spec.end_on_terminal {
                        return;
                    }
                }
                if full {
                    continue;
                }
            }
            Err(err) => tracing::warn!(error = %err, "reading events for a stream failed"),
        }
        if !wait_for_news(&spec, cursor, reread_after, &mut notifications, &shutdown, &sender).await {
            if shutdown.is_cancelled() {
                let _ = sender.send(Ok(SseEvent::default().comment("shutdown"))).await;
            }
            return;
        }
    }
}

/// Waits until something relevant may have been appended, at most `reread_after`; `false` when the
/// stream should end.
async fn wait_for_news(
    spec: &StreamSpec,
    cursor: i64,
    reread_after: Duration,
    notifications: &mut broadcast::Receiver<Notification>,
    shutdown: &CancellationToken,
    sender: &mpsc::Sender<Result<SseEvent, Infallible>>,
) -> bool {
    let safety = tokio::time::sleep(reread_after);
    tokio::pin!(safety);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = sender.closed() => return false,
            _ = &mut safety => return true,
            received = notifications.recv() => match received {
                Ok(Notification::Event { seq, agent_id, job_id }) => {
                    let relevant = seq > cursor && match spec.scope {
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

fn to_sse(event: &Event) -> SseEvent {
    let data = json!({
        "seq": event.seq,
        "type": event.event_type,
        "agent_id": event.agent_id,
        "job_id": event.job_id,
        "session_id": event.session_id,
        "created_at": event.created_at,
        "data": event.payload,
    });
    SseEvent::default().id(event.seq.to_string()).event(event.event_type.as_str()).data(data.to_string())
}
