//! The process's secret set and its one [`Redactor`] (SPEC Appendix B "Credentials").
//!
//! Built from every `provider_credential` value (all kinds, their refresh tokens included) plus the
//! secret-looking variables of the environment the runtime was given (`*_KEY`, `*_TOKEN`, `*_SECRET`,
//! `*_PASSWORD`), and rebuilt when the rows change: [`Secrets::refresh`] reads the rows (one query), and
//! decrypts only when their fingerprint moved. It runs at the start of every job run and before every
//! tool result is recorded, and the API calls it after each credential change, so a value added anywhere
//! is redacted in this process from its next use on.
//!
//! Where the redactor is applied (all in the runtime, where data enters): tool results before they reach
//! the ledger, the context or events; model output (streamed deltas, the message, tool-call arguments)
//! before it is stored, streamed or becomes an answer (session message, job result, channel reply);
//! provider errors and every job error text. The binary also applies the same [`SharedRedactor`] to
//! every log line.
//!
//! The same pass hands the memory embedder its key: the first `embedding` credential by name that is not
//! disabled ([`EmbeddingKey`]); without one the embedder uses its configured key.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};

use cortex_core::redact::{Redactor, SharedRedactor};
use cortex_memory::{EmbeddingKey, ManagedKey};
use cortex_store::credentials::{refresh_ref, secret_ref};
use cortex_store::secrets::Cipher;
use cortex_store::{Store, StoreError};

/// Environment variable name endings whose values are secrets.
const SECRET_VAR_SUFFIXES: [&str; 4] = ["_KEY", "_TOKEN", "_SECRET", "_PASSWORD"];

/// `provider_credential.kind` of embedding service keys.
const EMBEDDING_KIND: &str = "embedding";

/// The secret set of the process.
pub(crate) struct Secrets {
    store: Store,
    cipher: Arc<Cipher>,
    shared: SharedRedactor,
    env_values: Vec<String>,
    /// The key the memory embedder uses.
    embedding_key: EmbeddingKey,
    /// Fingerprint of the rows the current redactor was built from.
    built_from: Mutex<Option<u64>>,
}

impl Secrets {
    pub(crate) fn new(
        store: Store,
        cipher: Arc<Cipher>,
        shared: SharedRedactor,
        embedding_key: EmbeddingKey,
        env: &BTreeMap<String, String>,
    ) -> Secrets {
        let env_values = env
            .iter()
            .filter(|(name, _)| SECRET_VAR_SUFFIXES.iter().any(|suffix| name.ends_with(suffix)))
            .map(|(_, value)| value.trim().to_owned())
            .filter(|value| !value.is_empty())
            .collect();
        Secrets { store, cipher, shared, env_values, embedding_key, built_from: Mutex::new(None) }
    }

    /// The current redactor (as of the last refresh).
    pub(crate) fn current(&self) -> Arc<Redactor> {
        self.shared.get()
    }

    /// The handle the binary's log writer and the API share.
    pub(crate) fn shared(&self) -> SharedRedactor {
        self.shared.clone()
    }

    /// Rebuilds the redactor when a credential value changed since the last build; returns it.
    pub(crate) async fn refresh(&self) -> Result<Arc<Redactor>, StoreError> {
        let rows = self.store.list_credentials().await?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        for row in &rows {
            (row.id, &row.secret_enc, &row.refresh_enc, &row.status).hash(&mut hasher);
        }
        let fingerprint = hasher.finish();
        if *self.built_from.lock().unwrap_or_else(PoisonError::into_inner) == Some(fingerprint) {
            return Ok(self.shared.get());
        }
        let mut values = self.env_values.clone();
        let mut embedding = None;
        for row in &rows {
            if row.kind == EMBEDDING_KIND && row.status != "disabled" && embedding.is_none() {
                match crate::tools::credentials::decrypt(&self.cipher, row) {
                    Ok(value) => embedding = Some(ManagedKey { credential: row.name.clone(), value }),
                    Err(reason) => tracing::warn!(%reason, "embedding credential unusable"),
                }
            }
            let stored =
                [(row.secret_enc.as_ref(), secret_ref(row.id)), (row.refresh_enc.as_ref(), refresh_ref(row.id))];
            for (ciphertext, aad) in stored {
                let Some(ciphertext) = ciphertext else { continue };
                match self.cipher.decrypt(&aad, ciphertext) {
                    Ok(bytes) => values.push(String::from_utf8_lossy(&bytes).into_owned()),
                    Err(err) => {
                        tracing::warn!(credential = %row.name, error = %err, "a stored credential cannot be decrypted; it is not redacted")
                    }
                }
            }
        }
        self.shared.set(Redactor::new(&values));
        self.embedding_key.set(embedding);
        *self.built_from.lock().unwrap_or_else(PoisonError::into_inner) = Some(fingerprint);
        Ok(self.shared.get())
    }
}
