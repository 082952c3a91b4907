//! `GET /agents/{id}/health` (SPEC §5.7) [viewer]: status, health state (quarantine as stored, `degraded`
//! derived from an MCP server in `error`), the breaker's count, the model candidates' breakers, the MCP
//! servers of the agent's enabled tools, the browser, running jobs, the newest job and today's usage; and the
//! gauge `cortex_agent_quarantined{agent}`.

use chrono::SecondsFormat;
use cortex_core::clock::Clock as _;
use cortex_core::job::{ErrorClass, JobError};
use cortex_core::role::Role;
use cortex_jobs::AutoQuarantine;
use cortex_store::jobs::{AttemptEnd, JobUsage};
use cortex_store::mcp::NewMcpServer;
use cortex_store::tools::ToolPolicy;
use cortex_testkit::{TestStore, both_engines};
use serde_json::{Value, json};

use crate::app::TestApp;

both_engines!(health_reports_breaker_providers_mcp_and_activity, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    let agent = app.create_agent("Checked").await;
    let id = agent["id"].as_str().unwrap().to_owned();
    let agent_id: uuid::Uuid = id.parse().unwrap();
    let viewer = app.key(Role::Viewer).await;
    let store = &app.test.store;

    let fresh = app.get(&format!("/agents/{id}/health"), &viewer).await;
    assert_eq!(fresh.status(), 200, "viewers may read it");
    let fresh = fresh.text().await.unwrap();
    assert!(fresh.contains(r#""cost_usd":0.0"#), "no spend prints as 0.0, not -0.0: {fresh}");
    let fresh: Value = serde_json::from_str(&fresh).unwrap();
    assert_eq!(
        fresh,
        json!({
            "agent_id": id, "status": "active", "health_state": "healthy",
            "breaker": {"consecutive_failures": 0, "threshold": 3},
            "providers": [{"provider": "openai", "model": "gpt-4o-mini", "breaker_state": "closed"}],
            "mcp": [], "browser": {"state": "unavailable"}, "running_jobs": 0, "last_job_at": null,
            "usage_today": {"tokens": 0, "cost_usd": 0.0},
        })
    );
    assert_eq!(app.get(&format!("/agents/{id}/health"), "").await.status(), 401);
    assert_eq!(app.get("/agents/nobody/health", &viewer).await.status(), 404);

    // One job failed for good (it counts), one runs, both spent tokens today.
    let worker = cortex_core::new_id();
    store.register_worker(worker, "test").await.unwrap();
    for prompt in ["fails", "runs"] {
        let created = app.post(&format!("/agents/{id}/jobs"), &app.admin, json!({"prompt": prompt})).await;
        let job: uuid::Uuid = created.json::<Value>().await.unwrap()["id"].as_str().unwrap().parse().unwrap();
        let mut tx = store.begin().await.unwrap();
        tx.add_job_usage(job, &JobUsage { tokens_in: 100, tokens_out: 20, cost_usd: 0.5, ..JobUsage::default() })
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    let failing = store.claim_next(worker, false).await.unwrap().unwrap();
    let error = JobError::final_(ErrorClass::Transient, "server_error", "HTTP 500");
    let mut tx = store.begin().await.unwrap();
    let failed = tx.end_attempt(failing.id, worker, &AttemptEnd::Failed { error: error.clone() }).await.unwrap();
    cortex_jobs::settle_failure(&mut tx, failed, &error, AutoQuarantine::On).await.unwrap();
    tx.commit().await.unwrap();
    store.claim_next(worker, false).await.unwrap().unwrap();

    // An enabled tool of an MCP server in `error` makes the agent degraded.
    let server = cortex_core::new_id();
    let mut tx = store.begin().await.unwrap();
    tx.insert_mcp_server(&NewMcpServer {
        id: server,
        name: "Search".into(),
        slug: "search".into(),
        transport: "http".into(),
        command: None,
        args: vec![],
        env_enc: None,
        env_keys: vec![],
        url: Some("http://127.0.0.1:9/mcp".into()),
        headers_enc: None,
        header_keys: vec![],
        probe_interval_seconds: 60,
        trusted: false,
    })
    .await
    .unwrap();
    tx.set_mcp_status(server, "error", Some("connection refused"), None).await.unwrap();
    tx.upsert_tool_policy(&ToolPolicy::enabled_by_risk(agent_id, "mcp:search:find")).await.unwrap();
    tx.commit().await.unwrap();

    let busy: Value = app.get(&format!("/agents/{id}/health"), &viewer).await.json().await.unwrap();
    assert_eq!(busy["health_state"], "degraded", "{busy}");
    assert_eq!(busy["reason"], "MCP server search in error");
    assert_eq!(busy["mcp"], json!([{"server": "search", "status": "error", "last_error": "connection refused"}]));
    assert_eq!(busy["breaker"], json!({"consecutive_failures": 1, "threshold": 3}));
    assert_eq!(busy["running_jobs"], 1);
    assert_eq!(busy["last_job_at"], app.test.clock.now().to_rfc3339_opts(SecondsFormat::Millis, true));
    assert_eq!(busy["usage_today"], json!({"tokens": 240, "cost_usd": 1.0}));

    let operator = app.key(Role::Operator).await;
    let quarantine = app.post(&format!("/agents/{id}/quarantine"), &operator, json!({"reason": "odd"})).await;
    assert_eq!(quarantine.status(), 200);
    let held: Value = app.get(&format!("/agents/{id}/health"), &viewer).await.json().await.unwrap();
    assert_eq!((held["health_state"].as_str(), held["reason"].as_str()), (Some("quarantined"), Some("odd")));

    // `/metrics` recounts at most once a second (by the store's clock).
    let gauge = |text: &str| {
        text.lines().find(|line| line.starts_with("cortex_agent_quarantined{agent=\"checked\"}")).map(str::to_owned)
    };
    app.test.clock.advance(chrono::Duration::seconds(2));
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert_eq!(gauge(&metrics).as_deref(), Some("cortex_agent_quarantined{agent=\"checked\"} 1"), "{metrics}");
    assert_eq!(app.post(&format!("/agents/{id}/release"), &operator, json!({})).await.status(), 200);
    app.test.clock.advance(chrono::Duration::seconds(2));
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert_eq!(gauge(&metrics).as_deref(), Some("cortex_agent_quarantined{agent=\"checked\"} 0"), "released");
});
