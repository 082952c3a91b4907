//! The call log shared by the in-process platform fakes (Discord REST, Slack Web API, WhatsApp Graph
//! API): every request is recorded under a route name, a test can make the next calls of a route fail
//! with a platform-shaped error or hang unanswered, and wait for calls to arrive.
//!
//! A fake's handler calls [`CallLog::admit`] first, answers the returned failure if any, never answers
//! a held call, and stores what it answered with [`CallLog::answered`] (so "delivered" means the
//! platform accepted it and said so).

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::sync::watch;

/// A request as a fake received it.
#[derive(Debug, Clone)]
pub struct Call {
    /// The fake's name for the route (`create_message`, `chat.postMessage`, …).
    pub route: String,
    /// The path the request was sent to.
    pub path: String,
    pub body: Value,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// What the fake answered with; `Null` for failed or held calls.
    pub response: Value,
}

/// An error a fake answers instead of the next call of a route.
#[derive(Debug, Clone)]
pub struct Failure {
    pub status: u16,
    pub body: Value,
    pub headers: Vec<(&'static str, String)>,
}

impl Failure {
    /// A failure with a JSON body and no extra headers.
    pub fn new(status: u16, body: Value) -> Self {
        Self { status, body, headers: Vec::new() }
    }

    /// Adds a response header (e.g. `retry-after`).
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// A 502 without a useful body.
    pub fn server_error() -> Self {
        Self::new(502, serde_json::json!({"message": "Bad Gateway"}))
    }
}

impl IntoResponse for &Failure {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        let mut response = (status, axum::Json(self.body.clone())).into_response();
        for (name, value) in &self.headers {
            if let Ok(value) = HeaderValue::from_str(value) {
                response.headers_mut().insert(HeaderName::from_static(name), value);
            }
        }
        response
    }
}

/// What the handler of an admitted call must do.
#[derive(Debug)]
pub struct Admission {
    /// Index of the call in the log, for [`CallLog::answered`].
    pub index: usize,
    /// Answer this instead of the real result.
    pub failure: Option<Failure>,
    /// Never answer (the caller may die meanwhile).
    pub hold: bool,
}

#[derive(Default)]
struct Inner {
    calls: Vec<Call>,
    /// `(route, calls to let through first, failure)`.
    failures: Vec<(String, usize, Failure)>,
    holds: Vec<String>,
}

/// The call log of one fake.
pub struct CallLog {
    inner: Mutex<Inner>,
    changes: watch::Sender<usize>,
}

impl Default for CallLog {
    fn default() -> Self {
        Self { inner: Mutex::new(Inner::default()), changes: watch::channel(0).0 }
    }
}

impl CallLog {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a call and says whether to fail or hold it.
    pub fn admit(&self, route: &str, path: &str, authorization: Option<String>, body: Value) -> Admission {
        let admission = {
            let mut inner = self.lock();
            inner.calls.push(Call {
                route: route.to_owned(),
                path: path.to_owned(),
                body,
                authorization,
                response: Value::Null,
            });
            let index = inner.calls.len() - 1;
            let failure = match inner.failures.iter().position(|(name, _, _)| name == route) {
                Some(at) if inner.failures[at].1 > 0 => {
                    inner.failures[at].1 -= 1;
                    None
                }
                Some(at) => Some(inner.failures.remove(at).2),
                None => None,
            };
            let hold = inner.holds.iter().position(|name| name == route).map(|at| inner.holds.remove(at)).is_some();
            Admission { index, failure, hold }
        };
        self.changes.send_modify(|count| *count += 1);
        admission
    }

    /// Stores the successful answer of call `index`.
    pub fn answered(&self, index: usize, response: Value) {
        if let Some(call) = self.lock().calls.get_mut(index) {
            call.response = response;
        }
        self.changes.send_modify(|count| *count += 1);
    }

    /// Makes the next call of `route` fail with `failure`; several queue up in order.
    pub fn fail_next(&self, route: &str, failure: Failure) {
        self.fail_after(route, 0, failure);
    }

    /// Lets `successes` more calls of `route` through, then fails one.
    pub fn fail_after(&self, route: &str, successes: usize, failure: Failure) {
        self.lock().failures.push((route.to_owned(), successes, failure));
    }

    /// Makes the next call of `route` hang without an answer; it does not count as delivered.
    pub fn hold_next(&self, route: &str) {
        self.lock().holds.push(route.to_owned());
    }

    /// Every call of `route` so far.
    pub fn calls(&self, route: &str) -> Vec<Call> {
        self.lock().calls.iter().filter(|call| call.route == route).cloned().collect()
    }

    /// Calls of `route` the fake answered successfully.
    pub fn delivered(&self, route: &str) -> Vec<Call> {
        self.calls(route).into_iter().filter(|call| !call.response.is_null()).collect()
    }

    /// Waits (up to 30 s) until `route` was called at least `count` times; panics with what arrived.
    pub async fn wait_for_calls(&self, route: &str, count: usize) -> Vec<Call> {
        self.wait_until(route, count, |call| call.route == route).await
    }

    /// Waits (up to 30 s) until `route` was answered successfully at least `count` times.
    pub async fn wait_for_delivered(&self, route: &str, count: usize) -> Vec<Call> {
        self.wait_until(route, count, |call| call.route == route && !call.response.is_null()).await
    }

    async fn wait_until(&self, route: &str, count: usize, matches: impl Fn(&Call) -> bool) -> Vec<Call> {
        let mut changes = self.changes.subscribe();
        let found = || self.lock().calls.iter().filter(|call| matches(call)).cloned().collect::<Vec<_>>();
        let waited = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let calls = found();
                if calls.len() >= count || changes.changed().await.is_err() {
                    return calls;
                }
            }
        })
        .await;
        match waited {
            Ok(calls) if calls.len() >= count => calls,
            _ => {
                let seen: Vec<String> = self.lock().calls.iter().map(|call| call.route.clone()).collect();
                panic!("timed out waiting for {count} {route} calls; calls so far: {seen:?}")
            }
        }
    }
}
