//! Approvals in chat, per platform against its fake (SPEC §7.3, §7.7): a job a chat started waits for
//! approval → the notice with the exact call and Approve / Reject / Details buttons is queued with the
//! request and sent → a press by someone without approver rights is refused ("not allowed", an
//! `unauthorized_attempt` in the audit trail, nothing decided) → a press by an approver decides through
//! the API's code path and resumes the job, the notice is edited to name the decider → a second press and
//! a replayed one leave the one decision standing and get a polite answer.

use cortex_channels::adapter::{ChannelAdapter, InboundSink};
use cortex_channels::approvals::{Action, button_data};
use cortex_channels::delivery::deliver_due;
use cortex_channels::router::{Router, reply_target};
use cortex_channels::sink::StoreSink;
use cortex_channels::types::{ChatKind, ChatRef, InboundEvent};
use cortex_core::agent::AccessMode;
use cortex_core::approval::{ApprovalStatus, DecidedVia, RiskTier};
use cortex_core::job::{JobKind, JobStatus};
use cortex_store::Store;
use cortex_store::approvals::NewApproval;
use cortex_store::jobs::{NewJob, Suspend};
use cortex_testkit::fake_telegram::FakeTelegram;
use cortex_testkit::{TestStore, both_engines};
use serde_json::json;
use std::sync::Arc;
use uuid::Uuid;

use crate::support::{agent, channel, init, sink};

/// A chat job of `platform` parked in `waiting_for_approval` on a tool call, its notice queued.
struct Waiting {
    store: Store,
    channel_id: Uuid,
    sink: Arc<StoreSink>,
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
        let (sink, _) = sink(store, channel_id);
        Waiting { store: store.clone(), channel_id, sink, job_id: job.id, approval_id: approval.id }
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
