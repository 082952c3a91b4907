//! Server-sent event streams over the event log (SPEC §2.3, §4.11): the wire form of events and the
//! HTTP side of a stream.
//!
//! A stream first replays stored events after the client's `Last-Event-ID`, then follows new ones. The
//! event id is the log's global sequence number, so a client can reconnect to any replica and continue
//! where it stopped. Reading is done by [`crate::sse_hub`]: one reader per followed scope, shared by its
//! subscribers, each subscriber reading the log itself only to replay or to catch up. A `: ping` comment
//! goes out after 15 s without an event; at shutdown a stream ends with a `: shutdown` comment.
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
use cortex_store::events::Event;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde_json::json;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

pub use crate::sse_hub::StreamSpec;
use crate::sse_hub::{Delivery, SseHub};

/// The cursor a client asked to resume from: `Last-Event-ID` header, else `?last_event_id=`.
pub fn resume_cursor(headers: &HeaderMap, query: Option<i64>) -> Option<i64> {
    headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse().ok())
        .or(query)
}

pub type EventStream = Sse<KeepAliveStream<BoxStream<'static, Result<SseEvent, Infallible>>>>;

/// Starts a stream; it ends when the client goes away, after a terminal event if asked, or at shutdown.
/// Every event committed in the scope after this call reaches it.
pub fn stream(hub: &SseHub, spec: StreamSpec) -> EventStream {
    let events = futures::stream::unfold(hub.subscribe(spec), |mut subscription| async move {
        let event = match subscription.next().await? {
            Delivery::Event { event, .. } => event,
            Delivery::Shutdown => SseEvent::default().comment("shutdown"),
        };
        Some((Ok(event), subscription))
    });
    Sse::new(events.boxed()).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)).text("ping"))
}

/// Streams `channel.health` events of this process's supervisor: every channel's current state first,
/// then each change; a reader that fell behind gets the current states again.
pub fn channel_health(supervisor: Arc<Supervisor>, shutdown: CancellationToken) -> EventStream {
    let (sender, receiver) = mpsc::channel(256);
    metrics::gauge!("cortex_sse_clients").increment(1.0);
    tokio::spawn(async move {
        let (mut snapshot, mut changes) = supervisor.health_changes();
        // A first frame at once: the response head goes out with it, so a client sees the stream open
        // (EventSource `open`) even when there is no channel to report yet.
        if sender.send(Ok(SseEvent::default().comment("channel health"))).await.is_err() {
            metrics::gauge!("cortex_sse_clients").decrement(1.0);
            return;
        }
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
    Sse::new(ReceiverStream::new(receiver).boxed())
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)).text("ping"))
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

/// An event in its SSE form: `id:` its sequence number, `event:` its type, one JSON `data:` line.
pub(crate) fn to_sse(event: &Event) -> SseEvent {
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
