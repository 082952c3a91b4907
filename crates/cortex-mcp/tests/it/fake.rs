//! A tiny in-process Streamable HTTP MCP endpoint that records every request's headers. It answers
//! `initialize` with an older protocol version, pages `tools/list`, and answers `tools/call` as an SSE
//! stream that first announces `notifications/tools/list_changed`.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

pub const SESSION_ID: &str = "fake-session-1";
pub const PROTOCOL_VERSION: &str = "2025-03-26";

/// One POST as the fake saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub headers: HeaderMap,
}

#[derive(Clone, Default)]
pub struct FakeMcp {
    requests: Arc<Mutex<Vec<Recorded>>>,
}

impl FakeMcp {
    /// Serves the fake on a free loopback port and returns it with its URL.
    pub async fn start() -> (Self, String) {
        let running = Self::serve_at("127.0.0.1:0".parse().unwrap()).await;
        (running.fake.clone(), running.url())
    }

    /// Serves the fake at `address` until [`Running::stop`].
    pub async fn serve_at(address: std::net::SocketAddr) -> Running {
        let fake = FakeMcp::default();
        let app = Router::new()
            .route(
                "/mcp",
                post(handle).get(|| async { StatusCode::METHOD_NOT_ALLOWED }).delete(|| async { StatusCode::OK }),
            )
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind(address).await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            // Dropping `Running` without `stop` keeps serving until the test ends.
            let shutdown = async {
                if stopped.await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            axum::serve(listener, app).with_graceful_shutdown(shutdown).await.unwrap()
        });
        Running { fake, address, stop, task }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

async fn handle(State(fake): State<FakeMcp>, headers: HeaderMap, body: String) -> Response {
    let message: Value = serde_json::from_str(&body).unwrap();
    let method = message["method"].as_str().unwrap_or("<response>").to_owned();
    fake.requests.lock().unwrap().push(Recorded { method: method.clone(), headers });
    let Some(id) = message.get("id").cloned() else {
        return StatusCode::ACCEPTED.into_response();
    };
    let reply = |result: Value| json!({"jsonrpc": "2.0", "id": id, "result": result});
    match method.as_str() {
        "initialize" => (
            [("mcp-session-id", SESSION_ID)],
            axum::Json(reply(json!({
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {"tools": {"listChanged": true}},
                "serverInfo": {"name": "fake-mcp", "version": "0.1.0"}
            }))),
        )
            .into_response(),
        "tools/list" => {
            let page = match message["params"]["cursor"].as_str() {
                None => json!({
                    "tools": [{"name": "alpha", "description": "first page", "inputSchema": {"type": "object"},
                               "annotations": {"destructiveHint": true}}],
                    "nextCursor": "page-2"
                }),
                Some("page-2") => json!({"tools": [{"name": "beta", "inputSchema": {"type": "object"}}]}),
                Some(other) => panic!("unexpected cursor {other}"),
            };
            axum::Json(reply(page)).into_response()
        }
        "tools/call" => {
            let changed = json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"});
            let result = reply(json!({
                "content": [{"type": "text", "text": format!("called {} with {}", message["params"]["name"], message["params"]["arguments"])}],
                "isError": false
            }));
            let body = format!("event: message\ndata: {changed}\n\nevent: message\ndata: {result}\n\n");
            ([(header::CONTENT_TYPE, "text/event-stream")], body).into_response()
        }
        "ping" => axum::Json(reply(json!({}))).into_response(),
        other => axum::Json(
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": format!("no method {other}")}}),
        )
        .into_response(),
    }
}

/// A fake that can be stopped, so its port refuses connections.
pub struct Running {
    pub fake: FakeMcp,
    pub address: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.address)
    }

    /// Stops serving and waits until the listener and every connection are closed.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
    }
}
