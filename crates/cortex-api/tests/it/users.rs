//! Users and roles (SPEC §2.4 `GET|POST|PATCH /users` [admin]): only admins manage users; input is
//! validated in words; a created user signs in with the password given; disabling ends the user's
//! sessions and refuses their API keys; demoting caps their keys; the last enabled admin stays.

use cortex_core::role::Role;
use cortex_store::audit::AuditFilter;
use cortex_testkit::{TestStore, both_engines};
use serde_json::{Value, json};

use crate::app::{TestApp, error_code};
use crate::dashboard::{PASSWORD, login, user};

async fn patch(app: &TestApp, key: &str, id: &str, body: Value) -> reqwest::Response {
    app.http.patch(app.url(&format!("/users/{id}"))).bearer_auth(key).json(&body).send().await.unwrap()
}

/// The id of the user listed with `display_name`.
async fn user_named(app: &TestApp, display_name: &str) -> String {
    let list: Value = app.get("/users?limit=200", &app.admin).await.json().await.unwrap();
    let found = list["items"].as_array().unwrap().iter().find(|user| user["display_name"] == display_name);
    found.unwrap_or_else(|| panic!("no user {display_name} in {list}"))["id"].as_str().unwrap().to_owned()
}

both_engines!(only_admins_manage_users_and_input_is_checked, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    let target = user(&app, "someone@example.com", Role::Viewer).await.to_string();
    for role in [Role::Viewer, Role::Operator, Role::Approver] {
        let key = app.key(role).await;
        assert_eq!(app.get("/users", &key).await.status(), 403, "{role} lists");
        let create = app.post("/users", &key, json!({"email": "x@example.com", "role": "viewer"})).await;
        assert_eq!(create.status(), 403, "{role} creates");
        assert_eq!(patch(&app, &key, &target, json!({"role": "admin"})).await.status(), 403, "{role} promotes");
    }
    for (body, field) in [
        (json!({"email": "not-an-email", "role": "viewer"}), "email"),
        (json!({"email": "a@example.com", "role": "none"}), "role"),
        (json!({"email": "a@example.com", "role": "viewer", "password": "short"}), "password"),
        (json!({"email": "a@example.com", "role": "viewer", "display_name": "  "}), "display_name"),
    ] {
        let refused = app.post("/users", &app.admin, body.clone()).await;
        assert_eq!(refused.status(), 400, "{body}");
        let error: Value = refused.json().await.unwrap();
        assert!(error["error"]["details"]["fields"][field].is_string(), "{field} named in {error}");
    }
    let unknown = app.post("/users", &app.admin, json!({"email": "a@example.com", "role": "viewer", "x": 1})).await;
    assert_eq!(unknown.status(), 400);
    assert_eq!(app.post("/users", &app.admin, json!({"email": "a@example.com", "role": "boss"})).await.status(), 400);
    assert_eq!(patch(&app, &app.admin, "not-a-uuid", json!({"role": "viewer"})).await.status(), 404);
    let missing = patch(&app, &app.admin, &uuid::Uuid::nil().to_string(), json!({"role": "viewer"})).await;
    assert_eq!(missing.status(), 404);
    assert_eq!(patch(&app, &app.admin, &target, json!({"role": "boss"})).await.status(), 400);

    let created = app
        .post("/users", &app.admin, json!({"email": " New@Example.com ", "role": "operator", "password": PASSWORD}))
        .await;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    assert_eq!(created["email"], "new@example.com");
    assert_eq!(created["display_name"], "new");
    assert_eq!(created["role"], "operator");
    assert_eq!(created["disabled"], false);
    assert!(created.get("password_hash").is_none() && created.get("password").is_none(), "{created}");
    let session = login(&app, "new@example.com").await;
    let me: Value = session.get(&app, "/auth/session").send().await.unwrap().json().await.unwrap();
    assert_eq!(me["role"], "operator", "{me}");
    let again = app.post("/users", &app.admin, json!({"email": "new@example.com", "role": "viewer"})).await;
    assert_eq!(again.status(), 409);
    assert_eq!(error_code(again).await, "conflict");

    let first: Value = app.get("/users?limit=1", &app.admin).await.json().await.unwrap();
    assert_eq!(first["items"][0]["id"], created["id"], "newest first");
    let cursor = first["next_cursor"].as_str().expect("more than one user");
    let rest: Value = app.get(&format!("/users?limit=200&cursor={cursor}"), &app.admin).await.json().await.unwrap();
    assert!(rest["items"].as_array().unwrap().iter().all(|user| user["id"] != created["id"]));
    assert!(rest["items"].as_array().unwrap().iter().any(|user| user["id"] == target.as_str()));

    let audit = app
        .test
        .store
        .list_audit(&AuditFilter { action: Some("user.create".into()), ..AuditFilter::default() }, None, 10)
        .await
        .unwrap();
    assert_eq!(audit.items.len(), 1, "the API's creation is audited");
    assert_eq!(audit.items[0].target_id.as_deref(), created["id"].as_str());
});

both_engines!(disabling_a_user_ends_their_sessions_and_refuses_their_keys, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    let id = user(&app, "ops@example.com", Role::Operator).await.to_string();
    let session = login(&app, "ops@example.com").await;
    let made = session.post(&app, "/api-keys", json!({"name": "ops deploy", "role": "operator"})).send().await.unwrap();
    assert_eq!(made.status(), 201);
    let key = made.json::<Value>().await.unwrap()["secret"].as_str().unwrap().to_owned();
    assert_eq!(app.get("/agents", &key).await.status(), 200);

    // Demoting caps the keys the user holds at the new role.
    let demoted = patch(&app, &app.admin, &id, json!({"role": "viewer"})).await;
    assert_eq!(demoted.status(), 200);
    assert_eq!(demoted.json::<Value>().await.unwrap()["role"], "viewer");
    let create = json!({"name": "agent by a demoted key", "model_config": {"provider": "openai", "model": "m"}});
    assert_eq!(app.post("/agents", &key, create.clone()).await.status(), 403, "the operator key now acts as viewer");
    assert_eq!(app.get("/agents", &key).await.status(), 200);
    assert_eq!(patch(&app, &app.admin, &id, json!({"role": "operator"})).await.status(), 200);
    assert_eq!(app.post("/agents", &key, create).await.status(), 201, "promoted back, the key may again");

    let disabled = patch(&app, &app.admin, &id, json!({"disabled": true})).await;
    assert_eq!(disabled.status(), 200);
    let disabled: Value = disabled.json().await.unwrap();
    assert_eq!(disabled["disabled"], true);
    assert!(disabled["disabled_at"].is_string(), "{disabled}");
    assert_eq!(session.get(&app, "/auth/session").send().await.unwrap().status(), 401, "the session ended");
    assert_eq!(app.get("/agents", &key).await.status(), 401, "the key is refused");
    let sign_in =
        app.http.post(app.url("/auth/login")).json(&json!({"email": "ops@example.com", "password": PASSWORD})).send();
    assert_eq!(sign_in.await.unwrap().status(), 401, "a disabled user cannot sign in");

    assert_eq!(patch(&app, &app.admin, &id, json!({"disabled": false})).await.status(), 200);
    assert_eq!(app.get("/agents", &key).await.status(), 200, "enabled again, the key works again");
    assert_eq!(session.get(&app, "/auth/session").send().await.unwrap().status(), 401, "ended sessions stay ended");

    let audit = app
        .test
        .store
        .list_audit(&AuditFilter { action: Some("user.update".into()), ..AuditFilter::default() }, None, 10)
        .await
        .unwrap();
    assert_eq!(audit.items.len(), 4);
    let disabling = audit.items.iter().find(|entry| entry.details["disabled"]["to"] == true).unwrap();
    assert_eq!(disabling.details["sessions_ended"], 1, "{}", disabling.details);
});

both_engines!(the_last_enabled_admin_can_be_neither_demoted_nor_disabled, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    // The test app's admin key belongs to the user "admin user", so far the only admin.
    let own = user_named(&app, "admin user").await;
    for body in [json!({"role": "operator"}), json!({"disabled": true})] {
        let refused = patch(&app, &app.admin, &own, body.clone()).await;
        assert_eq!(refused.status(), 409, "{body}");
        assert_eq!(error_code(refused).await, "conflict");
    }
    let second = user(&app, "second@example.com", Role::Admin).await.to_string();
    let browser = login(&app, "second@example.com").await;
    // With two admins one may step down; then the other is the last again.
    assert_eq!(patch(&app, &app.admin, &own, json!({"role": "approver"})).await.status(), 200);
    let refused = crate::dashboard::no_redirects()
        .patch(app.url(&format!("/users/{second}")))
        .header("cookie", &browser.cookie)
        .header("x-csrf-token", &browser.csrf)
        .header("origin", &browser.origin)
        .json(&json!({"disabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 409, "the remaining admin cannot disable themself");
    let still: Value = app.get("/users?limit=200", &app.key(Role::Admin).await).await.json().await.unwrap();
    let second_now = still["items"].as_array().unwrap().iter().find(|user| user["id"] == second.as_str()).unwrap();
    assert_eq!(second_now["role"], "admin");
    assert_eq!(second_now["disabled"], false, "a refused change leaves nothing behind");
});

both_engines!(the_users_page_is_for_admins_and_changes_users_through_the_api, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    user(&app, "admin@example.com", Role::Admin).await;
    user(&app, "viewer@example.com", Role::Viewer).await;
    let admin = login(&app, "admin@example.com").await;
    let viewer = login(&app, "viewer@example.com").await;

    let refused = viewer.get(&app, "/ui/settings/users").send().await.unwrap();
    assert_eq!(refused.status(), 403);
    let words = refused.text().await.unwrap();
    assert!(words.contains("admin role"), "refused in words: {words}");
    let crafted = viewer.post(&app, "/users", json!({"email": "sneaky@example.com", "role": "admin"})).send();
    assert_eq!(crafted.await.unwrap().status(), 403, "nor by crafting the page's request");

    let page = admin.get(&app, "/ui/settings/users").send().await.unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(page.contains("viewer@example.com") && page.contains("hx-post=\"/users\""), "{page}");
    assert!(page.contains("<span class=\"badge\">you</span>"), "the admin's own row is marked");
    assert!(!page.contains("<option value=\"none\">"), "role none is not offered: {page}");

    // The page's forms send exactly these bodies (cortex.js turns `data-bool` fields into booleans).
    let viewer_id = user_named(&app, "viewer person").await;
    let patch_as = |body: Value, csrf: &str| {
        crate::dashboard::no_redirects()
            .patch(app.url(&format!("/users/{viewer_id}")))
            .header("cookie", &admin.cookie)
            .header("x-csrf-token", csrf)
            .header("origin", &admin.origin)
            .json(&body)
            .send()
    };
    assert_eq!(patch_as(json!({"role": "operator"}), "wrong").await.unwrap().status(), 403, "CSRF applies");
    assert_eq!(patch_as(json!({"role": "operator"}), &admin.csrf).await.unwrap().status(), 200);
    assert_eq!(patch_as(json!({"disabled": true}), &admin.csrf).await.unwrap().status(), 200);
    let page = admin.get(&app, "/ui/settings/users").send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Enable viewer person"), "a disabled user is offered enabling: {page}");
    assert_eq!(viewer.get(&app, "/ui/").send().await.unwrap().status(), 303, "the disabled viewer is signed out");
    assert_eq!(admin.get(&app, "/ui/settings/users?cursor=garbage").send().await.unwrap().status(), 400);
});

/// A Telegram bot channel against the in-process fake Bot API (mappings need a channel row).
async fn telegram_channel(app: &TestApp, telegram: &cortex_testkit::fake_telegram::FakeTelegram) -> uuid::Uuid {
    let config = json!({"bot_token": MERGE_TOKEN, "api_base": telegram.api_base(), "poll_timeout_seconds": 1});
    let channel =
        app.post("/channels", &app.admin, json!({"type": "telegram", "name": "merge", "config": config})).await;
    assert_eq!(channel.status(), 201);
    channel.json::<Value>().await.unwrap()["id"].as_str().unwrap().parse().unwrap()
}

const MERGE_TOKEN: &str = "4545:merge-token";

/// (user id, access) of every grant on `agent`.
async fn grants_of(app: &TestApp, agent: &str) -> Vec<(String, String)> {
    let list: Value = app.get(&format!("/agents/{agent}/users"), &app.admin).await.json().await.unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|grant| (grant["user_id"].as_str().unwrap().to_owned(), grant["access"].as_str().unwrap().to_owned()))
        .collect()
}

/// The user account platform user `777` of `channel` speaks for.
async fn mapped_user(app: &TestApp, channel: uuid::Uuid) -> uuid::Uuid {
    let mut tx = app.test.store.begin().await.unwrap();
    let (user, _) = tx.channel_user(channel, "777", "Alice on Telegram").await.unwrap();
    tx.commit().await.unwrap();
    user
}

both_engines!(merging_a_user_moves_identities_grants_and_sessions_in_one_step, |t: TestStore| async move {
    let telegram = cortex_testkit::fake_telegram::FakeTelegram::start(MERGE_TOKEN).await;
    let app = TestApp::spawn(t).await;
    let channel = telegram_channel(&app, &telegram).await;
    let into = user(&app, "alice@example.com", Role::Operator).await;
    let kept = app.create_agent("Kept").await["id"].as_str().unwrap().to_owned();
    let moved = app.create_agent("Moved").await["id"].as_str().unwrap().to_owned();
    let better = app.create_agent("Better").await["id"].as_str().unwrap().to_owned();
    // The person who wrote to the bot before getting a login: a chat-only account.
    let mut tx = app.test.store.begin().await.unwrap();
    let from = tx.insert_user("Alice on Telegram", None, Role::None).await.unwrap().id;
    tx.link_channel_user(channel, "777", from, "Alice on Telegram").await.unwrap();
    let session = tx.insert_session(moved.parse().unwrap(), Some(from), "telegram").await.unwrap().id;
    tx.commit().await.unwrap();
    // Both have a grant on `kept` (the target's wider one stays), only `from` on `moved`, and on `better`
    // the target's read grant yields to `from`'s write grant.
    for (agent, user_id, access) in [
        (&kept, into, "write"),
        (&kept, from, "read"),
        (&moved, from, "write"),
        (&better, into, "read"),
        (&better, from, "write"),
    ] {
        let body = json!({"user_id": user_id, "access": access});
        let granted = app.post(&format!("/agents/{agent}/users"), &app.admin, body).await;
        assert_eq!(granted.status(), 201, "{agent} {user_id}");
    }
    let kept_before: Value = app.get(&format!("/agents/{kept}/users"), &app.admin).await.json().await.unwrap();

    // Refusals first: they change nothing.
    let path = format!("/users/{into}/merge");
    let operator = app.key(Role::Operator).await;
    assert_eq!(app.post(&path, &operator, json!({"from_user_id": from})).await.status(), 403);
    let same = app.post(&path, &app.admin, json!({"from_user_id": into})).await;
    assert_eq!(same.status(), 409);
    assert!(error_code(same).await == "conflict");
    let nobody = app.post(&path, &app.admin, json!({"from_user_id": uuid::Uuid::nil()})).await;
    assert_eq!(nobody.status(), 404);
    let missing_target = format!("/users/{}/merge", uuid::Uuid::nil());
    assert_eq!(app.post(&missing_target, &app.admin, json!({"from_user_id": from})).await.status(), 404);
    assert_eq!(app.post(&path, &app.admin, json!({"from": from})).await.status(), 400, "unknown field");
    let disabled = user(&app, "gone@example.com", Role::Viewer).await;
    assert_eq!(patch(&app, &app.admin, &disabled.to_string(), json!({"disabled": true})).await.status(), 200);
    let into_disabled = app.post(&format!("/users/{disabled}/merge"), &app.admin, json!({"from_user_id": from})).await;
    assert_eq!(into_disabled.status(), 409);
    assert_eq!(mapped_user(&app, channel).await, from, "a refused merge changes nothing");

    let merged = app.post(&path, &app.admin, json!({"from_user_id": from})).await;
    assert_eq!(merged.status(), 200);
    let merged: Value = merged.json().await.unwrap();
    assert_eq!(merged["channel_mappings"], 1, "{merged}");
    assert_eq!(merged["sessions"], 1, "{merged}");
    assert_eq!(merged["grants"], 2, "moved and better: {merged}");
    assert_eq!(merged["grants_dropped"], 1, "kept: {merged}");
    assert_eq!(merged["merged"]["disabled"], true);
    assert_eq!(merged["user"]["id"], into.to_string());

    // The platform identity now speaks for the target, the session is theirs, and the grants are right.
    assert_eq!(mapped_user(&app, channel).await, into);
    assert_eq!(app.test.store.get_session(session).await.unwrap().user_id, Some(into));
    assert_eq!(grants_of(&app, &kept).await, vec![(into.to_string(), "write".to_owned())], "{kept_before}");
    assert_eq!(grants_of(&app, &moved).await, vec![(into.to_string(), "write".to_owned())]);
    assert_eq!(grants_of(&app, &better).await, vec![(into.to_string(), "write".to_owned())]);
    let audit = app
        .test
        .store
        .list_audit(&AuditFilter { action: Some("user.merge".into()), ..AuditFilter::default() }, None, 10)
        .await
        .unwrap();
    assert_eq!(audit.items.len(), 1);
    assert_eq!(audit.items[0].target_id.as_deref(), Some(into.to_string().as_str()));
    assert_eq!(audit.items[0].details["from_user_id"], from.to_string());
    assert_eq!(audit.items[0].details["sessions"], 1);

    // The merged account is disabled, so merging it again moves nothing and it cannot be a target.
    let again = app.post(&format!("/users/{from}/merge"), &app.admin, json!({"from_user_id": into})).await;
    assert_eq!(again.status(), 409, "a disabled account receives nothing");
});

both_engines!(the_last_enabled_admin_cannot_be_merged_away, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    // The app's own admin key belongs to an admin user: make it the only enabled one, then try to fold
    // it into a viewer.
    let viewer = user(&app, "viewer@example.com", Role::Viewer).await;
    let list: Value = app.get("/users?limit=200", &app.admin).await.json().await.unwrap();
    let admins: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|user| user["role"] == "admin" && user["disabled"] == false)
        .map(|user| user["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(admins.len(), 1, "{list}");
    let refused = app.post(&format!("/users/{viewer}/merge"), &app.admin, json!({"from_user_id": admins[0]})).await;
    assert_eq!(refused.status(), 409);
    assert!(refused.text().await.unwrap().contains("last enabled admin"));
});

both_engines!(the_users_page_offers_a_merge_through_the_api, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    user(&app, "admin@example.com", Role::Admin).await;
    let viewer = user(&app, "viewer@example.com", Role::Viewer).await;
    let other = user(&app, "other@example.com", Role::Viewer).await;
    let admin = login(&app, "admin@example.com").await;
    let page = admin.get(&app, "/ui/settings/users").send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Merge two users") && page.contains("data-path-suffix=\"/merge\""), "{page}");
    // What the page's form sends: `{from_user_id}` to `/users/{into}/merge`, with the CSRF token.
    let merged = admin.post(&app, &format!("/users/{viewer}/merge"), json!({"from_user_id": other})).send();
    assert_eq!(merged.await.unwrap().status(), 200);
    let page = admin.get(&app, "/ui/settings/users").send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Enable viewer person"), "the merged user shows disabled: {page}");
});
