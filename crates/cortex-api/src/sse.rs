//! Server-sent event streams over the event log (SPEC §2.3, §4.11).
//!
//! A stream first replays stored events after the client's `Last-Event-ID`, then follows new ones as
//! store notifications announce them. The event id is the log's global sequence number, so a client can
//! reconnect to any replica and continue where it stopped. Notifications are hints: after each one (and
//! at least every few seconds) the stream re-reads the log, so a lost notification only adds latency.
//! On PostgreSQL a read may stop at the visibility watermark (`cortex_store::events`): committed events
//! wait there until older transactions end, which need not announce themselves, so the stream re-reads
//! after a short, growing pause ([`PENDING_REREAD_FIRST`] up to [`PENDING_REREAD_MAX`]) until they pass.
//!
//! [`channel_health`] is the one stream not read from the log: channel health is a property of the
//! process running the channel, so it streams the supervisor's changes (`channel.health`), beginning
//! with the current state of every channel (which also stands in for a replay after a reconnect).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, KeepAliveStream, Sse};
use cortex_channels::supervisor::{HealthChange, Supervisor};
use cortex_core::clock::rfc3339_millis;
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

/// Streams `channel.health` events of this process's supervisor: every channel's current state first,
/// then each change; a reader that fell behind gets the current states again.
pub fn channel_health(supervisor: Arc<Supervisor>, shutdown: CancellationToken) -> EventStream {
    let (sender, receiver) = mpsc::channel(256);
    metrics::gauge!("cortex_sse_clients").increment(1.0);
    tokio::spawn(async move {
        let (mut snapshot, mut changes) = supervisor.health_changes();
        'stream: loop {
            for change in snapshot.drain(..) {
                if sender.send(Ok(health_event(&change))).await.is_err() {
                    break 'stream;
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => {
                    let _ = sender.send(Ok(SseEvent::default().comment("shutdown"))).await;
                    break;
                }
                () = sender.closed() => break,
                received = changes.recv() => match received {
                    Ok(change) => snapshot.push(change),
                    Err(broadcast::error::RecvError::Lagged(_)) => (snapshot, changes) = supervisor.health_changes(),
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            }
        }
        metrics::gauge!("cortex_sse_clients").decrement(1.0);
    });
    Sse::new(ReceiverStream::new(receiver)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)).text("ping"))
}

fn health_event(change: &HealthChange) -> SseEvent {
    let data = json!({
        "channel_id": change.channel_id,
        "type": change.channel_type,
        "state": change.state,
        "last_error": change.last_error,
    });
    SseEvent::default().id(change.seq.to_string()).event("channel.health").data(data.to_string())
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

/// Rewrites the payload's own timestamps (top-level `…_at` fields, e.g. `run_at`, `expires_at`) into the
/// API's fixed-width form: events stored before they were written that way still stream uniformly.
/// Nested values are left alone: they may be a tool's or a user's data, not ours to reformat.
fn fixed_width_times(mut payload: serde_json::Value) -> serde_json::Value {
    if let Some(fields) = payload.as_object_mut() {
        for (name, value) in fields.iter_mut() {
            if let (true, Some(text)) = (name.ends_with("_at"), value.as_str())
                && let Ok(at) = chrono::DateTime::parse_from_rfc3339(text)
            {
                *value = rfc3339_millis(at.with_timezone(&chrono::Utc)).into();
            }
        }
    }
    payload
}

fn to_sse(event: &Event) -> SseEvent {
    let data = json!({
        "seq": event.seq,
        "type": event.event_type,
        "agent_id": event.agent_id,
        "job_id": event.job_id,
        "session_id": event.session_id,
        "created_at": rfc3339_millis(event.created_at),
        "data": fixed_width_times(event.payload.clone()),
    });
    SseEvent::default().id(event.seq.to_string()).event(event.event_type.as_str()).data(data.to_string())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn payload_times_get_the_fixed_width_form() {
        let payload = json!({
            "run_at": "2026-09-21T12:53:20Z",
            "expires_at": "2026-09-21T14:53:20.5+02:00",
            "to": "retrying",
            "result": {"due_at": "2026-09-21T12:53:20Z"},
            "text_at": "not a time",
        });
        let fixed = super::fixed_width_times(payload);
        assert_eq!(fixed["run_at"], "2026-09-21T12:53:20.000Z");
        assert_eq!(fixed["expires_at"], "2026-09-21T12:53:20.500Z");
        assert_eq!(fixed["result"]["due_at"], "2026-09-21T12:53:20Z", "nested data is not ours to reformat");
        assert_eq!(fixed["text_at"], "not a time");
        assert_eq!(fixed["to"], "retrying");
    }
}
