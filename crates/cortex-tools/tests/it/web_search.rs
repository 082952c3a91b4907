//! `web_search` against fake Brave and SearXNG servers, plus its environment configuration.

use std::collections::HashMap;

use axum::Router;
use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use cortex_tools::Tool;
use cortex_tools::builtin::{SearchProvider, WebSearchTool, web_search_from_env};
use serde_json::{Value, json};

use crate::support::{ctx, init, serve};

const KEY: &str = "brave-key-123";

fn env(pairs: &[(&'static str, String)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<&str, String> = pairs.iter().cloned().collect();
    move |name| map.get(name).cloned()
}

/// A Brave-compatible endpoint: checks the token, honours `count`, marks each title with the query.
async fn brave(headers: HeaderMap, Query(params): Query<HashMap<String, String>>) -> Response {
    if headers.get("x-subscription-token").and_then(|v| v.to_str().ok()) != Some(KEY) {
        return (StatusCode::UNAUTHORIZED, format!("bad token; expected {KEY}")).into_response();
    }
    if params["q"] == "fail" {
        return (StatusCode::TOO_MANY_REQUESTS, format!("rate limited for token {KEY}")).into_response();
    }
    if params["q"] == "garbage" {
        return "<html>not json</html>".into_response();
    }
    let count: usize = params["count"].parse().unwrap();
    let results: Vec<Value> = (1..=count)
        .map(|i| json!({"title": format!("{} {i}", params["q"]), "url": format!("https://r{i}.example/"), "description": format!("snippet {i}"), "age": "1d"}))
        .collect();
    axum::Json(json!({"type": "search", "web": {"type": "search", "results": results}})).into_response()
}

/// A SearXNG endpoint: needs `format=json`, always returns ten results (SearXNG has no count parameter).
async fn searxng(Query(params): Query<HashMap<String, String>>) -> Response {
    if params.get("format").map(String::as_str) != Some("json") {
        return (StatusCode::FORBIDDEN, "format not allowed").into_response();
    }
    let mut results: Vec<Value> =
        (1..=10).map(|i| json!({"title": format!("{} {i}", params["q"]), "url": format!("https://s{i}.example/"), "content": format!("text {i}"), "engine": "x"})).collect();
    results[1]["content"] = Value::Null;
    axum::Json(json!({"query": params["q"], "results": results})).into_response()
}

async fn start() -> String {
    let router = Router::new().route("/res/v1/web/search", get(brave)).route("/search", get(searxng));
    format!("http://{}", serve(router).await)
}

async fn brave_tool(base: &str) -> WebSearchTool {
    init();
    let tool = web_search_from_env(env(&[
        ("CORTEX_SEARCH_API_URL", format!("{base}/res/v1/web/search")),
        ("CORTEX_SEARCH_API_KEY", KEY.into()),
    ]))
    .unwrap()
    .unwrap();
    assert_eq!(tool.provider(), SearchProvider::Brave);
    tool
}

#[tokio::test]
async fn brave_results_are_normalised() {
    let tool = brave_tool(&start().await).await;
    let output = tool.call(json!({"query": "rust lang", "count": 2}), &ctx()).await.unwrap();
    assert_eq!(
        output.data,
        json!([
            {"title": "rust lang 1", "url": "https://r1.example/", "snippet": "snippet 1"},
            {"title": "rust lang 2", "url": "https://r2.example/", "snippet": "snippet 2"}
        ])
    );
    assert_eq!(
        output.content,
        "1. rust lang 1\n   https://r1.example/\n   snippet 1\n\n2. rust lang 2\n   https://r2.example/\n   snippet 2"
    );
    let default_count = tool.call(json!({"query": "x"}), &ctx()).await.unwrap();
    assert_eq!(default_count.data.as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn searxng_results_are_normalised_and_limited() {
    init();
    let base = start().await;
    let tool = web_search_from_env(env(&[("CORTEX_SEARCH_API_URL", format!("{base}/search"))])).unwrap().unwrap();
    assert_eq!(tool.provider(), SearchProvider::Searxng);
    let output = tool.call(json!({"query": "tokio", "count": 3}), &ctx()).await.unwrap();
    assert_eq!(
        output.data,
        json!([
            {"title": "tokio 1", "url": "https://s1.example/", "snippet": "text 1"},
            {"title": "tokio 2", "url": "https://s2.example/", "snippet": ""},
            {"title": "tokio 3", "url": "https://s3.example/", "snippet": "text 3"}
        ])
    );
    assert!(!output.is_error);
}

#[tokio::test]
async fn count_bounds_are_enforced() {
    let tool = brave_tool(&start().await).await;
    for input in [
        json!({"query": "x", "count": 0}),
        json!({"query": "x", "count": 21}),
        json!({"query": "  "}),
        json!({"q": "x"}),
    ] {
        let error = tool.call(input.clone(), &ctx()).await.unwrap_err();
        assert_eq!(error.code(), "invalid_arguments", "{input}");
    }
    let max = tool.call(json!({"query": "x", "count": 20}), &ctx()).await.unwrap();
    assert_eq!(max.data.as_array().unwrap().len(), 20);
}

#[tokio::test]
async fn provider_errors_are_clear_and_never_show_the_key() {
    let tool = brave_tool(&start().await).await;
    let error = tool.call(json!({"query": "fail"}), &ctx()).await.unwrap_err();
    assert_eq!(error.code(), "tool_failed");
    assert_eq!(
        error.to_string(),
        "the search provider answered HTTP 429 Too Many Requests: rate limited for token <redacted>"
    );
    let error = tool.call(json!({"query": "garbage"}), &ctx()).await.unwrap_err();
    assert!(error.to_string().starts_with("the search provider returned an unexpected response"), "{error}");

    // A port bound without listening refuses connections, and no other test's server can take it meanwhile.
    let held = tokio::net::TcpSocket::new_v4().unwrap();
    held.bind(([127, 0, 0, 1], 0).into()).unwrap();
    let closed = held.local_addr().unwrap();
    let unreachable = brave_tool(&format!("http://{closed}")).await;
    let error = unreachable.call(json!({"query": "x"}), &ctx()).await.unwrap_err();
    assert!(error.to_string().starts_with("the search provider could not be reached"), "{error}");
}

#[test]
fn environment_selects_and_validates_the_provider() {
    init();
    assert!(web_search_from_env(env(&[])).unwrap().is_none(), "unconfigured search is simply absent");
    assert!(web_search_from_env(env(&[("CORTEX_SEARCH_API_URL", "  ".into())])).unwrap().is_none());

    let key_only = web_search_from_env(env(&[("CORTEX_SEARCH_API_KEY", KEY.into())])).unwrap().unwrap();
    assert_eq!(key_only.provider(), SearchProvider::Brave);

    let forced = web_search_from_env(env(&[
        ("CORTEX_SEARCH_API_URL", "https://search.example/api".into()),
        ("CORTEX_SEARCH_PROVIDER", "Brave".into()),
        ("CORTEX_SEARCH_API_KEY", KEY.into()),
    ]))
    .unwrap()
    .unwrap();
    assert_eq!(forced.provider(), SearchProvider::Brave);

    for (pairs, fragment) in [
        (
            vec![("CORTEX_SEARCH_API_URL", "https://s.example/x".into()), ("CORTEX_SEARCH_PROVIDER", "bing".into())],
            "CORTEX_SEARCH_PROVIDER: unknown provider `bing`",
        ),
        (
            vec![("CORTEX_SEARCH_API_URL", "https://api.search.brave.com/res/v1/web/search".into())],
            "CORTEX_SEARCH_API_KEY: the Brave search API needs a subscription token",
        ),
        (
            vec![("CORTEX_SEARCH_API_KEY", "k".into()), ("CORTEX_SEARCH_PROVIDER", "searxng".into())],
            "CORTEX_SEARCH_API_URL: required for a SearXNG provider",
        ),
        (vec![("CORTEX_SEARCH_API_URL", "not a url".into())], "CORTEX_SEARCH_API_URL: relative URL without a base"),
        (
            vec![("CORTEX_SEARCH_API_URL", "ftp://s.example/".into())],
            "CORTEX_SEARCH_API_URL: `ftp://s.example/` is not an http(s) URL",
        ),
    ] {
        let error = web_search_from_env(env(&pairs)).err().unwrap();
        assert!(error.to_string().contains(fragment), "expected `{fragment}` in `{error}`");
    }
}
