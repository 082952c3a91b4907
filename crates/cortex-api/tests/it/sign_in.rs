//! Provider sign-in against an in-process fake authorization server speaking OpenRouter's PKCE key
//! exchange and standard OAuth 2.0 (RFC 6749 + RFC 7636): the browser variant through
//! `/auth/provider-callback`, the code-paste variant through `/providers/sign-in/complete`, the stored key
//! serving the next turn, and an expiring token refreshed before the call that needs it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use base64::Engine;
use cortex_jobs::{EngineConfig, JobEngine};
use cortex_testkit::fake_llm::{FakeLlm, Reply, When};
use cortex_testkit::{TestStore, both_engines};
use serde_json::{Value, json};
use sha2::Digest;
use tokio_util::sync::CancellationToken;

use crate::app::{TestApp, error_code};

const OPENROUTER_KEY: &str = "sk-or-v1-signed-in-key-4d2f9b";
const FIRST_ACCESS: &str = "acme-access-token-one-1111";
const SECOND_ACCESS: &str = "acme-access-token-two-2222";
const REFRESH: &str = "acme-refresh-token-3333";

/// What the fake authorization server saw and issued.
#[derive(Default)]
struct Authority {
    /// code → (S256 challenge, redirect URI)
    codes: HashMap<String, (String, String)>,
    grants: Vec<String>,
}

type Shared = Arc<Mutex<Authority>>;

fn s256(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()))
}

/// OpenRouter: `GET /auth?callback_url&code_challenge&code_challenge_method` redirects back with a code.
async fn openrouter_auth(State(shared): State<Shared>, Query(q): Query<HashMap<String, String>>) -> impl IntoResponse {
    assert_eq!(q.get("code_challenge_method").map(String::as_str), Some("S256"));
    let callback = q["callback_url"].clone();
    shared.lock().unwrap().codes.insert("or-code-1".into(), (q["code_challenge"].clone(), callback.clone()));
    let mut location = url::Url::parse(&callback).unwrap();
    location.query_pairs_mut().append_pair("code", "or-code-1");
    (StatusCode::FOUND, [(header::LOCATION, location.to_string())])
}

/// OpenRouter: `POST /api/v1/auth/keys {code, code_verifier, code_challenge_method}` → `{key}`.
async fn openrouter_keys(
    State(shared): State<Shared>,
    axum::Json(body): axum::Json<Value>,
) -> axum::response::Response {
    let mut authority = shared.lock().unwrap();
    authority.grants.push("openrouter".into());
    let code = body["code"].as_str().unwrap_or_default();
    match authority.codes.remove(code) {
        Some((challenge, _)) if s256(body["code_verifier"].as_str().unwrap_or_default()) == challenge => {
            axum::Json(json!({"key": OPENROUTER_KEY, "user_id": "user_1"})).into_response()
        }
        _ => (StatusCode::FORBIDDEN, axum::Json(json!({"error": {"message": "invalid code"}}))).into_response(),
    }
}

/// OAuth 2.0 authorization endpoint.
async fn authorize(State(shared): State<Shared>, Query(q): Query<HashMap<String, String>>) -> impl IntoResponse {
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], "cortex-test");
    assert_eq!(q["code_challenge_method"], "S256");
    shared.lock().unwrap().codes.insert("acme-code-1".into(), (q["code_challenge"].clone(), q["redirect_uri"].clone()));
    let mut location = url::Url::parse(&q["redirect_uri"]).unwrap();
    location.query_pairs_mut().append_pair("code", "acme-code-1").append_pair("state", &q["state"]);
    (StatusCode::FOUND, [(header::LOCATION, location.to_string())])
}

/// OAuth 2.0 token endpoint (form-encoded): the code grant with PKCE, and refresh.
async fn token(State(shared): State<Shared>, body: String) -> axum::response::Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes()).into_owned().collect();
    let mut authority = shared.lock().unwrap();
    authority.grants.push(form["grant_type"].clone());
    let refused = || (StatusCode::BAD_REQUEST, axum::Json(json!({"error": "invalid_grant"}))).into_response();
    match form["grant_type"].as_str() {
        "authorization_code" => match authority.codes.remove(&form["code"]) {
            Some((challenge, redirect))
                if s256(&form["code_verifier"]) == challenge && redirect == form["redirect_uri"] =>
            {
                axum::Json(json!({"access_token": FIRST_ACCESS, "token_type": "Bearer", "expires_in": 60,
                                  "refresh_token": REFRESH}))
                .into_response()
            }
            _ => refused(),
        },
        "refresh_token" if form["refresh_token"] == REFRESH => {
            axum::Json(json!({"access_token": SECOND_ACCESS, "token_type": "Bearer", "expires_in": 3600}))
                .into_response()
        }
        _ => refused(),
    }
}

async fn authority() -> (String, Shared) {
    let shared = Shared::default();
    let app = axum::Router::new()
        .route("/auth", axum::routing::get(openrouter_auth))
        .route("/api/v1/auth/keys", axum::routing::post(openrouter_keys))
        .route("/authorize", axum::routing::get(authorize))
        .route("/token", axum::routing::post(token))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, shared)
}

/// The `Location` a GET is redirected to, as a browser would see it.
async fn redirected(url: &str) -> String {
    let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let response = browser.get(url).send().await.unwrap();
    assert_eq!(response.status(), 302, "{url}");
    response.headers()[header::LOCATION].to_str().unwrap().to_owned()
}

fn start_engine(app: &TestApp) -> CancellationToken {
    let engine = JobEngine::new(app.test.store.clone(), EngineConfig::with_name("sign-in-test"))
        .with_handler(cortex_core::job::JobKind::Chat, app.runtime.handler());
    let stop = CancellationToken::new();
    let signal = stop.clone();
    tokio::spawn(engine.run(async move { signal.cancelled().await }));
    stop
}

both_engines!(pkce_sign_in_stores_a_key_and_refreshes_expiring_tokens, |t: TestStore| async move {
    let (auth_url, authority) = authority().await;
    let env = [
        ("CORTEX_PROVIDER_SIGNIN_OPENROUTER_URL", auth_url.clone()),
        ("CORTEX_PROVIDER_SIGNIN_ACME_AUTHORIZE_URL", format!("{auth_url}/authorize")),
        ("CORTEX_PROVIDER_SIGNIN_ACME_TOKEN_URL", format!("{auth_url}/token")),
        ("CORTEX_PROVIDER_SIGNIN_ACME_CLIENT_ID", "cortex-test".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let unlimited = cortex_api::rate_limit::Limit::OFF;
    let config = cortex_api::ApiConfig { api_rate: unlimited, chat_rate: unlimited, ..Default::default() };
    let app = TestApp::spawn_with_env(t, config, env).await;
    let llm = FakeLlm::start().await;
    llm.rule(When::Always, Reply::text("routed"));
    let _engine = start_engine(&app).drop_guard();
    let mut answers: Vec<String> = Vec::new();

    let providers: Value = app.get("/providers", &app.admin).await.json().await.unwrap();
    let openrouter = providers["items"].as_array().unwrap().iter().find(|p| p["name"] == "openrouter").unwrap();
    assert_eq!(openrouter["sign_in"], true);
    assert_eq!(providers["items"][0]["sign_in"], false, "OpenAI documents no third-party sign-in");
    let refused =
        app.post("/providers/openai/sign-in", &app.admin, json!({"callback_url": "http://localhost:3000"})).await;
    assert_eq!(error_code(refused).await, "unprocessable");

    // Browser variant: open the URL, the provider redirects to our public callback.
    let started = app
        .post(
            "/providers/openrouter/sign-in",
            &app.admin,
            json!({"callback_url": app.url("/auth/provider-callback"), "base_url": llm.openai_base_url()}),
        )
        .await;
    assert_eq!(started.status(), 201);
    let started: Value = started.json().await.unwrap();
    let authorize_url = started["authorize_url"].as_str().unwrap();
    assert!(authorize_url.starts_with(&format!("{auth_url}/auth?")), "{authorize_url}");
    let callback = redirected(authorize_url).await;
    let done = reqwest::get(&callback).await.unwrap();
    assert_eq!(done.status(), 200, "the callback needs no API key");
    let done: Value = done.json().await.unwrap();
    assert_eq!(done["status"], "signed_in");
    let again = reqwest::get(&callback).await.unwrap();
    assert_eq!(again.status(), 404, "a state is single use");

    let credential: Value = app
        .get(&format!("/credentials/{}", done["credential_id"].as_str().unwrap()), &app.admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(credential["name"], "openrouter");
    assert_eq!(credential["sign_in"], "openrouter");
    assert_eq!(credential["value"]["is_set"], true);
    answers.push(credential.to_string());

    let agent = json!({"name": "Router", "model_config": {"provider": "openrouter", "model": "openai/gpt-4o-mini"}});
    assert_eq!(app.post("/agents", &app.admin, agent).await.status(), 201);
    let reply: Value =
        app.post("/agents/router/chat?wait=true", &app.admin, json!({"text": "hi"})).await.json().await.unwrap();
    assert_eq!(reply["status"], "completed", "{reply}");
    assert_eq!(llm.requests()[0].header("authorization"), Some(format!("Bearer {OPENROUTER_KEY}").as_str()));

    // Code-paste variant with a standard OAuth 2.0 provider: the token expires within five minutes, so
    // the next run refreshes it first and calls with the new one.
    let started: Value = app
        .post(
            "/providers/acme/sign-in",
            &app.admin,
            json!({"callback_url": "http://localhost:3000/cb", "base_url": llm.openai_base_url()}),
        )
        .await
        .json()
        .await
        .unwrap();
    let location = url::Url::parse(&redirected(started["authorize_url"].as_str().unwrap()).await).unwrap();
    assert_eq!(location.host_str(), Some("localhost"), "the headless user copies the code from here");
    let code = location.query_pairs().find(|(k, _)| k == "code").unwrap().1.into_owned();
    let wrong =
        app.post("/providers/sign-in/complete", &app.admin, json!({"state": "not-a-state", "code": code})).await;
    assert_eq!(wrong.status(), 404);
    let pasted =
        app.post("/providers/sign-in/complete", &app.admin, json!({"state": started["state"], "code": code})).await;
    assert_eq!(pasted.status(), 201);
    let pasted: Value = pasted.json().await.unwrap();
    let path = format!("/credentials/{}", pasted["credential_id"].as_str().unwrap());
    let before: Value = app.get(&path, &app.admin).await.json().await.unwrap();
    assert_eq!(before["sign_in"], "acme");
    assert!(before["expires_at"].is_string());
    answers.push(before.to_string());

    let agent = json!({"name": "Acme", "model_config": {"provider": "acme", "model": "acme-large"}});
    assert_eq!(app.post("/agents", &app.admin, agent).await.status(), 201);
    let reply: Value =
        app.post("/agents/acme/chat?wait=true", &app.admin, json!({"text": "hi"})).await.json().await.unwrap();
    assert_eq!(reply["status"], "completed", "{reply}");
    assert_eq!(llm.requests()[1].header("authorization"), Some(format!("Bearer {SECOND_ACCESS}").as_str()));
    assert_eq!(authority.lock().unwrap().grants, ["openrouter", "authorization_code", "refresh_token"]);
    let after: Value = app.get(&path, &app.admin).await.json().await.unwrap();
    assert!(after["expires_at"].as_str().unwrap() > before["expires_at"].as_str().unwrap(), "{after}");
    answers.push(after.to_string());
    answers.push(app.get("/credentials", &app.admin).await.text().await.unwrap());

    // Revoking is deleting: the next call fails clearly.
    assert_eq!(app.http.delete(app.url(&path)).bearer_auth(&app.admin).send().await.unwrap().status(), 204);
    let reply: Value =
        app.post("/agents/acme/chat?wait=true", &app.admin, json!({"text": "hi"})).await.json().await.unwrap();
    assert_eq!(reply["error"]["code"], "no_credential", "{reply}");

    for answer in answers {
        for secret in [OPENROUTER_KEY, FIRST_ACCESS, SECOND_ACCESS, REFRESH] {
            assert!(!answer.contains(secret), "{secret} in {answer}");
        }
    }
});
