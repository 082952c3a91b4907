//! Command-line interface. Every flag has an environment variable (SPEC §2.2); values may also come
//! from a TOML file given with `--config` (flags and environment win over the file).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cortex", version, about = "Cortex Plane: a control plane for autonomous AI agents")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the API, the dashboard, workers and schedulers in one process.
    Serve(ServerArgs),
    /// Run job workers only (PostgreSQL mode, several processes share the database).
    Worker(WorkerArgs),
    /// Apply pending database migrations and exit.
    Migrate(StoreArgs),
    /// Manage API keys directly in the database (works while the server runs or not).
    Keys {
        #[command(flatten)]
        store: StoreArgs,
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Manage dashboard users directly in the database (works while the server runs or not).
    User {
        #[command(flatten)]
        store: StoreArgs,
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manage agents on a running server.
    Agent {
        #[command(flatten)]
        client: crate::client::ClientArgs,
        #[command(subcommand)]
        command: crate::client::agent::AgentCommand,
    },
    /// Talk to an agent on a running server: `cortex chat <agent> "text"`, or interactively without text.
    Chat {
        #[command(flatten)]
        client: crate::client::ClientArgs,
        /// Agent id or slug.
        agent: String,
        /// The message; omit it for an interactive session.
        text: Option<String>,
    },
    /// List and decide approval requests on a running server.
    Approvals {
        #[command(flatten)]
        client: crate::client::ClientArgs,
        #[command(subcommand)]
        command: crate::client::approvals::ApprovalsCommand,
    },
    /// Inspect and control jobs on a running server.
    Jobs {
        #[command(flatten)]
        client: crate::client::ClientArgs,
        #[command(subcommand)]
        command: crate::client::jobs::JobsCommand,
    },
    /// Manage provider keys and other secrets on a running server (admin).
    Credentials {
        #[command(flatten)]
        client: crate::client::ClientArgs,
        #[command(subcommand)]
        command: crate::client::credentials::CredentialsCommand,
    },
    /// List model providers on a running server.
    Providers {
        #[command(flatten)]
        client: crate::client::ClientArgs,
        #[command(subcommand)]
        command: crate::client::credentials::ProvidersCommand,
    },
    /// Measure the job queue on a scratch database, to size a deployment.
    Bench {
        #[command(subcommand)]
        command: crate::bench::BenchCommand,
    },
}

/// Where the data lives.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Optional TOML configuration file.
    #[arg(long, env = "CORTEX_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Data directory (SQLite file, master key, session buffers) [default: ./cortex-data].
    #[arg(long, env = "CORTEX_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// `postgres://…` to use PostgreSQL instead of the embedded SQLite file.
    #[arg(long, env = "CORTEX_DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,
    /// PostgreSQL connection pool size per process [default: 10].
    #[arg(long, env = "CORTEX_DB_MAX_CONNECTIONS", global = true)]
    pub db_max_connections: Option<u32>,
}

/// Settings of a process that runs jobs.
#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// Jobs run at once by this process [default: 5].
    #[arg(long, env = "CORTEX_WORKER_CONCURRENCY")]
    pub worker_concurrency: Option<usize>,
    /// Seconds running jobs get to finish on SIGTERM/SIGINT [default: 60].
    #[arg(long, env = "CORTEX_SHUTDOWN_GRACE_SECONDS")]
    pub shutdown_grace_seconds: Option<u64>,
    /// Turn off the automatic agent breaker (3 consecutive failed jobs quarantine the agent); manual
    /// quarantine still applies.
    #[arg(long, env = "CORTEX_DISABLE_QUARANTINE")]
    pub disable_quarantine: Option<bool>,
    /// Seconds between worker heartbeats [default: 5].
    #[arg(long, env = "CORTEX_WORKER_HEARTBEAT_SECONDS")]
    pub worker_heartbeat_seconds: Option<u64>,
    /// Seconds of silence after which a worker is dead and its jobs are recovered [default: 20].
    #[arg(long, env = "CORTEX_WORKER_DEAD_AFTER_SECONDS")]
    pub worker_dead_after_seconds: Option<u64>,
    /// Days ended jobs (with their events, steps and tool calls) and session buffers are kept; 0 keeps
    /// them forever [default: 30].
    #[arg(long, env = "CORTEX_RETENTION_DAYS")]
    pub retention_days: Option<u32>,
    /// Days approvals and the audit log are kept; 0 keeps them forever [default: 365].
    #[arg(long, env = "CORTEX_AUDIT_RETENTION_DAYS")]
    pub audit_retention_days: Option<u32>,
}

#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Address to listen on [default: 127.0.0.1:4000]. Binding beyond loopback exposes the API.
    #[arg(long, env = "CORTEX_LISTEN")]
    pub listen: Option<String>,
    /// Extra browser origins allowed to open event streams (comma-separated).
    #[arg(long, env = "CORTEX_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Option<Vec<String>>,
    /// Requests per minute per API key or session, burst a sixth of it; 0 disables [default: 6000].
    #[arg(long, env = "CORTEX_RATE_LIMIT_API_PER_MINUTE")]
    pub rate_limit_api_per_minute: Option<u32>,
    /// Chat messages per minute per API key or session, burst a sixth of it; 0 disables [default: 600].
    #[arg(long, env = "CORTEX_RATE_LIMIT_CHAT_PER_MINUTE")]
    pub rate_limit_chat_per_minute: Option<u32>,
    /// External base URL of the dashboard (OAuth callbacks, accepted origin; `https` makes the session
    /// cookie `Secure`).
    #[arg(long, env = "CORTEX_PUBLIC_URL")]
    pub public_url: Option<String>,
    #[command(flatten)]
    pub connections: ConnectionArgs,
}

/// Deadlines and the cap of the HTTP listener (SPEC Appendix B, Connections).
#[derive(Debug, Clone, Args)]
pub struct ConnectionArgs {
    /// Seconds a client has to send its request headers, else the connection is closed [default: 30].
    #[arg(long, env = "CORTEX_HTTP_HEADER_TIMEOUT_SECONDS")]
    pub http_header_timeout_seconds: Option<u64>,
    /// Seconds a keep-alive connection may sit idle before it is closed [default: 60].
    #[arg(long, env = "CORTEX_HTTP_IDLE_TIMEOUT_SECONDS")]
    pub http_idle_timeout_seconds: Option<u64>,
    /// Connections served at once; beyond them the listener stops accepting (8 more answer only
    /// /healthz, /readyz and /metrics) [default: 1024].
    #[arg(long, env = "CORTEX_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
}

#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Optional address for a `/healthz` + `/readyz` + `/metrics` listener.
    #[arg(long, env = "CORTEX_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a local user who signs in to the dashboard with email and password.
    Create {
        #[arg(long)]
        email: String,
        /// viewer, operator, approver or admin.
        #[arg(long)]
        role: String,
        /// Shown in the dashboard [default: the part of the email before `@`].
        #[arg(long)]
        name: Option<String>,
        /// Read the password from standard input (first line); otherwise one is generated and printed once.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Link a chat-platform identity to an existing user, so what they do in chat carries that user's
    /// role (approval buttons need `approver` or `admin`).
    Link {
        /// The user's email.
        #[arg(long)]
        email: String,
        /// The channel id (`GET /channels`).
        #[arg(long)]
        channel: uuid::Uuid,
        /// The platform's user id (Telegram user id, Discord user id, Slack `U…`, WhatsApp number).
        #[arg(long)]
        platform_user_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it once.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "admin")]
        role: String,
    },
    /// List keys (never their secrets).
    List,
    /// Revoke a key by id or prefix.
    Revoke { id: String },
    /// Print a new random key suitable for CORTEX_API_KEY without storing it.
    Generate,
}
