//! `cortex bench startup`: how fast a real `cortex serve` process becomes ready and how much memory it
//! holds when idle (issue 17 targets: spawn to ready < 50 ms, idle RSS < 20 MB).
//!
//! Each round spawns this very binary as `cortex serve --listen 127.0.0.1:0` on a fresh data directory
//! (SQLite) or on the scratch database (PostgreSQL, migrated by the first round; the rounds share one data
//! directory, whose master key the database was first opened with), times spawn →
//! first `GET /readyz` 200, waits `--idle-ms`, reads the process's resident set from
//! `/proc/<pid>/status`, and stops it with SIGTERM. [`ServeProcess`] is that process, shared with the
//! other scenarios that measure a real server.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use cortex_store::DatabaseConfig;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::sync::oneshot;

use super::{Report, Scratch, ScratchArgs, millis};

/// How long a round may take to become ready before the benchmark gives up.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Allocator settings passed on to the server when set, so their effect can be measured: jemalloc's
/// options (`MALLOC_CONF`, e.g. `dirty_decay_ms:1000`) and glibc's tunables.
const ALLOCATOR_SETTINGS: [&str; 2] = ["MALLOC_CONF", "GLIBC_TUNABLES"];
/// Pause between two `/readyz` probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(1);

/// Options of `cortex bench startup`.
#[derive(Debug, Args)]
pub struct StartupArgs {
    #[command(flatten)]
    pub scratch: ScratchArgs,
    /// Process starts measured (min/median/max are reported).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: u32,
    /// Milliseconds a ready process is left idle before its RSS is read.
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub idle_ms: u64,
}

/// One started process.
struct Round {
    ready: Duration,
    idle_rss_kib: u64,
}

/// Starts `cortex serve` `--rounds` times and reports readiness times and idle RSS.
pub(crate) async fn measure(scratch: &Scratch, args: &StartupArgs) -> anyhow::Result<Report> {
    let mut rounds = Vec::new();
    for round in 0..args.rounds {
        let name = match scratch.database {
            DatabaseConfig::Sqlite { .. } => format!("startup-{round}"),
            DatabaseConfig::Postgres { .. } => "startup".to_owned(),
        };
        let server = ServeProcess::start(scratch, &name, &[]).await.with_context(|| format!("round {round}"))?;
        tokio::time::sleep(Duration::from_millis(args.idle_ms)).await;
        let rss = rss_kib(server.pid());
        let ready = server.ready;
        let log = server.stop()?;
        let idle_rss_kib = rss.with_context(|| format!("round {round}; its log:\n{log}"))?;
        rounds.push(Round { ready, idle_rss_kib });
    }
    let mut ready: Vec<Duration> = rounds.iter().map(|r| r.ready).collect();
    ready.sort();
    let mut rss: Vec<u64> = rounds.iter().map(|r| r.idle_rss_kib).collect();
    rss.sort_unstable();
    let mut report = Report::new(
        "startup",
        scratch.engine_name(),
        format!(
            "{} starts of `cortex serve` on an empty data directory, RSS after {} ms idle",
            args.rounds, args.idle_ms
        ),
    );
    let median = ready.len() / 2;
    report.figure("ready_min_ms", "spawn → /readyz 200, min", millis(ready[0]), "ms");
    report.figure("ready_median_ms", "spawn → /readyz 200, median", millis(ready[median]), "ms");
    report.figure("ready_max_ms", "spawn → /readyz 200, max", millis(ready[ready.len() - 1]), "ms");
    report.figure("idle_rss_median_mib", "idle RSS, median", mib(rss[median]), "MiB");
    report.figure("idle_rss_max_mib", "idle RSS, max", mib(rss[rss.len() - 1]), "MiB");
    Ok(report)
}

/// A `cortex serve` child (this very binary) on the scratch store, stopped with SIGTERM (then SIGKILL)
/// whatever happens.
pub(crate) struct ServeProcess {
    process: CortexChild,
    /// `http://127.0.0.1:<port>`.
    pub(crate) base: String,
    /// Spawn → first `/readyz` 200.
    pub(crate) ready: Duration,
}

impl ServeProcess {
    /// Spawns `cortex serve --listen 127.0.0.1:0` with the data directory `<scratch>/<name>` and the extra
    /// environment `env`, and waits until `/readyz` answers 200.
    pub(crate) async fn start(scratch: &Scratch, name: &str, env: &[(&str, &str)]) -> anyhow::Result<ServeProcess> {
        let started = Instant::now();
        let mut process = CortexChild::spawn(scratch, name, &["serve", "--listen", "127.0.0.1:0"], env)?;
        match wait_ready(&mut process, started).await {
            Ok(base) => Ok(ServeProcess { process, base, ready: started.elapsed() }),
            Err(err) => {
                let log = process.stop().unwrap_or_default();
                Err(err.context(format!("its log:\n{log}")))
            }
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Stops the process (SIGTERM, then waits) and returns what it logged.
    pub(crate) fn stop(self) -> anyhow::Result<String> {
        self.process.stop()
    }
}

/// This very binary run as `cortex <args>` on the scratch store, stopped with SIGTERM (then SIGKILL on
/// drop) whatever happens: data directory `<scratch>/<name>`, log (stderr) in `<scratch>/<name>.log`,
/// only `PATH`, the allocator settings and the given variables in its environment.
pub(crate) struct CortexChild {
    child: Child,
    log_path: PathBuf,
}

impl CortexChild {
    /// Spawns `cortex <args>` with the extra environment `env`.
    pub(crate) fn spawn(
        scratch: &Scratch,
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<CortexChild> {
        let binary = std::env::current_exe().context("locating the cortex binary")?;
        let data_dir = scratch.dir.join(name);
        std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
        let log_path = scratch.dir.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let mut command = Command::new(&binary);
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("CORTEX_DATA_DIR", &data_dir)
            .env("CORTEX_LOG", "warn")
            .envs(ALLOCATOR_SETTINGS.iter().filter_map(|name| Some((*name, std::env::var_os(name)?))))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        if let DatabaseConfig::Postgres { url, .. } = &scratch.database {
            command.env("CORTEX_DATABASE_URL", url);
        }
        let child = command.spawn().with_context(|| format!("spawning cortex {}", args.join(" ")))?;
        Ok(CortexChild { child, log_path })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reads the child's stdout on a thread until it exits; the receiver gets the rest of the first line
    /// starting with `prefix` (or an error if the child exits without printing one). Once per child.
    pub(crate) fn watch_stdout(&mut self, prefix: &'static str) -> anyhow::Result<oneshot::Receiver<String>> {
        let stdout = self.child.stdout.take().context("the child's stdout is already watched")?;
        let (line_tx, line_rx) = oneshot::channel();
        std::thread::spawn(move || {
            let mut line_tx = Some(line_tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix(prefix)
                    && let Some(tx) = line_tx.take()
                {
                    let _ = tx.send(rest.to_owned());
                }
            }
        });
        Ok(line_rx)
    }

    /// What the process has logged so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Stops the process (SIGTERM, then waits) and returns what it logged.
    pub(crate) fn stop(mut self) -> anyhow::Result<String> {
        if self.child.try_wait()?.is_none() {
            let pid = Pid::from_raw(i32::try_from(self.child.id())?);
            let _ = kill(pid, Signal::SIGTERM);
            self.child.wait().context("waiting for the cortex process to exit")?;
        }
        Ok(self.log())
    }
}

impl Drop for CortexChild {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits for the listening line and then for `/readyz` 200; returns the base URL.
async fn wait_ready(process: &mut CortexChild, started: Instant) -> anyhow::Result<String> {
    // The listening line is the last line `serve` prints.
    let address_rx = process.watch_stdout("Cortex Plane listening on ")?;
    let base = tokio::time::timeout(READY_TIMEOUT, address_rx)
        .await
        .context("cortex serve printed no listening line in time")?
        .context("cortex serve exited before listening")?
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    let readyz = format!("{base}/readyz");
    let http = reqwest::Client::new();
    loop {
        if started.elapsed() > READY_TIMEOUT {
            bail!("{readyz} did not answer 200 within {READY_TIMEOUT:?}");
        }
        if let Ok(response) = http.get(&readyz).send().await
            && response.status() == 200
        {
            return Ok(base);
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}

/// Resident set size of a process in KiB (`VmRSS` in `/proc/<pid>/status`).
pub(crate) fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("reading /proc/<pid>/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS line in /proc/<pid>/status")
}

pub(crate) fn mib(kib: u64) -> f64 {
    (kib as f64 / 1024.0 * 10.0).round() / 10.0
}
