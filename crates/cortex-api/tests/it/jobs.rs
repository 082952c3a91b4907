//! Jobs over HTTP: creation, idempotency, listing, cancel/retry and the event stream with replay.

use cortex_testkit::{TestStore, both_engines};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::app::{TestApp, error_code};

/// Reads SSE frames until `stop` says enough; returns (id, event, data) triples.
async fn read_events(response: reqwest::Response, stop: impl Fn(&str) -> bool) -> Vec<(i64, String, Value)> {
    let mut events = Vec::new();
    let mut buffer = String::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        buffer.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            let (mut id, mut event, mut data) = (0, String::new(), Value::Null);
            for line in frame.lines() {
                if let Some(value) = line.strip_prefix("id: ") {
                    id = value.parse().unwrap();
                } else if let Some(value) = line.strip_prefix("event: ") {
                    event = value.to_owned();
                } else if let Some(value) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(value).unwrap();
                }
            }
            if !event.is_empty() {
                let done = stop(&event);
                events.push((id, event, data));
                if done {
                    return events;
                }
            }
        }
    }
    events
}

both_engines!(jobs_are_created_listed_and_cancelled, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    let agent = app.create_agent("Worker").await;
    let path = format!("/agents/{}/jobs", agent["slug"].as_str().unwrap());
    let created = app.post(&path, &app.admin, json!({"prompt": "summarise", "priority": 10})).await;
    assert_eq!(created.status(), 201);
    let job: Value = created.json().await.unwrap();
    assert_eq!(job["status"], "scheduled");
    assert_eq!(job["kind"], "task");

    let invalid = app.post(&path, &app.admin, json!({"prompt": "x", "max_attempts": 11})).await;
    assert_eq!(invalid.status(), 400);
    let empty = app.post(&path, &app.admin, json!({"prompt": "  "})).await;
    assert_eq!(empty.status(), 400);

    let repeated = || {
        app.http
            .post(app.url(&path))
            .bearer_auth(&app.admin)
            .header("idempotency-key", "abc")
            .json(&json!({"prompt": "once"}))
            .send()
    };
    let first: Value = repeated().await.unwrap().json().await.unwrap();
    let second = repeated().await.unwrap();
    assert_eq!(second.status(), 200);
    assert_eq!(second.json::<Value>().await.unwrap()["id"], first["id"]);

    let listed: Value =
        app.get(&format!("/jobs?agent_id={}", agent["id"].as_str().unwrap()), &app.admin).await.json().await.unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);

    let job_id = job["id"].as_str().unwrap();
    let cancelled =
        app.http.post(app.url(&format!("/jobs/{job_id}/cancel"))).bearer_auth(&app.admin).send().await.unwrap();
    assert_eq!(cancelled.status(), 202);
    let again = app.http.post(app.url(&format!("/jobs/{job_id}/cancel"))).bearer_auth(&app.admin).send().await.unwrap();
    assert_eq!(again.status(), 409);
    assert_eq!(error_code(again).await, "invalid_state");
    let detail: Value = app.get(&format!("/jobs/{job_id}"), &app.admin).await.json().await.unwrap();
    assert_eq!(detail["status"], "failed");
    assert_eq!(detail["error"]["code"], "cancelled");

    let retried =
        app.http.post(app.url(&format!("/jobs/{job_id}/retry"))).bearer_auth(&app.admin).send().await.unwrap();
    assert_eq!(retried.status(), 202);
    assert_eq!(retried.json::<Value>().await.unwrap()["status"], "scheduled");
    let not_retryable =
        app.http.post(app.url(&format!("/jobs/{job_id}/retry"))).bearer_auth(&app.admin).send().await.unwrap();
    assert_eq!(not_retryable.status(), 409);

    let disabled = app
        .http
        .patch(app.url(&format!("/agents/{}", agent["id"].as_str().unwrap())))
        .bearer_auth(&app.admin)
        .json(&json!({"status": "disabled"}))
        .send()
        .await
        .unwrap();
    assert_eq!(disabled.status(), 200);
    let refused = app.post(&path, &app.admin, json!({"prompt": "more"})).await;
    assert_eq!(refused.status(), 409);
    assert_eq!(error_code(refused).await, "agent_not_active");
});

/// `2026-09-21T12:53:20.000Z`: RFC 3339 UTC with exactly three fractional digits.
fn is_fixed_width_time(text: &str) -> bool {
    text.len() == 24
        && text.ends_with('Z')
        && text.as_bytes()[19] == b'.'
        && chrono::DateTime::parse_from_rfc3339(text).is_ok()
}

both_engines!(job_events_replay_then_end_at_the_terminal_event, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    let agent = app.create_agent("Evented").await;
    let job: Value = app
        .post(&format!("/agents/{}/jobs", agent["id"].as_str().unwrap()), &app.admin, json!({"prompt": "go"}))
        .await
        .json()
        .await
        .unwrap();
    let job_id = job["id"].as_str().unwrap().to_owned();
    let events_url = app.url(&format!("/jobs/{job_id}/events"));

    // Follow live: the stream is open before the job ends, and closes after job.failed.
    let live = app.http.get(&events_url).bearer_auth(&app.admin).send().await.unwrap();
    assert_eq!(live.status(), 200);
    let reader = tokio::spawn(read_events(live, |event| event == "job.failed"));
    app.http.post(app.url(&format!("/jobs/{job_id}/cancel"))).bearer_auth(&app.admin).send().await.unwrap();
    let seen = reader.await.unwrap();
    let names: Vec<&str> = seen.iter().map(|(_, event, _)| event.as_str()).collect();
    assert_eq!(names, ["job.state", "job.state", "job.failed"]);
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "ids increase");
    assert_eq!(seen[1].2["data"]["to"], "failed");
    // Timestamps in event payloads have the API's fixed width (the test clock sits on a whole second).
    for (_, event, data) in &seen {
        let at = data["created_at"].as_str().unwrap_or_default();
        assert!(is_fixed_width_time(at), "{event}: created_at {at:?}");
    }

    // Reconnect with Last-Event-ID: only what came after.
    let resumed = app
        .http
        .get(&events_url)
        .bearer_auth(&app.admin)
        .header("last-event-id", seen[0].0.to_string())
        .send()
        .await
        .unwrap();
    let replayed = read_events(resumed, |event| event == "job.failed").await;
    assert_eq!(
        replayed.iter().map(|(id, _, _)| *id).collect::<Vec<_>>(),
        seen[1..].iter().map(|(id, _, _)| *id).collect::<Vec<_>>()
    );
});

both_engines!(steering_needs_a_target_and_usage_starts_empty, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    let agent = app.create_agent("Steered").await;
    let id = agent["id"].as_str().unwrap();
    let nothing_running =
        app.post(&format!("/agents/{id}/steer"), &app.admin, json!({"instruction": "be brief"})).await;
    assert_eq!(nothing_running.status(), 409);
    assert_eq!(error_code(nothing_running).await, "invalid_state");
    let bad =
        app.post(&format!("/agents/{id}/steer"), &app.admin, json!({"instruction": "x", "priority": "loud"})).await;
    assert_eq!(bad.status(), 400);
    let queued =
        app.post(&format!("/agents/{id}/steer"), &app.admin, json!({"instruction": "be brief", "queue": true})).await;
    assert_eq!(queued.status(), 202);
    let queued: Value = queued.json().await.unwrap();
    assert_eq!(queued["state"], "queued");
    let shown: Value = app
        .get(&format!("/agents/{id}/steer/{}", queued["steer_id"].as_str().unwrap()), &app.admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(shown["state"], "queued");

    let usage: Value = app.get(&format!("/agents/{id}/usage"), &app.admin).await.json().await.unwrap();
    assert_eq!(usage["today"]["tokens_spent"], 0);
    assert_eq!(usage["job_token_budget"], 200_000);
});

both_engines!(a_batch_of_jobs_is_created_in_one_request, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    let agent = app.create_agent("Bulk").await;
    let path = format!("/agents/{}/jobs", agent["slug"].as_str().unwrap());
    let batch = json!({"jobs": [
        {"prompt": "first", "priority": 5},
        {"prompt": "second", "idempotency_key": "item-2"},
        {"prompt": "third", "max_attempts": 1},
    ]});
    let created = app.post(&path, &app.admin, batch.clone()).await;
    assert_eq!(created.status(), 201);
    let body: Value = created.json().await.unwrap();
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert!(items.iter().all(|item| item["created"] == true && item["job"]["status"] == "scheduled"));
    assert_eq!(items[0]["job"]["priority"], 5);
    assert_eq!(items[2]["job"]["max_attempts"], 1);

    // Only the keyed item is recognised as a repeat; the plain ones are new jobs.
    let again: Value = app.post(&path, &app.admin, batch).await.json().await.unwrap();
    assert_eq!(again["items"][1]["created"], false);
    assert_eq!(again["items"][1]["job"]["id"], items[1]["job"]["id"]);
    assert_eq!(again["items"][0]["created"], true);
    let repeat_only =
        app.post(&path, &app.admin, json!({"jobs": [{"prompt": "second", "idempotency_key": "item-2"}]})).await;
    assert_eq!(repeat_only.status(), 200, "nothing created");

    // Refusals name the item; nothing of a refused batch is created.
    let list_path = format!("/jobs?agent_id={}&limit=100", agent["id"].as_str().unwrap());
    let listed = || async {
        app.get(&list_path, &app.admin).await.json::<Value>().await.unwrap()["items"].as_array().unwrap().len()
    };
    let before = listed().await;
    let invalid =
        app.post(&path, &app.admin, json!({"jobs": [{"prompt": "ok"}, {"prompt": "x", "priority": 101}]})).await;
    assert_eq!(invalid.status(), 400);
    let invalid: Value = invalid.json().await.unwrap();
    assert!(invalid["error"]["details"]["fields"]["jobs[1].priority"].is_string(), "{invalid}");
    let conflict = app
        .post(
            &path,
            &app.admin,
            json!({"jobs": [{"prompt": "new"}, {"prompt": "changed", "idempotency_key": "item-2"}]}),
        )
        .await;
    assert_eq!(error_code(conflict).await, "idempotency_conflict");
    assert_eq!(listed().await, before, "a refused batch creates nothing");
    assert_eq!(app.post(&path, &app.admin, json!({"jobs": []})).await.status(), 400);
    let too_many: Vec<Value> = (0..1001).map(|_| json!({"prompt": "p"})).collect();
    assert_eq!(app.post(&path, &app.admin, json!({"jobs": too_many})).await.status(), 400);
    let unknown = app.post(&path, &app.admin, json!({"jobs": [{"prompt": "p", "colour": "red"}]})).await;
    assert_eq!(unknown.status(), 400);
    let with_header = app
        .http
        .post(app.url(&path))
        .bearer_auth(&app.admin)
        .header("idempotency-key", "abc")
        .json(&json!({"jobs": [{"prompt": "p"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(with_header.status(), 400);
});
