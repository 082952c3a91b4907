//! The Discord gateway client (JSON encoding, API v10): `hello` → `identify` (intents GUILDS,
//! GUILD_MESSAGES, DIRECT_MESSAGES, MESSAGE_CONTENT) or `resume`; heartbeats at the `hello` interval
//! (the first one jittered); a heartbeat not acknowledged before the next is due marks a zombie
//! connection, which is closed and resumed; op 7 reconnects and resumes; op 9 resumes or identifies
//! anew as its `d` says; close codes decide between resume, a new session and giving up.
//!
//! The resume state (`session_id`, `resume_gateway_url`, last sequence) is saved through the sink after
//! the events before it were recorded, so a restart — or another process taking over the lease —
//! resumes where this one stopped. Events replayed by a resume are deduplicated by the inbound log.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_util::sync::CancellationToken;

use super::DiscordAdapter;
use super::wire;
use crate::adapter::{AdapterError, InboundSink};
use crate::types::BotIdentity;

/// GUILDS | GUILD_MESSAGES | DIRECT_MESSAGES | MESSAGE_CONTENT.
pub const INTENTS: u64 = (1 << 0) | (1 << 9) | (1 << 12) | (1 << 15);
/// How long connecting and the `hello` may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Connection attempts in a row that never reach `READY`/`RESUMED` before the loop reports failure
/// (the supervisor then restarts it with backoff).
const MAX_FAILED_CONNECTS: u32 = 4;
/// Close code we send when leaving: anything but 1000/1001 keeps the session resumable.
const CLOSE_RESUMABLE: u16 = 4000;

/// Where to resume; stored as the channel cursor.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ResumeState {
    session_id: String,
    resume_gateway_url: String,
    seq: Option<i64>,
}

/// How one connection ended.
enum Ended {
    Cancelled,
    /// Reconnect and resume (dropped socket, zombie, op 7, resumable op 9, most close codes).
    Resume,
    /// The session is gone: identify anew.
    Identify,
}

#[derive(Debug, Deserialize)]
struct Payload {
    op: i64,
    #[serde(default)]
    d: Value,
    #[serde(default)]
    s: Option<i64>,
    #[serde(default)]
    t: Option<String>,
}

/// `{url}/?v=10&encoding=json` unless the URL already carries a query.
fn with_query(url: &str) -> String {
    if url.contains('?') { url.to_owned() } else { format!("{}/?v=10&encoding=json", url.trim_end_matches('/')) }
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn gateway_error(err: impl std::fmt::Display) -> AdapterError {
    AdapterError::Unavailable(format!("Discord gateway: {err}"))
}

async fn send(socket: &mut futures::stream::SplitSink<Socket, Message>, payload: Value) -> Result<(), AdapterError> {
    socket.send(Message::Text(payload.to_string().into())).await.map_err(gateway_error)
}

/// Runs the gateway until `cancel`; reconnects (resuming) by itself and returns an error only when
/// connecting keeps failing or Discord refuses us.
pub(crate) async fn run(
    adapter: &DiscordAdapter,
    sink: &dyn InboundSink,
    cancel: &CancellationToken,
) -> Result<(), AdapterError> {
    let mut resume: Option<ResumeState> = sink
        .load_cursor()
        .await?
        .filter(|cursor| !cursor.is_empty())
        .and_then(|cursor| serde_json::from_str(&cursor).ok());
    let mut failed_connects = 0u32;
    loop {
        let url = match &resume {
            Some(state) => state.resume_gateway_url.clone(),
            None => adapter.gateway_url().await?,
        };
        let mut established = false;
        let ended = connection(adapter, sink, cancel, &url, &mut resume, &mut established).await;
        if established {
            failed_connects = 0;
        }
        match ended {
            Ok(Ended::Cancelled) => return Ok(()),
            Ok(Ended::Resume) => {}
            Ok(Ended::Identify) => {
                resume = None;
                sink.save_cursor("").await?;
                // Discord asks for a random 1–5 s pause before identifying after an invalid session.
                let pause = Duration::from_millis(1000 + rand::random::<u64>() % 4000);
                tokio::select! {
                    () = cancel.cancelled() => return Ok(()),
                    () = tokio::time::sleep(pause) => {}
                }
            }
            Err(err @ (AdapterError::Unauthorized(_) | AdapterError::Protocol(_) | AdapterError::Sink(_))) => {
                return Err(err);
            }
            Err(err) => {
                failed_connects += 1;
                if failed_connects >= MAX_FAILED_CONNECTS {
                    return Err(err);
                }
                tracing::info!(channel_id = %adapter.channel_id, error = %err, "Discord gateway connection failed; retrying");
                // A stale resume URL may be what fails: fall back to the discovered URL.
                if failed_connects >= 2 {
                    resume = None;
                }
                tokio::select! {
                    () = cancel.cancelled() => return Ok(()),
                    () = tokio::time::sleep(Duration::from_secs(u64::from(failed_connects))) => {}
                }
            }
        }
    }
}

async fn connection(
    adapter: &DiscordAdapter,
    sink: &dyn InboundSink,
    cancel: &CancellationToken,
    url: &str,
    resume: &mut Option<ResumeState>,
    established: &mut bool,
) -> Result<Ended, AdapterError> {
    let url = with_query(url);
    let connect = crate::websocket::connect(&url);
    let (socket, _) = tokio::select! {
        () = cancel.cancelled() => return Ok(Ended::Cancelled),
        connected = tokio::time::timeout(HANDSHAKE_TIMEOUT, connect) => {
            connected.map_err(|_| gateway_error("connecting timed out"))?.map_err(gateway_error)?
        }
    };
    let (mut outgoing, mut incoming) = socket.split();
    let hello = tokio::select! {
        () = cancel.cancelled() => return Ok(Ended::Cancelled),
        hello = tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming.next()) => hello,
    };
    let interval = match hello {
        Ok(Some(Ok(Message::Text(text)))) => serde_json::from_str::<Payload>(text.as_str())
            .ok()
            .filter(|payload| payload.op == 10)
            .and_then(|payload| payload.d["heartbeat_interval"].as_u64())
            .ok_or_else(|| AdapterError::Protocol("the gateway did not start with hello".into()))?,
        Ok(_) => return Err(gateway_error("the connection closed before hello")),
        Err(_) => return Err(gateway_error("no hello")),
    };
    let interval = Duration::from_millis(interval.max(1));
    let mut seq = resume.as_ref().and_then(|state| state.seq);
    match resume.as_ref() {
        Some(state) => {
            send(
                &mut outgoing,
                json!({"op": 6, "d": {"token": adapter.token, "session_id": state.session_id, "seq": state.seq}}),
            )
            .await?;
        }
        None => {
            let identify = json!({"op": 2, "d": {
                "token": adapter.token, "intents": INTENTS,
                "properties": {"os": std::env::consts::OS, "browser": "cortex", "device": "cortex"},
            }});
            send(&mut outgoing, identify).await?;
        }
    }
    let mut next_beat = Instant::now() + interval.mul_f64(rand::random::<f64>());
    let mut awaiting_ack = false;
    loop {
        let frame = tokio::select! {
            () = cancel.cancelled() => {
                let frame = CloseFrame { code: CLOSE_RESUMABLE.into(), reason: "stopping".into() };
                let _ = outgoing.send(Message::Close(Some(frame))).await;
                return Ok(Ended::Cancelled);
            }
            () = tokio::time::sleep_until(next_beat) => {
                if awaiting_ack {
                    tracing::info!(channel_id = %adapter.channel_id, "Discord heartbeat not acknowledged; reconnecting");
                    let frame = CloseFrame { code: CLOSE_RESUMABLE.into(), reason: "zombie connection".into() };
                    let _ = outgoing.send(Message::Close(Some(frame))).await;
                    return Ok(Ended::Resume);
                }
                send(&mut outgoing, json!({"op": 1, "d": seq})).await?;
                awaiting_ack = true;
                next_beat = Instant::now() + interval;
                continue;
            }
            frame = incoming.next() => frame,
        };
        let text = match frame {
            None | Some(Err(_)) => return Ok(Ended::Resume),
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => {
                return closed(frame.map(|frame| u16::from(frame.code)));
            }
            Some(Ok(_)) => continue,
        };
        let Ok(payload) = serde_json::from_str::<Payload>(text.as_str()) else {
            tracing::debug!(channel_id = %adapter.channel_id, "unreadable gateway payload skipped");
            continue;
        };
        if let Some(s) = payload.s {
            seq = Some(s);
        }
        match payload.op {
            0 => {
                sink.alive();
                let recorded =
                    dispatch(adapter, sink, payload.t.as_deref().unwrap_or_default(), payload.d, resume).await?;
                if matches!(payload.t.as_deref(), Some("READY" | "RESUMED")) {
                    *established = true;
                }
                if let Some(state) = resume.as_mut() {
                    state.seq = seq;
                    if recorded {
                        let cursor = serde_json::to_string(state).unwrap_or_default();
                        sink.save_cursor(&cursor).await?;
                    }
                }
            }
            1 => {
                send(&mut outgoing, json!({"op": 1, "d": seq})).await?;
                awaiting_ack = true;
                next_beat = Instant::now() + interval;
            }
            7 => return Ok(Ended::Resume),
            9 => return Ok(if payload.d.as_bool() == Some(true) { Ended::Resume } else { Ended::Identify }),
            11 => {
                awaiting_ack = false;
                sink.alive();
            }
            _ => {}
        }
    }
}

/// What a close code asks of us.
fn closed(code: Option<u16>) -> Result<Ended, AdapterError> {
    match code {
        Some(4004) => Err(AdapterError::Unauthorized("Discord closed the gateway: authentication failed".into())),
        Some(code @ (4010..=4014)) => Err(AdapterError::Protocol(format!(
            "Discord closed the gateway with code {code} (check intents and version)"
        ))),
        Some(4007 | 4009) => Ok(Ended::Identify),
        _ => Ok(Ended::Resume),
    }
}

/// Handles one dispatch; true when something was recorded (the cursor is then worth saving).
async fn dispatch(
    adapter: &DiscordAdapter,
    sink: &dyn InboundSink,
    event: &str,
    data: Value,
    resume: &mut Option<ResumeState>,
) -> Result<bool, AdapterError> {
    match event {
        "READY" => {
            let session_id = data["session_id"].as_str().unwrap_or_default().to_owned();
            let resume_gateway_url = data["resume_gateway_url"].as_str().unwrap_or_default().to_owned();
            if let Ok(user) = serde_json::from_value::<wire::User>(data["user"].clone()) {
                adapter.remember(BotIdentity {
                    id: user.id.clone(),
                    name: user.display_name(),
                    username: user.username,
                });
            }
            *resume = (!session_id.is_empty() && !resume_gateway_url.is_empty()).then_some(ResumeState {
                session_id,
                resume_gateway_url,
                seq: None,
            });
            Ok(true)
        }
        "MESSAGE_CREATE" => {
            let Ok(message) = serde_json::from_value::<wire::Message>(data) else {
                return Ok(false);
            };
            let bot_id = adapter.bot_id();
            match message.into_event(adapter.channel_id, bot_id.as_deref()) {
                Some(event) => {
                    sink.deliver(event).await?;
                    Ok(true)
                }
                None => Ok(false),
            }
        }
        "INTERACTION_CREATE" => {
            let Ok(interaction) = serde_json::from_value::<wire::Interaction>(data) else {
                return Ok(false);
            };
            match interaction.into_event(adapter.channel_id) {
                Some(event) => {
                    sink.deliver(event).await?;
                    Ok(true)
                }
                None => Ok(false),
            }
        }
        _ => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_url_gets_version_and_encoding_once() {
        assert_eq!(with_query("wss://gateway.discord.gg"), "wss://gateway.discord.gg/?v=10&encoding=json");
        assert_eq!(with_query("ws://127.0.0.1:9/"), "ws://127.0.0.1:9/?v=10&encoding=json");
        assert_eq!(with_query("ws://h/?v=10&encoding=json"), "ws://h/?v=10&encoding=json");
        assert_eq!(INTENTS, 37_377);
    }

    #[test]
    fn close_codes_pick_resume_identify_or_failure() {
        assert!(matches!(closed(Some(4004)), Err(AdapterError::Unauthorized(_))));
        assert!(matches!(closed(Some(4014)), Err(AdapterError::Protocol(_))));
        assert!(matches!(closed(Some(4009)), Ok(Ended::Identify)));
        assert!(matches!(closed(Some(4000)), Ok(Ended::Resume)));
        assert!(matches!(closed(None), Ok(Ended::Resume)));
    }
}
