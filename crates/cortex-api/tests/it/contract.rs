//! Contract hygiene (issue 12, point 18): the OpenAPI document's enums are exactly the values the API
//! speaks, and every timestamp has the same fixed width (RFC 3339, milliseconds, `Z`). `/docs` describes
//! every operation of the document (both are built lazily on first request, issue 17).

use cortex_core::agent::{AccessMode, AgentStatus, HealthState};
use cortex_core::approval::{ApprovalMode, ApprovalStatus, Decision, RiskTier};
use cortex_core::job::{ErrorClass, JobKind, JobStatus};
use cortex_core::role::Role;
use cortex_testkit::{Engine, TestStore, both_engines};
use serde_json::{Value, json};

use crate::app::TestApp;

/// Every `enum` array anywhere in `value`, with the JSON path it was found at.
fn enums<'a>(value: &'a Value, path: String, found: &mut Vec<(String, &'a Vec<Value>)>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                if key == "enum"
                    && let Value::Array(values) = child
                {
                    found.push((path.clone(), values));
                } else {
                    enums(child, format!("{path}/{key}"), found);
                }
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                enums(item, format!("{path}/{index}"), found);
            }
        }
        _ => {}
    }
}

both_engines!(docs_page_describes_every_operation, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    // `/docs` first: the document is built by whichever of the two is asked for first.
    let page = app.get("/docs", &app.admin).await;
    assert_eq!(page.status(), 200);
    let content_type = page.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let html = page.text().await.unwrap();
    assert!(html.contains("<h1>Cortex Plane API</h1>"), "{html}");
    let json = app.get("/openapi.json", &app.admin).await;
    assert_eq!(json.status(), 200);
    assert_eq!(json.headers()["content-type"], "application/json");
    let document: Value = json.json().await.unwrap();
    let mut operations = 0;
    for (path, item) in document["paths"].as_object().unwrap() {
        let code = format!("<code>{}</code>", path.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;"));
        for method in ["get", "post", "put", "patch", "delete"].into_iter().filter(|m| item.get(*m).is_some()) {
            let entry = format!("<span class=\"m\">{method}</span>{code}");
            assert!(html.contains(&entry), "/docs lacks {method} {path}");
            operations += 1;
        }
    }
    assert!(operations >= 100, "only {operations} operations documented");
    assert_eq!(html.matches("<span class=\"m\">").count(), operations, "/docs lists exactly the documented operations");
    // Built once: later answers are the same texts.
    assert_eq!(app.get("/docs", &app.admin).await.text().await.unwrap(), html);
    let again: Value = app.get("/openapi.json", &app.admin).await.json().await.unwrap();
    assert_eq!(again, document);
    // A viewer may read both; without credentials neither is served.
    let viewer = app.key(Role::Viewer).await;
    assert_eq!(app.get("/docs", &viewer).await.status(), 200);
    assert_eq!(app.http.get(app.url("/docs")).send().await.unwrap().status(), 401);
});

#[tokio::test]
async fn openapi_enums_are_the_serialised_values() {
    let app = TestApp::spawn(TestStore::new(Engine::Sqlite).await).await;
    let document: Value = app.get("/openapi.json", &app.admin).await.json().await.unwrap();
    let mut found = Vec::new();
    enums(&document, String::new(), &mut found);
    assert!(found.len() >= 10, "the document declares its enums: {found:?}");
    for (path, values) in &found {
        for value in values.iter() {
            let text = value.as_str().unwrap_or_else(|| panic!("{path}: non-string enum value {value}"));
            assert!(
                !text.is_empty()
                    && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.".contains(&b)),
                "{path}: `{text}` is not a lower snake_case value as the API speaks it"
            );
        }
    }
    let schemas = &document["components"]["schemas"];
    let declared: [(&str, &[&str]); 11] = [
        ("Role", Role::NAMES),
        ("JobStatus", JobStatus::NAMES),
        ("JobKind", JobKind::NAMES),
        ("ErrorClass", ErrorClass::NAMES),
        ("AgentStatus", AgentStatus::NAMES),
        ("HealthState", HealthState::NAMES),
        ("AccessMode", AccessMode::NAMES),
        ("RiskTier", RiskTier::NAMES),
        ("ApprovalMode", ApprovalMode::NAMES),
        ("ApprovalStatus", ApprovalStatus::NAMES),
        ("Decision", Decision::NAMES),
    ];
    for (name, names) in declared {
        if let Some(schema) = schemas.get(name) {
            let listed: Vec<&str> = schema["enum"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
            assert_eq!(listed, names, "schema {name}");
        }
    }
    let serialised = serde_json::to_value(JobStatus::WaitingForApproval).unwrap();
    assert_eq!(serialised, json!("waiting_for_approval"));
}

/// `2026-01-01T00:00:00.000Z`: 24 characters, so timestamps sort as text.
fn is_fixed_width(text: &str) -> bool {
    text.len() == 24
        && text.ends_with('Z')
        && text.as_bytes()[19] == b'.'
        && chrono::DateTime::parse_from_rfc3339(text).is_ok()
}

#[tokio::test]
async fn timestamps_have_milliseconds_and_a_fixed_width() {
    let app = TestApp::spawn(TestStore::new(Engine::Sqlite).await).await;
    // The test clock stands on a whole second: exactly the case that used to drop `.000`.
    let agent = app.create_agent("Clock").await;
    let id = agent["id"].as_str().unwrap();
    let job: Value =
        app.post(&format!("/agents/{id}/jobs"), &app.admin, json!({"prompt": "tick"})).await.json().await.unwrap();
    let keys: Value = app.get("/api-keys", &app.admin).await.json().await.unwrap();
    for (what, text) in [
        ("agent.created_at", &agent["created_at"]),
        ("agent.updated_at", &agent["updated_at"]),
        ("job.created_at", &job["created_at"]),
        ("job.run_at", &job["run_at"]),
        ("api key created_at", &keys["items"][0]["created_at"]),
    ] {
        let text = text.as_str().unwrap_or_else(|| panic!("{what} missing: {agent} {job}"));
        assert!(is_fixed_width(text), "{what} = {text}");
    }
}
