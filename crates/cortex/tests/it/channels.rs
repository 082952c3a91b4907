//! Channels through the real binary: the env-defined Telegram bot against telegram-test-api (the npm
//! peer), a SIGKILL between "reply produced" and "platform acknowledged" against the in-process fake
//! Bot API, the env-defined Discord, Slack and WhatsApp channels against the in-process fakes of
//! their platforms, the receive lease (Telegram long poll, Discord gateway, Slack Socket Mode) moving to
//! a second process on PostgreSQL when its holder is killed, and a pairing code redeemed in chat.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cortex_testkit::fake_discord::{CREATE_MESSAGE, FakeDiscord};
use cortex_testkit::fake_llm::{FakeLlm, Reply, When};
use cortex_testkit::fake_slack::{FakeSlack, POST_MESSAGE};
use cortex_testkit::fake_telegram::FakeTelegram;
use cortex_testkit::fake_whatsapp::{FakeWhatsApp, SEND_MESSAGE, hub_signature, whatsapp_text};
use serde_json::{Value, json};

use crate::e2e::{api, env, start};

const TOKEN: &str = "123456:e2e-token";

/// telegram-test-api running under node on a free port; killed when dropped.
struct TelegramTestApi {
    child: Child,
    url: String,
    /// Held open: the peer exits when it closes (also when this test process dies).
    _stdin: Option<std::process::ChildStdin>,
}

impl Drop for TelegramTestApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TelegramTestApi {
    fn start() -> TelegramTestApi {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../test-peers/telegram-test-api.js");
        let mut child = Command::new("node")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node runs telegram-test-api (scripts/install-test-peers.sh installs it)");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read the port line");
        let port = line.trim().strip_prefix("listening ").unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        let stdin = child.stdin.take();
        TelegramTestApi { child, url: format!("http://127.0.0.1:{port}"), _stdin: stdin }
    }

    /// A user (id 1, private chat 1) writes to the bot through the peer's client API.
    async fn user_says(&self, text: &str) {
        let body = json!({
            "botToken": TOKEN, "date": 1_790_000_000, "text": text,
            "from": {"id": 1, "first_name": "Ada", "username": "ada", "is_bot": false},
            "chat": {"id": 1, "first_name": "Ada", "username": "ada", "type": "private"},
        });
        let response =
            reqwest::Client::new().post(format!("{}/sendMessage", self.url)).json(&body).send().await.unwrap();
        assert!(response.status().is_success(), "telegram-test-api refused the user message");
    }

    /// Waits for the bot's messages to chat 1 (bounded; prints what arrived on timeout).
    async fn bot_replies(&self, count: usize) -> Vec<String> {
        let mut texts = Vec::new();
        for _ in 0..600 {
            let answer: Value = reqwest::Client::new()
                .post(format!("{}/getUpdates", self.url))
                .json(&json!({"token": TOKEN, "chatId": 1}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            for update in answer["result"].as_array().cloned().unwrap_or_default() {
                texts.push(update["message"]["text"].as_str().unwrap_or_default().to_owned());
            }
            if texts.len() >= count {
                return texts;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the bot sent {texts:?}, expected {count} messages");
    }
}

async fn greeter(base: &str) -> String {
    let agent = api(
        reqwest::Method::POST,
        format!("{base}/agents"),
        Some(json!({"name": "Greeter", "model_config": {"provider": "openai", "model": "gpt-4o-mini"}})),
    )
    .await;
    agent["id"].as_str().unwrap().to_owned()
}

async fn env_channel(base: &str) -> Value {
    let channels = api(reqwest::Method::GET, format!("{base}/channels"), None).await;
    let channel = channels["items"][0].clone();
    assert_eq!((channel["source"].as_str(), channel["type"].as_str()), (Some("env"), Some("telegram")), "{channels}");
    assert_eq!(channel["secrets"], json!(["bot_token"]));
    assert!(!channels.to_string().contains(TOKEN), "the token is never returned");
    channel
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_telegram_chat_gets_the_agents_reply_through_telegram_test_api() {
    let peer = TelegramTestApi::start();
    let llm = FakeLlm::start().await;
    llm.rule(When::Always, Reply::text("Hello Ada, this is **Greeter**."));
    let dir = tempfile::tempdir().unwrap();
    let mut env = env(&llm);
    env.push(("TELEGRAM_BOT_TOKEN", TOKEN.to_owned()));
    env.push(("TELEGRAM_API_BASE", peer.url.clone()));
    let server = start(dir.path(), &env);
    let base = server.url.clone();
    env_channel(&base).await;
    let agent = greeter(&base).await;
    let binding = api(
        reqwest::Method::POST,
        format!("{base}/agents/{agent}/channels"),
        Some(json!({"channel_type": "telegram", "chat_id": "1"})),
    )
    .await;
    assert_eq!(binding["chat_id"], "1");

    peer.user_says("hi there").await;
    let replies = peer.bot_replies(1).await;
    assert_eq!(replies, ["Hello Ada, this is <b>Greeter</b>."], "rendered as Telegram HTML");
    assert_eq!(llm.requests()[0].user_texts().last().map(|text| text.contains("hi there")), Some(true));
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_interrupted_by_sigkill_is_delivered_once_after_restart() {
    let telegram = FakeTelegram::start(TOKEN).await;
    let llm = FakeLlm::start().await;
    llm.rule(When::Always, Reply::text("the answer"));
    let dir = tempfile::tempdir().unwrap();
    let mut env = env(&llm);
    env.push(("TELEGRAM_BOT_TOKEN", TOKEN.to_owned()));
    env.push(("TELEGRAM_API_BASE", telegram.api_base().to_owned()));
    let server = start(dir.path(), &env);
    let base = server.url.clone();
    let channel = env_channel(&base).await;
    let agent = greeter(&base).await;
    api(
        reqwest::Method::POST,
        format!("{base}/agents/{agent}/channels"),
        Some(json!({"channel_type": "telegram", "chat_id": "42"})),
    )
    .await;

    // The platform receives the reply but never answers: the process dies before it is acknowledged.
    telegram.hold_next("sendMessage");
    telegram.push_text(42, 42, "question");
    telegram.wait_for_calls("sendMessage", 1).await;
    server.kill();
    assert!(telegram.delivered("sendMessage").is_empty());

    let server = start(dir.path(), &env);
    let base = server.url.clone();
    let outbox = format!("{base}/channels/{}/outbox", channel["id"].as_str().unwrap());
    let mut items = Value::Null;
    for _ in 0..3000 {
        items = api(reqwest::Method::GET, outbox.clone(), None).await["items"].clone();
        if items[0]["status"] == "delivered" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(items.as_array().map(Vec::len), Some(1), "{items}");
    assert_eq!(items[0]["status"], "delivered", "{items}");
    assert_eq!(items[0]["attempts"], 2, "{items}");
    let delivered = telegram.delivered("sendMessage");
    assert_eq!(delivered.len(), 1, "delivered exactly once");
    assert_eq!(delivered[0].body["text"], "the answer");
    assert_eq!(items[0]["platform_message_id"], delivered[0].response["message_id"].to_string().as_str());
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_discord_channel_gets_the_agents_reply_through_the_gateway_and_rest() {
    let discord = FakeDiscord::start("discord-e2e-token").await;
    let llm = FakeLlm::start().await;
    llm.rule(When::Always, Reply::text("Hello from **Greeter**, see https://example.com"));
    let dir = tempfile::tempdir().unwrap();
    let mut env = env(&llm);
    env.push(("DISCORD_BOT_TOKEN", "discord-e2e-token".to_owned()));
    env.push(("DISCORD_API_BASE", discord.api_base().to_owned()));
    let server = start(dir.path(), &env);
    let base = server.url.clone();
    let channels = api(reqwest::Method::GET, format!("{base}/channels"), None).await;
    let channel = &channels["items"][0];
    assert_eq!((channel["source"].as_str(), channel["type"].as_str()), (Some("env"), Some("discord")), "{channels}");
    assert!(!channels.to_string().contains("discord-e2e-token"), "the token is never returned");
    let agent = greeter(&base).await;
    api(
        reqwest::Method::POST,
        format!("{base}/agents/{agent}/channels"),
        Some(json!({"channel_type": "discord", "chat_id": "500"})),
    )
    .await;

    discord.wait_for_op(2, 1).await;
    let message = discord.user_message("500", "42", "hi there", false);
    let sent = discord.rest.wait_for_delivered(CREATE_MESSAGE, 1).await;
    assert_eq!(sent[0].path, "/channels/500/messages");
    assert_eq!(sent[0].body["content"], "Hello from **Greeter**, see https://example.com");
    assert_eq!(sent[0].body["flags"], 4, "link previews suppressed");
    assert_eq!(sent[0].body["message_reference"]["message_id"], message["id"]);
    assert_eq!(llm.requests()[0].user_texts().last().map(|text| text.contains("hi there")), Some(true));
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_defined_slack_and_whatsapp_channels_answer_bound_chats() {
    let slack = FakeSlack::start("xoxb-e2e", "xapp-e2e").await;
    let whatsapp = FakeWhatsApp::start("wa-e2e", "1555").await;
    let llm = FakeLlm::start().await;
    llm.rule(When::Always, Reply::text("Noted."));
    let dir = tempfile::tempdir().unwrap();
    let mut env = env(&llm);
    for (name, value) in [
        ("SLACK_BOT_TOKEN", "xoxb-e2e"),
        ("SLACK_APP_TOKEN", "xapp-e2e"),
        ("SLACK_API_BASE", slack.api_base()),
        ("WHATSAPP_TOKEN", "wa-e2e"),
        ("WHATSAPP_PHONE_NUMBER_ID", "1555"),
        ("WHATSAPP_VERIFY_TOKEN", "wa-verify"),
        ("WHATSAPP_APP_SECRET", "wa-secret"),
        ("WHATSAPP_API_BASE", whatsapp.api_base()),
    ] {
        env.push((name, value.to_owned()));
    }
    let server = start(dir.path(), &env);
    let base = server.url.clone();
    let channels = api(reqwest::Method::GET, format!("{base}/channels"), None).await;
    let mut types: Vec<&str> =
        channels["items"].as_array().unwrap().iter().filter_map(|c| c["type"].as_str()).collect();
    types.sort_unstable();
    assert_eq!(types, ["slack", "whatsapp"], "{channels}");
    for secret in ["xoxb-e2e", "xapp-e2e", "wa-e2e", "wa-secret", "wa-verify"] {
        assert!(!channels.to_string().contains(secret), "secrets are never returned");
    }
    let agent = greeter(&base).await;
    for (channel_type, chat_id) in [("slack", "D1"), ("whatsapp", "491701234567")] {
        api(
            reqwest::Method::POST,
            format!("{base}/agents/{agent}/channels"),
            Some(json!({"channel_type": channel_type, "chat_id": chat_id})),
        )
        .await;
    }

    slack.wait_for_connections(1).await;
    slack.user_message("D1", "U1", "hello from slack", None);
    let sent = slack.api.wait_for_delivered(POST_MESSAGE, 1).await;
    assert_eq!((sent[0].body["channel"].as_str(), sent[0].body["text"].as_str()), (Some("D1"), Some("Noted.")));

    let http = reqwest::Client::new();
    let verified = http
        .get(format!("{base}/webhooks/whatsapp"))
        .query(&[("hub.mode", "subscribe"), ("hub.verify_token", "wa-verify"), ("hub.challenge", "42")])
        .send()
        .await
        .unwrap();
    assert_eq!(verified.text().await.unwrap(), "42");
    let body = whatsapp_text("1555", "491701234567", "wamid.E2E", "hello from whatsapp");
    let posted = http
        .post(format!("{base}/webhooks/whatsapp"))
        .header("X-Hub-Signature-256", hub_signature("wa-secret", &body))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 200);
    let sent = whatsapp.api.wait_for_delivered(SEND_MESSAGE, 1).await;
    assert_eq!(sent[0].body["to"], "491701234567");
    assert_eq!(sent[0].body["text"]["body"], "Noted.");
    server.kill();
}

/// Waits (bounded, generous) until the fake has delivered `count` messages; prints the servers' view of
/// the channels on timeout.
async fn wait_delivered(telegram: &FakeTelegram, count: usize, servers: &[&str]) -> Vec<String> {
    for _ in 0..1800 {
        let delivered = telegram.delivered("sendMessage");
        if delivered.len() >= count {
            return delivered.iter().map(|call| call.body["text"].as_str().unwrap_or_default().to_owned()).collect();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut views = Vec::new();
    for base in servers {
        views.push(api(reqwest::Method::GET, format!("{base}/channels"), None).await);
    }
    panic!("{count} messages never delivered: {:?}; channels: {views:?}", telegram.delivered("sendMessage"));
}

/// PostgreSQL, two `cortex serve` processes: the Telegram long poll runs in exactly one of them (the
/// other reports the lease is held elsewhere); after a SIGKILL of the holder the survivor takes the
/// channel over once the lease expires and answers the next message, each message exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_survivor_takes_over_a_telegram_long_poll_when_its_holder_is_killed() {
    if cortex_testkit::skip_postgres() {
        eprintln!("skipped: CORTEX_TEST_SKIP_PG=1");
        return;
    }
    let database = cortex_testkit::TestStore::new(cortex_testkit::Engine::Postgres).await;
    let cortex_store::DatabaseConfig::Postgres { url, .. } = database.config.clone() else { unreachable!() };
    let telegram = FakeTelegram::start(TOKEN).await;
    let llm = FakeLlm::start().await;
    llm.rule(When::Always, Reply::text("the answer"));
    let mut env = env(&llm);
    env.push(("CORTEX_DATABASE_URL", url));
    env.push(("TELEGRAM_BOT_TOKEN", TOKEN.to_owned()));
    env.push(("TELEGRAM_API_BASE", telegram.api_base().to_owned()));
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = start(dir_a.path(), &env);
    let channel = env_channel(&first.url).await;
    let channel_id = channel["id"].as_str().unwrap().to_owned();
    let agent = greeter(&first.url).await;
    api(
        reqwest::Method::POST,
        format!("{}/agents/{agent}/channels", first.url),
        Some(json!({"channel_type": "telegram", "chat_id": "42"})),
    )
    .await;
    telegram.push_text(42, 42, "first question");
    assert_eq!(wait_delivered(&telegram, 1, &[&first.url]).await, ["the answer"]);

    // The second process runs the channel too, but does not poll: the lease is the first one's.
    let second = start(dir_b.path(), &env);
    let mut view = Value::Null;
    for _ in 0..600 {
        view = api(reqwest::Method::GET, format!("{}/channels/{channel_id}", second.url), None).await;
        if view["last_error"].as_str().is_some_and(|error| error.contains("another process holds")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(view["state"], "starting", "{view}");
    assert!(view["last_error"].as_str().unwrap_or_default().contains("another process holds"), "{view}");
    let holder = api(reqwest::Method::GET, format!("{}/channels/{channel_id}", first.url), None).await;
    assert_eq!(holder["state"], "healthy", "{holder}");

    // The holder dies without releasing anything; the survivor takes over and answers.
    first.kill();
    telegram.push_text(42, 42, "second question");
    let texts = wait_delivered(&telegram, 2, &[&second.url]).await;
    assert_eq!(texts, ["the answer", "the answer"], "each message answered exactly once");
    let mut view = Value::Null;
    for _ in 0..600 {
        view = api(reqwest::Method::GET, format!("{}/channels/{channel_id}", second.url), None).await;
        if view["state"] == "healthy" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(view["state"], "healthy", "{view}");
    let outbox = api(reqwest::Method::GET, format!("{}/channels/{channel_id}/outbox", second.url), None).await;
    assert_eq!(outbox["items"].as_array().map(Vec::len), Some(2), "{outbox}");
    assert_eq!(telegram.delivered("sendMessage").len(), 2, "no duplicate after the takeover");
    second.kill();
}

/// One platform's side of a takeover test: the env of its env-defined channel, the chat to bind, how a
/// user writes there, and how many replies the platform accepted.
struct Platform<'a> {
    env: Vec<(&'static str, String)>,
    channel_type: &'static str,
    chat_id: &'static str,
    say: Box<dyn Fn(&str) + 'a>,
    answered: Box<dyn Fn() -> usize + 'a>,
}

/// PostgreSQL, two `cortex serve` processes sharing the env-defined channel of `platform`, whose
/// receiver holds a connection (Discord gateway, Slack Socket Mode): one holds it (the other reports
/// the lease is held elsewhere) and answers; after a SIGKILL of the holder the survivor takes the lease
/// when it expires, connects, and answers the next message; each message is answered exactly once.
async fn the_survivor_takes_over(platform: Platform<'_>) {
    let database = cortex_testkit::TestStore::new(cortex_testkit::Engine::Postgres).await;
    let cortex_store::DatabaseConfig::Postgres { url, .. } = database.config.clone() else { unreachable!() };
    let llm = FakeLlm::start().await;
    llm.rule(When::Always, Reply::text("the answer"));
    let mut env = env(&llm);
    env.push(("CORTEX_DATABASE_URL", url));
    env.extend(platform.env.iter().cloned());
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = start(dir_a.path(), &env);
    let channels = api(reqwest::Method::GET, format!("{}/channels", first.url), None).await;
    let channel_id = channels["items"][0]["id"].as_str().unwrap().to_owned();
    let agent = greeter(&first.url).await;
    api(
        reqwest::Method::POST,
        format!("{}/agents/{agent}/channels", first.url),
        Some(json!({"channel_type": platform.channel_type, "chat_id": platform.chat_id})),
    )
    .await;
    let answered = &platform.answered;
    let answers = move |count: usize| async move {
        for _ in 0..1800 {
            if answered() >= count {
                return answered();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{count} answers never arrived; have {}", answered());
    };
    // Until the first process holds the connection, a message waits on the platform's side.
    (platform.say)("first question");
    assert_eq!(answers(1).await, 1);

    // The second process runs the channel too, but does not connect: the lease is the first one's.
    let second = start(dir_b.path(), &env);
    let mut view = Value::Null;
    for _ in 0..600 {
        view = api(reqwest::Method::GET, format!("{}/channels/{channel_id}", second.url), None).await;
        if view["last_error"].as_str().is_some_and(|error| error.contains("another process holds")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(view["state"], "starting", "{view}");
    let holder = api(reqwest::Method::GET, format!("{}/channels/{channel_id}", first.url), None).await;
    assert_eq!(holder["state"], "healthy", "{holder}");

    // The holder dies without releasing anything; the survivor takes over, connects and answers.
    first.kill();
    (platform.say)("second question");
    assert_eq!(answers(2).await, 2);
    let mut view = Value::Null;
    for _ in 0..600 {
        view = api(reqwest::Method::GET, format!("{}/channels/{channel_id}", second.url), None).await;
        if view["state"] == "healthy" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(view["state"], "healthy", "{view}");
    let outbox = api(reqwest::Method::GET, format!("{}/channels/{channel_id}/outbox", second.url), None).await;
    assert_eq!(outbox["items"].as_array().map(Vec::len), Some(2), "{outbox}");
    assert_eq!(answered(), 2, "each message answered exactly once");
    second.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_survivor_takes_over_a_discord_gateway_when_its_holder_is_killed() {
    if cortex_testkit::skip_postgres() {
        eprintln!("skipped: CORTEX_TEST_SKIP_PG=1");
        return;
    }
    let discord = FakeDiscord::start("discord-takeover-token").await;
    the_survivor_takes_over(Platform {
        env: vec![
            ("DISCORD_BOT_TOKEN", "discord-takeover-token".to_owned()),
            ("DISCORD_API_BASE", discord.api_base().to_owned()),
        ],
        channel_type: "discord",
        chat_id: "500",
        say: Box::new(|text| {
            discord.user_message("500", "42", text, false);
        }),
        answered: Box::new(|| discord.rest.delivered(CREATE_MESSAGE).len()),
    })
    .await;
    assert!(discord.connections() >= 2, "the survivor opened its own gateway connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_survivor_takes_over_a_slack_socket_when_its_holder_is_killed() {
    if cortex_testkit::skip_postgres() {
        eprintln!("skipped: CORTEX_TEST_SKIP_PG=1");
        return;
    }
    let slack = FakeSlack::start("xoxb-takeover", "xapp-takeover").await;
    the_survivor_takes_over(Platform {
        env: vec![
            ("SLACK_BOT_TOKEN", "xoxb-takeover".to_owned()),
            ("SLACK_APP_TOKEN", "xapp-takeover".to_owned()),
            ("SLACK_API_BASE", slack.api_base().to_owned()),
        ],
        channel_type: "slack",
        chat_id: "D1",
        say: Box::new(|text| {
            slack.user_message("D1", "U1", text, None);
        }),
        answered: Box::new(|| slack.api.delivered(POST_MESSAGE).len()),
    })
    .await;
    assert!(slack.connections() >= 2, "the survivor opened its own connection");
}

/// A pairing code created through the API is redeemed in chat by an unknown user of an `allowlist`
/// agent (a bound chat gives no automatic grant there); the user's next message gets the agent's reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pairing_code_lets_a_stranger_talk_to_an_allowlist_agent() {
    let telegram = FakeTelegram::start(TOKEN).await;
    let llm = FakeLlm::start().await;
    llm.rule(When::Always, Reply::text("welcome aboard"));
    let dir = tempfile::tempdir().unwrap();
    let mut env = env(&llm);
    env.push(("TELEGRAM_BOT_TOKEN", TOKEN.to_owned()));
    env.push(("TELEGRAM_API_BASE", telegram.api_base().to_owned()));
    let server = start(dir.path(), &env);
    let base = server.url.clone();
    env_channel(&base).await;
    let agent = api(
        reqwest::Method::POST,
        format!("{base}/agents"),
        Some(json!({"name": "Closed", "access_mode": "allowlist",
                    "model_config": {"provider": "openai", "model": "gpt-4o-mini"}})),
    )
    .await;
    let agent = agent["id"].as_str().unwrap().to_owned();
    let binding = api(
        reqwest::Method::POST,
        format!("{base}/agents/{agent}/channels"),
        Some(json!({"channel_type": "telegram", "chat_id": "77"})),
    )
    .await;
    assert_eq!(binding["chat_id"], "77");

    telegram.push_text(77, 77, "hello?");
    let refused = wait_delivered(&telegram, 1, &[&base]).await;
    assert!(refused[0].contains("don't have access"), "{refused:?}");
    let code = api(reqwest::Method::POST, format!("{base}/agents/{agent}/pairing-codes"), Some(json!({}))).await;
    telegram.push_text(77, 77, &format!("/pair {}", code["code"].as_str().unwrap()));
    assert_eq!(wait_delivered(&telegram, 2, &[&base]).await[1], "Paired. You can chat with this agent now.");
    telegram.push_text(77, 77, "hello again");
    assert_eq!(wait_delivered(&telegram, 3, &[&base]).await[2], "welcome aboard");
    let users = api(reqwest::Method::GET, format!("{base}/agents/{agent}/users"), None).await;
    assert_eq!(users["items"][0]["origin"], "pairing", "{users}");
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gated_tool_call_is_approved_from_telegram_and_the_reply_arrives() {
    let telegram = FakeTelegram::start(TOKEN).await;
    let llm = FakeLlm::start().await;
    llm.push(Reply::tool_call("webhook__counter", json!({"reason": "asked in chat"})));
    llm.rule(When::LastIsToolResult, Reply::text("counted"));
    let (counter_url, hits) = crate::e2e::counter().await;
    let dir = tempfile::tempdir().unwrap();
    let mut env = env(&llm);
    env.push(("TELEGRAM_BOT_TOKEN", TOKEN.to_owned()));
    env.push(("TELEGRAM_API_BASE", telegram.api_base().to_owned()));
    let server = start(dir.path(), &env);
    let base = server.url.clone();
    let channel_id = env_channel(&base).await["id"].as_str().unwrap().to_owned();
    let agent = crate::e2e::agent_with_counter(&base, &counter_url, "always", false).await;
    api(
        reqwest::Method::POST,
        format!("{base}/agents/{agent}/channels"),
        Some(json!({"channel_type": "telegram", "chat_id": "42"})),
    )
    .await;
    // An approver links their Telegram identity (user 42) to their account.
    for args in [
        vec!["user", "create", "--email", "ops@example.com", "--role", "approver"],
        vec!["user", "link", "--email", "ops@example.com", "--channel", &channel_id, "--platform-user-id", "42"],
    ] {
        let output = crate::process::cortex(dir.path()).args(&args).output().unwrap();
        assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
    }

    // The gated call parks the job; the notice with buttons reaches the chat.
    telegram.push_text(42, 42, "count once");
    let notice = telegram.wait_for_delivered("sendMessage", 1).await.remove(0);
    assert!(notice.body["text"].as_str().unwrap().contains("webhook:counter"), "{:?}", notice.body);
    let approve = notice.body["reply_markup"]["inline_keyboard"][0][0]["callback_data"].as_str().unwrap().to_owned();
    assert!(approve.starts_with("apr:a:"), "{approve}");
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0, "nothing ran before the decision");

    telegram.push_update(json!({"callback_query": {
        "id": "press-1", "from": {"id": 42, "is_bot": false, "first_name": "Ops"}, "data": approve,
        "message": {"message_id": notice.response["message_id"], "chat": {"id": 42, "type": "private"}},
    }}));
    let answers = telegram.wait_for_calls("answerCallbackQuery", 1).await;
    assert_eq!(answers[0].body["text"], "Approved.");
    let edits = telegram.wait_for_calls("editMessageText", 1).await;
    assert!(edits[0].body["text"].as_str().unwrap().contains("Approved by Ops"), "{:?}", edits[0].body);

    // The job resumes, runs the call once and its reply is delivered to the chat.
    let sent = telegram.wait_for_delivered("sendMessage", 2).await;
    assert_eq!(sent[1].body["text"], "counted");
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    let approvals = api(reqwest::Method::GET, format!("{base}/approvals?status=approved"), None).await;
    assert_eq!(approvals["items"][0]["decided_via"], "telegram", "{approvals}");
    server.kill();
}
