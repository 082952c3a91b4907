//! The listener's deadlines and cap (SPEC Appendix B, Connections), with short configured timeouts so
//! every wait is on a condition (an answer, an end of stream), never on a sleep; and oversized bodies
//! answered 413 without resetting a client that is still sending.

use std::time::Duration;

use cortex_api::ApiConfig;
use cortex_api::server::ConnectionLimits;
use cortex_testkit::{Engine, TestStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::app::TestApp;

/// Longest wait for something that must happen; reaching it fails the test with what was seen.
const PATIENCE: Duration = Duration::from_secs(30);

async fn app_with(limits: ConnectionLimits) -> TestApp {
    let unlimited = cortex_api::rate_limit::Limit::OFF;
    let config = ApiConfig { api_rate: unlimited, chat_rate: unlimited, connections: limits, ..ApiConfig::default() };
    TestApp::spawn_with(TestStore::new(Engine::Sqlite).await, config).await
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.base.trim_start_matches("http://")).await.unwrap()
}

/// Sends one keep-alive request and reads its whole answer (the status line and body of a small response).
async fn request(stream: &mut TcpStream, path: &str, key: Option<&str>) -> String {
    let auth = key.map(|key| format!("Authorization: Bearer {key}\r\n")).unwrap_or_default();
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\n{auth}\r\n").as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = async {
        loop {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed before the answer to {path} was complete: {answer:?}");
            answer.extend_from_slice(&chunk[..n]);
            if complete(&answer) {
                break;
            }
        }
    };
    tokio::time::timeout(PATIENCE, read).await.unwrap_or_else(|_| panic!("no answer to {path}"));
    String::from_utf8_lossy(&answer).into_owned()
}

/// A response with a `content-length` whose body has fully arrived.
fn complete(answer: &[u8]) -> bool {
    let text = String::from_utf8_lossy(answer);
    let Some((head, body)) = text.split_once("\r\n\r\n") else { return false };
    let length = head
        .lines()
        .find_map(|line| line.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
        .and_then(|value| value.parse::<usize>().ok())
        .unwrap_or(0);
    body.len() >= length
}

/// Waits until the server closes `stream` (end of stream or reset), failing after [`PATIENCE`].
async fn closed_by_server(stream: &mut TcpStream, what: &str) {
    let mut chunk = [0u8; 1024];
    let wait = async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    };
    tokio::time::timeout(PATIENCE, wait).await.unwrap_or_else(|_| panic!("the server kept {what} open"));
}

/// Reads everything until the server closes `stream`, failing after [`PATIENCE`].
async fn answer_then_close(stream: &mut TcpStream, what: &str) -> String {
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer))
        .await
        .unwrap_or_else(|_| panic!("the server kept {what} open"))
        .unwrap_or_else(|err| panic!("{what}: the answer was cut by {err}; read so far {answer:?}"));
    String::from_utf8_lossy(&answer).into_owned()
}

/// `answer` has `status`, the JSON envelope with `code`, and a request id.
fn assert_envelope(answer: &str, status: &str, code: &str) {
    assert!(answer.starts_with(&format!("HTTP/1.1 {status} ")), "{answer}");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no head: {answer}"));
    let head = head.to_ascii_lowercase();
    assert!(head.contains("\r\nx-request-id: ") && head.contains("\r\ncontent-type: application/json"), "{answer}");
    let envelope: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|err| panic!("{err}: {answer}"));
    assert_eq!(envelope["error"]["code"], code, "{answer}");
    assert!(envelope["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{answer}");
}

/// Requests hyper refuses before the app sees them still get the envelope and a request id, and a
/// client still sending oversized headers reads the answer instead of a reset.
#[tokio::test]
async fn errors_below_the_app_carry_the_envelope() {
    let app = app_with(ConnectionLimits::default()).await;
    let cases = [
        ("414", format!("GET /{} HTTP/1.1\r\nHost: test\r\n\r\n", "a".repeat(70_000))),
        ("431", format!("GET /healthz HTTP/1.1\r\nHost: test\r\nX-Big: {}\r\n\r\n", "b".repeat(600_000))),
        ("400", "GET /healthz HTTP/1.1\r\nHost: test\r\nBad Header: x\r\n\r\n".to_owned()),
        ("400", "GET /healthz HTTP/1.1\r\nHost: test\r\nX-Nul: a\0b\r\n\r\n".to_owned()),
    ];
    for (status, raw) in cases {
        let mut stream = connect(&app).await;
        tokio::time::timeout(PATIENCE, stream.write_all(raw.as_bytes()))
            .await
            .expect("the server stopped reading")
            .unwrap_or_else(|err| {
                panic!("{status}: the server reset the connection while the request was sent: {err}")
            });
        let answer = answer_then_close(&mut stream, &format!("a refused request ({status})")).await;
        assert_envelope(&answer, status, "bad_request");
    }
    // The server is unharmed: a proper request on a new connection is served.
    let mut fine = connect(&app).await;
    assert!(request(&mut fine, "/healthz", None).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let app =
        app_with(ConnectionLimits { idle_timeout: Duration::from_millis(300), ..ConnectionLimits::default() }).await;
    let mut silent = connect(&app).await;
    let mut served = connect(&app).await;
    assert!(request(&mut served, "/healthz", None).await.starts_with("HTTP/1.1 200"));
    closed_by_server(&mut silent, "a connection that never sent anything").await;
    closed_by_server(&mut served, "an idle keep-alive connection").await;
}

#[tokio::test]
async fn slow_headers_are_cut_off_while_healthz_answers() {
    let app =
        app_with(ConnectionLimits { header_timeout: Duration::from_millis(300), ..ConnectionLimits::default() }).await;
    let mut slow = connect(&app).await;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Slow: ").await.unwrap();
    let mut probe = connect(&app).await;
    assert!(request(&mut probe, "/healthz", None).await.starts_with("HTTP/1.1 200"));
    let answer = answer_then_close(&mut slow, "a client that never finished its headers").await;
    assert_envelope(&answer, "408", "bad_request");
    let mut after = connect(&app).await;
    assert!(request(&mut after, "/healthz", None).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn the_connection_cap_holds_and_leaves_room_for_probes() {
    let app = app_with(ConnectionLimits { max_connections: 2, ..ConnectionLimits::default() }).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = connect(&app).await;
        let answer = request(&mut stream, "/agents", Some(&app.admin)).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        held.push(stream);
    }
    // Beyond the cap: ordinary routes are refused with the envelope and the connection is closed…
    let mut refused = connect(&app).await;
    let answer = request(&mut refused, "/agents", Some(&app.admin)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("\"unavailable\"") && answer.to_ascii_lowercase().contains("x-request-id"), "{answer}");
    closed_by_server(&mut refused, "a refused connection beyond the cap").await;
    // …while the reserve still answers probes.
    for _ in 0..ConnectionLimits::OPS_RESERVE {
        let mut probe = connect(&app).await;
        assert!(request(&mut probe, "/healthz", None).await.starts_with("HTTP/1.1 200"));
        held.push(probe);
    }
    // Every slot is taken: the next client is not served until one leaves.
    let mut waiting = connect(&app).await;
    waiting.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n").await.unwrap();
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(300), waiting.peek(&mut byte)).await;
    assert!(early.is_err(), "a connection beyond the cap and the reserve was served");
    drop(held.remove(0));
    let mut answer = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        while !complete(&answer) {
            let n = waiting.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed without an answer");
            answer.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(PATIENCE, read).await.expect("the waiting client was never served after a slot freed");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn an_oversized_body_is_answered_not_reset() {
    let app = app_with(ConnectionLimits::default()).await;
    // A client that sends its whole body before reading, far more than socket buffers hold: a server
    // that answered without reading the body would close on unread data and reset this writer.
    let body = vec![b'x'; 12 * 1024 * 1024];
    let mut stream = connect(&app).await;
    let head = format!(
        "POST /agents HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        app.admin,
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    tokio::time::timeout(PATIENCE, stream.write_all(&body))
        .await
        .expect("the server stopped reading the body")
        .expect("the server reset the connection while the body was being sent");
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer))
        .await
        .expect("no answer")
        .expect("the answer was cut by a reset");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains("\"payload_too_large\"") && answer.to_ascii_lowercase().contains("x-request-id"),
        "{answer}"
    );
}
