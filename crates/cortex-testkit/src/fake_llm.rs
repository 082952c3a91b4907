//! An in-process fake LLM server speaking the real wire protocols, for tests of anything that calls models.
//!
//! [`FakeLlm`] listens on `127.0.0.1:0` and answers OpenAI Chat Completions (`POST …/v1/chat/completions`)
//! and Anthropic Messages (`POST …/v1/messages`) in the exact shapes the real APIs use: streaming SSE (text
//! deltas, tool-call argument fragments split across chunks, usage in the final chunk / `message_delta`) or a
//! single JSON body when the request does not ask to stream. What it answers is scripted:
//!
//! - a **queue** of one-shot [`Reply`]s, used in order ([`FakeLlm::push`]), optionally only for requests to
//!   one model ([`FakeLlm::push_for_model`]);
//! - **rules** ([`FakeLlm::rule`]) consulted when the queue has nothing for a request: the first rule whose
//!   [`When`] matches answers, every time. Rules make concurrent tests independent of request order. A
//!   rule may compute its reply from the request ([`FakeLlm::rule_fn`]).
//!
//! Replies are text, tool calls, HTTP errors with headers (`Retry-After`), a stream cut mid-way, a garbled
//! stream, or a hang — forever, or until a [`Gate`] is opened. Every request is recorded
//! ([`FakeLlm::requests`]) with its headers and JSON body, with helpers to read what the model was shown
//! across both wire styles; [`FakeLlm::wait_for_requests`] waits for arrivals without sleeping.
//!
//! `GET …/models` answers the model listing both styles share (`{"data": [{"id": …}]}`) with the ids set
//! by [`FakeLlm::set_models`]; those requests are counted apart ([`FakeLlm::model_listings`]) with the
//! credential they carried, so they never disturb the scripted chat.
//!
//! ```ignore
//! let llm = FakeLlm::start().await;
//! llm.push(Reply::tool_call("echo", json!({"text": "hi"})));
//! llm.rule(When::LastIsToolResult, Reply::text("done").usage(12, 3));
//! // point OPENAI_BASE_URL at llm.openai_base_url(), or ANTHROPIC_BASE_URL at llm.anthropic_base_url()
//! ```

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use futures::{Stream, StreamExt, stream};
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};

/// Which API a request used (decided by its path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    OpenAi,
    Anthropic,
}

/// A request as the fake received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub path: String,
    pub style: Style,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl RecordedRequest {
    /// The requested model id.
    pub fn model(&self) -> &str {
        self.body.get("model").and_then(Value::as_str).unwrap_or_default()
    }

    /// Whether the client asked for a stream.
    pub fn stream(&self) -> bool {
        self.body.get("stream").and_then(Value::as_bool).unwrap_or(false)
    }

    /// A header value by (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(key, _)| *key == name).map(|(_, value)| value.as_str())
    }

    /// Names of the tools offered, in order.
    pub fn tool_names(&self) -> Vec<String> {
        let tools = self.body.get("tools").and_then(Value::as_array).cloned().unwrap_or_default();
        tools
            .iter()
            .filter_map(|tool| match self.style {
                Style::OpenAi => tool.pointer("/function/name"),
                Style::Anthropic => tool.get("name"),
            })
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect()
    }

    /// The system prompt.
    pub fn system(&self) -> String {
        match self.style {
            Style::OpenAi => self
                .messages()
                .iter()
                .filter(|message| message.role == "system")
                .map(|message| message.text.clone())
                .collect::<Vec<_>>()
                .join("\n"),
            Style::Anthropic => self.body.get("system").map(text_of).unwrap_or_default(),
        }
    }

    /// The conversation flattened into one entry per text part, tool call or tool result, in order, with
    /// the same roles for both styles: `system`, `user`, `assistant`, `tool_call`, `tool_result`.
    pub fn messages(&self) -> Vec<SeenMessage> {
        let messages = self.body.get("messages").and_then(Value::as_array).cloned().unwrap_or_default();
        let mut seen = Vec::new();
        for message in &messages {
            let role = message.get("role").and_then(Value::as_str).unwrap_or_default();
            match self.style {
                Style::OpenAi => openai_seen(role, message, &mut seen),
                Style::Anthropic => anthropic_seen(role, message, &mut seen),
            }
        }
        seen
    }

    /// The contents of every tool result the model was given, in order.
    pub fn tool_results(&self) -> Vec<String> {
        self.messages()
            .into_iter()
            .filter(|message| message.role == "tool_result")
            .map(|message| message.text)
            .collect()
    }

    /// Texts of user messages, in order.
    pub fn user_texts(&self) -> Vec<String> {
        self.messages().into_iter().filter(|message| message.role == "user").map(|message| message.text).collect()
    }

    /// Whether the conversation ends with a tool result (the model is being asked to continue after tools).
    pub fn last_is_tool_result(&self) -> bool {
        self.messages().last().is_some_and(|message| message.role == "tool_result")
    }

    /// The whole body as JSON text, for `contains` checks.
    pub fn body_text(&self) -> String {
        self.body.to_string()
    }
}

/// One flattened piece of a recorded conversation (see [`RecordedRequest::messages`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenMessage {
    pub role: String,
    /// Text; for tool calls `name(arguments)`.
    pub text: String,
    /// For tool results, whether the client flagged an error (Anthropic) or prefixed `Error:` (OpenAI).
    pub is_error: bool,
}

fn openai_seen(role: &str, message: &Value, seen: &mut Vec<SeenMessage>) {
    let text = message.get("content").map(text_of).unwrap_or_default();
    match role {
        "tool" => {
            seen.push(SeenMessage { role: "tool_result".into(), is_error: text.starts_with("Error:"), text });
        }
        "assistant" => {
            if !text.is_empty() {
                seen.push(SeenMessage { role: "assistant".into(), text, is_error: false });
            }
            for call in message.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
                let name = call.pointer("/function/name").and_then(Value::as_str).unwrap_or_default();
                let arguments = call.pointer("/function/arguments").and_then(Value::as_str).unwrap_or_default();
                seen.push(SeenMessage {
                    role: "tool_call".into(),
                    text: format!("{name}({arguments})"),
                    is_error: false,
                });
            }
        }
        other => seen.push(SeenMessage { role: other.into(), text, is_error: false }),
    }
}

fn anthropic_seen(role: &str, message: &Value, seen: &mut Vec<SeenMessage>) {
    let blocks = match message.get("content") {
        Some(Value::Array(blocks)) => blocks.clone(),
        Some(Value::String(text)) => vec![json!({"type": "text", "text": text})],
        _ => Vec::new(),
    };
    for block in blocks {
        match block.get("type").and_then(Value::as_str).unwrap_or_default() {
            "text" => seen.push(SeenMessage { role: role.into(), text: text_of(&block["text"]), is_error: false }),
            "tool_use" => {
                let name = block.get("name").and_then(Value::as_str).unwrap_or_default();
                let input = block.get("input").cloned().unwrap_or(Value::Null);
                seen.push(SeenMessage { role: "tool_call".into(), text: format!("{name}({input})"), is_error: false });
            }
            "tool_result" => seen.push(SeenMessage {
                role: "tool_result".into(),
                text: block.get("content").map(text_of).unwrap_or_default(),
                is_error: block.get("is_error").and_then(Value::as_bool).unwrap_or(false),
            }),
            _ => {}
        }
    }
}

/// Text of a content value: a string, or the text parts of an array.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts.iter().filter_map(|part| part.get("text").and_then(Value::as_str)).collect(),
        _ => String::new(),
    }
}

/// A latch that held replies wait on; opening it releases every waiter, including later ones.
#[derive(Debug, Clone, Default)]
pub struct Gate {
    open: Arc<(Mutex<bool>, Notify)>,
}

impl Gate {
    pub fn new() -> Self {
        Self::default()
    }

    /// Lets every reply held by this gate (now or later) proceed.
    pub fn open(&self) {
        *self.open.0.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.open.1.notify_waiters();
    }

    async fn wait(&self) {
        loop {
            let notified = self.open.1.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if *self.open.0.lock().unwrap_or_else(PoisonError::into_inner) {
                return;
            }
            notified.await;
        }
    }
}

#[derive(Debug, Clone)]
enum Answer {
    /// Text and tool calls (name, raw arguments text).
    Message {
        text: String,
        calls: Vec<(String, String)>,
    },
    Error {
        status: u16,
        headers: Vec<(String, String)>,
        body: Option<Value>,
    },
    /// Starts streaming `text`, then aborts the connection.
    DropMidStream {
        text: String,
    },
    /// A 200 stream whose events are not JSON.
    Malformed,
    /// Never answers.
    Hang,
}

/// One scripted answer. Built with the constructors and adjusted with the builder methods.
#[derive(Debug, Clone)]
pub struct Reply {
    body: Answer,
    usage: Option<(u64, u64)>,
    gate: Option<Gate>,
    /// Streams the first half of the events, then waits for this gate before the rest.
    midway: Option<Gate>,
    chunk_chars: usize,
}

impl Reply {
    fn new(body: Answer) -> Self {
        Self { body, usage: None, gate: None, midway: None, chunk_chars: 8 }
    }

    /// A final text answer.
    pub fn text(text: impl Into<String>) -> Self {
        Self::new(Answer::Message { text: text.into(), calls: Vec::new() })
    }

    /// One tool call with JSON arguments.
    pub fn tool_call(name: impl Into<String>, arguments: Value) -> Self {
        Self::tool_calls(vec![(name.into(), arguments)])
    }

    /// Several tool calls in one message, in order.
    pub fn tool_calls(calls: Vec<(String, Value)>) -> Self {
        let calls = calls.into_iter().map(|(name, arguments)| (name, arguments.to_string())).collect();
        Self::new(Answer::Message { text: String::new(), calls })
    }

    /// A tool call whose arguments are the given raw text (for malformed-JSON tests).
    pub fn raw_tool_call(name: impl Into<String>, arguments: impl Into<String>) -> Self {
        Self::new(Answer::Message { text: String::new(), calls: vec![(name.into(), arguments.into())] })
    }

    /// An HTTP error with the style's standard error body (override with [`Reply::error_body`]).
    pub fn error(status: u16) -> Self {
        Self::new(Answer::Error { status, headers: Vec::new(), body: None })
    }

    /// A stream that delivers part of `text` and then drops the connection.
    pub fn drop_mid_stream(text: impl Into<String>) -> Self {
        Self::new(Answer::DropMidStream { text: text.into() })
    }

    /// A 200 stream of garbage events.
    pub fn malformed() -> Self {
        Self::new(Answer::Malformed)
    }

    /// Never answers (the client's timeout or an abort ends the call).
    pub fn hang() -> Self {
        Self::new(Answer::Hang)
    }

    /// Adds text before the tool calls of a message reply.
    pub fn with_text(mut self, prefix: impl Into<String>) -> Self {
        if let Answer::Message { text, .. } = &mut self.body {
            *text = prefix.into();
        }
        self
    }

    /// Adds a response header to an error reply (e.g. `retry-after`).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        if let Answer::Error { headers, .. } = &mut self.body {
            headers.push((name.to_ascii_lowercase(), value.to_owned()));
        }
        self
    }

    /// Replaces the JSON body of an error reply.
    pub fn error_body(mut self, value: Value) -> Self {
        if let Answer::Error { body, .. } = &mut self.body {
            *body = Some(value);
        }
        self
    }

    /// Reported token usage (default: request bytes / 4 in, answer characters / 4 + 1 out).
    pub fn usage(mut self, tokens_in: u64, tokens_out: u64) -> Self {
        self.usage = Some((tokens_in, tokens_out));
        self
    }

    /// Holds the reply until `gate` is opened (the request is recorded at once).
    pub fn after(mut self, gate: &Gate) -> Self {
        self.gate = Some(gate.clone());
        self
    }

    /// Streams the first half of the reply, then holds the rest until `gate` is opened: a client can be
    /// seen showing a partial answer (streaming tests).
    pub fn hold_midway(mut self, gate: &Gate) -> Self {
        self.midway = Some(gate.clone());
        self
    }

    /// Characters per streamed text delta (default 8).
    pub fn chunk_chars(mut self, chars: usize) -> Self {
        self.chunk_chars = chars.max(1);
        self
    }
}

/// When a rule applies.
#[derive(Clone)]
pub enum When {
    Always,
    /// The request is for this model id.
    Model(String),
    /// The conversation ends with a tool result.
    LastIsToolResult,
    /// Some tool result contains this text.
    ToolResultContains(String),
    /// The last user text contains this text.
    LastUserContains(String),
    /// Any test-specific condition.
    Custom(Arc<dyn Fn(&RecordedRequest) -> bool + Send + Sync>),
}

impl When {
    fn matches(&self, request: &RecordedRequest) -> bool {
        match self {
            When::Always => true,
            When::Model(model) => request.model() == model,
            When::LastIsToolResult => request.last_is_tool_result(),
            When::ToolResultContains(text) => {
                request.tool_results().iter().any(|result| result.contains(text.as_str()))
            }
            When::LastUserContains(text) => {
                request.user_texts().last().is_some_and(|last| last.contains(text.as_str()))
            }
            When::Custom(check) => check(request),
        }
    }
}

/// How a rule answers: always the same reply, or one computed from what the model was shown.
#[derive(Clone)]
enum Answerer {
    Fixed(Reply),
    Computed(Arc<dyn Fn(&RecordedRequest) -> Reply + Send + Sync>),
}

#[derive(Default)]
struct Script {
    queue: VecDeque<(Option<String>, Reply)>,
    rules: Vec<(When, Answerer)>,
    requests: Vec<RecordedRequest>,
    models: Vec<String>,
    /// `(path, authorization or x-api-key header)` of each model listing.
    listings: Vec<(String, String)>,
}

impl Script {
    fn reply_for(&mut self, request: &RecordedRequest) -> Option<Reply> {
        let model = request.model();
        let queued = self.queue.iter().position(|(only, _)| only.as_deref().is_none_or(|only| only == model));
        if let Some(index) = queued {
            return self.queue.remove(index).map(|(_, reply)| reply);
        }
        self.rules.iter().find(|(when, _)| when.matches(request)).map(|(_, answerer)| match answerer {
            Answerer::Fixed(reply) => reply.clone(),
            Answerer::Computed(respond) => respond(request),
        })
    }
}

struct Shared {
    script: Mutex<Script>,
    arrivals: watch::Sender<usize>,
    next_call_id: AtomicU64,
}

impl Shared {
    fn script(&self) -> MutexGuard<'_, Script> {
        self.script.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running fake; the server lives as long as the test's runtime.
#[derive(Clone)]
pub struct FakeLlm {
    url: String,
    shared: Arc<Shared>,
}

impl FakeLlm {
    /// Binds `127.0.0.1:0` and starts serving.
    ///
    /// # Panics
    /// When no local port can be bound (test set-up failure).
    pub async fn start() -> FakeLlm {
        let shared = Arc::new(Shared {
            script: Mutex::new(Script::default()),
            arrivals: watch::channel(0).0,
            next_call_id: AtomicU64::new(1),
        });
        let app = Router::new()
            .route(
                "/v1/embeddings",
                axum::routing::post(|axum::Json(body): axum::Json<serde_json::Value>| async move {
                    crate::fake_embeddings::respond(&body)
                }),
            )
            .fallback(handle)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the fake LLM");
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeLlm { url, shared }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// What `OPENAI_BASE_URL` should be (with `/v1`, as the official SDKs expect).
    pub fn openai_base_url(&self) -> String {
        format!("{}/v1", self.url)
    }

    /// What `ANTHROPIC_BASE_URL` should be (without `/v1`).
    pub fn anthropic_base_url(&self) -> String {
        self.url.clone()
    }

    /// Queues a one-shot reply for the next request.
    pub fn push(&self, reply: Reply) {
        self.shared.script().queue.push_back((None, reply));
    }

    /// Queues a one-shot reply for the next request to `model`.
    pub fn push_for_model(&self, model: &str, reply: Reply) {
        self.shared.script().queue.push_back((Some(model.to_owned()), reply));
    }

    /// Adds a standing rule, consulted in the order added when the queue has nothing for a request.
    pub fn rule(&self, when: When, reply: Reply) {
        self.shared.script().rules.push((when, Answerer::Fixed(reply)));
    }

    /// Adds a standing rule whose reply is computed from the request: a scripted model that reacts to
    /// what it was shown (for example one that obeys instructions it finds in its context).
    pub fn rule_fn(&self, when: When, respond: impl Fn(&RecordedRequest) -> Reply + Send + Sync + 'static) {
        self.shared.script().rules.push((when, Answerer::Computed(Arc::new(respond))));
    }

    /// The model ids `GET …/models` reports.
    pub fn set_models(&self, models: &[&str]) {
        self.shared.script().models = models.iter().map(|model| (*model).to_owned()).collect();
    }

    /// `(path, credential header)` of every model listing request so far.
    pub fn model_listings(&self) -> Vec<(String, String)> {
        self.shared.script().listings.clone()
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.script().requests.clone()
    }

    pub fn request_count(&self) -> usize {
        self.shared.script().requests.len()
    }

    /// Resolves once at least `count` requests have arrived.
    pub async fn wait_for_requests(&self, count: usize) {
        let mut arrivals = self.shared.arrivals.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = arrivals.wait_for(|seen| *seen >= count).await;
    }
}

type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if method == Method::GET && uri.path().ends_with("/models") {
        let credential = ["authorization", "x-api-key"]
            .iter()
            .find_map(|name| headers.get(*name).and_then(|value| value.to_str().ok()))
            .unwrap_or_default()
            .to_owned();
        let mut script = shared.script();
        script.listings.push((uri.path().to_owned(), credential));
        let data: Vec<Value> = script.models.iter().map(|id| json!({"id": id, "object": "model"})).collect();
        return json_response(200, &json!({"object": "list", "data": data}));
    }
    let style = if uri.path().ends_with("/messages") { Style::Anthropic } else { Style::OpenAi };
    let request = RecordedRequest {
        path: uri.path().to_owned(),
        style,
        headers: headers
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), value.to_str().unwrap_or_default().to_owned()))
            .collect(),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    };
    let reply = {
        let mut script = shared.script();
        let reply = script.reply_for(&request);
        script.requests.push(request.clone());
        let count = script.requests.len();
        shared.arrivals.send_replace(count);
        reply
    };
    let Some(reply) = reply else {
        return error_response(style, 500, &[], None, "fake llm: no reply scripted for this request");
    };
    if let Some(gate) = &reply.gate {
        gate.wait().await;
    }
    let usage = reply.usage.unwrap_or_else(|| default_usage(&body, &reply.body));
    let writer = Writer { style, model: request.model().to_owned(), usage, chunk_chars: reply.chunk_chars };
    match reply.body {
        Answer::Message { text, calls } => {
            let calls: Vec<(String, String, String)> = calls
                .into_iter()
                .map(|(name, arguments)| {
                    let n = shared.next_call_id.fetch_add(1, Ordering::Relaxed);
                    let id = match style {
                        Style::OpenAi => format!("call_{n}"),
                        Style::Anthropic => format!("toolu_{n}"),
                    };
                    (id, name, arguments)
                })
                .collect();
            if request.stream() {
                let events = writer.stream_events(&text, &calls);
                match reply.midway {
                    Some(gate) => held_sse_response(events, gate),
                    None => sse_response(events, false),
                }
            } else {
                json_response(200, &writer.full_body(&text, &calls))
            }
        }
        Answer::Error { status, headers, body } => {
            error_response(style, status, &headers, body, "fake llm: scripted error")
        }
        Answer::DropMidStream { text } => {
            let mut events = writer.stream_events(&text, &[]);
            events.truncate(events.len() / 2);
            sse_response(events, true)
        }
        Answer::Malformed => sse_response(vec!["data: {not json\n\n".to_owned()], false),
        Answer::Hang => std::future::pending().await,
    }
}

fn default_usage(request_body: &[u8], reply: &Answer) -> (u64, u64) {
    let out = match reply {
        Answer::Message { text, calls } => {
            text.chars().count() + calls.iter().map(|(name, args)| name.len() + args.len()).sum::<usize>()
        }
        _ => 0,
    };
    ((request_body.len() / 4) as u64, (out / 4 + 1) as u64)
}

/// Renders one reply in one style.
struct Writer {
    style: Style,
    model: String,
    usage: (u64, u64),
    chunk_chars: usize,
}

impl Writer {
    /// The SSE events (each a complete `event:`/`data:` block) of a streamed answer.
    fn stream_events(&self, text: &str, calls: &[(String, String, String)]) -> Vec<String> {
        let pieces = split_chars(text, self.chunk_chars);
        match self.style {
            Style::OpenAi => self.openai_events(&pieces, calls),
            Style::Anthropic => self.anthropic_events(&pieces, calls),
        }
    }

    fn openai_events(&self, pieces: &[String], calls: &[(String, String, String)]) -> Vec<String> {
        let chunk = |delta: Value, finish: Value| {
            json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": self.model,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        };
        let mut chunks = vec![chunk(json!({"role": "assistant", "content": ""}), Value::Null)];
        chunks.extend(pieces.iter().map(|piece| chunk(json!({"content": piece}), Value::Null)));
        for (index, (id, name, arguments)) in calls.iter().enumerate() {
            chunks.push(chunk(
                json!({"tool_calls": [{"index": index, "id": id, "type": "function",
                                       "function": {"name": name, "arguments": ""}}]}),
                Value::Null,
            ));
            for fragment in split_chars(arguments, arguments.chars().count().div_ceil(3).max(1)) {
                chunks.push(chunk(
                    json!({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}),
                    Value::Null,
                ));
            }
        }
        let finish = if calls.is_empty() { "stop" } else { "tool_calls" };
        chunks.push(chunk(json!({}), json!(finish)));
        chunks
            .push(json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": self.model, "choices": [],
                           "usage": self.openai_usage()}));
        let mut events: Vec<String> = chunks.iter().map(|chunk| format!("data: {chunk}\n\n")).collect();
        events.push("data: [DONE]\n\n".to_owned());
        events
    }

    fn anthropic_events(&self, pieces: &[String], calls: &[(String, String, String)]) -> Vec<String> {
        let (tokens_in, tokens_out) = self.usage;
        let mut events = vec![json!({"type": "message_start", "message": {
            "id": "msg_fake", "type": "message", "role": "assistant", "model": self.model, "content": [],
            "stop_reason": null, "usage": {"input_tokens": tokens_in, "output_tokens": 1}}})];
        let mut index = 0;
        if !pieces.is_empty() {
            events.push(
                json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}),
            );
            events.extend(pieces.iter().map(|piece| {
                json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}})
            }));
            events.push(json!({"type": "content_block_stop", "index": index}));
            index += 1;
        }
        for (id, name, arguments) in calls {
            events.push(json!({"type": "content_block_start", "index": index,
                               "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}));
            for fragment in split_chars(arguments, arguments.chars().count().div_ceil(3).max(1)) {
                events.push(json!({"type": "content_block_delta", "index": index,
                                   "delta": {"type": "input_json_delta", "partial_json": fragment}}));
            }
            events.push(json!({"type": "content_block_stop", "index": index}));
            index += 1;
        }
        let stop = if calls.is_empty() { "end_turn" } else { "tool_use" };
        events.push(json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null},
                           "usage": {"output_tokens": tokens_out}}));
        events.push(json!({"type": "message_stop"}));
        events
            .iter()
            .map(|event| format!("event: {}\ndata: {event}\n\n", event["type"].as_str().unwrap_or("")))
            .collect()
    }

    /// A complete non-streaming response body.
    fn full_body(&self, text: &str, calls: &[(String, String, String)]) -> Value {
        match self.style {
            Style::OpenAi => {
                let mut message =
                    json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { json!(text) }});
                if !calls.is_empty() {
                    message["tool_calls"] = calls
                        .iter()
                        .map(|(id, name, arguments)| {
                            json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}})
                        })
                        .collect();
                }
                let finish = if calls.is_empty() { "stop" } else { "tool_calls" };
                json!({"id": "chatcmpl-fake", "object": "chat.completion", "model": self.model,
                       "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": self.openai_usage()})
            }
            Style::Anthropic => {
                let mut content: Vec<Value> = Vec::new();
                if !text.is_empty() {
                    content.push(json!({"type": "text", "text": text}));
                }
                for (id, name, arguments) in calls {
                    let input: Value = serde_json::from_str(arguments).unwrap_or_else(|_| json!({}));
                    content.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
                }
                let stop = if calls.is_empty() { "end_turn" } else { "tool_use" };
                json!({"id": "msg_fake", "type": "message", "role": "assistant", "model": self.model, "content": content,
                       "stop_reason": stop, "usage": {"input_tokens": self.usage.0, "output_tokens": self.usage.1}})
            }
        }
    }

    fn openai_usage(&self) -> Value {
        let (tokens_in, tokens_out) = self.usage;
        json!({"prompt_tokens": tokens_in, "completion_tokens": tokens_out, "total_tokens": tokens_in + tokens_out})
    }
}

/// `text` cut every `size` characters.
fn split_chars(text: &str, size: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(size.max(1)).map(|chunk| chunk.iter().collect()).collect()
}

fn json_response(status: u16, body: &Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert("content-type", axum::http::HeaderValue::from_static("application/json"));
    response
}

fn error_response(
    style: Style,
    status: u16,
    headers: &[(String, String)],
    body: Option<Value>,
    message: &str,
) -> Response {
    let body = body.unwrap_or_else(|| match style {
        Style::OpenAi => json!({"error": {"message": message, "type": "fake_error", "code": status}}),
        Style::Anthropic => json!({"type": "error", "error": {"type": "fake_error", "message": message}}),
    });
    let mut response = json_response(status, &body);
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) =
            (axum::http::HeaderName::try_from(name.as_str()), axum::http::HeaderValue::try_from(value.as_str()))
        {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// A `200 text/event-stream` response writing each event as its own body chunk; `drop` aborts the
/// connection after the last one instead of ending the body.
/// An SSE answer that sends its first half at once and the rest after `gate` opens.
fn held_sse_response(mut events: Vec<String>, gate: Gate) -> Response {
    let rest = events.split_off(events.len() / 2);
    let first = stream::iter(events.into_iter().map(|event| Ok(Bytes::from(event))));
    let later = stream::once(async move {
        gate.wait().await;
        stream::iter(rest.into_iter().map(|event| Ok(Bytes::from(event))))
    })
    .flatten();
    let body: ByteStream = Box::pin(first.chain(later));
    let mut response = Response::new(Body::from_stream(body));
    response.headers_mut().insert("content-type", axum::http::HeaderValue::from_static("text/event-stream"));
    response
}

fn sse_response(events: Vec<String>, drop: bool) -> Response {
    let pieces: ByteStream = Box::pin(stream::iter(events.into_iter().map(|event| Ok(Bytes::from(event)))));
    let body: ByteStream = if drop {
        // Yielding first lets hyper flush what was written before the abort.
        Box::pin(pieces.chain(stream::once(async {
            tokio::task::yield_now().await;
            Err(std::io::Error::other("connection dropped"))
        })))
    } else {
        pieces
    };
    let mut response = Response::new(Body::from_stream(body));
    response.headers_mut().insert("content-type", axum::http::HeaderValue::from_static("text/event-stream"));
    response
}
