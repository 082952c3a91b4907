//! `cortex serve` and `cortex worker`: open the store, run migrations and bootstrap, start the job
//! engine (and for `serve` the HTTP API), then shut down gracefully on SIGTERM/SIGINT (SPEC §4.10).

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use cortex_api::server::ConnectionLimits;
use cortex_api::state::AppParts;
use cortex_api::{ApiConfig, AppState, Readiness};
use cortex_core::clock::{Clock, SystemClock};
use cortex_core::job::JobKind;
use cortex_jobs::{EngineConfig, JobEngine};
use cortex_runtime::{Runtime, RuntimeConfig, RuntimeError};
use cortex_store::secrets::{Cipher, SecretsError, load_master_key};
use cortex_store::{DatabaseConfig, Store, StoreError};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::bootstrap::{self, Bootstrap};
use crate::config::{ConfigError, EngineSettings, ServeConfig, StoreConfig, WorkerConfig};

/// Opens and migrates the store. A database that cannot be opened (PostgreSQL unreachable, a data dir
/// that is not a directory, a locked SQLite file) is a configuration problem: exit 2, one message naming
/// the setting.
pub async fn open_store(config: &StoreConfig) -> anyhow::Result<Store> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = match Store::open(&config.database, clock).await {
        Ok(store) => store,
        Err(StoreError::Locked(message)) => return Err(anyhow::Error::new(ConfigError(message))),
        Err(err) => {
            return Err(anyhow::Error::new(ConfigError(format!(
                "{}: {}",
                describe(&config.database),
                root_cause(&err)
            ))));
        }
    };
    store.migrate().await.context("applying database migrations")?;
    Ok(store)
}

fn describe(database: &DatabaseConfig) -> String {
    match database {
        DatabaseConfig::Sqlite { path } => {
            format!("cannot open the SQLite database {} (CORTEX_DATA_DIR)", path.display())
        }
        DatabaseConfig::Postgres { .. } => "cannot connect to PostgreSQL (CORTEX_DATABASE_URL)".into(),
    }
}

/// The innermost cause of an error: outer layers repeat it in their own messages.
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

fn engine(store: &Store, runtime: &Arc<Runtime>, settings: &EngineSettings) -> JobEngine {
    let name = format!("{}:{}", hostname(), std::process::id());
    let config = EngineConfig {
        concurrency: settings.concurrency,
        shutdown_grace: settings.shutdown_grace,
        auto_quarantine: settings.auto_quarantine,
        heartbeat_interval: settings.heartbeat_interval,
        worker_dead_after: settings.worker_dead_after,
        // A dead worker's job must run again well within 30 s: check at least every 5 s.
        reaper_interval: settings.heartbeat_interval.min(std::time::Duration::from_secs(5)),
        ..EngineConfig::with_name(name)
    };
    let handler = runtime.handler();
    JobEngine::new(store.clone(), config)
        .with_handler(JobKind::Chat, handler.clone())
        .with_handler(JobKind::Task, handler)
        .with_handler(JobKind::MemoryExtract, runtime.extraction_handler())
}

fn hostname() -> String {
    std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "cortex".into())
}

/// The HTTP client for model providers and chat platforms, built once per process and shared (one
/// connection pool); its TLS is the process's one configuration (`cortex-tls`).
fn http_client() -> anyhow::Result<reqwest::Client> {
    cortex_tls::client_builder().build().context("building the HTTP client for model providers and chat platforms")
}

/// The agent runtime, configured from the environment (provider keys and base URLs, SSRF exceptions,
/// search, delegation limits); a malformed value is a configuration error (exit 2).
async fn build_runtime(
    store: &Store,
    config: &StoreConfig,
    cipher: &Arc<Cipher>,
    mcp: &Arc<cortex_mcp::Pool>,
    http: reqwest::Client,
) -> anyhow::Result<Arc<Runtime>> {
    let env = std::env::vars()
        .filter(|(name, _)| {
            name.starts_with("OPENAI_")
                || name.starts_with("ANTHROPIC_")
                || name.starts_with("CORTEX_SSRF")
                || name.starts_with("CORTEX_SEARCH")
                || name.starts_with("CORTEX_DELEGATION")
                || name.starts_with("CORTEX_EMBEDDINGS")
                || name.starts_with("CORTEX_VECTOR")
                || crate::telemetry::is_secret_var(name)
                || name.starts_with("CORTEX_MEMORY")
        })
        .collect();
    let runtime_config = RuntimeConfig {
        data_dir: config.data_dir.clone(),
        env,
        cipher: cipher.clone(),
        mcp: mcp.clone(),
        http,
        llm_retry: cortex_llm::RetryPolicy::default(),
        redactor: crate::telemetry::LOG_REDACTOR.clone(),
    };
    let runtime = Runtime::new(store.clone(), runtime_config).await.map_err(|err| match err {
        RuntimeError::InvalidEnv { .. } => anyhow::Error::new(ConfigError(err.to_string())),
        other => anyhow::Error::new(other).context("starting the agent runtime"),
    })?;
    // Sessions written by this process queue their memory extraction (SPEC §9.2).
    if let Some(policy) = runtime.extraction_policy() {
        store.enable_memory_extraction(policy);
    }
    Ok(runtime)
}

/// One MCP connection pool per process (≤ 10 live connections, idle close after 10 min).
fn mcp_pool(store: &Store) -> Arc<cortex_mcp::Pool> {
    Arc::new(cortex_mcp::Pool::new(store.clock().clone(), 10, std::time::Duration::from_secs(600)))
}

/// Starts the MCP health probe (SPEC §6.4) on this process's pool; it ends when `shutdown` is cancelled.
fn spawn_mcp_prober(
    store: &Store,
    cipher: &Arc<Cipher>,
    mcp: &Arc<cortex_mcp::Pool>,
    shutdown: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(cortex_api::mcp_sync::probe_loop(
        store.clone(),
        cipher.clone(),
        mcp.clone(),
        store.clock().clone(),
        shutdown.clone(),
    ))
}

/// Starts the memory backfill (embeds records stored without a vector); it ends when `stop` is cancelled.
fn spawn_memory_backfill(runtime: &Arc<Runtime>, stop: &CancellationToken) -> tokio::task::JoinHandle<()> {
    let (memory, stop) = (runtime.memory.clone(), stop.clone());
    tokio::spawn(async move { memory.run_backfill(stop).await })
}

/// Starts the markdown memory sync (startup pass, then the file watcher under its lease); it ends when
/// `stop` is cancelled.
fn spawn_markdown_sync(runtime: &Arc<Runtime>, stop: &CancellationToken) -> tokio::task::JoinHandle<()> {
    let (memory, stop) = (runtime.memory.clone(), stop.clone());
    tokio::spawn(memory.run_markdown_sync(uuid::Uuid::now_v7(), stop))
}

/// Starts this process's retention timer (SPEC Appendix B); it ends when `stop` is cancelled.
fn spawn_retention(
    runtime: &Arc<Runtime>,
    settings: &EngineSettings,
    stop: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let (runtime, policy, stop) = (runtime.clone(), settings.retention.clone(), stop.clone());
    tokio::spawn(async move { runtime.run_retention(policy, stop).await })
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

/// Loads the master key and proves it matches the one that encrypted this database's secrets.
pub async fn open_cipher(store: &Store, config: &StoreConfig) -> anyhow::Result<Arc<Cipher>> {
    let env_key = std::env::var("CORTEX_MASTER_KEY").ok().filter(|key| !key.is_empty());
    let salt = match store.passphrase_salt().await {
        Ok(salt) => salt,
        Err(SecretsError::Store(err)) => return Err(err).context("reading the passphrase salt"),
        Err(err) => return Err(anyhow::Error::new(ConfigError(err.to_string()))),
    };
    let key = load_master_key(env_key.as_deref(), &config.data_dir, &salt)
        .map_err(|err| anyhow::Error::new(ConfigError(err.to_string())))?;
    let cipher = Cipher::new(key, Vec::new());
    match store.verify_master_key(&cipher).await {
        Ok(()) => Ok(Arc::new(cipher)),
        Err(SecretsError::Store(err)) => Err(err).context("checking the master key"),
        Err(SecretsError::WrongKey { expected, configured }) => {
            let source = match env_key {
                Some(_) => "CORTEX_MASTER_KEY".to_owned(),
                None => format!(
                    "the key file {} (CORTEX_MASTER_KEY is not set)",
                    config.data_dir.join("master.key").display()
                ),
            };
            Err(anyhow::Error::new(ConfigError(format!(
                "the master key from {source} (key id {configured}) does not match the key that encrypted this \
                 database's secrets (key id {expected}); if master.key was deleted or replaced, restore it from a \
                 backup or set CORTEX_MASTER_KEY to the original key"
            ))))
        }
        Err(err) => Err(anyhow::Error::new(ConfigError(err.to_string()))),
    }
}

/// Raises the soft limit of open files to the hard limit: each connection, database handle and MCP
/// child needs descriptors, and the usual soft default (1,024) is below the connection cap.
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::info!(from = soft, to = hard, "raised the open file limit"),
            Err(err) => tracing::warn!(soft, hard, error = %err, "cannot raise the open file limit"),
        },
        Ok((soft, _)) => tracing::info!(limit = soft, "open file limit"),
        Err(err) => tracing::warn!(error = %err, "cannot read the open file limit"),
    }
}

pub async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    let started = Instant::now();
    raise_open_file_limit();
    let env_key = std::env::var("CORTEX_API_KEY").ok();
    bootstrap::check_env_key(env_key.as_deref())?;
    let store = open_store(&config.store).await?;
    let cipher = open_cipher(&store, &config.store).await?;
    let mcp = mcp_pool(&store);
    let bootstrap = bootstrap::ensure_admin_key(&store, env_key.as_deref()).await?;
    let http = http_client()?;
    let runtime = build_runtime(&store, &config.store, &cipher, &mcp, http.clone()).await?;

    crate::channels::materialise_env(&store, &cipher).await?;
    let channels = crate::channels::supervisor(&store, &cipher, http)?;

    let env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
    let login_providers = cortex_api::login::providers_from_env(&env)
        .map_err(|err| anyhow::Error::new(ConfigError(format!("login providers: {err}"))))?;
    let readiness = Readiness::default();
    let shutdown = CancellationToken::new();
    let state = AppState::new(AppParts {
        store: store.clone(),
        runtime: runtime.clone(),
        cipher: cipher.clone(),
        mcp: mcp.clone(),
        channels: channels.clone(),
        config: ApiConfig {
            allowed_origins: config.allowed_origins.clone(),
            api_rate: config.api_rate,
            chat_rate: config.chat_rate,
            dashboard: cortex_api::state::DashboardConfig {
                public_url: config.public_url.clone(),
                login_providers,
                ..Default::default()
            },
            connections: config.connections,
            ..ApiConfig::default()
        },
        metrics: cortex_api::metrics::handle(),
        readiness: readiness.clone(),
        shutdown: shutdown.clone(),
    });
    let listener = TcpListener::bind(config.listen).await.map_err(|err| {
        anyhow::Error::new(ConfigError(format!("cannot listen on {} (CORTEX_LISTEN): {err}", config.listen)))
    })?;
    let address = listener.local_addr()?;

    let engine_stop = CancellationToken::new();
    let engine_task = {
        let engine = engine(&store, &runtime, &config.engine);
        let stop = engine_stop.clone();
        let readiness = readiness.clone();
        readiness.set_engine_alive(true);
        tokio::spawn(async move {
            let result = engine.run(stop.cancelled_owned()).await;
            readiness.set_engine_alive(false);
            result
        })
    };

    tokio::spawn(cortex_api::metrics::keep_drained(cortex_api::metrics::handle(), shutdown.clone()));
    let prober = spawn_mcp_prober(&store, &cipher, &mcp, &shutdown);
    let retention = spawn_retention(&runtime, &config.engine, &engine_stop);
    let supervisor = crate::channels::spawn(&channels, &shutdown);
    let backfill = spawn_memory_backfill(&runtime, &engine_stop);
    let markdown = spawn_markdown_sync(&runtime, &engine_stop);
    let server_stop = shutdown.clone();
    let server =
        tokio::spawn(cortex_api::server::serve(listener, cortex_api::router(state), config.connections, server_stop));

    tracing::info!(%address, database = store.engine_name(), data_dir = %config.store.data_dir.display(), startup_ms = started.elapsed().as_millis() as u64, "cortex serve ready");
    match &bootstrap {
        Bootstrap::Generated(key) => println!("Admin API key (shown only once, store it now): {key}"),
        Bootstrap::EnvKeyUnusable => {
            tracing::warn!("CORTEX_API_KEY names a revoked or expired key");
            eprintln!("{}", bootstrap::UNUSABLE_ENV_KEY);
        }
        Bootstrap::FromEnv | Bootstrap::Existing => {}
    }
    // Printed last: tools waiting for start-up read until this line.
    println!("Cortex Plane listening on http://{address} ({} database)", store.engine_name());

    shutdown_signal().await;
    tracing::info!("shutdown requested");
    readiness.set_draining();
    engine_stop.cancel();
    let engine_result = engine_task.await.context("job engine task")?;
    retention.await.context("retention task")?;
    backfill.await.context("memory backfill task")?;
    markdown.await.context("markdown memory sync task")?;
    shutdown.cancel();
    server.await.context("http server task")?.context("http server")?;
    engine_result.context("job engine shutdown")?;
    prober.await.context("mcp health probe task")?;
    supervisor.await.context("channel supervisor task")?;
    mcp.shutdown().await;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

pub async fn worker(config: WorkerConfig) -> anyhow::Result<()> {
    raise_open_file_limit();
    let store = open_store(&config.store).await?;
    let cipher = open_cipher(&store, &config.store).await?;
    let mcp = mcp_pool(&store);
    let http = http_client()?;
    let runtime = build_runtime(&store, &config.store, &cipher, &mcp, http.clone()).await?;
    crate::channels::materialise_env(&store, &cipher).await?;
    let channels = crate::channels::supervisor(&store, &cipher, http)?;
    let readiness = Readiness::default();
    let shutdown = CancellationToken::new();
    let health = match config.health_listen {
        Some(address) => {
            let state = AppState::new(AppParts {
                store: store.clone(),
                runtime: runtime.clone(),
                cipher: cipher.clone(),
                mcp: mcp.clone(),
                channels: channels.clone(),
                config: ApiConfig::default(),
                metrics: cortex_api::metrics::handle(),
                readiness: readiness.clone(),
                shutdown: shutdown.clone(),
            });
            let listener = TcpListener::bind(address).await.map_err(|err| {
                anyhow::Error::new(ConfigError(format!("cannot listen on {address} (CORTEX_HEALTH_LISTEN): {err}")))
            })?;
            let limits = ConnectionLimits::default();
            tokio::spawn(cortex_api::metrics::keep_drained(cortex_api::metrics::handle(), shutdown.clone()));
            Some(tokio::spawn(cortex_api::server::serve(listener, cortex_api::router(state), limits, shutdown.clone())))
        }
        None => None,
    };
    let prober = spawn_mcp_prober(&store, &cipher, &mcp, &shutdown);
    let supervisor = crate::channels::spawn(&channels, &shutdown);
    let retention_stop = CancellationToken::new();
    let retention = spawn_retention(&runtime, &config.engine, &retention_stop);
    let backfill = spawn_memory_backfill(&runtime, &retention_stop);
    let engine = engine(&store, &runtime, &config.engine);
    readiness.set_engine_alive(true);
    println!("Cortex Plane worker running (worker id {})", engine.worker_id());
    let result = engine.run(async { shutdown_signal().await }).await;
    readiness.set_engine_alive(false);
    retention_stop.cancel();
    retention.await.context("retention task")?;
    backfill.await.context("memory backfill task")?;
    shutdown.cancel();
    if let Some(health) = health {
        health.await.context("health listener task")?.context("health listener")?;
    }
    result.context("job engine")?;
    prober.await.context("mcp health probe task")?;
    supervisor.await.context("channel supervisor task")?;
    mcp.shutdown().await;
    store.close().await;
    Ok(())
}
