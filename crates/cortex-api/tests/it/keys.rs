//! API key management by non-admins (SPEC Appendix B "API keys"): each attack found against the release
//! binary, replayed against the API.

use cortex_api::ApiConfig;
use cortex_api::rate_limit::Limit;
use cortex_testkit::{TestStore, both_engines};
use serde_json::{Value, json};

use crate::app::{TestApp, error_code};

/// Keys a non-admin may have handed out at once (SPEC Appendix B: "capped in number").
const MAX_HANDED_OUT: usize = 10;

/// Creates a key through the API with `creator`; returns `(id, secret)`.
async fn create(app: &TestApp, creator: &str, body: Value) -> (String, String) {
    let response = app.post("/api-keys", creator, body).await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap_or_default());
    let created: Value = response.json().await.unwrap();
    (created["id"].as_str().unwrap().to_owned(), created["secret"].as_str().unwrap().to_owned())
}

async fn revoke(app: &TestApp, key: &str, id: &str) -> reqwest::Response {
    app.http.delete(app.url(&format!("/api-keys/{id}"))).bearer_auth(key).send().await.unwrap()
}

async fn listed_ids(app: &TestApp, key: &str) -> Vec<String> {
    let list: Value = app.get("/api-keys?limit=200", key).await.json().await.unwrap();
    list["items"].as_array().unwrap().iter().map(|item| item["id"].as_str().unwrap().to_owned()).collect()
}

/// The id of the admin key the test app started with.
async fn admin_key_id(app: &TestApp) -> String {
    let list: Value = app.get("/api-keys?limit=200", &app.admin).await.json().await.unwrap();
    let admin = list["items"].as_array().unwrap().iter().find(|key| key["role"] == "admin").unwrap();
    admin["id"].as_str().unwrap().to_owned()
}

both_engines!(a_viewer_key_cannot_revoke_the_admin_key_that_made_it, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    let admin_id = admin_key_id(&app).await;
    // Made by the admin, so it belongs to the admin's user: before, that was enough to manage every key
    // of that user, the admin's own included.
    let (viewer_id, viewer) = create(&app, &app.admin, json!({"name": "reader", "role": "viewer"})).await;
    let (sibling_id, _) = create(&app, &app.admin, json!({"name": "other", "role": "operator"})).await;

    let attack = revoke(&app, &viewer, &admin_id).await;
    assert_eq!(attack.status(), 403);
    assert_eq!(error_code(attack).await, "forbidden");
    assert_eq!(revoke(&app, &viewer, &sibling_id).await.status(), 403);
    assert_eq!(app.get("/agents", &app.admin).await.status(), 200, "the admin key still works");

    assert_eq!(listed_ids(&app, &viewer).await, std::slice::from_ref(&viewer_id), "a viewer sees only itself");
    assert_eq!(revoke(&app, &viewer, &viewer_id).await.status(), 204, "a key may revoke itself");
    assert_eq!(app.get("/agents", &viewer).await.status(), 401);
});

both_engines!(non_admins_hand_out_a_capped_number_of_keys_up_to_their_role, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    let (_, operator) = create(&app, &app.admin, json!({"name": "ops", "role": "operator"})).await;

    for role in ["approver", "admin"] {
        let escalate = app.post("/api-keys", &operator, json!({"name": "up", "role": role})).await;
        assert_eq!(escalate.status(), 403, "an operator minting {role}");
    }
    let mut handed_out = Vec::new();
    for n in 0..MAX_HANDED_OUT {
        handed_out.push(create(&app, &operator, json!({"name": format!("child {n}"), "role": "operator"})).await);
    }
    let over = app.post("/api-keys", &operator, json!({"name": "one too many", "role": "viewer"})).await;
    assert_eq!(over.status(), 403);
    assert_eq!(error_code(over).await, "forbidden");
    // Keys made by the children count against the same budget: no way around the cap by delegating.
    let (_, child) = &handed_out[0];
    assert_eq!(app.post("/api-keys", child, json!({"name": "grandchild", "role": "viewer"})).await.status(), 403);

    let mut listed = listed_ids(&app, &operator).await;
    listed.sort();
    assert_eq!(listed.len(), handed_out.len() + 1, "itself and what it created");
    // Revoking one frees a slot.
    assert_eq!(revoke(&app, &operator, &handed_out[1].0).await.status(), 204);
    create(&app, &operator, json!({"name": "replacement", "role": "viewer"})).await;
    // The admin is not capped.
    for n in 0..=MAX_HANDED_OUT {
        create(&app, &app.admin, json!({"name": format!("admin made {n}"), "role": "viewer"})).await;
    }
});

both_engines!(revoking_a_key_revokes_what_it_created_transitively, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    let (operator_id, operator) = create(&app, &app.admin, json!({"name": "ops", "role": "operator"})).await;
    let (_, child) = create(&app, &operator, json!({"name": "child", "role": "viewer"})).await;
    let (_, grandchild) = create(&app, &child, json!({"name": "grandchild", "role": "viewer"})).await;
    let (_, unrelated) = create(&app, &app.admin, json!({"name": "unrelated", "role": "viewer"})).await;
    for key in [&operator, &child, &grandchild] {
        assert_eq!(app.get("/agents", key).await.status(), 200);
    }
    assert_eq!(revoke(&app, &app.admin, &operator_id).await.status(), 204);
    for key in [&operator, &child, &grandchild] {
        assert_eq!(app.get("/agents", key).await.status(), 401, "a key made under the revoked one still works");
    }
    assert_eq!(app.get("/agents", &unrelated).await.status(), 200);
});

both_engines!(keys_a_non_admin_creates_share_its_rate_budget, |t: TestStore| async move {
    let config = ApiConfig { api_rate: Limit::OFF, chat_rate: Limit::OFF, ..ApiConfig::default() };
    let app = TestApp::spawn_with(t, config).await;
    // One request per minute (a burst of 1): nothing in this test waits long enough for a refill.
    let slow = json!({"name": "slow", "role": "operator", "rate_limit_per_minute": 1});
    let (_, probe) = create(&app, &app.admin, slow.clone()).await;
    let faster =
        app.post("/api-keys", &probe, json!({"name": "fast", "role": "viewer", "rate_limit_per_minute": 2})).await;
    assert_eq!(faster.status(), 400, "a child may not be faster than its creator");
    assert_eq!(error_code(faster).await, "validation_failed");

    let (_, operator) = create(&app, &app.admin, slow).await;
    // Creating the child spends the operator's only token; before, the child had a fresh budget of its own.
    let (_, child) = create(&app, &operator, json!({"name": "child", "role": "viewer"})).await;
    let child_request = app.get("/agents", &child).await;
    assert_eq!(child_request.status(), 429, "the child draws on its creator's empty budget");
    assert_eq!(error_code(child_request).await, "rate_limited");
    assert_eq!(app.get("/agents", &operator).await.status(), 429);
    assert_eq!(app.get("/agents", &app.admin).await.status(), 200, "other keys are not affected");
});
