//! Keeps the `mcp_server` and `mcp_tool` rows in step with the MCP servers themselves (SPEC §6.4):
//! registration with discovery before the API answers, operator refreshes, and the background health
//! probe that maps each server's circuit breaker to its stored status and re-lists tools when a server
//! says they changed or was restarted.
//!
//! Secrets: `env` and `headers` values are encrypted with the row id in the associated data
//! (`mcp_server.env_enc.<id>`, `mcp_server.headers_enc.<id>`), so ids are chosen here, before insert;
//! only the key names are stored readably. Decrypted values live only in the [`ServerConfig`] handed to
//! the pool, whose errors come back redacted, so what a failing server echoes never reaches
//! `last_error` or the logs. A server that stays down is logged when its state changes, not per probe.
//!
//! This lives in the API crate because it needs the store, the secrets cipher and the MCP pool together,
//! which the API crate already has; the runtime may take it over once it depends on `cortex-mcp`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use cortex_core::Timestamp;
use cortex_core::clock::Clock;
use cortex_mcp::{Discovery, Pool, ProbeOutcome, ServerConfig, ServerStatus, Transport};
use cortex_store::mcp::{DiscoveredTool, DiscoveryRecord, McpServerRecord, NewMcpServer};
use cortex_store::secrets::{Cipher, SecretRef, SecretsError};
use cortex_store::{Store, StoreError};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::error::ApiError;

/// How often the probe loop looks for servers whose probe interval has elapsed.
pub const PROBE_TICK: Duration = Duration::from_secs(1);

/// Why a server's rows could not be brought up to date. A server that fails discovery or a probe is
/// not an error here: that outcome is stored as the server's status.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored `env`/`headers` cannot be decrypted (wrong master key, or the value was moved).
    #[error("mcp server `{slug}`: stored secrets cannot be used: {source}")]
    Secrets {
        slug: String,
        #[source]
        source: SecretsError,
    },
    /// The row lacks what its transport needs (a `stdio` server without a command, …).
    #[error("mcp server `{slug}`: stored configuration is incomplete: {reason}")]
    Incomplete { slug: String, reason: &'static str },
}

impl From<SyncError> for ApiError {
    fn from(err: SyncError) -> Self {
        match err {
            SyncError::Store(store) => store.into(),
            other => ApiError::new(crate::error::Code::Internal, other.to_string()),
        }
    }
}

/// A validated server to register; `transport` carries the plaintext secrets, which are encrypted here.
#[derive(Debug, Clone)]
pub struct McpRegistration {
    pub name: String,
    pub slug: String,
    pub transport: Transport,
    pub probe_interval_seconds: i64,
    /// An admin vouches for the server.
    pub trusted: bool,
}

/// The connection settings of a stored server, with `env`/`headers` decrypted.
pub fn server_config(record: &McpServerRecord, cipher: &Cipher) -> Result<ServerConfig, SyncError> {
    let open = |column: &'static str, stored: &Option<String>| -> Result<BTreeMap<String, String>, SyncError> {
        match stored {
            None => Ok(BTreeMap::new()),
            Some(stored) => cipher
                .decrypt_json(&SecretRef::new("mcp_server", column, record.id), stored)
                .map_err(|source| SyncError::Secrets { slug: record.slug.clone(), source }),
        }
    };
    let incomplete = |reason| SyncError::Incomplete { slug: record.slug.clone(), reason };
    let transport = match record.transport.as_str() {
        "stdio" => Transport::Stdio {
            command: record.command.clone().ok_or_else(|| incomplete("stdio server without a command"))?,
            args: record.args.clone(),
            env: open("env_enc", &record.env_enc)?,
        },
        "http" => Transport::Http {
            url: record.url.clone().ok_or_else(|| incomplete("http server without a url"))?,
            headers: open("headers_enc", &record.headers_enc)?,
        },
        _ => return Err(incomplete("unknown transport")),
    };
    Ok(ServerConfig::new(record.id, record.slug.clone(), transport))
}

/// Encrypts a secret map for its cell; nothing is stored for an empty map. Returns the value and the
/// key names shown by the API.
fn seal(
    cipher: &Cipher,
    column: &'static str,
    id: Uuid,
    map: &BTreeMap<String, String>,
) -> (Option<String>, Vec<String>) {
    if map.is_empty() {
        return (None, Vec::new());
    }
    (Some(cipher.encrypt_json(&SecretRef::new("mcp_server", column, id), map)), map.keys().cloned().collect())
}

/// Stores a new server, then runs discovery (bounded by the config's 30 s discovery timeout) before
/// returning it. A failed discovery leaves the server stored with `status: error` and the reason in
/// `last_error` (SPEC §2.4); only database and secret failures are errors.
pub async fn register(
    store: &Store,
    cipher: &Cipher,
    pool: &Pool,
    new: McpRegistration,
) -> Result<McpServerRecord, SyncError> {
    let id = cortex_core::new_id();
    let no_secrets = BTreeMap::new();
    let (command, args, env, url, headers) = match &new.transport {
        Transport::Stdio { command, args, env } => (Some(command.clone()), args.clone(), env, None, &no_secrets),
        Transport::Http { url, headers } => (None, Vec::new(), &no_secrets, Some(url.clone()), headers),
    };
    let (env_enc, env_keys) = seal(cipher, "env_enc", id, env);
    let (headers_enc, header_keys) = seal(cipher, "headers_enc", id, headers);
    let mut tx = store.begin().await?;
    tx.insert_mcp_server(&NewMcpServer {
        id,
        name: new.name,
        slug: new.slug,
        transport: new.transport.kind().to_owned(),
        command,
        args,
        env_enc,
        env_keys,
        url,
        headers_enc,
        header_keys,
        probe_interval_seconds: new.probe_interval_seconds,
        trusted: new.trusted,
    })
    .await?;
    tx.commit().await?;
    let record = store.get_mcp_server(&id.to_string()).await?;
    refresh(store, cipher, pool, &record).await
}

/// Re-runs discovery for a stored server and returns the updated row.
pub async fn refresh(
    store: &Store,
    cipher: &Cipher,
    pool: &Pool,
    record: &McpServerRecord,
) -> Result<McpServerRecord, SyncError> {
    let config = server_config(record, cipher)?;
    rediscover(store, pool, record, &config).await?;
    Ok(store.get_mcp_server(&record.id.to_string()).await?)
}

/// Discovery through the pool (so the connection stays for later calls and the breaker learns the
/// outcome); stores the tools, or `error` with the reason.
async fn rediscover(
    store: &Store,
    pool: &Pool,
    record: &McpServerRecord,
    config: &ServerConfig,
) -> Result<(), SyncError> {
    match pool.refresh(config).await {
        Ok(discovery) => store_discovery(store, record, discovery, pool.status(record.id)).await,
        Err(error) => {
            // The pool's errors are already redacted. Log what changes, not every retry of a server
            // that stays down.
            let message = error.to_string();
            if record.status == "error" && record.last_error.as_deref() == Some(message.as_str()) {
                tracing::debug!(server = %record.slug, code = error.code(), "mcp discovery still failing");
            } else {
                tracing::warn!(server = %record.slug, code = error.code(), error = %message, "mcp discovery failed");
            }
            set_status(store, record.id, ServerStatus::Error, Some(&message), None).await
        }
    }
}

/// Records a discovery; the stored status follows the breaker (a server on trial stays `degraded`).
async fn store_discovery(
    store: &Store,
    record: &McpServerRecord,
    discovery: Discovery,
    status: ServerStatus,
) -> Result<(), SyncError> {
    let discovery = DiscoveryRecord {
        protocol_version: discovery.protocol_version,
        server_info: discovery.server_info,
        capabilities: discovery.capabilities,
        tools: discovery
            .tools
            .into_iter()
            .map(|tool| DiscoveredTool {
                name: tool.name,
                description: tool.description,
                input_schema: tool.input_schema,
                annotations: tool.annotations,
            })
            .collect(),
    };
    let mut tx = store.begin().await?;
    tx.record_mcp_discovery(record, &discovery).await?;
    if status != ServerStatus::Active {
        tx.set_mcp_status(record.id, status.as_str(), None, None).await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn set_status(
    store: &Store,
    server_id: Uuid,
    status: ServerStatus,
    error: Option<&str>,
    healthy_at: Option<Timestamp>,
) -> Result<(), SyncError> {
    let mut tx = store.begin().await?;
    tx.set_mcp_status(server_id, status.as_str(), error, healthy_at).await?;
    tx.commit().await?;
    Ok(())
}

/// Probes every server that is not disabled once its `probe_interval_seconds` has elapsed, on the
/// given clock, until `shutdown`. Failures of one server (or of the database) are logged and never
/// stop the loop.
pub async fn probe_loop(
    store: Store,
    cipher: Arc<Cipher>,
    pool: Arc<Pool>,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) {
    let mut last_probed: HashMap<Uuid, Timestamp> = HashMap::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = probe_due(&store, &cipher, &pool, clock.as_ref(), &mut last_probed) => {}
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = clock.sleep(PROBE_TICK) => {}
        }
    }
}

/// One round of the probe loop: the due servers, probed concurrently.
async fn probe_due(
    store: &Store,
    cipher: &Cipher,
    pool: &Pool,
    clock: &dyn Clock,
    last_probed: &mut HashMap<Uuid, Timestamp>,
) {
    let servers = match store.probed_mcp_servers().await {
        Ok(servers) => servers,
        Err(error) => {
            tracing::warn!(%error, "cannot list mcp servers to probe");
            return;
        }
    };
    let now = clock.now();
    last_probed.retain(|id, _| servers.iter().any(|server| server.id == *id));
    let due: Vec<McpServerRecord> = servers
        .into_iter()
        .filter(|server| {
            let interval = chrono::Duration::seconds(server.probe_interval_seconds);
            last_probed.get(&server.id).is_none_or(|at| now - *at >= interval)
        })
        .collect();
    for server in &due {
        last_probed.insert(server.id, now);
    }
    futures::future::join_all(due.iter().map(|server| async move {
        if let Err(error) = probe_one(store, cipher, pool, clock, server).await {
            tracing::warn!(server = %server.slug, %error, "mcp health probe could not be recorded");
        }
    }))
    .await;
}

/// Probes one server and stores what it says. A failure never improves a stored `error`, and a server
/// that is stored as broken but reachable again (or was restarted) has its tools listed anew.
async fn probe_one(
    store: &Store,
    cipher: &Cipher,
    pool: &Pool,
    clock: &dyn Clock,
    record: &McpServerRecord,
) -> Result<(), SyncError> {
    let config = match server_config(record, cipher) {
        Ok(config) => config,
        Err(error) => return set_status(store, record.id, ServerStatus::Error, Some(&error.to_string()), None).await,
    };
    let stored_broken = matches!(record.status.as_str(), "error" | "pending");
    let probe = pool.probe(&config).await;
    if probe.changed() {
        tracing::info!(server = %record.slug, from = probe.previous.as_str(), to = probe.status.as_str(), "mcp server status changed");
    }
    match probe.outcome {
        // Started lazily on first use; a server stored as broken is restarted now to find out.
        ProbeOutcome::NotRunning if stored_broken => rediscover(store, pool, record, &config).await,
        ProbeOutcome::NotRunning => Ok(()),
        ProbeOutcome::Healthy { .. } if pool.take_tools_changed(record.id) || stored_broken => {
            rediscover(store, pool, record, &config).await
        }
        ProbeOutcome::Healthy { .. } => set_status(store, record.id, probe.status, None, Some(clock.now())).await,
        ProbeOutcome::Failed(error) => {
            let status = if record.status == "error" { ServerStatus::Error } else { probe.status };
            set_status(store, record.id, status, Some(&error.to_string()), None).await
        }
        ProbeOutcome::Skipped if record.status != probe.status.as_str() => {
            set_status(store, record.id, probe.status, None, None).await
        }
        ProbeOutcome::Skipped => Ok(()),
    }
}
