//! `approval_notify[]` targets of an agent (SPEC §3.2, §7.7), against the fake Bot API on both engines: a
//! job a chat started waits for approval → the notice is queued, in the request's transaction, for the
//! originating chat and for each target chat (a target equal to the originating chat gets no second
//! one) → a press in the target chat is judged like one in the originating chat: refused without approver
//! rights, and by an approver it decides and resumes the job.

use cortex_channels::adapter::{ChannelAdapter, InboundSink, WebhookRequest};
use cortex_channels::approvals::{Action, button_data};
use cortex_channels::delivery::deliver_due;
use cortex_channels::router::{Router, reply_target};
use cortex_channels::telegram::{TelegramAdapter, TelegramConfig, TelegramMode};
use cortex_channels::types::{ChatKind, ChatRef};
use cortex_core::agent::{AccessMode, ApprovalTarget};
use cortex_core::approval::{ApprovalStatus, RiskTier};
use cortex_core::job::{JobKind, JobStatus};
use cortex_store::approvals::NewApproval;
use cortex_store::jobs::{NewJob, Suspend};
use cortex_testkit::fake_telegram::FakeTelegram;
use cortex_testkit::{TestStore, both_engines};
use serde_json::json;
use uuid::Uuid;

use crate::support::{agent, channel, init, sink};

fn press(id: &str, from: i64, chat: i64, message_id: i64, data: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"update_id": 1, "callback_query": {
        "id": id, "from": {"id": from, "is_bot": false, "first_name": format!("User{from}")}, "data": data,
        "message": {"message_id": message_id, "chat": {"id": chat, "type": "supergroup"}},
    }}))
    .unwrap()
}

both_engines!(approval_notices_also_reach_the_target_chats_and_a_press_there_decides, |t: TestStore| async move {
    init();
    let telegram = FakeTelegram::start("1:t").await;
    let channel_id = channel(&t.store, "telegram").await;
    let agent_id = agent(&t.store, "notify-targets", AccessMode::Open).await;
    let mut tx = t.store.begin().await.unwrap();
    let targets = [
        ApprovalTarget { channel_id, chat_id: "-100200".into() },
        // The originating chat itself: it gets its notice once.
        ApprovalTarget { channel_id, chat_id: "42".into() },
    ];
    tx.set_approval_notify(agent_id, &targets).await.unwrap();
    let origin = ChatRef { chat_id: "42".into(), thread_id: None, kind: ChatKind::Direct };
    let (job, _) = tx
        .insert_job(&NewJob {
            kind: JobKind::Chat,
            payload: json!({"reply": {"channel_id": channel_id, "target": reply_target(&origin, None)}}),
            ..NewJob::task(agent_id, json!({}))
        })
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let worker = Uuid::now_v7();
    assert_eq!(t.store.claim_next(worker, false).await.unwrap().map(|job| job.id), Some(job.id));
    let mut tx = t.store.begin().await.unwrap();
    let (approval, _) = tx
        .insert_approval(&NewApproval {
            job_id: job.id,
            tool_call_id: None,
            agent_id,
            action_type: "tool",
            action_summary: "Call `webhook:deploy`".into(),
            action_detail: json!({"tool_ref": "webhook:deploy", "arguments": {"env": "prod"}}),
            tool_ref: Some("webhook:deploy".into()),
            args_hash: Some("h".into()),
            risk: RiskTier::P1,
            expires_at: t.store.clock().now() + chrono::Duration::hours(24),
        })
        .await
        .unwrap();
    tx.suspend(job.id, worker, Suspend::AwaitApproval, Some(approval.id)).await.unwrap();
    tx.commit().await.unwrap();

    let adapter = TelegramAdapter::new(
        reqwest::Client::new(),
        TelegramConfig {
            channel_id,
            api_base: telegram.api_base().to_owned(),
            token: "1:t".into(),
            mode: TelegramMode::Webhook { url: None, secret: None },
        },
    );
    assert_eq!(deliver_due(&t.store, channel_id, &adapter, Uuid::now_v7()).await.unwrap(), 2, "origin + one target");
    let sent = telegram.delivered("sendMessage");
    let mut chats: Vec<String> = sent.iter().map(|call| call.body["chat_id"].to_string()).collect();
    chats.sort();
    assert_eq!(chats, ["-100200", "42"]);
    let approve = button_data(Action::Approve, approval.id);
    for notice in &sent {
        let keyboard = notice.body["reply_markup"]["inline_keyboard"].to_string();
        assert!(keyboard.contains(&approve), "both notices carry the buttons: {keyboard}");
    }
    let in_target = sent.iter().find(|call| call.body["chat_id"] == json!(-100200)).unwrap();
    let notice_id = in_target.response["message_id"].as_i64().unwrap();

    let (sink, _) = sink(&t.store, channel_id);
    let channel_row = t.store.channel(channel_id).await.unwrap();
    let route = |body: Vec<u8>| {
        let (adapter, sink, store, channel_row) = (&adapter, sink.clone(), t.store.clone(), channel_row.clone());
        async move {
            let headers = reqwest::header::HeaderMap::new();
            let batch = adapter.webhook(WebhookRequest { headers: &headers, body: &body }).unwrap().unwrap();
            for event in batch.events {
                sink.deliver(event).await.unwrap();
            }
            Router::new(store).route_pending(&channel_row, adapter).await.unwrap();
        }
    };

    // Someone in the approvers' group without the role: refused as in the originating chat.
    route(press("q1", 9, -100200, notice_id, &approve)).await;
    assert_eq!(
        telegram.calls("answerCallbackQuery")[0].body["text"],
        json!("You are not allowed to decide this request.")
    );
    assert_eq!(t.store.get_approval(approval.id).await.unwrap().status, ApprovalStatus::Pending);

    // Once an approver, the press in the target chat decides and resumes the job.
    let changed = t
        .execute_raw(
            "UPDATE user_account SET role = 'approver' WHERE id IN \
             (SELECT user_id FROM channel_mapping WHERE platform_user_id = '9')"
                .to_owned(),
        )
        .await
        .unwrap();
    assert_eq!(changed, 1);
    route(press("q2", 9, -100200, notice_id, &approve)).await;
    assert_eq!(t.store.get_approval(approval.id).await.unwrap().status, ApprovalStatus::Approved);
    assert_eq!(t.store.get_job(job.id).await.unwrap().status, JobStatus::Scheduled);
    let edits = telegram.calls("editMessageText");
    assert_eq!(edits.len(), 1);
    assert_eq!(
        (edits[0].body["chat_id"].clone(), edits[0].body["message_id"].clone()),
        (json!(-100200), json!(notice_id))
    );
});
