//! MCP servers over HTTP against real peers: the npm reference server `server-everything` over stdio
//! (installed by `scripts/install-test-peers.sh`) and a tiny in-process Streamable HTTP endpoint that
//! records the headers it receives and can stop answering. The health probe runs on the test's
//! `ManualClock`, so breaker periods pass without sleeping.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use cortex_core::role::Role;
use cortex_testkit::{TestStore, both_engines};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::app::{TestApp, error_code};
use crate::tools::{audited, delete, policies, put, test_cipher};

/// `server-everything`'s entry point, or a failed test saying how to install it.
fn everything_script() -> String {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let script = repo.join("test-peers/node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    assert!(
        script.is_file(),
        "MCP test peer is not installed ({} is missing); run scripts/install-test-peers.sh",
        script.display()
    );
    script.canonicalize().unwrap().display().to_string()
}

async fn register(app: &TestApp, body: Value) -> Value {
    let response = app.post("/mcp-servers", &app.admin, body).await;
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

both_engines!(a_stdio_server_is_discovered_and_its_tools_become_policies, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    let secret = "mcp-env-secret-7c1e";
    let body = json!({
        "name": "Everything",
        "transport": "stdio",
        "command": "node",
        "args": [everything_script(), "stdio"],
        "env": {"CORTEX_TEST_TOKEN": secret},
        "probe_interval_seconds": 60
    });
    let operator = app.key(Role::Operator).await;
    assert_eq!(app.post("/mcp-servers", &operator, body.clone()).await.status(), 403);

    let response = app.post("/mcp-servers", &app.admin, body.clone()).await;
    assert_eq!(response.status(), 201);
    let text = response.text().await.unwrap();
    assert!(!text.contains(secret), "secret in {text}");
    let server: Value = serde_json::from_str(&text).unwrap();
    let id = server["id"].as_str().unwrap().to_owned();
    assert_eq!(server["slug"], "everything");
    assert_eq!(server["status"], "active", "{server}");
    assert_eq!(server["env"], json!(["CORTEX_TEST_TOKEN"]));
    assert_eq!(server["headers"], json!([]));
    assert_eq!(server["probe_interval_seconds"], 60);
    assert!(server["protocol_version"].is_string());
    assert!(server["server_info"]["name"].is_string());
    let echo = server["tools"].as_array().unwrap().iter().find(|tool| tool["name"] == "echo").expect("echo tool");
    assert_eq!(echo["tool_ref"], "mcp:everything:echo");
    assert_eq!(echo["available"], true);
    assert_eq!(echo["input_schema"]["type"], "object");

    let duplicate = app.post("/mcp-servers", &app.admin, body).await;
    assert_eq!(duplicate.status(), 409);
    assert_eq!(error_code(duplicate).await, "conflict");

    // The secret is stored encrypted for this row and reaches the server process.
    let row = app.test.store.get_mcp_server(&id).await.unwrap();
    let sealed = row.env_enc.as_deref().unwrap();
    assert!(sealed.starts_with("v1:") && !sealed.contains(secret), "{sealed}");
    let config = cortex_api::mcp_sync::server_config(&row, &test_cipher()).unwrap();
    let pool = cortex_mcp::Pool::new(app.test.store.clock().clone(), 1, Duration::from_secs(600));
    let env = pool.call(&config, "get-env", json!({})).await.unwrap().text();
    assert!(env.contains(secret), "the configured env reaches the server");
    pool.shutdown().await;

    // Readers see the tools but never the secret.
    let viewer = app.key(Role::Viewer).await;
    for path in [
        format!("/mcp-servers/{id}"),
        "/mcp-servers/everything".to_owned(),
        "/mcp-servers".to_owned(),
        "/tools".to_owned(),
    ] {
        let response = app.get(&path, &viewer).await;
        assert_eq!(response.status(), 200, "{path}");
        let text = response.text().await.unwrap();
        assert!(text.contains("mcp:everything:echo"), "{path}: {text}");
        assert!(!text.contains(secret), "{path} leaks the secret");
    }
    let catalogue: Value = app.get("/tools", &viewer).await.json().await.unwrap();
    let listed = catalogue["items"].as_array().unwrap().iter().find(|item| item["tool_ref"] == "mcp:everything:echo");
    let listed = listed.expect("discovered tools are in the catalogue");
    assert_eq!((listed["kind"].clone(), listed["server"].clone()), (json!("mcp"), json!("everything")));
    assert_eq!((listed["default_risk"].clone(), listed["available"].clone()), (json!("p2"), json!(true)));
    let audit = audited(&app, "mcp_server.create").await;
    assert!(!audit[0].details.to_string().contains(secret));

    // Policies name discovered tools; the colon-separated ref works plain and URL-encoded.
    let agent = app.create_agent("Tool user").await;
    let agent_id = agent["id"].as_str().unwrap();
    let enabled =
        put(&app, &format!("/agents/{agent_id}/tools/mcp:everything:echo"), &operator, json!({"enabled": true})).await;
    assert_eq!(enabled.status(), 200);
    let enabled: Value = enabled.json().await.unwrap();
    assert_eq!(
        (enabled["tool_ref"].clone(), enabled["resolvable"].clone()),
        (json!("mcp:everything:echo"), json!(true))
    );
    let encoded = put(
        &app,
        &format!("/agents/{agent_id}/tools/mcp%3Aeverything%3Aget-sum"),
        &operator,
        json!({"enabled": true, "approval": "never"}),
    )
    .await;
    assert_eq!(encoded.status(), 200);
    assert_eq!(encoded.json::<Value>().await.unwrap()["tool_ref"], "mcp:everything:get-sum");
    let unknown =
        put(&app, &format!("/agents/{agent_id}/tools/mcp:everything:nope"), &operator, json!({"enabled": true})).await;
    assert_eq!(unknown.status(), 422);
    let listed = policies(&app, agent_id).await;
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|policy| policy["resolvable"] == true), "{listed:?}");

    let refreshed = app.post(&format!("/mcp-servers/{id}/refresh"), &app.admin, json!({})).await;
    assert_eq!(refreshed.status(), 200);
    assert_eq!(refreshed.json::<Value>().await.unwrap()["status"], "active");

    assert_eq!(delete(&app, &format!("/mcp-servers/{id}"), &operator).await.status(), 403);
    assert_eq!(delete(&app, &format!("/mcp-servers/{id}"), &app.admin).await.status(), 204);
    assert_eq!(app.get(&format!("/mcp-servers/{id}"), &viewer).await.status(), 404);
    let after = policies(&app, agent_id).await;
    assert!(after.iter().all(|policy| policy["resolvable"] == false), "{after:?}");
    assert!(after[0]["warning"].as_str().unwrap().contains("everything"), "{after:?}");
    let catalogue = app.get("/tools", &viewer).await.text().await.unwrap();
    assert!(!catalogue.contains("mcp:everything:"), "deleted tools leave the catalogue");
});

both_engines!(a_server_that_cannot_start_is_stored_with_the_reason, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    let server = register(
        &app,
        json!({
            "name": "Broken",
            "transport": "stdio",
            "command": "sh",
            "args": ["-c", "echo 'fatal: missing API key' >&2; exit 3"]
        }),
    )
    .await;
    assert_eq!(server["status"], "error");
    let reason = server["last_error"].as_str().unwrap();
    assert!(reason.contains("broken") && reason.contains("exited") && reason.contains("missing API key"), "{reason}");
    assert_eq!(server["tools"], json!([]));

    let missing =
        register(&app, json!({"name": "Missing", "transport": "stdio", "command": "/nonexistent/mcp-server"})).await;
    assert_eq!(missing["status"], "error");
    assert!(missing["last_error"].as_str().unwrap().contains("cannot start command"), "{missing}");

    let refreshed =
        app.post(&format!("/mcp-servers/{}/refresh", server["id"].as_str().unwrap()), &app.admin, json!({})).await;
    assert_eq!(refreshed.status(), 200);
    assert_eq!(refreshed.json::<Value>().await.unwrap()["status"], "error");
    assert_eq!(app.post("/mcp-servers/nothing-here/refresh", &app.admin, json!({})).await.status(), 404);
});

both_engines!(only_admins_vouch_for_a_server, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    let server = register(&app, json!({"name": "Gone", "transport": "stdio", "command": "/nonexistent/mcp"})).await;
    assert_eq!(server["trusted"], false, "untrusted unless an admin says so");
    let path = format!("/mcp-servers/{}", server["slug"].as_str().unwrap());
    let patch = |key: String, body: Value| {
        let request = app.http.patch(app.url(&path)).bearer_auth(key).json(&body);
        async move { request.send().await.unwrap() }
    };
    let operator = app.key(Role::Operator).await;
    assert_eq!(patch(operator, json!({"trusted": true})).await.status(), 403);
    assert_eq!(patch(app.admin.clone(), json!({"trusted": "yes"})).await.status(), 400);
    let trusted = patch(app.admin.clone(), json!({"trusted": true})).await;
    assert_eq!(trusted.status(), 200);
    assert_eq!(trusted.json::<Value>().await.unwrap()["trusted"], true);
    assert_eq!(app.get(&path, &app.admin).await.json::<Value>().await.unwrap()["trusted"], true);
    assert_eq!(audited(&app, "mcp_server.update").await.len(), 1);

    let vouched = register(
        &app,
        json!({"name": "Vouched", "transport": "stdio", "command": "/nonexistent/mcp", "trusted": true}),
    )
    .await;
    assert_eq!(vouched["trusted"], true);
});

both_engines!(registrations_are_validated, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    for (body, field) in [
        (json!({"name": "a", "transport": "stdio"}), "command"),
        (json!({"name": "a", "transport": "http"}), "url"),
        (json!({"name": "a", "transport": "http", "url": "ftp://example.com/mcp"}), "url"),
        (json!({"name": "a", "transport": "http", "url": "not a url"}), "url"),
        (json!({"name": "a", "transport": "http", "url": "http://example.com", "command": "x"}), "command"),
        (json!({"name": "a", "transport": "stdio", "command": "x", "url": "http://example.com"}), "url"),
        (json!({"name": "a", "slug": "Not_A_Slug", "transport": "stdio", "command": "x"}), "slug"),
        (
            json!({"name": "a", "transport": "stdio", "command": "x", "probe_interval_seconds": 0}),
            "probe_interval_seconds",
        ),
        (
            json!({"name": "a", "transport": "stdio", "command": "x", "probe_interval_seconds": 3601}),
            "probe_interval_seconds",
        ),
        (json!({"name": "a", "transport": "stdio", "command": "x", "env": {"1BAD": "v"}}), "env"),
        (
            json!({"name": "a", "transport": "http", "url": "http://example.com", "headers": {"Bad Name": "v"}}),
            "headers",
        ),
        (json!({"name": "", "transport": "stdio", "command": "x"}), "name"),
    ] {
        let response = app.post("/mcp-servers", &app.admin, body.clone()).await;
        assert_eq!(response.status(), 400, "{body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "validation_failed", "{body}");
        assert!(error["error"]["details"]["fields"][field].is_string(), "{body}: {error}");
    }
    for body in [
        json!({"name": "a", "transport": "carrier-pigeon", "command": "x"}),
        json!({"name": "a", "transport": "stdio", "command": "x", "extra": true}),
        json!({"name": "a", "transport": "stdio", "command": "x", "env": {"K": 1}}),
    ] {
        assert_eq!(app.post("/mcp-servers", &app.admin, body.clone()).await.status(), 400, "{body}");
    }
});

// ---------------------------------------------------------------------------------------------------
// A Streamable HTTP MCP endpoint in process

/// Records request headers; answers `initialize`, `tools/list` (with `tools`, by default one `lookup`
/// tool) and `ping`.
#[derive(Clone)]
struct FakeMcp {
    headers: Arc<Mutex<Vec<HeaderMap>>>,
    tools: Arc<Vec<Value>>,
}

/// The one tool the fake offers unless told otherwise.
fn lookup_tool() -> Value {
    json!({
        "name": "lookup",
        "description": "Looks something up",
        "inputSchema": {"type": "object", "properties": {"q": {"type": "string"}}},
        "annotations": {"readOnlyHint": true}
    })
}

async fn handle(State(fake): State<FakeMcp>, headers: HeaderMap, body: String) -> Response {
    fake.headers.lock().unwrap().push(headers);
    let message: Value = serde_json::from_str(&body).unwrap();
    let Some(id) = message.get("id").cloned() else {
        return StatusCode::ACCEPTED.into_response();
    };
    let result = match message["method"].as_str().unwrap_or_default() {
        "initialize" => json!({
            "protocolVersion": "2025-06-18",
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "fake-mcp", "version": "0.1.0"}
        }),
        "tools/list" => json!({"tools": *fake.tools}),
        _ => json!({}),
    };
    ([("mcp-session-id", "fake-session")], axum::Json(json!({"jsonrpc": "2.0", "id": id, "result": result})))
        .into_response()
}

/// The fake, served until stopped; it can be started again on the same address.
pub(crate) struct Running {
    fake: FakeMcp,
    address: std::net::SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn start(address: std::net::SocketAddr) -> Running {
        Self::offering(address, vec![lookup_tool()]).await
    }

    /// Serves a fake offering `tools` (MCP tool declarations).
    pub(crate) async fn offering(address: std::net::SocketAddr, tools: Vec<Value>) -> Running {
        let fake = FakeMcp { headers: Arc::default(), tools: Arc::new(tools) };
        let app = axum::Router::new()
            .route("/mcp", axum::routing::post(handle).delete(|| async { StatusCode::OK }))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind(address).await.unwrap();
        let address = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let shutdown = stop.clone();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await.unwrap();
        });
        Running { fake, address, stop, task }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}/mcp", self.address)
    }

    /// Stops accepting and waits until every connection is closed.
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap();
    }
}

both_engines!(http_headers_reach_the_server_and_are_stored_encrypted, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    let running = Running::start("127.0.0.1:0".parse().unwrap()).await;
    let secret = "Bearer mcp-header-secret-42";
    let response = app
        .post(
            "/mcp-servers",
            &app.admin,
            json!({"name": "Remote", "transport": "http", "url": running.url(), "headers": {"Authorization": secret}}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let text = response.text().await.unwrap();
    assert!(!text.contains("mcp-header-secret-42"), "secret in {text}");
    let server: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(server["status"], "active", "{server}");
    assert_eq!(server["headers"], json!(["Authorization"]));
    assert_eq!(server["env"], json!([]));
    assert_eq!(server["tools"][0]["tool_ref"], "mcp:remote:lookup");
    assert_eq!(server["tools"][0]["annotations"], json!({"readOnlyHint": true}));

    let seen = running.fake.headers.lock().unwrap().clone();
    assert!(!seen.is_empty());
    assert!(seen.iter().all(|headers| headers["authorization"] == secret), "every request carries the header");

    let row = app.test.store.get_mcp_server(server["id"].as_str().unwrap()).await.unwrap();
    let sealed = row.headers_enc.as_deref().unwrap();
    assert!(sealed.starts_with("v1:") && !sealed.contains("mcp-header-secret-42"), "{sealed}");
    assert_eq!(row.header_keys, ["Authorization"]);
    running.stop().await;
});

/// Advances the test clock a second at a time until the stored status is `want`. Before moving time on
/// it waits (boundedly) for the prober to record a probe at the current time, so the prober never falls
/// behind the clock and breaker windows mean what they say; while the breaker is open nothing is
/// recorded, and time moves on after the bound.
async fn wait_for_status(app: &TestApp, id: &str, want: &str) -> Value {
    let waited = tokio::time::timeout(Duration::from_secs(60), async {
        let mut last_update = Value::Null;
        loop {
            app.test.clock.advance(chrono::Duration::seconds(1));
            for _ in 0..50 {
                let server: Value = app.get(&format!("/mcp-servers/{id}"), &app.admin).await.json().await.unwrap();
                if server["status"] == want {
                    return server;
                }
                if server["updated_at"] != last_update {
                    last_update = server["updated_at"].clone();
                    break;
                }
            }
        }
    })
    .await;
    waited.unwrap_or_else(|_| panic!("status never became {want}"))
}

both_engines!(the_probe_loop_follows_the_breaker_down_and_back_up, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    let running = Running::start("127.0.0.1:0".parse().unwrap()).await;
    let address = running.address;
    let server = register(
        &app,
        json!({"name": "Flaky", "transport": "http", "url": running.url(), "probe_interval_seconds": 1}),
    )
    .await;
    assert_eq!(server["status"], "active");
    let id = server["id"].as_str().unwrap().to_owned();

    // The process's prober, with its own pool, on the test clock.
    let stop = CancellationToken::new();
    let pool = Arc::new(cortex_mcp::Pool::new(app.test.store.clock().clone(), 10, Duration::from_secs(600)));
    let prober = tokio::spawn(cortex_api::mcp_sync::probe_loop(
        app.test.store.clone(),
        Arc::new(test_cipher()),
        pool.clone(),
        app.test.store.clock().clone(),
        stop.clone(),
    ));
    let healthy = wait_for_status(&app, &id, "active").await;
    assert!(healthy["last_healthy_at"].is_string());

    running.stop().await;
    let down = wait_for_status(&app, &id, "error").await;
    assert!(down["last_error"].as_str().unwrap().contains("flaky"), "{down}");

    // The breaker stays open for 30 s; then one trial probe, and successes close it again.
    let restarted = Running::start(address).await;
    app.test.clock.advance(chrono::Duration::seconds(30));
    let back = wait_for_status(&app, &id, "active").await;
    assert_eq!(back["tools"][0]["tool_ref"], "mcp:flaky:lookup");
    assert_eq!(back["tools"][0]["available"], true);

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), prober).await.unwrap().unwrap();
    pool.shutdown().await;
    restarted.stop().await;
});
