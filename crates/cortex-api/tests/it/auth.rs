//! Every route but the public ones refuses missing and wrong credentials; roles are enforced.

use cortex_core::role::Role;
use cortex_testkit::{TestStore, both_engines};
use serde_json::{Value, json};

use crate::app::{TestApp, error_code};

/// Operations open without credentials: health, metrics, password sign-in, the provider sign-in callback, and
/// platform webhooks (they authenticate by the platform's signature or secret instead, SPEC §2.3).
const PUBLIC: &[&str] = &[
    "/healthz",
    "/readyz",
    "/metrics",
    "/auth/login",
    "/auth/provider-callback",
    "/webhooks/telegram/{channel_id}",
    "/webhooks/slack/{channel_id}",
    "/webhooks/whatsapp",
    "/auth/providers",
    "/auth/login/{provider}",
    "/auth/callback/{provider}",
];

/// Every (method, concrete path) in the OpenAPI document, with path parameters filled in.
async fn operations(app: &TestApp) -> Vec<(reqwest::Method, String, String)> {
    let document: Value = app.get("/openapi.json", &app.admin).await.json().await.unwrap();
    assert_eq!(document["openapi"].as_str().unwrap().split('.').take(2).collect::<Vec<_>>(), ["3", "1"]);
    let mut operations = Vec::new();
    for (template, item) in document["paths"].as_object().unwrap() {
        let path = template
            .split('/')
            .map(|segment| if segment.starts_with('{') { uuid::Uuid::now_v7().to_string() } else { segment.to_owned() })
            .collect::<Vec<_>>()
            .join("/");
        for method in item.as_object().unwrap().keys() {
            if let Ok(method) = method.to_uppercase().parse::<reqwest::Method>() {
                operations.push((method, path.clone(), template.clone()));
            }
        }
    }
    operations
}

both_engines!(every_route_requires_credentials, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    let operations = operations(&app).await;
    assert!(operations.len() >= 20, "only {} operations documented", operations.len());
    let wrong_key = cortex_core::api_key::generate().plaintext;
    for (method, path, template) in operations {
        let anonymous = app.http.request(method.clone(), app.url(&path)).json(&json!({})).send().await.unwrap();
        let wrong = app
            .http
            .request(method.clone(), app.url(&path))
            .bearer_auth(&wrong_key)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        if PUBLIC.contains(&template.as_str()) {
            assert_ne!(anonymous.status(), 401, "{method} {template} is public");
            continue;
        }
        assert_eq!(anonymous.status(), 401, "{method} {template} without credentials");
        assert_eq!(error_code(anonymous).await, "unauthorized");
        assert_eq!(wrong.status(), 401, "{method} {template} with a wrong key");
        let malformed = app
            .http
            .request(method, app.url(&path))
            .header("authorization", "Basic Zm9vOmJhcg==")
            .send()
            .await
            .unwrap();
        assert_eq!(malformed.status(), 401, "{template} with basic auth");
    }
});

both_engines!(the_contract_routes_are_documented, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    let documented: Vec<(String, String)> =
        operations(&app).await.into_iter().map(|(m, _, t)| (m.to_string(), t)).collect();
    for (method, path) in [
        ("POST", "/agents"),
        ("GET", "/agents"),
        ("GET", "/agents/{id}"),
        ("PATCH", "/agents/{id}"),
        ("DELETE", "/agents/{id}"),
        ("GET", "/agents/{id}/sessions"),
        ("GET", "/sessions/{id}/messages"),
        ("DELETE", "/sessions/{id}"),
        ("POST", "/agents/{id}/jobs"),
        ("GET", "/jobs"),
        ("GET", "/jobs/{id}"),
        ("POST", "/jobs/{id}/cancel"),
        ("POST", "/jobs/{id}/retry"),
        ("GET", "/jobs/{id}/events"),
        ("GET", "/agents/{id}/stream"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
    ] {
        assert!(
            documented.contains(&(method.to_owned(), path.to_owned())),
            "{method} {path} missing from /openapi.json"
        );
    }
});

both_engines!(roles_are_enforced, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    let viewer = app.key(Role::Viewer).await;
    let operator = app.key(Role::Operator).await;
    let agent = app.create_agent("Guarded").await;
    let id = agent["id"].as_str().unwrap();

    assert_eq!(app.get("/agents", &viewer).await.status(), 200);
    let created =
        app.post("/agents", &viewer, json!({"name": "x", "model_config": {"provider": "openai", "model": "m"}})).await;
    assert_eq!(created.status(), 403);
    assert_eq!(error_code(created).await, "forbidden");
    let purge =
        app.http.delete(app.url(&format!("/agents/{id}?purge=true"))).bearer_auth(&operator).send().await.unwrap();
    assert_eq!(purge.status(), 403);
    let escalate = app.post("/api-keys", &operator, json!({"name": "sneaky", "role": "admin"})).await;
    assert_eq!(escalate.status(), 403);
    let own = app.post("/api-keys", &operator, json!({"name": "mine", "role": "viewer"})).await;
    assert_eq!(own.status(), 201);
    let own: Value = own.json().await.unwrap();
    let minted = own["secret"].as_str().unwrap();
    assert_eq!(app.get("/agents", minted).await.status(), 200);

    // Revocation takes effect at once.
    let revoke = app
        .http
        .delete(app.url(&format!("/api-keys/{}", own["id"].as_str().unwrap())))
        .bearer_auth(&operator)
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), 204);
    assert_eq!(app.get("/agents", minted).await.status(), 401);
});

both_engines!(credentials_are_never_taken_from_the_url, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    let response = app.http.get(app.url(&format!("/agents?api_key={}", app.admin))).send().await.unwrap();
    assert_eq!(response.status(), 400);
    let response = app.http.get(app.url("/agents?token=x")).bearer_auth(&app.admin).send().await.unwrap();
    assert_eq!(response.status(), 400);
});

both_engines!(streams_refuse_foreign_origins, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    let agent = app.create_agent("Streamer").await;
    let path = format!("/agents/{}/stream", agent["id"].as_str().unwrap());
    let foreign = app
        .http
        .get(app.url(&path))
        .bearer_auth(&app.admin)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);
    let host = app.base.trim_start_matches("http://").to_owned();
    let own = app
        .http
        .get(app.url(&path))
        .bearer_auth(&app.admin)
        .header("origin", format!("http://{host}"))
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 200);
    assert_eq!(own.headers()["content-type"], "text/event-stream");
});

/// The role one step below `role` (the strongest caller a guard must still refuse).
fn just_below(role: Role) -> Option<Role> {
    Role::ALL.iter().copied().filter(|candidate| *candidate < role && *candidate > Role::None).max()
}

both_engines!(every_operation_declares_its_role_and_the_guard_enforces_it, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    let mut keys = std::collections::HashMap::new();
    for role in [Role::Viewer, Role::Operator, Role::Approver] {
        keys.insert(role, app.key(role).await);
    }
    keys.insert(Role::Admin, app.admin.clone());
    let document: Value = app.get("/openapi.json", &app.admin).await.json().await.unwrap();
    let mut guarded = 0;
    for (method, path, template) in operations(&app).await {
        let operation = &document["paths"][&template][method.as_str().to_lowercase()];
        if PUBLIC.contains(&template.as_str()) {
            assert_eq!(operation["security"], json!([{}]), "{method} {template} is public");
            continue;
        }
        let declared = operation["security"][0]["bearer"][0]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {template} declares no role: {operation}"));
        let role: Role = declared.parse().unwrap();
        if role > Role::Viewer {
            assert!(operation["responses"]["403"].is_object(), "{method} {template} documents no 403");
        }
        let send =
            |key: &String| app.http.request(method.clone(), app.url(&path)).bearer_auth(key).json(&json!({})).send();
        if let Some(below) = just_below(role) {
            let refused = send(&keys[&below]).await.unwrap();
            assert_eq!(refused.status(), 403, "{method} {template} with a {below} key");
            assert_eq!(error_code(refused).await, "forbidden");
            guarded += 1;
        }
        let allowed = send(&keys[&role]).await.unwrap();
        assert_ne!(allowed.status(), 403, "{method} {template} with a {role} key");
        assert_ne!(allowed.status(), 401, "{method} {template} with a {role} key");
    }
    assert!(guarded >= 15, "only {guarded} operations need more than viewer");
    // The roles SPEC §2.4 gives in brackets.
    for (method, template, role) in [
        ("post", "/agents", "operator"),
        ("get", "/agents", "viewer"),
        ("patch", "/agents/{id}", "operator"),
        ("post", "/agents/{id}/chat", "operator"),
        ("post", "/agents/{id}/jobs", "operator"),
        ("post", "/jobs/{id}/cancel", "operator"),
        ("post", "/jobs/{id}/retry", "operator"),
        ("get", "/jobs/{id}/events", "viewer"),
        ("post", "/approvals/{id}/decide", "approver"),
        ("post", "/approvals/decide-by-token", "viewer"),
        ("post", "/mcp-servers", "admin"),
        ("put", "/agents/{id}/tools/{tool}", "operator"),
        ("post", "/agents/{id}/steer", "operator"),
    ] {
        assert_eq!(document["paths"][template][method]["security"][0]["bearer"][0], role, "{method} {template}");
    }
});

both_engines!(every_operation_documents_its_errors_with_the_envelope, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    let document: Value = app.get("/openapi.json", &app.admin).await.json().await.unwrap();
    assert!(document["components"]["schemas"]["ErrorBody"].is_object());
    let mut problems = Vec::new();
    for (template, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let responses = operation["responses"].as_object().unwrap();
            let public = PUBLIC.contains(&template.as_str());
            // Public routes are neither authenticated nor rate limited.
            let required: &[&str] = if public { &[] } else { &["401", "429"] };
            for status in required {
                if !responses.contains_key(*status) {
                    problems.push(format!("{method} {template}: no {status}"));
                }
            }
            if !public && responses["429"]["headers"]["Retry-After"].is_null() {
                problems.push(format!("{method} {template}: 429 without Retry-After"));
            }
            for (status, response) in responses {
                // `/readyz` answers 503 with its report, as SPEC §2.3 fixes.
                if status.as_str() < "400" || (template == "/readyz" && status == "503") {
                    continue;
                }
                let schema = &response["content"]["application/json"]["schema"]["$ref"];
                if schema != "#/components/schemas/ErrorBody" {
                    problems.push(format!("{method} {template}: {status} is not the error envelope ({schema})"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
});

/// Wrong keys are counted per client address: after 20 in a minute every attempt from it is 429 with
/// `Retry-After`, the right key included, so guessing gains nothing.
#[tokio::test]
async fn failed_authentication_is_throttled_per_address() {
    let app = crate::app::TestApp::spawn_with(
        cortex_testkit::TestStore::new(cortex_testkit::Engine::Sqlite).await,
        cortex_api::ApiConfig::default(),
    )
    .await;
    for attempt in 0..20 {
        let response = app.get("/agents", "ctx_wrong_key_0123456789abcdef0123456789").await;
        assert_eq!(response.status(), 401, "attempt {attempt}");
    }
    for key in ["ctx_wrong_key_0123456789abcdef0123456789", app.admin.as_str()] {
        let response = app.get("/agents", key).await;
        assert_eq!(response.status(), 429);
        let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry_after));
        assert_eq!(crate::app::error_code(response).await, "rate_limited");
    }
    assert_eq!(app.get("/healthz", "").await.status(), 200, "public routes stay open");
}
