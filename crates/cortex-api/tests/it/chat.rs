//! Chat over HTTP with a real job engine and a stand-in handler (the LLM loop is tested in cortex-runtime).

use std::sync::Arc;

use async_trait::async_trait;
use cortex_core::approval::RiskTier;
use cortex_core::job::JobKind;
use cortex_jobs::{EngineConfig, JobContext, JobEngine, JobHandler, Outcome};
use cortex_store::approvals::NewApproval;
use cortex_store::jobs::Suspend;
use cortex_testkit::{TestStore, both_engines};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::app::{TestApp, error_code};

/// Answers `echo: <text>`; a message starting with `approve` instead parks the job for an approval.
struct Echo;

#[async_trait]
impl JobHandler for Echo {
    async fn run(&self, ctx: JobContext) -> Outcome {
        let message = ctx.store.message_of_job(ctx.job.id, "user").await.unwrap().unwrap();
        if message.content.starts_with("approve") {
            let mut tx = ctx.store.begin().await.unwrap();
            let (approval, _) = tx
                .insert_approval(&NewApproval {
                    job_id: ctx.job.id,
                    tool_call_id: None,
                    agent_id: ctx.job.agent_id,
                    action_type: "tool",
                    action_summary: "do the risky thing".into(),
                    action_detail: json!({"tool_ref": "echo"}),
                    tool_ref: Some("echo".into()),
                    args_hash: None,
                    risk: RiskTier::P1,
                    expires_at: ctx.clock.now() + chrono::Duration::hours(24),
                })
                .await
                .unwrap();
            tx.suspend(ctx.job.id, ctx.worker_id, Suspend::AwaitApproval, Some(approval.id)).await.unwrap();
            tx.commit().await.unwrap();
            return Outcome::Suspended;
        }
        let mut tx = ctx.store.begin().await.unwrap();
        let reply = format!("echo: {}", message.content);
        tx.append_message(message.session_id, "assistant", &reply, Some(ctx.job.id), None).await.unwrap();
        tx.commit().await.unwrap();
        Outcome::Completed(json!({"response": reply}))
    }
}

pub fn start_engine(app: &TestApp) -> CancellationToken {
    let engine = JobEngine::new(app.test.store.clone(), EngineConfig::with_name("api-test"))
        .with_handler(JobKind::Chat, Arc::new(Echo));
    let stop = CancellationToken::new();
    let signal = stop.clone();
    tokio::spawn(engine.run(async move { signal.cancelled().await }));
    stop
}

both_engines!(chat_waits_for_the_reply_and_continues_the_session, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    let _engine = start_engine(&app).drop_guard();
    let agent = app.create_agent("Talker").await;
    let path = format!("/agents/{}/chat?wait=true", agent["slug"].as_str().unwrap());

    let first = app.post(&path, &app.admin, json!({"text": "hello"})).await;
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["status"], "completed");
    assert_eq!(first["response"], "echo: hello");
    let session = first["session_id"].as_str().unwrap().to_owned();

    let second: Value =
        app.post(&path, &app.admin, json!({"text": "again", "session_id": session})).await.json().await.unwrap();
    assert_eq!(second["session_id"], session.as_str());
    let messages: Value = app.get(&format!("/sessions/{session}/messages"), &app.admin).await.json().await.unwrap();
    let contents: Vec<&str> =
        messages["items"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap()).collect();
    assert_eq!(contents, ["hello", "echo: hello", "again", "echo: again"], "each message stored once, in order");

    let no_wait = app
        .post(&format!("/agents/{}/chat", agent["slug"].as_str().unwrap()), &app.admin, json!({"text": "later"}))
        .await;
    assert_eq!(no_wait.status(), 202);
    let no_wait: Value = no_wait.json().await.unwrap();
    assert!(no_wait["job_id"].is_string() && no_wait["session_id"].is_string());
});

both_engines!(chat_reports_an_approval_wait, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    let _engine = start_engine(&app).drop_guard();
    let agent = app.create_agent("Careful").await;
    let reply: Value = app
        .post(
            &format!("/agents/{}/chat?wait=true", agent["id"].as_str().unwrap()),
            &app.admin,
            json!({"text": "approve this"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(reply["status"], "waiting_for_approval");
    assert!(reply["approval_id"].is_string());
});

both_engines!(chat_input_is_validated, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    let agent = app.create_agent("Strict").await;
    let other = app.create_agent("Other").await;
    let path = format!("/agents/{}/chat", agent["id"].as_str().unwrap());
    let too_long = app.post(&path, &app.admin, json!({"text": "x".repeat(50_001)})).await;
    assert_eq!(too_long.status(), 413);
    assert_eq!(app.post(&path, &app.admin, json!({"text": " "})).await.status(), 400);
    assert_eq!(
        app.post(&format!("{path}?wait=true&timeout_seconds=0"), &app.admin, json!({"text": "x"})).await.status(),
        400
    );
    let foreign: Value = app
        .post(&format!("/agents/{}/chat", other["id"].as_str().unwrap()), &app.admin, json!({"text": "x"}))
        .await
        .json()
        .await
        .unwrap();
    let wrong_session = app.post(&path, &app.admin, json!({"text": "x", "session_id": foreign["session_id"]})).await;
    assert_eq!(wrong_session.status(), 404);
    let session = foreign["session_id"].as_str().unwrap();
    app.http.delete(app.url(&format!("/sessions/{session}"))).bearer_auth(&app.admin).send().await.unwrap();
    let closed = app
        .post(
            &format!("/agents/{}/chat", other["id"].as_str().unwrap()),
            &app.admin,
            json!({"text": "x", "session_id": session}),
        )
        .await;
    assert_eq!(closed.status(), 409);
    // No engine runs here: a short wait ends with 202 and the async shape.
    let waited = app.post(&format!("{path}?wait=true&timeout_seconds=1"), &app.admin, json!({"text": "x"})).await;
    assert_eq!(waited.status(), 202);
    assert_eq!(waited.json::<Value>().await.unwrap()["status"], "scheduled");
    let viewer = app.key(cortex_core::role::Role::Viewer).await;
    let denied = app.post(&path, &viewer, json!({"text": "x"})).await;
    assert_eq!(error_code(denied).await, "forbidden");
});
