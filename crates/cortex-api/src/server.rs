//! The HTTP/1.1 connection loop (SPEC Appendix B, Connections): every connection must send its request
//! headers within a deadline and is closed after an idle spell, and the number of open connections is
//! capped with back-pressure — beyond the cap the loop stops accepting, so the kernel backlog holds
//! further clients instead of the process running out of file descriptors. A small reserve above the
//! cap answers only the operations routes (`/healthz`, `/readyz`, `/metrics`), so probes still get
//! through while ordinary traffic saturates the server.
//!
//! Errors that happen below the app still leave in the API's form: a request head hyper cannot parse
//! (bad request line or header → 400, too long a target → 414, too large headers → 431) is answered by
//! hyper itself before any middleware runs, so the socket wrapper ([`Watched`]) recognises hyper's bare
//! answer as it is written and sends the JSON error envelope with an `X-Request-Id` in its place; a
//! client too slow to finish its headers gets 408 with the envelope before the connection closes.

use std::io::Write as _;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Connection settings of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Time a client has to send a request's headers once it has started sending them.
    pub header_timeout: Duration,
    /// Time a connection may sit between requests before it is closed.
    pub idle_timeout: Duration,
    /// Connections served at once; beyond them (and the ops reserve) the listener stops accepting.
    pub max_connections: usize,
}

impl ConnectionLimits {
    /// Connections accepted beyond `max_connections` to answer the operations routes only.
    pub const OPS_RESERVE: usize = 8;
}

impl Default for ConnectionLimits {
    /// 30 s for headers, 60 s idle (SPEC Appendix B); 1,024 connections suit a 2-core machine.
    fn default() -> Self {
        Self { header_timeout: Duration::from_secs(30), idle_timeout: Duration::from_secs(60), max_connections: 1024 }
    }
}

/// Request extension: the request came in on a connection of the ops reserve (the server is at its cap).
#[derive(Debug, Clone, Copy)]
pub struct OverCap;

/// Serves `app` on `listener` until `shutdown` is cancelled, then waits for open connections to finish
/// their requests (streams end on the same token).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let capacity = limits.max_connections + ConnectionLimits::OPS_RESERVE;
    let slots = Arc::new(Semaphore::new(capacity));
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The deadlines are kept by [`Activity`]; hyper's own header timer would also cut idle connections.
    builder.header_read_timeout(None).keep_alive(true);
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of descriptors or a connection reset before accept: back off instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let over_cap = slots.available_permits() < ConnectionLimits::OPS_RESERVE;
        let _ = stream.set_nodelay(true);
        let (app, builder, shutdown) = (app.clone(), builder.clone(), shutdown.clone());
        tokio::spawn(async move {
            metrics::gauge!("cortex_http_connections_open").increment(1.0);
            serve_connection(stream, peer, app, &builder, limits, over_cap, shutdown).await;
            metrics::gauge!("cortex_http_connections_open").decrement(1.0);
            drop(permit);
        });
    }
    // Every connection holds one slot: having them all back means every connection has ended.
    let all = u32::try_from(capacity).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
    Ok(())
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    builder: &hyper::server::conn::http1::Builder,
    limits: ConnectionLimits,
    over_cap: bool,
    shutdown: CancellationToken,
) {
    let activity = Arc::new(Activity::new());
    // A second handle on the socket, to answer 408 when the deadline passes while hyper owns the stream.
    let watchdog_socket = stream.as_fd().try_clone_to_owned().ok().map(std::net::TcpStream::from);
    let io = TokioIo::new(Watched::new(stream, activity.clone()));
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |mut request: Request<Incoming>| {
            let (app, activity) = (app.clone(), activity.clone());
            request.extensions_mut().insert(ConnectInfo(peer));
            if over_cap {
                request.extensions_mut().insert(OverCap);
            }
            let in_flight = activity.request_started();
            async move {
                let response = app.oneshot(request.map(Body::new)).await;
                drop(in_flight);
                response
            }
        })
    };
    let connection = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(connection);
    let mut draining = false;
    loop {
        let wake = activity.deadline(&limits).unwrap_or_else(|| Instant::now() + limits.idle_timeout);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(error = %err, %peer, "connection ended with an error");
                }
                if activity.answered_below_app.load(Ordering::Acquire)
                    && let Some(socket) = watchdog_socket
                {
                    linger(socket).await;
                }
                return;
            }
            () = activity.changed.notified() => {}
            () = tokio::time::sleep_until(wake) => {
                if activity.deadline(&limits).is_some_and(|deadline| deadline <= Instant::now()) {
                    if activity.head_started.load(Ordering::Acquire) > 0
                        && let Some(socket) = &watchdog_socket
                    {
                        tracing::debug!(%peer, "closing a connection slow to send its headers (408)");
                        // One non-blocking write: the answer is small, and a client that does not read it
                        // is not waited for.
                        let _ = (&*socket).write(&error_response(408));
                    } else {
                        tracing::debug!(%peer, "closing an idle connection");
                    }
                    return;
                }
            }
            () = shutdown.cancelled(), if !draining => {
                connection.as_mut().graceful_shutdown();
                draining = true;
            }
        }
    }
}

/// What a connection is doing, for its deadlines: times are milliseconds since `origin`.
struct Activity {
    origin: Instant,
    /// Last byte read or written.
    last_io: AtomicU64,
    /// First byte of a request head not yet complete, plus one (0: none).
    head_started: AtomicU64,
    /// Requests whose handlers are running.
    in_flight: AtomicUsize,
    /// Wakes the connection's watchdog when its deadline moves earlier (a head starts, a request ends).
    changed: tokio::sync::Notify,
    /// An error response was written in place of hyper's (the connection is ending).
    answered_below_app: std::sync::atomic::AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Self {
            origin: Instant::now(),
            last_io: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            changed: tokio::sync::Notify::new(),
            answered_below_app: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn read(&self) {
        let now = self.now_ms();
        self.last_io.store(now, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Acquire) == 0
            && self.head_started.compare_exchange(0, now + 1, Ordering::AcqRel, Ordering::Relaxed).is_ok()
        {
            self.changed.notify_one();
        }
    }

    fn wrote(&self) {
        self.last_io.store(self.now_ms(), Ordering::Relaxed);
    }

    fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(0, Ordering::Release);
        InFlight(self.clone())
    }

    /// When the connection must be closed unless something happens first; `None` while a handler runs.
    fn deadline(&self, limits: &ConnectionLimits) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let head_started = self.head_started.load(Ordering::Acquire);
        Some(if head_started > 0 {
            self.origin + Duration::from_millis(head_started - 1) + limits.header_timeout
        } else {
            self.origin + Duration::from_millis(self.last_io.load(Ordering::Relaxed)) + limits.idle_timeout
        })
    }
}

/// Marks a request as running until dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.last_io.store(self.0.now_ms(), Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.changed.notify_one();
    }
}

/// Longest time, and most bytes, read and discarded after an error answered below the app.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1024 * 1024;

/// Ends a connection whose request hyper refused while the client may still be sending (e.g. headers
/// beyond the limit): closing a socket with unread data resets it, and the client would see the reset
/// instead of the answer. So: end our side, then read and discard what still comes, for a little while.
async fn linger(socket: std::net::TcpStream) {
    let _ = socket.shutdown(std::net::Shutdown::Write);
    let Ok(mut socket) = TcpStream::from_std(socket) else { return };
    let mut sink = [0u8; 8192];
    let mut left = LINGER_BYTES;
    let drain = async {
        while let Ok(read @ 1..) = tokio::io::AsyncReadExt::read(&mut socket, &mut sink).await {
            left = left.saturating_sub(read);
            if left == 0 {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
}

/// The message of an error answered below the app, by status.
fn low_level_message(status: u16) -> &'static str {
    match status {
        408 => "the request headers did not arrive in time",
        414 => "the request target (path and query) is too long",
        431 => "the request headers are too large",
        _ => "the request could not be parsed (malformed request line or header)",
    }
}

/// A complete HTTP/1.1 error response with the JSON envelope, a fresh `X-Request-Id` and
/// `Connection: close` (the connection ends after it).
fn error_response(status: u16) -> Vec<u8> {
    let reason = axum::http::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("Error");
    let code = crate::error::Code::for_status(axum::http::StatusCode::from_u16(status).unwrap_or_default());
    let body = serde_json::json!({"error": {"code": code.as_str(), "message": low_level_message(status)}}).to_string();
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         {}: {}\r\nconnection: close\r\n\r\n{body}",
        body.len(),
        crate::middleware::REQUEST_ID,
        cortex_core::new_id(),
    )
    .into_bytes()
}

/// The status of an answer hyper writes by itself for a request head it could not parse, if `head` is
/// one: a 400, 414 or 431 status line without the `X-Request-Id` every response of the app carries.
fn hyper_error_status(head: &[u8]) -> Option<u16> {
    let rest = head.strip_prefix(b"HTTP/1.1 ").or_else(|| head.strip_prefix(b"HTTP/1.0 "))?;
    let status = std::str::from_utf8(rest.get(..3)?).ok()?.parse::<u16>().ok()?;
    if !matches!(status, 400 | 414 | 431) {
        return None;
    }
    let end = head.windows(4).position(|window| window == b"\r\n\r\n").unwrap_or(head.len());
    let head = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
    (!head.contains(&format!("\r\n{}:", crate::middleware::REQUEST_ID))).then_some(status)
}

/// A socket that reports its reads and writes to the connection's [`Activity`], and writes the API's
/// error response in place of hyper's bare one (see the module documentation).
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
    /// The envelope being written in place of hyper's answer: bytes, how many are written, and how many
    /// bytes of hyper's to report written once it is done.
    replacing: Option<(Vec<u8>, usize, usize)>,
    /// The replacement has been sent: the connection is ending and anything hyper still writes is dropped.
    answered: bool,
}

impl Watched {
    fn new(inner: TcpStream, activity: Arc<Activity>) -> Self {
        Self { inner, activity, replacing: None, answered: false }
    }

    /// Handles a write of `total` bytes starting with `first` when it is (or follows) hyper's own error
    /// answer; `None` for an ordinary write.
    fn poll_replaced(
        &mut self,
        cx: &mut Context<'_>,
        first: &[u8],
        total: usize,
    ) -> Option<Poll<std::io::Result<usize>>> {
        if self.answered {
            return Some(Poll::Ready(Ok(total)));
        }
        if self.replacing.is_none() {
            let status = hyper_error_status(first)?;
            tracing::debug!(status, "answering a request head hyper could not parse with the error envelope");
            self.replacing = Some((error_response(status), 0, total));
        }
        let (bytes, written, claimed) = self.replacing.as_mut()?;
        while *written < bytes.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]) {
                Poll::Ready(Ok(0)) => return Some(Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()))),
                Poll::Ready(Ok(n)) => {
                    *written += n;
                    self.activity.wrote();
                }
                Poll::Ready(Err(err)) => return Some(Poll::Ready(Err(err))),
                Poll::Pending => return Some(Poll::Pending),
            }
        }
        let claimed = *claimed;
        self.replacing = None;
        self.answered = true;
        self.activity.answered_below_app.store(true, Ordering::Release);
        Some(Poll::Ready(Ok(claimed)))
    }
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read();
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        if let Some(replaced) = self.poll_replaced(cx, buf, buf.len()) {
            return replaced;
        }
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(written)) if written > 0) {
            self.activity.wrote();
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let first = bufs.iter().find(|buf| !buf.is_empty()).map_or(&[][..], |buf| &buf[..]);
        let total = bufs.iter().map(|buf| buf.len()).sum();
        if let Some(replaced) = self.poll_replaced(cx, first, total) {
            return replaced;
        }
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(written)) if written > 0) {
            self.activity.wrote();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
