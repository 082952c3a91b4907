//! `cortex bench …`: measurements operators use to size a deployment, run against a throw-away database
//! so they never touch real data.
//!
//! One module per scenario, registered once in [`BenchCommand`] and [`run`]:
//! - [`queue`]: the job queue alone (enqueue and processing rates, enqueue→start latency);
//! - [`fanout`]: one engine draining one job on each of many agents (time to drain, peak RSS);
//! - [`chat`]: the control-plane overhead of one chat turn through the HTTP API (`?wait=true`) with a model
//!   that answers instantly;
//! - [`memory`]: the memory store and its embedded vector index at scale (insert rate, search p50/p99,
//!   recall@10, index cold start, RSS);
//! - [`sse`]: many SSE subscribers on one agent stream (delivery latency of events emitted while they
//!   listen, RSS);
//! - [`startup`]: a real `cortex serve` process, from spawn to `/readyz` 200, and its idle RSS;
//! - [`spike`]: a real `cortex serve` process's RSS before, at the end of and after a load spike;
//! - [`ui`]: server render time of the dashboard's list pages holding 50 rows;
//! - [`soak`]: a real `cortex serve` process under a steady mixed load for a long time (RSS and chat
//!   latency per minute, growth and drift after warm-up).
//!
//! A scenario returns a [`Report`] (one [`Figure`] per measured value); this module prints it as one
//! line per figure, headed by the machine's core count, or as JSON with `--json`.
//!
//! SQLite runs in a temporary directory. PostgreSQL runs in a scratch database `cortex_bench_<uuid>`
//! created on the `--database-url` server and dropped afterwards; that server must be on loopback, so a
//! benchmark can never load (or create databases on) a shared or remote server by accident.

mod chat;
mod fanout;
mod in_process;
mod local_embed;
mod memory;
mod queue;
mod soak;
mod spike;
mod sse;
mod startup;
mod ui;

use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use cortex_store::DatabaseConfig;
use serde::Serialize;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use uuid::Uuid;

use crate::config::ConfigError;

/// Pool size per process: the production default (`CORTEX_DB_MAX_CONNECTIONS`).
const POOL_SIZE: u32 = 10;

/// `cortex bench …` commands.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Measure enqueue and processing rates and enqueue→start latency of no-op jobs on a scratch
    /// database.
    Queue(queue::QueueArgs),
    /// Measure the control-plane overhead of one chat turn (`POST /agents/{id}/chat?wait=true`) with a
    /// model that answers instantly.
    Chat(chat::ChatArgs),
    /// Measure how long one engine takes to drain one no-op job on each of many agents, and its peak RSS.
    Fanout(fanout::FanoutArgs),
    /// Measure how long a `cortex serve` process takes from spawn to `/readyz` 200, and its idle RSS.
    Startup(startup::StartupArgs),
    /// Measure how fast events reach many concurrent SSE subscribers of one agent stream, and the RSS.
    Sse(sse::SseArgs),
    /// Measure a `cortex serve` process's RSS before, at the end of and after a load spike (large list
    /// pages in parallel while many connections are held open).
    Spike(spike::SpikeArgs),
    /// Measure how long the dashboard's list pages with 50 rows take to render (request to last byte).
    Ui(ui::UiArgs),
    /// Measure memory insert rate, vector and hybrid search latency, recall@10, index cold start and RSS.
    Memory(memory::MemoryArgs),
    /// Run a real `cortex serve` under a steady mixed load (chats, task jobs, SSE readers) and print its
    /// RSS and chat latency every minute, then RSS growth and p99 drift after warm-up against the targets.
    Soak(soak::SoakArgs),
}

/// Where a benchmark runs and how it reports.
#[derive(Debug, Clone, Args)]
pub struct ScratchArgs {
    /// Storage engine to measure.
    #[arg(long, value_enum, default_value_t = BenchEngine::Sqlite)]
    pub engine: BenchEngine,
    /// PostgreSQL server on loopback for `--engine postgres`, e.g. postgres://postgres@127.0.0.1:5432/postgres;
    /// the user must be allowed to create databases.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Print the figures as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Which store a benchmark measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchEngine {
    /// Embedded SQLite in a temporary directory.
    Sqlite,
    /// A scratch database on a loopback PostgreSQL server.
    Postgres,
}

/// Runs a benchmark command and prints its figures; the scratch database is removed even on failure.
pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    let scratch_args = command.scratch_args();
    let scratch = Scratch::create(scratch_args).await?;
    let measured = match &command {
        BenchCommand::Queue(args) => queue::measure(&scratch, args).await,
        BenchCommand::Chat(args) => chat::measure(&scratch, args).await,
        BenchCommand::Fanout(args) => fanout::measure(&scratch, args).await,
        BenchCommand::Startup(args) => startup::measure(&scratch, args).await,
        BenchCommand::Sse(args) => sse::measure(&scratch, args).await,
        BenchCommand::Spike(args) => spike::measure(&scratch, args).await,
        BenchCommand::Ui(args) => ui::measure(&scratch, args).await,
        BenchCommand::Memory(args) => memory::measure(&scratch, args).await,
        BenchCommand::Soak(args) => soak::measure(&scratch, args).await,
    };
    let removed = scratch.remove().await;
    let report = measured?;
    removed?;
    report.print(scratch_args.json)
}

impl BenchCommand {
    fn scratch_args(&self) -> &ScratchArgs {
        match self {
            BenchCommand::Queue(args) => &args.scratch,
            BenchCommand::Chat(args) => &args.scratch,
            BenchCommand::Fanout(args) => &args.scratch,
            BenchCommand::Startup(args) => &args.scratch,
            BenchCommand::Sse(args) => &args.scratch,
            BenchCommand::Spike(args) => &args.scratch,
            BenchCommand::Ui(args) => &args.scratch,
            BenchCommand::Memory(args) => &args.scratch,
            BenchCommand::Soak(args) => &args.scratch,
        }
    }
}

/// What one scenario measured, printed the same way for every scenario.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    /// The scenario's subcommand name.
    scenario: &'static str,
    /// `sqlite` or `postgres`.
    engine: &'static str,
    /// Cores of this machine: the figures only compare between machines of the same size.
    cores: usize,
    /// One sentence saying what was run, for the table's header.
    #[serde(skip)]
    setup: String,
    figures: Vec<Figure>,
    /// Per-interval readings of a long scenario (`soak`), in JSON only.
    #[serde(skip_serializing_if = "Option::is_none")]
    series: Option<serde_json::Value>,
}

/// One measured value.
#[derive(Debug, Serialize)]
pub(crate) struct Figure {
    /// Stable machine name, e.g. `process_concurrency_16_jobs_per_second`.
    name: String,
    /// What a reader sees in the table.
    #[serde(skip)]
    label: String,
    value: f64,
    unit: &'static str,
}

impl Report {
    pub(crate) fn new(scenario: &'static str, engine: &'static str, setup: String) -> Report {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        Report { scenario, engine, cores, setup, figures: Vec::new(), series: None }
    }

    /// Adds a figure; `name` is the JSON key, `label` the table's wording.
    pub(crate) fn figure(&mut self, name: impl Into<String>, label: impl Into<String>, value: f64, unit: &'static str) {
        self.figures.push(Figure { name: name.into(), label: label.into(), value, unit });
    }

    /// Attaches per-interval readings (printed with `--json`; the text form printed them as they came).
    pub(crate) fn series(&mut self, series: serde_json::Value) {
        self.series = Some(series);
    }

    fn print(&self, json: bool) -> anyhow::Result<()> {
        if json {
            println!("{}", serde_json::to_string_pretty(self)?);
            return Ok(());
        }
        println!("cortex bench {}: {}, {} cores, {}", self.scenario, self.engine, self.cores, self.setup);
        for figure in &self.figures {
            let value = if figure.value.abs() >= 100.0 {
                format!("{:.0}", figure.value)
            } else {
                format!("{:.2}", figure.value)
            };
            println!("  {:<52} {:>12} {}", figure.label, value, figure.unit);
        }
        Ok(())
    }
}

/// Runs `work` and returns how long it took.
pub(crate) async fn time<T, E: Into<anyhow::Error>>(
    work: impl Future<Output = Result<T, E>>,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    work.await.map_err(Into::into)?;
    Ok(start.elapsed())
}

/// Items per second.
pub(crate) fn rate(jobs: usize, elapsed: Duration) -> f64 {
    jobs as f64 / elapsed.as_secs_f64().max(f64::EPSILON)
}

/// Nearest-rank percentile of sorted values.
pub(crate) fn percentile(sorted: &[Duration], quantile: f64) -> Duration {
    let rank = (quantile * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.saturating_sub(1)).copied().unwrap_or_default()
}

/// Milliseconds with microsecond precision, for printing.
pub(crate) fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// The throw-away database a run measures.
pub(crate) struct Scratch {
    /// Where the data lives (also the directory for files such as session buffers).
    pub(crate) database: DatabaseConfig,
    pub(crate) dir: PathBuf,
    cleanup: Cleanup,
}

enum Cleanup {
    None,
    PgDatabase { admin: Box<PgConnectOptions>, name: String },
}

impl Scratch {
    /// `sqlite` or `postgres`, for the report.
    pub(crate) fn engine_name(&self) -> &'static str {
        match self.database {
            DatabaseConfig::Sqlite { .. } => "sqlite",
            DatabaseConfig::Postgres { .. } => "postgres",
        }
    }

    pub(crate) async fn create(args: &ScratchArgs) -> anyhow::Result<Scratch> {
        let id = Uuid::now_v7().simple();
        let dir = std::env::temp_dir().join(format!("cortex-bench-{id}"));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        match args.engine {
            BenchEngine::Sqlite => {
                let database = DatabaseConfig::Sqlite { path: dir.join("cortex.db") };
                Ok(Scratch { database, dir, cleanup: Cleanup::None })
            }
            BenchEngine::Postgres => {
                let Some(url) = args.database_url.as_deref() else {
                    bail!(ConfigError("--engine postgres needs --database-url postgres://…".into()));
                };
                let admin = loopback_server(url)?;
                let name = format!("cortex_bench_{id}");
                let mut conn = PgConnection::connect_with(&admin).await.context("connecting to PostgreSQL")?;
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
                    .execute(&mut conn)
                    .await
                    .context("creating the scratch database")?;
                conn.close().await?;
                let mut scratch_url = reqwest::Url::parse(url).context("--database-url")?;
                scratch_url.set_path(&format!("/{name}"));
                let database = DatabaseConfig::Postgres { url: scratch_url.into(), max_connections: POOL_SIZE };
                Ok(Scratch { database, dir, cleanup: Cleanup::PgDatabase { admin: Box::new(admin), name } })
            }
        }
    }

    /// Removes the directory and, on PostgreSQL, drops the scratch database.
    pub(crate) async fn remove(self) -> anyhow::Result<()> {
        std::fs::remove_dir_all(&self.dir).with_context(|| format!("removing {}", self.dir.display()))?;
        match self.cleanup {
            Cleanup::None => Ok(()),
            Cleanup::PgDatabase { admin, name } => {
                let mut conn = PgConnection::connect_with(&admin).await.context("connecting to PostgreSQL")?;
                sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")))
                    .execute(&mut conn)
                    .await
                    .with_context(|| format!("dropping the scratch database {name}"))?;
                conn.close().await?;
                Ok(())
            }
        }
    }
}

/// Parses `--database-url` and refuses servers that are not on this machine.
fn loopback_server(url: &str) -> anyhow::Result<PgConnectOptions> {
    let options = PgConnectOptions::from_str(url)
        .map_err(|err| anyhow::Error::new(ConfigError(format!("invalid --database-url: {err}"))))?;
    let host = options.get_host();
    let loopback = host.starts_with('/') // Unix socket
        || host.eq_ignore_ascii_case("localhost")
        || host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        bail!(ConfigError(format!(
            "--database-url must point at a PostgreSQL server on this machine (loopback or Unix socket), not {host}: \
             the benchmark creates and drops a scratch database and loads the server"
        )));
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{loopback_server, percentile};

    #[test]
    fn only_loopback_servers_are_accepted() {
        for url in
            ["postgres://postgres@127.0.0.1:5432/postgres", "postgres://u@localhost/db", "postgres://u@[::1]:5432/db"]
        {
            assert!(loopback_server(url).is_ok(), "{url}");
        }
        for url in ["postgres://u@db.example.com/db", "postgres://u@10.0.0.5/db", "mysql://x"] {
            assert!(loopback_server(url).is_err(), "{url}");
        }
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let values: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&values, 0.50), Duration::from_millis(50));
        assert_eq!(percentile(&values, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&[], 0.99), Duration::ZERO);
    }
}
