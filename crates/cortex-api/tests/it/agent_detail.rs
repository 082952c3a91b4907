//! The agent detail tabs and the health controls behind them (SPEC §5.7, §11.2 "Agent detail"):
//! quarantine, release and kill over HTTP (roles, reasons, audit, the `agent.health` event, queued jobs
//! waiting and running ones cancelled); the live-output page shows the controls to operators only and a
//! crafted request of a viewer is refused; sessions and a session's history; cost per day and per job
//! kind with an empty state.

use chrono::Duration;
use cortex_core::clock::Clock as _;
use cortex_core::event::EventType;
use cortex_core::job::JobStatus;
use cortex_core::role::Role;
use cortex_store::audit::AuditFilter;
use cortex_store::events::EventScope;
use cortex_store::jobs::JobUsage;
use cortex_testkit::{TestStore, both_engines};
use serde_json::{Value, json};

use crate::app::{TestApp, error_code};
use crate::dashboard::{login, user};

both_engines!(quarantine_release_and_kill_change_health_and_stop_work, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    let agent = app.create_agent("Runaway").await;
    let id = agent["id"].as_str().unwrap().to_owned();
    let agent_id: uuid::Uuid = id.parse().unwrap();
    let viewer = app.key(Role::Viewer).await;
    let operator = app.key(Role::Operator).await;
    for action in ["quarantine", "release", "kill"] {
        let refused = app.post(&format!("/agents/{id}/{action}"), &viewer, json!({"reason": "no"})).await;
        assert_eq!(refused.status(), 403, "a viewer may not {action}");
    }
    for body in
        [json!({"reason": "  "}), json!({}), json!({"reason": "x".repeat(501)}), json!({"reason": "ok", "x": 1})]
    {
        let refused = app.post(&format!("/agents/{id}/quarantine"), &operator, body.clone()).await;
        assert_eq!(refused.status(), 400, "{body}");
    }
    let unknown = app.post("/agents/nobody/quarantine", &operator, json!({"reason": "r"})).await;
    assert_eq!(unknown.status(), 404);
    let seen = app.test.store.last_event_seq().await.unwrap();

    let quarantined =
        app.post(&format!("/agents/{id}/quarantine"), &operator, json!({"reason": "loops on search"})).await;
    assert_eq!(quarantined.status(), 200);
    let quarantined: Value = quarantined.json().await.unwrap();
    assert_eq!(quarantined["health_state"], "quarantined");
    assert_eq!(quarantined["reason"], "loops on search");
    let shown: Value = app.get(&format!("/agents/{id}"), &viewer).await.json().await.unwrap();
    assert_eq!(shown["health_state"], "quarantined");
    assert_eq!(shown["quarantine_reason"], "loops on search");

    // Queued work waits: it is neither claimed nor failed.
    let worker = cortex_core::new_id();
    app.test.store.register_worker(worker, "test").await.unwrap();
    let queued = app.post(&format!("/agents/{id}/jobs"), &operator, json!({"prompt": "later"})).await;
    let queued: uuid::Uuid = queued.json::<Value>().await.unwrap()["id"].as_str().unwrap().parse().unwrap();
    assert!(app.test.store.claim_next(worker, false).await.unwrap().is_none(), "quarantined: no claim");
    let waits = |status: JobStatus| matches!(status, JobStatus::Pending | JobStatus::Scheduled);
    assert!(waits(app.test.store.get_job(queued).await.unwrap().status), "queued, not failed");

    let released = app.post(&format!("/agents/{id}/release"), &operator, json!({})).await;
    assert_eq!(released.status(), 200);
    let released: Value = released.json().await.unwrap();
    assert_eq!(released["health_state"], "healthy");
    assert!(released["reason"].is_null());
    let agent_row = app.test.store.get_agent_by_id(agent_id).await.unwrap();
    assert_eq!(agent_row.health_reset_at, Some(app.test.clock.now()), "a new breaker window");

    // Kill: the running job is told to stop, queued ones wait for the release.
    let running = app.test.store.claim_next(worker, false).await.unwrap().expect("released: claimed again");
    assert_eq!(running.id, queued);
    let waiting = app.post(&format!("/agents/{id}/jobs"), &operator, json!({"prompt": "after"})).await;
    let waiting: uuid::Uuid = waiting.json::<Value>().await.unwrap()["id"].as_str().unwrap().parse().unwrap();
    let killed = app.post(&format!("/agents/{id}/kill"), &operator, json!({"reason": "spending too much"})).await;
    assert_eq!(killed.status(), 200);
    let killed: Value = killed.json().await.unwrap();
    assert_eq!(killed["health_state"], "quarantined");
    assert_eq!(killed["cancelled_jobs"], 1, "{killed}");
    assert!(app.test.store.get_job(running.id).await.unwrap().cancel_requested, "the running job stops");
    assert!(waits(app.test.store.get_job(waiting).await.unwrap().status), "queued jobs wait for the release");

    let events = app.test.store.events_after(EventScope::Agent(agent_id), seen, 100).await.unwrap();
    let health: Vec<&Value> =
        events.iter().filter(|event| event.event_type == EventType::AgentHealth).map(|event| &event.payload).collect();
    assert_eq!(health.len(), 3, "{health:?}");
    assert_eq!(health[0]["to"], "quarantined");
    assert_eq!(health[1]["to"], "healthy");
    assert_eq!(health[2]["action"], "agent.kill");
    for action in ["agent.quarantine", "agent.release", "agent.kill"] {
        let filter = AuditFilter { action: Some(action.into()), ..AuditFilter::default() };
        let audit = app.test.store.list_audit(&filter, None, 10).await.unwrap();
        assert_eq!(audit.items.len(), 1, "{action} audited");
    }
});

both_engines!(the_live_output_tab_shows_controls_to_operators_only, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    let agent = app.create_agent("Watched").await;
    let id = agent["id"].as_str().unwrap().to_owned();
    user(&app, "operator@example.com", Role::Operator).await;
    user(&app, "viewer@example.com", Role::Viewer).await;
    let operator = login(&app, "operator@example.com").await;
    let viewer = login(&app, "viewer@example.com").await;

    let page = operator.get(&app, &format!("/ui/agents/{id}/live")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    for control in ["/steer\"", "/quarantine\"", "/kill\"", "data-agent-stream=\"/agents/"] {
        assert!(page.contains(control), "{control} in {page}");
    }
    assert!(!page.contains("/release\""), "a healthy agent offers no release");

    let page = viewer.get(&app, &format!("/ui/agents/{id}/live")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("data-agent-stream"), "viewers watch too");
    for control in ["/steer\"", "/quarantine\"", "/kill\"", "/release\""] {
        assert!(!page.contains(control), "no {control} for a viewer: {page}");
    }
    assert!(page.contains("need the operator role"), "the reason is given");
    // The API enforces the role whatever the page shows.
    let crafted = viewer.post(&app, &format!("/agents/{id}/kill"), json!({"reason": "because"})).send().await.unwrap();
    assert_eq!(crafted.status(), 403);
    assert_eq!(error_code(crafted).await, "forbidden");

    // The page's forms send these bodies; a quarantined agent then offers release and shows its reason.
    let quarantine = operator.post(&app, &format!("/agents/{id}/quarantine"), json!({"reason": "odd answers"}));
    assert_eq!(quarantine.send().await.unwrap().status(), 200);
    let page = operator.get(&app, &format!("/ui/agents/{id}/live")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("/release\"") && page.contains("odd answers"), "{page}");
    let steer = json!({"instruction": "wrap up", "priority": "normal", "queue": true});
    assert_eq!(operator.post(&app, &format!("/agents/{id}/steer"), steer).send().await.unwrap().status(), 202);
});

both_engines!(sessions_and_history_tabs_list_conversations, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    let agent = app.create_agent("Talker").await;
    let id = agent["id"].as_str().unwrap().to_owned();
    let other = app.create_agent("Other").await["id"].as_str().unwrap().to_owned();
    let page = app.get(&format!("/ui/agents/{id}/sessions"), &app.admin).await.text().await.unwrap();
    assert!(page.contains("No sessions yet"), "empty state: {page}");

    let person = user(&app, "person@example.com", Role::Viewer).await;
    let mut tx = app.test.store.begin().await.unwrap();
    let session = tx.insert_session(id.parse().unwrap(), Some(person), "telegram").await.unwrap();
    tx.append_message(session.id, "user", "What is the deploy window?", None, None).await.unwrap();
    tx.append_message(session.id, "assistant", "Tuesdays at ten.", None, None).await.unwrap();
    tx.commit().await.unwrap();

    let page = app.get(&format!("/ui/agents/{id}/sessions"), &app.admin).await;
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(page.contains("viewer person") && page.contains("telegram"), "{page}");
    assert!(page.contains(&format!("/ui/agents/{id}/sessions/{}", session.id)), "linked: {page}");
    let history = app.get(&format!("/ui/agents/{id}/sessions/{}", session.id), &app.admin).await;
    assert_eq!(history.status(), 200);
    let history = history.text().await.unwrap();
    let (question, answer) = (history.find("What is the deploy window?"), history.find("Tuesdays at ten."));
    assert!(question.is_some() && answer.is_some() && question < answer, "oldest first: {history}");
    // A session is shown only under its own agent; bad ids and cursors are errors in words.
    let elsewhere = app.get(&format!("/ui/agents/{other}/sessions/{}", session.id), &app.admin).await;
    assert_eq!(elsewhere.status(), 404);
    assert_eq!(app.get(&format!("/ui/agents/{id}/sessions/nope"), &app.admin).await.status(), 404);
    assert_eq!(app.get(&format!("/ui/agents/{id}/sessions?cursor=garbage"), &app.admin).await.status(), 400);
});

/// Queues a task job of `agent`; returns its id.
async fn task(app: &TestApp, agent: &str, prompt: &str) -> uuid::Uuid {
    let created = app.post(&format!("/agents/{agent}/jobs"), &app.admin, json!({"prompt": prompt})).await;
    created.json::<Value>().await.unwrap()["id"].as_str().unwrap().parse().unwrap()
}

/// Adds model usage to a job, as the runtime does after a model call.
async fn add_usage(app: &TestApp, job: uuid::Uuid, usage: JobUsage) {
    let mut tx = app.test.store.begin().await.unwrap();
    tx.add_job_usage(job, &usage).await.unwrap();
    tx.commit().await.unwrap();
}

both_engines!(the_cost_tab_charts_tokens_and_cost_per_day_and_kind, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    let agent = app.create_agent("Spender").await;
    let id = agent["id"].as_str().unwrap().to_owned();
    let page = app.get(&format!("/ui/agents/{id}/cost"), &app.admin).await;
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("No usage in the last 14 days"), "empty state");

    // Three days ago a task; today a task and a chat. An older job is outside the window.
    let spend = |tokens_in: i64, tokens_out: i64, cost_usd: f64| JobUsage {
        tokens_in,
        tokens_out,
        cost_usd,
        ..JobUsage::default()
    };
    let ancient = task(&app, &id, "long ago").await;
    add_usage(&app, ancient, spend(1_000_000, 1_000_000, 99.0)).await;
    app.test.clock.advance(Duration::days(20));
    let old = task(&app, &id, "three days ago").await;
    add_usage(&app, old, spend(100, 50, 0.25)).await;
    app.test.clock.advance(Duration::days(3));
    let today = task(&app, &id, "today").await;
    add_usage(&app, today, spend(300, 100, 1.0)).await;
    let chat = app.post(&format!("/agents/{id}/chat"), &app.admin, json!({"text": "hi"})).await;
    let chat: uuid::Uuid = chat.json::<Value>().await.unwrap()["job_id"].as_str().unwrap().parse().unwrap();
    add_usage(&app, chat, spend(10, 10, 0.5)).await;

    let page = app.get(&format!("/ui/agents/{id}/cost"), &app.admin).await.text().await.unwrap();
    assert!(page.contains("3 jobs, 570 tokens, $1.7500"), "totals of the window only: {page}");
    let today_label = app.test.clock.now().date_naive().to_string();
    let old_label = (app.test.clock.now() - Duration::days(3)).date_naive().to_string();
    assert_eq!(page.matches("<th scope=\"row\">20").count(), 14, "one row per day: {page}");
    let row = |label: &str| {
        let start = page.find(&format!("<th scope=\"row\">{label}</th>")).unwrap_or_else(|| panic!("{label}: {page}"));
        page[start..start + page[start..].find("</tr>").unwrap()].to_owned()
    };
    let today_row = row(&today_label);
    assert!(today_row.contains("420") && today_row.contains("$1.5000"), "{today_row}");
    assert!(today_row.contains("<rect width=\"100.0\""), "today is the largest bar: {today_row}");
    let old_row = row(&old_label);
    assert!(old_row.contains("150") && old_row.contains("$0.2500"), "{old_row}");
    let task_row = row("task");
    assert!(task_row.contains("550") && task_row.contains("$1.2500"), "per kind: {task_row}");
    let chat_row = row("chat");
    assert!(chat_row.contains("20") && chat_row.contains("$0.5000"), "{chat_row}");
    assert!(page.contains("aria-hidden=\"true\""), "the bars are decoration; the table carries the numbers");
});
