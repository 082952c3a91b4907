//! An in-process fake of Discord speaking the real wire protocols: the REST API under `/api/v10`
//! (`Authorization: Bot <token>`, `GET /gateway/bot`, `GET /users/@me`, messages, typing, interaction
//! callbacks; errors as `{message, code}` and 429 with `retry_after` in the body and `Retry-After`) and
//! the gateway WebSocket (JSON encoding): `hello` → `identify` → `READY` with a `session_id` and a
//! `resume_gateway_url`, heartbeats acknowledged with op 11, `resume` replaying every dispatch after the
//! given sequence then `RESUMED`, and on command op 7 (reconnect), op 9 (invalid session) or an abrupt
//! drop of the socket.
//!
//! The resume URL is a second listener, so a test sees that the client resumed where `READY` told it
//! to. Dispatches made while no client is connected are kept: a resume replays them, and a fresh
//! `identify` receives those no connection has seen yet (a test may dispatch before the client connects).
//!
//! ```ignore
//! let discord = FakeDiscord::start("bot-token").await;
//! // point the adapter at discord.api_base() (the gateway URL is discovered through it)
//! discord.wait_for_identify(1).await;
//! discord.user_message("500", "42", "hello", false);
//! discord.rest.wait_for_calls(CREATE_MESSAGE, 1).await;
//! ```

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use crate::fake_http::{Admission, CallLog, Failure};

/// The bot the fake claims to be.
pub const BOT_ID: &str = "900000000000000001";
/// Its username.
pub const BOT_USERNAME: &str = "cortex-test-bot";

/// Route names in [`FakeDiscord::rest`].
pub const CREATE_MESSAGE: &str = "create_message";
pub const EDIT_MESSAGE: &str = "edit_message";
pub const TYPING: &str = "typing";
pub const INTERACTION_CALLBACK: &str = "interaction_callback";
pub const GATEWAY_BOT: &str = "gateway_bot";
pub const ME: &str = "me";

/// Discord's 429: `retry_after` seconds (fractions allowed) in the body and the `Retry-After` header.
pub fn rate_limited(retry_after: f64) -> Failure {
    Failure::new(429, json!({"message": "You are being rate limited.", "retry_after": retry_after, "global": false}))
        .header("retry-after", format!("{}", retry_after.ceil()))
}

/// Discord refusing a request (`50007: Cannot send messages to this user` and the like).
pub fn refused(status: u16, code: i64, message: &str) -> Failure {
    Failure::new(status, json!({"message": message, "code": code}))
}

enum Command {
    Send(String),
    Close(u16),
    Drop,
}

#[derive(Default)]
struct Gateway {
    /// `(seq, event name, data)` of every dispatch.
    events: Vec<(i64, String, Value)>,
    next_seq: i64,
    /// Highest sequence sent over any connection.
    sent_up_to: i64,
    session_id: Option<String>,
    sessions: u64,
    /// Every payload clients sent, with the listener (`gateway` or `resume`) it arrived on.
    received: Vec<(String, Value)>,
    current: Option<(u64, mpsc::UnboundedSender<Command>)>,
    connections: u64,
    ack_heartbeats: bool,
    heartbeat_ms: u64,
}

struct Shared {
    token: String,
    gateway: Mutex<Gateway>,
    changes: watch::Sender<usize>,
    resume_url: String,
    gateway_url: String,
    next_message_id: Mutex<u64>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Gateway> {
        self.gateway.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn changed(&self) {
        self.changes.send_modify(|count| *count += 1);
    }

    fn message_id(&self) -> String {
        let mut next = self.next_message_id.lock().unwrap_or_else(PoisonError::into_inner);
        *next += 1;
        next.to_string()
    }
}

/// The running fake; stops when dropped.
pub struct FakeDiscord {
    shared: Arc<Shared>,
    api_base: String,
    /// Every REST call.
    pub rest: Arc<CallLog>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for FakeDiscord {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl FakeDiscord {
    /// Starts the REST API and two gateway listeners on loopback, accepting only `token`.
    pub async fn start(token: &str) -> FakeDiscord {
        let bind = || async { tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind fake discord") };
        let (rest_listener, gateway_listener, resume_listener) = (bind().await, bind().await, bind().await);
        let addr = |listener: &tokio::net::TcpListener| listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            token: token.to_owned(),
            gateway: Mutex::new(Gateway {
                ack_heartbeats: true,
                heartbeat_ms: 41_250,
                next_seq: 0,
                ..Gateway::default()
            }),
            changes: watch::channel(0).0,
            gateway_url: format!("ws://{}", addr(&gateway_listener)),
            resume_url: format!("ws://{}", addr(&resume_listener)),
            next_message_id: Mutex::new(1_100_000_000_000_000_000),
        });
        let rest = Arc::new(CallLog::default());
        let api_base = format!("http://{}/api/v10", addr(&rest_listener));
        let app = Router::new()
            .route("/api/v10/gateway/bot", axum::routing::get(gateway_bot))
            .route("/api/v10/users/@me", axum::routing::get(me))
            .route("/api/v10/channels/{channel}/messages", axum::routing::post(create_message))
            .route("/api/v10/channels/{channel}/messages/{message}", axum::routing::patch(edit_message))
            .route("/api/v10/channels/{channel}/typing", axum::routing::post(typing))
            .route("/api/v10/interactions/{id}/{token}/callback", axum::routing::post(interaction_callback))
            .with_state((shared.clone(), rest.clone()));
        let tasks = vec![
            tokio::spawn(async move {
                let _ = axum::serve(rest_listener, app).await;
            }),
            tokio::spawn(accept(gateway_listener, "gateway", shared.clone())),
            tokio::spawn(accept(resume_listener, "resume", shared.clone())),
        ];
        FakeDiscord { shared, api_base, rest, tasks }
    }

    /// What `DISCORD_API_BASE` should be (ends in `/api/v10`).
    pub fn api_base(&self) -> &str {
        &self.api_base
    }

    /// What `GET /gateway/bot` answers (and `DISCORD_GATEWAY_URL` could be).
    pub fn gateway_url(&self) -> &str {
        &self.shared.gateway_url
    }

    /// The `resume_gateway_url` `READY` announces.
    pub fn resume_gateway_url(&self) -> &str {
        &self.shared.resume_url
    }

    /// Sets the heartbeat interval the next `hello` announces.
    pub fn set_heartbeat_interval(&self, interval: Duration) {
        self.shared.lock().heartbeat_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
    }

    /// Whether heartbeats are acknowledged (off: the connection looks like a zombie to the client).
    pub fn ack_heartbeats(&self, on: bool) {
        self.shared.lock().ack_heartbeats = on;
    }

    /// Sends a dispatch (assigning its sequence number) to the connected client, or keeps it for the
    /// next one. Returns the sequence.
    pub fn dispatch(&self, event: &str, data: Value) -> i64 {
        let seq = {
            let mut gateway = self.shared.lock();
            gateway.next_seq += 1;
            let seq = gateway.next_seq;
            gateway.events.push((seq, event.to_owned(), data.clone()));
            if let Some((_, sender)) = &gateway.current
                && sender.send(Command::Send(dispatch_payload(seq, event, &data))).is_ok()
            {
                gateway.sent_up_to = seq;
            }
            seq
        };
        self.shared.changed();
        seq
    }

    /// A `MESSAGE_CREATE` from user `author` in channel `channel` (a guild channel when `guild`, else a
    /// DM); returns the message payload (its `id` is the platform message id).
    pub fn user_message(&self, channel: &str, author: &str, text: &str, guild: bool) -> Value {
        let mut message = json!({
            "id": self.shared.message_id(), "channel_id": channel, "type": 0, "content": text,
            "author": {"id": author, "username": format!("user{author}"), "global_name": format!("User {author}")},
            "mentions": [], "attachments": [], "timestamp": "2026-12-06T00:00:00.000000+00:00",
        });
        if guild {
            message["guild_id"] = json!("700");
        }
        self.dispatch("MESSAGE_CREATE", message.clone());
        message
    }

    /// Closes the client's socket without a close frame (a dropped connection).
    pub fn drop_connection(&self) {
        self.command(Command::Drop);
    }

    /// Sends op 7: the client must reconnect and resume.
    pub fn request_reconnect(&self) {
        self.command(Command::Send(json!({"op": 7, "d": null}).to_string()));
    }

    /// Sends op 9 (invalid session); `resumable` is its `d`. Not resumable also forgets the session.
    pub fn invalidate_session(&self, resumable: bool) {
        if !resumable {
            self.shared.lock().session_id = None;
        }
        self.command(Command::Send(json!({"op": 9, "d": resumable}).to_string()));
    }

    /// Closes the socket with a close code (4004: authentication failed, 4009: session timed out, …).
    pub fn close(&self, code: u16) {
        self.command(Command::Close(code));
    }

    fn command(&self, command: Command) {
        if let Some((_, sender)) = &self.shared.lock().current {
            let _ = sender.send(command);
        }
    }

    /// Payloads clients sent with op `op`, with the listener each arrived on (`gateway` or `resume`).
    pub fn received(&self, op: i64) -> Vec<(String, Value)> {
        self.shared.lock().received.iter().filter(|(_, payload)| payload["op"] == op).cloned().collect()
    }

    /// Waits (up to 30 s) until clients sent `count` payloads with op `op` (2 identify, 6 resume, 1
    /// heartbeat); returns them.
    pub async fn wait_for_op(&self, op: i64, count: usize) -> Vec<(String, Value)> {
        let mut changes = self.shared.changes.subscribe();
        let waited = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let seen = self.received(op);
                if seen.len() >= count || changes.changed().await.is_err() {
                    return seen;
                }
            }
        })
        .await;
        match waited {
            Ok(seen) if seen.len() >= count => seen,
            _ => {
                let ops: Vec<Value> =
                    self.shared.lock().received.iter().map(|(_, payload)| payload["op"].clone()).collect();
                panic!("timed out waiting for {count} gateway payloads with op {op}; received ops {ops:?}")
            }
        }
    }

    /// Gateway connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.lock().connections
    }
}

fn dispatch_payload(seq: i64, event: &str, data: &Value) -> String {
    json!({"op": 0, "s": seq, "t": event, "d": data}).to_string()
}

async fn accept(listener: tokio::net::TcpListener, name: &'static str, shared: Arc<Shared>) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(connection(stream, name, shared.clone()));
    }
}

/// One gateway connection: hello, then identify/resume, heartbeats and commands until either side ends.
async fn connection(stream: tokio::net::TcpStream, listener: &'static str, shared: Arc<Shared>) {
    let Ok(socket) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let (mut outgoing, mut incoming) = socket.split();
    let (sender, mut commands) = mpsc::unbounded_channel();
    let (id, interval) = {
        let mut gateway = shared.lock();
        gateway.connections += 1;
        let id = gateway.connections;
        if let Some((_, previous)) = gateway.current.replace((id, sender.clone())) {
            let _ = previous.send(Command::Drop);
        }
        (id, gateway.heartbeat_ms)
    };
    shared.changed();
    let hello = json!({"op": 10, "d": {"heartbeat_interval": interval}}).to_string();
    if outgoing.send(Message::Text(hello.into())).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Send(text)) => {
                    if outgoing.send(Message::Text(text.into())).await.is_err() {
                        break;
                    }
                }
                Some(Command::Close(code)) => {
                    let frame = CloseFrame { code: code.into(), reason: "closed by the fake".into() };
                    let _ = outgoing.send(Message::Close(Some(frame))).await;
                    break;
                }
                Some(Command::Drop) | None => break,
            },
            message = incoming.next() => {
                let Some(Ok(message)) = message else { break };
                let Message::Text(text) = message else { continue };
                let Ok(payload) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                shared.lock().received.push((listener.to_owned(), payload.clone()));
                shared.changed();
                for reply in answer(&shared, &payload) {
                    let _ = sender.send(reply);
                }
            }
        }
    }
    let mut gateway = shared.lock();
    if gateway.current.as_ref().is_some_and(|(current, _)| *current == id) {
        gateway.current = None;
    }
    drop(gateway);
    shared.changed();
}

/// What the fake sends back for a client payload.
fn answer(shared: &Shared, payload: &Value) -> Vec<Command> {
    let mut gateway = shared.lock();
    match payload["op"].as_i64() {
        Some(1) if gateway.ack_heartbeats => vec![Command::Send(json!({"op": 11}).to_string())],
        Some(2) => {
            if payload["d"]["token"] != shared.token.as_str() {
                return vec![Command::Close(4004)];
            }
            gateway.sessions += 1;
            let session = format!("session-{}", gateway.sessions);
            gateway.session_id = Some(session.clone());
            gateway.next_seq += 1;
            let seq = gateway.next_seq;
            let ready = json!({
                "v": 10, "session_id": session, "resume_gateway_url": shared.resume_url,
                "user": {"id": BOT_ID, "username": BOT_USERNAME, "bot": true}, "guilds": [],
            });
            gateway.events.push((seq, "READY".into(), ready.clone()));
            let mut out = vec![Command::Send(dispatch_payload(seq, "READY", &ready))];
            let unsent = gateway.sent_up_to;
            out.extend(
                gateway
                    .events
                    .iter()
                    .filter(|(at, event, _)| *at > unsent && event != "READY")
                    .map(|(at, event, data)| Command::Send(dispatch_payload(*at, event, data))),
            );
            gateway.sent_up_to = gateway.next_seq;
            out
        }
        Some(6) => {
            let valid = payload["d"]["token"] == shared.token.as_str()
                && gateway.session_id.is_some()
                && payload["d"]["session_id"].as_str() == gateway.session_id.as_deref();
            if !valid {
                return vec![Command::Send(json!({"op": 9, "d": false}).to_string())];
            }
            let after = payload["d"]["seq"].as_i64().unwrap_or(0);
            let mut out: Vec<Command> = gateway
                .events
                .iter()
                .filter(|(at, event, _)| *at > after && event != "READY")
                .map(|(at, event, data)| Command::Send(dispatch_payload(*at, event, data)))
                .collect();
            gateway.next_seq += 1;
            let seq = gateway.next_seq;
            gateway.events.push((seq, "RESUMED".into(), Value::Null));
            out.push(Command::Send(dispatch_payload(seq, "RESUMED", &Value::Null)));
            gateway.sent_up_to = gateway.next_seq;
            out
        }
        _ => Vec::new(),
    }
}

type AppState = State<(Arc<Shared>, Arc<CallLog>)>;

/// Records the call; `Err` carries the response to give instead of the real one.
async fn admit(
    shared: &Shared,
    rest: &CallLog,
    route: &str,
    path: String,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<usize, Response> {
    let authorization = headers.get("authorization").and_then(|value| value.to_str().ok()).map(str::to_owned);
    let body: Value = if body.is_empty() { Value::Null } else { serde_json::from_slice(body).unwrap_or(Value::Null) };
    let Admission { index, failure, hold } = rest.admit(route, &path, authorization.clone(), body);
    if authorization.as_deref() != Some(format!("Bot {}", shared.token).as_str()) {
        return Err(
            (StatusCode::UNAUTHORIZED, axum::Json(json!({"message": "401: Unauthorized", "code": 0}))).into_response()
        );
    }
    if hold {
        std::future::pending::<()>().await;
    }
    match failure {
        Some(failure) => Err((&failure).into_response()),
        None => Ok(index),
    }
}

fn answer_json(rest: &CallLog, index: usize, value: Value) -> Response {
    rest.answered(index, value.clone());
    axum::Json(value).into_response()
}

async fn gateway_bot(State((shared, rest)): AppState, headers: HeaderMap) -> Response {
    match admit(&shared, &rest, GATEWAY_BOT, "/gateway/bot".into(), &headers, &Bytes::new()).await {
        Ok(index) => answer_json(
            &rest,
            index,
            json!({"url": shared.gateway_url, "shards": 1,
                   "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}}),
        ),
        Err(response) => response,
    }
}

async fn me(State((shared, rest)): AppState, headers: HeaderMap) -> Response {
    match admit(&shared, &rest, ME, "/users/@me".into(), &headers, &Bytes::new()).await {
        Ok(index) => answer_json(
            &rest,
            index,
            json!({"id": BOT_ID, "username": BOT_USERNAME, "global_name": "Cortex Test", "bot": true}),
        ),
        Err(response) => response,
    }
}

async fn create_message(
    State((shared, rest)): AppState,
    Path(channel): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/channels/{channel}/messages");
    match admit(&shared, &rest, CREATE_MESSAGE, path, &headers, &body).await {
        Ok(index) => {
            let sent: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let message = json!({
                "id": shared.message_id(), "channel_id": channel, "type": 0, "content": sent["content"],
                "flags": sent["flags"], "author": {"id": BOT_ID, "username": BOT_USERNAME, "bot": true},
            });
            answer_json(&rest, index, message)
        }
        Err(response) => response,
    }
}

async fn edit_message(
    State((shared, rest)): AppState,
    Path((channel, message)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/channels/{channel}/messages/{message}");
    match admit(&shared, &rest, EDIT_MESSAGE, path, &headers, &body).await {
        Ok(index) => {
            let sent: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            answer_json(&rest, index, json!({"id": message, "channel_id": channel, "content": sent["content"]}))
        }
        Err(response) => response,
    }
}

async fn typing(
    State((shared, rest)): AppState,
    Path(channel): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match admit(&shared, &rest, TYPING, format!("/channels/{channel}/typing"), &headers, &body).await {
        Ok(index) => {
            rest.answered(index, json!(true));
            StatusCode::NO_CONTENT.into_response()
        }
        Err(response) => response,
    }
}

async fn interaction_callback(
    State((shared, rest)): AppState,
    Path((id, token)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Interaction callbacks are authenticated by the interaction token in the path, not the bot token.
    let authorization = headers.get("authorization").and_then(|value| value.to_str().ok()).map(str::to_owned);
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let Admission { index, failure, .. } =
        rest.admit(INTERACTION_CALLBACK, &format!("/interactions/{id}/{token}/callback"), authorization, parsed);
    let _ = &shared;
    if let Some(failure) = failure {
        return (&failure).into_response();
    }
    rest.answered(index, json!(true));
    StatusCode::NO_CONTENT.into_response()
}
