//! Channel health against the in-process fake Bot API (SPEC §8.9): the platform going dark turns the
//! channel unhealthy (and `/readyz` degraded, still 200); once the platform is back the channel
//! receives again without a restart. The periodic identity probe (`getMe`) reports a platform that
//! refuses it even while polling works. Every change of state is streamed as `channel.health`, and the
//! dashboard's channel screens carry what `cortex.js` needs to follow that stream.

use std::time::Duration;

use cortex_core::role::Role;
use cortex_testkit::fake_telegram::{Failure, FakeTelegram};
use cortex_testkit::{Engine, TestStore, both_engines};
use serde_json::{Value, json};

use crate::app::TestApp;
use crate::dashboard::{login, user};

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

/// The `channel.health` events of `GET /channels/stream`, read frame by frame.
struct HealthStream {
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
}

impl HealthStream {
    async fn open(app: &TestApp) -> HealthStream {
        let viewer = app.key(cortex_core::role::Role::Viewer).await;
        let response = app.get("/channels/stream", &viewer).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        HealthStream { body: Box::pin(response.bytes_stream()), buffer: String::new() }
    }

    /// The next event of `channel` in `state` (bounded: two minutes); earlier ones are checked and skipped.
    async fn wait_for(&mut self, channel: &str, state: &str) -> Value {
        use futures::StreamExt;
        let found = tokio::time::timeout(Duration::from_secs(120), async {
            loop {
                while let Some(end) = self.buffer.find("\n\n") {
                    let frame: String = self.buffer.drain(..end + 2).collect();
                    let mut lines = frame.lines();
                    let (Some(id), Some(event), Some(data)) = (lines.next(), lines.next(), lines.next()) else {
                        continue;
                    };
                    assert!(id.strip_prefix("id: ").is_some_and(|id| id.parse::<u64>().is_ok()), "{frame}");
                    assert_eq!(event, "event: channel.health", "{frame}");
                    let data: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
                    if data["channel_id"] == channel && data["state"] == state {
                        return data;
                    }
                }
                let chunk = self.body.next().await.expect("the stream ended").unwrap();
                self.buffer.push_str(&String::from_utf8_lossy(&chunk));
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("no channel.health `{state}` for {channel}; unread: {}", self.buffer))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_changes_are_streamed_as_channel_health_events() {
    let telegram = FakeTelegram::start(TOKEN).await;
    let app = TestApp::spawn(TestStore::new(Engine::Sqlite).await).await;
    let mut stream = HealthStream::open(&app).await;
    let config = json!({"bot_token": TOKEN, "api_base": telegram.api_base(), "poll_timeout_seconds": 1});
    let created =
        app.post("/channels", &app.admin, json!({"type": "telegram", "name": "watched", "config": config})).await;
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let healthy = stream.wait_for(&id, "healthy").await;
    assert_eq!(healthy, json!({"channel_id": id, "type": "telegram", "state": "healthy", "last_error": null}));

    // The platform refuses the identity call: `unhealthy` with the reason, then `healthy` again.
    telegram.fail_next("getMe", Failure::server_error());
    let unhealthy = stream.wait_for(&id, "unhealthy").await;
    assert!(unhealthy["last_error"].as_str().is_some_and(|error| error.contains("health probe failed")), "{unhealthy}");
    stream.wait_for(&id, "healthy").await;

    // A new reader first gets the current state of every channel.
    let mut late = HealthStream::open(&app).await;
    late.wait_for(&id, "healthy").await;

    // Deleting the channel stops it: `stopped`.
    let deleted = app.http.delete(app.url(&format!("/channels/{id}"))).bearer_auth(&app.admin).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    stream.wait_for(&id, "stopped").await;
}

/// The element `cortex.js` turns into a live channel-health notice.
const STREAM_HOOK: &str = r#"aria-live="polite" data-channel-health="/channels/stream""#;

both_engines!(channel_screens_carry_the_live_health_hooks_for_a_viewer, |t: TestStore| async move {
    let telegram = FakeTelegram::start(TOKEN).await;
    let app = TestApp::spawn(t).await;
    user(&app, "viewer@example.com", Role::Viewer).await;
    let viewer = login(&app, "viewer@example.com").await;
    let page = async |path: &str| {
        let response = viewer.get(&app, path).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        response.text().await.unwrap()
    };

    // No channel yet: the overview says so, and still follows the stream (to tell of one added elsewhere).
    let overview = page("/ui/").await;
    assert!(overview.contains("No chat channels yet") && overview.contains(STREAM_HOOK), "{overview}");

    let config = json!({"bot_token": TOKEN, "api_base": telegram.api_base(), "poll_timeout_seconds": 1});
    let created =
        app.post("/channels", &app.admin, json!({"type": "telegram", "name": "watched-bot", "config": config})).await;
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();

    // Overview, list and detail: the badge and the last error are marked with the channel's id, next to the
    // stream's notice; the badge says its state in words.
    for path in ["/ui/".to_owned(), "/ui/channels".to_owned(), format!("/ui/channels/{id}")] {
        let html = page(&path).await;
        assert!(html.contains(STREAM_HOOK), "{path}: no live notice: {html}");
        let badge = format!(r#"data-channel-state="{id}" data-channel-name="watched-bot">"#);
        let start = html.find(&badge).unwrap_or_else(|| panic!("{path}: no badge for {id}: {html}"));
        let state = &html[start + badge.len()..];
        let state = &state[..state.find('<').unwrap()];
        assert!(["starting", "healthy"].contains(&state), "{path}: the badge says {state:?}");
        assert!(html.contains(&format!(r#"data-channel-error="{id}""#)), "{path}: no last-error hook: {html}");
    }

    // The stream the hooks name answers the viewer's session cookie (what the page's script sends).
    let stream = viewer.get(&app, "/channels/stream").send().await.unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
});
