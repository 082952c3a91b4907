//! End to end through the real binary: chat streaming against a fake model server, approvals from the
//! CLI, rejections, and crash recovery (SIGKILL mid-turn, mid model call or while waiting for a human) on
//! SQLite and on PostgreSQL with two processes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cortex_testkit::fake_llm::{FakeLlm, Reply, When};
use serde_json::{Value, json};

use crate::process::{Server, client, http};

pub(crate) const KEY: &str = "ctx_TestKey1_k3J9xQ2mV8pL5rT1wZ7nB4cF6hD0gY2sQ8wE";

/// A loopback endpoint that counts how often a webhook tool really ran.
pub(crate) async fn counter() -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let seen = hits.clone();
    let app = axum::Router::new().route(
        "/hit",
        axum::routing::post(move || {
            let seen = seen.clone();
            async move {
                seen.fetch_add(1, Ordering::SeqCst);
                axum::Json(json!({"ok": true}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hit", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, hits)
}

pub(crate) fn env(llm: &FakeLlm) -> Vec<(&'static str, String)> {
    vec![
        ("CORTEX_API_KEY", KEY.to_owned()),
        ("OPENAI_BASE_URL", llm.openai_base_url()),
        ("OPENAI_API_KEY", "sk-test".to_owned()),
        ("CORTEX_SSRF_ALLOW", "127.0.0.1/32".to_owned()),
        ("CORTEX_MASTER_KEY", "the same passphrase for every process".to_owned()),
    ]
}

pub(crate) fn start(dir: &std::path::Path, env: &[(&'static str, String)]) -> Server {
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Server::start(dir, &pairs)
}

pub(crate) async fn api(method: reqwest::Method, url: String, body: Option<Value>) -> Value {
    let client = tokio::task::spawn_blocking(http).await.unwrap();
    let request = client.request(method, &url).bearer_auth(KEY);
    let request = match body {
        Some(body) => request.json(&body),
        None => request,
    };
    tokio::task::spawn_blocking(move || {
        let response = request.send().unwrap();
        let status = response.status();
        let value: Value = response.json().unwrap_or(Value::Null);
        assert!(status.is_success(), "{url}: {status} {value}");
        value
    })
    .await
    .unwrap()
}

/// An agent using a webhook tool `counter` under the policy's `approval` (`never`, `always`), declared
/// `idempotent` or not.
pub(crate) async fn agent_with_counter(base: &str, counter_url: &str, approval: &str, idempotent: bool) -> String {
    api(
        reqwest::Method::POST,
        format!("{base}/webhook-tools"),
        Some(json!({"name": "counter", "description": "Counts calls", "url": counter_url,
                    "input_schema": {"type": "object"}, "idempotent": idempotent})),
    )
    .await;
    let agent = api(
        reqwest::Method::POST,
        format!("{base}/agents"),
        Some(json!({"name": "Worker", "model_config": {"provider": "openai", "model": "gpt-4o-mini"}, "tools": ["webhook:counter"]})),
    )
    .await;
    let id = agent["id"].as_str().unwrap().to_owned();
    api(
        reqwest::Method::PUT,
        format!("{base}/agents/{id}/tools/webhook:counter"),
        Some(json!({"enabled": true, "approval": approval, "risk": "p2"})),
    )
    .await;
    id
}

/// Polls a job until `check` accepts it; a bounded wait for another process, not a synchronisation sleep.
pub(crate) async fn wait_job(base: &str, job_id: &str, check: impl Fn(&Value) -> bool) -> Value {
    // Generous: a busy CI machine may take minutes; a timeout still fails the test.
    for _ in 0..3000 {
        let job = api(reqwest::Method::GET, format!("{base}/jobs/{job_id}"), None).await;
        if check(&job) {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("job {job_id} never reached the expected state");
}

/// Waits until `path` exists and contains `needle`.
async fn wait_for_file_text(path: &std::path::Path, needle: &str) {
    for _ in 0..3000 {
        if std::fs::read_to_string(path).is_ok_and(|text| text.contains(needle)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{} never contained {needle}", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cortex_chat_streams_the_reply() {
    let llm = FakeLlm::start().await;
    llm.rule(
        When::Always,
        Reply::text("Hello from the fake model, streamed in small pieces.").chunk_chars(5).usage(20, 11),
    );
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &env(&llm));
    api(
        reqwest::Method::POST,
        format!("{}/agents", server.url),
        Some(json!({"name": "Greeter", "model_config": {"provider": "openai", "model": "gpt-4o-mini"}})),
    )
    .await;
    let (url, dir_path) = (server.url.clone(), dir.path().to_path_buf());
    let output = tokio::task::spawn_blocking(move || client(&dir_path, &url, KEY, &["chat", "greeter", "Say hello"]))
        .await
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "Hello from the fake model, streamed in small pieces.");
    let request = &llm.requests()[0];
    assert!(request.stream(), "the runtime streams");
    assert_eq!(request.user_texts(), ["Say hello"]);
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_tool_call_runs_exactly_once() {
    let llm = FakeLlm::start().await;
    llm.push(Reply::tool_call("webhook__counter", json!({})));
    llm.rule(When::LastIsToolResult, Reply::text("counted"));
    let (counter_url, hits) = counter().await;
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &env(&llm));
    agent_with_counter(&server.url, &counter_url, "always", false).await;

    let (url, dir_path) = (server.url.clone(), dir.path().to_path_buf());
    let waiting = tokio::task::spawn_blocking(move || client(&dir_path, &url, KEY, &["chat", "worker", "count once"]))
        .await
        .unwrap();
    assert_eq!(waiting.status.code(), Some(3), "{}", String::from_utf8_lossy(&waiting.stderr));
    let stderr = String::from_utf8_lossy(&waiting.stderr).to_string();
    let approval_id =
        stderr.split("waiting for approval ").nth(1).unwrap().split_whitespace().next().unwrap().to_owned();
    assert_eq!(hits.load(Ordering::SeqCst), 0, "nothing runs before the decision");

    let (url, dir_path, id) = (server.url.clone(), dir.path().to_path_buf(), approval_id.clone());
    let approved = tokio::task::spawn_blocking(move || client(&dir_path, &url, KEY, &["approvals", "approve", &id]))
        .await
        .unwrap();
    assert!(approved.status.success(), "{}", String::from_utf8_lossy(&approved.stderr));
    let approval = api(reqwest::Method::GET, format!("{}/approvals/{approval_id}", server.url), None).await;
    let job = wait_job(&server.url, approval["job_id"].as_str().unwrap(), |job| job["status"] == "completed").await;
    assert_eq!(job["result"]["response"], "counted");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    let approval = api(reqwest::Method::GET, format!("{}/approvals/{approval_id}", server.url), None).await;
    assert!(approval["executed_at"].is_string());
    assert_eq!(approval["chain_valid"], true);
    server.kill();
}

/// A turn waiting for approval survives a SIGKILL; after the restart a rejection is final: the call never
/// runs, the model is told it was refused and the turn completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_call_never_runs_even_across_a_crash_while_waiting() {
    let llm = FakeLlm::start().await;
    llm.rule(When::LastIsToolResult, Reply::text("understood, not counted"));
    llm.push(Reply::tool_call("webhook__counter", json!({})));
    let (counter_url, hits) = counter().await;
    let dir = tempfile::tempdir().unwrap();
    let env = env(&llm);
    let server = start(dir.path(), &env);
    let agent = agent_with_counter(&server.url, &counter_url, "always", false).await;
    let reply = api(
        reqwest::Method::POST,
        format!("{}/agents/{agent}/chat?wait=true", server.url),
        Some(json!({"text": "count this"})),
    )
    .await;
    assert_eq!(reply["status"], "waiting_for_approval", "{reply}");
    let (job_id, approval_id) = (reply["job_id"].as_str().unwrap(), reply["approval_id"].as_str().unwrap());
    server.kill();

    let restarted = start(dir.path(), &env);
    let job = api(reqwest::Method::GET, format!("{}/jobs/{job_id}", restarted.url), None).await;
    assert_eq!(job["status"], "waiting_for_approval", "the wait survived the crash: {job}");
    let decided = api(
        reqwest::Method::POST,
        format!("{}/approvals/{approval_id}/decide", restarted.url),
        Some(json!({"decision": "reject", "reason": "not today"})),
    )
    .await;
    assert_eq!(decided["status"], "rejected");
    let job = wait_job(&restarted.url, job_id, |job| job["status"] == "completed").await;
    assert_eq!(job["result"]["response"], "understood, not counted");
    assert_eq!(hits.load(Ordering::SeqCst), 0, "a rejected call never runs");
    let told = llm.requests().last().unwrap().tool_results().join(" ");
    assert!(told.contains("not today") || told.contains("reject"), "the model was told: {told}");
    restarted.kill();
}

/// Kills the process between a completed tool call and the next model call; after a restart the job is
/// recovered, the tool is not run again and the turn completes with one answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_resumes_the_turn_without_repeating_the_tool() {
    let llm = FakeLlm::start().await;
    llm.push(Reply::tool_call("webhook__counter", json!({})));
    llm.push(Reply::hang());
    llm.push(Reply::text("finished after the crash"));
    let (counter_url, hits) = counter().await;
    let dir = tempfile::tempdir().unwrap();
    let env = env(&llm);
    let server = start(dir.path(), &env);
    let agent = agent_with_counter(&server.url, &counter_url, "never", false).await;
    let reply = api(
        reqwest::Method::POST,
        format!("{}/agents/{agent}/chat", server.url),
        Some(json!({"text": "count, then answer"})),
    )
    .await;
    let job_id = reply["job_id"].as_str().unwrap().to_owned();

    llm.wait_for_requests(2).await;
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // The buffer is written by a background task that may lag the loop; the crash under test comes
    // once the first attempt's tool result is on disk.
    wait_for_file_text(&dir.path().join(format!("sessions/{job_id}/session-001.jsonl")), "TOOL_RESULT").await;
    // Buffers hold whole conversations: owner-only, like the database and the master key.
    use std::os::unix::fs::PermissionsExt;
    let buffer_dir = dir.path().join(format!("sessions/{job_id}"));
    for entry in std::fs::read_dir(&buffer_dir).unwrap() {
        let mode = entry.unwrap().metadata().unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "session buffer file mode {mode:o}");
    }
    let mode = std::fs::metadata(&buffer_dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "session buffer directory mode {mode:o}");
    server.kill();

    let restarted = start(dir.path(), &env);
    let job = wait_job(&restarted.url, &job_id, |job| job["status"] == "completed").await;
    assert_eq!(job["result"]["response"], "finished after the crash");
    assert_eq!(job["attempt"], 2, "recovered by a second attempt");
    assert_eq!(hits.load(Ordering::SeqCst), 1, "the completed tool call was not repeated");
    let session = job["session_id"].as_str().unwrap();
    let messages = api(reqwest::Method::GET, format!("{}/sessions/{session}/messages", restarted.url), None).await;
    let roles: Vec<&str> = messages["items"].as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant"], "one question, one answer");
    assert!(
        llm.requests()[2].tool_results().iter().any(|result| result.contains("ok")),
        "the stored result was fed back"
    );

    let buffer =
        api(reqwest::Method::GET, format!("{}/jobs/{job_id}/transcript?source=buffer", restarted.url), None).await;
    let records = buffer["report"]["records"].as_array().unwrap();
    assert!(records.iter().any(|r| r["type"] == "TOOL_RESULT"), "the first attempt's buffer survived the crash");
    assert!(records.iter().any(|r| r["type"] == "SESSION_END"), "the second attempt finished its buffer");
    assert_eq!(buffer["report"]["errors"].as_array().unwrap().len(), 0, "{buffer}");
    let events = api(reqwest::Method::GET, format!("{}/jobs/{job_id}/transcript", restarted.url), None).await;
    let types: Vec<&str> =
        events["items"].as_array().unwrap().iter().map(|e| e["event_type"].as_str().unwrap_or_default()).collect();
    assert!(types.contains(&"tool.result") && types.contains(&"job.completed"), "{types:?}");
    restarted.kill();
}

/// SIGKILL while a model call is in flight: after the restart the reaped attempt gives its reservation
/// back, so the retried turn and later turns fit a day limit that holds one call's worst case only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_killed_mid_flight_leaves_nothing_reserved() {
    let llm = FakeLlm::start().await;
    llm.push(Reply::hang());
    llm.rule(When::Always, Reply::text("answered after the crash").usage(100, 20));
    let dir = tempfile::tempdir().unwrap();
    let env = env(&llm);
    let server = start(dir.path(), &env);
    let agent = api(
        reqwest::Method::POST,
        format!("{}/agents", server.url),
        Some(json!({"name": "Thinker", "model_config": {"provider": "openai", "model": "gpt-4o-mini", "max_tokens": 8000},
                    "resource_limits": {"token_budget_per_day": 12000}})),
    )
    .await;
    let agent = agent["id"].as_str().unwrap().to_owned();
    let reply =
        api(reqwest::Method::POST, format!("{}/agents/{agent}/chat", server.url), Some(json!({"text": "think hard"})))
            .await;
    let job_id = reply["job_id"].as_str().unwrap().to_owned();
    llm.wait_for_requests(1).await;
    let usage = api(reqwest::Method::GET, format!("{}/agents/{agent}/usage", server.url), None).await;
    let reserved = usage["today"]["tokens_reserved"].as_i64().unwrap();
    assert!(reserved > 6000, "the call in flight holds most of the day: {usage}");
    server.kill();

    let restarted = start(dir.path(), &env);
    let job = wait_job(&restarted.url, &job_id, |job| job["status"] == "completed").await;
    assert_eq!(job["result"]["response"], "answered after the crash", "{job}");
    let later = api(
        reqwest::Method::POST,
        format!("{}/agents/{agent}/chat?wait=true", restarted.url),
        Some(json!({"text": "and once more"})),
    )
    .await;
    assert_eq!(later["status"], "completed", "a later turn is not refused: {later}");
    let usage = api(reqwest::Method::GET, format!("{}/agents/{agent}/usage", restarted.url), None).await;
    assert_eq!(usage["today"]["tokens_reserved"], 0, "{usage}");
    assert_eq!(usage["today"]["tokens_spent"], 240, "two answered calls, the killed one uncharged: {usage}");
    restarted.kill();
}

/// PostgreSQL: two processes share the database; the one running the job dies and the other takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_takes_over_a_dead_one_on_postgres() {
    if cortex_testkit::skip_postgres() {
        eprintln!("skipped: CORTEX_TEST_SKIP_PG=1");
        return;
    }
    let database = cortex_testkit::TestStore::new(cortex_testkit::Engine::Postgres).await;
    let cortex_store::DatabaseConfig::Postgres { url, .. } = database.config.clone() else { unreachable!() };
    let llm = FakeLlm::start().await;
    llm.push(Reply::tool_call("webhook__counter", json!({})));
    llm.push(Reply::hang());
    llm.push(Reply::text("finished by the survivor"));
    let (counter_url, hits) = counter().await;
    let mut env = env(&llm);
    env.push(("CORTEX_DATABASE_URL", url));
    env.push(("CORTEX_WORKER_HEARTBEAT_SECONDS", "1".into()));
    env.push(("CORTEX_WORKER_DEAD_AFTER_SECONDS", "3".into()));
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = start(dir_a.path(), &env);
    let agent = agent_with_counter(&first.url, &counter_url, "never", false).await;
    let reply = api(
        reqwest::Method::POST,
        format!("{}/agents/{agent}/chat", first.url),
        Some(json!({"text": "count, then answer"})),
    )
    .await;
    let job_id = reply["job_id"].as_str().unwrap().to_owned();
    llm.wait_for_requests(2).await;

    let second = start(dir_b.path(), &env);
    first.kill();
    let job = wait_job(&second.url, &job_id, |job| job["status"] == "completed").await;
    assert_eq!(job["result"]["response"], "finished by the survivor");
    assert_eq!(hits.load(Ordering::SeqCst), 1, "the completed tool call was not repeated");
    second.kill();
}

/// An agent calls a tool of the real `server-everything` MCP server (npm), registered through the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_calls_a_tool_of_a_real_mcp_server() {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../test-peers/node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    assert!(script.is_file(), "run scripts/install-test-peers.sh (missing {})", script.display());
    let llm = FakeLlm::start().await;
    llm.push(Reply::tool_call("mcp__everything__echo", json!({"message": "ping through mcp"})));
    llm.rule(When::LastIsToolResult, Reply::text("the server answered"));
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &env(&llm));

    let registered = api(
        reqwest::Method::POST,
        format!("{}/mcp-servers", server.url),
        Some(json!({"name": "Everything", "slug": "everything", "transport": "stdio", "command": "node",
                    "args": [script.canonicalize().unwrap().display().to_string(), "stdio"]})),
    )
    .await;
    assert_eq!(registered["status"], "active", "{registered}");
    assert!(registered["tools"].as_array().unwrap().iter().any(|tool| tool["tool_ref"] == "mcp:everything:echo"));

    let agent = api(
        reqwest::Method::POST,
        format!("{}/agents", server.url),
        Some(json!({"name": "Relay", "model_config": {"provider": "openai", "model": "gpt-4o-mini"}, "tools": ["mcp:everything:echo"]})),
    )
    .await;
    let id = agent["id"].as_str().unwrap();
    api(
        reqwest::Method::PUT,
        format!("{}/agents/{id}/tools/mcp:everything:echo", server.url),
        Some(json!({"enabled": true, "approval": "never"})),
    )
    .await;
    let reply = api(
        reqwest::Method::POST,
        format!("{}/agents/{id}/chat?wait=true", server.url),
        Some(json!({"text": "echo something"})),
    )
    .await;
    assert_eq!(reply["status"], "completed", "{reply}");
    assert_eq!(reply["response"], "the server answered");
    let offered = llm.requests()[0].tool_names();
    assert_eq!(offered, ["mcp__everything__echo"], "only the enabled tool is offered");
    let results = llm.requests()[1].tool_results();
    assert!(results.iter().any(|result| result.contains("ping through mcp")), "{results:?}");
    server.kill();
}
