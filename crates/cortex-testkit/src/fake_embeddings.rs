//! An in-process OpenAI-compatible `POST /v1/embeddings` server. Vectors are deterministic feature hashes
//! of the lowercase words of each input (64 dimensions), so texts sharing words are similar and
//! unrelated texts are nearly orthogonal — enough to test hybrid retrieval without a model. The same
//! handler also answers `/v1/embeddings` on [`crate::fake_llm::FakeLlm`].
//!
//! As OpenAI's endpoint does, it answers `"encoding_format": "base64"` with each vector as base64 of its
//! little-endian f32s, and anything else with arrays of numbers; [`FakeEmbeddings::refuse_base64`] makes it
//! an older server that rejects the field with 400.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use serde_json::{Value, json};

/// Dimensions of the fake vectors.
pub const DIM: usize = 64;

/// The fake vector of `text` (not normalised; the client normalises).
pub fn embed(text: &str) -> Vec<f32> {
    let mut vector = vec![0.0_f32; DIM];
    for word in text.split(|c: char| !c.is_alphanumeric()).filter(|word| word.len() > 1) {
        let hash = word
            .to_lowercase()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3));
        let sign = if hash >> 63 == 0 { 1.0 } else { -1.0 };
        vector[(hash % DIM as u64) as usize] += sign;
    }
    if vector.iter().all(|x| *x == 0.0) {
        vector[0] = 1.0;
    }
    vector
}

/// Answers an embeddings request body.
pub(crate) fn respond(body: &Value) -> Response {
    let inputs: Vec<String> = match &body["input"] {
        Value::String(text) => vec![text.clone()],
        Value::Array(items) => items.iter().map(|item| item.as_str().unwrap_or_default().to_owned()).collect(),
        _ => return (StatusCode::BAD_REQUEST, "input must be a string or an array").into_response(),
    };
    let base64 = body["encoding_format"] == "base64";
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let vector = embed(text);
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    axum::Json(json!({"object": "list", "data": data, "model": body["model"],
                      "usage": {"prompt_tokens": 0, "total_tokens": 0}}))
    .into_response()
}

#[derive(Default)]
struct Shared {
    failing: AtomicBool,
    refuse_base64: AtomicBool,
    requests: AtomicUsize,
    base64_requests: AtomicUsize,
}

/// A stand-alone fake embeddings server that can be switched to failing.
pub struct FakeEmbeddings {
    url: String,
    shared: Arc<Shared>,
}

async fn handle(State(shared): State<Arc<Shared>>, axum::Json(body): axum::Json<Value>) -> Response {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    if shared.failing.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "switched off by the test").into_response();
    }
    if !body["encoding_format"].is_null() {
        if shared.refuse_base64.load(Ordering::SeqCst) {
            let error =
                json!({"error": {"message": "unknown field `encoding_format`", "type": "invalid_request_error"}});
            return (StatusCode::BAD_REQUEST, axum::Json(error)).into_response();
        }
        if body["encoding_format"] == "base64" {
            shared.base64_requests.fetch_add(1, Ordering::SeqCst);
        }
    }
    respond(&body)
}

impl FakeEmbeddings {
    /// Binds `127.0.0.1:0` and starts serving.
    ///
    /// # Panics
    /// When no local port can be bound (test set-up failure).
    pub async fn start() -> FakeEmbeddings {
        let shared = Arc::new(Shared::default());
        let app = Router::new().route("/v1/embeddings", post(handle)).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the fake embeddings server");
        let url = format!("http://{}/v1", listener.local_addr().expect("local address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeEmbeddings { url, shared }
    }

    /// The versioned base URL (`http://127.0.0.1:<port>/v1`).
    pub fn base_url(&self) -> &str {
        &self.url
    }

    /// Makes every request fail with 503 (or succeed again).
    pub fn set_failing(&self, failing: bool) {
        self.shared.failing.store(failing, Ordering::SeqCst);
    }

    /// Makes the server reject every request that names an `encoding_format` with 400, as servers that
    /// predate the field do (or accept it again).
    pub fn refuse_base64(&self, refuse: bool) {
        self.shared.refuse_base64.store(refuse, Ordering::SeqCst);
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Requests answered with base64 vectors so far.
    pub fn base64_requests(&self) -> usize {
        self.shared.base64_requests.load(Ordering::SeqCst)
    }
}
