//! One live MCP session, after the initialize handshake, over either transport (SPEC §6.4).
//!
//! rmcp runs the session in a background task; this type keeps a `Peer` to send requests, the stdio
//! child process (if any) for liveness and shutdown, and a `closed` signal that fires when the session
//! task ends (process exit, transport loss or [`Connection::close`]).
//!
//! Requests go out as raw `ClientRequest`s and their results are read back as JSON, which keeps rmcp's
//! convenience layers (response caches, MRTR rounds) out of the picture and every rmcp type private.

use std::time::Duration;

use rmcp::ServiceExt;
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, ClientRequest, ListToolsRequest, PaginatedRequestParams, PingRequest,
};
use rmcp::service::{Peer, PeerRequestOptions, RoleClient, ServiceError};
use rmcp::transport::streamable_http_client::StreamableHttpError;
use rmcp::transport::{DynamicTransportError, IntoTransport};
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::Instrument;

use crate::config::{ServerConfig, Transport};
use crate::content::CallOutcome;
use crate::error::{McpError, Operation};
use crate::handler::{Handler, ToolsChanged};
use crate::http;
use crate::stdio::{self, ChildProcess};
use crate::tool::{Discovery, ToolInfo};

/// How long closing waits for the session task to finish after cancelling it.
const SESSION_CLOSE_WAIT: Duration = Duration::from_secs(5);
/// Upper bound on `tools/list` pages, against servers that hand out cursors forever.
const MAX_TOOL_PAGES: usize = 100;

/// What the server said about itself in the initialize answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerDetails {
    pub protocol_version: String,
    pub server_info: Value,
    pub capabilities: Value,
}

/// One live connection (initialize handshake done).
pub struct Connection {
    server: String,
    peer: Peer<RoleClient>,
    details: ServerDetails,
    list_timeout: Duration,
    process: Option<ChildProcess>,
    tools_changed: ToolsChanged,
    /// Cancels the session task; the guard does so when the connection is dropped without `close`.
    cancel: CancellationToken,
    _cancel_on_drop: DropGuard,
    /// Becomes `true` once the session task has ended.
    closed: watch::Receiver<bool>,
}

impl Connection {
    /// Starts the server (stdio) or opens a session (http) and completes `initialize` +
    /// `notifications/initialized` within `config.discovery_timeout`.
    pub async fn connect(config: &ServerConfig) -> Result<Connection, McpError> {
        Self::open(config, ToolsChanged::new(watch::channel(false).0)).await
    }

    /// [`Self::connect`] with a tools-changed flag that outlives the connection (the pool keeps one
    /// per server across reconnects).
    pub(crate) async fn open(config: &ServerConfig, tools_changed: ToolsChanged) -> Result<Connection, McpError> {
        let span = tracing::info_span!("mcp_connect", server = %config.slug, transport = config.transport.kind());
        async {
            let server = config.slug.clone();
            let cancel = CancellationToken::new();
            let handler = Handler::new(tools_changed.clone());
            let timeout = config.discovery_timeout;
            let (peer, closed, process) = match &config.transport {
                Transport::Stdio { command, args, env } => {
                    let spawned = stdio::spawn(&server, command, args, env)?;
                    let pipes = (spawned.stdout, spawned.stdin);
                    match handshake(&server, handler, pipes, cancel.clone(), timeout).await {
                        Ok((peer, closed)) => (peer, closed, Some(spawned.process)),
                        Err(error) => {
                            let error = match error {
                                McpError::Timeout { .. } => error,
                                other => spawned.process.exit_error().await.unwrap_or(other),
                            };
                            spawned.process.terminate().await;
                            return Err(error);
                        }
                    }
                }
                Transport::Http { url, headers } => {
                    let transport = http::transport(&server, url, headers, timeout)?;
                    let (peer, closed) = handshake(&server, handler, transport, cancel.clone(), timeout).await?;
                    (peer, closed, None)
                }
            };
            let details = server_details(&peer);
            tracing::debug!(protocol_version = %details.protocol_version, "mcp session initialized");
            Ok(Connection {
                server,
                peer,
                details,
                list_timeout: timeout,
                process,
                tools_changed,
                _cancel_on_drop: cancel.clone().drop_guard(),
                cancel,
                closed,
            })
        }
        .instrument(span)
        .await
    }

    /// The slug of the server this connection talks to.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Lists every tool, following `nextCursor` until the last page.
    pub async fn list_tools(&self) -> Result<Vec<ToolInfo>, McpError> {
        let mut tools = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_TOOL_PAGES {
            let params = PaginatedRequestParams::default().with_cursor(cursor.take());
            let request = ClientRequest::ListToolsRequest(ListToolsRequest::with_param(params));
            let page = self.request(Operation::ListTools, request, self.list_timeout).await?;
            tools.extend(page.get("tools").and_then(Value::as_array).into_iter().flatten().map(ToolInfo::from_json));
            match page.get("nextCursor").and_then(Value::as_str) {
                Some(next) if !next.is_empty() => cursor = Some(next.to_owned()),
                _ => return Ok(tools),
            }
        }
        Err(self.protocol_error(Operation::ListTools, format!("more than {MAX_TOOL_PAGES} pages of tools")))
    }

    /// Calls one tool. `arguments` must be a JSON object (or null for none). A tool that fails returns
    /// `Ok` with `is_error: true`; `Err` means the call itself failed.
    pub async fn call_tool(&self, name: &str, arguments: Value, timeout: Duration) -> Result<CallOutcome, McpError> {
        let mut params = CallToolRequestParams::new(name.to_owned());
        match arguments {
            Value::Object(arguments) => params = params.with_arguments(arguments),
            Value::Null => {}
            other => {
                return Err(McpError::InvalidArguments {
                    server: self.server.clone(),
                    tool: name.to_owned(),
                    reason: format!("expected a JSON object, got {}", json_kind(&other)),
                });
            }
        }
        let span = tracing::info_span!("mcp_call", server = %self.server, tool = name);
        let request = ClientRequest::CallToolRequest(CallToolRequest::new(params));
        let result = self.request(Operation::CallTool, request, timeout).instrument(span).await?;
        Ok(CallOutcome::from_result_json(&result))
    }

    /// MCP `ping`; also fails when the stdio process is gone.
    pub async fn ping(&self, timeout: Duration) -> Result<(), McpError> {
        self.request(Operation::Ping, ClientRequest::PingRequest(PingRequest::default()), timeout).await.map(drop)
    }

    /// `(protocol_version, server_info, capabilities)` from the initialize answer.
    pub fn discovery_info(&self) -> (String, Value, Value) {
        let details = self.details.clone();
        (details.protocol_version, details.server_info, details.capabilities)
    }

    /// The initialize answer as a struct.
    pub fn details(&self) -> &ServerDetails {
        &self.details
    }

    /// `true` once `notifications/tools/list_changed` arrived and nobody took the flag yet.
    pub fn tools_changed(&self) -> bool {
        *self.tools_changed.borrow()
    }

    /// Reads and clears the tools-changed flag.
    pub fn take_tools_changed(&self) -> bool {
        self.tools_changed.send_replace(false)
    }

    /// Resolves when `notifications/tools/list_changed` has arrived (immediately if the flag is up).
    pub async fn wait_tools_changed(&self) {
        let mut changes = self.tools_changed.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = changes.wait_for(|changed| *changed).await;
    }

    /// The stdio server's process id (also its process group id).
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(ChildProcess::pid)
    }

    /// `true` while the session runs and, for stdio, the process has not exited.
    pub fn is_alive(&self) -> bool {
        !*self.closed.borrow() && self.process.as_ref().is_none_or(ChildProcess::is_running)
    }

    /// Resolves once the session has ended (the server exited, the transport broke, or it was closed).
    pub async fn closed(&self) {
        let mut closed = self.closed.clone();
        let _ = closed.wait_for(|closed| *closed).await;
    }

    /// Ends the session; a stdio server gets SIGTERM, then SIGKILL after 5 s.
    pub async fn close(self) {
        self.shutdown().await;
    }

    /// [`Self::close`] for a connection shared behind an `Arc`.
    pub(crate) async fn shutdown(&self) {
        self.cancel.cancel();
        if let Some(process) = &self.process {
            process.terminate().await;
        }
        // The session task ends promptly once cancelled; the bound only guards against a transport
        // whose close hangs (an HTTP session DELETE to an unresponsive server).
        if tokio::time::timeout(SESSION_CLOSE_WAIT, self.closed()).await.is_err() {
            tracing::debug!(server = %self.server, "mcp session did not finish closing in time");
        }
    }

    async fn request(
        &self,
        operation: Operation,
        request: ClientRequest,
        timeout: Duration,
    ) -> Result<Value, McpError> {
        if !self.is_alive() {
            return Err(McpError::Closed { server: self.server.clone() });
        }
        let handle = self
            .peer
            .send_request_with_option(request, PeerRequestOptions::with_timeout(timeout))
            .await
            .map_err(|_| McpError::Closed { server: self.server.clone() })?;
        let result = handle.await_response().await.map_err(|error| self.request_error(operation, error))?;
        serde_json::to_value(&result)
            .map_err(|error| self.protocol_error(operation, format!("cannot read the answer: {error}")))
    }

    fn request_error(&self, operation: Operation, error: ServiceError) -> McpError {
        let server = self.server.clone();
        match error {
            ServiceError::McpError(data) => {
                McpError::Protocol { server, operation, code: Some(data.code.0), reason: data.message.into_owned() }
            }
            ServiceError::Timeout { timeout } => McpError::Timeout { server, operation, after: timeout },
            ServiceError::TransportSend(error) => McpError::Transport {
                server,
                operation,
                sent: !never_reached_server(&error),
                reason: error.error.to_string(),
            },
            ServiceError::TransportClosed => McpError::Transport {
                server,
                operation,
                sent: true,
                reason: "connection closed before the answer arrived".to_owned(),
            },
            other => self.protocol_error(operation, other.to_string()),
        }
    }

    fn protocol_error(&self, operation: Operation, reason: String) -> McpError {
        McpError::Protocol { server: self.server.clone(), operation, code: None, reason }
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("server", &self.server)
            .field("protocol_version", &self.details.protocol_version)
            .field("pid", &self.pid())
            .field("alive", &self.is_alive())
            .finish()
    }
}

/// Connects and lists tools within `config.discovery_timeout`, then closes the connection.
pub async fn discover(config: &ServerConfig) -> Result<Discovery, McpError> {
    let deadline = tokio::time::Instant::now() + config.discovery_timeout;
    let redact = |error: McpError| error.redacted(&config.redactor());
    let connection = Connection::connect(config).await.map_err(redact)?;
    let result = discover_on(&connection, config, deadline).await;
    connection.close().await;
    result.map_err(redact)
}

/// Lists tools on an open connection, giving up at `deadline`, and clears its tools-changed flag.
pub(crate) async fn discover_on(
    connection: &Connection,
    config: &ServerConfig,
    deadline: tokio::time::Instant,
) -> Result<Discovery, McpError> {
    let timeout = || McpError::Timeout {
        server: config.slug.clone(),
        operation: Operation::ListTools,
        after: config.discovery_timeout,
    };
    let tools = tokio::time::timeout_at(deadline, connection.list_tools()).await.map_err(|_| timeout())??;
    connection.take_tools_changed();
    let details = connection.details().clone();
    Ok(Discovery {
        protocol_version: details.protocol_version,
        server_info: details.server_info,
        capabilities: details.capabilities,
        tools,
    })
}

/// Runs `initialize` over `transport` and starts the session task. Returns the peer and the signal
/// that fires when the task ends.
async fn handshake<T, E, A>(
    server: &str,
    handler: Handler,
    transport: T,
    cancel: CancellationToken,
    timeout: Duration,
) -> Result<(Peer<RoleClient>, watch::Receiver<bool>), McpError>
where
    T: IntoTransport<RoleClient, E, A>,
    E: std::error::Error + Send + Sync + 'static,
{
    let running = match tokio::time::timeout(timeout, handler.serve_with_ct(transport, cancel)).await {
        Err(_) => {
            return Err(McpError::Timeout {
                server: server.to_owned(),
                operation: Operation::Initialize,
                after: timeout,
            });
        }
        Ok(Err(error)) => {
            return Err(McpError::Connect { server: server.to_owned(), reason: error.to_string() });
        }
        Ok(Ok(running)) => running,
    };
    let peer = running.peer().clone();
    let (closed_tx, closed_rx) = watch::channel(false);
    let server = server.to_owned();
    tokio::spawn(async move {
        let reason = running.waiting().await;
        tracing::debug!(server, ?reason, "mcp session ended");
        closed_tx.send_replace(true);
    });
    Ok((peer, closed_rx))
}

fn server_details(peer: &Peer<RoleClient>) -> ServerDetails {
    let info = peer.peer_info();
    let field = |value: Option<Value>| value.unwrap_or(Value::Null);
    ServerDetails {
        protocol_version: info.as_ref().map(|info| info.protocol_version.to_string()).unwrap_or_default(),
        server_info: field(info.as_ref().and_then(|info| serde_json::to_value(&info.server_info).ok())),
        capabilities: field(info.as_ref().and_then(|info| serde_json::to_value(&info.capabilities).ok())),
    }
}

/// Whether a send failure happened before any byte could reach the server: the stdio pipe was already
/// closed, or the HTTP connection could not be established.
fn never_reached_server(error: &DynamicTransportError) -> bool {
    let error = error.error.as_ref();
    if let Some(io) = error.downcast_ref::<std::io::Error>() {
        return matches!(io.kind(), std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::NotConnected);
    }
    matches!(
        error.downcast_ref::<StreamableHttpError<reqwest::Error>>(),
        Some(StreamableHttpError::Client(client)) if client.is_connect()
    )
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
