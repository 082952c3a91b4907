//! Bad input always gets a 4xx with the error envelope — never a 5xx.

use cortex_testkit::{TestStore, both_engines};
use serde_json::{Value, json};

use crate::app::{TestApp, error_code};

both_engines!(bad_bodies_get_clear_4xx, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    let post_raw = |body: &'static str| {
        app.http
            .post(app.url("/agents"))
            .bearer_auth(&app.admin)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let malformed = post_raw("{\"name\": ").await.unwrap();
    assert_eq!(malformed.status(), 400);
    assert_eq!(error_code(malformed).await, "bad_request");

    let wrong_type =
        app.post("/agents", &app.admin, json!({"name": 5, "model_config": {"provider": "openai", "model": "m"}})).await;
    assert_eq!(wrong_type.status(), 400);
    assert_eq!(error_code(wrong_type).await, "validation_failed");

    let missing = app.post("/agents", &app.admin, json!({"name": "no model"})).await;
    assert_eq!(missing.status(), 400);

    let out_of_range = app
        .post(
            "/agents",
            &app.admin,
            json!({"name": "r", "model_config": {"provider": "openai", "model": "m"}, "resource_limits": {"max_turns": 0}}),
        )
        .await;
    assert_eq!(out_of_range.status(), 400);
    let body: Value = out_of_range.json().await.unwrap();
    assert!(body["error"]["details"]["fields"]["resource_limits"].is_string(), "{body}");

    let no_content_type = app.http.post(app.url("/agents")).bearer_auth(&app.admin).body("{}").send().await.unwrap();
    assert_eq!(no_content_type.status(), 400);

    let huge = "x".repeat(1024 * 1024 + 10);
    let too_large = app
        .post("/agents", &app.admin, json!({"name": huge, "model_config": {"provider": "openai", "model": "m"}}))
        .await;
    assert_eq!(too_large.status(), 413);
    assert_eq!(error_code(too_large).await, "payload_too_large");
});

both_engines!(references_that_do_not_resolve_are_422_and_duplicates_409, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    let unknown_tool = app
        .post(
            "/agents",
            &app.admin,
            json!({"name": "t", "model_config": {"provider": "openai", "model": "m"}, "tools": ["teleport"]}),
        )
        .await;
    assert_eq!(unknown_tool.status(), 422);
    assert_eq!(error_code(unknown_tool).await, "unknown_tool");
    let unknown_provider = app
        .post("/agents", &app.admin, json!({"name": "p", "model_config": {"provider": "nowhere", "model": "m"}}))
        .await;
    assert_eq!(unknown_provider.status(), 422);
    assert_eq!(error_code(unknown_provider).await, "provider_unavailable");
    app.create_agent("Twin").await;
    let duplicate = app
        .post("/agents", &app.admin, json!({"name": "Twin", "model_config": {"provider": "openai", "model": "m"}}))
        .await;
    assert_eq!(duplicate.status(), 409);
    assert_eq!(error_code(duplicate).await, "conflict");
});

both_engines!(unknown_things_are_404_and_wrong_methods_405, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    for path in [
        "/agents/nobody",
        "/jobs/not-a-uuid",
        &format!("/jobs/{}", uuid::Uuid::now_v7()),
        "/sessions/x/messages",
        "/no/such/route",
    ] {
        let response = app.get(path, &app.admin).await;
        assert_eq!(response.status(), 404, "{path}");
        assert_eq!(error_code(response).await, "not_found");
    }
    let wrong_method = app.http.put(app.url("/agents")).bearer_auth(&app.admin).send().await.unwrap();
    assert_eq!(wrong_method.status(), 405);
    let allow = wrong_method.headers()["allow"].to_str().unwrap().to_owned();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    assert_eq!(error_code(wrong_method).await, "method_not_allowed");
});

both_engines!(list_parameters_are_validated, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    for query in ["limit=0", "limit=201", "limit=abc", "cursor=%%%", "status=sleeping"] {
        let response = app.get(&format!("/jobs?{query}"), &app.admin).await;
        assert_eq!(response.status(), 400, "{query}");
        error_code(response).await;
    }
    assert_eq!(app.get("/jobs?limit=200", &app.admin).await.status(), 200);
});

both_engines!(request_ids_are_echoed_or_assigned, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    let echoed = app.http.get(app.url("/healthz")).header("x-request-id", "trace-me-42").send().await.unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "trace-me-42");
    let assigned = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert!(!assigned.headers()["x-request-id"].is_empty());
    let unauthorized = app.http.get(app.url("/agents")).send().await.unwrap();
    assert!(unauthorized.headers().contains_key("x-request-id"));
});

both_engines!(no_route_answers_garbage_with_a_5xx, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    let agent = app.create_agent("Target").await;
    let agent_id = agent["id"].as_str().unwrap().to_owned();
    let document: Value = app.get("/openapi.json", &app.admin).await.json().await.unwrap();
    let garbage = [
        json!({"unexpected": true}),
        json!([1, 2, 3]),
        json!("string"),
        json!(null),
        json!({"name": {"deep": [null]}}),
    ];
    for (template, item) in document["paths"].as_object().unwrap() {
        let path = template.replace("{id}", &agent_id);
        for method in item.as_object().unwrap().keys() {
            let method: reqwest::Method = method.to_uppercase().parse().unwrap();
            if template.ends_with("/events") || template.ends_with("/stream") {
                continue;
            }
            for body in &garbage {
                let response = app
                    .http
                    .request(method.clone(), app.url(&path))
                    .bearer_auth(&app.admin)
                    .json(body)
                    .send()
                    .await
                    .unwrap();
                assert!(response.status().as_u16() < 500, "{method} {template} with {body} → {}", response.status());
            }
        }
    }
});

both_engines!(over_the_rate_limit_is_429_with_retry_after, |t: TestStore| async move {
    let config = cortex_api::ApiConfig {
        api_rate: cortex_api::rate_limit::Limit { per_minute: 1, burst: 3 },
        ..cortex_api::ApiConfig::default()
    };
    let app = TestApp::spawn_with(t, config).await;
    // The admin key was created through the store, so its bucket is untouched: three requests pass.
    for _ in 0..3 {
        assert_eq!(app.get("/agents", &app.admin).await.status(), 200);
    }
    let limited = app.get("/agents", &app.admin).await;
    assert_eq!(limited.status(), 429);
    let retry_after: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after));
    assert_eq!(error_code(limited).await, "rate_limited");
    assert_eq!(app.get("/healthz", &app.admin).await.status(), 200, "health is never limited");
});
