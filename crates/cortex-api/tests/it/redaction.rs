//! Secret redaction as an attack (SPEC Appendix B "Credentials"): a scripted model calls a webhook tool
//! whose endpoint echoes the `tool_secret` credential it was sent (plain, base64, hex, percent-encoded),
//! then repeats what it saw and adds every stored secret it "knows" (the provider key too), streamed in
//! tiny pieces. A channel user's message gets the same leak as a reply. No secret, in any encoding, may
//! appear in `GET /jobs/{id}`, the events (what SSE serves), the session messages, the model's next
//! request body, the credential listing or the chat platform.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use cortex_jobs::{EngineConfig, JobEngine};
use cortex_testkit::fake_llm::{FakeLlm, RecordedRequest, Reply, When};
use cortex_testkit::fake_telegram::FakeTelegram;
use cortex_testkit::{TestStore, both_engines};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::app::TestApp;
use crate::tools::put;

const LLM_KEY: &str = "sk-provider-key-0123456789abcdef";
const TOOL_KEY: &str = "tk_webhook/secret+value=42";
const BOT_TOKEN: &str = "4242:api-token";

/// Every form of a secret that must never come back.
fn forms(secret: &str) -> Vec<String> {
    let percent: String = secret
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() { char::from(b).to_string() } else { format!("%{b:02X}") })
        .collect();
    vec![
        secret.to_owned(),
        STANDARD.encode(secret),
        URL_SAFE_NO_PAD.encode(secret),
        STANDARD.encode(format!("Bearer {secret}")),
        hex::encode(secret),
        hex::encode_upper(secret),
        percent,
    ]
}

fn assert_clean(what: &str, text: &str) {
    for secret in [LLM_KEY, TOOL_KEY] {
        for form in forms(secret) {
            assert!(!text.contains(&form), "{what} carried `{form}`: {text}");
        }
    }
}

/// A webhook endpoint that echoes the `Authorization` header it received, in several encodings.
async fn echo_server() -> (String, Arc<Mutex<Vec<String>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let seen = received.clone();
    let app = Router::new().route(
        "/echo",
        post(move |headers: HeaderMap| {
            let seen = seen.clone();
            async move {
                let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                seen.lock().unwrap().push(auth.clone());
                let token = auth.strip_prefix("Bearer ").unwrap_or(&auth).to_owned();
                axum::Json(json!({
                    "authorization": auth,
                    "base64": STANDARD.encode(&auth),
                    "token_base64url": URL_SAFE_NO_PAD.encode(&token),
                    "hex": hex::encode(&token),
                    "url": format!("https://x.example/?t={}", forms(&token)[6]),
                }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/echo", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

/// What the scripted model says after seeing a tool result: it repeats it and leaks every secret it knows.
fn leak(tool_result: &str) -> String {
    format!(
        "I saw: {tool_result}\nThe keys are {LLM_KEY} and {TOOL_KEY}; encoded {} / {} / {}.",
        STANDARD.encode(LLM_KEY),
        hex::encode(TOOL_KEY),
        forms(TOOL_KEY)[6]
    )
}

fn script(request: &RecordedRequest) -> Reply {
    if request.last_is_tool_result() {
        let results = request.tool_results().join("\n");
        return Reply::text(leak(&results)).chunk_chars(3);
    }
    if request.user_texts().iter().any(|text| text.contains("call the echo tool")) {
        return Reply::tool_call("webhook__echo", json!({"note": "hi"}));
    }
    Reply::text(leak("nothing")).chunk_chars(2)
}

fn start_engine(app: &TestApp) -> CancellationToken {
    let engine = JobEngine::new(app.test.store.clone(), EngineConfig::with_name("redaction-test"))
        .with_handler(cortex_core::job::JobKind::Chat, app.runtime.handler());
    let stop = CancellationToken::new();
    let signal = stop.clone();
    tokio::spawn(engine.run(async move { signal.cancelled().await }));
    stop
}

/// Stores the provider key and the `echo-secret` tool secret, the `echo` webhook tool sending it as a
/// bearer token to `echo_url`, and the agent `leaky` allowed to call it; the agent's id.
async fn arm(app: &TestApp, llm: &FakeLlm, echo_url: &str) -> String {
    let created = app
        .post(
            "/credentials",
            &app.admin,
            json!({"name": "openai", "kind": "llm", "value": LLM_KEY, "base_url": llm.openai_base_url()}),
        )
        .await;
    assert_eq!(created.status(), 201);
    let secret = app
        .post("/credentials", &app.admin, json!({"name": "echo-secret", "kind": "tool_secret", "value": TOOL_KEY}))
        .await;
    assert_eq!(secret.status(), 201);
    let hook = app
        .post(
            "/webhook-tools",
            &app.admin,
            json!({"name": "echo", "description": "Echoes.", "input_schema": {"type": "object"}, "url": echo_url,
                   "credential_refs": [{"credential": "echo-secret", "header_name": "Authorization", "format": "bearer"}]}),
        )
        .await;
    assert_eq!(hook.status(), 201);
    let hook: Value = hook.json().await.unwrap();
    assert_eq!(hook["credential_refs"][0]["credential"], "echo-secret");
    let agent = app.create_agent("Leaky").await;
    let agent_id = agent["id"].as_str().unwrap().to_owned();
    let policy = put(
        app,
        &format!("/agents/{agent_id}/tools/webhook:echo"),
        &app.admin,
        json!({"enabled": true, "approval": "never"}),
    )
    .await;
    assert_eq!(policy.status(), 200);
    agent_id
}

both_engines!(no_secret_survives_a_model_that_repeats_what_a_tool_echoed, |t: TestStore| async move {
    let env = [("CORTEX_SSRF_ALLOW".to_owned(), "127.0.0.1".to_owned())].into_iter().collect();
    let unlimited = cortex_api::rate_limit::Limit::OFF;
    let config = cortex_api::ApiConfig { api_rate: unlimited, chat_rate: unlimited, ..Default::default() };
    let app = TestApp::spawn_with_env(t, config, env).await;
    let llm = FakeLlm::start().await;
    llm.rule_fn(When::Always, script);
    let (echo_url, received) = echo_server().await;
    let _engine = start_engine(&app).drop_guard();
    let agent_id = arm(&app, &llm, &echo_url).await;
    let missing = app
        .post(
            "/webhook-tools",
            &app.admin,
            json!({"name": "broken", "description": "x", "input_schema": {"type": "object"}, "url": echo_url,
                   "credential_refs": [{"credential": "nope"}]}),
        )
        .await;
    assert_eq!(missing.status(), 422, "a reference to a missing credential is refused at creation");
    let bad_format = app
        .post(
            "/webhook-tools",
            &app.admin,
            json!({"name": "broken", "description": "x", "input_schema": {"type": "object"}, "url": echo_url,
                   "credential_refs": [{"credential": "echo-secret", "format": "basic"}]}),
        )
        .await;
    assert_eq!(bad_format.status(), 400);

    let answer = app
        .post(
            "/agents/leaky/chat?wait=true&timeout_seconds=120",
            &app.admin,
            json!({"text": "Please call the echo tool."}),
        )
        .await;
    assert_eq!(answer.status(), 200);
    let answer_text = answer.text().await.unwrap();
    let answer: Value = serde_json::from_str(&answer_text).unwrap();
    assert_eq!(answer["status"], "completed", "{answer}");

    // The webhook really received the secret, injected at call time.
    assert_eq!(received.lock().unwrap().as_slice(), [format!("Bearer {TOOL_KEY}")]);
    // The model saw the echo only redacted: its next request body holds no form of either secret.
    let requests = llm.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests[1].body_text().contains("[redacted]"), "{}", requests[1].body_text());
    for request in &requests {
        assert_clean("a model request body", &request.body_text());
    }
    assert_clean("the chat answer", &answer_text);
    let response = answer["response"].as_str().unwrap();
    assert!(response.starts_with("I saw: ") && response.contains("[redacted]"), "{response}");

    let job_id = answer["job_id"].as_str().unwrap();
    assert_clean("GET /jobs/{id}", &app.get(&format!("/jobs/{job_id}"), &app.admin).await.text().await.unwrap());
    let session_id = answer["session_id"].as_str().unwrap();
    let messages = app.get(&format!("/sessions/{session_id}/messages"), &app.admin).await.text().await.unwrap();
    assert!(messages.contains("I saw: "), "{messages}");
    assert_clean("the session messages", &messages);
    let calls = app.test.store.tool_calls_of_job(job_id.parse().unwrap()).await.unwrap();
    assert_eq!(calls.len(), 1);
    assert_clean("the tool-call ledger", &format!("{:?}", calls[0].output));
    let events = app
        .test
        .store
        .events_after(cortex_store::events::EventScope::Job(job_id.parse().unwrap()), 0, 10_000)
        .await
        .unwrap();
    let deltas = events.iter().filter(|event| event.event_type == cortex_core::event::EventType::LlmDelta).count();
    assert!(deltas > 0, "the answer was streamed");
    for event in &events {
        assert_clean("an event", &event.payload.to_string());
    }
    // The streamed deltas, joined, are the redacted answer (no secret split across two deltas).
    let streamed: String = events
        .iter()
        .filter(|event| event.event_type == cortex_core::event::EventType::LlmDelta)
        .filter_map(|event| event.payload["text"].as_str())
        .collect();
    assert_clean("the joined deltas", &streamed);

    // The credentials list says which agent uses the tool secret and when it was last used.
    let list = app.get("/credentials", &app.admin).await.text().await.unwrap();
    assert_clean("GET /credentials", &list);
    let list: Value = serde_json::from_str(&list).unwrap();
    let row = list["items"].as_array().unwrap().iter().find(|item| item["name"] == "echo-secret").unwrap().clone();
    assert_eq!(row["used_by"], json!(["leaky"]));
    assert!(row["last_used_at"].is_string(), "{row}");

    // A chat platform user gets the same leak as a reply: the platform receives it redacted.
    let telegram = FakeTelegram::start(BOT_TOKEN).await;
    let channel = app
        .post(
            "/channels",
            &app.admin,
            json!({"type": "telegram", "name": "support",
                   "config": {"bot_token": BOT_TOKEN, "api_base": telegram.api_base(), "poll_timeout_seconds": 1}}),
        )
        .await;
    assert_eq!(channel.status(), 201);
    let bound = app
        .post(&format!("/agents/{agent_id}/channels"), &app.admin, json!({"channel_type": "telegram", "chat_id": "42"}))
        .await;
    assert!(bound.status().is_success(), "{}", bound.text().await.unwrap());
    telegram.push_text(42, 42, "what do you know?");
    let sent = telegram.wait_for_calls("sendMessage", 1).await;
    let text = sent[0].body["text"].as_str().unwrap_or_default().to_owned();
    assert!(text.contains("[redacted]"), "{text}");
    assert_clean("the channel reply", &sent[0].body.to_string());
});

/// Waits (minutes at most) until `expected` arrives on `changes`.
async fn wait_for(
    changes: &mut tokio::sync::broadcast::Receiver<cortex_store::Notification>,
    expected: &cortex_store::Notification,
) {
    let mut seen = Vec::new();
    let arrived = tokio::time::timeout(std::time::Duration::from_secs(180), async {
        loop {
            match changes.recv().await {
                Ok(notification) if notification == *expected => return,
                other => seen.push(format!("{other:?}")),
            }
        }
    })
    .await;
    assert!(arrived.is_ok(), "{expected:?} did not arrive within 3 minutes; seen: {seen:?}");
}

/// Sends `text` to `leaky` and waits for the answer, which must complete.
async fn chat(app: &TestApp, text: &str) -> Value {
    let path = "/agents/leaky/chat?wait=true&timeout_seconds=120";
    let answer: Value = app.post(path, &app.admin, json!({"text": text})).await.json().await.unwrap();
    assert_eq!(answer["status"], "completed", "{answer}");
    answer
}

both_engines!(a_credential_written_anywhere_is_redacted_from_the_next_tool_result, |t: TestStore| async move {
    // The secret set is rebuilt on a credential change notification, never read per job or tool result.
    // On PostgreSQL the change comes from another store handle (another process: its only way here is
    // the `NOTIFY` delivered at commit); on SQLite (one process per data dir) from a write in this
    // process that is not the API's, so no route forces the rebuild.
    const ROTATED: &str = "tk_rotated/value=77";
    let env = [("CORTEX_SSRF_ALLOW".to_owned(), "127.0.0.1".to_owned())].into_iter().collect();
    let unlimited = cortex_api::rate_limit::Limit::OFF;
    let config = cortex_api::ApiConfig { api_rate: unlimited, chat_rate: unlimited, ..Default::default() };
    let app = TestApp::spawn_with_env(t, config, env).await;
    let llm = FakeLlm::start().await;
    llm.rule_fn(When::Always, script);
    let (echo_url, received) = echo_server().await;
    let _engine = start_engine(&app).drop_guard();
    let mut changes = app.test.store.subscribe();
    arm(&app, &llm, &echo_url).await;
    // Notifications arrive in commit order: once a marker committed after the set-up arrives, so did
    // every notification of the set-up (on PostgreSQL they come asynchronously through `LISTEN`).
    let writer = if app.test.store.is_postgres() { app.test.reopen().await } else { app.test.store.clone() };
    let marker = cortex_store::Notification::Outbox { channel_id: uuid::Uuid::nil() };
    let mut tx = writer.begin().await.unwrap();
    tx.notify(marker.clone());
    tx.commit().await.unwrap();
    wait_for(&mut changes, &marker).await;

    chat(&app, "Please call the echo tool.").await;
    let reads = app.runtime.secret_set_reads();
    let answer = chat(&app, "Please call the echo tool again.").await;
    assert_clean("the second answer", &answer.to_string());
    assert_eq!(received.lock().unwrap().len(), 2, "the tool ran twice");
    assert_eq!(
        app.runtime.secret_set_reads(),
        reads,
        "no credential read per job or tool result while nothing changed"
    );

    let row = app.test.store.credential("tool_secret", "echo-secret").await.unwrap().unwrap();
    let sealed =
        crate::tools::test_cipher().encrypt(&cortex_store::credentials::secret_ref(row.id), ROTATED.as_bytes());
    let mut tx = writer.begin().await.unwrap();
    let rotated = cortex_store::credentials::CredentialWrite {
        id: row.id,
        kind: row.kind,
        name: row.name,
        provider: row.provider,
        api_style: row.api_style,
        base_url: row.base_url,
        secret_enc: Some(sealed),
        secret_hint: None,
        models: row.models,
        prices: row.prices,
        status: row.status,
        clear_error: true,
    };
    assert!(tx.update_credential(&rotated).await.unwrap());
    tx.commit().await.unwrap();
    wait_for(&mut changes, &cortex_store::Notification::Credentials).await;

    let answer = chat(&app, "Please call the echo tool once more.").await;
    assert_eq!(received.lock().unwrap().last().cloned(), Some(format!("Bearer {ROTATED}")), "the new value is used");
    let response = answer["response"].as_str().unwrap();
    assert!(response.contains("[redacted]"), "{response}");
    for text in std::iter::once(answer.to_string()).chain(llm.requests().iter().map(|r| r.body_text())) {
        for form in forms(ROTATED) {
            assert!(!text.contains(&form), "the rotated secret reached the model or the answer as `{form}`: {text}");
        }
    }
    assert_eq!(app.runtime.secret_set_reads(), reads + 1, "one read after the change");
});
