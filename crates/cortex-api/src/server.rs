//! The HTTP/1.1 connection loop (SPEC Appendix B, Connections): every connection must send its request
//! headers within a deadline and is closed after an idle spell, and the number of open connections is
//! capped with back-pressure — beyond the cap the loop stops accepting, so the kernel backlog holds
//! further clients instead of the process running out of file descriptors. A small reserve above the
//! cap answers only the operations routes (`/healthz`, `/readyz`, `/metrics`), so probes still get
//! through while ordinary traffic saturates the server.

use std::net::SocketAddr;
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
    let io = TokioIo::new(Watched { inner: stream, activity: activity.clone() });
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
                return;
            }
            () = activity.changed.notified() => {}
            () = tokio::time::sleep_until(wake) => {
                if activity.deadline(&limits).is_some_and(|deadline| deadline <= Instant::now()) {
                    tracing::debug!(%peer, "closing a connection that was idle or slow to send its headers");
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
}

impl Activity {
    fn new() -> Self {
        Self {
            origin: Instant::now(),
            last_io: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            changed: tokio::sync::Notify::new(),
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

/// A socket that reports its reads and writes to the connection's [`Activity`].
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
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
