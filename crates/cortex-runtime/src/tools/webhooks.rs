//! Webhook tools defined by operators (SPEC §6.3), built from their `webhook_tool` rows with the secret
//! headers decrypted at call-resolution time (they never reach the model, a log or the ledger), plus the
//! `tool_secret` credentials their `credential_refs` name, injected as headers the same way.

use std::sync::Arc;

use cortex_store::secrets::{Cipher, SecretRef};
use cortex_store::tools::WebhookToolRecord;
use cortex_store::{Store, StoreError};
use cortex_tools::Tool;
use cortex_tools::http::GuardedHttp;
use cortex_tools::webhook::{CredentialRef, WebhookTool, WebhookToolDef};

use super::credentials::{CredentialUse, TOOL_SECRET_KIND, secret_of};

/// The callable tool of a stored definition; the inner error says why it cannot be used.
pub(super) async fn build(
    record: WebhookToolRecord,
    store: &Store,
    cipher: &Cipher,
    http: Arc<GuardedHttp>,
) -> Result<Result<Arc<dyn Tool>, String>, StoreError> {
    let mut headers: std::collections::BTreeMap<String, String> = match &record.headers_enc {
        Some(stored) => match cipher.decrypt_json(&SecretRef::new("webhook_tool", "headers_enc", record.id), stored) {
            Ok(headers) => headers,
            Err(err) => return Ok(Err(err.to_string())),
        },
        None => Default::default(),
    };
    let references: Vec<CredentialRef> = match serde_json::from_value(record.credential_refs.clone()) {
        Ok(references) => references,
        Err(err) => return Ok(Err(format!("credential_refs: {err}"))),
    };
    let mut uses = Vec::new();
    for reference in &references {
        let value = match secret_of(store, cipher, TOOL_SECRET_KIND, &reference.credential).await? {
            Ok(value) => value,
            Err(reason) => return Ok(Err(reason)),
        };
        let (name, value) = reference.header(&value);
        headers.retain(|existing, _| !existing.eq_ignore_ascii_case(&name));
        headers.insert(name, value);
        uses.push((TOOL_SECRET_KIND, reference.credential.clone()));
    }
    let timeout_ms = match u64::try_from(record.timeout_ms) {
        Ok(timeout_ms) => timeout_ms,
        Err(_) => return Ok(Err("negative timeout_ms".to_owned())),
    };
    let risk = match record.risk.parse() {
        Ok(risk) => risk,
        Err(err) => return Ok(Err(format!("risk: {err}"))),
    };
    let def = WebhookToolDef {
        name: record.name,
        description: record.description,
        input_schema: record.input_schema,
        url: record.url,
        method: record.method,
        headers,
        timeout_ms,
        risk,
        idempotent: record.idempotent,
    };
    Ok(WebhookTool::new(def, http).map(|tool| CredentialUse::wrap(Arc::new(tool), store.clone(), uses)))
}
