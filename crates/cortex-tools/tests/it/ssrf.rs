//! The SSRF guard end to end: every refused destination, directly and as a redirect target.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cortex_tools::builtin::HttpRequestTool;
use cortex_tools::http::GuardedHttp;
use cortex_tools::ssrf::{Resolver, SsrfPolicy};
use cortex_tools::{Tool, ToolError};
use serde_json::json;

use crate::support::{Target, ctx, ctx_with_hosts, guarded, init};

/// Destinations that must be refused, with a fragment of the reason naming the rule.
const REFUSED: &[(&str, &str)] = &[
    ("http://127.0.0.1/", "127.0.0.1 is a loopback address"),
    ("http://10.0.0.1/", "10.0.0.1 is a private address"),
    ("http://172.16.0.1/", "172.16.0.1 is a private address"),
    ("http://192.168.1.1/", "192.168.1.1 is a private address"),
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is the cloud metadata endpoint"),
    ("http://100.64.0.1/", "100.64.0.1 is a carrier-grade NAT address"),
    ("http://0.0.0.0/", "0.0.0.0 is an unspecified"),
    ("http://[::1]/", "::1 is a loopback address"),
    ("http://[::ffff:127.0.0.1]/", "IPv4-mapped 127.0.0.1, a loopback address"),
    ("http://[fe80::1]/", "fe80::1 is a link-local address"),
    ("http://[::127.0.0.1]/", "::7f00:1 embeds 127.0.0.1, a loopback address"),
    ("http://localhost/", "localhost is a loopback name"),
    ("http://foo.localhost/", "foo.localhost is a loopback name"),
    ("http://metadata.google.internal/computeMetadata/v1/", "metadata.google.internal is the cloud metadata endpoint"),
    ("http://2130706433/", "127.0.0.1 is a loopback address"),
    ("http://0x7f.1/", "127.0.0.1 is a loopback address"),
    ("http://0x7f000001/", "127.0.0.1 is a loopback address"),
    ("http://017700000001/", "127.0.0.1 is a loopback address"),
    ("http://loopback.test/", "loopback.test resolves to a blocked address: 127.0.0.1 is a loopback address"),
    ("http://v6-loopback.test/", "v6-loopback.test resolves to a blocked address: ::1 is a loopback address"),
    ("http://metadata.test/", "resolves to a blocked address: 169.254.169.254"),
    ("http://mixed.test/", "mixed.test resolves to a blocked address: 10.0.0.1 is a private address"),
    ("file:///etc/passwd", "the `file` scheme is not allowed"),
    ("ftp://example.com/file", "the `ftp` scheme is not allowed"),
];

async fn expect_blocked(tool: &HttpRequestTool, url: &str, reason: &str) {
    let error = tool.call(json!({"url": url}), &ctx()).await.expect_err(url);
    assert_eq!(error.code(), "blocked_destination", "{url}: {error}");
    let ToolError::BlockedDestination { reason: actual, .. } = &error else { unreachable!() };
    assert!(actual.contains(reason), "{url}: expected `{reason}` in `{actual}`");
}

#[tokio::test]
async fn refuses_every_non_public_destination() {
    let tool = HttpRequestTool::new(guarded(""));
    for (url, reason) in REFUSED {
        expect_blocked(&tool, url, reason).await;
    }
}

#[tokio::test]
async fn refuses_every_non_public_redirect_target() {
    let (target, addr) = Target::start().await;
    let tool = HttpRequestTool::new(guarded("allowed.test"));
    let port = addr.port();
    let mut targets: Vec<(String, String)> =
        REFUSED.iter().map(|(url, reason)| ((*url).to_owned(), (*reason).to_owned())).collect();
    // The target server itself, by address: allowed only under its allow-listed name.
    targets.push((format!("http://127.0.0.1:{port}/echo"), "127.0.0.1 is a loopback address".into()));
    targets.push((format!("http://localhost:{port}/echo"), "localhost is a loopback name".into()));
    for (to, reason) in targets {
        for status in [302, 307] {
            let mut location = url::Url::parse(&format!("http://allowed.test:{port}/redirect")).unwrap();
            location.query_pairs_mut().append_pair("to", &to).append_pair("status", &status.to_string());
            expect_blocked(&tool, location.as_str(), &reason).await;
        }
    }
    assert!(target.seen().is_empty(), "no refused hop may reach the server");
}

#[tokio::test]
async fn blocked_error_shows_the_url_without_secrets() {
    let tool = HttpRequestTool::new(guarded(""));
    let error = tool.call(json!({"url": "http://user:pw@10.0.0.1/x?token=abc#frag"}), &ctx()).await.unwrap_err();
    assert_eq!(
        error,
        ToolError::BlockedDestination {
            url: "http://10.0.0.1/x".into(),
            reason: "10.0.0.1 is a private address".into()
        }
    );
    assert_eq!(error.to_string(), "blocked destination http://10.0.0.1/x: 10.0.0.1 is a private address");
}

#[tokio::test]
async fn cidr_allow_rule_reaches_loopback_server() {
    let (target, addr) = Target::start().await;
    let tool = HttpRequestTool::new(guarded("127.0.0.1/32"));
    let output = tool.call(json!({"url": format!("http://{addr}/echo")}), &ctx()).await.unwrap();
    assert_eq!(output.data["status"], 200);
    assert_eq!(target.last().method, "GET");
    // An exception for one address does not open its neighbours or names.
    expect_blocked(&tool, "http://127.0.0.2/", "127.0.0.2 is a loopback address").await;
    expect_blocked(&tool, &format!("http://localhost:{}/echo", addr.port()), "loopback name").await;
}

#[tokio::test]
async fn data_scope_hosts_are_exceptions_for_that_call_only() {
    let (target, addr) = Target::start().await;
    let tool = HttpRequestTool::new(guarded(""));
    let url = format!("http://allowed.test:{}/echo", addr.port());
    let output = tool.call(json!({"url": url}), &ctx_with_hosts(&["allowed.test"])).await.unwrap();
    assert_eq!(output.data["status"], 200);
    assert_eq!(target.seen().len(), 1);
    expect_blocked(&tool, &url, "allowed.test resolves to a blocked address: 127.0.0.1 is a loopback address").await;
    assert_eq!(target.seen().len(), 1);
}

#[tokio::test]
async fn unresolvable_name_is_a_clear_failure() {
    let tool = HttpRequestTool::new(guarded(""));
    let error = tool.call(json!({"url": "http://nowhere.test/"}), &ctx()).await.unwrap_err();
    assert_eq!(error.code(), "tool_failed");
    assert!(error.to_string().contains("could not resolve nowhere.test"), "{error}");
}

/// Answers loopback the first time and a private address afterwards, like a rebinding attacker's DNS.
#[derive(Default)]
struct RebindingResolver {
    calls: AtomicUsize,
}

#[async_trait::async_trait]
impl Resolver for RebindingResolver {
    async fn lookup(&self, _host: &str) -> std::io::Result<Vec<IpAddr>> {
        let first = self.calls.fetch_add(1, Ordering::SeqCst) == 0;
        Ok(vec![if first { [127, 0, 0, 1].into() } else { [10, 0, 0, 1].into() }])
    }
}

#[tokio::test]
async fn the_vetted_answer_is_the_one_connected_to() {
    init();
    let (target, addr) = Target::start().await;
    let resolver = Arc::new(RebindingResolver::default());
    let http = GuardedHttp::new(SsrfPolicy::parse("127.0.0.1/32").unwrap(), resolver.clone()).unwrap();
    let tool = HttpRequestTool::new(Arc::new(http));
    let output = tool.call(json!({"url": format!("http://rebind.test:{}/echo", addr.port())}), &ctx()).await.unwrap();
    assert_eq!(output.data["status"], 200);
    assert_eq!(target.seen().len(), 1);
    assert_eq!(resolver.calls.load(Ordering::SeqCst), 1, "resolved once, vetted, and pinned");
}
