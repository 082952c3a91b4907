//! Channel health against the in-process fake Bot API (SPEC §8.9): the platform going dark turns the
//! channel unhealthy (and `/readyz` degraded, still 200); once the platform is back the channel
//! receives again without a restart. The periodic identity probe (`getMe`) reports a platform that
//! refuses it even while polling works.

use std::time::Duration;

use cortex_testkit::fake_telegram::{Failure, FakeTelegram};
use cortex_testkit::{Engine, TestStore};
use serde_json::{Value, json};

use crate::app::TestApp;

const TOKEN: &str = "5151:health-token";

/// Polls the channel (bounded: two minutes) until `check` accepts it; prints the last view otherwise.
async fn wait_channel(app: &TestApp, id: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let mut channel = Value::Null;
    for _ in 0..1200 {
        channel = app.get(&format!("/channels/{id}"), &app.admin).await.json().await.unwrap();
        if check(&channel) {
            return channel;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the channel never became {what}: {channel}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_whose_platform_goes_dark_turns_unhealthy_and_receives_again_when_it_is_back() {
    let telegram = FakeTelegram::start(TOKEN).await;
    let app = TestApp::spawn(TestStore::new(Engine::Sqlite).await).await;
    let config = json!({"bot_token": TOKEN, "api_base": telegram.api_base(), "poll_timeout_seconds": 1});
    let created =
        app.post("/channels", &app.admin, json!({"type": "telegram", "name": "dark", "config": config})).await;
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    wait_channel(&app, &id, "healthy", |c| c["state"] == "healthy").await;

    // The platform fails every poll for a while: the channel is not healthy and readiness degrades.
    for _ in 0..4 {
        telegram.fail_next("getUpdates", Failure::server_error());
    }
    let dark = wait_channel(&app, &id, "not healthy", |c| c["state"] != "healthy").await;
    assert!(dark["last_error"].as_str().is_some_and(|error| error.contains("Bad Gateway")), "{dark}");
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200, "a broken channel degrades readiness, it does not fail it");
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["status"], "degraded", "{ready}");

    // Back: the same process receives again (the restart backoff is at most a few seconds here).
    wait_channel(&app, &id, "healthy again", |c| c["state"] == "healthy").await;
    telegram.push_text(61, 61, "anyone there?");
    let sent = telegram.wait_for_calls("sendMessage", 1).await;
    assert_eq!(sent[0].body["text"], "No agent is assigned to this chat.");

    // The identity probe (every 15 s) reports a platform refusing getMe, and recovers with it.
    telegram.fail_next("getMe", Failure::server_error());
    let refused = wait_channel(&app, &id, "unhealthy by probe", |c| c["state"] == "unhealthy").await;
    assert!(refused["last_error"].as_str().is_some_and(|error| error.contains("health probe failed")), "{refused}");
    wait_channel(&app, &id, "healthy after the next probe", |c| c["state"] == "healthy").await;
}
