//! Slack Socket Mode: `apps.connections.open` (app-level token) → WebSocket URL; each envelope is
//! recorded through the sink and then acknowledged with `{envelope_id}` (well within Slack's 3 s: the
//! record is one commit, routing happens later). `disconnect` (Slack refreshes connections) and a
//! dropped socket open a new connection at once; Slack redelivers envelopes that were never
//! acknowledged, and the inbound log records them once.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::SlackAdapter;
use super::wire;
use crate::adapter::{AdapterError, InboundSink};

/// How long connecting and the `hello` may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Silence after which the socket is pinged; a second silent period ends the connection.
const IDLE_PING: Duration = Duration::from_secs(30);
/// Connection attempts in a row that never reach `hello` before the loop reports failure.
const MAX_FAILED_CONNECTS: u32 = 4;

fn socket_error(err: impl std::fmt::Display) -> AdapterError {
    AdapterError::Unavailable(format!("Slack socket: {err}"))
}

/// Runs Socket Mode until `cancel`; reconnects by itself, returns an error when connecting keeps failing.
pub(crate) async fn run(
    adapter: &SlackAdapter,
    app_token: &str,
    sink: &dyn InboundSink,
    cancel: &CancellationToken,
) -> Result<(), AdapterError> {
    let mut failed_connects = 0u32;
    loop {
        let mut greeted = false;
        let ended = connection(adapter, app_token, sink, cancel, &mut greeted).await;
        if greeted {
            failed_connects = 0;
        }
        match ended {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(err @ (AdapterError::Unauthorized(_) | AdapterError::Sink(_))) => return Err(err),
            Err(err) => {
                failed_connects += 1;
                if failed_connects >= MAX_FAILED_CONNECTS {
                    return Err(err);
                }
                tracing::info!(channel_id = %adapter.channel_id, error = %err, "Slack socket failed; reconnecting");
                tokio::select! {
                    () = cancel.cancelled() => return Ok(()),
                    () = tokio::time::sleep(Duration::from_secs(u64::from(failed_connects))) => {}
                }
            }
        }
    }
}

/// One connection; `Ok(true)` when cancelled, `Ok(false)` when Slack asked for (or caused) a reconnect.
async fn connection(
    adapter: &SlackAdapter,
    app_token: &str,
    sink: &dyn InboundSink,
    cancel: &CancellationToken,
    greeted: &mut bool,
) -> Result<bool, AdapterError> {
    let opened = adapter.api.call("apps.connections.open", &json!({}), Some(app_token)).await?;
    let url =
        opened["url"].as_str().ok_or_else(|| AdapterError::Protocol("apps.connections.open named no url".into()))?;
    let (socket, _) = tokio::select! {
        () = cancel.cancelled() => return Ok(true),
        connected = tokio::time::timeout(HANDSHAKE_TIMEOUT, crate::websocket::connect(url)) => {
            connected.map_err(|_| socket_error("connecting timed out"))?.map_err(socket_error)?
        }
    };
    let (mut outgoing, mut incoming) = socket.split();
    let mut pinged = false;
    loop {
        let frame = tokio::select! {
            () = cancel.cancelled() => {
                let _ = outgoing.send(Message::Close(None)).await;
                return Ok(true);
            }
            frame = tokio::time::timeout(IDLE_PING, incoming.next()) => frame,
        };
        let text = match frame {
            Err(_) if pinged => return Ok(false),
            Err(_) => {
                outgoing.send(Message::Ping(Vec::new().into())).await.map_err(socket_error)?;
                pinged = true;
                continue;
            }
            Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return Ok(false),
            Ok(Some(Ok(Message::Text(text)))) => text,
            Ok(Some(Ok(_))) => {
                pinged = false;
                sink.alive();
                continue;
            }
        };
        pinged = false;
        let Ok(envelope) = serde_json::from_str::<Value>(text.as_str()) else {
            tracing::debug!(channel_id = %adapter.channel_id, "unreadable Socket Mode message skipped");
            continue;
        };
        sink.alive();
        match envelope["type"].as_str() {
            Some("hello") => *greeted = true,
            Some("disconnect") => return Ok(false),
            _ => {}
        }
        let events = match envelope["type"].as_str() {
            Some("events_api") => match serde_json::from_value::<wire::Event>(envelope["payload"]["event"].clone()) {
                Ok(event) => {
                    event.into_event(adapter.channel_id, adapter.bot_user_id().as_deref()).into_iter().collect()
                }
                Err(_) => Vec::new(),
            },
            Some("interactive") => wire::block_actions(&envelope["payload"], adapter.channel_id),
            _ => Vec::new(),
        };
        for event in events {
            sink.deliver(event).await?;
        }
        if let Some(envelope_id) = envelope["envelope_id"].as_str() {
            let ack = json!({"envelope_id": envelope_id}).to_string();
            outgoing.send(Message::Text(ack.into())).await.map_err(socket_error)?;
        }
    }
}
