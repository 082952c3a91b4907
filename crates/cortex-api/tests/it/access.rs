//! Access control over HTTP with a running Telegram channel against the in-process fake Bot API: an
//! access request approved through the API lets the user in (and they are told), a pairing code created
//! through the API is redeemed in chat once, a revoked grant is refused, and the channel allowlist is
//! managed by admins. Roles and error statuses on every route.

use cortex_core::role::Role;
use cortex_testkit::fake_telegram::FakeTelegram;
use cortex_testkit::{TestStore, both_engines};
use serde_json::{Value, json};

use crate::app::{TestApp, error_code};
use crate::tools::delete;

const TOKEN: &str = "4343:access-token";

async fn patch(app: &TestApp, path: &str, key: &str, body: Value) -> reqwest::Response {
    app.http.patch(app.url(path)).bearer_auth(key).json(&body).send().await.unwrap()
}

/// The texts the bot sent, once there are at least `count`.
async fn sent(telegram: &FakeTelegram, count: usize) -> Vec<String> {
    let calls = telegram.wait_for_calls("sendMessage", count).await;
    calls.iter().map(|call| call.body["text"].as_str().unwrap_or_default().to_owned()).collect()
}

both_engines!(access_requests_pairing_codes_grants_and_the_allowlist_over_http, |t: TestStore| async move {
    let telegram = FakeTelegram::start(TOKEN).await;
    let app = TestApp::spawn(t).await;
    let viewer = app.key(Role::Viewer).await;
    let operator = app.key(Role::Operator).await;
    let agent = app.create_agent("Gatekeeper").await;
    let agent_id = agent["id"].as_str().unwrap().to_owned();
    let body = json!({"access_mode": "approval_queue"});
    assert_eq!(patch(&app, &format!("/agents/{agent_id}"), &app.admin, body).await.status(), 200);
    let config = json!({"bot_token": TOKEN, "api_base": telegram.api_base(), "poll_timeout_seconds": 1});
    let channel =
        app.post("/channels", &app.admin, json!({"type": "telegram", "name": "gate", "config": config})).await;
    assert_eq!(channel.status(), 201);
    let channel: Value = channel.json().await.unwrap();
    let channel_id = channel["id"].as_str().unwrap().to_owned();
    // Bindings are read per message (no reload to wait for); an approval-queue agent still needs a grant.
    for chat in ["42", "43"] {
        let body = json!({"channel_type": "telegram", "chat_id": chat});
        assert_eq!(app.post(&format!("/agents/{agent_id}/channels"), &operator, body).await.status(), 201);
    }

    // An unknown user files one request and is told once.
    telegram.push_text(42, 42, "may I?");
    assert_eq!(
        sent(&telegram, 1).await[0],
        "Your access request was submitted. You'll be able to chat once an operator approves it."
    );
    let requests: Value =
        app.get(&format!("/agents/{agent_id}/access-requests?status=pending"), &viewer).await.json().await.unwrap();
    assert_eq!(requests["items"].as_array().unwrap().len(), 1, "{requests}");
    let request = &requests["items"][0];
    assert_eq!(request["message_preview"], "may I?");
    let request_path = format!("/agents/{agent_id}/access-requests/{}", request["id"].as_str().unwrap());
    assert_eq!(app.get(&format!("/agents/{agent_id}/access-requests?status=maybe"), &viewer).await.status(), 400);
    assert_eq!(patch(&app, &request_path, &viewer, json!({"status": "approved"})).await.status(), 403);
    assert_eq!(patch(&app, &request_path, &operator, json!({"status": "perhaps"})).await.status(), 400);

    // Approving grants access in the same step and tells the user; a second decision is a conflict.
    let approved = patch(&app, &request_path, &operator, json!({"status": "approved"})).await;
    assert_eq!(approved.status(), 200);
    assert_eq!(approved.json::<Value>().await.unwrap()["status"], "approved");
    let again = patch(&app, &request_path, &operator, json!({"status": "denied", "reason": "no"})).await;
    assert_eq!(again.status(), 409);
    assert_eq!(error_code(again).await, "invalid_state");
    assert!(sent(&telegram, 2).await[1].contains("was approved"));
    let users: Value = app.get(&format!("/agents/{agent_id}/users"), &viewer).await.json().await.unwrap();
    assert_eq!(users["items"][0]["origin"], "approval", "{users}");
    assert_eq!(users["items"][0]["status"], "active");
    let user_id = users["items"][0]["user_id"].as_str().unwrap().to_owned();

    // A pairing code: six characters, shown to operators only, redeemed in chat once.
    let code = app.post(&format!("/agents/{agent_id}/pairing-codes"), &operator, json!({})).await;
    assert_eq!(code.status(), 201);
    let code: Value = code.json().await.unwrap();
    let text = code["code"].as_str().unwrap().to_owned();
    assert_eq!((text.len(), code["state"].as_str()), (6, Some("active")));
    let listed: Value = app.get(&format!("/agents/{agent_id}/pairing-codes"), &viewer).await.json().await.unwrap();
    assert_eq!(listed["items"][0]["code"], Value::Null, "viewers do not see codes");
    assert_eq!(app.post(&format!("/agents/{agent_id}/pairing-codes"), &viewer, json!({})).await.status(), 403);
    telegram.push_text(43, 43, &text);
    assert_eq!(sent(&telegram, 3).await[2], "Paired. You can chat with this agent now.");
    let code_path = format!("/agents/{agent_id}/pairing-codes/{}", code["id"].as_str().unwrap());
    assert_eq!(delete(&app, &code_path, &operator).await.status(), 409, "a redeemed code cannot be revoked");
    let unused: Value = app
        .post(&format!("/agents/{agent_id}/pairing-codes"), &operator, json!({"access": "read"}))
        .await
        .json()
        .await
        .unwrap();
    let unused_path = format!("/agents/{agent_id}/pairing-codes/{}", unused["id"].as_str().unwrap());
    assert_eq!(delete(&app, &unused_path, &operator).await.status(), 204);
    let unknown_code = format!("/agents/{agent_id}/pairing-codes/{}", cortex_core::new_id());
    assert_eq!(delete(&app, &unknown_code, &operator).await.status(), 404);

    // Grants: change, revoke; the revoked user is told why.
    let grant_path = format!("/agents/{agent_id}/users/{user_id}");
    let limited =
        patch(&app, &grant_path, &operator, json!({"rate_limit": {"max_messages": 5, "window_seconds": 60}})).await;
    assert_eq!(limited.status(), 200);
    assert_eq!(limited.json::<Value>().await.unwrap()["rate_limit"]["max_messages"], 5);
    let bad =
        patch(&app, &grant_path, &operator, json!({"rate_limit": {"max_messages": 0, "window_seconds": 60}})).await;
    assert_eq!(bad.status(), 400);
    assert_eq!(delete(&app, &grant_path, &operator).await.status(), 204);
    telegram.push_text(42, 42, "still me");
    assert!(sent(&telegram, 4).await[3].contains("was revoked"));
    let missing =
        app.post(&format!("/agents/{agent_id}/users"), &operator, json!({"user_id": cortex_core::new_id()})).await;
    assert_eq!(missing.status(), 422);
    let renewed = app.post(&format!("/agents/{agent_id}/users"), &operator, json!({"user_id": user_id})).await;
    assert_eq!(renewed.status(), 201);
    assert_eq!(renewed.json::<Value>().await.unwrap()["origin"], "invite");

    // The allowlist is the channel's: admins change it.
    let allowlist = format!("/channels/{channel_id}/allowlist");
    assert_eq!(app.post(&allowlist, &operator, json!({"platform_user_id": "42"})).await.status(), 403);
    assert_eq!(app.post(&allowlist, &app.admin, json!({"platform_user_id": "42"})).await.status(), 201);
    assert_eq!(app.post(&allowlist, &app.admin, json!({"platform_user_id": "42"})).await.status(), 200);
    let entries: Value = app.get(&allowlist, &viewer).await.json().await.unwrap();
    assert_eq!(entries["items"][0]["platform_user_id"], "42");
    assert_eq!(delete(&app, &format!("{allowlist}/42"), &app.admin).await.status(), 204);
    assert_eq!(delete(&app, &format!("{allowlist}/42"), &app.admin).await.status(), 404);
    assert_eq!(app.get("/channels/nope/allowlist", &viewer).await.status(), 404);

    // The dashboard shows the same, with actions only for roles the API lets act.
    assert_eq!(app.post(&allowlist, &app.admin, json!({"platform_user_id": "99"})).await.status(), 201);
    crate::dashboard::user(&app, "op@example.com", Role::Operator).await;
    crate::dashboard::user(&app, "view@example.com", Role::Viewer).await;
    let op = crate::dashboard::login(&app, "op@example.com").await;
    let view = crate::dashboard::login(&app, "view@example.com").await;
    let screen = format!("/ui/agents/{agent_id}/access");
    let operator_page = op.get(&app, &screen).send().await.unwrap();
    assert_eq!(operator_page.status(), 200);
    let operator_page = operator_page.text().await.unwrap();
    for expected in [text.as_str(), "New pairing code", "approval", "pairing", "redeemed", "invite"] {
        assert!(operator_page.contains(expected), "{expected} missing from the operator's page");
    }
    let viewer_page = view.get(&app, &screen).send().await.unwrap().text().await.unwrap();
    assert!(viewer_page.contains("Gatekeeper") && viewer_page.contains("approval"));
    for hidden in [text.as_str(), "New pairing code", ">Revoke<"] {
        assert!(!viewer_page.contains(hidden), "a viewer sees {hidden}");
    }
    let channel_page =
        view.get(&app, &format!("/ui/channels/{channel_id}")).send().await.unwrap().text().await.unwrap();
    assert!(channel_page.contains("<code>99</code>") && !channel_page.contains(">Allow<"), "{channel_page}");
});
