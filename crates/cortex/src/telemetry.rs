//! Logging: `CORTEX_LOG` filter (default `info`), JSON lines when stderr is not a terminal, readable
//! text when it is. Logs go to stderr so stdout stays for command output. Every line passes through
//! [`LOG_REDACTOR`], the runtime's current secret set (credential values and secret env values in their
//! common encodings), before it is written.
//!
//! Traces (SPEC §16.5): only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, every `info`-or-above span (HTTP
//! requests, job attempts, …) is also exported over OTLP http/protobuf to `<endpoint>/v1/traces`. The
//! exporter uses the blocking reqwest client on the SDK's own batch thread, so it is built here, before the
//! async runtime exists, and flushed by [`Telemetry::shutdown`] after the runtime has finished.

use std::io::{IsTerminal, Write};
use std::sync::LazyLock;

use cortex_core::redact::SharedRedactor;

use opentelemetry::Key;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{ExporterBuildError, Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::ConfigError;

/// The external switch: trace export is on exactly when this is set (and not empty).
const ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// The signal-specific override the OTLP exporter honours; validated the same way when present.
const TRACES_ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// Only http/protobuf is compiled in; asking for anything else must not silently send protobuf to a gRPC port.
const PROTOCOL_VARS: [&str; 2] = ["OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"];
/// Used when neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES` names the service.
const SERVICE_NAME: &str = "cortex";

/// The secret set log lines are redacted with; the runtime fills it (`RuntimeConfig::redactor`) and keeps it
/// current as credentials change. Process-wide because the subscriber is installed before the runtime
/// exists.
pub static LOG_REDACTOR: LazyLock<SharedRedactor> = LazyLock::new(|| {
    let redactor = SharedRedactor::default();
    let values: Vec<String> =
        std::env::vars().filter(|(name, _)| is_secret_var(name)).map(|(_, value)| value).collect();
    redactor.set(cortex_core::redact::Redactor::new(values));
    redactor
});

/// Whether an environment variable holds a secret by its name (`*_KEY`, `*_TOKEN`, `*_SECRET`, `*_PASSWORD`).
pub fn is_secret_var(name: &str) -> bool {
    ["_KEY", "_TOKEN", "_SECRET", "_PASSWORD"].iter().any(|suffix| name.ends_with(suffix))
}

/// Writes each formatted log event through `inner` once it is complete, redacted with `redactor`.
struct Redacting<M> {
    inner: M,
    redactor: SharedRedactor,
}

impl<'a, M: tracing_subscriber::fmt::MakeWriter<'a>> tracing_subscriber::fmt::MakeWriter<'a> for Redacting<M> {
    type Writer = EventBuffer<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        EventBuffer { bytes: Vec::new(), inner: self.inner.make_writer(), redactor: self.redactor.clone() }
    }
}

/// One event's text, written on drop (the formatter writes an event, then drops its writer).
struct EventBuffer<W: Write> {
    bytes: Vec<u8>,
    inner: W,
    redactor: SharedRedactor,
}

impl<W: Write> Write for EventBuffer<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.bytes.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for EventBuffer<W> {
    fn drop(&mut self) {
        if self.bytes.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.bytes);
        let redacted = self.redactor.apply(&text);
        let _ = self.inner.write_all(redacted.as_bytes());
        let _ = self.inner.flush();
    }
}

/// Owns the trace pipeline so spans still buffered at exit reach the collector: the global subscriber
/// keeps the provider alive forever, so nothing else would ever flush it.
#[must_use = "dropping the guard shuts trace export down"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Flushes buffered spans and stops the exporter. Call it once the async runtime has finished (the
    /// blocking HTTP client must not run inside it); a no-op when trace export is off.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(err) = provider.shutdown()
        {
            tracing::warn!(error = %err, "OTLP trace export did not shut down cleanly; some spans may be lost");
        }
    }
}

impl Drop for Telemetry {
    /// A path that returns early must not lose spans either.
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `CORTEX_LOG` filter (`info` when unset or empty); a value that does not parse is a configuration
/// error, not a silent fallback.
fn log_filter() -> anyhow::Result<EnvFilter> {
    match std::env::var("CORTEX_LOG") {
        Ok(value) if !value.trim().is_empty() => EnvFilter::try_new(value.trim()).map_err(|err| {
            anyhow::Error::new(ConfigError(format!(
                "invalid CORTEX_LOG: {err} (expected a filter such as `info` or `warn,cortex_api=debug`)"
            )))
        }),
        _ => Ok(EnvFilter::new("info")),
    }
}

/// Installs the global subscriber. Fails only on invalid OpenTelemetry settings ([`ConfigError`]) or when
/// the exporter cannot be built; without `OTEL_EXPORTER_OTLP_ENDPOINT` it behaves exactly as before.
pub fn init() -> anyhow::Result<Telemetry> {
    let provider = tracer_provider()?;
    let filter = log_filter()?;
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(Redacting { inner: std::io::stderr, redactor: LOG_REDACTOR.clone() });
    let logs = if std::io::stderr().is_terminal() {
        logs.compact().boxed()
    } else {
        logs.json().flatten_event(true).with_current_span(true).boxed()
    };
    // Trace export has its own filter: an operator quietening logs with CORTEX_LOG=warn still wants the
    // request and job spans. The exporter's own crates are excluded so exporting never produces spans.
    let traces = provider.as_ref().map(|provider| {
        let targets = Targets::new()
            .with_default(LevelFilter::INFO)
            .with_target("opentelemetry", LevelFilter::OFF)
            .with_target("reqwest", LevelFilter::OFF)
            .with_target("hyper", LevelFilter::OFF)
            .with_target("h2", LevelFilter::OFF);
        tracing_opentelemetry::layer().with_tracer(provider.tracer("cortex")).with_filter(targets)
    });
    tracing_subscriber::registry().with(logs.with_filter(filter).with_filter(without_rmcp())).with(traces).init();
    Ok(Telemetry { provider })
}

/// Drops the MCP SDK's own log lines whatever `CORTEX_LOG` says: `cortex-mcp` reports the same failures,
/// redacted and once per state change, while rmcp logs every failed attempt at ERROR and quotes what the
/// server sent verbatim (which can include the server's credentials).
fn without_rmcp() -> Targets {
    Targets::new().with_default(LevelFilter::TRACE).with_target("rmcp", LevelFilter::OFF)
}

/// The OTLP pipeline, or `None` when export is not configured.
fn tracer_provider() -> anyhow::Result<Option<SdkTracerProvider>> {
    let Some(endpoint) = env_value(ENDPOINT_VAR)? else { return Ok(None) };
    check_endpoint(ENDPOINT_VAR, &endpoint)?;
    if let Some(endpoint) = env_value(TRACES_ENDPOINT_VAR)? {
        check_endpoint(TRACES_ENDPOINT_VAR, &endpoint)?;
    }
    for var in PROTOCOL_VARS {
        if let Some(protocol) = env_value(var)?
            && protocol.trim() != "http/protobuf"
        {
            return Err(invalid(var, format!("`{protocol}` is not supported; only `http/protobuf` is")));
        }
    }
    let exporter =
        SpanExporter::builder().with_http().with_protocol(Protocol::HttpBinary).build().map_err(|err| match err {
            ExporterBuildError::InvalidConfiguration(detail) => {
                anyhow::Error::new(ConfigError(format!("invalid OpenTelemetry exporter setting: {detail}")))
            }
            other => anyhow::Error::new(other).context("cannot start the OTLP trace exporter"),
        })?;
    let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource()).build();
    Ok(Some(provider))
}

/// `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES` win (the SDK's detectors read them); otherwise the SDK
/// would report `unknown_service:cortex`, so name it.
fn resource() -> Resource {
    let detected = Resource::builder().build();
    let named = detected
        .get(&Key::from_static_str("service.name"))
        .is_some_and(|name| !name.as_str().starts_with("unknown_service"));
    if named { detected } else { Resource::builder().with_service_name(SERVICE_NAME).build() }
}

/// An environment variable's value; unset and empty are the same (the OpenTelemetry convention).
fn env_value(var: &str) -> anyhow::Result<Option<String>> {
    match std::env::var(var) {
        Ok(value) if value.trim().is_empty() => Ok(None),
        Ok(value) => Ok(Some(value)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(invalid(var, "the value is not valid UTF-8")),
    }
}

/// The exporter itself accepts almost any string as a URI and fails only at export time; refuse it at start.
fn check_endpoint(var: &str, value: &str) -> anyhow::Result<()> {
    let url = url::Url::parse(value).map_err(|err| invalid(var, format!("`{value}` is not a URL: {err}")))?;
    if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
        return Err(invalid(var, format!("`{value}` must be an http:// or https:// URL with a host")));
    }
    Ok(())
}

fn invalid(var: &str, detail: impl std::fmt::Display) -> anyhow::Error {
    anyhow::Error::new(ConfigError(format!("invalid {var}: {detail}")))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use base64::Engine as _;
    use cortex_core::redact::Redactor;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// A log sink the test can read.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn log_lines_never_carry_a_secret_in_any_common_form() {
        let secret = "sk-log-secret-0123456789";
        let redactor = SharedRedactor::default();
        let captured = Captured::default();
        let sink = captured.clone();
        let layer = tracing_subscriber::fmt::layer()
            .json()
            .with_writer(Redacting { inner: move || sink.clone(), redactor: redactor.clone() });
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(header = %format!("Bearer {secret}"), "before the credential exists");
            redactor.set(Redactor::new([secret]));
            let encoded = base64::engine::general_purpose::STANDARD.encode(secret);
            tracing::warn!(error = %format!("provider said: invalid key {secret}"), "call failed");
            tracing::info!(%encoded, hex = %hex::encode(secret), "echoed");
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].contains(secret), "a value is redacted once the runtime knows it: {text}");
        for line in &lines[1..] {
            assert!(line.contains("[redacted]"), "{line}");
            assert!(!line.contains(secret) && !line.contains(&hex::encode(secret)), "{line}");
        }
        assert!(lines[1].contains("call failed"), "the rest of the line stays: {text}");
    }
}
