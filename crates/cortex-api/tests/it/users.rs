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
