//! Contract hygiene (issue 12, point 18): the OpenAPI document's enums are exactly the values the API
//! speaks, and every timestamp has the same fixed width (RFC 3339, milliseconds, `Z`).

use cortex_core::agent::{AccessMode, AgentStatus, HealthState};
use cortex_core::approval::{ApprovalMode, ApprovalStatus, Decision, RiskTier};
use cortex_core::job::{ErrorClass, JobKind, JobStatus};
use cortex_core::role::Role;
use cortex_testkit::{Engine, TestStore};
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
