//! MCP secrets through the real binary (issue 12): an MCP server that echoes its credentials when it
//! fails — a stdio server printing its `env` value on stderr, an HTTP server quoting the
//! `Authorization` header in its JSON-RPC error — never gets them into the API's answers, the logs
//! (captured from the process, at debug for the MCP modules) or the bytes of the database files. A
//! server that stays down is logged when its state changes, not on every probe.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use serde_json::{Value, json};

use crate::e2e::{KEY, api};
use crate::process::Server;

const ENV_SECRET: &str = "sk-env-secret-4f9c2a71";
const HEADER_SECRET: &str = "sk-header-secret-8b3d5e19";

/// A Streamable HTTP MCP endpoint that refuses every request with a JSON-RPC error quoting the
/// `Authorization` header it received, and remembers what it received.
async fn echoing_server() -> (String, Arc<Mutex<Vec<String>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let seen = received.clone();
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let seen = seen.clone();
            async move {
                let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                seen.lock().unwrap().push(auth.clone());
                let id = serde_json::from_str::<Value>(&body).ok().and_then(|m| m.get("id").cloned());
                axum::Json(json!({"jsonrpc": "2.0", "id": id,
                                  "error": {"code": -32001, "message": format!("credentials `{auth}` are not valid")}}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

/// Waits (bounded) until the log file has `count` lines containing every one of `parts`.
async fn wait_for_log(log: &std::path::Path, parts: &[&str], count: usize) -> String {
    for _ in 0..600 {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.lines().filter(|line| parts.iter().all(|part| line.contains(part))).count() >= count {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the log never had {count} lines with {parts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_a_failing_mcp_server_echoes_reach_no_answer_log_or_database_file() {
    let (url, received) = echoing_server().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let data = dir.path().join("data");
    let env = [
        ("CORTEX_API_KEY", KEY),
        ("CORTEX_MASTER_KEY", "a passphrase for this test only"),
        ("CORTEX_LOG", "info,cortex_mcp=debug,cortex_api::mcp_sync=debug"),
    ];
    let server = Server::start_logging_to(&data, &env, &log);

    let http = api(
        reqwest::Method::POST,
        format!("{}/mcp-servers", server.url),
        Some(json!({"name": "Echo Http", "slug": "echo-http", "transport": "http", "url": url,
                    "headers": {"Authorization": format!("Bearer {HEADER_SECRET}")}, "probe_interval_seconds": 1})),
    )
    .await;
    let stdio = api(
        reqwest::Method::POST,
        format!("{}/mcp-servers", server.url),
        Some(json!({"name": "Echo Stdio", "slug": "echo-stdio", "transport": "stdio", "command": "sh",
                    "args": ["-c", "echo \"auth failed for key $API_KEY\" >&2; exit 1"],
                    "env": {"API_KEY": ENV_SECRET}, "probe_interval_seconds": 1})),
    )
    .await;
    // Two probe rounds after registration: the stdio server was restarted and failed twice more.
    let logs = wait_for_log(&log, &["mcp discovery still failing", "echo-stdio"], 2).await;
    assert!(received.lock().unwrap().iter().any(|auth| auth.contains(HEADER_SECRET)), "the secret was sent");

    let listed = api(reqwest::Method::GET, format!("{}/mcp-servers", server.url), None).await.to_string();
    for answer in [http.to_string(), stdio.to_string(), listed.clone()] {
        assert!(!answer.contains(ENV_SECRET) && !answer.contains(HEADER_SECRET), "{answer}");
    }
    let stored: Value = serde_json::from_str(&listed).unwrap();
    let last_error = |slug: &str| {
        let item = stored["items"].as_array().unwrap().iter().find(|item| item["slug"] == slug).unwrap();
        item["last_error"].as_str().unwrap().to_owned()
    };
    let stdio_error = last_error("echo-stdio");
    assert!(stdio_error.contains("auth failed for key [redacted]"), "the reason stays readable: {stdio_error}");
    assert!(last_error("echo-http").contains("[redacted]"), "{}", last_error("echo-http"));

    server.kill();
    let logs = std::fs::read_to_string(&log).unwrap_or(logs);
    assert!(!logs.contains(ENV_SECRET) && !logs.contains(HEADER_SECRET), "a secret reached the logs");
    assert!(logs.contains("auth failed for key [redacted]"), "stderr lines are logged, redacted");
    assert!(!logs.contains("\"target\":\"rmcp"), "rmcp's own lines are dropped");
    let warned = logs.lines().filter(|l| l.contains("\"WARN\"") && l.contains("mcp discovery failed")).count();
    assert_eq!(warned, 2, "one warning per server when it went down, not one per probe");

    let mut checked = 0;
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().starts_with("cortex.db") {
            let bytes = std::fs::read(&path).unwrap();
            for secret in [ENV_SECRET, HEADER_SECRET] {
                assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "{secret} in {}", path.display());
            }
            checked += 1;
        }
    }
    assert!(checked >= 1, "the database files were checked");
}
