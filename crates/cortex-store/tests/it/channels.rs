//! Channels, the inbound dedupe log, receive cursors and the durable outbox, on both engines.

use cortex_store::Store;
use cortex_store::channels::{ChannelWrite, InboundOutcome, NewInbound};
use cortex_store::outbox::NewOutbox;
use cortex_testkit::{TestStore, both_engines};
use serde_json::json;
use uuid::Uuid;

fn telegram(name: &str) -> ChannelWrite {
    ChannelWrite {
        id: cortex_core::new_id(),
        channel_type: "telegram".into(),
        name: name.into(),
        config: json!({"api_base": "http://127.0.0.1:1"}),
        secrets_enc: Some("v1:opaque".into()),
        secret_keys: vec!["bot_token".into()],
        source: "api".into(),
        enabled: true,
        inbound_policy: "open".into(),
        default_agent_id: None,
        bot_identity: Some(json!({"id": 7, "username": "cortex_bot"})),
    }
}

async fn channel(store: &Store, name: &str) -> Uuid {
    let new = telegram(name);
    let mut tx = store.begin().await.unwrap();
    tx.insert_channel(&new).await.unwrap();
    tx.commit().await.unwrap();
    new.id
}

fn reply(channel_id: Uuid, key: &str) -> NewOutbox {
    NewOutbox {
        channel_id: Some(channel_id),
        target: json!({"chat_id": "42"}),
        payload: json!({"text": "hello"}),
        idempotency_key: key.into(),
        job_id: None,
    }
}

async fn enqueue(store: &Store, new: &NewOutbox) -> (Uuid, bool) {
    let mut tx = store.begin().await.unwrap();
    let queued = tx.enqueue_outbox(new).await.unwrap();
    tx.commit().await.unwrap();
    queued
}

both_engines!(channels_round_trip_with_unique_names_and_cursors, |t: TestStore| async move {
    let mut new = telegram("support bot");
    let mut tx = t.store.begin().await.unwrap();
    tx.insert_channel(&new).await.unwrap();
    tx.commit().await.unwrap();

    let stored = t.store.channel(new.id).await.unwrap();
    assert_eq!(stored.channel_type, "telegram");
    assert_eq!(stored.secret_keys, ["bot_token"]);
    assert_eq!(stored.bot_identity, Some(json!({"id": 7, "username": "cortex_bot"})));
    assert!(stored.enabled);

    let mut tx = t.store.begin().await.unwrap();
    let err = tx.insert_channel(&telegram("support bot")).await.unwrap_err();
    assert!(matches!(err, cortex_store::StoreError::Conflict { .. }), "{err:?}");
    drop(tx);

    new.enabled = false;
    new.config = json!({"mode": "webhook"});
    let mut tx = t.store.begin().await.unwrap();
    tx.update_channel(&new).await.unwrap();
    tx.commit().await.unwrap();
    let stored = t.store.channel_by_name("support bot").await.unwrap().unwrap();
    assert!(!stored.enabled);
    assert_eq!(stored.config, json!({"mode": "webhook"}));

    assert_eq!(t.store.channel_cursor(new.id).await.unwrap(), None);
    t.store.save_channel_cursor(new.id, "101").await.unwrap();
    t.store.save_channel_cursor(new.id, "102").await.unwrap();
    assert_eq!(t.store.channel_cursor(new.id).await.unwrap().as_deref(), Some("102"));

    let mut tx = t.store.begin().await.unwrap();
    assert!(tx.delete_channel(new.id).await.unwrap());
    tx.commit().await.unwrap();
    assert!(t.store.channels().await.unwrap().is_empty());
    assert_eq!(t.store.channel_cursor(new.id).await.unwrap(), None);
});

both_engines!(an_inbound_message_is_recorded_and_routed_once, |t: TestStore| async move {
    let channel_id = channel(&t.store, "bot").await;
    let new = NewInbound {
        channel_id,
        platform_message_id: "update:5".into(),
        chat_id: "42".into(),
        event: json!({"type": "message", "text": "hi"}),
    };
    let (first, created) = t.store.record_inbound(&new).await.unwrap();
    assert!(created);
    assert_eq!(first.status, "received");
    let (again, created) = t.store.record_inbound(&new).await.unwrap();
    assert!(!created, "a redelivery must not create a second row");
    assert_eq!(again.id, first.id);
    assert_eq!(t.store.unrouted_inbound(channel_id, 10).await.unwrap().len(), 1);

    let outcome = InboundOutcome { status: "refused", detail: Some("no agent".into()), ..Default::default() };
    let mut tx = t.store.begin().await.unwrap();
    assert!(tx.finish_inbound(first.id, &outcome).await.unwrap());
    tx.commit().await.unwrap();
    let mut tx = t.store.begin().await.unwrap();
    assert!(!tx.finish_inbound(first.id, &outcome).await.unwrap(), "routing happens once");
    drop(tx);
    assert_eq!(t.store.inbound(first.id).await.unwrap().status, "refused");
    assert!(t.store.unrouted_inbound(channel_id, 10).await.unwrap().is_empty());
});

both_engines!(outbox_claims_deliver_retry_and_recover_expired_leases, |t: TestStore| async move {
    let channel_id = channel(&t.store, "bot").await;
    let (id, created) = enqueue(&t.store, &reply(channel_id, "job:1:reply")).await;
    assert!(created);
    let (same, created) = enqueue(&t.store, &reply(channel_id, "job:1:reply")).await;
    assert!(!created, "one idempotency key queues one message");
    assert_eq!(same, id);

    let lease = chrono::Duration::seconds(60);
    let (worker_a, worker_b) = (cortex_core::new_id(), cortex_core::new_id());
    let claimed = t.store.claim_outbox(channel_id, worker_a, lease, 10).await.unwrap();
    assert_eq!(claimed.iter().map(|item| item.id).collect::<Vec<_>>(), [id]);
    assert_eq!((claimed[0].status.as_str(), claimed[0].attempts), ("sending", 1));
    assert!(t.store.claim_outbox(channel_id, worker_b, lease, 10).await.unwrap().is_empty(), "leased");

    // A transient failure puts it back with a due time; it is not claimable before then.
    let retry_at = t.clock.now_plus(5);
    assert!(t.store.outbox_attempt_failed(id, worker_a, "429", Some(retry_at)).await.unwrap());
    assert_eq!(t.store.next_outbox_due(channel_id).await.unwrap(), Some(retry_at));
    assert!(t.store.claim_outbox(channel_id, worker_b, lease, 10).await.unwrap().is_empty());
    t.clock.advance(chrono::Duration::seconds(5));

    // Worker b claims it and "crashes" after sending: the row stays `sending` until the lease runs out.
    let claimed = t.store.claim_outbox(channel_id, worker_b, lease, 10).await.unwrap();
    assert_eq!(claimed[0].attempts, 2);
    t.clock.advance(chrono::Duration::seconds(30));
    assert!(t.store.claim_outbox(channel_id, worker_a, lease, 10).await.unwrap().is_empty());
    t.clock.advance(chrono::Duration::seconds(31));
    let reclaimed = t.store.claim_outbox(channel_id, worker_a, lease, 10).await.unwrap();
    assert_eq!((reclaimed.len(), reclaimed[0].attempts), (1, 3));

    // The dead holder's late acknowledgement is refused; the live holder's is recorded.
    assert!(!t.store.outbox_delivered(id, worker_b, "m-1").await.unwrap());
    assert!(t.store.outbox_delivered(id, worker_a, "m-2").await.unwrap());
    let item = t.store.outbox_item(id).await.unwrap().unwrap();
    assert_eq!((item.status.as_str(), item.platform_message_id.as_deref()), ("delivered", Some("m-2")));
    assert!(t.store.claim_outbox(channel_id, worker_a, lease, 10).await.unwrap().is_empty());
    assert_eq!(t.store.next_outbox_due(channel_id).await.unwrap(), None);

    // A permanent failure is visible and an operator can queue it again.
    let (other, _) = enqueue(&t.store, &reply(channel_id, "job:2:reply")).await;
    t.store.claim_outbox(channel_id, worker_a, lease, 10).await.unwrap();
    assert!(t.store.outbox_attempt_failed(other, worker_a, "chat not found", None).await.unwrap());
    let failed = t.store.list_outbox(channel_id, Some("failed"), None, 50).await.unwrap();
    assert_eq!(failed.items.iter().map(|item| item.id).collect::<Vec<_>>(), [other]);
    assert_eq!(failed.items[0].last_error.as_deref(), Some("chat not found"));
    assert!(t.store.retry_outbox(other).await.unwrap());
    assert!(!t.store.retry_outbox(other).await.unwrap(), "only failed messages are retried");
    let all = t.store.list_outbox(channel_id, None, None, 1).await.unwrap();
    assert_eq!(all.items[0].id, other, "newest first");
    let rest = t.store.list_outbox(channel_id, None, all.next_cursor, 1).await.unwrap();
    assert_eq!(rest.items[0].id, id);
});

both_engines!(concurrent_outbox_claims_never_share_a_message, |t: TestStore| async move {
    let channel_id = channel(&t.store, "bot").await;
    for n in 0..40 {
        enqueue(&t.store, &reply(channel_id, &format!("k{n}"))).await;
    }
    let lease = chrono::Duration::seconds(60);
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let store = t.store.clone();
        tasks.push(tokio::spawn(async move {
            let holder = cortex_core::new_id();
            let mut mine = Vec::new();
            loop {
                let batch = store.claim_outbox(channel_id, holder, lease, 3).await.unwrap();
                if batch.is_empty() {
                    return mine;
                }
                mine.extend(batch.into_iter().map(|item| item.id));
            }
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort();
    let count = all.len();
    all.dedup();
    assert_eq!((count, all.len()), (40, 40));
});
