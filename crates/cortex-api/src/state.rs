//! Shared state of the HTTP layer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cortex_mcp::Pool;
use cortex_runtime::Runtime;
use cortex_store::Store;
use cortex_store::secrets::Cipher;
use metrics_exporter_prometheus::PrometheusHandle;

/// Settings of the HTTP layer.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Largest request body accepted (1 MiB).
    pub body_limit: usize,
    /// Requests per rate scope (key or session) across the API; 0 per minute disables.
    pub api_rate: crate::rate_limit::Limit,
    /// Chat messages per rate scope; 0 per minute disables.
    pub chat_rate: crate::rate_limit::Limit,
    /// Failed authentications per client address before it gets 429; 0 per minute disables.
    pub auth_failures: crate::rate_limit::Limit,
    /// Extra browser origins allowed to open streams (the server's own origin always is).
    pub allowed_origins: Vec<String>,
    /// Dashboard login: public URL, session lifetime, login throttling (SPEC §11.1).
    pub dashboard: DashboardConfig,
    /// Header and idle deadlines and the connection cap of the listener ([`crate::server`]).
    pub connections: crate::server::ConnectionLimits,
}

/// Settings of dashboard sign-in.
#[derive(Debug, Clone, Default)]
pub struct DashboardConfig {
    /// `CORTEX_PUBLIC_URL`: another origin accepted for unsafe requests; `https` makes the cookie `Secure`.
    pub public_url: Option<url::Url>,
    pub session: cortex_auth::session::SessionPolicy,
    pub throttle: cortex_auth::throttle::LoginThrottle,
    /// Login providers configured by environment variables (read-only; [`crate::login`]).
    pub login_providers: Vec<crate::login::EnvLoginProvider>,
}

impl DashboardConfig {
    /// Whether the session cookie gets the `Secure` attribute.
    pub fn secure_cookie(&self) -> bool {
        self.public_url.as_ref().is_some_and(|url| url.scheme() == "https")
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            body_limit: 1024 * 1024,
            api_rate: crate::rate_limit::Limit::API,
            chat_rate: crate::rate_limit::Limit::CHAT,
            auth_failures: crate::rate_limit::Limit::AUTH_FAILURES,
            allowed_origins: Vec::new(),
            dashboard: DashboardConfig::default(),
            connections: crate::server::ConnectionLimits::default(),
        }
    }
}

/// Liveness flags the binary flips: the job engine loop is running; the process is draining.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    engine_alive: Arc<AtomicBool>,
    draining: Arc<AtomicBool>,
}

impl Readiness {
    pub fn set_engine_alive(&self, alive: bool) {
        self.engine_alive.store(alive, Ordering::SeqCst);
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn engine_alive(&self) -> bool {
        self.engine_alive.load(Ordering::SeqCst)
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

/// Everything handlers share; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub runtime: Arc<Runtime>,
    /// Encrypts secrets (MCP headers/env, webhook headers) before they are stored.
    pub cipher: Arc<Cipher>,
    /// The process's MCP connections, shared with the runtime.
    pub mcp: Arc<Pool>,
    pub config: Arc<ApiConfig>,
    pub metrics: PrometheusHandle,
    pub readiness: Readiness,
    /// Cancelled when the process shuts down; open streams end with a `: shutdown` comment.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Per-key request budgets (built from `config` by [`AppState::new`]).
    pub limiter: Arc<crate::rate_limit::RateLimiter>,
    /// Failed authentications per client address.
    pub auth_failures: Arc<crate::rate_limit::FailedAuth>,
    /// Database-derived gauges behind `/metrics`, recounted at most once a second.
    pub gauges: Arc<crate::metrics::StateGauges>,
    /// The process's channel supervisor: channel health, and the adapters webhooks are handed to.
    pub channels: Arc<cortex_channels::supervisor::Supervisor>,
    /// The SSE feeds: one reader of the event log per followed scope, shared by its streams.
    pub sse: crate::sse_hub::SseHub,
}

/// The parts an [`AppState`] is made of.
pub struct AppParts {
    pub store: Store,
    pub runtime: Arc<Runtime>,
    pub cipher: Arc<Cipher>,
    pub mcp: Arc<Pool>,
    pub config: ApiConfig,
    pub metrics: PrometheusHandle,
    pub readiness: Readiness,
    pub shutdown: tokio_util::sync::CancellationToken,
    pub channels: Arc<cortex_channels::supervisor::Supervisor>,
}

impl AppState {
    pub fn new(parts: AppParts) -> Self {
        let limiter = Arc::new(crate::rate_limit::RateLimiter::new(parts.config.api_rate, parts.config.chat_rate));
        let auth_failures = Arc::new(crate::rate_limit::FailedAuth::new(parts.config.auth_failures));
        let sse = crate::sse_hub::SseHub::new(parts.store.clone(), parts.shutdown.clone());
        Self {
            store: parts.store,
            runtime: parts.runtime,
            cipher: parts.cipher,
            mcp: parts.mcp,
            config: Arc::new(parts.config),
            metrics: parts.metrics,
            readiness: parts.readiness,
            shutdown: parts.shutdown,
            limiter,
            auth_failures,
            gauges: Arc::default(),
            channels: parts.channels,
            sse,
        }
    }
}
