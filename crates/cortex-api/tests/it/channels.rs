//! Channels over HTTP against the in-process fake Bot API: credentials verified before anything is
//! stored and never returned, hot start of an API-created channel, bindings, the outbox view, and the
//! Telegram webhook's secret-token check.

use std::time::Duration;

use cortex_core::role::Role;
use cortex_store::secrets::SecretRef;
use cortex_testkit::fake_telegram::{BOT_USERNAME, FakeTelegram};
use cortex_testkit::{TestStore, both_engines};
use serde_json::{Value, json};

use crate::app::{TestApp, error_code};
use crate::tools::{audited, delete, test_cipher};

const TOKEN: &str = "4242:api-token";

async fn patch(app: &TestApp, path: &str, body: Value) -> reqwest::Response {
    app.http.patch(app.url(path)).bearer_auth(&app.admin).json(&body).send().await.unwrap()
}

async fn create(app: &TestApp, telegram: &FakeTelegram, extra: Value) -> Value {
    let mut config = json!({"bot_token": TOKEN, "api_base": telegram.api_base(), "poll_timeout_seconds": 1});
    config.as_object_mut().unwrap().extend(extra.as_object().cloned().unwrap_or_default());
    let response =
        app.post("/channels", &app.admin, json!({"type": "telegram", "name": "support", "config": config})).await;
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

/// Waits until the channel reports `state` in this process (the supervisor reacts to the change).
async fn wait_state(app: &TestApp, id: &str, state: &str) -> Value {
    let mut channel = Value::Null;
    for _ in 0..600 {
        channel = app.get(&format!("/channels/{id}"), &app.admin).await.json().await.unwrap();
        if channel["state"] == state {
            return channel;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("channel never became {state}: {channel}");
}

both_engines!(credentials_are_verified_first_encrypted_and_never_returned, |t: TestStore| async move {
    let telegram = FakeTelegram::start(TOKEN).await;
    let app = TestApp::spawn(t).await;

    let bad = app
        .post("/channels", &app.admin, json!({"type": "telegram", "name": "x", "config": {"bot_token": "1:wrong", "api_base": telegram.api_base()}}))
        .await;
    assert_eq!(bad.status(), 422);
    assert_eq!(error_code(bad).await, "unprocessable");
    let unknown = app
        .post(
            "/channels",
            &app.admin,
            json!({"type": "telegram", "name": "x", "config": {"bot_token": TOKEN, "colour": "red"}}),
        )
        .await;
    assert_eq!(unknown.status(), 400);
    let operator = app.key(Role::Operator).await;
    assert_eq!(
        app.post("/channels", &operator, json!({"type": "telegram", "name": "x", "config": {}})).await.status(),
        403
    );
    assert!(app.test.store.channels().await.unwrap().is_empty(), "nothing stored for refused requests");

    let channel = create(&app, &telegram, json!({})).await;
    assert_eq!(channel["secrets"], json!(["bot_token"]));
    assert_eq!(channel["bot_identity"]["username"], BOT_USERNAME);
    assert_eq!(channel["source"], "api");
    let listed = app.get("/channels", &operator).await.text().await.unwrap();
    assert!(!listed.contains(TOKEN) && !channel.to_string().contains(TOKEN), "the token is never returned");
    let id: uuid::Uuid = channel["id"].as_str().unwrap().parse().unwrap();
    let stored = app.test.store.channel(id).await.unwrap();
    let enc = stored.secrets_enc.unwrap();
    assert!(!enc.contains(TOKEN), "encrypted at rest");
    let secrets = test_cipher().decrypt_json(&SecretRef::new("channel", "secrets_enc", id), &enc).unwrap();
    assert_eq!(secrets["bot_token"], TOKEN);
    assert_eq!(audited(&app, "channel.create").await.len(), 1);

    let duplicate = app.post("/channels", &app.admin, json!({"type": "telegram", "name": "support", "config": {"bot_token": TOKEN, "api_base": telegram.api_base()}})).await;
    assert_eq!(duplicate.status(), 409);
    // A new token is verified too.
    let refused = patch(&app, &format!("/channels/{id}"), json!({"config": {"bot_token": "9:nope"}})).await;
    assert_eq!(refused.status(), 422);
    let renamed = patch(&app, &format!("/channels/{id}"), json!({"name": "helpdesk"})).await;
    assert_eq!(renamed.status(), 200);
    assert_eq!(renamed.json::<Value>().await.unwrap()["name"], "helpdesk");
});

both_engines!(
    an_api_created_channel_receives_without_a_restart_and_answers_through_the_outbox,
    |t: TestStore| async move {
        let telegram = FakeTelegram::start(TOKEN).await;
        let app = TestApp::spawn(t).await;
        let channel = create(&app, &telegram, json!({})).await;
        let id = channel["id"].as_str().unwrap().to_owned();
        wait_state(&app, &id, "healthy").await;

        // No agent is bound: the router refuses politely, and the notice goes out through the outbox.
        telegram.push_text(42, 42, "hello?");
        let sent = telegram.wait_for_calls("sendMessage", 1).await;
        assert_eq!(sent[0].body["text"], "No agent is assigned to this chat.");
        assert_eq!(sent[0].body["chat_id"], 42);
        let mut outbox = Value::Null;
        for _ in 0..600 {
            outbox =
                app.get(&format!("/channels/{id}/outbox?status=delivered"), &app.admin).await.json().await.unwrap();
            if outbox["items"].as_array().is_some_and(|items| !items.is_empty()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let delivered = telegram.delivered("sendMessage");
        assert_eq!(
            outbox["items"][0]["platform_message_id"],
            delivered[0].response["message_id"].to_string().as_str(),
            "{outbox}"
        );
        assert_eq!(app.get(&format!("/channels/{id}/outbox?status=lost"), &app.admin).await.status(), 400);

        let ready: Value = app.http.get(app.url("/readyz")).send().await.unwrap().json().await.unwrap();
        assert_eq!(ready["checks"]["channels"][0]["state"], "healthy", "{ready}");

        // Disabling stops it; deleting removes it.
        assert_eq!(patch(&app, &format!("/channels/{id}"), json!({"enabled": false})).await.status(), 200);
        wait_state(&app, &id, "stopped").await;
        assert_eq!(delete(&app, &format!("/channels/{id}"), &app.admin).await.status(), 204);
        assert_eq!(app.get(&format!("/channels/{id}"), &app.admin).await.status(), 404);
    }
);

both_engines!(bindings_move_chats_and_pin_channels, |t: TestStore| async move {
    let telegram = FakeTelegram::start(TOKEN).await;
    let app = TestApp::spawn(t).await;
    let first = app.create_agent("First").await;
    let second = app.create_agent("Second").await;
    let bind = |agent: &Value, body: Value| {
        let path = format!("/agents/{}/channels", agent["id"].as_str().unwrap());
        let app = &app;
        async move { app.post(&path, &app.admin, body).await }
    };
    let created = bind(&first, json!({"channel_type": "telegram", "chat_id": "42"})).await;
    assert_eq!(created.status(), 201);
    let again = bind(&first, json!({"channel_type": "telegram", "chat_id": "42"})).await;
    assert_eq!(again.status(), 200);
    let moved = bind(&second, json!({"channel_type": "telegram", "chat_id": "42"})).await;
    assert_eq!(moved.status(), 201);
    let listed: Value =
        app.get(&format!("/agents/{}/channels", first["id"].as_str().unwrap()), &app.admin).await.json().await.unwrap();
    assert_eq!(listed["items"], json!([]), "the chat moved to the second agent");
    assert_eq!(
        bind(&first, json!({"channel_type": "telegram", "chat_id": "42", "respond_to": "sometimes"})).await.status(),
        400
    );

    // A binding pinned to a channel blocks its deletion unless forced.
    let channel = create(&app, &telegram, json!({})).await;
    let channel_id = channel["id"].as_str().unwrap();
    let pinned = bind(
        &first,
        json!({"channel_type": "telegram", "chat_id": "-100", "channel_id": channel_id, "respond_to": "all"}),
    )
    .await;
    assert_eq!(pinned.status(), 201);
    let pinned: Value = pinned.json().await.unwrap();
    let blocked = delete(&app, &format!("/channels/{channel_id}"), &app.admin).await;
    assert_eq!(blocked.status(), 409);
    assert!(blocked.text().await.unwrap().contains(pinned["id"].as_str().unwrap()));
    assert_eq!(delete(&app, &format!("/channels/{channel_id}?force=true"), &app.admin).await.status(), 204);
    let path = format!(
        "/agents/{}/channels/{}",
        second["id"].as_str().unwrap(),
        moved.json::<Value>().await.unwrap()["id"].as_str().unwrap()
    );
    assert_eq!(delete(&app, &path, &app.admin).await.status(), 204);
    assert_eq!(delete(&app, &path, &app.admin).await.status(), 404);
});

both_engines!(the_telegram_webhook_needs_the_secret_token_and_records_each_update_once, |t: TestStore| async move {
    let telegram = FakeTelegram::start(TOKEN).await;
    let app = TestApp::spawn(t).await;
    let channel = create(&app, &telegram, json!({"mode": "webhook", "webhook_secret": "s3cret-token"})).await;
    let id = channel["id"].as_str().unwrap().to_owned();
    assert_eq!(channel["secrets"], json!(["bot_token", "webhook_secret"]));
    wait_state(&app, &id, "healthy").await;
    let update = json!({"update_id": 9, "message": {"message_id": 3, "chat": {"id": 42, "type": "private"}, "from": {"id": 42}, "text": "via webhook"}});
    let post = |secret: Option<&'static str>, body: Value| {
        let mut request = app.http.post(app.url(&format!("/webhooks/telegram/{id}"))).json(&body);
        if let Some(secret) = secret {
            request = request.header("X-Telegram-Bot-Api-Secret-Token", secret);
        }
        request.send()
    };
    assert_eq!(post(None, update.clone()).await.unwrap().status(), 401);
    let wrong = post(Some("s3cret-tokeN"), update.clone()).await.unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(error_code(wrong).await, "unauthorized");
    let channel_id: uuid::Uuid = id.parse().unwrap();
    assert!(app.test.store.unrouted_inbound(channel_id, 10).await.unwrap().is_empty());
    let none = app.test.store.inbound_count(channel_id).await.unwrap();
    assert_eq!(none, 0, "nothing recorded for a bad secret");

    assert_eq!(post(Some("s3cret-token"), update.clone()).await.unwrap().status(), 200);
    assert_eq!(post(Some("s3cret-token"), update.clone()).await.unwrap().status(), 200, "Telegram's retry is fine");
    assert_eq!(app.test.store.inbound_count(channel_id).await.unwrap(), 1, "recorded once");
    let unknown = app
        .http
        .post(app.url(&format!("/webhooks/telegram/{}", uuid::Uuid::nil())))
        .json(&update)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
});

both_engines!(a_discord_bot_is_verified_then_connects_to_the_gateway_without_a_restart, |t: TestStore| async move {
    let discord = cortex_testkit::fake_discord::FakeDiscord::start("discord-api-token").await;
    let app = TestApp::spawn(t).await;
    let config = |token: &str| json!({"bot_token": token, "api_base": discord.api_base()});
    let bad =
        app.post("/channels", &app.admin, json!({"type": "discord", "name": "d", "config": config("nope")})).await;
    assert_eq!(bad.status(), 422);
    let missing = app.post("/channels", &app.admin, json!({"type": "discord", "name": "d", "config": {}})).await;
    assert_eq!(missing.status(), 400);
    let bad_gateway = app
        .post(
            "/channels",
            &app.admin,
            json!({"type": "discord", "name": "d", "config": {"bot_token": "x", "gateway_url": "http://x"}}),
        )
        .await;
    assert_eq!(bad_gateway.status(), 400);

    let created = app
        .post("/channels", &app.admin, json!({"type": "discord", "name": "d", "config": config("discord-api-token")}))
        .await;
    assert_eq!(created.status(), 201);
    let channel: Value = created.json().await.unwrap();
    assert_eq!(channel["bot_identity"]["username"], cortex_testkit::fake_discord::BOT_USERNAME);
    assert_eq!(channel["secrets"], json!(["bot_token"]));
    assert!(!channel.to_string().contains("discord-api-token"));
    discord.wait_for_op(2, 1).await;
    wait_state(&app, channel["id"].as_str().unwrap(), "healthy").await;
});
