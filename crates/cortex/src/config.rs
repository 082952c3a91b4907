//! Resolves settings from flags, environment and the optional TOML file (in that order of precedence)
//! and validates them up front, so a misconfiguration stops the process with a message naming the
//! setting instead of failing later.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::bail;
use cortex_api::rate_limit::Limit;
use cortex_api::server::ConnectionLimits;
use cortex_jobs::AutoQuarantine;
use cortex_jobs::retention::RetentionPolicy;
use cortex_store::DatabaseConfig;
use serde::Deserialize;

use crate::cli::{ConnectionArgs, EngineArgs, ServerArgs, StoreArgs, WorkerArgs};

/// Contents of `--config FILE`. Unknown keys are errors, so typos surface.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub db_max_connections: Option<u32>,
    pub worker_concurrency: Option<usize>,
    pub shutdown_grace_seconds: Option<u64>,
    pub disable_quarantine: Option<bool>,
    pub worker_heartbeat_seconds: Option<u64>,
    pub worker_dead_after_seconds: Option<u64>,
    pub retention_days: Option<u32>,
    pub audit_retention_days: Option<u32>,
    pub allowed_origins: Option<Vec<String>>,
    pub health_listen: Option<SocketAddr>,
    pub rate_limit_api_per_minute: Option<u32>,
    pub rate_limit_chat_per_minute: Option<u32>,
    pub public_url: Option<String>,
    pub http_header_timeout_seconds: Option<u64>,
    pub http_idle_timeout_seconds: Option<u64>,
    pub max_connections: Option<usize>,
}

/// A configuration error; the process exits with status 2 and this message.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn invalid(setting: &str, detail: impl std::fmt::Display) -> anyhow::Error {
    anyhow::Error::new(ConfigError(format!("invalid {setting}: {detail}")))
}

pub fn load_file(path: Option<&Path>) -> anyhow::Result<FileConfig> {
    let Some(path) = path else { return Ok(FileConfig::default()) };
    let text = std::fs::read_to_string(path)
        .map_err(|err| anyhow::Error::new(ConfigError(format!("cannot read config file {}: {err}", path.display()))))?;
    toml::from_str(&text)
        .map_err(|err| anyhow::Error::new(ConfigError(format!("config file {}: {err}", path.display()))))
}

/// Where the data lives, resolved.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub data_dir: PathBuf,
    pub database: DatabaseConfig,
}

impl StoreConfig {
    pub fn resolve(args: &StoreArgs, file: &FileConfig) -> anyhow::Result<Self> {
        let data_dir =
            args.data_dir.clone().or_else(|| file.data_dir.clone()).unwrap_or_else(|| PathBuf::from("./cortex-data"));
        let max_connections = args.db_max_connections.or(file.db_max_connections).unwrap_or(10);
        if !(1..=500).contains(&max_connections) {
            return Err(invalid("CORTEX_DB_MAX_CONNECTIONS", "must be between 1 and 500"));
        }
        let database = match args
            .database_url
            .clone()
            .or_else(|| file.database_url.clone())
            .filter(|url| !url.trim().is_empty())
        {
            None => DatabaseConfig::Sqlite { path: data_dir.join("cortex.db") },
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                DatabaseConfig::Postgres { url, max_connections }
            }
            Some(_) => {
                return Err(invalid(
                    "CORTEX_DATABASE_URL",
                    "must start with postgres:// (leave it unset for embedded SQLite)",
                ));
            }
        };
        Ok(Self { data_dir, database })
    }
}

/// Job engine settings, resolved.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub concurrency: usize,
    pub shutdown_grace: Duration,
    /// Off with `CORTEX_DISABLE_QUARANTINE=true`.
    pub auto_quarantine: AutoQuarantine,
    pub heartbeat_interval: Duration,
    pub worker_dead_after: Duration,
    pub retention: RetentionPolicy,
}

/// Longest retention accepted, in days (a century; 0 means forever anyway).
const MAX_RETENTION_DAYS: u32 = 36_500;

impl EngineSettings {
    pub fn resolve(args: &EngineArgs, file: &FileConfig) -> anyhow::Result<Self> {
        let concurrency = args.worker_concurrency.or(file.worker_concurrency).unwrap_or(5);
        if !(1..=1000).contains(&concurrency) {
            return Err(invalid("CORTEX_WORKER_CONCURRENCY", "must be between 1 and 1000"));
        }
        let grace = args.shutdown_grace_seconds.or(file.shutdown_grace_seconds).unwrap_or(60);
        if !(1..=3600).contains(&grace) {
            return Err(invalid("CORTEX_SHUTDOWN_GRACE_SECONDS", "must be between 1 and 3600"));
        }
        let heartbeat = args.worker_heartbeat_seconds.or(file.worker_heartbeat_seconds).unwrap_or(5);
        let dead_after = args.worker_dead_after_seconds.or(file.worker_dead_after_seconds).unwrap_or(20);
        if heartbeat == 0 || dead_after < heartbeat * 2 {
            return Err(invalid(
                "CORTEX_WORKER_DEAD_AFTER_SECONDS",
                format!("must be at least twice CORTEX_WORKER_HEARTBEAT_SECONDS ({heartbeat} s), got {dead_after} s"),
            ));
        }
        let retention_days = args.retention_days.or(file.retention_days).unwrap_or(30);
        let audit_retention_days = args.audit_retention_days.or(file.audit_retention_days).unwrap_or(365);
        for (setting, days) in
            [("CORTEX_RETENTION_DAYS", retention_days), ("CORTEX_AUDIT_RETENTION_DAYS", audit_retention_days)]
        {
            if days > MAX_RETENTION_DAYS {
                return Err(invalid(
                    setting,
                    format!("must be at most {MAX_RETENTION_DAYS} days (0 keeps data forever)"),
                ));
            }
        }
        Ok(Self {
            concurrency,
            shutdown_grace: Duration::from_secs(grace),
            auto_quarantine: if args.disable_quarantine.or(file.disable_quarantine).unwrap_or(false) {
                AutoQuarantine::Off
            } else {
                AutoQuarantine::On
            },
            heartbeat_interval: Duration::from_secs(heartbeat),
            worker_dead_after: Duration::from_secs(dead_after),
            retention: RetentionPolicy::with_days(retention_days, audit_retention_days),
        })
    }
}

/// Everything `cortex serve` needs, resolved.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub store: StoreConfig,
    pub engine: EngineSettings,
    pub listen: SocketAddr,
    pub allowed_origins: Vec<String>,
    /// Requests per key or session (SPEC Appendix B).
    pub api_rate: Limit,
    /// Chat messages per key or session.
    pub chat_rate: Limit,
    /// `CORTEX_PUBLIC_URL`, parsed.
    pub public_url: Option<url::Url>,
    /// Header and idle deadlines, connection cap.
    pub connections: ConnectionLimits,
}

impl ServeConfig {
    pub fn resolve(args: &ServerArgs) -> anyhow::Result<Self> {
        let file = load_file(args.store.config.as_deref())?;
        let listen_text =
            args.listen.clone().or_else(|| file.listen.clone()).unwrap_or_else(|| "127.0.0.1:4000".into());
        let listen = resolve_listen(&listen_text)?;
        let allowed_origins = args.allowed_origins.clone().or_else(|| file.allowed_origins.clone()).unwrap_or_default();
        for origin in &allowed_origins {
            if !(origin.starts_with("http://") || origin.starts_with("https://")) {
                return Err(invalid("CORTEX_ALLOWED_ORIGINS", format!("`{origin}` is not an http(s) origin")));
            }
        }
        let api_rate =
            args.rate_limit_api_per_minute.or(file.rate_limit_api_per_minute).unwrap_or(Limit::API.per_minute);
        let chat_rate =
            args.rate_limit_chat_per_minute.or(file.rate_limit_chat_per_minute).unwrap_or(Limit::CHAT.per_minute);
        let public_url = match args.public_url.clone().or_else(|| file.public_url.clone()).filter(|url| !url.is_empty())
        {
            None => None,
            Some(text) => match url::Url::parse(&text) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => Some(url),
                _ => return Err(invalid("CORTEX_PUBLIC_URL", format!("`{text}` is not an http(s) URL"))),
            },
        };
        Ok(Self {
            store: StoreConfig::resolve(&args.store, &file)?,
            engine: EngineSettings::resolve(&args.engine, &file)?,
            listen,
            public_url,
            allowed_origins,
            api_rate: Limit::per_minute(api_rate),
            chat_rate: Limit::per_minute(chat_rate),
            connections: resolve_connections(&args.connections, &file)?,
        })
    }
}

/// `host:port` with a literal address or a host name (the first address it resolves to).
fn resolve_listen(text: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(address) = text.parse() {
        return Ok(address);
    }
    let not_an_address = || invalid("CORTEX_LISTEN", format!("`{text}` is not an address like 127.0.0.1:4000"));
    let (host, port) = text.rsplit_once(':').ok_or_else(not_an_address)?;
    let port: u16 = port.parse().map_err(|_| not_an_address())?;
    let mut addresses = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .map_err(|err| invalid("CORTEX_LISTEN", format!("cannot resolve `{host}`: {err}")))?;
    addresses.next().ok_or_else(|| invalid("CORTEX_LISTEN", format!("`{host}` resolves to no address")))
}

/// The listener's deadlines and cap, each within a range that keeps the server usable.
fn resolve_connections(args: &ConnectionArgs, file: &FileConfig) -> anyhow::Result<ConnectionLimits> {
    let defaults = ConnectionLimits::default();
    let header = args.http_header_timeout_seconds.or(file.http_header_timeout_seconds);
    let idle = args.http_idle_timeout_seconds.or(file.http_idle_timeout_seconds);
    let max_connections = args.max_connections.or(file.max_connections).unwrap_or(defaults.max_connections);
    for (setting, seconds) in
        [("CORTEX_HTTP_HEADER_TIMEOUT_SECONDS", header), ("CORTEX_HTTP_IDLE_TIMEOUT_SECONDS", idle)]
    {
        if seconds.is_some_and(|seconds| !(1..=3600).contains(&seconds)) {
            return Err(invalid(setting, "must be between 1 and 3600 seconds"));
        }
    }
    if !(1..=1_000_000).contains(&max_connections) {
        return Err(invalid("CORTEX_MAX_CONNECTIONS", "must be between 1 and 1000000"));
    }
    Ok(ConnectionLimits {
        header_timeout: header.map_or(defaults.header_timeout, Duration::from_secs),
        idle_timeout: idle.map_or(defaults.idle_timeout, Duration::from_secs),
        max_connections,
    })
}

/// Everything `cortex worker` needs, resolved.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub store: StoreConfig,
    pub engine: EngineSettings,
    pub health_listen: Option<SocketAddr>,
}

impl WorkerConfig {
    pub fn resolve(args: &WorkerArgs) -> anyhow::Result<Self> {
        let file = load_file(args.store.config.as_deref())?;
        let store = StoreConfig::resolve(&args.store, &file)?;
        if matches!(store.database, DatabaseConfig::Sqlite { .. }) {
            bail!(ConfigError(
                "`cortex worker` needs PostgreSQL (set CORTEX_DATABASE_URL=postgres://…): with embedded SQLite, \
                 `cortex serve` runs the workers itself and the database belongs to that one process"
                    .into()
            ));
        }
        Ok(Self {
            store,
            engine: EngineSettings::resolve(&args.engine, &file)?,
            health_listen: args.health_listen.or(file.health_listen),
        })
    }
}
