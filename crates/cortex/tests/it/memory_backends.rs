//! Memory's configurable parts through the real binary (SPEC §9.4–§9.5, issue 16): `CORTEX_EMBEDDINGS=local`
//! with the real MiniLM weights (a binary built with `local-embeddings`; without the feature, the clear
//! start-up refusal), and `CORTEX_VECTOR_BACKEND=pgvector` against the PostgreSQL with the extension —
//! records remembered and found again through the API. Each skips with the reason printed when what it
//! needs is not configured.

use cortex_testkit::fake_llm::FakeLlm;
use serde_json::{Value, json};

use crate::e2e::{api, env, start};

/// Creates an agent, remembers `facts` through the API and searches `query`; returns the search answer.
async fn remember_and_search(base: &str, facts: &[&str], query: &str) -> (String, Value) {
    let agent = api(
        reqwest::Method::POST,
        format!("{base}/agents"),
        Some(json!({"name": "Rememberer", "model_config": {"provider": "openai", "model": "gpt-4o-mini"}})),
    )
    .await;
    let agent = agent["id"].as_str().unwrap().to_owned();
    for fact in facts {
        api(reqwest::Method::POST, format!("{base}/agents/{agent}/memory"), Some(json!({"content": fact}))).await;
    }
    let query = query.replace(' ', "%20");
    let found = api(reqwest::Method::GET, format!("{base}/agents/{agent}/memory/search?q={query}&limit=5"), None).await;
    (agent, found)
}

#[cfg(feature = "local-embeddings")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_embeddings_serve_hybrid_search_from_the_real_model() {
    let Some(model_dir) = std::env::var("CORTEX_TEST_MINILM_DIR").ok().filter(|dir| !dir.is_empty()) else {
        eprintln!("skipped: CORTEX_TEST_MINILM_DIR is not set (the all-MiniLM-L6-v2 weights; see scripts/test)");
        return;
    };
    let llm = FakeLlm::start().await;
    let mut env = env(&llm);
    env.push(("CORTEX_EMBEDDINGS", "local".into()));
    env.push(("CORTEX_EMBEDDINGS_MODEL_DIR", model_dir));
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &env);
    let facts = [
        "The user's cat is called Miso and hates thunderstorms.",
        "Quarterly invoices are due on the fifth working day.",
        "The staging database runs PostgreSQL 15 on port 5433.",
    ];
    // No word in common with the fact about the cat: only the model's vectors can find it.
    let (_, found) = remember_and_search(&server.url, &facts, "pet frightened by weather").await;
    assert_eq!(found["mode"], "hybrid", "{found}");
    assert_eq!(found["items"][0]["content"], facts[0], "{found}");
    assert!(found["items"][0]["score_parts"]["similarity"].as_f64().unwrap() > 0.2, "{found}");
    server.kill();
}

#[cfg(not(feature = "local-embeddings"))]
#[test]
fn local_embeddings_without_the_feature_stop_start_up_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = dir.path().join("model");
    let output = crate::process::cortex(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("CORTEX_EMBEDDINGS", "local")
        .env("CORTEX_EMBEDDINGS_MODEL_DIR", &model_dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("CORTEX_EMBEDDINGS"), "names the setting: {stderr}");
    assert!(stderr.contains("--features local-embeddings"), "says how to get it: {stderr}");
    assert_eq!(stderr.matches("error:").count(), 1, "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pgvector_backend_serves_remember_and_search() {
    let Some(database) = cortex_testkit::TestStore::pgvector().await else { return };
    let cortex_store::DatabaseConfig::Postgres { url, .. } = database.config.clone() else { unreachable!() };
    let llm = FakeLlm::start().await;
    let embeddings = cortex_testkit::fake_embeddings::FakeEmbeddings::start().await;
    let mut env = env(&llm);
    env.push(("CORTEX_DATABASE_URL", url));
    env.push(("CORTEX_VECTOR_BACKEND", "pgvector".into()));
    env.push(("CORTEX_EMBEDDINGS", "api".into()));
    env.push(("CORTEX_EMBEDDINGS_BASE_URL", embeddings.base_url().to_owned()));
    env.push(("CORTEX_EMBEDDINGS_MODEL", "fake-64".into()));
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &env);
    let facts = [
        "The red kayak is stored in the boathouse.",
        "Invoices go to accounting every Friday.",
        "The garden hose leaks near the tap.",
    ];
    let (agent, found) = remember_and_search(&server.url, &facts, "red kayak boathouse").await;
    assert_eq!(found["mode"], "hybrid", "{found}");
    assert_eq!(found["degraded"], false, "{found}");
    assert_eq!(found["items"][0]["content"], facts[0], "{found}");
    assert!(found["items"][0]["score_parts"]["similarity"].as_f64().unwrap() > 0.3, "{found}");
    // The vectors were searched inside PostgreSQL: the agent's copy is in pgvector's table.
    let copied = database
        .query_text(format!("SELECT count(*)::text FROM memory_vector WHERE agent_id = '{agent}'"))
        .await
        .unwrap();
    assert_eq!(copied, vec!["3".to_owned()]);
    server.kill();
}
