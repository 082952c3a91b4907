//! The real MCP reference servers from npm (`test-peers/`), started as this crate would start them.
//!
//! They are installed by `scripts/install-test-peers.sh`; when they are missing every test that needs them
//! fails with that instruction instead of passing silently.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use cortex_mcp::{ServerConfig, Transport};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// `<repo>/test-peers/node_modules/@modelcontextprotocol/<package>/dist/index.js`, or a failed test.
fn server_script(package: &str) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let script = repo.join("test-peers/node_modules/@modelcontextprotocol").join(package).join("dist/index.js");
    assert!(
        script.is_file(),
        "MCP test peer `@modelcontextprotocol/{package}` is not installed ({} is missing); run scripts/install-test-peers.sh",
        script.display()
    );
    script.canonicalize().unwrap()
}

fn stdio_config(slug: &str, args: Vec<String>, env: BTreeMap<String, String>) -> ServerConfig {
    ServerConfig::new(uuid::Uuid::now_v7(), slug, Transport::Stdio { command: "node".into(), args, env })
}

/// `server-everything` over stdio.
pub fn everything(slug: &str) -> ServerConfig {
    everything_with_env(slug, BTreeMap::new())
}

/// `server-everything` over stdio with extra environment variables.
pub fn everything_with_env(slug: &str, env: BTreeMap<String, String>) -> ServerConfig {
    let script = server_script("server-everything");
    stdio_config(slug, vec![script.display().to_string(), "stdio".into()], env)
}

/// `server-filesystem` over stdio, allowed to access `root` only.
pub fn filesystem(slug: &str, root: &Path) -> ServerConfig {
    let script = server_script("server-filesystem");
    stdio_config(slug, vec![script.display().to_string(), root.display().to_string()], BTreeMap::new())
}

/// A stdio server that writes one line to stderr and exits with status 3 before saying anything.
pub fn exits_immediately(slug: &str) -> ServerConfig {
    ServerConfig::new(
        uuid::Uuid::now_v7(),
        slug,
        Transport::Stdio {
            command: "sh".into(),
            args: vec!["-c".into(), "echo 'fatal: missing API key' >&2; exit 3".into()],
            env: BTreeMap::new(),
        },
    )
}

/// `server-everything streamableHttp` on a free loopback port; killed when dropped.
pub struct EverythingHttp {
    pub url: String,
    _child: Child,
}

impl EverythingHttp {
    pub async fn start() -> Self {
        let script = server_script("server-everything");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut child = Command::new("node")
            .arg(script)
            .arg("streamableHttp")
            .env("PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start node");
        // The server logs "listening on port N" to stderr once it accepts connections.
        let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        let listening = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = stderr.next_line().await.unwrap() {
                if line.contains("listening on port") {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(listening, Ok(true), "server-everything streamableHttp did not start listening");
        tokio::spawn(async move { while let Ok(Some(_)) = stderr.next_line().await {} });
        // Bounded check that the port really accepts connections now.
        let mut attempts = 0;
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            attempts += 1;
            assert!(attempts < 50, "server-everything does not accept connections on port {port}");
            tokio::task::yield_now().await;
        }
        Self { url: format!("http://127.0.0.1:{port}/mcp"), _child: child }
    }

    pub fn config(&self, slug: &str) -> ServerConfig {
        ServerConfig::new(
            uuid::Uuid::now_v7(),
            slug,
            Transport::Http { url: self.url.clone(), headers: BTreeMap::new() },
        )
    }
}
