//! Opening the gateways' WebSocket connections (Discord, Slack Socket Mode) with the process's TLS
//! configuration (`cortex-tls`), so `wss://` trusts what every other outbound connection trusts.

use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::client::Response;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

/// Connects to `url` (`ws://` or `wss://`). The TLS configuration offers no ALPN, so the server speaks
/// the HTTP/1.1 the WebSocket handshake needs.
pub(crate) async fn connect(
    url: &str,
) -> Result<(WebSocketStream<MaybeTlsStream<TcpStream>>, Response), tokio_tungstenite::tungstenite::Error> {
    let tls = Connector::Rustls(Arc::new(cortex_tls::client_config()));
    tokio_tungstenite::connect_async_tls_with_config(url, None, false, Some(tls)).await
}
