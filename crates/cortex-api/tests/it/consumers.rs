//! The other credential kinds in use (issue 15): a `search` credential serves `web_search`, an `embedding`
//! credential keys the memory embedder, each against a fake server speaking the real wire format; adding,
//! rotating and deleting apply without a restart, and `used_by` / `last_used_at` say who used it.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use cortex_jobs::{EngineConfig, JobEngine};
use cortex_testkit::fake_llm::{FakeLlm, RecordedRequest, Reply, When};
use cortex_testkit::{TestStore, both_engines};
use serde_json::{Value, json};

use crate::app::TestApp;
use crate::tools::put;

type Seen = Arc<Mutex<Vec<String>>>;

fn authorization(headers: &HeaderMap) -> String {
    headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

/// A SearXNG JSON endpoint (`GET /search?q=…&format=json`) and an OpenAI-compatible
/// `POST /v1/embeddings`, recording the `Authorization` of every call.
async fn fake_services() -> (String, Seen, Seen) {
    let (searches, embeddings): (Seen, Seen) = Default::default();
    let (s, e) = (searches.clone(), embeddings.clone());
    let app = Router::new()
        .route(
            "/search",
            get(move |headers: HeaderMap| {
                let s = s.clone();
                async move {
                    s.lock().unwrap().push(authorization(&headers));
                    axum::Json(json!({"results": [{"title": "Rust", "url": "https://rust-lang.org", "content": "A language."}]}))
                }
            }),
        )
        .route(
            "/v1/embeddings",
            post(move |headers: HeaderMap, axum::Json(body): axum::Json<Value>| {
                let e = e.clone();
                async move {
                    e.lock().unwrap().push(authorization(&headers));
                    let count = body["input"].as_array().map_or(0, Vec::len);
                    let data: Vec<Value> =
                        (0..count).map(|index| json!({"index": index, "embedding": [1.0, 0.5, 0.25]})).collect();
                    axum::Json(json!({"data": data}))
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, searches, embeddings)
}

async fn credential(app: &TestApp, name: &str) -> Value {
    let list: Value = app.get("/credentials", &app.admin).await.json().await.unwrap();
    list["items"].as_array().unwrap().iter().find(|item| item["name"] == name).cloned().unwrap_or(Value::Null)
}

fn search_then_answer(request: &RecordedRequest) -> Reply {
    if request.last_is_tool_result() {
        Reply::text(format!("found: {}", request.tool_results().join(" ")))
    } else {
        Reply::tool_call("web_search", json!({"query": "rust"}))
    }
}

both_engines!(a_search_credential_serves_web_search_and_is_rotated_and_removed_live, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    let llm = FakeLlm::start().await;
    llm.rule_fn(When::Always, search_then_answer);
    let (base, searches, _) = fake_services().await;
    let engine = JobEngine::new(app.test.store.clone(), EngineConfig::with_name("consumers-test"))
        .with_handler(cortex_core::job::JobKind::Chat, app.runtime.handler());
    let stop = tokio_util::sync::CancellationToken::new();
    let signal = stop.clone();
    tokio::spawn(engine.run(async move { signal.cancelled().await }));
    let _stop = stop.drop_guard();
    let llm_key = json!({"name": "openai", "kind": "llm", "value": "sk-llm-000000", "base_url": llm.openai_base_url()});
    assert_eq!(app.post("/credentials", &app.admin, llm_key).await.status(), 201);
    let agent = app.create_agent("Searcher").await;
    let id = agent["id"].as_str().unwrap().to_owned();

    // Without a search provider, web_search is not a tool of this deployment.
    let refused = put(&app, &format!("/agents/{id}/tools/web_search"), &app.admin, json!({"enabled": true})).await;
    assert_eq!(refused.status(), 422);

    let body =
        json!({"name": "searxng", "kind": "search", "value": "search-key-one", "base_url": format!("{base}/search")});
    let created: Value = app.post("/credentials", &app.admin, body).await.json().await.unwrap();
    let path = format!("/credentials/{}", created["id"].as_str().unwrap());
    let allowed = put(&app, &format!("/agents/{id}/tools/web_search"), &app.admin, json!({"enabled": true})).await;
    assert_eq!(allowed.status(), 200);
    assert_eq!(credential(&app, "searxng").await["used_by"], json!(["searcher"]));
    assert!(credential(&app, "searxng").await["last_used_at"].is_null());

    let chat = |text: &'static str| {
        app.post("/agents/searcher/chat?wait=true&timeout_seconds=120", &app.admin, json!({"text": text}))
    };
    let first: Value = chat("search").await.json().await.unwrap();
    assert_eq!(first["status"], "completed", "{first}");
    assert!(first["response"].as_str().unwrap().contains("rust-lang.org"), "{first}");
    assert_eq!(searches.lock().unwrap().as_slice(), ["Bearer search-key-one"]);
    assert!(credential(&app, "searxng").await["last_used_at"].is_string());

    // Rotating switches the key of the next run; deleting makes the tool unresolvable with the reason.
    let rotated = app
        .http
        .patch(app.url(&path))
        .bearer_auth(&app.admin)
        .json(&json!({"value": "search-key-two"}))
        .send()
        .await
        .unwrap();
    assert_eq!(rotated.status(), 200);
    let second: Value = chat("search again").await.json().await.unwrap();
    assert_eq!(second["status"], "completed", "{second}");
    assert_eq!(searches.lock().unwrap().last().unwrap(), "Bearer search-key-two");
    assert_eq!(app.http.delete(app.url(&path)).bearer_auth(&app.admin).send().await.unwrap().status(), 204);
    let tools: Value = app.get(&format!("/agents/{id}/tools"), &app.admin).await.json().await.unwrap();
    let text = tools.to_string();
    assert!(text.contains("a `search` credential"), "{text}");
    assert!(!text.contains("search-key"), "{text}");
});

both_engines!(an_embedding_credential_keys_the_memory_embedder_without_restart, |t: TestStore| async move {
    let (base, _, embeddings) = fake_services().await;
    let env = [
        ("CORTEX_EMBEDDINGS", "api".to_owned()),
        ("CORTEX_EMBEDDINGS_BASE_URL", format!("{base}/v1")),
        ("CORTEX_EMBEDDINGS_API_KEY", "env-embedding-key".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let app = TestApp::spawn_with_env(t, Default::default(), env).await;
    let agent = app.create_agent("Rememberer").await;
    let id = agent["id"].as_str().unwrap().to_owned();
    let path_memory = format!("/agents/{id}/memory");
    let remember = |content: &'static str| app.post(&path_memory, &app.admin, json!({"content": content}));

    assert_eq!(remember("The first memory to embed.").await.status(), 201);
    assert_eq!(embeddings.lock().unwrap().last().unwrap(), "Bearer env-embedding-key");

    let body = json!({"name": "openai-embeddings", "kind": "embedding", "value": "managed-embedding-key"});
    let created: Value = app.post("/credentials", &app.admin, body).await.json().await.unwrap();
    assert_eq!(remember("The second memory to embed.").await.status(), 201);
    assert_eq!(embeddings.lock().unwrap().last().unwrap(), "Bearer managed-embedding-key");
    let row = credential(&app, "openai-embeddings").await;
    assert!(row["last_used_at"].is_string(), "{row}");
    assert_eq!(row["used_by"], json!(["rememberer"]));

    let path = format!("/credentials/{}", created["id"].as_str().unwrap());
    assert_eq!(app.http.delete(app.url(&path)).bearer_auth(&app.admin).send().await.unwrap().status(), 204);
    assert_eq!(remember("The third memory to embed.").await.status(), 201);
    assert_eq!(embeddings.lock().unwrap().last().unwrap(), "Bearer env-embedding-key", "back to the configured key");
});
