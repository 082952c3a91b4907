//! An in-process HTTP server that speaks whatever bytes a test scripts, on 127.0.0.1:0, and records every
//! request it receives so tests can assert the exact wire shape the clients send.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use futures::{Stream, StreamExt, stream};
use serde_json::Value;

/// How a scripted streaming body ends.
#[derive(Debug, Clone, Copy)]
pub enum End {
    /// The body completes normally.
    Close,
    /// The server aborts the connection mid-body (the client sees a broken stream).
    Drop,
    /// The server sends nothing more, ever.
    Stall,
}

/// One scripted reply.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A complete response with a status, extra headers and a body.
    Full { status: u16, headers: Vec<(&'static str, String)>, body: String },
    /// `200 text/event-stream`, each piece written as its own body chunk.
    Stream { pieces: Vec<Vec<u8>>, end: End },
    /// Never answers at all.
    Stall,
    /// Waits until the gate (a `watch` of "open") turns true, then answers with the inner reply.
    Held(tokio::sync::watch::Receiver<bool>, Box<Reply>),
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Self {
        Self::Full { status, headers: vec![("content-type", "application/json".into())], body: body.to_string() }
    }

    pub fn stream(bytes: Vec<u8>) -> Self {
        Self::Stream { pieces: vec![bytes], end: End::Close }
    }
}

/// A request as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
}

#[derive(Default)]
struct Script {
    queue: VecDeque<Reply>,
    fallback: Option<Reply>,
    requests: Vec<Recorded>,
}

/// What the server task and the test share.
struct Shared {
    script: Mutex<Script>,
    /// The number of requests received so far.
    arrivals: tokio::sync::watch::Sender<usize>,
}

/// A running fake; the server task lives as long as the test's runtime.
#[derive(Clone)]
pub struct FakeServer {
    pub base_url: String,
    shared: Arc<Shared>,
}

impl FakeServer {
    pub async fn start() -> Self {
        let shared =
            Arc::new(Shared { script: Mutex::new(Script::default()), arrivals: tokio::sync::watch::channel(0).0 });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { base_url, shared }
    }

    /// Resolves once at least `count` requests have arrived (answered or held).
    pub async fn wait_for_requests(&self, count: usize) {
        let mut arrivals = self.shared.arrivals.subscribe();
        let _ = arrivals.wait_for(|seen| *seen >= count).await;
    }

    /// Queues a reply for the next request; queued replies are used once each, in order.
    pub fn push(&self, reply: Reply) {
        self.shared.script.lock().unwrap().queue.push_back(reply);
    }

    /// The reply for every request once the queue is empty.
    pub fn set_fallback(&self, reply: Reply) {
        self.shared.script.lock().unwrap().fallback = Some(reply);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.script.lock().unwrap().requests.clone()
    }

    pub fn request_count(&self) -> usize {
        self.shared.script.lock().unwrap().requests.len()
    }

    /// The only request received; fails the test if there were more or none.
    pub fn single_request(&self) -> Recorded {
        let requests = self.requests();
        assert_eq!(requests.len(), 1, "expected exactly one request");
        requests.into_iter().next().unwrap()
    }
}

type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

async fn handle(State(shared): State<Arc<Shared>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let mut reply = {
        let mut script = shared.script.lock().unwrap();
        let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
        script.requests.push(Recorded { path: uri.path().to_owned(), headers, body });
        shared.arrivals.send_replace(script.requests.len());
        let next = script.queue.pop_front();
        next.or_else(|| script.fallback.clone()).expect("the fake has no reply scripted")
    };
    while let Reply::Held(mut gate, then) = reply {
        let _ = gate.wait_for(|open| *open).await;
        reply = *then;
    }
    match reply {
        Reply::Full { status, headers, body } => {
            let mut response = Response::builder().status(StatusCode::from_u16(status).unwrap());
            for (name, value) in headers {
                response = response.header(name, value);
            }
            response.body(Body::from(body)).unwrap()
        }
        Reply::Stream { pieces, end } => {
            let pieces: ByteStream = Box::pin(stream::iter(pieces.into_iter().map(|piece| Ok(Bytes::from(piece)))));
            let body: ByteStream = match end {
                End::Close => pieces,
                // Yielding once first makes hyper flush what was written, so the client really receives the
                // pieces before the connection is aborted (otherwise buffered bytes die with it).
                End::Drop => Box::pin(pieces.chain(stream::once(async {
                    tokio::task::yield_now().await;
                    Err(std::io::Error::other("connection dropped"))
                }))),
                End::Stall => Box::pin(pieces.chain(stream::pending())),
            };
            Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "text/event-stream")
                .body(Body::from_stream(body))
                .unwrap()
        }
        Reply::Stall => std::future::pending().await,
        Reply::Held(..) => unreachable!("held replies are released above"),
    }
}

/// Splits `bytes` into pieces of `size` bytes, which cuts through lines, events and UTF-8 characters.
pub fn pieces(bytes: &[u8], size: usize) -> Vec<Vec<u8>> {
    bytes.chunks(size).map(<[u8]>::to_vec).collect()
}

/// Splits `bytes` right after the first byte of the first occurrence of `needle` (a multi-byte character),
/// so one chunk ends inside that character.
pub fn split_inside(bytes: &[u8], needle: char) -> Vec<Vec<u8>> {
    let mut encoded = [0; 4];
    let needle = needle.encode_utf8(&mut encoded).as_bytes();
    assert!(needle.len() > 1, "needle must be multi-byte");
    let at = bytes.windows(needle.len()).position(|window| window == needle).expect("needle present") + 1;
    vec![bytes[..at].to_vec(), bytes[at..].to_vec()]
}
