//! `http_request` and the guarded client on the happy paths: methods, headers, bodies, redirects, caps,
//! timeouts and cancellation.

use std::sync::Arc;

use cortex_core::approval::RiskTier;
use cortex_tools::Tool;
use cortex_tools::builtin::HttpRequestTool;
use cortex_tools::http::{GuardedHttp, GuardedRequest, HttpLimits};
use cortex_tools::ssrf::SsrfPolicy;
use serde_json::{Value, json};

use crate::support::{FakeResolver, Target, ctx, guarded};

async fn setup() -> (Target, String, HttpRequestTool) {
    let (target, addr) = Target::start().await;
    let base = format!("http://allowed.test:{}", addr.port());
    (target, base, HttpRequestTool::new(guarded("allowed.test")))
}

#[tokio::test]
async fn get_returns_status_allowed_headers_and_text_body() {
    let (target, base, tool) = setup().await;
    let output = tool
        .call(json!({"url": format!("{base}/headers"), "headers": {"Accept": "text/plain"}}), &ctx())
        .await
        .unwrap();
    assert!(!output.is_error);
    assert_eq!(output.data["status"], 200);
    assert_eq!(output.data["body"], "hello");
    assert_eq!(output.data["truncated"], false);
    let headers = output.data["headers"].as_object().unwrap();
    assert_eq!(headers["content-type"], "text/plain; charset=utf-8");
    assert_eq!(headers["etag"], "\"v1\"");
    assert!(!headers.contains_key("set-cookie") && !headers.contains_key("server"), "{headers:?}");
    assert!(output.content.starts_with("HTTP 200 OK\n"), "{}", output.content);
    assert!(output.content.ends_with("\n\nhello"));
    assert!(!output.content.contains("session=secret"));
    assert!(target.seen().is_empty(), "/headers does not record");
}

#[tokio::test]
async fn get_and_head_arrive_as_sent() {
    let (target, base, tool) = setup().await;
    tool.call(json!({"url": format!("{base}/echo?a=1&b=two"), "headers": {"X-Trace": "abc"}}), &ctx()).await.unwrap();
    let seen = target.last();
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.uri.query(), Some("a=1&b=two"));
    assert_eq!(seen.headers["x-trace"], "abc");
    assert_eq!(seen.headers["host"], base.trim_start_matches("http://"));

    let output = tool.call(json!({"url": format!("{base}/echo"), "method": "head"}), &ctx()).await.unwrap();
    assert_eq!(target.last().method, "HEAD");
    assert_eq!(output.data["status"], 200);
    assert_eq!(output.data["body"], "");
}

#[tokio::test]
async fn post_sends_json_body_and_headers() {
    let (target, base, tool) = setup().await;
    let payload = json!({"name": "cortex", "n": [1, 2]});
    let output = tool
        .call(json!({"url": format!("{base}/echo"), "method": "POST", "headers": {"X-Api-Version": "7"}, "body": payload}), &ctx())
        .await
        .unwrap();
    let seen = target.last();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.headers["content-type"], "application/json");
    assert_eq!(seen.headers["x-api-version"], "7");
    assert_eq!(serde_json::from_slice::<Value>(&seen.body).unwrap(), payload);
    let echoed: Value = serde_json::from_str(output.data["body"].as_str().unwrap()).unwrap();
    assert_eq!(echoed["method"], "POST");
}

#[tokio::test]
async fn string_bodies_are_sent_verbatim_with_their_content_type() {
    let (target, base, tool) = setup().await;
    tool.call(
        json!({"url": format!("{base}/echo"), "method": "PUT", "headers": {"Content-Type": "text/csv"}, "body": "a,b\n1,2"}),
        &ctx(),
    )
    .await
    .unwrap();
    let seen = target.last();
    assert_eq!(seen.method, "PUT");
    assert_eq!(seen.headers["content-type"], "text/csv");
    assert_eq!(&seen.body[..], b"a,b\n1,2");
}

#[tokio::test]
async fn redirect_chains_of_five_are_followed_and_a_sixth_is_refused() {
    let (_target, base, tool) = setup().await;
    let output = tool.call(json!({"url": format!("{base}/hops/5")}), &ctx()).await.unwrap();
    assert_eq!(output.data["body"], "arrived");
    assert_eq!(output.data["url"], format!("{base}/hops/0"));
    let error = tool.call(json!({"url": format!("{base}/hops/6")}), &ctx()).await.unwrap_err();
    assert_eq!(error.code(), "tool_failed");
    assert!(error.to_string().contains("stopped after 5 redirects"), "{error}");
}

#[tokio::test]
async fn see_other_turns_post_into_get_and_307_repeats_it() {
    let (target, base, tool) = setup().await;
    for (status, method, body) in [(303, "GET", ""), (307, "POST", "{\"x\":1}")] {
        let url = format!("{base}/redirect?status={status}&to=/echo");
        tool.call(json!({"url": url, "method": "POST", "body": {"x": 1}}), &ctx()).await.unwrap();
        let seen = target.last();
        assert_eq!(seen.method, method, "after {status}");
        assert_eq!(String::from_utf8_lossy(&seen.body), body, "after {status}");
        assert_eq!(seen.headers.contains_key("content-type"), status == 307);
    }
}

#[tokio::test]
async fn credentials_are_dropped_when_a_redirect_leaves_the_origin() {
    let (target, addr) = Target::start().await;
    let tool = HttpRequestTool::new(guarded("allowed.test,also-allowed.test"));
    let port = addr.port();
    let headers = json!({"Authorization": "Bearer model-token", "X-Keep": "yes"});
    let same = format!("http://allowed.test:{port}/redirect?to=/echo");
    tool.call(json!({"url": same, "headers": headers}), &ctx()).await.unwrap();
    assert_eq!(target.last().headers["authorization"], "Bearer model-token");
    let cross = format!("http://allowed.test:{port}/redirect?to=http://also-allowed.test:{port}/echo");
    tool.call(json!({"url": cross, "headers": headers}), &ctx()).await.unwrap();
    let seen = target.last();
    assert!(!seen.headers.contains_key("authorization"));
    assert_eq!(seen.headers["x-keep"], "yes");
}

#[tokio::test]
async fn bodies_are_capped_at_one_mebibyte() {
    let (_target, base, tool) = setup().await;
    let output = tool.call(json!({"url": format!("{base}/big")}), &ctx()).await.unwrap();
    assert_eq!(output.data["truncated"], true);
    assert_eq!(output.data["body"].as_str().unwrap().len(), 1024 * 1024);
    assert!(output.content.ends_with("[body truncated at 1048576 bytes]"));
}

#[tokio::test]
async fn custom_cap_applies_to_the_guarded_client() {
    let (_target, addr) = Target::start().await;
    crate::support::init();
    let limits = HttpLimits { body_cap: 10, ..HttpLimits::default() };
    let http =
        GuardedHttp::with_limits(SsrfPolicy::parse("127.0.0.1/32").unwrap(), Arc::new(FakeResolver::new()), limits)
            .unwrap();
    let url = url::Url::parse(&format!("http://{addr}/big")).unwrap();
    let response = http.send(GuardedRequest::new(reqwest::Method::GET, url)).await.unwrap();
    assert!(response.truncated);
    assert_eq!(&response.body[..], b"aaaaaaaaaa");
}

#[tokio::test]
async fn binary_bodies_are_summarised() {
    let (_target, base, tool) = setup().await;
    let output = tool.call(json!({"url": format!("{base}/binary")}), &ctx()).await.unwrap();
    assert_eq!(output.data["body"], Value::Null);
    assert_eq!(output.data["binary"], json!({"size": 8, "content_type": "image/png"}));
    assert!(output.content.ends_with("[binary body omitted: 8 bytes of image/png]"));
}

#[tokio::test]
async fn slow_servers_time_out() {
    let (_target, base, tool) = setup().await;
    let error = tool.call(json!({"url": format!("{base}/hang"), "timeout_ms": 200}), &ctx()).await.unwrap_err();
    assert_eq!(error.code(), "timeout");
}

#[tokio::test]
async fn cancellation_stops_the_call() {
    let (target, base, tool) = setup().await;
    let ctx = ctx();
    let cancel = ctx.cancel.clone();
    let hanging = Arc::clone(&target.hanging);
    tokio::spawn(async move {
        hanging.notified().await;
        cancel.cancel();
    });
    let error = tool.call(json!({"url": format!("{base}/hang")}), &ctx).await.unwrap_err();
    assert_eq!(error.code(), "cancelled");
}

#[tokio::test]
async fn bad_arguments_are_refused_before_sending() {
    let (target, base, tool) = setup().await;
    let url = format!("{base}/echo");
    for (input, fragment) in [
        (json!({"url": url, "method": "TRACE"}), "method must be one of"),
        (json!({"url": url, "timeout_ms": 30_001}), "timeout_ms must be between 1 and 30000"),
        (json!({"url": url, "timeout_ms": 0}), "timeout_ms must be between"),
        (json!({"url": url, "verb": "GET"}), "unknown field `verb`"),
        (json!({"url": "not a url"}), "url: relative URL without a base"),
        (json!({"url": url, "headers": {"Host": "internal"}}), "the `host` header is set by the client"),
        (json!({"url": url, "headers": {"X-Bad": "a\nb"}}), "the value of header `x-bad` is not valid"),
        (json!({"url": url, "headers": {"Bad Name": "x"}}), "`Bad Name` is not a valid header name"),
        (json!({}), "missing field `url`"),
    ] {
        let error = tool.call(input.clone(), &ctx()).await.unwrap_err();
        assert_eq!(error.code(), "invalid_arguments", "{input}: {error}");
        assert!(error.to_string().contains(fragment), "{input}: {error}");
    }
    assert!(target.seen().is_empty());
}

#[test]
fn risk_and_idempotency_follow_the_method() {
    let tool = HttpRequestTool::new(guarded(""));
    for (input, risk, idempotent) in [
        (json!({"url": "https://x"}), RiskTier::P3, true),
        (json!({"url": "https://x", "method": "GET"}), RiskTier::P3, true),
        (json!({"url": "https://x", "method": "head"}), RiskTier::P3, true),
        (json!({"url": "https://x", "method": "POST"}), RiskTier::P2, false),
        (json!({"url": "https://x", "method": "DELETE"}), RiskTier::P2, false),
        (json!({"url": "https://x", "method": "BOGUS"}), RiskTier::P2, false),
        (json!({"url": "https://x", "method": 5}), RiskTier::P2, false),
    ] {
        assert_eq!(tool.default_risk(&input), risk, "{input}");
        assert_eq!(tool.is_idempotent(&input), idempotent, "{input}");
    }
    assert_eq!(tool.tool_ref(), "http_request");
    assert_eq!(tool.input_schema()["required"], json!(["url"]));
}

#[test]
fn any_method_to_a_host_off_the_egress_allow_list_sends_data_out() {
    let tool = HttpRequestTool::new(guarded(""));
    let scope = cortex_tools::DataScope { allowed_hosts: vec!["docs.example.com".into()], ..Default::default() };
    for (input, leaves) in [
        (json!({"url": "https://attacker.example/?q=secret"}), true),
        (json!({"url": "https://attacker.example/", "method": "HEAD"}), true),
        (json!({"url": "https://docs.example.com/page"}), false),
        (json!({"url": "https://docs.example.com/form", "method": "POST"}), false),
        (json!({"url": "not a url"}), true),
        (json!({}), true),
    ] {
        assert_eq!(tool.sends_data_out(&input, &scope), leaves, "{input}");
    }
    assert!(tool.sends_data_out(&json!({"url": "https://docs.example.com/"}), &Default::default()));
}
