//! OTLP trace export (SPEC §16.5): a real `cortex serve` sends its HTTP request spans to a fake collector,
//! and flushes them on graceful shutdown; bad exporter settings are configuration errors.

use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;
use tokio::sync::mpsc;

use crate::process::{Server, cortex, http};

const KEY: &str = "ctx_OtelTest_k3J9xQ2mV8pL5rT1wZ7nB4cF6hD0gY2sQ8wE";

/// One exported span, flattened with the service name of its resource.
#[derive(Debug)]
struct Received {
    service: Option<String>,
    name: String,
    path: Option<String>,
}

/// A loopback OTLP/HTTP collector: every accepted `POST /v1/traces` is decoded and its spans are sent to
/// the returned channel (a body that is not protobuf fails the test through the channel, not a log line).
async fn collector() -> (String, mpsc::UnboundedReceiver<Result<Vec<Received>, String>>) {
    let (sender, receiver) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let sender = sender.clone();
            async move {
                let decoded = decode(&headers, &body);
                let status = if decoded.is_ok() { StatusCode::OK } else { StatusCode::BAD_REQUEST };
                let _ = sender.send(decoded);
                (
                    status,
                    [(header::CONTENT_TYPE, "application/x-protobuf")],
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, receiver)
}

fn decode(headers: &HeaderMap, body: &[u8]) -> Result<Vec<Received>, String> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok());
    if content_type != Some("application/x-protobuf") {
        return Err(format!("unexpected content-type {content_type:?}"));
    }
    let request = ExportTraceServiceRequest::decode(body).map_err(|err| format!("not OTLP protobuf: {err}"))?;
    let mut spans = Vec::new();
    for resource_spans in request.resource_spans {
        let service =
            resource_spans.resource.as_ref().and_then(|resource| string(&resource.attributes, "service.name"));
        for scope_spans in resource_spans.scope_spans {
            for span in scope_spans.spans {
                spans.push(Received {
                    service: service.clone(),
                    path: string(&span.attributes, "path"),
                    name: span.name,
                });
            }
        }
    }
    Ok(spans)
}

fn string(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes.iter().find(|attribute| attribute.key == key).and_then(|attribute| match &attribute.value {
        Some(AnyValue { value: Some(any_value::Value::StringValue(value)) }) => Some(value.clone()),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_request_spans_reach_the_otlp_collector_by_shutdown() {
    let (endpoint, mut received) = collector().await;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_path_buf();
    // The child process blocks on its stdout, so start, call and stop it off the async workers.
    let status = tokio::task::spawn_blocking(move || {
        let server = Server::start(&data_dir, &[("CORTEX_API_KEY", KEY), ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)]);
        let agents = http().get(format!("{}/agents", server.url)).bearer_auth(KEY).send().unwrap();
        assert_eq!(agents.status(), 200);
        server.terminate()
    })
    .await
    .unwrap();
    assert!(status.success(), "SIGTERM exits 0: {status:?}");

    // The export happens during shutdown, before the process exits; the timeout only bounds a failure.
    let span = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(batch) = received.recv().await {
            let spans = batch.unwrap_or_else(|err| panic!("the collector rejected an export: {err}"));
            if let Some(span) =
                spans.into_iter().find(|span| span.name == "http" && span.path.as_deref() == Some("/agents"))
            {
                return span;
            }
        }
        panic!("the collector stopped before the request span arrived");
    })
    .await
    .expect("no span for GET /agents was exported");
    assert_eq!(span.service.as_deref(), Some("cortex"), "{span:?}");
}

#[test]
fn invalid_otlp_settings_exit_2_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4318"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "not a url"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://collector:4318"),
    ];
    for (variable, value) in cases {
        let output =
            cortex(dir.path()).args(["serve", "--listen", "127.0.0.1:0"]).env(variable, value).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{variable}={value}: {stderr}");
        assert!(stderr.contains(variable) && !stderr.contains("panicked"), "{variable}={value}: {stderr}");
    }
    let grpc = cortex(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .output()
        .unwrap();
    assert_eq!(grpc.status.code(), Some(2), "{}", String::from_utf8_lossy(&grpc.stderr));
    assert!(String::from_utf8_lossy(&grpc.stderr).contains("OTEL_EXPORTER_OTLP_PROTOCOL"));
}
