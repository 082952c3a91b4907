//! Approvals over HTTP: list, detail with audit chain, decide (roles, finality), decide by token.

use cortex_core::role::Role;
use cortex_testkit::{TestStore, both_engines};
use serde_json::{Value, json};

use crate::app::{TestApp, error_code};
use crate::chat::start_engine;

async fn pending_approval(app: &TestApp) -> (String, String) {
    let agent = app.create_agent(&format!("Gate {}", uuid::Uuid::now_v7())).await;
    let reply: Value = app
        .post(
            &format!("/agents/{}/chat?wait=true", agent["id"].as_str().unwrap()),
            &app.admin,
            json!({"text": "approve please"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(reply["status"], "waiting_for_approval");
    (reply["approval_id"].as_str().unwrap().to_owned(), reply["job_id"].as_str().unwrap().to_owned())
}

both_engines!(approvals_are_listed_decided_once_and_audited, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    let _engine = start_engine(&app).drop_guard();
    let (approval_id, job_id) = pending_approval(&app).await;

    let pending: Value = app.get("/approvals?status=pending", &app.admin).await.json().await.unwrap();
    assert_eq!(pending["items"][0]["id"], approval_id.as_str());
    assert_eq!(pending["items"][0]["risk"], "p1");

    let operator = app.key(Role::Operator).await;
    let denied = app.post(&format!("/approvals/{approval_id}/decide"), &operator, json!({"decision": "approve"})).await;
    assert_eq!(denied.status(), 403);

    let approver = app.key(Role::Approver).await;
    let decided = app
        .post(&format!("/approvals/{approval_id}/decide"), &approver, json!({"decision": "approve", "reason": "ok"}))
        .await;
    assert_eq!(decided.status(), 200);
    let decided: Value = decided.json().await.unwrap();
    assert_eq!(decided["status"], "approved");
    assert_eq!(decided["chain_valid"], true);
    let events: Vec<&str> = decided["audit"].as_array().unwrap().iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["created", "unauthorized_attempt", "decided"]);
    let metrics = app.get("/metrics", &app.admin).await.text().await.unwrap();
    assert!(metrics.contains("cortex_approvals_pending"), "{metrics}");
    assert!(metrics.contains(r#"cortex_approvals_total{risk="p1",outcome="approved"}"#), "{metrics}");

    let again = app.post(&format!("/approvals/{approval_id}/decide"), &approver, json!({"decision": "reject"})).await;
    assert_eq!(again.status(), 409);
    assert_eq!(error_code(again).await, "already_decided");
    let bad = app.post(&format!("/approvals/{approval_id}/decide"), &approver, json!({"decision": "maybe"})).await;
    assert_eq!(bad.status(), 400);

    // The job resumed: it no longer waits on this request (the stand-in handler may park it again on a new one).
    let job: Value = app.get(&format!("/jobs/{job_id}"), &app.admin).await.json().await.unwrap();
    assert!(job["status"] != "waiting_for_approval" || job["approval_id"] != approval_id.as_str(), "{job}");
});

both_engines!(a_token_decides_with_any_authenticated_caller, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    let agent = app.create_agent("Tokened").await;
    // A request created directly in the store hands us the one-time token.
    let job = {
        let mut tx = app.test.store.begin().await.unwrap();
        let (job, _) = tx
            .insert_job(&cortex_store::jobs::NewJob {
                agent_id: agent["id"].as_str().unwrap().parse().unwrap(),
                session_id: None,
                kind: cortex_core::job::JobKind::Task,
                priority: 0,
                payload: json!({"prompt": "x"}),
                max_attempts: 1,
                timeout_seconds: 60,
                run_at: None,
                parent_job_id: None,
                delegation_depth: 0,
                idempotency_key: None,
                created_by: None,
            })
            .await
            .unwrap();
        tx.commit().await.unwrap();
        job
    };
    let mut tx = app.test.store.begin().await.unwrap();
    let (approval, token) = tx
        .insert_approval(&cortex_store::approvals::NewApproval {
            job_id: job.id,
            tool_call_id: None,
            agent_id: job.agent_id,
            action_type: "request",
            action_summary: "agent asks".into(),
            action_detail: json!({}),
            tool_ref: None,
            args_hash: None,
            risk: cortex_core::approval::RiskTier::P2,
            expires_at: chrono::Utc::now() + chrono::Duration::days(3),
        })
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let viewer = app.key(Role::Viewer).await;
    let wrong = app
        .post("/approvals/decide-by-token", &viewer, json!({"token": "cortex_apr_1_nope", "decision": "approve"}))
        .await;
    assert_eq!(wrong.status(), 404);
    let decided = app
        .post("/approvals/decide-by-token", &viewer, json!({"token": token, "decision": "reject", "reason": "no"}))
        .await;
    assert_eq!(decided.status(), 200);
    let decided: Value = decided.json().await.unwrap();
    assert_eq!(decided["id"], approval.id.to_string());
    assert_eq!(decided["decided_via"], "token");
    let reused = app.post("/approvals/decide-by-token", &viewer, json!({"token": token, "decision": "approve"})).await;
    assert_eq!(reused.status(), 409);
});
