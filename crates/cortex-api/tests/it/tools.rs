//! Tool policies, the catalogue and webhook tools over HTTP: validation at configuration time,
//! resolvability, secrets that never leave encrypted.

use cortex_core::role::Role;
use cortex_store::audit::{AuditEntry, AuditFilter};
use cortex_store::secrets::{Cipher, MasterKey, SecretRef};
use cortex_testkit::{TestStore, both_engines};
use serde_json::{Value, json};

use crate::app::{TestApp, error_code};

/// The cipher `TestApp` encrypts with (same fixed master key), to check what reached the database.
pub fn test_cipher() -> Cipher {
    Cipher::new(MasterKey::from_bytes([7; 32]), Vec::new())
}

/// Audit entries with `action`, newest first.
pub async fn audited(app: &TestApp, action: &str) -> Vec<AuditEntry> {
    let filter = AuditFilter { action: Some(action.to_owned()), ..AuditFilter::default() };
    app.test.store.list_audit(&filter, None, 50).await.unwrap().items
}

pub async fn put(app: &TestApp, path: &str, key: &str, body: Value) -> reqwest::Response {
    app.http.put(app.url(path)).bearer_auth(key).json(&body).send().await.unwrap()
}

pub async fn delete(app: &TestApp, path: &str, key: &str) -> reqwest::Response {
    app.http.delete(app.url(path)).bearer_auth(key).send().await.unwrap()
}

/// The agent's policies by tool ref.
pub async fn policies(app: &TestApp, agent_id: &str) -> Vec<Value> {
    let response = app.get(&format!("/agents/{agent_id}/tools"), &app.admin).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["next_cursor"], Value::Null);
    body["items"].as_array().unwrap().clone()
}

both_engines!(tool_policies_are_validated_when_saved, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    let agent = app.create_agent("Policy holder").await;
    let id = agent["id"].as_str().unwrap();
    let path = format!("/agents/{id}/tools/echo");

    let cases = [
        (json!({"enabled": true, "condition": {"field": "text", "op": "like", "value": "x"}}), "unknown operator"),
        (json!({"enabled": true, "aproval": "never"}), "misspelt field"),
        (json!({"enabled": true, "approval": "sometimes"}), "unknown approval"),
        (json!({"enabled": true, "risk": "p9"}), "unknown risk"),
        (json!({"approval": "never"}), "missing enabled"),
        (json!({"enabled": true, "rate_limit": {"max_calls": 0, "window_seconds": 60}}), "zero calls"),
        (json!({"enabled": true, "rate_limit": {"max_calls": 5, "window": 60}}), "unknown rate_limit key"),
        (json!({"enabled": true, "cost_budget": {"max_usd": -1.0, "window_seconds": 60}}), "negative budget"),
        (json!({"enabled": true, "data_scope": {"hosts": ["a.example"]}}), "unknown data_scope key"),
        (json!({"enabled": true, "data_scope": {"allowed_hosts": ["not a host/"]}}), "bad allowed host"),
        (json!({"enabled": true, "condition": {"field": "text", "op": "in", "value": "x"}}), "in without a list"),
        (json!({"enabled": true, "condition": {"field": "", "op": "eq", "value": "x"}}), "empty field"),
    ];
    for (body, case) in cases {
        let response = put(&app, &path, &app.admin, body).await;
        assert_eq!(response.status(), 400, "{case}");
        assert_eq!(error_code(response).await, "validation_failed", "{case}");
    }

    for unknown in ["no_such_tool", "webhook:missing", "mcp:nowhere:nothing"] {
        let response = put(&app, &format!("/agents/{id}/tools/{unknown}"), &app.admin, json!({"enabled": true})).await;
        assert_eq!(response.status(), 422, "{unknown}");
        assert_eq!(error_code(response).await, "unknown_tool");
    }
    let missing_agent = put(&app, "/agents/nobody/tools/echo", &app.admin, json!({"enabled": true})).await;
    assert_eq!(missing_agent.status(), 404);
    let viewer = app.key(Role::Viewer).await;
    assert_eq!(put(&app, &path, &viewer, json!({"enabled": true})).await.status(), 403);

    let full = json!({
        "enabled": true,
        "approval": "ALWAYS",
        "risk": "p1",
        "rate_limit": {"max_calls": 5, "window_seconds": 60},
        "cost_budget": {"max_usd": 1.5, "window_seconds": 86400},
        "data_scope": {"allowed_hosts": ["api.example.com"], "tags": ["work"]},
        "condition": {"field": "text", "op": "matches", "value": "deploy *"}
    });
    let operator = app.key(Role::Operator).await;
    let saved = put(&app, &path, &operator, full).await;
    assert_eq!(saved.status(), 200);
    let saved: Value = saved.json().await.unwrap();
    assert_eq!(saved["tool_ref"], "echo");
    assert_eq!(saved["approval"], "always");
    assert_eq!(saved["risk"], "p1");
    assert_eq!(saved["rate_limit"], json!({"max_calls": 5, "window_seconds": 60}));
    assert_eq!(saved["condition"], json!({"field": "text", "op": "matches", "value": "deploy *"}));
    assert_eq!(saved["data_scope"]["allowed_hosts"], json!(["api.example.com"]));
    assert_eq!(saved["resolvable"], true);
    assert!(saved.get("warning").is_none(), "{saved}");

    // Replacing keeps one policy; the default approval is `risk`.
    let replaced: Value = put(&app, &path, &operator, json!({"enabled": false})).await.json().await.unwrap();
    assert_eq!((replaced["enabled"].clone(), replaced["approval"].clone()), (json!(false), json!("risk")));
    assert_eq!(replaced["condition"], Value::Null);
    let listed = policies(&app, id).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["tool_ref"], "echo");

    assert_eq!(delete(&app, &path, &viewer).await.status(), 403);
    assert_eq!(delete(&app, &path, &operator).await.status(), 204);
    let again = delete(&app, &path, &operator).await;
    assert_eq!(again.status(), 404);
    assert_eq!(error_code(again).await, "not_found");
    assert!(policies(&app, id).await.is_empty());

    // Every change is audited against the agent.
    let puts = audited(&app, "tool_policy.put").await;
    assert_eq!(puts.len(), 2);
    assert_eq!(puts[0].target_id.as_deref(), Some(id));
    assert_eq!(puts[1].details["tool_ref"], "echo");
    assert_eq!(audited(&app, "tool_policy.delete").await.len(), 1);
});

both_engines!(webhook_tools_are_validated_stored_encrypted_and_guarded_on_delete, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    let agent = app.create_agent("Hook user").await;
    let agent_id = agent["id"].as_str().unwrap();
    let secret = "hook-secret-5b9d2";
    let definition = json!({
        "name": "deploy",
        "description": "Deploys the site",
        "input_schema": {"type": "object", "properties": {"env": {"type": "string"}}, "required": ["env"]},
        "url": "https://hooks.example.com/deploy?sig=abc",
        "method": "post",
        "headers": {"X-Api-Key": secret},
        "timeout_ms": 5000,
        "risk": "p1"
    });

    let operator = app.key(Role::Operator).await;
    assert_eq!(app.post("/webhook-tools", &operator, definition.clone()).await.status(), 403);
    let created = app.post("/webhook-tools", &app.admin, definition.clone()).await;
    assert_eq!(created.status(), 201);
    let text = created.text().await.unwrap();
    assert!(!text.contains(secret), "secret in {text}");
    let created: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(created["tool_ref"], "webhook:deploy");
    assert_eq!(created["headers"], json!(["X-Api-Key"]));
    assert_eq!(created["method"], "POST");
    assert_eq!(created["url"], "https://hooks.example.com/deploy", "query strings may carry credentials");
    assert_eq!(created["risk"], "p1");

    let row = app.test.store.webhook_tool("deploy").await.unwrap().unwrap();
    let sealed = row.headers_enc.as_deref().unwrap();
    assert!(sealed.starts_with("v1:") && !sealed.contains(secret), "{sealed}");
    let opened = test_cipher().decrypt_json(&SecretRef::new("webhook_tool", "headers_enc", row.id), sealed).unwrap();
    assert_eq!(opened["X-Api-Key"], secret, "bound to its own row");

    let duplicate = app.post("/webhook-tools", &app.admin, definition.clone()).await;
    assert_eq!(duplicate.status(), 409);
    assert_eq!(error_code(duplicate).await, "conflict");

    for (change, expected) in [
        (json!({"url": "ftp://hooks.example.com"}), "url"),
        (json!({"input_schema": {"type": "string"}}), "input_schema"),
        (json!({"timeout_ms": 0}), "timeout_ms"),
        (json!({"method": "TRACE"}), "method"),
        (json!({"name": "Bad Name"}), "name"),
        (json!({"headers": {"Bad Header": "x"}}), "headers"),
    ] {
        let mut body = definition.clone();
        body["name"] = json!("other");
        body.as_object_mut().unwrap().extend(change.as_object().unwrap().clone());
        let response = app.post("/webhook-tools", &app.admin, body).await;
        assert_eq!(response.status(), 400, "{change}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "validation_failed");
        let reasons = error["error"]["details"]["fields"]["definition"].as_str().unwrap();
        assert!(reasons.contains(expected), "{change}: {reasons}");
    }
    let mut unknown_field = definition.clone();
    unknown_field["secret"] = json!("x");
    assert_eq!(app.post("/webhook-tools", &app.admin, unknown_field).await.status(), 400);
    let mut for_nobody = definition.clone();
    for_nobody["name"] = json!("private");
    for_nobody["agent_id"] = json!("nobody");
    let response = app.post("/webhook-tools", &app.admin, for_nobody).await;
    assert_eq!(response.status(), 422);
    assert_eq!(error_code(response).await, "unprocessable");

    let viewer = app.key(Role::Viewer).await;
    let listed: Value = app.get("/webhook-tools", &viewer).await.json().await.unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    let one = app.get("/webhook-tools/deploy", &viewer).await;
    assert_eq!(one.status(), 200);
    assert!(!one.text().await.unwrap().contains(secret));
    assert_eq!(app.get("/webhook-tools/nope", &viewer).await.status(), 404);

    let enabled =
        put(&app, &format!("/agents/{agent_id}/tools/webhook:deploy"), &app.admin, json!({"enabled": true})).await;
    assert_eq!(enabled.status(), 200);
    let enabled: Value = enabled.json().await.unwrap();
    assert_eq!(enabled["resolvable"], true);

    let refused = delete(&app, "/webhook-tools/deploy", &app.admin).await;
    assert_eq!(refused.status(), 409);
    let refused: Value = refused.json().await.unwrap();
    assert_eq!(refused["error"]["details"]["agent_ids"], json!([agent_id]));
    assert_eq!(delete(&app, "/webhook-tools/deploy?force=true", &viewer).await.status(), 403);
    assert_eq!(delete(&app, "/webhook-tools/deploy?force=true", &app.admin).await.status(), 204);
    assert_eq!(app.get("/webhook-tools/deploy", &viewer).await.status(), 404);

    let creations = audited(&app, "webhook_tool.create").await;
    assert_eq!(creations.len(), 1);
    assert!(!creations[0].details.to_string().contains(secret));
    assert_eq!(audited(&app, "webhook_tool.delete").await[0].details["forced"], true);

    let after = policies(&app, agent_id).await;
    assert_eq!(after[0]["resolvable"], false);
    assert!(after[0]["warning"].as_str().unwrap().contains("not defined"), "{after:?}");
});

both_engines!(the_catalogue_lists_builtins_and_webhook_tools, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    let hook = json!({
        "name": "notify",
        "description": "Sends a notice",
        "input_schema": {"type": "object"},
        "url": "https://hooks.example.com/notify",
        "idempotent": true
    });
    let created = app.post("/webhook-tools", &app.admin, hook).await;
    assert_eq!(created.status(), 201);
    assert_eq!(created.json::<Value>().await.unwrap()["idempotent"], true);
    let viewer = app.key(Role::Viewer).await;
    let catalogue: Value = app.get("/tools", &viewer).await.json().await.unwrap();
    let items = catalogue["items"].as_array().unwrap();
    let find = |tool_ref: &str| items.iter().find(|item| item["tool_ref"] == tool_ref).cloned();

    let echo = find("echo").expect("echo is built in");
    assert_eq!(echo["kind"], "builtin");
    assert_eq!(echo["default_risk"], "p3");
    assert!(!echo["description"].as_str().unwrap().is_empty());
    assert_eq!(echo["input_schema"]["required"], json!(["text"]));
    assert!(find("http_request").is_some());
    assert!(find("web_search").is_none(), "not configured in tests, so not offered");
    let notify = find("webhook:notify").expect("webhook tool listed");
    assert_eq!((notify["kind"].clone(), notify["default_risk"].clone()), (json!("webhook"), json!("p2")));
    assert_eq!(notify["idempotent"], true, "declared by the operator");
    assert_eq!(find("http_request").unwrap()["idempotent"], true, "a GET is re-run after a crash");
    assert_eq!(find("create_job").unwrap()["idempotent"], true, "keyed by the ledger call id");
});

both_engines!(the_catalogue_the_definitions_and_the_model_agree_on_every_builtin, |t: TestStore| async move {
    let llm = cortex_testkit::fake_llm::FakeLlm::start().await;
    llm.rule(cortex_testkit::fake_llm::When::Always, cortex_testkit::fake_llm::Reply::text("done"));
    let env = [
        ("OPENAI_API_KEY", "sk-test".to_owned()),
        ("OPENAI_BASE_URL", llm.openai_base_url()),
        // Configured but never called: the model below answers without using tools.
        ("CORTEX_SEARCH_API_URL", "http://127.0.0.1:9/search".to_owned()),
    ];
    let env = env.into_iter().map(|(name, value)| (name.to_owned(), value)).collect();
    let unlimited = cortex_api::rate_limit::Limit { per_minute: 1_000_000, burst: 1_000_000 };
    let config = cortex_api::ApiConfig { api_rate: unlimited, chat_rate: unlimited, ..Default::default() };
    let app = TestApp::spawn_with_env(t, config, env).await;

    let catalogue: Value = app.get("/tools", &app.admin).await.json().await.unwrap();
    let builtins: Vec<Value> =
        catalogue["items"].as_array().unwrap().iter().filter(|item| item["kind"] == "builtin").cloned().collect();
    let refs: Vec<&str> = builtins.iter().map(|item| item["tool_ref"].as_str().unwrap()).collect();
    for expected in
        ["echo", "http_request", "web_search", "memory_store", "memory_query", "create_job", "request_approval"]
    {
        assert!(refs.contains(&expected), "`{expected}` missing from GET /tools: {refs:?}");
    }
    for item in &builtins {
        assert!(!item["description"].as_str().unwrap().is_empty(), "{item}");
        assert_eq!(item["input_schema"]["type"], "object", "{item}");
        assert!(item["default_risk"].is_string() && item["idempotent"].is_boolean(), "{item}");
    }

    // The definition check accepts exactly these names, and each resolves for the agent.
    let agent: Value = app
        .post(
            "/agents",
            &app.admin,
            json!({"name": "Everything", "model_config": {"provider": "openai", "model": "gpt-4o-mini"}, "tools": refs}),
        )
        .await
        .json()
        .await
        .unwrap();
    let id = agent["id"].as_str().expect("agent created with every built-in").to_owned();
    for policy in policies(&app, &id).await {
        assert_eq!(policy["resolvable"], true, "{policy}");
    }

    // The model is offered every built-in with the catalogue's description and schema.
    let engine = cortex_jobs::JobEngine::new(app.test.store.clone(), cortex_jobs::EngineConfig::with_name("tools"))
        .with_handler(cortex_core::job::JobKind::Chat, app.runtime.handler());
    let stop = tokio_util::sync::CancellationToken::new();
    let signal = stop.clone();
    let engine = tokio::spawn(engine.run(async move { signal.cancelled().await }));
    let reply: Value = app
        .post(&format!("/agents/{id}/chat?wait=true"), &app.admin, json!({"text": "hi"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(reply["status"], "completed", "{reply}");
    let offered = llm.requests()[0].body["tools"].as_array().unwrap().clone();
    let mut offered_refs: Vec<&str> = offered.iter().map(|tool| tool["function"]["name"].as_str().unwrap()).collect();
    offered_refs.sort_unstable();
    let mut expected = refs.clone();
    expected.sort_unstable();
    assert_eq!(offered_refs, expected, "the model gets every built-in, and nothing else");
    for item in &builtins {
        let tool = offered.iter().find(|tool| tool["function"]["name"] == item["tool_ref"]).unwrap();
        assert_eq!(tool["function"]["description"], item["description"], "{}", item["tool_ref"]);
        assert_eq!(tool["function"]["parameters"], item["input_schema"], "{}", item["tool_ref"]);
    }
    stop.cancel();
    engine.await.unwrap().unwrap();
});
