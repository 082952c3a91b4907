//! An in-process fake of the Telegram Bot API speaking the real wire format: `POST /bot<token>/<method>`
//! with a JSON body (method names matched case-insensitively, as Telegram does), answers in the
//! `{ok, result}` / `{ok: false, error_code, description, parameters}` envelope.
//!
//! It keeps an update queue with real `getUpdates` semantics (an `offset` confirms every earlier update;
//! with nothing pending the call waits up to `timeout` seconds for one), records every call, numbers sent
//! messages per chat, and can be told to fail the next calls of a method (429 with `retry_after`, 5xx,
//! or a 400 refusing the HTML markup), or every call of one until told to recover.
//!
//! ```ignore
//! let telegram = FakeTelegram::start("123:abc").await;
//! telegram.push_text(42, 42, "hello");            // a private message from user 42
//! // point the adapter at telegram.api_base()
//! let sent = telegram.wait_for_calls("sendMessage", 1).await;
//! ```

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};

/// A call as the fake received it.
#[derive(Debug, Clone)]
pub struct TelegramCall {
    /// The method name in lowercase (`sendmessage`).
    pub method: String,
    pub body: Value,
    /// The `result` the fake answered with; `Null` for failed or held calls.
    pub response: Value,
}

/// An error the fake answers instead of the next call of a method.
#[derive(Debug, Clone)]
pub struct Failure {
    pub status: u16,
    pub description: String,
    pub retry_after: Option<u64>,
}

impl Failure {
    /// 429 Too Many Requests with `parameters.retry_after`.
    pub fn rate_limited(retry_after: u64) -> Self {
        Self {
            status: 429,
            description: format!("Too Many Requests: retry after {retry_after}"),
            retry_after: Some(retry_after),
        }
    }

    /// A server error.
    pub fn server_error() -> Self {
        Self { status: 502, description: "Bad Gateway".into(), retry_after: None }
    }

    /// Telegram refusing the HTML markup of a message.
    pub fn bad_markup() -> Self {
        Self {
            status: 400,
            description: "Bad Request: can't parse entities: unsupported start tag".into(),
            retry_after: None,
        }
    }
}

#[derive(Default)]
struct Inner {
    next_update_id: i64,
    updates: VecDeque<Value>,
    calls: Vec<TelegramCall>,
    /// `(method, calls to let through first, failure)`.
    failures: Vec<(String, usize, Failure)>,
    /// Methods whose next call is never answered (the caller's process can die meanwhile).
    holds: Vec<String>,
    /// `(method, failure)`: every call fails until [`FakeTelegram::recover`].
    refusals: Vec<(String, Failure)>,
    next_message_id: i64,
}

struct Shared {
    token: String,
    inner: Mutex<Inner>,
    update_arrived: Notify,
    calls: watch::Sender<usize>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The running fake; stops when dropped.
pub struct FakeTelegram {
    shared: Arc<Shared>,
    base: String,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeTelegram {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The bot the fake claims to be.
pub const BOT_ID: i64 = 777_000;
/// Its username.
pub const BOT_USERNAME: &str = "cortex_test_bot";

impl FakeTelegram {
    /// Starts on `127.0.0.1:0`, accepting only `token`.
    pub async fn start(token: &str) -> FakeTelegram {
        let shared = Arc::new(Shared {
            token: token.to_owned(),
            inner: Mutex::new(Inner { next_update_id: 100, next_message_id: 1000, ..Inner::default() }),
            update_arrived: Notify::new(),
            calls: watch::channel(0).0,
        });
        let app = Router::new().route("/{bot}/{method}", axum::routing::post(handle)).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind fake telegram");
        let base = format!("http://{}", listener.local_addr().expect("local addr"));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeTelegram { shared, base, server }
    }

    /// What `TELEGRAM_API_BASE` should be.
    pub fn api_base(&self) -> &str {
        &self.base
    }

    /// Queues a raw update (its `update_id` is assigned) and returns the id.
    pub fn push_update(&self, mut update: Value) -> i64 {
        let id = {
            let mut inner = self.shared.lock();
            inner.next_update_id += 1;
            let id = inner.next_update_id;
            update["update_id"] = json!(id);
            inner.updates.push_back(update);
            id
        };
        self.shared.update_arrived.notify_waiters();
        id
    }

    /// Queues a text message from user `from` in chat `chat` (private when they are equal, else a
    /// supergroup) and returns its update id.
    pub fn push_text(&self, chat: i64, from: i64, text: &str) -> i64 {
        let message_id = {
            let mut inner = self.shared.lock();
            inner.next_message_id += 1;
            inner.next_message_id
        };
        let kind = if chat == from { "private" } else { "supergroup" };
        self.push_update(json!({"message": {
            "message_id": message_id, "date": 1_790_000_000,
            "chat": {"id": chat, "type": kind},
            "from": {"id": from, "is_bot": false, "first_name": format!("User{from}")},
            "text": text,
        }}))
    }

    /// Makes the next call of `method` (any case) fail with `failure`; several queue up in order.
    pub fn fail_next(&self, method: &str, failure: Failure) {
        self.fail_after(method, 0, failure);
    }

    /// Lets `successes` more calls of `method` through, then fails one with `failure`.
    pub fn fail_after(&self, method: &str, successes: usize, failure: Failure) {
        self.shared.lock().failures.push((method.to_ascii_lowercase(), successes, failure));
    }

    /// Makes every call of `method` (any case) fail with `failure` until [`FakeTelegram::recover`]: a
    /// platform that stays down for as long as the test needs, whatever the caller's retry timing.
    pub fn refuse(&self, method: &str, failure: Failure) {
        self.shared.lock().refusals.push((method.to_ascii_lowercase(), failure));
    }

    /// Ends [`FakeTelegram::refuse`] and drops the failures still queued for `method`: its next call succeeds.
    pub fn recover(&self, method: &str) {
        let method = method.to_ascii_lowercase();
        let mut inner = self.shared.lock();
        inner.refusals.retain(|(name, _)| *name != method);
        inner.failures.retain(|(name, _, _)| *name != method);
    }

    /// Makes the next call of `method` (any case) hang without an answer, as if the platform accepted
    /// it and the reply never came back; it does not count as delivered.
    pub fn hold_next(&self, method: &str) {
        self.shared.lock().holds.push(method.to_ascii_lowercase());
    }

    /// Calls of `method` the fake answered successfully (for `sendMessage`: messages delivered).
    pub fn delivered(&self, method: &str) -> Vec<TelegramCall> {
        self.calls(method).into_iter().filter(|call| !call.response.is_null()).collect()
    }

    /// Every call of `method` (any case) so far.
    pub fn calls(&self, method: &str) -> Vec<TelegramCall> {
        let method = method.to_ascii_lowercase();
        self.shared.lock().calls.iter().filter(|call| call.method == method).cloned().collect()
    }

    /// Waits (up to 30 s) until `method` was called at least `count` times; panics with what arrived.
    pub async fn wait_for_calls(&self, method: &str, count: usize) -> Vec<TelegramCall> {
        self.wait_for(method, count, false).await
    }

    /// Waits (up to 30 s) until `count` calls of `method` were answered successfully (their `response`
    /// is there, e.g. a sent message's id); panics with what arrived.
    pub async fn wait_for_delivered(&self, method: &str, count: usize) -> Vec<TelegramCall> {
        self.wait_for(method, count, true).await
    }

    async fn wait_for(&self, method: &str, count: usize, answered: bool) -> Vec<TelegramCall> {
        let mut changes = self.shared.calls.subscribe();
        let matching = || if answered { self.delivered(method) } else { self.calls(method) };
        let waited = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let calls = matching();
                if calls.len() >= count {
                    return calls;
                }
                if changes.changed().await.is_err() {
                    return calls;
                }
            }
        })
        .await;
        match waited {
            Ok(calls) if calls.len() >= count => calls,
            _ => {
                let seen: Vec<String> = self.shared.lock().calls.iter().map(|call| call.method.clone()).collect();
                panic!("timed out waiting for {count} {method} calls (answered: {answered}); calls so far: {seen:?}")
            }
        }
    }

    /// Updates not yet confirmed by an offset.
    pub fn pending_updates(&self) -> usize {
        self.shared.lock().updates.len()
    }
}

fn envelope_error(failure: &Failure) -> Response {
    let mut body = json!({"ok": false, "error_code": failure.status, "description": failure.description});
    if let Some(retry_after) = failure.retry_after {
        body["parameters"] = json!({"retry_after": retry_after});
    }
    (StatusCode::from_u16(failure.status).unwrap_or(StatusCode::BAD_REQUEST), axum::Json(body)).into_response()
}

fn ok(result: Value) -> Response {
    axum::Json(json!({"ok": true, "result": result})).into_response()
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    Path((bot, method)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    if bot.strip_prefix("bot") != Some(shared.token.as_str()) {
        return envelope_error(&Failure { status: 401, description: "Unauthorized".into(), retry_after: None });
    }
    let method = method.to_ascii_lowercase();
    let body: Value = if body.is_empty() { json!({}) } else { serde_json::from_slice(&body).unwrap_or(Value::Null) };
    let (index, failure, hold) = {
        let mut inner = shared.lock();
        inner.calls.push(TelegramCall { method: method.clone(), body: body.clone(), response: Value::Null });
        let index = inner.calls.len() - 1;
        let position = inner.failures.iter().position(|(name, _, _)| *name == method);
        let failure = match position {
            Some(index) if inner.failures[index].1 > 0 => {
                inner.failures[index].1 -= 1;
                None
            }
            Some(index) => Some(inner.failures.remove(index).2),
            None => None,
        };
        let failure = failure
            .or_else(|| inner.refusals.iter().find(|(name, _)| *name == method).map(|(_, failure)| failure.clone()));
        let hold = inner.holds.iter().position(|name| *name == method).map(|index| inner.holds.remove(index));
        (index, failure, hold.is_some())
    };
    shared.calls.send_modify(|count| *count += 1);
    if hold {
        std::future::pending::<()>().await;
    }
    if let Some(failure) = failure {
        return envelope_error(&failure);
    }
    let result = answer(&shared, &method, &body).await;
    if let Some(result) = result.as_ref().filter(|_| method != "getupdates") {
        shared.lock().calls[index].response = result.clone();
        shared.calls.send_modify(|_| {});
    }
    match result {
        Some(result) => ok(result),
        None => envelope_error(&Failure {
            status: 404,
            description: "Not Found: method not found".into(),
            retry_after: None,
        }),
    }
}

/// The `result` of a successful call, `None` for an unknown method.
async fn answer(shared: &Shared, method: &str, body: &Value) -> Option<Value> {
    Some(match method {
        "getme" => json!({"id": BOT_ID, "is_bot": true, "first_name": "Cortex Test", "username": BOT_USERNAME}),
        "getupdates" => get_updates(shared, body).await,
        "sendmessage" => {
            let message_id = {
                let mut inner = shared.lock();
                inner.next_message_id += 1;
                inner.next_message_id
            };
            json!({
                "message_id": message_id, "date": 1_790_000_000,
                "chat": {"id": body["chat_id"], "type": "private"},
                "from": {"id": BOT_ID, "is_bot": true, "first_name": "Cortex Test"},
                "text": body["text"],
            })
        }
        "editmessagetext" => {
            json!({"message_id": body["message_id"], "chat": {"id": body["chat_id"]}, "text": body["text"]})
        }
        "sendchataction" | "answercallbackquery" | "setwebhook" | "deletewebhook" => json!(true),
        _ => return None,
    })
}

async fn get_updates(shared: &Shared, body: &Value) -> Value {
    let offset = body.get("offset").and_then(Value::as_i64);
    let timeout = body.get("timeout").and_then(Value::as_u64).unwrap_or(0).min(50);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    loop {
        let arrived = shared.update_arrived.notified();
        {
            let mut inner = shared.lock();
            if let Some(offset) = offset {
                inner.updates.retain(|update| update["update_id"].as_i64().unwrap_or(0) >= offset);
            }
            if !inner.updates.is_empty() {
                return Value::Array(inner.updates.iter().cloned().collect());
            }
        }
        if tokio::time::timeout_at(deadline, arrived).await.is_err() {
            return json!([]);
        }
    }
}
