//! An in-process fake of the WhatsApp Cloud API (Graph API) speaking the real wire format:
//! `GET /v21.0/{phone_number_id}` and `POST /v21.0/{phone_number_id}/messages` with `Authorization:
//! Bearer`, answers `{messaging_product, contacts, messages: [{id: "wamid.…"}]}` or Graph errors
//! `{error: {message, type, code, error_data, fbtrace_id}}`. It also builds the webhook payloads Meta
//! posts (`whatsapp_business_account` entries with `metadata.phone_number_id`) and signs them with
//! `X-Hub-Signature-256` the way Meta does.
//!
//! ```ignore
//! let whatsapp = FakeWhatsApp::start("token", "1555").await;
//! let body = whatsapp_text("1555", "491701234567", "wamid.A", "hello");
//! // POST body to /webhooks/whatsapp with header ("X-Hub-Signature-256", hub_signature("app-secret", &body))
//! whatsapp.api.wait_for_calls(SEND_MESSAGE, 1).await;
//! ```

use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::fake_http::{Admission, CallLog, Failure};

/// Route names in [`FakeWhatsApp::api`].
pub const SEND_MESSAGE: &str = "messages";
pub const PHONE_NUMBER: &str = "phone_number";

/// Graph's refusal of free-form text outside the 24-hour customer-service window.
pub fn outside_window() -> Failure {
    Failure::new(
        400,
        json!({"error": {
            "message": "(#131047) Re-engagement message", "type": "OAuthException", "code": 131047,
            "error_data": {"messaging_product": "whatsapp",
                           "details": "Message failed to send because more than 24 hours have passed since the customer last replied to this number."},
            "fbtrace_id": "AbCdEf"}}),
    )
}

/// Graph's rate limit (`130429`), with HTTP 429 and `Retry-After`.
pub fn rate_limited(retry_after: u64) -> Failure {
    Failure::new(
        429,
        json!({"error": {"message": "(#130429) Rate limit hit", "type": "OAuthException", "code": 130429}}),
    )
    .header("retry-after", retry_after.to_string())
}

/// `sha256=<hex>` of the body under the app secret, as Meta sends it in `X-Hub-Signature-256`.
pub fn hub_signature(app_secret: &str, body: &[u8]) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(app_secret.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A webhook body carrying one inbound message (`message` is the Cloud API message object without
/// `from`/`id`, e.g. `{"type": "text", "text": {"body": "hi"}}`).
pub fn whatsapp_webhook(phone_number_id: &str, from: &str, id: &str, message: Value) -> Vec<u8> {
    let mut message = message;
    message["from"] = json!(from);
    message["id"] = json!(id);
    message["timestamp"] = json!("1790000000");
    json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA1", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550001111", "phone_number_id": phone_number_id},
        "contacts": [{"profile": {"name": format!("User {from}")}, "wa_id": from}],
        "messages": [message],
    }}]}]})
    .to_string()
    .into_bytes()
}

/// A webhook body with one text message.
pub fn whatsapp_text(phone_number_id: &str, from: &str, id: &str, text: &str) -> Vec<u8> {
    whatsapp_webhook(phone_number_id, from, id, json!({"type": "text", "text": {"body": text}}))
}

struct Shared {
    token: String,
    phone_number_id: String,
    next_id: Mutex<u64>,
}

/// The running fake; stops when dropped.
pub struct FakeWhatsApp {
    api_base: String,
    /// Every Graph API call.
    pub api: Arc<CallLog>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeWhatsApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeWhatsApp {
    /// Starts on loopback, accepting only `token` and serving the one business number `phone_number_id`.
    pub async fn start(token: &str, phone_number_id: &str) -> FakeWhatsApp {
        let shared = Arc::new(Shared {
            token: token.to_owned(),
            phone_number_id: phone_number_id.to_owned(),
            next_id: Mutex::new(0),
        });
        let api = Arc::new(CallLog::default());
        let app = Router::new()
            .route("/v21.0/{phone}", axum::routing::get(phone_number))
            .route("/v21.0/{phone}/messages", axum::routing::post(send_message))
            .with_state((shared, api.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind fake whatsapp");
        let api_base = format!("http://{}/v21.0", listener.local_addr().expect("local addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeWhatsApp { api_base, api, task }
    }

    /// What `WHATSAPP_API_BASE` should be (ends in `/v21.0`).
    pub fn api_base(&self) -> &str {
        &self.api_base
    }
}

type AppState = State<(Arc<Shared>, Arc<CallLog>)>;

fn graph_error(status: u16, code: i64, message: &str) -> Response {
    (&Failure::new(status, json!({"error": {"message": message, "type": "OAuthException", "code": code}})))
        .into_response()
}

async fn admit(
    shared: &Shared,
    api: &CallLog,
    route: &str,
    phone: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<usize, Response> {
    let authorization = headers.get("authorization").and_then(|value| value.to_str().ok()).map(str::to_owned);
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let Admission { index, failure, hold } = api.admit(route, &format!("/{phone}"), authorization.clone(), parsed);
    if authorization.as_deref() != Some(format!("Bearer {}", shared.token).as_str()) {
        return Err(graph_error(401, 190, "Invalid OAuth access token - Cannot parse access token"));
    }
    if phone != shared.phone_number_id {
        return Err(graph_error(400, 100, "Unsupported post request. Object does not exist"));
    }
    if hold {
        std::future::pending::<()>().await;
    }
    match failure {
        Some(failure) => Err((&failure).into_response()),
        None => Ok(index),
    }
}

async fn phone_number(State((shared, api)): AppState, Path(phone): Path<String>, headers: HeaderMap) -> Response {
    match admit(&shared, &api, PHONE_NUMBER, &phone, &headers, &Bytes::new()).await {
        Ok(index) => {
            let answer =
                json!({"id": phone, "display_phone_number": "+1 555-000-1111", "verified_name": "Cortex Test"});
            api.answered(index, answer.clone());
            axum::Json(answer).into_response()
        }
        Err(response) => response,
    }
}

async fn send_message(
    State((shared, api)): AppState,
    Path(phone): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match admit(&shared, &api, SEND_MESSAGE, &phone, &headers, &body).await {
        Ok(index) => {
            let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if parsed["messaging_product"] != "whatsapp" {
                return graph_error(400, 100, "The parameter messaging_product is required.");
            }
            let id = {
                let mut next = shared.next_id.lock().unwrap_or_else(PoisonError::into_inner);
                *next += 1;
                format!("wamid.OUT{next:06}")
            };
            let answer = json!({"messaging_product": "whatsapp", "contacts": [{"input": parsed["to"], "wa_id": parsed["to"]}],
                                "messages": [{"id": id}]});
            api.answered(index, answer.clone());
            axum::Json(answer).into_response()
        }
        Err(response) => response,
    }
}
