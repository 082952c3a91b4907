//! Sizes (issue 12, point 14) and characters (point 18): every stored string has a limit the OpenAPI
//! document states, names refuse control characters, and list answers stay bounded in bytes.

use cortex_core::role::Role;
use cortex_testkit::{TestStore, both_engines};
use serde_json::{Value, json};

use crate::app::TestApp;

fn agent_body(name: &str) -> Value {
    json!({"name": name, "model_config": {"provider": "openai", "model": "gpt-4o-mini"}})
}

/// Asserts a 400 `validation_failed` naming `field` and returns the reason.
async fn refused_field(response: reqwest::Response, field: &str) -> String {
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "validation_failed", "{body}");
    body["error"]["details"]["fields"][field].as_str().unwrap_or_else(|| panic!("{field} not named: {body}")).to_owned()
}

both_engines!(oversized_fields_are_refused_naming_field_and_limit, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    let mut body = agent_body("Big");
    body["description"] = json!("x".repeat(1_000_000));
    let reason = refused_field(app.post("/agents", &app.admin, body).await, "description").await;
    assert!(reason.contains("4000"), "{reason}");

    let mut body = agent_body("Model");
    body["model_config"]["model"] = json!("m".repeat(201));
    refused_field(app.post("/agents", &app.admin, body).await, "model_config.model").await;

    let mut body = agent_body("Role");
    body["role"] = json!("r".repeat(5000));
    refused_field(app.post("/agents", &app.admin, body).await, "role").await;

    let webhook = json!({
        "name": "hook", "description": "d", "url": "https://example.com/hook",
        "input_schema": {"type": "object"}, "headers": {"X-Token": "v".repeat(9000)}
    });
    refused_field(app.post("/webhook-tools", &app.admin, webhook).await, "headers").await;

    let key = app.post("/api-keys", &app.admin, json!({"name": "k".repeat(101), "role": "viewer"})).await;
    refused_field(key, "name").await;

    let document: Value = app.get("/openapi.json", &app.admin).await.json().await.unwrap();
    let create = &document["components"]["schemas"]["CreateAgent"]["properties"];
    assert_eq!(create["description"]["maxLength"], 4000, "{create}");
    assert_eq!(create["name"]["maxLength"], 100, "{create}");
});

both_engines!(control_characters_are_refused_in_names, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    for name in ["evil\u{1b}[2J", "nul\u{0}", "rtl\u{202e}gnp.exe", "csi\u{9b}31m"] {
        let reason = refused_field(app.post("/agents", &app.admin, agent_body(name)).await, "name").await;
        assert!(reason.contains("control character"), "{reason}");
    }
    let mut body = agent_body("Prose");
    body["description"] = json!("line one\nline two\twith a tab — שלום");
    assert_eq!(app.post("/agents", &app.admin, body).await.status(), 201, "free text keeps line breaks");
    let mut body = agent_body("Escape");
    body["description"] = json!("colour \u{1b}[31m");
    refused_field(app.post("/agents", &app.admin, body).await, "description").await;
});

/// Follows `path` (which ends in a query) page by page as `key`, checking every page stays within the
/// byte budget; returns the `id` of every item in order and the number of pages. `cursor_param` names the
/// query parameter that continues a page.
async fn follow_pages(app: &TestApp, path: &str, key: &str, cursor_param: &str) -> (Vec<String>, usize) {
    follow_pages_by(app, path, key, cursor_param, "id").await
}

/// [`follow_pages`] naming items by their `id_field`.
async fn follow_pages_by(
    app: &TestApp,
    path: &str,
    key: &str,
    cursor_param: &str,
    id_field: &str,
) -> (Vec<String>, usize) {
    let mut ids = Vec::new();
    let mut next = path.to_owned();
    let mut pages = 0;
    loop {
        let response = app.get(&next, key).await;
        assert_eq!(response.status(), 200, "{next}");
        let bytes = response.bytes().await.unwrap();
        assert!(bytes.len() <= cortex_api::limits::LIST_BYTES + 200_000, "{next}: a page of {} bytes", bytes.len());
        assert!(!bytes.is_empty());
        let page: Value = serde_json::from_slice(&bytes).unwrap();
        ids.extend(page["items"].as_array().unwrap().iter().map(|item| item[id_field].as_str().unwrap().to_owned()));
        pages += 1;
        match page["next_cursor"].as_str() {
            Some(cursor) => next = format!("{path}&{cursor_param}={cursor}"),
            None => return (ids, pages),
        }
    }
}

/// Every item exactly once, across more than one page.
fn assert_complete(what: &str, created: &[String], (listed, pages): (Vec<String>, usize)) {
    assert!(pages >= 2, "{what}: 1.5 MB does not fit one page, yet it came in {pages}");
    let unique: std::collections::BTreeSet<&String> = listed.iter().collect();
    assert_eq!(unique.len(), listed.len(), "{what}: an item listed twice");
    let expected: std::collections::BTreeSet<&String> = created.iter().collect();
    assert_eq!(unique, expected, "{what}: following the cursor lists every item");
}

both_engines!(list_answers_are_bounded_in_bytes, |t: TestStore| async move {
    // One mechanism bounds every paginated list; here agents and a session's messages, each page
    // at most 1 MiB, the cursor continuing after the last item that fitted.
    let app = TestApp::spawn(t).await;
    let prompt = "p".repeat(99_000);
    let mut agents = Vec::new();
    for n in 0..15 {
        let mut body = agent_body(&format!("Huge {n}"));
        body["system_prompt"] = json!(prompt);
        let response = app.post("/agents", &app.admin, body).await;
        assert_eq!(response.status(), 201);
        let agent: Value = response.json().await.unwrap();
        agents.push(agent["id"].as_str().unwrap().to_owned());
    }
    let viewer = app.key(Role::Viewer).await;
    assert_complete("agents", &agents, follow_pages(&app, "/agents?limit=200", &viewer, "cursor").await);

    let agent_id: uuid::Uuid = agents[0].parse().unwrap();
    let text = "t".repeat(45_000);
    let mut tx = app.test.store.begin().await.unwrap();
    let session = tx.insert_session(agent_id, None, "rest").await.unwrap();
    let mut messages = Vec::new();
    for _ in 0..35 {
        messages.push(tx.append_message(session.id, "user", &text, None, None).await.unwrap().id.to_string());
    }
    tx.commit().await.unwrap();
    let path = format!("/sessions/{}/messages?limit=200", session.id);
    assert_complete("messages", &messages, follow_pages(&app, &path, &viewer, "after_seq").await);
});

both_engines!(lists_held_whole_are_paginated_and_bounded_in_bytes, |t: TestStore| async move {
    // The tool catalogue is built whole in memory; an MCP server declaring many large tools must not
    // make it one unbounded answer. Each page stays within 1 MiB, and following the cursor lists every
    // tool exactly once.
    let app = TestApp::spawn(t).await;
    let description = "d".repeat(50_000);
    let tools: Vec<Value> = (0..30)
        .map(|n| json!({"name": format!("tool_{n:02}"), "description": description, "inputSchema": {"type": "object"}}))
        .collect();
    let running = crate::mcp::Running::offering("127.0.0.1:0".parse().unwrap(), tools).await;
    let body = json!({"name": "Wide", "transport": "http", "url": running.url()});
    let server: Value = app.post("/mcp-servers", &app.admin, body).await.json().await.unwrap();
    assert_eq!(server["status"], "active", "{server}");
    let viewer = app.key(Role::Viewer).await;
    let (listed, pages) = follow_pages_by(&app, "/tools?limit=200", &viewer, "cursor", "tool_ref").await;
    let wide: Vec<String> = listed.iter().filter(|tool| tool.starts_with("mcp:wide:")).cloned().collect();
    let expected: Vec<String> = (0..30).map(|n| format!("mcp:wide:tool_{n:02}")).collect();
    assert_complete("tools", &expected, (wide, pages));
    assert!(listed.contains(&"echo".to_owned()), "built-ins are listed too: {listed:?}");
    let unique: std::collections::BTreeSet<&String> = listed.iter().collect();
    assert_eq!(unique.len(), listed.len(), "a tool listed twice: {listed:?}");

    // `limit` pages in items as well, the order (built-ins first) holding across pages.
    let (small, small_pages) = follow_pages_by(&app, "/tools?limit=7", &viewer, "cursor", "tool_ref").await;
    assert_eq!(small, listed, "the same tools in the same order whatever the page size");
    assert!(small_pages > pages);
    let bad = app.get("/tools?cursor=not-a-cursor", &viewer).await;
    refused_field(bad, "cursor").await;
    running.stop().await;

    // Every list operation documents the same paging parameters.
    let document: Value = app.get("/openapi.json", &app.admin).await.json().await.unwrap();
    let mut lists = 0;
    for (path, item) in document["paths"].as_object().unwrap() {
        let Some(get) = item.get("get") else { continue };
        let answer = get["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].as_str();
        if !answer.is_some_and(|name| name.starts_with("#/components/schemas/List")) {
            continue;
        }
        lists += 1;
        let names: Vec<&str> =
            get["parameters"].as_array().into_iter().flatten().filter_map(|p| p["name"].as_str()).collect();
        let paged = names.contains(&"limit") && (names.contains(&"cursor") || names.contains(&"after_seq"));
        assert!(paged, "GET {path} answers a list without limit and cursor: {names:?}");
    }
    assert!(lists >= 15, "{lists} list operations found");
});
