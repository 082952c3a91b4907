//! The agent's `approval_notify[]` (SPEC §3.2): chats that also get its approval notices — a typed list of
//! `{channel_id, chat_id}` (unknown keys refused like every typed document), naming existing channels,
//! stored and returned, replaced as a whole by `PATCH`.

use cortex_store::channels::ChannelWrite;
use cortex_testkit::{TestStore, both_engines};
use serde_json::{Value, json};

use crate::app::{TestApp, error_code};

both_engines!(approval_notify_targets_are_typed_checked_stored_and_returned, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    let channel_id = cortex_core::new_id();
    let mut tx = app.test.store.begin().await.unwrap();
    tx.insert_channel(&ChannelWrite {
        id: channel_id,
        channel_type: "telegram".into(),
        name: "approvers-bot".into(),
        config: json!({}),
        secrets_enc: None,
        secret_keys: vec![],
        source: "api".into(),
        enabled: false,
        inbound_policy: "open".into(),
        default_agent_id: None,
        bot_identity: None,
    })
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let plain = app.create_agent("No Targets").await;
    assert_eq!(plain["approval_notify"], json!([]), "none by default");

    let model = json!({"provider": "openai", "model": "gpt-4o-mini"});
    let targets = json!([{"channel_id": channel_id, "chat_id": "-100200"}]);
    let created = app
        .post("/agents", &app.admin, json!({"name": "Gated", "model_config": model, "approval_notify": targets}))
        .await;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    assert_eq!(created["approval_notify"], targets);
    let id = created["id"].as_str().unwrap();
    let read: Value = app.get(&format!("/agents/{id}"), &app.admin).await.json().await.unwrap();
    assert_eq!(read["approval_notify"], targets, "stored");

    let more = json!([{"channel_id": channel_id, "chat_id": "-100200"}, {"channel_id": channel_id, "chat_id": "77"}]);
    let patched = app.patch(&format!("/agents/{id}"), &app.admin, json!({"approval_notify": more})).await;
    assert_eq!(patched.status(), 200);
    let patched: Value = patched.json().await.unwrap();
    assert_eq!(patched["approval_notify"], more, "the list is replaced");
    let renamed = app.patch(&format!("/agents/{id}"), &app.admin, json!({"description": "other field"})).await;
    let renamed: Value = renamed.json().await.unwrap();
    assert_eq!(renamed["approval_notify"], more, "a patch without the field keeps it");

    for body in [
        json!({"approval_notify": [{"channel_id": channel_id, "chat_id": "1", "thread": "2"}]}),
        json!({"approval_notify": [{"channel_id": channel_id}]}),
        json!({"approval_notify": [{"channel_id": "not-a-uuid", "chat_id": "1"}]}),
        json!({"approval_notify": {"channel_id": channel_id, "chat_id": "1"}}),
    ] {
        let refused = app.patch(&format!("/agents/{id}"), &app.admin, body.clone()).await;
        assert_eq!(refused.status(), 400, "{body}");
        assert_eq!(error_code(refused).await, "validation_failed", "{body}");
    }
    let unknown = json!({"approval_notify": [{"channel_id": cortex_core::new_id(), "chat_id": "1"}]});
    let refused = app.patch(&format!("/agents/{id}"), &app.admin, unknown).await;
    assert_eq!(refused.status(), 400, "a channel that does not exist");
    assert_eq!(error_code(refused).await, "validation_failed");
    let read: Value = app.get(&format!("/agents/{id}"), &app.admin).await.json().await.unwrap();
    assert_eq!(read["approval_notify"], more, "refused patches changed nothing");
});
