//! The process's one TLS client configuration: every outbound HTTPS and WSS connection (model providers,
//! chat platforms, tools, MCP servers, login providers, the CLI) verifies servers against the system's
//! trust store, loaded once per process on the first TLS handshake.
//!
//! Why a crate of its own: reqwest builds a verifier for every client it builds, and that verifier reads
//! and parses every root certificate of the system (the bundle and each file of `/etc/ssl/certs`, ≈ 19 M
//! instructions here) and keeps its own copy. `cortex serve` built two clients at start (35 % of its
//! start-up instructions), the CLI one per command even for `http://` servers, and a tool call whose scope
//! allows extra hosts one per call (docs/PERFORMANCE.md section 22).
//!
//! Invariants:
//! - One [`LazyVerifier`] per process behind [`client_builder`] and [`client_config`]; it loads the trust
//!   store at most once, and only when a TLS server presents a certificate. Plain-HTTP traffic never
//!   loads it.
//! - Verification is rustls-platform-verifier's, unchanged (the one reqwest used before): the system's
//!   roots, honouring `SSL_CERT_FILE` and `SSL_CERT_DIR`. A trust store that cannot be loaded fails
//!   every handshake with the loader's error; it does not stop the process from starting.

use std::fmt;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

/// Builds the real verifier from the crypto provider; called at most once per [`LazyVerifier`].
type Loader = dyn Fn(Arc<CryptoProvider>) -> Result<Arc<dyn ServerCertVerifier>, rustls::Error> + Send + Sync;

/// A certificate verifier that builds the real one on first use and keeps it (or the error that building
/// it gave) for the life of the process.
pub struct LazyVerifier {
    provider: Arc<CryptoProvider>,
    load: Box<Loader>,
    loaded: OnceLock<Result<Arc<dyn ServerCertVerifier>, rustls::Error>>,
}

impl LazyVerifier {
    /// The system's trust store through rustls-platform-verifier, with ring as the crypto provider (the
    /// workspace's one provider).
    pub fn platform() -> Self {
        Self::new(Arc::new(rustls::crypto::ring::default_provider()), |provider| {
            Ok(Arc::new(rustls_platform_verifier::Verifier::new(provider)?))
        })
    }

    /// A verifier that calls `load` on the first certificate it must check.
    pub fn new(
        provider: Arc<CryptoProvider>,
        load: impl Fn(Arc<CryptoProvider>) -> Result<Arc<dyn ServerCertVerifier>, rustls::Error> + Send + Sync + 'static,
    ) -> Self {
        Self { provider, load: Box::new(load), loaded: OnceLock::new() }
    }

    /// The real verifier, built now if this is the first call. Concurrent first calls build it once.
    fn verifier(&self) -> Result<&Arc<dyn ServerCertVerifier>, rustls::Error> {
        self.loaded.get_or_init(|| (self.load)(Arc::clone(&self.provider))).as_ref().map_err(Clone::clone)
    }
}

impl fmt::Debug for LazyVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LazyVerifier").field("loaded", &self.loaded.get().map(Result::is_ok)).finish()
    }
}

impl ServerCertVerifier for LazyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verifier()?.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier()?.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier()?.verify_tls13_signature(message, cert, dss)
    }

    /// Asked before any certificate arrives (the ClientHello lists these), so it must not load the
    /// store: the schemes are the provider's, which is what the platform verifier answers too.
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS client configuration verifying with `verifier`: TLS 1.2 and 1.3, no client certificate, no ALPN
/// (HTTP clients get theirs from [`builder_with`]).
pub fn config_with(verifier: Arc<LazyVerifier>) -> ClientConfig {
    ClientConfig::builder_with_provider(Arc::clone(&verifier.provider))
        .with_safe_default_protocol_versions()
        // ring offers suites for both default versions; no input can change that.
        .expect("the ring provider supports TLS 1.2 and 1.3")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth()
}

/// The process's TLS client configuration (the system's trust store, loaded on first use), without ALPN:
/// for WebSocket clients, which must speak HTTP/1.1.
pub fn client_config() -> ClientConfig {
    static SHARED: OnceLock<ClientConfig> = OnceLock::new();
    SHARED.get_or_init(|| config_with(Arc::new(LazyVerifier::platform()))).clone()
}

/// A reqwest client builder whose TLS is the process's configuration. Every outbound HTTP client starts
/// here, so that none loads the trust store of its own.
pub fn client_builder() -> reqwest::ClientBuilder {
    with_tls(client_config())
}

/// A reqwest client builder verifying with `verifier` (tests, and callers with their own roots).
pub fn builder_with(verifier: Arc<LazyVerifier>) -> reqwest::ClientBuilder {
    with_tls(config_with(verifier))
}

/// `config` with the ALPN reqwest itself offers (HTTP/2, then HTTP/1.1), as a client builder. A
/// preconfigured configuration is used as given, so the ALPN list must be set here.
fn with_tls(mut config: ClientConfig) -> reqwest::ClientBuilder {
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    reqwest::Client::builder().tls_backend_preconfigured(config)
}
