//! `Idempotency-Key`: a retried request gets the first answer; the same key with another request — a
//! different body, or a chat reusing a task's key — is refused with 409 `idempotency_conflict` instead of
//! silently answering for something else.

use cortex_testkit::{TestStore, both_engines};
use serde_json::{Value, json};

use crate::app::{TestApp, error_code};

async fn post_keyed(app: &TestApp, path: &str, key: &str, body: Value) -> reqwest::Response {
    app.http
        .post(app.url(path))
        .bearer_auth(&app.admin)
        .header("Idempotency-Key", key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

both_engines!(a_key_answers_only_for_its_own_request, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    let agent = app.create_agent("Keyed").await;
    let id = agent["id"].as_str().unwrap();
    let (jobs, chat) = (format!("/agents/{id}/jobs"), format!("/agents/{id}/chat"));

    let created = post_keyed(&app, &jobs, "task-1", json!({"prompt": "summarise"})).await;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    let retried = post_keyed(&app, &jobs, "task-1", json!({"prompt": "summarise"})).await;
    assert_eq!(retried.status(), 200);
    assert_eq!(retried.json::<Value>().await.unwrap()["id"], created["id"]);

    let changed = post_keyed(&app, &jobs, "task-1", json!({"prompt": "summarise", "priority": 5})).await;
    assert_eq!(changed.status(), 409);
    assert_eq!(error_code(changed).await, "idempotency_conflict");
    let chat_on_task_key = post_keyed(&app, &chat, "task-1", json!({"text": "hello"})).await;
    assert_eq!(chat_on_task_key.status(), 409, "a chat never answers with a task's job");
    assert_eq!(error_code(chat_on_task_key).await, "idempotency_conflict");

    let first = post_keyed(&app, &chat, "chat-1", json!({"text": "hello"})).await;
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    let again: Value = post_keyed(&app, &chat, "chat-1", json!({"text": "hello"})).await.json().await.unwrap();
    assert_eq!((&again["job_id"], &again["session_id"]), (&first["job_id"], &first["session_id"]));
    let session = first["session_id"].as_str().unwrap();
    assert_ne!(session, uuid::Uuid::nil().to_string());
    let messages: Value = app.get(&format!("/sessions/{session}/messages"), &app.admin).await.json().await.unwrap();
    assert_eq!(messages["items"].as_array().unwrap().len(), 1, "the retried message is stored once");
    let other_text = post_keyed(&app, &chat, "chat-1", json!({"text": "goodbye"})).await;
    assert_eq!(error_code(other_text).await, "idempotency_conflict");
});
