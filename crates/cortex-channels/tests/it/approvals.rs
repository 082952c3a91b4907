//! Approvals in chat, per platform against its fake (SPEC §7.3, §7.7): a job a chat started waits for
//! approval → the notice with the exact call and Approve / Reject / Details buttons is queued with the
//! request and sent → a press by someone without approver rights is refused ("not allowed", an
//! `unauthorized_attempt` in the audit trail, nothing decided) → a press by an approver decides through
//! the API's code path and resumes the job, the notice is edited to name the decider → a second press and
//! a replayed one leave the one decision standing and get a polite answer.

use cortex_channels::adapter::WebhookRequest;
use cortex_channels::adapter::{ChannelAdapter, InboundSink};
use cortex_channels::approvals::{Action, button_data};
use cortex_channels::delivery::deliver_due;
use cortex_channels::discord::{DiscordAdapter, DiscordConfig};
use cortex_channels::router::{Router, reply_target};
use cortex_channels::sink::StoreSink;
use cortex_channels::slack::{SlackAdapter, SlackConfig};
use cortex_channels::types::{ChatKind, ChatRef, InboundEvent};
use cortex_channels::whatsapp::{WhatsAppAdapter, WhatsAppConfig};
use cortex_core::agent::AccessMode;
use cortex_core::approval::{ApprovalStatus, DecidedVia, RiskTier};
use cortex_core::job::{JobKind, JobStatus};
use cortex_store::Store;
use cortex_store::approvals::NewApproval;
use cortex_store::jobs::{NewJob, Suspend};
use cortex_testkit::fake_discord::{self, FakeDiscord};
use cortex_testkit::fake_slack::{self, FakeSlack};
use cortex_testkit::fake_telegram::FakeTelegram;
use cortex_testkit::fake_whatsapp::{self, FakeWhatsApp, hub_signature, whatsapp_webhook};
use cortex_testkit::{TestStore, both_engines};
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::support::{agent, channel, init, sink};

/// A chat job of `platform` parked in `waiting_for_approval` on a tool call, its notice queued.
struct Waiting {
    store: Store,
    channel_id: Uuid,
    sink: Arc<StoreSink>,
    recorded: Arc<Notify>,
    job_id: Uuid,
    approval_id: Uuid,
}

impl Waiting {
    async fn new(store: &Store, platform: &str, chat: &ChatRef) -> Waiting {
        let channel_id = channel(store, platform).await;
        let agent_id = agent(store, &format!("approver-test-{platform}"), AccessMode::Open).await;
        let mut tx = store.begin().await.unwrap();
        let (job, _) = tx
            .insert_job(&NewJob {
                kind: JobKind::Chat,
                payload: json!({"reply": {"channel_id": channel_id, "target": reply_target(chat, None)}}),
                ..NewJob::task(agent_id, json!({}))
            })
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let worker = Uuid::now_v7();
        assert_eq!(store.claim_next(worker, false).await.unwrap().map(|job| job.id), Some(job.id));
        let mut tx = store.begin().await.unwrap();
        let (approval, _) = tx
            .insert_approval(&NewApproval {
                job_id: job.id,
                tool_call_id: None,
                agent_id,
                action_type: "tool",
                action_summary: "Call `webhook:deploy` with {\"env\":\"prod\"}".into(),
                action_detail: json!({"tool_ref": "webhook:deploy", "arguments": {"env": "prod", "token": "[redacted]"}}),
                tool_ref: Some("webhook:deploy".into()),
                args_hash: Some("h".into()),
                risk: RiskTier::P1,
                expires_at: store.clock().now() + chrono::Duration::hours(24),
            })
            .await
            .unwrap();
        tx.suspend(job.id, worker, Suspend::AwaitApproval, Some(approval.id)).await.unwrap();
        tx.commit().await.unwrap();
        let (sink, recorded) = sink(store, channel_id);
        Waiting { store: store.clone(), channel_id, sink, recorded, job_id: job.id, approval_id: approval.id }
    }

    fn data(&self, action: Action) -> String {
        button_data(action, self.approval_id)
    }

    /// Sends what the outbox holds for the channel.
    async fn deliver(&self, adapter: &dyn ChannelAdapter) {
        deliver_due(&self.store, self.channel_id, adapter, Uuid::now_v7()).await.unwrap();
    }

    /// Routes every recorded press.
    async fn route(&self, adapter: &dyn ChannelAdapter) {
        let channel = self.store.channel(self.channel_id).await.unwrap();
        Router::new(self.store.clone()).route_pending(&channel, adapter).await.unwrap();
    }

    async fn record(&self, events: Vec<InboundEvent>) {
        assert!(!events.is_empty(), "the platform payload carried no press");
        for event in events {
            self.sink.deliver(event).await.unwrap();
        }
    }

    /// Waits until the channel has recorded `count` inbound events (presses arriving over a socket).
    async fn wait_recorded(&self, count: i64) {
        let waited = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                let notified = self.recorded.notified();
                if self.store.inbound_count(self.channel_id).await.unwrap() >= count {
                    return;
                }
                notified.await;
            }
        })
        .await;
        let have = self.store.inbound_count(self.channel_id).await.unwrap();
        assert!(waited.is_ok(), "timed out waiting for {count} recorded events; have {have}");
    }

    /// Gives the platform user's linked account the `approver` role.
    async fn make_approver(t: &TestStore, platform_user_id: &str) {
        // Each test has its own database, so the platform user id alone names the mapping.
        let changed = t
            .execute_raw(format!(
                "UPDATE user_account SET role = 'approver' WHERE id IN \
                 (SELECT user_id FROM channel_mapping WHERE platform_user_id = '{platform_user_id}')"
            ))
            .await
            .unwrap();
        assert_eq!(changed, 1, "the presser has a linked user account");
    }

    async fn status(&self) -> (ApprovalStatus, JobStatus) {
        let approval = self.store.get_approval(self.approval_id).await.unwrap();
        (approval.status, self.store.get_job(self.job_id).await.unwrap().status)
    }

    async fn audit(&self) -> Vec<String> {
        self.store.approval_audit(self.approval_id).await.unwrap().into_iter().map(|entry| entry.event).collect()
    }

    /// The refused press changed nothing but the audit trail; the approver's press decided once.
    async fn assert_refused(&self) {
        assert_eq!(self.status().await, (ApprovalStatus::Pending, JobStatus::WaitingForApproval));
        assert_eq!(self.audit().await, ["created", "unauthorized_attempt"]);
    }

    async fn assert_approved_via(&self, via: DecidedVia) {
        assert_eq!(self.status().await, (ApprovalStatus::Approved, JobStatus::Scheduled));
        let approval = self.store.get_approval(self.approval_id).await.unwrap();
        assert_eq!(approval.decided_via, Some(via));
        assert!(approval.decided_by.is_some(), "the deciding user is recorded");
        assert_eq!(self.audit().await, ["created", "unauthorized_attempt", "decided"]);
        assert!(self.store.approval_chain_valid(self.approval_id).await.unwrap());
    }
}

fn dm(chat: &str) -> ChatRef {
    ChatRef { chat_id: chat.into(), thread_id: None, kind: ChatKind::Direct }
}

fn telegram_press(id: &str, from: i64, message_id: i64, data: &str) -> serde_json::Value {
    json!({"callback_query": {
        "id": id, "from": {"id": from, "is_bot": false, "first_name": format!("User{from}")}, "data": data,
        "message": {"message_id": message_id, "chat": {"id": 42, "type": "private"}},
    }})
}

both_engines!(telegram_approval_buttons_round_trip, |t: TestStore| async move {
    init();
    let telegram = FakeTelegram::start("1:t").await;
    let waiting = Waiting::new(&t.store, "telegram", &dm("42")).await;
    let adapter = cortex_channels::telegram::TelegramAdapter::new(
        reqwest::Client::new(),
        cortex_channels::telegram::TelegramConfig {
            channel_id: waiting.channel_id,
            api_base: telegram.api_base().to_owned(),
            token: "1:t".into(),
            mode: cortex_channels::telegram::TelegramMode::Webhook { url: None, secret: None },
        },
    );

    // The notice was queued with the request; it carries the exact (redacted) call and three buttons.
    waiting.deliver(&adapter).await;
    let sent = telegram.delivered("sendMessage");
    assert_eq!(sent.len(), 1, "{sent:?}");
    let text = sent[0].body["text"].as_str().unwrap();
    assert!(text.contains("webhook:deploy") && text.contains("prod") && text.contains("[redacted]"), "{text}");
    let keyboard = &sent[0].body["reply_markup"]["inline_keyboard"];
    let data: Vec<&str> = keyboard
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap())
        .map(|b| b["callback_data"].as_str().unwrap())
        .collect();
    assert_eq!(data, [waiting.data(Action::Approve), waiting.data(Action::Reject), waiting.data(Action::Details)]);
    let notice_id = sent[0].response["message_id"].as_i64().unwrap();

    // User 7 (no approver rights) presses Approve: not allowed, nothing decided.
    let webhook = |update: serde_json::Value| {
        let body = serde_json::to_vec(&json!({"update_id": 1, "callback_query": update["callback_query"]})).unwrap();
        let headers = reqwest::header::HeaderMap::new();
        adapter.webhook(cortex_channels::adapter::WebhookRequest { headers: &headers, body: &body }).unwrap().unwrap()
    };
    waiting.record(webhook(telegram_press("q1", 7, notice_id, &waiting.data(Action::Approve))).events).await;
    waiting.route(&adapter).await;
    let answers = telegram.calls("answerCallbackQuery");
    assert_eq!(answers[0].body["text"], json!("You are not allowed to decide this request."));
    waiting.assert_refused().await;

    // Details answers with the call, deciding nothing.
    waiting.record(webhook(telegram_press("q2", 7, notice_id, &waiting.data(Action::Details))).events).await;
    waiting.route(&adapter).await;
    assert!(telegram.calls("answerCallbackQuery")[1].body["text"].as_str().unwrap().contains("webhook:deploy"));

    // Once user 7 is an approver, the press decides, resumes the job and edits the notice.
    Waiting::make_approver(&t, "7").await;
    let press = telegram_press("q3", 7, notice_id, &waiting.data(Action::Approve));
    waiting.record(webhook(press.clone()).events).await;
    waiting.route(&adapter).await;
    waiting.assert_approved_via(DecidedVia::Telegram).await;
    assert_eq!(telegram.calls("answerCallbackQuery")[2].body["text"], json!("Approved."));
    let edits = telegram.calls("editMessageText");
    assert_eq!(edits.len(), 1);
    assert_eq!(edits[0].body["message_id"], json!(notice_id));
    assert!(edits[0].body["text"].as_str().unwrap().contains("Approved by User7"), "{:?}", edits[0].body);
    assert_eq!(edits[0].body.get("reply_markup"), None, "the buttons are gone");

    // A replayed press is recorded once; a second press (Reject) finds the decision already made.
    waiting.record(webhook(press).events).await;
    waiting.route(&adapter).await;
    assert_eq!(telegram.calls("answerCallbackQuery").len(), 3, "the replay was not acted on again");
    waiting.record(webhook(telegram_press("q4", 7, notice_id, &waiting.data(Action::Reject))).events).await;
    waiting.route(&adapter).await;
    assert_eq!(telegram.calls("answerCallbackQuery")[3].body["text"], json!("This request was already approved."));
    waiting.assert_approved_via(DecidedVia::Telegram).await;
});

both_engines!(discord_approval_buttons_round_trip, |t: TestStore| async move {
    init();
    let discord = FakeDiscord::start("discord-token").await;
    let chat = ChatRef { chat_id: "500".into(), thread_id: None, kind: ChatKind::Group };
    let waiting = Waiting::new(&t.store, "discord", &chat).await;
    let adapter = Arc::new(DiscordAdapter::new(
        reqwest::Client::new(),
        DiscordConfig {
            channel_id: waiting.channel_id,
            api_base: discord.api_base().to_owned(),
            gateway_url: None,
            token: "discord-token".into(),
        },
    ));
    waiting.deliver(adapter.as_ref()).await;
    let sent = discord.rest.delivered(fake_discord::CREATE_MESSAGE);
    assert_eq!(sent.len(), 1, "{sent:?}");
    let ids: Vec<&str> = sent[0].body["components"][0]["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|button| button["custom_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [waiting.data(Action::Approve), waiting.data(Action::Reject), waiting.data(Action::Details)]);
    let notice_id = sent[0].response["id"].as_str().unwrap().to_owned();

    // Presses arrive as interactions over the gateway.
    let cancel = CancellationToken::new();
    let running = tokio::spawn({
        let (adapter, sink, cancel) = (adapter.clone(), waiting.sink.clone(), cancel.clone());
        async move { adapter.run(sink, cancel).await }
    });
    discord.wait_for_op(2, 1).await;
    let press = |id: &str, data: String| {
        json!({"id": id, "token": format!("tok-{id}"), "type": 3, "channel_id": "500", "guild_id": "1",
               "member": {"user": {"id": "7", "username": "ada", "global_name": "Ada"}},
               "message": {"id": notice_id}, "data": {"custom_id": data, "component_type": 2}})
    };
    discord.dispatch("INTERACTION_CREATE", press("1", waiting.data(Action::Approve)));
    waiting.wait_recorded(1).await;
    waiting.route(adapter.as_ref()).await;
    let answers = discord.rest.calls(fake_discord::INTERACTION_CALLBACK);
    assert_eq!(answers[0].body["data"]["content"], json!("You are not allowed to decide this request."));
    assert_eq!(answers[0].body["data"]["flags"], json!(64), "only the presser sees it");
    waiting.assert_refused().await;

    Waiting::make_approver(&t, "7").await;
    let approve = press("2", waiting.data(Action::Approve));
    discord.dispatch("INTERACTION_CREATE", approve.clone());
    waiting.wait_recorded(2).await;
    waiting.route(adapter.as_ref()).await;
    waiting.assert_approved_via(DecidedVia::Discord).await;
    assert_eq!(discord.rest.calls(fake_discord::INTERACTION_CALLBACK)[1].body["data"]["content"], json!("Approved."));
    let edits = discord.rest.calls(fake_discord::EDIT_MESSAGE);
    assert_eq!(edits.len(), 1);
    assert!(edits[0].path.ends_with(&format!("/channels/500/messages/{notice_id}")), "{}", edits[0].path);
    assert!(edits[0].body["content"].as_str().unwrap().contains("Approved by Ada"), "{:?}", edits[0].body);
    assert_eq!(edits[0].body["components"], json!([]), "the buttons are gone");

    // A replayed dispatch is recorded once; a new press gets the polite answer.
    discord.dispatch("INTERACTION_CREATE", approve);
    discord.dispatch("INTERACTION_CREATE", press("3", waiting.data(Action::Reject)));
    waiting.wait_recorded(3).await;
    waiting.route(adapter.as_ref()).await;
    let answers = discord.rest.calls(fake_discord::INTERACTION_CALLBACK);
    assert_eq!(answers.len(), 3, "{answers:?}");
    assert_eq!(answers[2].body["data"]["content"], json!("This request was already approved."));
    waiting.assert_approved_via(DecidedVia::Discord).await;
    cancel.cancel();
    running.await.unwrap().unwrap();
});

both_engines!(slack_approval_buttons_round_trip, |t: TestStore| async move {
    init();
    let slack = FakeSlack::start("xoxb-test", "xapp-test").await;
    let chat = ChatRef { chat_id: "C1".into(), thread_id: Some("1700000000.000100".into()), kind: ChatKind::Group };
    let waiting = Waiting::new(&t.store, "slack", &chat).await;
    let adapter = Arc::new(SlackAdapter::new(
        reqwest::Client::new(),
        SlackConfig {
            channel_id: waiting.channel_id,
            api_base: slack.api_base().to_owned(),
            bot_token: "xoxb-test".into(),
            app_token: Some("xapp-test".into()),
            signing_secret: None,
        },
    ));
    waiting.deliver(adapter.as_ref()).await;
    let sent = slack.api.delivered(fake_slack::POST_MESSAGE);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].body["thread_ts"], json!("1700000000.000100"), "in the job's thread");
    let actions: Vec<&str> = sent[0].body["blocks"][1]["elements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|button| button["action_id"].as_str().unwrap())
        .collect();
    assert_eq!(actions, [waiting.data(Action::Approve), waiting.data(Action::Reject), waiting.data(Action::Details)]);
    let notice_ts = sent[0].response["ts"].as_str().unwrap().to_owned();

    // Presses arrive as `block_actions` over Socket Mode.
    let cancel = CancellationToken::new();
    let running = tokio::spawn({
        let (adapter, sink, cancel) = (adapter.clone(), waiting.sink.clone(), cancel.clone());
        async move { adapter.run(sink, cancel).await }
    });
    let press = |action_ts: &str, data: String| {
        json!({"type": "block_actions", "user": {"id": "U7", "name": "ada"}, "channel": {"id": "C1"},
               "container": {"message_ts": notice_ts}, "message": {"ts": notice_ts, "thread_ts": "1700000000.000100"},
               "actions": [{"action_id": data, "value": data, "action_ts": action_ts}]})
    };
    slack.push_interactive(press("1.1", waiting.data(Action::Approve)));
    waiting.wait_recorded(1).await;
    waiting.route(adapter.as_ref()).await;
    let ephemeral = slack.api.calls(fake_slack::POST_EPHEMERAL);
    assert_eq!((ephemeral[0].body["user"].as_str(), ephemeral[0].body["channel"].as_str()), (Some("U7"), Some("C1")));
    assert_eq!(ephemeral[0].body["text"], json!("You are not allowed to decide this request."));
    waiting.assert_refused().await;

    Waiting::make_approver(&t, "U7").await;
    slack.push_interactive(press("2.2", waiting.data(Action::Approve)));
    waiting.wait_recorded(2).await;
    waiting.route(adapter.as_ref()).await;
    waiting.assert_approved_via(DecidedVia::Slack).await;
    let updates = slack.api.calls(fake_slack::UPDATE);
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].body["ts"], json!(notice_ts));
    assert!(updates[0].body["text"].as_str().unwrap().contains("Approved by ada"), "{:?}", updates[0].body);
    assert_eq!(updates[0].body["blocks"].as_array().unwrap().len(), 1, "the buttons are gone");

    slack.push_interactive(press("3.3", waiting.data(Action::Reject)));
    waiting.wait_recorded(3).await;
    waiting.route(adapter.as_ref()).await;
    let ephemeral = slack.api.calls(fake_slack::POST_EPHEMERAL);
    assert_eq!(ephemeral.last().unwrap().body["text"], json!("This request was already approved."));
    waiting.assert_approved_via(DecidedVia::Slack).await;
    cancel.cancel();
    running.await.unwrap().unwrap();
});

both_engines!(whatsapp_approval_buttons_round_trip, |t: TestStore| async move {
    init();
    let whatsapp = FakeWhatsApp::start("wa-token", "1555").await;
    let waiting = Waiting::new(&t.store, "whatsapp", &dm("491701234567")).await;
    let adapter = WhatsAppAdapter::new(
        reqwest::Client::new(),
        WhatsAppConfig {
            channel_id: waiting.channel_id,
            api_base: whatsapp.api_base().to_owned(),
            phone_number_id: "1555".into(),
            access_token: "wa-token".into(),
            app_secret: "app-secret".into(),
            verify_token: "verify".into(),
        },
    );
    waiting.deliver(&adapter).await;
    let sent = whatsapp.api.delivered(fake_whatsapp::SEND_MESSAGE);
    assert_eq!(sent.len(), 1, "{sent:?}");
    let ids: Vec<&str> = sent[0].body["interactive"]["action"]["buttons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|button| button["reply"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [waiting.data(Action::Approve), waiting.data(Action::Reject), waiting.data(Action::Details)]);
    let notice_id = sent[0].response["messages"][0]["id"].as_str().unwrap().to_owned();

    // Reply-button presses arrive on the signed webhook.
    let press = |id: &str, data: String, title: &str| {
        let body = whatsapp_webhook(
            "1555",
            "491701234567",
            id,
            json!({"type": "interactive", "context": {"id": notice_id},
                   "interactive": {"type": "button_reply", "button_reply": {"id": data, "title": title}}}),
        );
        let mut headers = HeaderMap::new();
        headers.insert("x-hub-signature-256", HeaderValue::from_str(&hub_signature("app-secret", &body)).unwrap());
        adapter.webhook(WebhookRequest { headers: &headers, body: &body }).unwrap().unwrap().events
    };
    waiting.record(press("wamid.P1", waiting.data(Action::Approve), "Approve")).await;
    waiting.route(&adapter).await;
    waiting.assert_refused().await;
    waiting.deliver(&adapter).await;
    let sent = whatsapp.api.delivered(fake_whatsapp::SEND_MESSAGE);
    assert_eq!(sent[1].body["text"]["body"], json!("You are not allowed to decide this request."));

    Waiting::make_approver(&t, "491701234567").await;
    let approve = press("wamid.P2", waiting.data(Action::Approve), "Approve");
    waiting.record(approve.clone()).await;
    waiting.route(&adapter).await;
    waiting.assert_approved_via(DecidedVia::Whatsapp).await;
    waiting.deliver(&adapter).await;
    let sent = whatsapp.api.delivered(fake_whatsapp::SEND_MESSAGE);
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert!(sent[2].body["text"]["body"].as_str().unwrap().contains("Approved by"), "{:?}", sent[2].body);

    // Meta retries the webhook: recorded once. A second press is answered politely.
    waiting.record(approve).await;
    waiting.record(press("wamid.P3", waiting.data(Action::Reject), "Reject")).await;
    waiting.route(&adapter).await;
    waiting.deliver(&adapter).await;
    let sent = whatsapp.api.delivered(fake_whatsapp::SEND_MESSAGE);
    assert_eq!(sent.len(), 4, "{sent:?}");
    assert_eq!(sent[3].body["text"]["body"], json!("This request was already approved."));
    waiting.assert_approved_via(DecidedVia::Whatsapp).await;
});
