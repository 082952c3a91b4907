//! Shared fixtures: the fake resolver, a recording target server, contexts and clients.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{any, get};
use cortex_tools::http::GuardedHttp;
use cortex_tools::ssrf::{Resolver, SsrfPolicy};
use cortex_tools::{DataScope, ToolContext};
use serde_json::{Value, json};
use tokio::sync::Notify;
use uuid::Uuid;

/// Installs the ring provider reqwest needs; harmless when already installed.
pub fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Test names and the addresses they "resolve" to. `allowed.test` points at the loopback target server.
pub struct FakeResolver(HashMap<&'static str, Vec<IpAddr>>);

impl FakeResolver {
    pub fn new() -> Self {
        let table = [
            ("allowed.test", vec!["127.0.0.1"]),
            ("also-allowed.test", vec!["127.0.0.1"]),
            ("loopback.test", vec!["127.0.0.1"]),
            ("private.test", vec!["10.0.0.1"]),
            ("metadata.test", vec!["169.254.169.254"]),
            ("v6-loopback.test", vec!["::1"]),
            ("mixed.test", vec!["93.184.216.34", "10.0.0.1"]),
        ];
        Self(
            table
                .into_iter()
                .map(|(name, addrs)| (name, addrs.iter().map(|addr| addr.parse().unwrap()).collect()))
                .collect(),
        )
    }
}

#[async_trait::async_trait]
impl Resolver for FakeResolver {
    async fn lookup(&self, host: &str) -> std::io::Result<Vec<IpAddr>> {
        self.0.get(host).cloned().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, format!("{host} is not in the test table"))
        })
    }
}

/// A guarded client with `allow` as `CORTEX_SSRF_ALLOW` and the fake resolver.
pub fn guarded(allow: &str) -> Arc<GuardedHttp> {
    init();
    Arc::new(GuardedHttp::new(SsrfPolicy::parse(allow).unwrap(), Arc::new(FakeResolver::new())).unwrap())
}

pub fn ctx() -> ToolContext {
    ToolContext::new(Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7(), DataScope::default())
}

pub fn ctx_with_hosts(hosts: &[&str]) -> ToolContext {
    let scope =
        DataScope { allowed_hosts: hosts.iter().map(|host| (*host).to_owned()).collect(), ..DataScope::default() };
    ToolContext::new(Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7(), scope)
}

/// Serves `router` on 127.0.0.1 and returns its address.
pub async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// A request as the target server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// The target server: records requests to `/echo`, redirects, hangs, and serves odd bodies.
#[derive(Clone, Default)]
pub struct Target {
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Notified when `/hang` has received a request.
    pub hanging: Arc<Notify>,
}

impl Target {
    pub async fn start() -> (Self, SocketAddr) {
        let target = Self::default();
        let router = Router::new()
            .route("/echo", any(echo))
            .route("/redirect", any(redirect))
            .route("/hops/{n}", any(hops))
            .route("/big", get(|| async { "a".repeat(2 * 1024 * 1024) }))
            .route(
                "/binary",
                get(|| async { ([(header::CONTENT_TYPE, "image/png")], vec![0x89u8, b'P', b'N', b'G', 0, 1, 2, 3]) }),
            )
            .route("/status/{code}", any(status))
            .route("/headers", get(extra_headers))
            .route("/hang", get(hang))
            .with_state(target.clone());
        let addr = serve(router).await;
        (target, addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Seen {
        self.seen().pop().expect("the target saw no request")
    }
}

/// Records the request and answers with what it saw, including every header.
async fn echo(State(target): State<Target>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let header_map: serde_json::Map<String, Value> = headers
        .iter()
        .map(|(name, value)| (name.to_string(), Value::from(value.to_str().unwrap_or_default())))
        .collect();
    let reply = json!({
        "method": method.as_str(),
        "path": uri.path(),
        "query": uri.query(),
        "headers": header_map,
        "body": String::from_utf8_lossy(&body),
    });
    target.seen.lock().unwrap().push(Seen { method, uri, headers, body });
    axum::Json(reply).into_response()
}

/// `/redirect?to=URL&status=302`
async fn redirect(Query(params): Query<HashMap<String, String>>) -> Response {
    let status = params.get("status").map_or(302, |code| code.parse().unwrap());
    let location = params["to"].clone();
    (StatusCode::from_u16(status).unwrap(), [(header::LOCATION, location)]).into_response()
}

/// `/hops/{n}` redirects (relatively) to `/hops/{n-1}` until 0.
async fn hops(Path(n): Path<u32>) -> Response {
    if n == 0 { "arrived".into_response() } else { Redirect::to(&format!("/hops/{}", n - 1)).into_response() }
}

/// `/status/{code}` answers that status with a 3000-byte body.
async fn status(Path(code): Path<u16>) -> Response {
    (StatusCode::from_u16(code).unwrap(), "e".repeat(3000)).into_response()
}

async fn extra_headers() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::ETAG, "\"v1\""),
            (header::SET_COOKIE, "session=secret"),
            (header::SERVER, "internal-build-42"),
        ],
        "hello",
    )
        .into_response()
}

async fn hang(State(target): State<Target>) -> Response {
    target.hanging.notify_one();
    std::future::pending::<Response>().await
}
