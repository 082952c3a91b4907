//! A single [`Connection`] to stdio servers: discovery, calls, errors, timeouts and the child's environment.

use std::collections::BTreeMap;
use std::time::Duration;

use cortex_mcp::{Connection, ContentPart, McpError, Operation, ServerConfig, Transport, discover};
use serde_json::json;

use crate::peers;

#[tokio::test]
async fn discovery_lists_the_everything_tools() {
    let discovery = discover(&peers::everything("everything")).await.unwrap();
    assert_eq!(discovery.protocol_version, "2025-06-18");
    assert!(discovery.server_info["name"].as_str().is_some_and(|name| !name.is_empty()), "{:?}", discovery.server_info);
    assert!(discovery.capabilities.get("tools").is_some(), "{:?}", discovery.capabilities);
    let echo = discovery.tools.iter().find(|tool| tool.name == "echo").expect("echo tool listed");
    assert!(!echo.description.is_empty());
    assert_eq!(echo.input_schema["properties"]["message"]["type"], "string");
    assert!(echo.is_idempotent() && !echo.is_destructive());
}

#[tokio::test]
async fn echo_round_trips_text_and_ping_answers() {
    let connection = Connection::connect(&peers::everything("everything")).await.unwrap();
    let outcome =
        connection.call_tool("echo", json!({"message": "héllo, wörld"}), Duration::from_secs(10)).await.unwrap();
    assert!(!outcome.is_error);
    assert_eq!(outcome.text(), "Echo: héllo, wörld");
    connection.ping(Duration::from_secs(10)).await.unwrap();
    let (version, server_info, _) = connection.discovery_info();
    assert_eq!(version, "2025-06-18");
    assert!(server_info.is_object());
    connection.close().await;
}

#[tokio::test]
async fn images_and_json_rpc_errors_are_reported() {
    let connection = Connection::connect(&peers::everything("everything")).await.unwrap();
    let image = connection.call_tool("get-tiny-image", json!({}), Duration::from_secs(10)).await.unwrap();
    assert!(
        image.parts.iter().any(|part| matches!(part, ContentPart::Image { mime_type, .. } if mime_type == "image/png")),
        "{image:?}"
    );
    assert!(image.text().contains("[image image/png, "), "{}", image.text());

    let error = connection.call_tool("echo", json!("not an object"), Duration::from_secs(10)).await.unwrap_err();
    assert!(matches!(error, McpError::InvalidArguments { .. }) && !error.request_was_sent(), "{error}");
    connection.close().await;
}

#[tokio::test]
async fn filesystem_tools_read_real_files_and_report_tool_errors() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("notes.txt"), "first line\nsecond line\n").unwrap();
    std::fs::create_dir(root.path().join("sub")).unwrap();
    let root_path = root.path().canonicalize().unwrap();
    let connection = Connection::connect(&peers::filesystem("files", &root_path)).await.unwrap();
    let tools = connection.list_tools().await.unwrap();
    assert!(tools.iter().any(|tool| tool.name == "read_text_file"));
    let tool = |name: &str| tools.iter().find(|tool| tool.name == name).unwrap();
    assert!(tool("read_text_file").is_idempotent() && !tool("read_text_file").is_destructive());
    assert!(tool("edit_file").is_destructive() && !tool("edit_file").is_idempotent());

    let timeout = Duration::from_secs(10);
    let read =
        connection.call_tool("read_text_file", json!({"path": root_path.join("notes.txt")}), timeout).await.unwrap();
    assert!(!read.is_error);
    assert_eq!(read.text(), "first line\nsecond line\n");

    let listing = connection.call_tool("list_directory", json!({"path": root_path}), timeout).await.unwrap();
    assert!(listing.text().contains("[FILE] notes.txt") && listing.text().contains("[DIR] sub"), "{}", listing.text());

    let written = connection
        .call_tool(
            "write_file",
            json!({"path": root_path.join("sub/new.txt"), "content": "written by cortex"}),
            timeout,
        )
        .await
        .unwrap();
    assert!(!written.is_error, "{written:?}");
    assert_eq!(std::fs::read_to_string(root_path.join("sub/new.txt")).unwrap(), "written by cortex");

    let outside = connection.call_tool("read_text_file", json!({"path": "/etc/hostname"}), timeout).await.unwrap();
    assert!(outside.is_error, "{outside:?}");
    assert!(outside.text().to_lowercase().contains("access denied"), "{}", outside.text());
    connection.close().await;
}

#[tokio::test]
async fn a_slow_tool_times_out_and_the_connection_stays_usable() {
    let connection = Connection::connect(&peers::everything("everything")).await.unwrap();
    let error = connection
        .call_tool("trigger-long-running-operation", json!({"duration": 30, "steps": 30}), Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(
        matches!(error, McpError::Timeout { operation: Operation::CallTool, after, .. } if after == Duration::from_millis(300)),
        "{error:?}"
    );
    assert!(error.request_was_sent());
    assert_eq!(error.to_string(), "mcp server `everything`: did not answer tools/call within 300 ms");
    let echo = connection.call_tool("echo", json!({"message": "still here"}), Duration::from_secs(10)).await.unwrap();
    assert_eq!(echo.text(), "Echo: still here");
    connection.close().await;
}

#[tokio::test]
async fn the_child_sees_only_its_configured_environment() {
    assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some(), "cargo sets this for the test process");
    let env = BTreeMap::from([("CORTEX_TEST_MARKER".to_owned(), "marker-value".to_owned())]);
    let connection = Connection::connect(&peers::everything_with_env("everything", env)).await.unwrap();
    let outcome = connection.call_tool("get-env", json!({}), Duration::from_secs(10)).await.unwrap();
    let child_env: serde_json::Value = serde_json::from_str(&outcome.text()).unwrap();
    assert_eq!(child_env["CORTEX_TEST_MARKER"], "marker-value");
    assert!(child_env.get("PATH").is_some());
    assert!(child_env.get("CARGO_MANIFEST_DIR").is_none(), "parent environment leaked: {child_env}");
    connection.close().await;
}

#[tokio::test]
async fn close_terminates_the_process() {
    let connection = Connection::connect(&peers::everything("everything")).await.unwrap();
    let pid = connection.pid().unwrap();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    connection.close().await;
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "process {pid} still exists after close");
}

#[tokio::test]
async fn a_missing_command_is_a_clear_spawn_error() {
    let config = ServerConfig::new(
        uuid::Uuid::now_v7(),
        "ghost",
        Transport::Stdio { command: "cortex-no-such-mcp-server".into(), args: vec![], env: BTreeMap::new() },
    );
    let error = Connection::connect(&config).await.unwrap_err();
    assert!(matches!(error, McpError::Spawn { .. }), "{error:?}");
    assert!(!error.request_was_sent());
    let message = error.to_string();
    assert!(
        message.starts_with("mcp server `ghost`: cannot start command `cortex-no-such-mcp-server`: ")
            && message.contains("No such file or directory"),
        "{message}"
    );
}

#[tokio::test]
async fn a_server_that_exits_reports_status_and_last_stderr_line() {
    let error = Connection::connect(&peers::exits_immediately("broken")).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "mcp server `broken`: command `sh` exited with status 3 before initialize: fatal: missing API key"
    );
    assert_eq!(error.code(), "mcp_server_exited");
}

#[tokio::test]
async fn a_silent_server_times_out_during_initialize() {
    let mut config = ServerConfig::new(
        uuid::Uuid::now_v7(),
        "mute",
        Transport::Stdio { command: "sleep".into(), args: vec!["60".into()], env: BTreeMap::new() },
    );
    config.discovery_timeout = Duration::from_millis(200);
    let error = Connection::connect(&config).await.unwrap_err();
    assert_eq!(error.to_string(), "mcp server `mute`: did not answer initialize within 200 ms");
    assert!(!error.request_was_sent());
}
