//! Access control in the inbound pipeline on both engines (SPEC §8.8): pairing codes redeemed in chat
//! with brute-force limits per sender and per code, access requests that let the user in once approved,
//! revoked grants, the channel allowlist, the per-user rate limit and token budget, and `read` grants
//! marking the chat job read-only.

use cortex_channels::access::create_pairing_code;
use cortex_core::agent::AccessMode;
use cortex_core::clock::Clock;
use cortex_store::Store;
use cortex_store::channel_access::{GrantChange, UserRateLimit};
use cortex_store::channels::ChannelWrite;
use cortex_store::jobs::JobUsage;
use cortex_testkit::{TestStore, both_engines};
use uuid::Uuid;

use crate::router::Fixture;
use crate::support::agent;

/// The user account platform user `user` speaks for.
async fn user_of(f: &Fixture, user: &str) -> Uuid {
    let mut tx = f.store.begin().await.unwrap();
    let (id, _) = tx.channel_user(f.channel_id, user, &format!("user {user}")).await.unwrap();
    tx.commit().await.unwrap();
    id
}

async fn code(store: &Store, agent_id: Uuid) -> String {
    create_pairing_code(store, agent_id, "write", "test").await.unwrap().code
}

both_engines!(a_pairing_code_redeemed_in_chat_admits_its_user_once, |t: TestStore| async move {
    let f = Fixture::new(&t.store).await;
    let agent_id = agent(&t.store, "Paired", AccessMode::Allowlist).await;
    f.bind(agent_id, "9", None).await;
    f.bind(agent_id, "10", None).await;
    f.says("9", "9", 1, "hello").await;
    f.route().await;
    assert_eq!(f.outcome("9", 1).await.0, "refused", "no grant yet");

    // A bare code (any case) from a sender without a grant is a redemption attempt.
    let code = code(&t.store, agent_id).await;
    f.says("9", "9", 2, &code.to_lowercase()).await;
    f.route().await;
    assert_eq!(f.outcome("9", 2).await.0, "routed");
    assert_eq!(f.outbox_texts().await.last().unwrap(), "Paired. You can chat with this agent now.");
    let grant = t.store.grant(agent_id, user_of(&f, "9").await).await.unwrap().unwrap();
    assert_eq!((grant.origin.as_str(), grant.status.as_str()), ("pairing", "active"));
    f.says("9", "9", 3, "now?").await;
    f.route().await;
    let (status, _, job) = f.outcome("9", 3).await;
    assert_eq!((status.as_str(), job.is_some()), ("routed", true));

    // Single use: someone else offering the same code is refused.
    f.says("10", "10", 1, &format!("/pair {code}")).await;
    f.route().await;
    assert_eq!(f.outcome("10", 1).await.0, "refused");
    assert!(f.outbox_texts().await.last().unwrap().contains("not valid"));
    let codes = t.store.pairing_codes(agent_id).await.unwrap();
    assert_eq!(codes[0].redeemed_by, Some(user_of(&f, "9").await));
    assert_eq!(codes[0].state(t.clock.now()), "redeemed");
});

both_engines!(wrong_pairing_guesses_lock_the_sender_and_burn_the_agents_codes, |t: TestStore| async move {
    let f = Fixture::new(&t.store).await;
    let agent_id = agent(&t.store, "Guarded", AccessMode::Allowlist).await;
    for chat in ["1", "2", "3", "4", "5", "6"] {
        f.bind(agent_id, chat, None).await;
    }
    let right = code(&t.store, agent_id).await;
    // Five wrong guesses; then even the right code is refused for the hour.
    for n in 1..=5 {
        f.says("1", "1", n, "/pair ZZZZZZ").await;
    }
    f.says("1", "1", 6, &right).await;
    f.route().await;
    assert_eq!(f.outcome("1", 6).await.0, "refused");
    assert!(f.outbox_texts().await.last().unwrap().contains("Too many wrong codes"));
    assert!(t.store.grant(agent_id, user_of(&f, "1").await).await.unwrap().is_none());

    // The code itself survived (another sender can still use it) …
    f.says("2", "2", 1, &right).await;
    f.route().await;
    assert_eq!(f.outcome("2", 1).await.0, "routed");

    // … but twenty wrong guesses aimed at the agent burn its live codes for everyone.
    let burnt = code(&t.store, agent_id).await;
    for chat in ["3", "4", "5", "6"] {
        for n in 1..=5 {
            f.says(chat, chat, n, "/pair YYYYYY").await;
        }
    }
    f.route().await;
    let codes = t.store.pairing_codes(agent_id).await.unwrap();
    assert_eq!(codes.iter().find(|c| c.code == burnt).unwrap().state(t.clock.now()), "burnt");
    f.says("2", "2", 2, &format!("/pair {burnt}")).await;
    f.route().await;
    assert!(f.outbox_texts().await.last().unwrap().contains("not valid"), "a burnt code no longer works");

    // After the hour the locked sender may try again.
    t.clock.advance(chrono::Duration::minutes(61));
    let fresh = code(&t.store, agent_id).await;
    f.says("1", "1", 7, &fresh).await;
    f.route().await;
    assert_eq!(f.outcome("1", 7).await.0, "routed");
    assert!(t.store.grant(agent_id, user_of(&f, "1").await).await.unwrap().unwrap().is_usable(t.clock.now()));
});

both_engines!(an_approved_access_request_lets_the_next_message_through, |t: TestStore| async move {
    let f = Fixture::new(&t.store).await;
    let agent_id = agent(&t.store, "Queue", AccessMode::ApprovalQueue).await;
    f.bind(agent_id, "20", None).await;
    f.says("20", "20", 1, "may I?").await;
    f.route().await;
    let requests = t.store.access_requests(agent_id, Some("pending"), 50).await.unwrap();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].message_preview.as_deref(), Some("may I?"));
    assert_eq!(requests[0].reply_target.as_ref().unwrap().0["chat"]["chat_id"], "20");

    let mut tx = t.store.begin().await.unwrap();
    tx.decide_access_request(agent_id, requests[0].id, true, None, "test").await.unwrap();
    tx.commit().await.unwrap();
    let mut tx = t.store.begin().await.unwrap();
    let again = tx.decide_access_request(agent_id, requests[0].id, false, None, "test").await;
    assert!(matches!(again, Err(cortex_store::StoreError::StaleState { .. })), "decided once: {again:?}");
    drop(tx);

    f.says("20", "20", 2, "thanks, hello").await;
    f.route().await;
    let (status, _, job) = f.outcome("20", 2).await;
    assert_eq!((status.as_str(), job.is_some()), ("routed", true));
    let grant = t.store.grant(agent_id, user_of(&f, "20").await).await.unwrap().unwrap();
    assert_eq!(grant.origin, "approval");
});

both_engines!(a_revoked_grant_is_refused_with_its_reason_even_on_an_open_agent, |t: TestStore| async move {
    let f = Fixture::new(&t.store).await;
    let agent_id = agent(&t.store, "Opened", AccessMode::Open).await;
    f.bind(agent_id, "30", None).await;
    f.says("30", "30", 1, "hi").await;
    f.route().await;
    assert_eq!(f.outcome("30", 1).await.0, "routed");
    let user = user_of(&f, "30").await;
    let mut tx = t.store.begin().await.unwrap();
    assert!(tx.revoke_grant(agent_id, user).await.unwrap());
    tx.commit().await.unwrap();
    f.says("30", "30", 2, "still there?").await;
    f.route().await;
    assert_eq!(f.outcome("30", 2).await.0, "refused");
    assert!(f.outbox_texts().await.last().unwrap().contains("was revoked"));
});

both_engines!(the_channel_allowlist_admits_only_listed_senders, |t: TestStore| async move {
    let f = Fixture::new(&t.store).await;
    let agent_id = agent(&t.store, "Listed", AccessMode::Open).await;
    f.bind(agent_id, "40", None).await;
    let channel = t.store.channel(f.channel_id).await.unwrap();
    let mut tx = t.store.begin().await.unwrap();
    tx.update_channel(&ChannelWrite {
        id: channel.id,
        channel_type: channel.channel_type.clone(),
        name: channel.name.clone(),
        config: channel.config.clone(),
        secrets_enc: None,
        secret_keys: vec![],
        source: "api".into(),
        enabled: true,
        inbound_policy: "allowlist".into(),
        default_agent_id: None,
        bot_identity: None,
    })
    .await
    .unwrap();
    tx.commit().await.unwrap();
    f.says("40", "40", 1, "hi").await;
    f.says("40", "40", 2, "hi?").await;
    f.route().await;
    assert_eq!(f.outcome("40", 2).await.0, "refused");
    assert_eq!(f.outbox_texts().await, ["This bot only answers people an operator has allowed."], "once per hour");

    let mut tx = t.store.begin().await.unwrap();
    assert!(tx.allow_platform_user(f.channel_id, "40").await.unwrap());
    assert!(!tx.allow_platform_user(f.channel_id, "40").await.unwrap());
    tx.commit().await.unwrap();
    f.says("40", "40", 3, "and now?").await;
    f.route().await;
    let (status, detail, _) = f.outcome("40", 3).await;
    assert_eq!(status, "routed", "{detail:?}");
});

both_engines!(a_sender_over_the_rate_limit_is_refused_and_told_once, |t: TestStore| async move {
    let f = Fixture::new(&t.store).await;
    let agent_id = agent(&t.store, "Busy", AccessMode::Open).await;
    f.bind(agent_id, "50", None).await;
    for n in 1..=22 {
        f.says("50", "50", n, &format!("message {n}")).await;
    }
    f.route().await;
    assert_eq!(f.outcome("50", 20).await.0, "routed");
    assert_eq!(f.outcome("50", 21).await.0, "refused");
    let (status, detail, job) = f.outcome("50", 22).await;
    assert_eq!((status.as_str(), detail.as_deref(), job), ("refused", Some("rate limited"), None));
    let slow = f.outbox_texts().await.iter().filter(|text| text.contains("Please wait a minute")).count();
    assert_eq!(slow, 1, "told once per window");

    // A minute later the window has room again.
    t.clock.advance(chrono::Duration::seconds(61));
    f.says("50", "50", 23, "calmer now").await;
    f.route().await;
    assert_eq!(f.outcome("50", 23).await.0, "routed");

    // A grant's own limit wins over the default.
    let user = user_of(&f, "50").await;
    let mut tx = t.store.begin().await.unwrap();
    let limit = UserRateLimit { max_messages: 1, window_seconds: 60 };
    let change = GrantChange { rate_limit: Some(Some(limit)), ..GrantChange::default() };
    tx.change_grant(agent_id, user, &change).await.unwrap();
    tx.commit().await.unwrap();
    f.says("50", "50", 24, "one more").await;
    f.route().await;
    assert_eq!(f.outcome("50", 24).await.1.as_deref(), Some("rate limited"));
});

both_engines!(a_read_grant_marks_the_chat_job_read_only, |t: TestStore| async move {
    let f = Fixture::new(&t.store).await;
    let agent_id = agent(&t.store, "Reader", AccessMode::Allowlist).await;
    f.bind(agent_id, "70", None).await;
    let read_code = create_pairing_code(&t.store, agent_id, "read", "test").await.unwrap().code;
    f.says("70", "70", 1, &read_code).await;
    f.says("70", "70", 2, "what is on the menu?").await;
    f.route().await;
    let (_, _, job) = f.outcome("70", 2).await;
    let job = t.store.get_job(job.expect("routed to a job")).await.unwrap();
    assert!(job.read_only_access(), "the runtime is told: {}", job.payload);

    // Full (`write`) access hands over a job that is not marked.
    let user = user_of(&f, "70").await;
    let mut tx = t.store.begin().await.unwrap();
    let change = GrantChange { access: Some("write".into()), ..GrantChange::default() };
    tx.change_grant(agent_id, user, &change).await.unwrap();
    tx.commit().await.unwrap();
    f.says("70", "70", 3, "and the prices?").await;
    f.route().await;
    let job = t.store.get_job(f.outcome("70", 3).await.2.unwrap()).await.unwrap();
    assert!(!job.read_only_access(), "{}", job.payload);
});

both_engines!(a_sender_over_the_agents_daily_token_budget_is_refused_without_a_job, |t: TestStore| async move {
    let f = Fixture::new(&t.store).await;
    let mut definition = cortex_testkit::agent_definition("Thrifty");
    definition.access_mode = AccessMode::Open;
    definition.resource_limits.user_token_budget = Some(1_000);
    let mut tx = t.store.begin().await.unwrap();
    let agent_id = tx.insert_agent(&definition).await.unwrap();
    tx.commit().await.unwrap();
    f.bind(agent_id, "80", None).await;
    f.bind(agent_id, "81", None).await;

    // The first answer used 1200 tokens (as the worker records them on the job).
    f.says("80", "80", 1, "write me an essay").await;
    f.route().await;
    let first = f.outcome("80", 1).await.2.expect("a job");
    let mut tx = t.store.begin().await.unwrap();
    let usage = JobUsage { tokens_in: 700, tokens_out: 500, cost_usd: 0.0, llm_calls: 1, tool_calls: 0 };
    tx.add_job_usage(first, &usage).await.unwrap();
    tx.commit().await.unwrap();

    // Over the budget: refused with a polite sentence saying when, and no job.
    t.clock.advance(chrono::Duration::hours(1));
    f.says("80", "80", 2, "and another one").await;
    f.route().await;
    let (status, detail, job) = f.outcome("80", 2).await;
    assert_eq!((status.as_str(), detail.as_deref(), job), ("refused", Some("token budget exhausted"), None));
    let told = f.outbox_texts().await;
    assert_eq!(
        told.last().unwrap(),
        "You've reached your usage limit with this agent for now. Please try again in 23 hours."
    );

    // Another user of the same agent has their own budget.
    f.says("81", "81", 1, "hello").await;
    f.route().await;
    assert_eq!(f.outcome("81", 1).await.0, "routed");

    // A day after the expensive answer the window has room again.
    t.clock.advance(chrono::Duration::hours(23));
    f.says("80", "80", 3, "a short one?").await;
    f.route().await;
    assert_eq!(f.outcome("80", 3).await.0, "routed");
});
