//! `cortex`: the one binary (SPEC §2.1). Parses the command line, runs the command, and maps failures
//! to exit codes in one place.

mod bench;
mod bootstrap;
mod channels;
mod cli;
mod client;
mod config;
mod keys;
mod serve;
mod telemetry;
mod users;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::config::{ConfigError, ServeConfig, StoreConfig, WorkerConfig};

/// jemalloc instead of glibc's allocator: after a load spike glibc keeps freed memory in its per-thread
/// arenas and the process stays at its peak, while jemalloc's background threads return unused pages
/// to the system within about a second (settings in `.cargo/config.toml`, figures in
/// docs/PERFORMANCE.md, `cortex bench spike` and `cortex bench soak`). Its `malloc` is unprefixed, so C
/// code linked in (SQLite above all: page caches, parsed statements) allocates from it too, instead of
/// growing glibc arenas, one per SQLite connection thread, that are never given back.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The allocator this binary uses, named in benchmark reports.
pub(crate) const ALLOCATOR: &str = "jemalloc";

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One TLS provider for every HTTP client in the process (STACK §2.3), the OTLP exporter's included.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Before the runtime: the OTLP exporter's blocking HTTP client must not be created inside it.
    let telemetry = match telemetry::init() {
        Ok(telemetry) => telemetry,
        Err(err) => return failure(err),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    // Outside the runtime, after the graceful shutdown, so the last spans are exported too.
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => failure(err),
    }
}

/// Reports a failed command and picks its exit code (2 for configuration errors).
fn failure(err: anyhow::Error) -> ExitCode {
    if let Some(client) = err.downcast_ref::<client::ClientError>() {
        eprintln!("error: {}", client.message);
        return ExitCode::from(client.exit_code);
    }
    eprintln!("error: {err:#}");
    if err.downcast_ref::<ConfigError>().is_some() { ExitCode::from(2) } else { ExitCode::FAILURE }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::serve(ServeConfig::resolve(&args)?).await,
        Command::Worker(args) => serve::worker(WorkerConfig::resolve(&args)?).await,
        Command::Migrate(args) => {
            let file = config::load_file(args.config.as_deref())?;
            let store = serve::open_store(&StoreConfig::resolve(&args, &file)?).await?;
            println!("migrations applied (schema version {})", store.schema_version().await?);
            store.close().await;
            Ok(())
        }
        Command::Keys { store, command } => {
            let file = config::load_file(store.config.as_deref())?;
            keys::run(StoreConfig::resolve(&store, &file)?, command).await
        }
        Command::User { store, command } => {
            let file = config::load_file(store.config.as_deref())?;
            users::run(StoreConfig::resolve(&store, &file)?, command).await
        }
        Command::Agent { client, command } => client::agent::run(&client, command).await,
        Command::Jobs { client, command } => client::jobs::run(&client, command).await,
        Command::Chat { client, agent, text } => client::chat::run(&client, &agent, text).await,
        Command::Approvals { client, command } => client::approvals::run(&client, command).await,
        Command::Credentials { client, command } => client::credentials::run(&client, command).await,
        Command::Providers { client, command } => client::credentials::run_providers(&client, command).await,
        Command::Bench { command } => bench::run(command).await,
    }
}
