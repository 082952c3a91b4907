//! Failure behaviour shared by both styles, each test run against both: HTTP error statuses, garbled and
//! cut streams, stalls and unreachable servers. Every failure must be a classified error, never a panic.

use std::time::Duration;

use cortex_core::job::ErrorClass;
use cortex_llm::{ApiStyle, LlmError};
use serde_json::json;

use crate::fake::{End, FakeServer, Reply};
use crate::{KEY, STYLES, call, open_text_stream, provider, provider_with_timeouts, request, streamed_text};

/// Runs one streaming call of `style` against a fake answering `reply`.
async fn fail_with(style: ApiStyle, reply: Reply) -> (LlmError, Vec<cortex_llm::StreamEvent>) {
    let server = FakeServer::start().await;
    server.push(reply);
    let provider = provider(style, &server);
    let (result, events) = call(provider.as_ref(), &request(true)).await;
    (result.unwrap_err(), events)
}

/// Runs one call of `style` against a fake that stalls, with the given limits.
async fn stall_with(style: ApiStyle, reply: Reply, stream: bool, idle: Duration, total: Duration) -> LlmError {
    let server = FakeServer::start().await;
    server.push(reply);
    let provider = provider_with_timeouts(style, &server, idle, total);
    call(provider.as_ref(), &request(stream)).await.0.unwrap_err()
}

fn error_body(style: ApiStyle, kind: &str, message: &str) -> serde_json::Value {
    match style {
        ApiStyle::OpenAi => {
            json!({"error": {"message": message, "type": kind, "code": kind, "param": null}})
        }
        ApiStyle::Anthropic => {
            json!({"type": "error", "error": {"type": kind, "message": message}})
        }
    }
}

#[tokio::test]
async fn rate_limit_429_with_retry_after_seconds_is_transient() {
    for style in STYLES {
        let reply = Reply::Full {
            status: 429,
            headers: vec![("retry-after", "7".into()), ("content-type", "application/json".into())],
            body: error_body(style, "rate_limit_error", "Rate limit reached").to_string(),
        };
        let (err, _) = fail_with(style, reply).await;
        assert_eq!((err.class(), err.code()), (ErrorClass::Transient, "rate_limit"), "{style}");
        assert_eq!(err.retry_after(), Some(Duration::from_secs(7)), "{style}");
        assert!(err.to_string().contains("Rate limit reached"), "{style}: {err}");
        assert_eq!(err.to_job_error().retry_after_seconds, Some(7));
    }
}

#[tokio::test]
async fn retry_after_as_an_http_date_is_understood() {
    let at = chrono::Utc::now() + chrono::Duration::seconds(120);
    for style in STYLES {
        let reply = Reply::Full {
            status: 429,
            headers: vec![("Retry-After", at.format("%a, %d %b %Y %H:%M:%S GMT").to_string())],
            body: String::new(),
        };
        let (err, _) = fail_with(style, reply).await;
        let wait = err.retry_after().unwrap();
        assert!(wait > Duration::from_secs(100) && wait <= Duration::from_secs(120), "{style}: {wait:?}");
    }
}

#[tokio::test]
async fn quota_exhaustion_is_a_resource_error() {
    let (err, _) = fail_with(
        ApiStyle::OpenAi,
        Reply::json(429, error_body(ApiStyle::OpenAi, "insufficient_quota", "You exceeded your current quota")),
    )
    .await;
    assert_eq!((err.class(), err.code()), (ErrorClass::Resource, "quota_exceeded"));
}

#[tokio::test]
async fn server_errors_are_transient() {
    for style in STYLES {
        for status in [500, 502, 503, 529] {
            let (err, _) =
                fail_with(style, Reply::json(status, error_body(style, "api_error", "Internal error"))).await;
            assert_eq!(err.class(), ErrorClass::Transient, "{style} {status}");
            assert!(err.to_string().contains("Internal error"), "{style} {status}: {err}");
        }
    }
}

#[tokio::test]
async fn auth_failures_never_echo_the_key() {
    for style in STYLES {
        for status in [401, 403] {
            let message = format!("Incorrect API key provided: {KEY}");
            let (err, _) =
                fail_with(style, Reply::json(status, error_body(style, "authentication_error", &message))).await;
            assert_eq!(
                err,
                LlmError::Auth { status, message: "Incorrect API key provided: [redacted]".into() },
                "{style}"
            );
            assert!(!format!("{err} {err:?} {:?}", err.to_job_error()).contains(KEY));
        }
    }
}

#[tokio::test]
async fn bad_requests_are_permanent_and_missing_models_are_unavailable() {
    for style in STYLES {
        let (err, _) =
            fail_with(style, Reply::json(400, error_body(style, "invalid_request_error", "max_tokens: too large")))
                .await;
        assert_eq!((err.class(), err.code()), (ErrorClass::Permanent, "bad_request"), "{style}");
        assert!(matches!(err, LlmError::Rejected { status: 400, .. }));
        assert!(err.to_string().contains("max_tokens: too large"));

        let (err, _) = fail_with(style, Reply::json(404, error_body(style, "not_found_error", "model: nope"))).await;
        assert_eq!((err.class(), err.code()), (ErrorClass::Permanent, "model_unavailable"), "{style}");

        let (err, _) = fail_with(style, Reply::json(422, json!({"detail": "unprocessable"}))).await;
        assert_eq!((err.class(), err.code()), (ErrorClass::Permanent, "bad_request"), "{style}");
    }
}

#[tokio::test]
async fn garbage_json_in_a_data_line_is_a_malformed_stream() {
    for style in STYLES {
        let mut body = open_text_stream(style, &["ok so far"]);
        body.extend_from_slice(
            b"event: content_block_delta\ndata: {\"type\": \"content_block_delta\", \"delta\": {tru\n\n",
        );
        let (err, events) = fail_with(style, Reply::stream(body)).await;
        assert_eq!((err.class(), err.code()), (ErrorClass::Transient, "malformed_response"), "{style}: {err}");
        assert_eq!(streamed_text(&events), "ok so far");
    }
}

#[tokio::test]
async fn invalid_utf8_in_the_stream_is_malformed() {
    for style in STYLES {
        let mut body = open_text_stream(style, &["x"]);
        body.extend_from_slice(b"data: \xff\xfe\n\n");
        let (err, _) = fail_with(style, Reply::stream(body)).await;
        assert_eq!(err.code(), "malformed_response", "{style}");
    }
}

#[tokio::test]
async fn a_connection_dropped_mid_stream_is_an_interrupted_stream() {
    for style in STYLES {
        let body = open_text_stream(style, &["Once upon", " a time"]);
        let (err, events) = fail_with(style, Reply::Stream { pieces: vec![body], end: End::Drop }).await;
        assert_eq!((err.class(), err.code()), (ErrorClass::Transient, "stream_interrupted"), "{style}: {err}");
        assert_eq!(streamed_text(&events), "Once upon a time", "deltas before the cut were forwarded");
    }
}

#[tokio::test]
async fn a_stream_closed_cleanly_but_early_is_an_interrupted_stream() {
    for style in STYLES {
        let body = open_text_stream(style, &["Once upon"]);
        let (err, _) = fail_with(style, Reply::Stream { pieces: vec![body], end: End::Close }).await;
        assert_eq!(err.code(), "stream_interrupted", "{style}");
    }
}

#[tokio::test]
async fn a_stalled_stream_hits_the_idle_timeout() {
    for style in STYLES {
        let body = open_text_stream(style, &["thinking"]);
        let stalled = Reply::Stream { pieces: vec![body], end: End::Stall };
        let err = stall_with(style, stalled, true, Duration::from_millis(200), Duration::from_secs(600)).await;
        assert_eq!((err.class(), err.code()), (ErrorClass::Timeout, "timeout"), "{style}: {err}");
        assert!(err.to_string().contains("no data"), "{style}: {err}");

        // Silence before the response head counts too.
        let err = stall_with(style, Reply::Stall, true, Duration::from_millis(200), Duration::from_secs(600)).await;
        assert!(err.to_string().contains("no data"), "{style}: {err}");
    }
}

#[tokio::test]
async fn a_non_streaming_call_is_bounded_by_the_total_timeout() {
    for style in STYLES {
        // Without streaming a server legitimately sends nothing until it is done, so only the total applies.
        let err = stall_with(style, Reply::Stall, false, Duration::from_millis(50), Duration::from_millis(300)).await;
        assert_eq!(err.class(), ErrorClass::Timeout, "{style}: {err}");
        assert!(err.to_string().contains("exceeded its 300 ms limit"), "{style}: {err}");
    }
}

/// A loopback address that refuses connections: a port bound without listening, held while the socket
/// lives. (A port bound and released can be taken at once by another test's fake server, which then
/// answers this test's request and loses its own.)
fn refused_address() -> (tokio::net::TcpSocket, std::net::SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(([127, 0, 0, 1], 0).into()).unwrap();
    let address = socket.local_addr().unwrap();
    (socket, address)
}

#[tokio::test]
async fn a_refused_connection_is_transient() {
    let (_held, address) = refused_address();
    let base_url = format!("http://{address}");
    for style in STYLES {
        let config = cortex_llm::ProviderConfig::new("gone", style, base_url.clone()).with_api_key(KEY);
        let provider = cortex_llm::build_provider(config, crate::http());
        let (result, _) = call(provider.as_ref(), &request(true)).await;
        let err = result.unwrap_err();
        assert_eq!((err.class(), err.code()), (ErrorClass::Transient, "connection"), "{style}: {err}");
        assert!(!err.to_string().contains(KEY));
    }
}

#[tokio::test]
async fn transport_errors_hide_credentials_in_the_url() {
    let (_held, address) = refused_address();
    let base_url = format!("http://user:hunter2@{address}/v1?api-key=hunter3");
    let config = cortex_llm::ProviderConfig::new("proxy", ApiStyle::OpenAi, base_url);
    let provider = cortex_llm::build_provider(config, crate::http());
    let (result, _) = call(provider.as_ref(), &request(true)).await;
    let message = result.unwrap_err().to_string();
    assert!(message.contains(&address.to_string()), "{message}");
    assert!(!message.contains("hunter2") && !message.contains("hunter3"), "{message}");
}

#[tokio::test]
async fn an_unusable_base_url_is_a_configuration_error() {
    for style in STYLES {
        let config = cortex_llm::ProviderConfig::new("broken", style, "not a url");
        let provider = cortex_llm::build_provider(config, crate::http());
        let (result, _) = call(provider.as_ref(), &request(false)).await;
        let err = result.unwrap_err();
        assert_eq!((err.class(), err.code()), (ErrorClass::Permanent, "invalid_provider_config"), "{style}");
    }
}

#[tokio::test]
async fn non_json_success_bodies_are_malformed() {
    for style in STYLES {
        let server = FakeServer::start().await;
        server.push(Reply::Full { status: 200, headers: vec![], body: "<html>proxy login</html>".into() });
        let provider = provider(style, &server);
        let (result, _) = call(provider.as_ref(), &request(false)).await;
        assert_eq!(result.unwrap_err().code(), "malformed_response", "{style}");
    }
}
