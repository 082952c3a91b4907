//! Runs `cortex` as a child process and talks to it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A blocking HTTP client (the TLS provider must be installed once per process).
pub fn http() -> reqwest::blocking::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::blocking::Client::new()
}

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cortex"))
}

/// A command with a clean environment (no inherited CORTEX_* settings).
pub fn cortex(data_dir: &Path) -> Command {
    let mut command = Command::new(binary());
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CORTEX_DATA_DIR", data_dir)
        .env("CORTEX_LOG", "warn");
    command
}

pub struct Server {
    pub child: Child,
    pub url: String,
    /// The bootstrap key, when this start generated one.
    pub generated_key: Option<String>,
    /// Time from spawn until the listening line.
    pub ready_after: Duration,
    /// Keeps the stdout reader thread's channel open for the life of the process.
    _stdout: mpsc::Receiver<String>,
}

impl Server {
    /// Starts `cortex serve` on a free loopback port and waits for its "listening" line.
    pub fn start(data_dir: &Path, envs: &[(&str, &str)]) -> Server {
        Self::start_with_stderr(data_dir, envs, Stdio::inherit())
    }

    /// [`Server::start`] with the server's logs (stderr) written to `log`.
    pub fn start_logging_to(data_dir: &Path, envs: &[(&str, &str)], log: &Path) -> Server {
        let file = std::fs::File::create(log).expect("create the log file");
        Self::start_with_stderr(data_dir, envs, Stdio::from(file))
    }

    fn start_with_stderr(data_dir: &Path, envs: &[(&str, &str)], stderr: Stdio) -> Server {
        let mut command = cortex(data_dir);
        command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let started = Instant::now();
        let mut child = command.spawn().expect("spawn cortex serve");
        let stdout = child.stdout.take().expect("stdout");
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mut url = None;
        let mut generated_key = None;
        let mut ready_after = Duration::ZERO;
        // The key line (first start only) comes before the listening line, which comes last.
        while let Ok(line) = receiver.recv_timeout(Duration::from_secs(60)) {
            if let Some(key) = line.split("store it now): ").nth(1) {
                generated_key = Some(key.trim().to_owned());
            } else if let Some(rest) = line.strip_prefix("Cortex Plane listening on ") {
                url = rest.split_whitespace().next().map(str::to_owned);
                ready_after = started.elapsed();
                break;
            }
        }
        let url = url.expect("server never reported its address");
        Server { child, url, generated_key, ready_after, _stdout: receiver }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
        self.child.wait().expect("wait")
    }

    /// SIGKILL: the process dies without any chance to clean up (a crash).
    pub fn kill(self) {
        drop(self);
    }
}

impl Drop for Server {
    /// A test that fails half-way must not leave a server running.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs a client command against `server_url` with `key`.
pub fn client(data_dir: &Path, server_url: &str, key: &str, args: &[&str]) -> Output {
    cortex(data_dir).args(args).env("CORTEX_URL", server_url).env("CORTEX_API_KEY", key).output().expect("run cortex")
}
