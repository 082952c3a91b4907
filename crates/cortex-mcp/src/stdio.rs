//! The child process behind a stdio server (SPEC §6.4): spawned with a cleared environment, in its own
//! process group so that wrappers such as `npx` and everything they start are signalled together, with
//! stderr drained into `tracing` (never into the protocol stream) and the last line kept for error
//! messages.
//!
//! Lifecycle: [`spawn`] hands stdin/stdout to the protocol layer and keeps the process here.
//! [`ChildProcess::terminate`] sends SIGTERM to the group and SIGKILL after [`KILL_GRACE`]; dropping a
//! still-running process kills its group at once.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::task::JoinHandle;

use crate::error::McpError;
use crate::redact::Redactor;

/// Time a server gets to exit after SIGTERM before it is killed (SPEC §19).
pub const KILL_GRACE: Duration = Duration::from_secs(5);
/// Variables inherited from our own environment; everything else comes from the server's config.
const INHERITED_ENV: [&str; 4] = ["PATH", "HOME", "LANG", "TMPDIR"];
/// How long a process that closed its stdout gets to report its exit status before initialize fails
/// with a generic error instead.
const EXIT_REPORT_WAIT: Duration = Duration::from_secs(2);
/// Longest stderr line kept for error messages.
const MAX_STDERR_LINE: usize = 500;

/// A started server process and the pipes the protocol runs over.
pub(crate) struct Spawned {
    pub process: ChildProcess,
    pub stdout: ChildStdout,
    pub stdin: ChildStdin,
}

/// Owns the running child. Kept separate from the protocol layer so liveness and shutdown do not depend
/// on rmcp.
pub(crate) struct ChildProcess {
    server: String,
    command: String,
    pid: Option<u32>,
    /// Async because [`Self::terminate`] waits for the exit while holding it; other users only `try_lock`.
    child: tokio::sync::Mutex<Child>,
    last_stderr: Arc<Mutex<Option<String>>>,
    stderr_reader: Mutex<Option<JoinHandle<()>>>,
}

/// Starts `command args…` with only `env` plus PATH, HOME, LANG and TMPDIR from our environment.
pub(crate) fn spawn(
    server: &str,
    command: &str,
    args: &[String],
    env: &BTreeMap<String, String>,
) -> Result<Spawned, McpError> {
    if command.trim().is_empty() {
        return Err(McpError::InvalidConfig { server: server.to_owned(), reason: "empty command".to_owned() });
    }
    let mut cmd = Command::new(command);
    cmd.args(args)
        .env_clear()
        .envs(INHERITED_ENV.iter().filter_map(|name| std::env::var_os(name).map(|value| (*name, value))))
        .envs(env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|source| McpError::Spawn {
        server: server.to_owned(),
        command: command.to_owned(),
        source,
    })?;
    let pipes_missing = || McpError::Spawn {
        server: server.to_owned(),
        command: command.to_owned(),
        source: std::io::Error::other("child pipes were not created"),
    };
    let (Some(stdin), Some(stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(pipes_missing());
    };
    let last_stderr = Arc::new(Mutex::new(None));
    let redactor = Redactor::new(env.values());
    let reader = tokio::spawn(drain_stderr(server.to_owned(), stderr, last_stderr.clone(), redactor));
    tracing::debug!(server, command, pid = child.id(), "started mcp server process");
    Ok(Spawned {
        process: ChildProcess {
            server: server.to_owned(),
            command: command.to_owned(),
            pid: child.id(),
            child: tokio::sync::Mutex::new(child),
            last_stderr,
            stderr_reader: Mutex::new(Some(reader)),
        },
        stdout,
        stdin,
    })
}

/// Logs every stderr line at debug level, prefixed with the server slug, and remembers the last
/// non-empty one; both with the server's secrets redacted.
async fn drain_stderr(server: String, stderr: ChildStderr, last: Arc<Mutex<Option<String>>>, redactor: Redactor) {
    let mut reader = BufReader::new(stderr);
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        match reader.read_until(b'\n', &mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = redactor.apply(&String::from_utf8_lossy(&buffer));
                let line = line.trim_end();
                tracing::debug!(target: "cortex_mcp::stderr", server = %server, "[{server}] {line}");
                if !line.trim().is_empty() {
                    let kept: String = line.chars().take(MAX_STDERR_LINE).collect();
                    *last.lock().unwrap_or_else(PoisonError::into_inner) = Some(kept);
                }
            }
        }
    }
}

impl ChildProcess {
    /// The process id (also the process group id).
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// `true` while the process has not exited. A process being terminated counts as gone.
    pub fn is_running(&self) -> bool {
        match self.child.try_lock() {
            Ok(mut child) => matches!(child.try_wait(), Ok(None)),
            Err(_) => false,
        }
    }

    /// The error to report when the handshake failed because the process went away: waits briefly for
    /// its exit status and its last stderr line. `None` if it is still running.
    pub async fn exit_error(&self) -> Option<McpError> {
        let status = {
            let mut child = self.child.lock().await;
            tokio::time::timeout(EXIT_REPORT_WAIT, child.wait()).await.ok()?.ok()?
        };
        let reader = self.stderr_reader.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(reader) = reader {
            // Stderr reaches EOF when the process exits, unless a grandchild still holds it open.
            let _ = tokio::time::timeout(EXIT_REPORT_WAIT, reader).await;
        }
        Some(McpError::Exited {
            server: self.server.clone(),
            command: self.command.clone(),
            status: describe_status(status),
            last_stderr: self.last_stderr.lock().unwrap_or_else(PoisonError::into_inner).clone(),
        })
    }

    /// SIGTERM to the process group, then SIGKILL if the process is still there after [`KILL_GRACE`].
    pub async fn terminate(&self) {
        let mut child = self.child.lock().await;
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        self.signal_group(Signal::SIGTERM);
        if tokio::time::timeout(KILL_GRACE, child.wait()).await.is_err() {
            tracing::debug!(server = %self.server, "mcp server ignored SIGTERM; killing it");
            self.signal_group(Signal::SIGKILL);
            let _ = child.wait().await;
        }
    }

    fn signal_group(&self, signal: Signal) {
        let Some(pgid) = self.pid.and_then(|pid| i32::try_from(pid).ok()) else {
            return;
        };
        if let Err(error) = killpg(Pid::from_raw(pgid), signal) {
            tracing::debug!(server = %self.server, %error, ?signal, "could not signal mcp server");
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if self.is_running() {
            self.signal_group(Signal::SIGKILL);
        }
        if let Some(reader) = self.stderr_reader.get_mut().unwrap_or_else(PoisonError::into_inner).take() {
            reader.abort();
        }
    }
}

/// `status 1` or `signal 9`.
fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("status {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => status.to_string(),
    }
}
