//! Memory routes (SPEC §2.4, §9): create, hybrid search with score parts, list, edit, delete, per-agent
//! isolation, keyword-only search when no embedder is configured, and the agent's `memory` switches.

use std::collections::BTreeMap;

use cortex_api::ApiConfig;
use cortex_core::role::Role;
use cortex_testkit::fake_embeddings::FakeEmbeddings;
use cortex_testkit::{TestStore, both_engines};
use serde_json::{Value, json};

use crate::app::{TestApp, error_code};

async fn app_with_embeddings(test: TestStore, embeddings: &FakeEmbeddings) -> TestApp {
    let env = BTreeMap::from([
        ("CORTEX_EMBEDDINGS".to_owned(), "api".to_owned()),
        ("CORTEX_EMBEDDINGS_BASE_URL".to_owned(), embeddings.base_url().to_owned()),
    ]);
    let unlimited = cortex_api::rate_limit::Limit::OFF;
    TestApp::spawn_with_env(test, ApiConfig { api_rate: unlimited, chat_rate: unlimited, ..ApiConfig::default() }, env)
        .await
}

async fn remember(app: &TestApp, agent: &str, body: Value) -> Value {
    let response = app.post(&format!("/agents/{agent}/memory"), &app.admin, body).await;
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

async fn search(app: &TestApp, agent: &str, query: &str) -> Value {
    let response = app.get(&format!("/agents/{agent}/memory/search?q={query}&limit=5"), &app.admin).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

both_engines!(memory_routes_store_search_edit_and_delete, |t: TestStore| async move {
    let embeddings = FakeEmbeddings::start().await;
    let app = app_with_embeddings(t, &embeddings).await;
    let agent = app.create_agent("Rememberer").await;
    let id = agent["id"].as_str().unwrap();

    let tea = remember(
        &app,
        id,
        json!({"content": "Ana drinks oolong tea every morning.", "type": "preference", "tags": ["tea"], "importance": 4}),
    )
    .await;
    assert_eq!((tea["type"].as_str(), tea["source"].as_str()), (Some("preference"), Some("api")));
    assert_eq!(tea["embedding_model"], "text-embedding-3-small");
    remember(&app, id, json!({"content": "The release train leaves on Thursdays."})).await;
    remember(&app, id, json!({"content": "Ana's laptop is a ThinkPad X1 Carbon.", "type": "fact"})).await;
    let again = app
        .post(&format!("/agents/{id}/memory"), &app.admin, json!({"content": "Ana drinks oolong tea every morning."}))
        .await;
    assert_eq!(again.status(), 200, "identical content is the same memory");

    let found = search(&app, id, "what%20tea%20does%20Ana%20drink").await;
    assert_eq!(found["mode"], "hybrid");
    assert_eq!(found["degraded"], false);
    assert_eq!(found["next_cursor"], Value::Null);
    let first = &found["items"][0];
    assert_eq!(first["id"], tea["id"], "{found}");
    for part in ["similarity", "recency", "utility"] {
        let value = first["score_parts"][part].as_f64().unwrap_or_else(|| panic!("{part} missing: {first}"));
        assert!((0.0..=1.0).contains(&value), "{part} = {value}");
    }
    let parts = &first["score_parts"];
    let expected = 0.5 * parts["similarity"].as_f64().unwrap()
        + 0.3 * parts["recency"].as_f64().unwrap()
        + 0.2 * parts["utility"].as_f64().unwrap();
    assert!((first["score"].as_f64().unwrap() - expected).abs() < 1e-9, "{first}");
    assert_eq!(parts["recency"], 1.0, "created just now");

    let laptop = search(&app, id, "thinkpad").await;
    assert_eq!(laptop["items"][0]["content"], "Ana's laptop is a ThinkPad X1 Carbon.");

    let list: Value = app.get(&format!("/agents/{id}/memory?type=preference"), &app.admin).await.json().await.unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let by_tag: Value = app.get(&format!("/agents/{id}/memory?tag=tea"), &app.admin).await.json().await.unwrap();
    assert_eq!(by_tag["items"][0]["id"], tea["id"]);
    let all: Value = app.get(&format!("/agents/{id}/memory?limit=2"), &app.admin).await.json().await.unwrap();
    assert_eq!(all["items"].as_array().unwrap().len(), 2);
    assert!(all["next_cursor"].is_string());

    let tea_id = tea["id"].as_str().unwrap();
    let patched = app
        .http
        .patch(app.url(&format!("/agents/{id}/memory/{tea_id}")))
        .bearer_auth(&app.admin)
        .json(&json!({"content": "Ana switched from oolong to green tea.", "importance": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    let patched: Value = patched.json().await.unwrap();
    assert_eq!((patched["importance"].as_i64(), patched["type"].as_str()), (Some(5), Some("preference")));
    let green = search(&app, id, "green").await;
    assert_eq!(green["items"][0]["id"], tea["id"], "the edit is searchable: {green}");

    let viewer = app.key(Role::Viewer).await;
    let refused = app.post(&format!("/agents/{id}/memory"), &viewer, json!({"content": "viewers cannot write"})).await;
    assert_eq!(refused.status(), 403);
    let deleted = app
        .http
        .delete(app.url(&format!("/agents/{id}/memory/{tea_id}")))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let gone = app.get(&format!("/agents/{id}/memory/{tea_id}"), &app.admin).await;
    assert_eq!(error_code(gone).await, "not_found");
    let green = search(&app, id, "green%20tea").await;
    assert!(green["items"].as_array().unwrap().iter().all(|item| item["id"] != tea["id"]), "{green}");
});

both_engines!(memory_is_per_agent_and_bad_input_is_refused, |t: TestStore| async move {
    let embeddings = FakeEmbeddings::start().await;
    let app = app_with_embeddings(t, &embeddings).await;
    let a = app.create_agent("Keeper A").await;
    let b = app.create_agent("Keeper B").await;
    let (a, b) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    let secret = remember(&app, a, json!({"content": "The vault code of agent A is 4711."})).await;
    let secret_id = secret["id"].as_str().unwrap();

    let other = search(&app, b, "vault%20code").await;
    assert_eq!(other["items"], json!([]), "another agent's search never sees it");
    let other = app.get(&format!("/agents/{b}/memory/{secret_id}"), &app.admin).await;
    assert_eq!(error_code(other).await, "not_found");
    let other = app
        .http
        .delete(app.url(&format!("/agents/{b}/memory/{secret_id}")))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(other).await, "not_found");
    let list: Value = app.get(&format!("/agents/{b}/memory"), &app.admin).await.json().await.unwrap();
    assert_eq!(list["items"], json!([]));

    for (body, field) in [
        (json!({"content": "short"}), "content"),
        (json!({"content": "long enough content", "importance": 9}), "importance"),
        (json!({"content": "long enough content", "confidence": 1.5}), "confidence"),
        (json!({"content": "long enough content", "tags": ["a","b","c","d","e","f","g","h","i","j","k"]}), "tags"),
    ] {
        let response = app.post(&format!("/agents/{a}/memory"), &app.admin, body).await;
        assert_eq!(response.status(), 400);
        let body: Value = response.json().await.unwrap();
        assert!(body["error"]["details"]["fields"][field].is_string(), "{body}");
    }
    let response = app
        .post(&format!("/agents/{a}/memory"), &app.admin, json!({"content": "long enough content", "type": "rumour"}))
        .await;
    assert_eq!(response.status(), 400);
    let response = app
        .post(&format!("/agents/{a}/memory"), &app.admin, json!({"content": "long enough content", "colour": "red"}))
        .await;
    assert_eq!(response.status(), 400, "unknown fields are refused");
    for query in ["", "?q=", "?q=x&limit=0", "?q=x&limit=201", "?q=x&type=rumour", "?q=x&sort=new"] {
        let response = app.get(&format!("/agents/{a}/memory/search{query}"), &app.admin).await;
        assert_eq!(response.status(), 400, "{query}");
    }
    let response = app.get("/agents/nobody/memory/search?q=x", &app.admin).await;
    assert_eq!(error_code(response).await, "not_found");
});

both_engines!(without_an_embedder_search_is_full_text_and_says_so, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    let agent = app.create_agent("Plain").await;
    let id = agent["id"].as_str().unwrap();
    let record = remember(&app, id, json!({"content": "Deployments happen from the staging branch."})).await;
    assert_eq!(record["embedding_model"], Value::Null);
    let found = search(&app, id, "deployment%20branches").await;
    assert_eq!(found["mode"], "keyword");
    assert_eq!(found["degraded"], false);
    assert!(found["notice"].as_str().unwrap().contains("CORTEX_EMBEDDINGS=none"), "{found}");
    assert_eq!(found["items"][0]["id"], record["id"], "stemmed full-text match: {found}");
    assert_eq!(found["items"][0]["score_parts"]["similarity"], 1.0, "the best keyword hit normalises to 1");
    let nothing = search(&app, id, "kubernetes").await;
    assert_eq!(nothing["items"], json!([]));
});

both_engines!(a_failing_embedder_degrades_search_and_the_backfill_catches_up, |t: TestStore| async move {
    let embeddings = FakeEmbeddings::start().await;
    let app = app_with_embeddings(t, &embeddings).await;
    let agent = app.create_agent("Patient").await;
    let id = agent["id"].as_str().unwrap();
    embeddings.set_failing(true);
    let record = remember(&app, id, json!({"content": "The office wifi password rotates monthly."})).await;
    assert_eq!(record["embedding_model"], Value::Null, "stored without a vector rather than refused");
    let found = search(&app, id, "wifi").await;
    assert_eq!((found["mode"].as_str(), found["degraded"].as_bool()), (Some("keyword"), Some(true)));
    assert_eq!(found["items"][0]["id"], record["id"]);

    embeddings.set_failing(false);
    assert_eq!(app.runtime.memory.backfill(100).await.unwrap(), 1);
    assert_eq!(app.runtime.memory.backfill(100).await.unwrap(), 0, "nothing left to embed");
    let found = search(&app, id, "wifi").await;
    assert_eq!(found["mode"], "hybrid");
    let memory_id = record["id"].as_str().unwrap();
    let stored: Value = app.get(&format!("/agents/{id}/memory/{memory_id}"), &app.admin).await.json().await.unwrap();
    assert_eq!(stored["embedding_model"], "text-embedding-3-small");
});

both_engines!(markdown_files_sync_through_the_routes_and_stay_read_only, |t: TestStore| async move {
    let embeddings = FakeEmbeddings::start().await;
    let app = app_with_embeddings(t, &embeddings).await;
    let agent = app.create_agent("Notebook").await;
    let (id, slug) = (agent["id"].as_str().unwrap(), agent["slug"].as_str().unwrap());
    let dir = app.test.dir.path().join("agents").join(slug).join("memory");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("MEMORY.md"), "## Office\nThe office door code changes every first Monday.\n").unwrap();

    let synced = app.post(&format!("/agents/{id}/memory/sync"), &app.admin, json!({})).await;
    assert_eq!(synced.status(), 200);
    assert_eq!(
        synced.json::<Value>().await.unwrap(),
        json!({"created": 1, "updated": 0, "deleted": 0, "unchanged": 0})
    );
    let again: Value =
        app.post(&format!("/agents/{id}/memory/sync"), &app.admin, json!({})).await.json().await.unwrap();
    assert_eq!(again, json!({"created": 0, "updated": 0, "deleted": 0, "unchanged": 1}));

    let listed: Value =
        app.get(&format!("/agents/{id}/memory?source=markdown"), &app.admin).await.json().await.unwrap();
    let record = &listed["items"][0];
    assert_eq!(record["source"], "markdown");
    let memory_id = record["id"].as_str().unwrap();
    let refused = app
        .http
        .delete(app.url(&format!("/agents/{id}/memory/{memory_id}")))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 409);
    assert_eq!(error_code(refused).await, "read_only_source");

    // Editing the file through the API writes it and syncs.
    let put = app
        .http
        .put(app.url(&format!("/agents/{id}/memory/files/MEMORY.md")))
        .bearer_auth(&app.admin)
        .json(&json!({"content": "## Office\nThe office door code changes every second Monday.\n\n## Parking\nVisitors park on level minus two, bay 14.\n"}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    assert_eq!(put.json::<Value>().await.unwrap(), json!({"created": 1, "updated": 1, "deleted": 0, "unchanged": 0}));
    let file: Value = app.get(&format!("/agents/{id}/memory/files/MEMORY.md"), &app.admin).await.json().await.unwrap();
    assert!(file["content"].as_str().unwrap().contains("second Monday"));
    for bad in ["..%2Fsecrets.md", "notes.txt", ".hidden.md"] {
        let response = app
            .http
            .put(app.url(&format!("/agents/{id}/memory/files/{bad}")))
            .bearer_auth(&app.admin)
            .json(&json!({"content": "x"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{bad}");
    }
    assert_eq!(app.get(&format!("/agents/{id}/memory/files/missing.md"), &app.admin).await.status(), 404);
});

both_engines!(agent_memory_switches_are_typed_stored_and_leave_the_routes_working, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    let plain = app.create_agent("Default Memory").await;
    assert_eq!(plain["memory"], json!({"enabled": true, "auto_extract": true}), "both on by default");

    let model = json!({"provider": "openai", "model": "gpt-4o-mini"});
    let created = app
        .post("/agents", &app.admin, json!({"name": "Forgetful", "model_config": model, "memory": {"enabled": false}}))
        .await;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    assert_eq!(created["memory"], json!({"enabled": false, "auto_extract": true}));
    let id = created["id"].as_str().unwrap();
    let read: Value = app.get(&format!("/agents/{id}"), &app.admin).await.json().await.unwrap();
    assert_eq!(read["memory"], created["memory"], "stored");

    let patched = app.patch(&format!("/agents/{id}"), &app.admin, json!({"memory": {"auto_extract": false}})).await;
    assert_eq!(patched.status(), 200);
    let patched: Value = patched.json().await.unwrap();
    assert_eq!(patched["memory"], json!({"enabled": true, "auto_extract": false}), "the document is replaced");

    for body in [json!({"memory": {"enable": false}}), json!({"memory": {"enabled": "no"}}), json!({"memory": true})] {
        let refused = app.patch(&format!("/agents/{id}"), &app.admin, body.clone()).await;
        assert_eq!(refused.status(), 400, "{body}");
        assert_eq!(error_code(refused).await, "validation_failed", "{body}");
    }

    app.patch(&format!("/agents/{id}"), &app.admin, json!({"memory": {"enabled": false}})).await;
    let stored = remember(&app, id, json!({"content": "Operators can still file memories for this agent."})).await;
    assert_eq!(stored["source"], "api", "the operator's memory routes keep working with memory off");
    let listed: Value = app.get(&format!("/agents/{id}/memory"), &app.admin).await.json().await.unwrap();
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(1), "{listed}");
});
