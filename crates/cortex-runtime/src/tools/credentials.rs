//! Tools that send stored credentials (SPEC §6.2 `web_search` with a `search` credential, §6.3 webhook
//! `credential_refs` with `tool_secret` credentials): looking a credential up for a run, and recording its
//! use so `GET /credentials` shows a true `last_used_at`.
//!
//! A credential is resolved each time an agent's tool set is built (every job run), so a value added,
//! rotated, disabled or deleted through the API applies from the next run on without a restart. A missing
//! or disabled credential makes the tool unresolvable with a reason naming it (shown in
//! `GET /agents/{id}/tools`), never a call with a stale or empty secret.

use std::sync::Arc;

use cortex_core::approval::RiskTier;
use cortex_store::credentials::{ProviderCredential, secret_ref};
use cortex_store::secrets::Cipher;
use cortex_store::{Store, StoreError};
use cortex_tools::{DataScope, Tool, ToolContext, ToolError, ToolOutput};
use serde_json::Value;

/// `provider_credential.kind` of search provider keys.
pub(crate) const SEARCH_KIND: &str = "search";
/// `provider_credential.kind` of secrets webhook tools send.
pub(crate) const TOOL_SECRET_KIND: &str = "tool_secret";

/// The decrypted value of credential `kind`/`name`, or why it cannot be used.
pub(crate) async fn secret_of(
    store: &Store,
    cipher: &Cipher,
    kind: &str,
    name: &str,
) -> Result<Result<String, String>, StoreError> {
    let Some(row) = store.credential(kind, name).await? else {
        return Ok(Err(format!("there is no {kind} credential `{name}`")));
    };
    Ok(decrypt(cipher, &row))
}

/// The value of a usable row, or why it is not usable.
pub(crate) fn decrypt(cipher: &Cipher, row: &ProviderCredential) -> Result<String, String> {
    if row.status == "disabled" {
        return Err(format!("the {} credential `{}` is disabled", row.kind, row.name));
    }
    let Some(stored) = &row.secret_enc else {
        return Err(format!("the {} credential `{}` has no value", row.kind, row.name));
    };
    let bytes = cipher
        .decrypt(&secret_ref(row.id), stored)
        .map_err(|_| format!("the {} credential `{}` cannot be decrypted", row.kind, row.name))?;
    String::from_utf8(bytes).map_err(|_| format!("the {} credential `{}` is not UTF-8", row.kind, row.name))
}

/// A tool whose successful calls count as uses of the credentials it sends.
pub(crate) struct CredentialUse {
    inner: Arc<dyn Tool>,
    store: Store,
    /// (kind, name) of each credential the tool sends.
    uses: Vec<(&'static str, String)>,
}

impl CredentialUse {
    /// `inner`, recording `uses` after each call that got an answer (an HTTP error from the endpoint
    /// still proves the credential was sent).
    pub(crate) fn wrap(inner: Arc<dyn Tool>, store: Store, uses: Vec<(&'static str, String)>) -> Arc<dyn Tool> {
        if uses.is_empty() {
            return inner;
        }
        Arc::new(CredentialUse { inner, store, uses })
    }

    async fn record(&self) -> Result<(), StoreError> {
        let mut tx = self.store.begin().await?;
        for (kind, name) in &self.uses {
            tx.record_credential_success(kind, name).await?;
        }
        tx.commit().await
    }
}

#[async_trait::async_trait]
impl Tool for CredentialUse {
    fn tool_ref(&self) -> &str {
        self.inner.tool_ref()
    }

    fn description(&self) -> &str {
        self.inner.description()
    }

    fn input_schema(&self) -> &Value {
        self.inner.input_schema()
    }

    fn default_risk(&self, input: &Value) -> RiskTier {
        self.inner.default_risk(input)
    }

    fn is_idempotent(&self, input: &Value) -> bool {
        self.inner.is_idempotent(input)
    }

    fn sends_data_out(&self, input: &Value, scope: &DataScope) -> bool {
        self.inner.sends_data_out(input, scope)
    }

    async fn call(&self, input: Value, ctx: &ToolContext) -> Result<ToolOutput, ToolError> {
        let output = self.inner.call(input, ctx).await?;
        if let Err(err) = self.record().await {
            tracing::warn!(error = %err, tool = %self.inner.tool_ref(), "credential use not recorded");
        }
        Ok(output)
    }
}
