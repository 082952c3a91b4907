//! The process-wide pool of MCP connections (SPEC §6.4, §19): at most `max_connections` live sessions,
//! started lazily on first use, closed after `idle_timeout` without use, restarted when a stdio server
//! died, and one circuit breaker per server (`BreakerConfig::MCP`) whose state is the server's status.
//!
//! The pool runs no background task: idle connections are closed on the next pool operation (or by
//! [`Pool::close_idle`], which a periodic caller such as the health prober can invoke), and time comes
//! from the injected [`Clock`], so tests drive it by hand.
//!
//! Locking: one `std::sync::Mutex` guards the table of servers and is never held across an await. A
//! per-server async lock serialises connecting, so two calls do not start the same server twice. A
//! connection is shared as `Arc<Connection>`; a strong count above one means a request is in flight,
//! which protects it from idle closing and eviction.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use cortex_core::Timestamp;
use cortex_core::breaker::{Breaker, BreakerConfig, BreakerState};
use cortex_core::clock::Clock;
use serde_json::Value;
use tokio::sync::watch;
use tracing::Instrument;
use uuid::Uuid;

use crate::config::{ServerConfig, Transport};
use crate::connection::{Connection, discover_on};
use crate::content::CallOutcome;
use crate::error::McpError;
use crate::handler::ToolsChanged;
use crate::tool::Discovery;

/// Live connections per process (SPEC §19).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10;
/// Unused connections are closed after this long (SPEC §19).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Limit for a health probe's `ping` (SPEC §6.4).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Gauge set to 1 when the last call, probe or refresh of a server succeeded and 0 when it failed.
pub const UP_GAUGE: &str = "cortex_mcp_server_up";

/// A server's health as stored in `mcp_server.status`, derived from its breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerStatus {
    /// Breaker closed.
    Active,
    /// Breaker half-open: a trial request is allowed.
    Degraded,
    /// Breaker open: requests fail fast.
    Error,
}

impl ServerStatus {
    /// The `mcp_server.status` value.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerStatus::Active => "active",
            ServerStatus::Degraded => "degraded",
            ServerStatus::Error => "error",
        }
    }

    fn from_breaker(state: BreakerState) -> Self {
        match state {
            BreakerState::Closed => ServerStatus::Active,
            BreakerState::HalfOpen => ServerStatus::Degraded,
            BreakerState::Open => ServerStatus::Error,
        }
    }
}

/// What one health probe did.
#[derive(Debug)]
pub enum ProbeOutcome {
    /// `ping` answered (and the stdio process is alive).
    Healthy { latency: Duration },
    /// A stdio server that is not running and whose breaker is closed: it starts lazily on first use,
    /// so there is nothing to probe and the breaker is left alone.
    NotRunning,
    /// The breaker is open; no probe until its open period is over.
    Skipped,
    /// The probe failed; the failure was recorded in the breaker.
    Failed(McpError),
}

/// The result of [`Pool::probe`].
#[derive(Debug)]
pub struct ProbeResult {
    pub previous: ServerStatus,
    pub status: ServerStatus,
    pub outcome: ProbeOutcome,
}

impl ProbeResult {
    /// The status changed, which the caller reports as an event (SPEC §6.4).
    pub fn changed(&self) -> bool {
        self.previous != self.status
    }
}

/// Process-wide connection pool; share it behind an `Arc`.
pub struct Pool {
    clock: Arc<dyn Clock>,
    max_connections: usize,
    idle_timeout: chrono::Duration,
    servers: Mutex<HashMap<Uuid, ServerEntry>>,
}

/// Everything the pool knows about one server.
struct ServerEntry {
    slug: String,
    breaker: Breaker,
    /// Outlives connections, so a notification or reconnect is not lost when a connection is replaced.
    tools_changed: ToolsChanged,
    /// Held while connecting so concurrent first calls start the server once.
    connect_lock: Arc<tokio::sync::Mutex<()>>,
    /// A connection slot is taken for a connect in progress, so concurrent connects respect the limit.
    reserved: bool,
    live: Option<Live>,
}

struct Live {
    /// The config the connection was opened with; a different config means the server was updated.
    config: ServerConfig,
    connection: Arc<Connection>,
    last_used: Timestamp,
}

impl Live {
    fn is_busy(&self) -> bool {
        Arc::strong_count(&self.connection) > 1
    }
}

/// Whether obtaining a connection counts as using the server (probes do not, so they do not keep
/// idle connections open).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Use {
    Work,
    Probe,
}

impl Pool {
    /// An empty pool; see [`DEFAULT_MAX_CONNECTIONS`] and [`DEFAULT_IDLE_TIMEOUT`].
    pub fn new(clock: Arc<dyn Clock>, max_connections: usize, idle_timeout: Duration) -> Self {
        Self {
            clock,
            max_connections,
            idle_timeout: chrono::Duration::from_std(idle_timeout).unwrap_or(chrono::Duration::MAX),
            servers: Mutex::new(HashMap::new()),
        }
    }

    /// Calls a tool, starting or restarting the server when needed. When a reused connection turns out
    /// dead before the request was written, reconnects and retries once; failures after that follow
    /// the interrupted-call rules ([`McpError::request_was_sent`]).
    pub async fn call(&self, config: &ServerConfig, tool: &str, arguments: Value) -> Result<CallOutcome, McpError> {
        let span = tracing::info_span!("mcp_pool_call", server = %config.slug, tool);
        async {
            self.reap_idle();
            if !self.with_entry(config, |entry, now| entry.breaker.try_acquire(now)) {
                return Err(McpError::BreakerOpen { server: config.slug.clone() });
            }
            let result = self.call_with_retry(config, tool, arguments).await;
            self.record(config, result.as_ref().err());
            result.map_err(|error| error.redacted(&config.redactor()))
        }
        .instrument(span)
        .await
    }

    /// Health probe: `ping` within [`PROBE_TIMEOUT`] on the live connection (stdio: the process must
    /// also be alive), feeding the breaker. Opens a connection for http servers and for servers whose
    /// breaker wants a trial; a stdio server that is simply not running is reported as such.
    pub async fn probe(&self, config: &ServerConfig) -> ProbeResult {
        self.reap_idle();
        let (previous, alive) = self.with_entry(config, |entry, now| {
            let alive = entry.live.as_ref().map(|live| live.connection.is_alive());
            (ServerStatus::from_breaker(entry.breaker.state(now)), alive)
        });
        let stdio = matches!(config.transport, Transport::Stdio { .. });
        let outcome = if alive.is_none() && stdio && previous == ServerStatus::Active {
            ProbeOutcome::NotRunning
        } else if !self.with_entry(config, |entry, now| entry.breaker.try_acquire(now)) {
            ProbeOutcome::Skipped
        } else {
            let started = tokio::time::Instant::now();
            let result = if alive == Some(false) {
                // The process exited or the transport broke: a failure now, a restart on next use.
                let dead = self.with_entry(config, |entry, _| entry.live.take());
                if let Some(dead) = dead {
                    dead.connection.shutdown().await;
                }
                Err(McpError::Closed { server: config.slug.clone() })
            } else {
                match self.connection(config, Use::Probe).await {
                    Ok((connection, _)) => {
                        let pinged = connection.ping(PROBE_TIMEOUT).await;
                        if pinged.as_ref().is_err_and(transport_broken) {
                            self.discard(config.id, &connection).await;
                        }
                        pinged
                    }
                    Err(error) => Err(error),
                }
            };
            self.record(config, result.as_ref().err());
            match result {
                Ok(()) => ProbeOutcome::Healthy { latency: started.elapsed() },
                Err(error) => ProbeOutcome::Failed(error.redacted(&config.redactor())),
            }
        };
        let status = self.status(config.id);
        ProbeResult { previous, status, outcome }
    }

    /// Re-runs discovery (connecting if needed) and clears the server's tools-changed flag. Not gated by
    /// the breaker, because an operator asked for it, but its outcome is recorded.
    pub async fn refresh(&self, config: &ServerConfig) -> Result<Discovery, McpError> {
        self.reap_idle();
        let deadline = tokio::time::Instant::now() + config.discovery_timeout;
        let result = match self.connection(config, Use::Work).await {
            Ok((connection, _)) => discover_on(&connection, config, deadline).await,
            Err(error) => Err(error),
        };
        self.record(config, result.as_ref().err());
        result.map_err(|error| error.redacted(&config.redactor()))
    }

    /// The server's status from its breaker; servers the pool has not seen are `Active`.
    pub fn status(&self, server_id: Uuid) -> ServerStatus {
        let now = self.clock.now();
        self.lock()
            .get_mut(&server_id)
            .map_or(ServerStatus::Active, |entry| ServerStatus::from_breaker(entry.breaker.state(now)))
    }

    /// `true` once `notifications/tools/list_changed` arrived or the server was (re)started since the
    /// last call of this method or [`Self::refresh`]; the runtime then refreshes the `mcp_tool` rows.
    pub fn take_tools_changed(&self, server_id: Uuid) -> bool {
        self.lock().get(&server_id).is_some_and(|entry| entry.tools_changed.send_replace(false))
    }

    /// Forgets a server (deleted or reconfigured) and closes its connection.
    pub async fn remove(&self, server_id: Uuid) {
        let removed = self.lock().remove(&server_id);
        if let Some(entry) = removed {
            metrics::gauge!(UP_GAUGE, "server" => entry.slug).set(0.0);
            if let Some(live) = entry.live {
                live.connection.shutdown().await;
            }
        }
    }

    /// Closes every connection (process shutdown).
    pub async fn shutdown(&self) {
        let connections: Vec<_> = self.lock().values_mut().filter_map(|entry| entry.live.take()).collect();
        close_all(connections.into_iter().map(|live| live.connection).collect()).await;
    }

    /// Closes connections unused for longer than the idle timeout and waits until they are gone. Calls
    /// and probes also close idle connections, in the background; a periodic task may call this.
    pub async fn close_idle(&self) {
        close_all(self.take_idle()).await;
    }

    fn reap_idle(&self) {
        let idle = self.take_idle();
        if !idle.is_empty() {
            tokio::spawn(close_all(idle));
        }
    }

    fn take_idle(&self) -> Vec<Arc<Connection>> {
        let now = self.clock.now();
        let mut servers = self.lock();
        servers
            .values_mut()
            .filter(|entry| {
                entry.live.as_ref().is_some_and(|live| !live.is_busy() && now - live.last_used >= self.idle_timeout)
            })
            .filter_map(|entry| entry.live.take())
            .map(|live| {
                tracing::debug!(server = %live.config.slug, "closing idle mcp connection");
                live.connection
            })
            .collect()
    }

    /// Number of live connections.
    pub fn live_connections(&self) -> usize {
        self.lock().values().filter(|entry| entry.live.is_some()).count()
    }

    /// Process id of a running stdio server (diagnostics).
    pub fn pid(&self, server_id: Uuid) -> Option<u32> {
        self.live_connection(server_id).and_then(|connection| connection.pid())
    }

    /// Resolves once the server's live connection has ended (its process exited or the transport broke),
    /// or at once when there is none; lets a supervisor react to a crash before the next probe.
    pub async fn wait_disconnected(&self, server_id: Uuid) {
        if let Some(connection) = self.live_connection(server_id) {
            connection.closed().await;
        }
    }

    fn live_connection(&self, server_id: Uuid) -> Option<Arc<Connection>> {
        self.lock().get(&server_id).and_then(|entry| entry.live.as_ref()).map(|live| live.connection.clone())
    }

    async fn call_with_retry(
        &self,
        config: &ServerConfig,
        tool: &str,
        arguments: Value,
    ) -> Result<CallOutcome, McpError> {
        let (connection, reused) = self.connection(config, Use::Work).await?;
        let result = connection.call_tool(tool, arguments.clone(), config.call_timeout).await;
        if let Err(error) = &result
            && transport_broken(error)
        {
            self.discard(config.id, &connection).await;
            if reused && !error.request_was_sent() {
                let error = config.redactor().apply(&error.to_string());
                tracing::info!(server = %config.slug, %error, "mcp connection was dead; reconnecting and retrying once");
                let (connection, _) = self.connection(config, Use::Work).await?;
                let retried = connection.call_tool(tool, arguments, config.call_timeout).await;
                if retried.as_ref().is_err_and(transport_broken) {
                    self.discard(config.id, &connection).await;
                }
                return retried;
            }
        }
        result
    }

    /// Removes `connection` from the pool (if it is still the server's live one) and closes it, so the
    /// next use reconnects.
    async fn discard(&self, server_id: Uuid, connection: &Arc<Connection>) {
        let removed = self.lock().get_mut(&server_id).and_then(|entry| {
            let current = entry.live.as_ref().is_some_and(|live| Arc::ptr_eq(&live.connection, connection));
            if current { entry.live.take() } else { None }
        });
        if removed.is_some() {
            connection.shutdown().await;
        }
    }

    /// The live connection for `config`, opening one if there is none, it died, or the config changed.
    /// The flag says whether an existing connection was reused.
    async fn connection(&self, config: &ServerConfig, usage: Use) -> Result<(Arc<Connection>, bool), McpError> {
        let connect_lock = self.with_entry(config, |entry, _| entry.connect_lock.clone());
        let _connecting = connect_lock.lock().await;
        let (reusable, stale) = self.with_entry(config, |entry, now| match &mut entry.live {
            Some(live) if live.config == *config && live.connection.is_alive() => {
                if usage == Use::Work {
                    live.last_used = now;
                }
                (Some(live.connection.clone()), None)
            }
            _ => (None, entry.live.take()),
        });
        if let Some(connection) = reusable {
            return Ok((connection, true));
        }
        if let Some(stale) = stale {
            tracing::info!(server = %config.slug, "replacing dead or outdated mcp connection");
            stale.connection.shutdown().await;
        }
        let (reservation, evicted) = self.reserve_slot(config)?;
        if let Some(evicted) = evicted {
            tracing::debug!(server = %evicted.server(), "evicting least recently used mcp connection");
            evicted.shutdown().await;
        }
        let tools_changed = self.with_entry(config, |entry, _| entry.tools_changed.clone());
        let opened = Connection::open(config, tools_changed.clone()).await.map(Arc::new);
        self.with_entry(config, |entry, now| {
            if let Ok(connection) = &opened {
                entry.live = Some(Live { config: config.clone(), connection: connection.clone(), last_used: now });
                // A (re)started server may offer different tools than the stored rows.
                tools_changed.send_replace(true);
            }
        });
        // Released only now, so the slot passes from "reserved" to "live" without a gap.
        drop(reservation);
        opened.map(|connection| (connection, false))
    }

    /// Takes a connection slot for `config`, evicting the least recently used idle connection of another
    /// server when the pool is full. Returns the evicted connection for the caller to close.
    fn reserve_slot(&self, config: &ServerConfig) -> Result<(Reservation<'_>, Option<Arc<Connection>>), McpError> {
        let mut servers = self.lock();
        let used = servers.values().filter(|entry| entry.live.is_some() || entry.reserved).count();
        let evicted = if used < self.max_connections {
            None
        } else {
            let victim = servers
                .iter()
                .filter(|(id, entry)| **id != config.id && entry.live.as_ref().is_some_and(|live| !live.is_busy()))
                .min_by_key(|(_, entry)| entry.live.as_ref().map(|live| live.last_used))
                .map(|(id, _)| *id);
            let live = victim.and_then(|id| servers.get_mut(&id)).and_then(|entry| entry.live.take());
            match live {
                Some(live) => Some(live.connection),
                None => {
                    return Err(McpError::PoolExhausted { server: config.slug.clone(), max: self.max_connections });
                }
            }
        };
        if let Some(entry) = servers.get_mut(&config.id) {
            entry.reserved = true;
        }
        Ok((Reservation { pool: self, server_id: config.id }, evicted))
    }

    /// Feeds the breaker and the up gauge with the outcome of one call, probe or refresh.
    fn record(&self, config: &ServerConfig, failure: Option<&McpError>) {
        let server_failed = failure.is_some_and(McpError::is_server_failure);
        let transition = self.with_entry(config, |entry, now| {
            if server_failed { entry.breaker.record_failure(now) } else { entry.breaker.record_success(now) }
        });
        metrics::gauge!(UP_GAUGE, "server" => config.slug.clone()).set(if server_failed { 0.0 } else { 1.0 });
        if let Some(transition) = transition {
            let (from, to) = (ServerStatus::from_breaker(transition.from), ServerStatus::from_breaker(transition.to));
            tracing::warn!(server = %config.slug, from = from.as_str(), to = to.as_str(), "mcp server status changed");
        }
    }

    /// Runs `f` on the server's entry (created on first sight) with the current time.
    fn with_entry<R>(&self, config: &ServerConfig, f: impl FnOnce(&mut ServerEntry, Timestamp) -> R) -> R {
        let now = self.clock.now();
        let mut servers = self.lock();
        let entry = servers.entry(config.id).or_insert_with(|| ServerEntry {
            slug: config.slug.clone(),
            breaker: Breaker::new(BreakerConfig::MCP),
            tools_changed: ToolsChanged::new(watch::channel(false).0),
            connect_lock: Arc::default(),
            reserved: false,
            live: None,
        });
        entry.slug.clone_from(&config.slug);
        f(entry, now)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Uuid, ServerEntry>> {
        self.servers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("max_connections", &self.max_connections)
            .field("live_connections", &self.live_connections())
            .finish()
    }
}

/// A slot taken by a connect in progress; released when the connect ends, even if it is cancelled.
struct Reservation<'a> {
    pool: &'a Pool,
    server_id: Uuid,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Some(entry) = self.pool.lock().get_mut(&self.server_id) {
            entry.reserved = false;
        }
    }
}

/// The connection itself is unusable (as opposed to a slow or failing tool), so it is replaced.
fn transport_broken(error: &McpError) -> bool {
    matches!(error, McpError::Closed { .. } | McpError::Transport { .. })
}

/// Closes connections concurrently, so one server ignoring SIGTERM does not delay the others.
async fn close_all(connections: Vec<Arc<Connection>>) {
    let mut closing = tokio::task::JoinSet::new();
    for connection in connections {
        closing.spawn(async move { connection.shutdown().await });
    }
    while closing.join_next().await.is_some() {}
}
