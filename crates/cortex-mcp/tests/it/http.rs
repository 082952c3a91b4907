//! Streamable HTTP: the real `server-everything` and the header-recording fake.

use std::collections::BTreeMap;
use std::time::Duration;

use cortex_mcp::{Connection, McpError, ServerConfig, Transport, discover};
use serde_json::json;

use crate::fake::{self, FakeMcp};
use crate::peers::EverythingHttp;

#[tokio::test]
async fn everything_over_http_discovers_and_calls() {
    let server = EverythingHttp::start().await;
    let config = server.config("everything-http");
    let discovery = discover(&config).await.unwrap();
    assert_eq!(discovery.protocol_version, "2025-06-18");
    assert!(discovery.tools.iter().any(|tool| tool.name == "echo"));

    let connection = Connection::connect(&config).await.unwrap();
    let outcome = connection.call_tool("echo", json!({"message": "over http"}), Duration::from_secs(10)).await.unwrap();
    assert_eq!(outcome.text(), "Echo: over http");
    connection.ping(Duration::from_secs(10)).await.unwrap();
    let error = connection
        .call_tool("trigger-long-running-operation", json!({"duration": 30, "steps": 30}), Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(error, McpError::Timeout { .. }), "{error:?}");
    connection.close().await;
}

fn fake_config(url: &str) -> ServerConfig {
    let headers = BTreeMap::from([
        ("Authorization".to_owned(), "Bearer t0k3n".to_owned()),
        ("X-Api-Key".to_owned(), "key-123".to_owned()),
    ]);
    ServerConfig::new(uuid::Uuid::now_v7(), "fake", Transport::Http { url: url.to_owned(), headers })
}

#[tokio::test]
async fn configured_headers_session_and_protocol_version_reach_the_server() {
    let (fake, url) = FakeMcp::start().await;
    let connection = Connection::connect(&fake_config(&url)).await.unwrap();
    assert_eq!(connection.details().protocol_version, fake::PROTOCOL_VERSION, "older server version accepted");
    let tools = connection.list_tools().await.unwrap();
    let outcome = connection.call_tool("alpha", json!({"x": 1}), Duration::from_secs(10)).await.unwrap();
    assert_eq!(outcome.text(), r#"called "alpha" with {"x":1}"#);
    connection.close().await;

    assert_eq!(
        tools.iter().map(|tool| tool.name.as_str()).collect::<Vec<_>>(),
        ["alpha", "beta"],
        "followed nextCursor"
    );
    assert!(tools[0].is_destructive());

    let requests = fake.requests();
    let methods: Vec<_> = requests.iter().map(|request| request.method.as_str()).collect();
    for expected in ["initialize", "notifications/initialized", "tools/list", "tools/call"] {
        assert!(methods.contains(&expected), "{expected} missing from {methods:?}");
    }
    assert_eq!(methods.iter().filter(|method| **method == "tools/list").count(), 2);
    for request in &requests {
        assert_eq!(request.headers["authorization"], "Bearer t0k3n", "{}", request.method);
        assert_eq!(request.headers["x-api-key"], "key-123", "{}", request.method);
        if request.method != "initialize" {
            assert_eq!(request.headers["mcp-session-id"], fake::SESSION_ID, "{}", request.method);
            assert_eq!(request.headers["mcp-protocol-version"], fake::PROTOCOL_VERSION, "{}", request.method);
        }
    }
    let initialize = &requests[0];
    assert_eq!(initialize.method, "initialize");
    assert!(initialize.headers.get("mcp-session-id").is_none());
}

#[tokio::test]
async fn tools_list_changed_notification_raises_the_flag() {
    let (_fake, url) = FakeMcp::start().await;
    let connection = Connection::connect(&fake_config(&url)).await.unwrap();
    assert!(!connection.tools_changed());
    connection.call_tool("alpha", json!({}), Duration::from_secs(10)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), connection.wait_tools_changed()).await.unwrap();
    assert!(connection.take_tools_changed());
    assert!(!connection.tools_changed());
    connection.close().await;
}

#[tokio::test]
async fn unreachable_http_server_is_a_connect_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = ServerConfig::new(
        uuid::Uuid::now_v7(),
        "down",
        Transport::Http { url: format!("http://127.0.0.1:{port}/mcp"), headers: BTreeMap::new() },
    );
    let error = Connection::connect(&config).await.unwrap_err();
    assert!(matches!(error, McpError::Connect { .. }), "{error:?}");
    assert!(error.to_string().starts_with("mcp server `down`: cannot connect: "), "{error}");
    assert!(!error.request_was_sent());
}
