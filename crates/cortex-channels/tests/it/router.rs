//! The inbound pipeline on both engines: one job per message however often it is delivered, replies
//! through the outbox when the job ends, access policies, and commands that only ever touch the
//! sender's own session.

use std::sync::Arc;

use cortex_channels::adapter::InboundSink;
use cortex_channels::router::Router;
use cortex_channels::telegram::{TelegramAdapter, TelegramConfig, TelegramMode};
use cortex_channels::types::{ChatKind, ChatRef, Inbound, InboundEvent, Sender};
use cortex_core::agent::AccessMode;
use cortex_store::Store;
use cortex_store::channel_access::NewBinding;
use cortex_store::jobs::AttemptEnd;
use cortex_testkit::fake_telegram::FakeTelegram;
use cortex_testkit::{TestStore, both_engines};
use serde_json::json;
use uuid::Uuid;

use crate::support::{agent, channel, init, sink};

pub(crate) struct Fixture {
    pub(crate) store: Store,
    pub(crate) channel_id: Uuid,
    sink: Arc<cortex_channels::sink::StoreSink>,
    adapter: TelegramAdapter,
    _telegram: FakeTelegram,
}

impl Fixture {
    pub(crate) async fn new(store: &Store) -> Fixture {
        init();
        let telegram = FakeTelegram::start("1:t").await;
        let channel_id = channel(store, "telegram").await;
        let (sink, _) = sink(store, channel_id);
        let adapter = TelegramAdapter::new(
            reqwest::Client::new(),
            TelegramConfig {
                channel_id,
                api_base: telegram.api_base().to_owned(),
                token: "1:t".into(),
                mode: TelegramMode::Polling { timeout: std::time::Duration::from_secs(1) },
            },
        );
        Fixture { store: store.clone(), channel_id, sink, adapter, _telegram: telegram }
    }

    pub(crate) async fn bind(&self, agent_id: Uuid, chat: &str, respond_to: Option<&str>) {
        let mut tx = self.store.begin().await.unwrap();
        tx.upsert_binding(&NewBinding {
            agent_id,
            channel_type: "telegram".into(),
            channel_id: None,
            chat_id: chat.into(),
            respond_to: respond_to.map(str::to_owned),
        })
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }

    /// `user` writes `text` in `chat` (a group unless chat == user) as message number `n`.
    pub(crate) async fn says(&self, chat: &str, user: &str, n: u32, text: &str) {
        let kind = if chat == user { ChatKind::Direct } else { ChatKind::Group };
        let event = InboundEvent::Message(Inbound {
            channel_id: self.channel_id,
            platform_message_id: format!("msg:{chat}:{n}"),
            chat: ChatRef { chat_id: chat.into(), thread_id: None, kind },
            sender: Sender { platform_user_id: user.into(), display_name: format!("user {user}") },
            text: text.into(),
            attachments: vec![],
            reply_to: None,
            is_mention: kind == ChatKind::Direct || text.contains("@bot"),
        });
        self.sink.deliver(event).await.unwrap();
    }

    pub(crate) async fn route(&self) {
        let channel = self.store.channel(self.channel_id).await.unwrap();
        Router::new(self.store.clone()).route_pending(&channel, &self.adapter).await.unwrap();
    }

    /// `(status, detail)` of the inbound row of message `n` in `chat`.
    pub(crate) async fn outcome(&self, chat: &str, n: u32) -> (String, Option<String>, Option<Uuid>) {
        let new = cortex_store::channels::NewInbound {
            channel_id: self.channel_id,
            platform_message_id: format!("msg:{chat}:{n}"),
            chat_id: chat.into(),
            event: json!({}),
        };
        let (row, created) = self.store.record_inbound(&new).await.unwrap();
        assert!(!created, "message {chat}:{n} was never recorded");
        (row.status, row.detail, row.job_id)
    }

    /// Texts queued for the channel, oldest first.
    pub(crate) async fn outbox_texts(&self) -> Vec<String> {
        let page = self.store.list_outbox(self.channel_id, None, None, 100).await.unwrap();
        page.items.iter().rev().map(|item| item.payload["text"].as_str().unwrap_or_default().to_owned()).collect()
    }
}

both_engines!(a_message_delivered_twice_becomes_one_job_and_its_answer_is_queued, |t: TestStore| async move {
    let f = Fixture::new(&t.store).await;
    let agent_id = agent(&t.store, "Helper", AccessMode::BoundChats).await;
    f.bind(agent_id, "42", None).await;
    f.says("42", "42", 1, "hello").await;
    f.says("42", "42", 1, "hello").await;
    f.route().await;
    f.route().await;

    let (status, _, job_id) = f.outcome("42", 1).await;
    assert_eq!(status, "routed");
    let job = t.store.get_job(job_id.unwrap()).await.unwrap();
    assert_eq!(t.store.count_active_jobs(agent_id).await.unwrap(), 1, "one job for one message");
    assert_eq!(job.payload["untrusted_input"], json!(true), "a channel user is not an operator");
    assert_eq!(job.payload["reply"]["target"]["chat"]["chat_id"], json!("42"));
    let session = t.store.get_session(job.session_id.unwrap()).await.unwrap();
    let user = t.store.get_user(session.user_id.unwrap()).await.unwrap();
    assert_eq!((user.display_name.as_str(), user.role.as_str()), ("user 42", "none"));
    let grant = t.store.grant(agent_id, user.id).await.unwrap().unwrap();
    assert_eq!((grant.origin.as_str(), grant.access.as_str()), ("bound_chat", "write"));

    // Completing the job queues its answer in the same transaction, once.
    let worker = cortex_core::new_id();
    t.store.register_worker(worker, "test").await.unwrap();
    let claimed = t.store.claim_next(worker, false).await.unwrap().unwrap();
    assert_eq!(claimed.id, job.id);
    let mut tx = t.store.begin().await.unwrap();
    tx.end_attempt(job.id, worker, &AttemptEnd::Completed { result: json!({"response": "hi 42"}) }).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(f.outbox_texts().await, ["hi 42"]);
    let item = &t.store.list_outbox(f.channel_id, None, None, 10).await.unwrap().items[0];
    assert_eq!((item.idempotency_key.clone(), item.job_id), (format!("job:{}:reply", job.id), Some(job.id)));
    assert_eq!(item.target["reply_to"], json!("msg:42:1"));

    // The next message of the same user continues the same session.
    f.says("42", "42", 2, "again").await;
    f.route().await;
    let (_, _, second) = f.outcome("42", 2).await;
    assert_eq!(t.store.get_job(second.unwrap()).await.unwrap().session_id, job.session_id);
});

both_engines!(an_unbound_chat_gets_one_notice_per_hour, |t: TestStore| async move {
    let f = Fixture::new(&t.store).await;
    f.says("7", "7", 1, "anyone?").await;
    f.says("7", "7", 2, "hello?").await;
    f.route().await;
    assert_eq!(f.outcome("7", 1).await.0, "refused");
    assert_eq!(f.outcome("7", 2).await.0, "refused");
    assert_eq!(f.outbox_texts().await, ["No agent is assigned to this chat."]);
    t.clock.advance(chrono::Duration::hours(1));
    f.says("7", "7", 3, "still?").await;
    f.route().await;
    assert_eq!(f.outbox_texts().await.len(), 2);
});

both_engines!(access_policies_decide_who_reaches_the_agent, |t: TestStore| async move {
    let f = Fixture::new(&t.store).await;
    // Reached only through the channel default, a bound_chats agent needs a grant.
    let agent_id = agent(&t.store, "Private", AccessMode::BoundChats).await;
    let mut channel = t.store.channel(f.channel_id).await.unwrap();
    channel.default_agent_id = Some(agent_id);
    let mut tx = t.store.begin().await.unwrap();
    tx.update_channel(&cortex_store::channels::ChannelWrite {
        id: channel.id,
        channel_type: channel.channel_type.clone(),
        name: channel.name.clone(),
        config: channel.config.clone(),
        secrets_enc: None,
        secret_keys: vec![],
        source: "api".into(),
        enabled: true,
        inbound_policy: "open".into(),
        default_agent_id: Some(agent_id),
        bot_identity: None,
    })
    .await
    .unwrap();
    tx.commit().await.unwrap();
    f.says("5", "5", 1, "let me in").await;
    f.route().await;
    assert_eq!(f.outcome("5", 1).await.0, "refused");
    assert!(f.outbox_texts().await[0].contains("don't have access"));

    // An approval-queue agent files one pending request per user.
    let queued = agent(&t.store, "Queued", AccessMode::ApprovalQueue).await;
    f.bind(queued, "6", None).await;
    f.says("6", "6", 1, "please").await;
    f.says("6", "6", 2, "please!").await;
    f.route().await;
    assert_eq!(f.outcome("6", 2).await.0, "refused");
    let submitted = f.outbox_texts().await.iter().filter(|text| text.contains("request was submitted")).count();
    assert_eq!(submitted, 1, "told once per request");

    // An open agent admits anyone reaching it.
    let open = agent(&t.store, "Open", AccessMode::Open).await;
    f.bind(open, "8", None).await;
    f.says("8", "8", 1, "hi").await;
    f.route().await;
    assert_eq!(f.outcome("8", 1).await.0, "routed");
});

both_engines!(
    in_groups_the_bot_answers_when_addressed_and_commands_touch_only_the_senders_session,
    |t: TestStore| async move {
        let f = Fixture::new(&t.store).await;
        let agent_id = agent(&t.store, "Team", AccessMode::Open).await;
        f.bind(agent_id, "-100", None).await;
        f.says("-100", "1", 1, "chatting among ourselves").await;
        f.says("-100", "1", 2, "@bot summarise please").await;
        f.route().await;
        assert_eq!(f.outcome("-100", 1).await.0, "ignored");
        let (status, _, alice_job) = f.outcome("-100", 2).await;
        assert_eq!(status, "routed");
        let alice_job = t.store.get_job(alice_job.unwrap()).await.unwrap();

        // Bob can neither stop nor reset Alice's conversation in the same group.
        f.says("-100", "2", 3, "/stop@bot").await;
        f.says("-100", "2", 4, "/new@bot").await;
        f.route().await;
        assert_eq!(f.outcome("-100", 3).await.0, "routed");
        let alice_now = t.store.get_job(alice_job.id).await.unwrap();
        assert!(!alice_now.status.is_terminal(), "Bob's /stop left Alice's job alone: {:?}", alice_now.status);
        assert!(!t.store.get_session(alice_job.session_id.unwrap()).await.unwrap().is_closed());
        assert!(f.outbox_texts().await.contains(&"Nothing to stop.".to_owned()));

        // Alice's own /stop cancels her job; her /new closes her session.
        f.says("-100", "1", 5, "/stop@bot").await;
        f.route().await;
        assert!(t.store.get_job(alice_job.id).await.unwrap().status.is_terminal());
        f.says("-100", "1", 6, "/new@bot").await;
        f.route().await;
        assert!(t.store.get_session(alice_job.session_id.unwrap()).await.unwrap().is_closed());
    }
);
