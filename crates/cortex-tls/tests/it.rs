//! The shared TLS configuration against real TLS servers on loopback: the trust store is loaded once, on
//! the first handshake, and verification still refuses what it refused before.
//!
//! The certificates in `tests/data` (P-256, valid until 2126) were made once with `openssl`: `ca.der` /
//! `ca.pem` a CA, `trusted.der` a `localhost` / `127.0.0.1` server certificate it signed, and
//! `untrusted.der` the same kind of certificate signed by a CA whose key was thrown away.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cortex_tls::LazyVerifier;
use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const CA: &[u8] = include_bytes!("data/ca.der");
const TRUSTED: (&[u8], &[u8]) = (include_bytes!("data/trusted.der"), include_bytes!("data/trusted.key.der"));
const UNTRUSTED: (&[u8], &[u8]) = (include_bytes!("data/untrusted.der"), include_bytes!("data/untrusted.key.der"));
/// Set in the child process of [`the_process_configuration_verifies_against_the_system_store`].
const CHILD: &str = "CORTEX_TLS_TEST_CHILD";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// An HTTPS server on loopback presenting `identity` that answers every request `200 ok`.
async fn https_server(identity: (&'static [u8], &'static [u8])) -> SocketAddr {
    let (cert, key) = identity;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert)],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.to_vec())),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A refused handshake is what some tests expect; the client reports it.
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok").await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

/// A verifier trusting only the test CA that counts how often its store is loaded.
fn counting_verifier() -> (Arc<LazyVerifier>, Arc<AtomicUsize>) {
    let loads = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&loads);
    let verifier = LazyVerifier::new(provider(), move |provider| {
        counter.fetch_add(1, Ordering::SeqCst);
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from(CA))?;
        let verifier: Arc<dyn ServerCertVerifier> =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|error| rustls::Error::General(error.to_string()))?;
        Ok(verifier)
    });
    (Arc::new(verifier), loads)
}

/// `GET https://localhost:<port>/` with a client from `builder`, pinned to `addr`.
async fn get(builder: reqwest::ClientBuilder, addr: SocketAddr) -> Result<String, String> {
    let client = builder.resolve("localhost", addr).build().map_err(|e| e.to_string())?;
    let response = client.get(format!("https://localhost:{}/", addr.port())).send().await.map_err(error_chain)?;
    response.text().await.map_err(error_chain)
}

fn error_chain(error: reqwest::Error) -> String {
    let mut chain = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        chain.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    chain
}

#[tokio::test]
async fn the_store_is_loaded_on_the_first_handshake_and_once_for_every_client() {
    let server = https_server(TRUSTED).await;
    let (verifier, loads) = counting_verifier();
    let first = cortex_tls::builder_with(Arc::clone(&verifier));
    let second = cortex_tls::builder_with(Arc::clone(&verifier));
    assert_eq!(loads.load(Ordering::SeqCst), 0, "building clients must not load the trust store");

    assert_eq!(get(first, server).await.unwrap(), "ok");
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert_eq!(get(second, server).await.unwrap(), "ok");
    assert_eq!(loads.load(Ordering::SeqCst), 1, "a second client shares the loaded store");
}

#[tokio::test]
async fn a_certificate_from_an_unknown_issuer_is_refused() {
    let server = https_server(UNTRUSTED).await;
    let (verifier, loads) = counting_verifier();
    let error = get(cortex_tls::builder_with(verifier), server).await.unwrap_err();
    assert!(error.contains("UnknownIssuer"), "{error}");
    assert_eq!(loads.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_store_that_cannot_be_loaded_fails_each_handshake_not_the_client() {
    let server = https_server(TRUSTED).await;
    let verifier = Arc::new(LazyVerifier::new(provider(), |_| Err(rustls::Error::General("no roots here".into()))));
    for _ in 0..2 {
        let error = get(cortex_tls::builder_with(Arc::clone(&verifier)), server).await.unwrap_err();
        assert!(error.contains("no roots here"), "{error}");
    }
}

/// The process-wide configuration is rustls-platform-verifier's store, which honours `SSL_CERT_FILE`:
/// run in a child process whose `SSL_CERT_FILE` names the test CA alone, it trusts the test server and
/// still refuses the other one.
#[tokio::test]
async fn the_process_configuration_verifies_against_the_system_store() {
    if std::env::var_os(CHILD).is_some() {
        let trusted = https_server(TRUSTED).await;
        let untrusted = https_server(UNTRUSTED).await;
        assert_eq!(get(cortex_tls::client_builder(), trusted).await.unwrap(), "ok");
        let error = get(cortex_tls::client_builder(), untrusted).await.unwrap_err();
        assert!(error.contains("UnknownIssuer"), "{error}");
        return;
    }
    let test = "the_process_configuration_verifies_against_the_system_store";
    let ca = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/ca.pem");
    let output = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .env("SSL_CERT_FILE", ca)
        .env_remove("SSL_CERT_DIR")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the child process failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "the child process did not run the test:\n{stdout}\n{stderr}");
}
