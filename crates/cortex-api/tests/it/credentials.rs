//! Managed credentials and provider presets (issue 15), with the real agent runtime running turns against
//! a fake model server: a key added through the API serves the next turn without a restart, rotating it
//! switches the key calls carry, deleting or revoking it fails the next call with `no_credential`, an
//! agent may name its own credential and spend is accounted per credential. No answer ever carries a
//! secret.

use cortex_core::role::Role;
use cortex_jobs::{EngineConfig, JobEngine};
use cortex_testkit::fake_llm::{FakeLlm, Reply, When};
use cortex_testkit::{TestStore, both_engines};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::app::{TestApp, error_code};

const KEY_ONE: &str = "AIza-first-google-key-0001";
const KEY_TWO: &str = "AIza-second-google-key-0002";
const TEAM_KEY: &str = "sk-team-key-for-research-7777";
const MAIN_KEY: &str = "sk-main-workspace-key-8888";

/// A job engine running the app's own runtime (the one the API validates against).
fn start_runtime_engine(app: &TestApp) -> CancellationToken {
    let engine = JobEngine::new(app.test.store.clone(), EngineConfig::with_name("credentials-test"))
        .with_handler(cortex_core::job::JobKind::Chat, app.runtime.handler());
    let stop = CancellationToken::new();
    let signal = stop.clone();
    tokio::spawn(engine.run(async move { signal.cancelled().await }));
    stop
}

/// Every answer a test read, to prove afterwards that none carried a secret.
#[derive(Default)]
struct Seen(Vec<String>);

impl Seen {
    async fn json(&mut self, response: reqwest::Response) -> (u16, Value) {
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        self.0.push(text.clone());
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    fn assert_clean(&self, secrets: &[&str]) {
        for answer in &self.0 {
            for secret in secrets {
                assert!(!answer.contains(secret), "an answer carried a secret: {answer}");
            }
        }
    }
}

async fn patch(app: &TestApp, path: &str, body: Value) -> reqwest::Response {
    app.http.patch(app.url(path)).bearer_auth(&app.admin).json(&body).send().await.unwrap()
}

async fn delete(app: &TestApp, path: &str) -> reqwest::Response {
    app.http.delete(app.url(path)).bearer_auth(&app.admin).send().await.unwrap()
}

async fn chat(app: &TestApp, seen: &mut Seen, agent: &str, text: &str) -> Value {
    let path = format!("/agents/{agent}/chat?wait=true&timeout_seconds=120");
    let (status, body) = seen.json(app.post(&path, &app.admin, json!({"text": text})).await).await;
    assert_eq!(status, 200, "{body}");
    body
}

both_engines!(credentials_are_managed_without_revealing_values, |t: TestStore| async move {
    let env = [("OPENAI_API_KEY", MAIN_KEY.to_owned())].into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    let unlimited = cortex_api::rate_limit::Limit::OFF;
    let config = cortex_api::ApiConfig { api_rate: unlimited, chat_rate: unlimited, ..Default::default() };
    let app = TestApp::spawn_with_env(t, config, env).await;
    let mut seen = Seen::default();

    let (status, created) = seen
        .json(app.post("/credentials", &app.admin, json!({"name": "google", "kind": "llm", "value": KEY_ONE})).await)
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["value"], json!({"is_set": true, "last4": "0001"}));
    assert_eq!(created["api_style"], "openai");
    assert_eq!(created["base_url"], "https://generativelanguage.googleapis.com/v1beta/openai");
    assert_eq!(created["source"], "api");
    let id = created["id"].as_str().unwrap().to_owned();

    // Bad input is a 400 naming the field; a duplicate is a 409; only admins manage credentials.
    let bad = [
        json!({"name": "groq", "kind": "llm"}),
        json!({"name": "my-llm", "kind": "llm", "value": "k"}),
        json!({"name": "Bad Name", "kind": "search", "value": "k"}),
        json!({"name": "brave", "kind": "search"}),
        json!({"name": "brave", "kind": "search", "value": "k", "api_style": "openai"}),
        json!({"name": "x", "kind": "llm", "value": "k", "base_url": "ftp://x"}),
        json!({"name": "x", "kind": "llm", "value": "k", "provider": "nope"}),
        json!({"name": "ollama", "kind": "llm", "prices": {"llama3": {"input_per_mtok": -1}}}),
        json!({"name": "x", "kind": "vault", "value": "k"}),
    ];
    for body in bad {
        let response = app.post("/credentials", &app.admin, body.clone()).await;
        assert_eq!(response.status(), 400, "{body}");
    }
    let duplicate = app.post("/credentials", &app.admin, json!({"name": "google", "kind": "llm", "value": "k"})).await;
    assert_eq!(duplicate.status(), 409);
    let operator = app.key(Role::Operator).await;
    assert_eq!(app.get("/credentials", &operator).await.status(), 403);
    let local = app.post("/credentials", &app.admin, json!({"name": "ollama", "kind": "llm"})).await;
    assert_eq!(local.status(), 201, "local servers need no key");
    let (status, search) = seen
        .json(app.post("/credentials", &app.admin, json!({"name": "brave", "kind": "search", "value": "short"})).await)
        .await;
    assert_eq!(status, 201);
    assert_eq!(search["value"], json!({"is_set": true, "last4": null}), "short secrets get no hint");

    // The env key is listed read-only and cannot be edited or deleted through the API.
    let (_, list) = seen.json(app.get("/credentials", &app.admin).await).await;
    let items = list["items"].as_array().unwrap();
    let env_row = items.iter().find(|item| item["name"] == "openai").unwrap();
    assert_eq!(env_row["source"], "env");
    assert_eq!(env_row["read_only"], true);
    assert_eq!(env_row["value"]["last4"], "8888");
    let env_path = format!("/credentials/{}", env_row["id"].as_str().unwrap());
    let edit = patch(&app, &env_path, json!({"value": "sk-other-value-000000"})).await;
    assert_eq!(edit.status(), 409);
    let message: Value = edit.json().await.unwrap();
    assert!(message["error"]["message"].as_str().unwrap().contains("environment"), "{message}");
    assert_eq!(error_code(delete(&app, &env_path).await).await, "conflict");

    // Rotation replaces the hint; revoking keeps the row, disabled.
    let path = format!("/credentials/{id}");
    let (status, rotated) = seen.json(patch(&app, &path, json!({"value": KEY_TWO})).await).await;
    assert_eq!(status, 200, "{rotated}");
    assert_eq!(rotated["value"]["last4"], "0002");
    let (_, revoked) = seen.json(patch(&app, &path, json!({"status": "disabled"})).await).await;
    assert_eq!(revoked["status"], "disabled");
    assert_eq!(patch(&app, &path, json!({"status": "error"})).await.status(), 400);
    assert_eq!(patch(&app, &path, json!({"secret": "x"})).await.status(), 400, "unknown fields are refused");
    let (_, one) = seen.json(app.get(&path, &app.admin).await).await;
    assert_eq!(one["name"], "google");

    assert_eq!(delete(&app, &path).await.status(), 204);
    assert_eq!(app.get(&path, &app.admin).await.status(), 404);
    assert_eq!(delete(&app, &path).await.status(), 404);

    // The audit log names the changes, never the values.
    let filter = cortex_store::audit::AuditFilter { target_id: Some(id.clone()), ..Default::default() };
    let audit = app.test.store.list_audit(&filter, None, 50).await.unwrap().items;
    let actions: Vec<&str> = audit.iter().rev().map(|entry| entry.action.as_str()).collect();
    assert_eq!(actions, ["credential.create", "credential.update", "credential.update", "credential.delete"]);
    seen.0.extend(audit.iter().map(|entry| format!("{:?}", entry.details)));
    seen.assert_clean(&[KEY_ONE, KEY_TWO, MAIN_KEY]);
});

both_engines!(an_api_key_serves_the_next_turn_rotates_and_fails_clearly_once_deleted, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    let llm = FakeLlm::start().await;
    llm.rule(When::Always, Reply::text("hello from gemini").usage(1000, 100));
    let _engine = start_runtime_engine(&app).drop_guard();
    let mut seen = Seen::default();

    // `google` is a preset, so an agent may name it before any key exists; its turn fails clearly.
    let (status, agent) = seen
        .json(
            app.post(
                "/agents",
                &app.admin,
                json!({"name": "Gem", "model_config": {"provider": "google", "model": "gemini-2.5-flash"}}),
            )
            .await,
        )
        .await;
    assert_eq!(status, 201, "{agent}");
    let unknown =
        app.post("/agents", &app.admin, json!({"name": "X", "model_config": {"provider": "acme", "model": "m"}})).await;
    assert_eq!(error_code(unknown).await, "provider_unavailable");
    let before = chat(&app, &mut seen, "gem", "hi").await;
    assert_eq!(before["status"], "failed");
    assert_eq!(before["error"]["code"], "no_credential", "{before}");

    // A key added through the API serves the next turn: the OpenAI-compatible wire at the given base.
    let base = format!("{}/v1beta/openai", llm.url());
    let (_, created) = seen
        .json(
            app.post(
                "/credentials",
                &app.admin,
                json!({"name": "google", "kind": "llm", "value": KEY_ONE, "base_url": base}),
            )
            .await,
        )
        .await;
    let path = format!("/credentials/{}", created["id"].as_str().unwrap());
    let first = chat(&app, &mut seen, "gem", "hi").await;
    assert_eq!(first["status"], "completed", "{first}");
    assert_eq!(first["response"], "hello from gemini");
    let requests = llm.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, "/v1beta/openai/chat/completions");
    assert_eq!(requests[0].header("authorization"), Some(format!("Bearer {KEY_ONE}").as_str()));
    assert_eq!(requests[0].model(), "gemini-2.5-flash");

    // Rotating switches the key of the very next call.
    seen.json(patch(&app, &path, json!({"value": KEY_TWO})).await).await;
    let second = chat(&app, &mut seen, "gem", "again").await;
    assert_eq!(second["status"], "completed", "{second}");
    assert_eq!(llm.requests()[1].header("authorization"), Some(format!("Bearer {KEY_TWO}").as_str()));

    // Spend is accounted to the credential (catalogue price of gemini-2.5-flash: $0.30 in, $2.50 out).
    let (_, used) = seen.json(app.get(&path, &app.admin).await).await;
    assert_eq!(used["usage"]["calls"], 2);
    assert_eq!(used["usage"]["tokens_in"], 2000);
    let cost = used["usage"]["cost_usd"].as_f64().unwrap();
    assert!((cost - 2.0 * (1000.0 * 0.30 + 100.0 * 2.50) / 1e6).abs() < 1e-9, "{cost}");
    assert_eq!(used["used_by"], json!(["gem"]));
    assert!(used["last_used_at"].is_string());

    // Deleting it fails the next call with a clear, permanent error (not a 5xx, not a hang).
    assert_eq!(delete(&app, &path).await.status(), 204);
    let after = chat(&app, &mut seen, "gem", "still there?").await;
    assert_eq!(after["status"], "failed");
    assert_eq!(after["error"]["code"], "no_credential", "{after}");
    assert!(after["error"]["message"].as_str().unwrap().contains("google"), "{after}");
    assert_eq!(llm.requests().len(), 2, "no call went out without a credential");

    for job in [&first, &second, &after] {
        let (_, body) =
            seen.json(app.get(&format!("/jobs/{}", job["job_id"].as_str().unwrap()), &app.admin).await).await;
        assert!(body["id"].is_string());
    }
    let agent_id = agent["id"].as_str().unwrap().parse().unwrap();
    let events =
        app.test.store.events_after(cortex_store::events::EventScope::Agent(agent_id), 0, 10_000).await.unwrap();
    assert!(events.len() > 5, "the turns left events");
    seen.0.extend(events.iter().map(|event| event.payload.to_string()));
    seen.assert_clean(&[KEY_ONE, KEY_TWO]);
});

both_engines!(an_agent_calls_through_its_own_credential_and_spend_is_kept_apart, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    let llm = FakeLlm::start().await;
    llm.rule(When::Always, Reply::text("ok").usage(10, 5));
    let _engine = start_runtime_engine(&app).drop_guard();
    let mut seen = Seen::default();
    let base = llm.openai_base_url();
    for (name, key, provider) in [("openai", MAIN_KEY, None), ("openai-team", TEAM_KEY, Some("openai"))] {
        let mut body = json!({"name": name, "kind": "llm", "value": key, "base_url": base});
        if let Some(provider) = provider {
            body["provider"] = json!(provider);
        }
        let (status, created) = seen.json(app.post("/credentials", &app.admin, body).await).await;
        assert_eq!(status, 201, "{created}");
    }
    let create = |name: &str, credential: Option<&str>| {
        let mut config = json!({"provider": "openai", "model": "gpt-4o-mini"});
        if let Some(credential) = credential {
            config["credential"] = json!(credential);
        }
        app.post("/agents", &app.admin, json!({"name": name, "model_config": config}))
    };
    assert_eq!(create("Team", Some("openai-team")).await.status(), 201);
    assert_eq!(create("Main", None).await.status(), 201);
    assert_eq!(error_code(create("Ghost", Some("missing")).await).await, "provider_unavailable");
    let mismatch = app
        .post(
            "/agents",
            &app.admin,
            json!({"name": "Odd", "model_config": {"provider": "anthropic", "model": "claude-haiku-4-5", "credential": "openai-team"}}),
        )
        .await;
    assert_eq!(error_code(mismatch).await, "provider_unavailable");

    assert_eq!(chat(&app, &mut seen, "team", "a").await["status"], "completed");
    assert_eq!(chat(&app, &mut seen, "main", "b").await["status"], "completed");
    assert_eq!(chat(&app, &mut seen, "team", "c").await["status"], "completed");
    let keys: Vec<String> =
        llm.requests().iter().map(|request| request.header("authorization").unwrap_or_default().to_owned()).collect();
    assert_eq!(keys, [format!("Bearer {TEAM_KEY}"), format!("Bearer {MAIN_KEY}"), format!("Bearer {TEAM_KEY}")]);

    let (_, list) = seen.json(app.get("/credentials", &app.admin).await).await;
    let row = |name: &str| list["items"].as_array().unwrap().iter().find(|item| item["name"] == name).unwrap().clone();
    assert_eq!(row("openai-team")["usage"]["calls"], 2);
    assert_eq!(row("openai-team")["provider"], "openai");
    assert_eq!(row("openai-team")["used_by"], json!(["team"]));
    assert_eq!(row("openai")["usage"]["calls"], 1);
    assert_eq!(row("openai")["used_by"], json!(["main"]));

    // Revoking the team key fails the team agent's next call clearly; the other agent is unaffected.
    let team_path = format!("/credentials/{}", row("openai-team")["id"].as_str().unwrap());
    seen.json(patch(&app, &team_path, json!({"status": "disabled"})).await).await;
    let refused = chat(&app, &mut seen, "team", "d").await;
    assert_eq!(refused["status"], "failed");
    assert_eq!(refused["error"]["code"], "no_credential", "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap().contains("openai-team"), "{refused}");
    assert_eq!(chat(&app, &mut seen, "main", "e").await["status"], "completed");
    seen.assert_clean(&[MAIN_KEY, TEAM_KEY]);
});

both_engines!(providers_list_presets_credentials_and_reported_models, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    let llm = FakeLlm::start().await;
    llm.set_models(&["gemini-2.5-flash", "gemini-2.5-pro"]);
    let viewer = app.key(Role::Viewer).await;
    let mut seen = Seen::default();

    let (status, list) = seen.json(app.get("/providers", &viewer).await).await;
    assert_eq!(status, 200, "{list}");
    let names: Vec<&str> = list["items"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["openai", "anthropic", "google", "openrouter", "groq", "mistral", "deepseek", "ollama", "vllm", "lmstudio"]
    );
    let google = &list["items"][2];
    assert_eq!(google["has_credential"], false);
    assert_eq!(google["auth"], "bearer");
    assert_eq!(list["items"][1]["auth"], "x-api-key");
    let flash = google["catalogue"].as_array().unwrap().iter().find(|m| m["id"] == "gemini-2.5-flash").unwrap();
    assert_eq!(flash["input_per_mtok"], 0.30);
    assert_eq!(google["reported_models"], Value::Null);

    let base = format!("{}/v1beta/openai", llm.url());
    let body = json!({"name": "google", "kind": "llm", "value": KEY_ONE, "base_url": base});
    assert_eq!(app.post("/credentials", &app.admin, body).await.status(), 201);
    let custom = json!({"name": "lab", "kind": "llm", "base_url": llm.openai_base_url()});
    assert_eq!(app.post("/credentials", &app.admin, custom).await.status(), 201);

    let (_, list) = seen.json(app.get("/providers", &viewer).await).await;
    let google = &list["items"][2];
    assert_eq!(google["has_credential"], true);
    assert_eq!(google["base_url"], base);
    assert_eq!(google["reported_models"], json!(["gemini-2.5-flash", "gemini-2.5-pro"]));
    let lab = list["items"].as_array().unwrap().iter().find(|p| p["name"] == "lab").unwrap();
    assert_eq!(lab["preset"], false);
    let listings = llm.model_listings();
    assert_eq!(listings.len(), 2, "one listing per credential: {listings:?}");
    assert!(listings.contains(&("/v1beta/openai/models".to_owned(), format!("Bearer {KEY_ONE}"))), "{listings:?}");

    // Cached: a second listing asks nobody; `refresh=true` asks again.
    seen.json(app.get("/providers", &viewer).await).await;
    assert_eq!(llm.model_listings().len(), 2);
    seen.json(app.get("/providers?refresh=true", &viewer).await).await;
    assert_eq!(llm.model_listings().len(), 4);
    assert_eq!(app.get("/providers?refresh=maybe", &viewer).await.status(), 400);
    seen.assert_clean(&[KEY_ONE]);
});

both_engines!(a_provider_that_echoes_the_key_in_its_error_leaks_it_nowhere, |t: TestStore| async move {
    const LEAKED: &str = "sk-echoed-by-provider-5555";
    let app = TestApp::spawn(t).await;
    let llm = FakeLlm::start().await;
    let body = json!({"error": {"message": format!("Incorrect API key provided: {LEAKED}."), "type": "invalid_request_error",
                               "code": "invalid_api_key"}});
    llm.rule(When::Always, Reply::error(401).error_body(body));
    let _engine = start_runtime_engine(&app).drop_guard();
    let mut seen = Seen::default();
    let key = json!({"name": "openai", "kind": "llm", "value": LEAKED, "base_url": llm.openai_base_url()});
    assert_eq!(seen.json(app.post("/credentials", &app.admin, key).await).await.0, 201);
    let agent = app.create_agent("Echoed").await;

    let failed = chat(&app, &mut seen, "echoed", "hi").await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let message = failed["error"]["message"].as_str().unwrap_or_default().to_owned();
    assert!(message.contains("Incorrect API key provided: [redacted]"), "{failed}");
    let job = format!("/jobs/{}", failed["job_id"].as_str().unwrap());
    seen.json(app.get(&job, &app.admin).await).await;
    let (_, list) = seen.json(app.get("/credentials", &app.admin).await).await;
    let row = list["items"].as_array().unwrap().iter().find(|item| item["name"] == "openai").unwrap().clone();
    assert_eq!(row["status"], "error", "{row}");
    assert!(row["last_error"].as_str().unwrap().contains("[redacted]"), "{row}");
    let agent_id = agent["id"].as_str().unwrap().parse().unwrap();
    let events =
        app.test.store.events_after(cortex_store::events::EventScope::Agent(agent_id), 0, 10_000).await.unwrap();
    assert!(events.iter().any(|event| event.payload["code"] == "provider_auth_failed"), "the operator notice");
    seen.0.extend(events.iter().map(|event| event.payload.to_string()));
    seen.assert_clean(&[LEAKED]);
});
