//! The settings screens for providers and credentials (issue 15): what they list, who gets which
//! actions, and that their actions are the JSON API behind the same guards and CSRF check.

use cortex_core::role::Role;
use cortex_testkit::fake_llm::FakeLlm;
use cortex_testkit::{TestStore, both_engines};
use serde_json::{Value, json};

use crate::app::TestApp;
use crate::dashboard::{Browser, login, user};

const ENV_KEY: &str = "sk-env-openai-key-4321";
const TEAM_KEY: &str = "sk-team-key-abcd-9876";

async fn page(who: &Browser, app: &TestApp, path: &str) -> (u16, String) {
    let response = who.get(app, path).send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

both_engines!(settings_pages_list_credentials_and_providers_and_guard_their_actions, |t: TestStore| async move {
    let llm = FakeLlm::start().await;
    llm.set_models(&["gpt-4o-mini", "my-local-model"]);
    let env = [("OPENAI_API_KEY", ENV_KEY.to_owned()), ("OPENAI_BASE_URL", llm.openai_base_url())]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    let app = TestApp::spawn_with_env(t, Default::default(), env).await;
    user(&app, "admin@example.com", Role::Admin).await;
    user(&app, "viewer@example.com", Role::Viewer).await;
    let admin = login(&app, "admin@example.com").await;
    let viewer = login(&app, "viewer@example.com").await;
    let body = json!({"name": "openai-team", "kind": "llm", "value": TEAM_KEY, "provider": "openai", "base_url": llm.openai_base_url()});
    let created: Value = app.post("/credentials", &app.admin, body).await.json().await.unwrap();
    let team_id = created["id"].as_str().unwrap().to_owned();
    let agent = app
        .post("/agents", &app.admin, json!({"name": "Team", "model_config": {"provider": "openai", "model": "gpt-4o-mini", "credential": "openai-team"}}))
        .await;
    assert_eq!(agent.status(), 201);

    // Admins see every credential with kind, source, last four, last use and users, and the actions.
    let (status, html) = page(&admin, &app, "/ui/settings/credentials").await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("<code>openai-team</code>") && html.contains("…9876") && html.contains("team"), "{html}");
    assert!(html.contains("<code>openai</code>") && html.contains("…4321") && html.contains("read-only"), "{html}");
    assert!(html.contains(&format!("hx-patch=\"/credentials/{team_id}\"")), "rotate and disable offered");
    assert!(html.contains(&format!("hx-delete=\"/credentials/{team_id}\"")), "delete offered");
    assert!(html.contains("hx-post=\"/credentials\""), "the add form");
    let env_id = app.test.store.credential("llm", "openai").await.unwrap().unwrap().id;
    assert!(!html.contains(&format!("/credentials/{env_id}\"")), "no action on the env row: {html}");
    assert!(html.contains("Settings</a>"), "the navigation links the settings");
    for secret in [ENV_KEY, TEAM_KEY] {
        assert!(!html.contains(secret), "the page never shows a value");
    }

    // Providers: presets with and without credentials, catalogue and reported models.
    let (status, providers) = page(&viewer, &app, "/ui/settings/providers").await;
    assert_eq!(status, 200, "{providers}");
    assert!(providers.contains("id=\"provider-google\"") && providers.contains("no credential"), "{providers}");
    assert!(
        providers.contains("openai-team (active, api)") && providers.contains("openai (active, env)"),
        "{providers}"
    );
    assert!(providers.contains("my-local-model"), "reported models are listed: {providers}");
    assert!(providers.contains("gpt-4o-mini"), "{providers}");
    assert!(!providers.contains("/ui/settings/credentials\""), "viewers get no credentials link: {providers}");
    let (_, as_admin) = page(&admin, &app, "/ui/settings/providers").await;
    assert!(as_admin.contains("hx-post=\"/providers/openrouter/sign-in\""), "admins get the sign-in button");
    assert!(as_admin.contains("/auth/provider-callback"), "{as_admin}");
    assert!(!providers.contains("/sign-in\""), "viewers get no sign-in button");

    // A viewer cannot open the credentials page nor post what its form posts.
    let (status, _) = page(&viewer, &app, "/ui/settings/credentials").await;
    assert_eq!(status, 403);
    let new = json!({"name": "brave", "kind": "search", "value": "viewer-made-key"});
    assert_eq!(viewer.post(&app, "/credentials", new.clone()).send().await.unwrap().status(), 403);

    // The admin's form post works with the session's CSRF token and own origin, and not without them.
    let no_token = admin.post_as(&app, "/credentials", new.clone(), &admin.origin, "wrong-token").send().await.unwrap();
    assert_eq!(no_token.status(), 403);
    let cross =
        admin.post_as(&app, "/credentials", new.clone(), "https://evil.example", &admin.csrf).send().await.unwrap();
    assert_eq!(cross.status(), 403);
    assert!(app.test.store.credential("search", "brave").await.unwrap().is_none(), "refused posts stored nothing");
    let made = admin.post(&app, "/credentials", new).send().await.unwrap();
    assert_eq!(made.status(), 201);
    let (_, html) = page(&admin, &app, "/ui/settings/credentials").await;
    assert!(html.contains("<code>brave</code>") && html.contains("search"), "{html}");
});
