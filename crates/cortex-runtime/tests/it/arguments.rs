//! Tool arguments are checked against the tool's schema before anything runs (SPEC §6.5 step 2), with
//! every JSON Schema keyword — here an MCP-style schema of `$defs` reached through `$ref`, with a
//! `pattern` and a `format` — and the refusal names the path, so the model can correct its call.

use cortex_core::approval::{ApprovalMode, ToolCallState};
use cortex_core::job::JobStatus;
use cortex_store::tools::WebhookToolRecord;
use cortex_testkit::fake_llm::{Reply, When};
use cortex_testkit::{TestStore, both_engines};
use serde_json::json;
use uuid::Uuid;

use crate::support::*;

both_engines!(arguments_violating_a_referenced_definition_are_refused_with_their_path, |t: TestStore| async move {
    let world = World::new(t).await;
    let store = world.store().clone();
    let hook = CountingServer::start(json!({"filed": true})).await;
    let agent = create_agent(&store, definition("gpt-4o-mini")).await;
    let schema = json!({
        "type": "object",
        "$defs": {"Ticket": {"type": "object", "properties": {
            "code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]+$"},
            "reporter": {"type": "string", "format": "email"}
        }, "required": ["code", "reporter"]}},
        "properties": {"tickets": {"type": "array", "items": {"$ref": "#/$defs/Ticket"}}},
        "required": ["tickets"]
    });
    let record = WebhookToolRecord {
        id: Uuid::now_v7(),
        agent_id: None,
        name: "file_tickets".into(),
        description: "Files tickets.".into(),
        input_schema: schema,
        url: format!("{}/hook", hook.url),
        method: "POST".into(),
        headers_enc: None,
        header_keys: vec![],
        timeout_ms: 10_000,
        risk: "p2".into(),
        idempotent: false,
        credential_refs: serde_json::json!([]),
    };
    let mut tx = store.begin().await.unwrap();
    tx.insert_webhook_tool(&record).await.unwrap();
    tx.commit().await.unwrap();
    allow_tool(&store, agent.id, "webhook:file_tickets", ApprovalMode::Never, None).await;
    let good = json!({"code": "OPS-12", "reporter": "ops@example.com"});
    world.llm.push(Reply::tool_call(
        "webhook__file_tickets",
        json!({"tickets": [good, {"code": "ops 12", "reporter": "nobody"}]}),
    ));
    world.llm.push(Reply::tool_call("webhook__file_tickets", json!({"tickets": [good]})));
    world.llm.rule(When::LastIsToolResult, Reply::text("Filed."));
    let job = task(&store, agent.id, "file the tickets").await;

    wait_status(&store, job.id, JobStatus::Completed).await;
    let told = world.llm.requests()[1].tool_results()[0].clone();
    assert!(told.contains("$.tickets[1].code:") && told.contains("$.tickets[1].reporter:"), "{told}");
    let ledger = store.tool_calls_of_job(job.id).await.unwrap();
    assert_eq!(ledger[0].state, ToolCallState::Failed);
    assert_eq!(ledger[0].output.as_ref().unwrap()["code"], "invalid_arguments");
    assert_eq!(ledger[1].state, ToolCallState::Completed);
    assert_eq!(hook.hits(), 1, "only the corrected call was sent");
    world.finish().await;
});
