//! An in-process fake of Slack speaking the real wire protocols: the Web API (`POST /api/<method>` with
//! `Authorization: Bearer`, answers `{ok: true, …}` or `{ok: false, error}` with HTTP 200, 429 with
//! `Retry-After`) for `auth.test`, `apps.connections.open` (app-level `xapp-` token only),
//! `chat.postMessage` and `chat.update`; and Socket Mode: a WebSocket that greets with `hello`, sends
//! each event in an `events_api` envelope, expects `{envelope_id}` back, redelivers unacknowledged
//! envelopes on the next connection (as Slack retries them), and can ask the client to `disconnect`.
//!
//! ```ignore
//! let slack = FakeSlack::start("xoxb-bot", "xapp-app").await;
//! // point the adapter at slack.api_base() (ends in /api)
//! slack.wait_for_connections(1).await;
//! slack.user_message("D1", "U1", "hello", None);
//! slack.api.wait_for_calls(POST_MESSAGE, 1).await;
//! ```

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::fake_http::{Admission, CallLog, Failure};

/// The bot user the fake claims to be.
pub const BOT_USER_ID: &str = "UBOT0001";
/// Its name.
pub const BOT_NAME: &str = "cortex-test";

/// Route names in [`FakeSlack::api`] (the Web API method names).
pub const POST_MESSAGE: &str = "chat.postMessage";
pub const UPDATE: &str = "chat.update";
/// A notice only the named user sees (answers to button presses).
pub const POST_EPHEMERAL: &str = "chat.postEphemeral";
pub const AUTH_TEST: &str = "auth.test";
pub const CONNECTIONS_OPEN: &str = "apps.connections.open";

/// Slack's 429 with `Retry-After` seconds.
pub fn rate_limited(retry_after: u64) -> Failure {
    Failure::new(429, json!({"ok": false, "error": "ratelimited"})).header("retry-after", retry_after.to_string())
}

/// `{ok: false, error}` with HTTP 200, as Slack reports most failures.
pub fn error(code: &str) -> Failure {
    Failure::new(200, json!({"ok": false, "error": code}))
}

enum Command {
    Send(String),
    Drop,
}

#[derive(Default)]
struct Socket {
    /// Envelopes sent and not yet acknowledged: `(envelope_id, envelope)`.
    unacked: Vec<(String, Value)>,
    acks: Vec<String>,
    next_envelope: u64,
    current: Option<(u64, mpsc::UnboundedSender<Command>)>,
    connections: u64,
    next_ts: u64,
}

struct Shared {
    bot_token: String,
    app_token: String,
    socket_url: String,
    socket: Mutex<Socket>,
    changes: watch::Sender<usize>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Socket> {
        self.socket.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn changed(&self) {
        self.changes.send_modify(|count| *count += 1);
    }

    fn ts(&self) -> String {
        let mut socket = self.lock();
        socket.next_ts += 1;
        format!("1790000000.{:06}", socket.next_ts)
    }
}

/// The running fake; stops when dropped.
pub struct FakeSlack {
    shared: Arc<Shared>,
    api_base: String,
    /// Every Web API call.
    pub api: Arc<CallLog>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for FakeSlack {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl FakeSlack {
    /// Starts the Web API and the Socket Mode listener on loopback, accepting only these tokens.
    pub async fn start(bot_token: &str, app_token: &str) -> FakeSlack {
        let bind = || async { tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind fake slack") };
        let (api_listener, socket_listener) = (bind().await, bind().await);
        let socket_url = format!("ws://{}/link/?ticket=t", socket_listener.local_addr().expect("local addr"));
        let shared = Arc::new(Shared {
            bot_token: bot_token.to_owned(),
            app_token: app_token.to_owned(),
            socket_url,
            socket: Mutex::new(Socket::default()),
            changes: watch::channel(0).0,
        });
        let api = Arc::new(CallLog::default());
        let api_base = format!("http://{}/api", api_listener.local_addr().expect("local addr"));
        let app =
            Router::new().route("/api/{method}", axum::routing::post(method)).with_state((shared.clone(), api.clone()));
        let accept_shared = shared.clone();
        let tasks = vec![
            tokio::spawn(async move {
                let _ = axum::serve(api_listener, app).await;
            }),
            tokio::spawn(async move {
                while let Ok((stream, _)) = socket_listener.accept().await {
                    tokio::spawn(connection(stream, accept_shared.clone()));
                }
            }),
        ];
        FakeSlack { shared, api_base, api, tasks }
    }

    /// What `SLACK_API_BASE` should be (ends in `/api`).
    pub fn api_base(&self) -> &str {
        &self.api_base
    }

    /// Sends `event` in an `events_api` envelope (kept until acknowledged); returns the envelope id.
    pub fn push_event(&self, event: Value) -> String {
        self.push_envelope(
            "events_api",
            |n| json!({"type": "event_callback", "event_id": format!("Ev{n}"), "event": event}),
        )
    }

    /// Sends an interactivity payload (`block_actions`) in an `interactive` envelope; returns its id.
    pub fn push_interactive(&self, payload: Value) -> String {
        self.push_envelope("interactive", |_| payload)
    }

    /// Sends an envelope of `kind` whose payload `payload(n)` builds from the envelope number.
    fn push_envelope(&self, kind: &str, payload: impl FnOnce(u64) -> Value) -> String {
        let (id, sender, envelope) = {
            let mut socket = self.shared.lock();
            socket.next_envelope += 1;
            let id = format!("env-{}", socket.next_envelope);
            let envelope = json!({
                "envelope_id": id, "type": kind, "accepts_response_payload": false, "retry_attempt": 0,
                "payload": payload(socket.next_envelope),
            });
            socket.unacked.push((id.clone(), envelope.clone()));
            (id, socket.current.as_ref().map(|(_, sender)| sender.clone()), envelope)
        };
        if let Some(sender) = sender {
            let _ = sender.send(Command::Send(envelope.to_string()));
        }
        id
    }

    /// A user's message event (`channel_type` `im` for channels starting with `D`, else `channel`);
    /// returns the event (its `ts` is the platform message id within the channel).
    pub fn user_message(&self, channel: &str, user: &str, text: &str, thread_ts: Option<&str>) -> Value {
        let mut event = json!({
            "type": "message", "channel": channel, "user": user, "text": text, "ts": self.shared.ts(),
            "channel_type": if channel.starts_with('D') { "im" } else { "channel" },
        });
        if let Some(thread) = thread_ts {
            event["thread_ts"] = json!(thread);
        }
        self.push_event(event.clone());
        event
    }

    /// Asks the connected client to reconnect (`{"type": "disconnect", "reason": "refresh_requested"}`).
    pub fn disconnect(&self) {
        self.command(Command::Send(json!({"type": "disconnect", "reason": "refresh_requested"}).to_string()));
    }

    /// Closes the socket without a close frame.
    pub fn drop_connection(&self) {
        self.command(Command::Drop);
    }

    fn command(&self, command: Command) {
        if let Some((_, sender)) = &self.shared.lock().current {
            let _ = sender.send(command);
        }
    }

    /// Envelope ids the client acknowledged, in order.
    pub fn acks(&self) -> Vec<String> {
        self.shared.lock().acks.clone()
    }

    /// Socket Mode connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.lock().connections
    }

    /// Waits (up to 30 s) for `count` Socket Mode connections.
    pub async fn wait_for_connections(&self, count: u64) {
        self.wait(|| self.connections() >= count, || format!("{count} connections, have {}", self.connections())).await;
    }

    /// Waits (up to 30 s) until `envelope_id` was acknowledged.
    pub async fn wait_for_ack(&self, envelope_id: &str) {
        self.wait(
            || self.acks().iter().any(|ack| ack == envelope_id),
            || format!("an ack of {envelope_id}; acks {:?}", self.acks()),
        )
        .await;
    }

    async fn wait(&self, done: impl Fn() -> bool, describe: impl Fn() -> String) {
        let mut changes = self.shared.changes.subscribe();
        let waited = tokio::time::timeout(Duration::from_secs(30), async {
            while !done() {
                if changes.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        assert!(waited.is_ok() && done(), "timed out waiting for {}", describe());
    }
}

async fn connection(stream: tokio::net::TcpStream, shared: Arc<Shared>) {
    let Ok(socket) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let (mut outgoing, mut incoming) = socket.split();
    let (sender, mut commands) = mpsc::unbounded_channel();
    let (id, backlog) = {
        let mut socket = shared.lock();
        socket.connections += 1;
        let id = socket.connections;
        if let Some((_, previous)) = socket.current.replace((id, sender)) {
            let _ = previous.send(Command::Drop);
        }
        (id, socket.unacked.iter().map(|(_, envelope)| envelope.to_string()).collect::<Vec<_>>())
    };
    shared.changed();
    let hello = json!({"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A1"}});
    if outgoing.send(Message::Text(hello.to_string().into())).await.is_err() {
        return;
    }
    for envelope in backlog {
        if outgoing.send(Message::Text(envelope.into())).await.is_err() {
            return;
        }
    }
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Send(text)) => {
                    if outgoing.send(Message::Text(text.into())).await.is_err() {
                        break;
                    }
                }
                Some(Command::Drop) | None => break,
            },
            message = incoming.next() => {
                let Some(Ok(message)) = message else { break };
                let Message::Text(text) = message else { continue };
                let Ok(payload) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                if let Some(envelope_id) = payload["envelope_id"].as_str() {
                    let mut socket = shared.lock();
                    socket.unacked.retain(|(id, _)| id != envelope_id);
                    socket.acks.push(envelope_id.to_owned());
                    drop(socket);
                    shared.changed();
                }
            }
        }
    }
    let mut socket = shared.lock();
    if socket.current.as_ref().is_some_and(|(current, _)| *current == id) {
        socket.current = None;
    }
}

type AppState = State<(Arc<Shared>, Arc<CallLog>)>;

async fn method(State((shared, api)): AppState, Path(name): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let authorization = headers.get("authorization").and_then(|value| value.to_str().ok()).map(str::to_owned);
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let Admission { index, failure, hold } =
        api.admit(&name, &format!("/api/{name}"), authorization.clone(), parsed.clone());
    let token = if name == CONNECTIONS_OPEN { &shared.app_token } else { &shared.bot_token };
    if authorization.as_deref() != Some(format!("Bearer {token}").as_str()) {
        return axum::Json(json!({"ok": false, "error": "invalid_auth"})).into_response();
    }
    if hold {
        std::future::pending::<()>().await;
    }
    if let Some(failure) = failure {
        return (&failure).into_response();
    }
    let result = match name.as_str() {
        AUTH_TEST => {
            json!({"ok": true, "user_id": BOT_USER_ID, "user": BOT_NAME, "team": "Test", "team_id": "T1", "bot_id": "B1"})
        }
        CONNECTIONS_OPEN => json!({"ok": true, "url": shared.socket_url}),
        POST_MESSAGE => json!({"ok": true, "channel": parsed["channel"], "ts": shared.ts(),
                               "message": {"text": parsed["text"], "user": BOT_USER_ID, "bot_id": "B1"}}),
        UPDATE => json!({"ok": true, "channel": parsed["channel"], "ts": parsed["ts"], "text": parsed["text"]}),
        POST_EPHEMERAL => json!({"ok": true, "message_ts": shared.ts()}),
        _ => json!({"ok": false, "error": "unknown_method"}),
    };
    if result["ok"] == true {
        api.answered(index, result.clone());
    }
    axum::Json(result).into_response()
}
