//! MCP tools in the loop, against the real `server-everything` reference server (installed by
//! `scripts/install-test-peers.sh`).

use std::path::Path;

use cortex_core::approval::{ApprovalMode, RiskTier, ToolCallState};
use cortex_core::job::JobStatus;
use cortex_store::mcp::{DiscoveredTool, DiscoveryRecord, NewMcpServer};
use cortex_testkit::fake_llm::{Reply, When};
use cortex_testkit::{TestStore, both_engines};
use serde_json::json;
use uuid::Uuid;

use crate::support::*;

fn everything_script() -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../test-peers/node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    assert!(script.is_file(), "MCP test peer missing ({}); run scripts/install-test-peers.sh", script.display());
    script.canonicalize().unwrap().display().to_string()
}

both_engines!(an_mcp_tool_call_runs_through_a_real_reference_server, |t: TestStore| async move {
    let world = World::new(t).await;
    let store = world.store().clone();
    let agent = create_agent(&store, definition("gpt-4o-mini")).await;
    let server_id = Uuid::now_v7();
    let mut tx = store.begin().await.unwrap();
    tx.insert_mcp_server(&NewMcpServer {
        id: server_id,
        name: "Everything".into(),
        slug: "everything".into(),
        transport: "stdio".into(),
        command: Some("node".into()),
        args: vec![everything_script(), "stdio".into()],
        env_enc: None,
        env_keys: vec![],
        url: None,
        headers_enc: None,
        header_keys: vec![],
        probe_interval_seconds: 30,
        trusted: false,
    })
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let server = store.get_mcp_server(&server_id.to_string()).await.unwrap();
    let discovery = DiscoveryRecord {
        protocol_version: "2025-06-18".into(),
        server_info: json!({"name": "everything"}),
        capabilities: json!({}),
        tools: vec![DiscoveredTool {
            name: "echo".into(),
            description: "Echoes back the input".into(),
            input_schema: json!({"type": "object", "properties": {"message": {"type": "string"}}, "required": ["message"]}),
            annotations: Some(json!({"readOnlyHint": true})),
        }],
    };
    let mut tx = store.begin().await.unwrap();
    tx.record_mcp_discovery(&server, &discovery).await.unwrap();
    tx.commit().await.unwrap();
    // `readOnlyHint` is the server's claim and does not lower the risk; the operator pins p3 here.
    allow_tool(&store, agent.id, "mcp:everything:echo", ApprovalMode::Risk, None).await;
    assert_eq!(world.runtime.effective_tools(agent.id).await.unwrap()[0].risk, RiskTier::P2);
    allow_tool(&store, agent.id, "mcp:everything:echo", ApprovalMode::Risk, Some(RiskTier::P3)).await;

    let tools = world.runtime.effective_tools(agent.id).await.unwrap();
    assert_eq!(tools[0].wire_name, "mcp__everything__echo");
    world.llm.push(Reply::tool_call("mcp__everything__echo", json!({"message": "through the pool"})));
    world.llm.rule(When::LastIsToolResult, Reply::text("mcp ok"));
    let job = task(&store, agent.id, "use the mcp echo").await;

    let done = wait_status(&store, job.id, JobStatus::Completed).await;
    assert_eq!(done.result.unwrap()["response"], "mcp ok");
    let result = world.llm.requests()[1].tool_results()[0].clone();
    assert!(result.contains("Echo: through the pool"), "{result}");
    assert!(result.contains("source=mcp:everything:echo"), "{result}");
    let ledger = store.tool_calls_of_job(job.id).await.unwrap();
    assert_eq!((ledger[0].state, ledger[0].idempotent), (ToolCallState::Completed, true));
    world.finish().await;
});
