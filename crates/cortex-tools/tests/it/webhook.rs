//! Webhook tools: argument delivery, secret headers, error results, SSRF and definition validation.

use std::collections::BTreeMap;

use cortex_core::approval::RiskTier;
use cortex_tools::Tool;
use cortex_tools::webhook::{WebhookTool, WebhookToolDef};
use serde_json::{Value, json};

use crate::support::{Target, ctx, guarded};

const SECRET: &str = "s3cr3t-webhook-token";

fn def(url: String) -> WebhookToolDef {
    serde_json::from_value(json!({
        "name": "deploy",
        "description": "Deploys a service.",
        "input_schema": {"type": "object", "properties": {"service": {"type": "string"}}, "required": ["service"]},
        "url": url,
        "headers": {"Authorization": format!("Bearer {SECRET}"), "X-Static": "static-value"}
    }))
    .unwrap()
}

async fn setup(path: &str) -> (Target, WebhookTool) {
    let (target, addr) = Target::start().await;
    let tool =
        WebhookTool::new(def(format!("http://allowed.test:{}{path}", addr.port())), guarded("allowed.test")).unwrap();
    (target, tool)
}

#[test]
fn defaults_from_json() {
    let def = def("https://hooks.example.com/deploy".into());
    assert_eq!(def.method, "POST");
    assert_eq!(def.timeout_ms, 30_000);
    assert_eq!(def.risk, RiskTier::P2);
    assert_eq!(def.tool_ref(), "webhook:deploy");
    assert_eq!(def.validate(), Ok(()));
    let debug = format!("{def:?}");
    assert!(!debug.contains(SECRET) && !debug.contains("static-value"), "{debug}");
}

#[tokio::test]
async fn arguments_arrive_as_json_body_with_secret_headers() {
    let (target, tool) = setup("/echo").await;
    let args = json!({"service": "api", "replicas": 3});
    let call = ctx();
    let output = tool.call(args.clone(), &call).await.unwrap();
    let seen = target.last();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.headers["idempotency-key"], call.call_id.to_string().as_str(), "the ledger call id");
    assert_eq!(seen.headers["authorization"], format!("Bearer {SECRET}").as_str());
    assert_eq!(seen.headers["x-static"], "static-value");
    assert_eq!(seen.headers["content-type"], "application/json");
    assert_eq!(serde_json::from_slice::<Value>(&seen.body).unwrap(), args);

    // The fake echoes every header it received; the secret must not reach the model or the ledger.
    assert!(!output.is_error);
    assert_eq!(output.data["status"], 200);
    assert_eq!(output.data["body"]["method"], "POST");
    assert_eq!(output.data["body"]["headers"]["authorization"], "<redacted>");
    let everything = format!("{} {}", output.content, output.data);
    assert!(!everything.contains(SECRET), "{everything}");
    assert!(!everything.contains("static-value"), "{everything}");
}

#[tokio::test]
async fn get_sends_arguments_as_query_string() {
    let (target, addr) = Target::start().await;
    let mut get = def(format!("http://allowed.test:{}/echo?fixed=1", addr.port()));
    get.method = "GET".into();
    let tool = WebhookTool::new(get, guarded("allowed.test")).unwrap();
    tool.call(json!({"service": "api v2", "replicas": 3, "tags": ["a"]}), &ctx()).await.unwrap();
    let seen = target.last();
    assert_eq!(seen.method, "GET");
    assert!(seen.body.is_empty());
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(seen.uri.query().unwrap().as_bytes()).into_owned().collect();
    let expected = [("fixed", "1"), ("replicas", "3"), ("service", "api v2"), ("tags", "[\"a\"]")];
    assert_eq!(query, expected.map(|(name, value)| (name.to_owned(), value.to_owned())));
    let error = tool.call(json!(["not", "an", "object"]), &ctx()).await.unwrap_err();
    assert_eq!(error.code(), "invalid_arguments");
}

#[tokio::test]
async fn non_2xx_is_an_error_result_with_status_and_body_excerpt() {
    let (_target, tool) = setup("/status/502").await;
    let output = tool.call(json!({"service": "api"}), &ctx()).await.unwrap();
    assert!(output.is_error);
    assert_eq!(output.data["status"], 502);
    assert_eq!(output.data["body"].as_str().unwrap().len(), 2048);
    assert_eq!(output.data["truncated"], true);
    assert!(output.content.starts_with("webhook `deploy` answered HTTP 502 Bad Gateway: eee"), "{}", output.content);
}

#[tokio::test]
async fn ssrf_guard_applies() {
    let tool = WebhookTool::new(def("http://10.0.0.1/hook?key=abc".into()), guarded("")).unwrap();
    let error = tool.call(json!({"service": "api"}), &ctx()).await.unwrap_err();
    assert_eq!(error.code(), "blocked_destination");
    assert_eq!(error.to_string(), "blocked destination http://10.0.0.1/hook: 10.0.0.1 is a private address");

    let (target, addr) = Target::start().await;
    let loopback = WebhookTool::new(def(format!("http://localhost:{}/echo", addr.port())), guarded("")).unwrap();
    let error = loopback.call(json!({"service": "api"}), &ctx()).await.unwrap_err();
    assert_eq!(error.code(), "blocked_destination");
    assert!(!error.to_string().contains(SECRET));
    assert!(target.seen().is_empty());
}

#[tokio::test]
async fn secrets_are_not_sent_to_another_origin_after_a_redirect() {
    let (target, addr) = Target::start().await;
    let port = addr.port();
    let url = format!("http://allowed.test:{port}/redirect?status=307&to=http://also-allowed.test:{port}/echo");
    let tool = WebhookTool::new(def(url), guarded("allowed.test,also-allowed.test")).unwrap();
    tool.call(json!({"service": "api"}), &ctx()).await.unwrap();
    let seen = target.last();
    assert_eq!(seen.method, "POST");
    assert!(!seen.headers.contains_key("authorization"));
    assert!(!seen.headers.contains_key("x-static"));
}

#[test]
fn risk_idempotency_and_metadata() {
    let mut definition = def("https://hooks.example.com/deploy".into());
    definition.risk = RiskTier::P1;
    let tool = WebhookTool::new(definition, guarded("")).unwrap();
    assert_eq!(tool.tool_ref(), "webhook:deploy");
    assert_eq!(tool.description(), "Deploys a service.");
    assert_eq!(tool.input_schema()["required"], json!(["service"]));
    assert_eq!(tool.default_risk(&json!({})), RiskTier::P1);
    assert!(!tool.is_idempotent(&json!({})), "not idempotent unless the operator says so");
    let mut declared = def("https://hooks.example.com/deploy".into());
    declared.idempotent = true;
    assert!(WebhookTool::new(declared, guarded("")).unwrap().is_idempotent(&json!({})));
    assert!(tool.sends_data_out(&json!({}), &Default::default()), "a webhook always hands data on");
}

/// One way to break a definition.
type Mutation = fn(&mut WebhookToolDef);

#[test]
fn invalid_definitions_are_rejected() {
    let valid = def("https://hooks.example.com/deploy".into());
    let cases: Vec<(Mutation, &str)> = vec![
        (|d| d.name = "Deploy".into(), "name must be 1–48 characters"),
        (|d| d.name = String::new(), "name must be"),
        (|d| d.name = "x".repeat(49), "name must be"),
        (|d| d.url = "ftp://hooks.example.com/".into(), "url must be an http:// or https:// URL"),
        (|d| d.url = "not a url".into(), "url: relative URL without a base"),
        (|d| d.input_schema = json!({"type": "string"}), "input_schema: the schema must have \"type\": \"object\""),
        (|d| d.timeout_ms = 0, "timeout_ms must be between 1 and 60000"),
        (|d| d.timeout_ms = 60_001, "timeout_ms must be between 1 and 60000"),
        (|d| d.method = "TRACE".into(), "method must be one of GET, POST, PUT, PATCH, DELETE"),
        (
            |d| d.headers = BTreeMap::from([("X-Key".into(), "line\nbreak".into())]),
            "headers: the value of header `x-key` is not valid",
        ),
        (
            |d| d.headers = BTreeMap::from([("Content-Length".into(), "1".into())]),
            "headers: the `content-length` header",
        ),
    ];
    for (mutate, fragment) in cases {
        let mut broken = valid.clone();
        mutate(&mut broken);
        let problem = broken.validate().unwrap_err();
        assert!(problem.contains(fragment), "expected `{fragment}` in `{problem}`");
        assert!(!problem.contains("line\nbreak"));
        assert_eq!(WebhookTool::new(broken, guarded("")).err(), Some(problem));
    }
    let mut many = valid;
    many.name = "BAD".into();
    many.timeout_ms = 0;
    assert_eq!(many.validate().unwrap_err().matches("; ").count(), 1, "all problems are reported");
    assert_eq!(def("https://x.example/".into()).validate(), Ok(()));
}
