//! Webhook tools defined by operators (SPEC §6.3), built from their `webhook_tool` rows with the secret
//! headers decrypted at call-resolution time (they never reach the model, a log or the ledger).

use std::sync::Arc;

use cortex_store::secrets::{Cipher, SecretRef};
use cortex_store::tools::WebhookToolRecord;
use cortex_tools::http::GuardedHttp;
use cortex_tools::webhook::{WebhookTool, WebhookToolDef};

/// The callable tool of a stored definition; the error says why it cannot be used.
pub(super) fn build(record: WebhookToolRecord, cipher: &Cipher, http: Arc<GuardedHttp>) -> Result<WebhookTool, String> {
    let headers = match &record.headers_enc {
        Some(stored) => cipher
            .decrypt_json(&SecretRef::new("webhook_tool", "headers_enc", record.id), stored)
            .map_err(|err| err.to_string())?,
        None => Default::default(),
    };
    let def = WebhookToolDef {
        name: record.name,
        description: record.description,
        input_schema: record.input_schema,
        url: record.url,
        method: record.method,
        headers,
        timeout_ms: u64::try_from(record.timeout_ms).map_err(|_| "negative timeout_ms".to_owned())?,
        risk: record.risk.parse().map_err(|err| format!("risk: {err}"))?,
        idempotent: record.idempotent,
    };
    WebhookTool::new(def, http)
}
