//! The process's secret set and its one [`Redactor`] (SPEC Appendix B "Credentials").
//!
//! Built from every `provider_credential` value (all kinds, their refresh tokens included) plus the
//! secret-looking variables of the environment the runtime was given (`*_KEY`, `*_TOKEN`, `*_SECRET`,
//! `*_PASSWORD`), and rebuilt when the rows change. Every credential write commits a
//! [`Notification::Credentials`] (in-process broadcast on SQLite, `NOTIFY` delivered at commit to every
//! process on PostgreSQL); [`Secrets::refresh`], which runs at the start of every job run and before
//! every tool result is recorded, first drains this process's subscription and reads the rows (one
//! query) only when such a notification — or a `Resync`, or a lag that may have dropped one — arrived
//! since the last build. While nothing changed it reads nothing. The API forces a rebuild after its own
//! credential changes ([`Secrets::reload`]), so a value added here is redacted from its next use on; one
//! added by another process is redacted from the first use after its notification arrived (milliseconds).
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use cortex_core::redact::{Redactor, SharedRedactor};
use cortex_memory::{EmbeddingKey, ManagedKey};
use cortex_store::credentials::{refresh_ref, secret_ref};
use cortex_store::secrets::Cipher;
use cortex_store::{Notification, Store, StoreError};
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::TryRecvError;

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
    /// This process's change notifications and whether the set must be rebuilt before its next use
    /// (`true` until the first build, and after any credential write, resync or lag).
    changes: Mutex<Changes>,
    /// Held while the set is checked or rebuilt, so a caller never gets the previous set while another
    /// caller is still rebuilding it after a change.
    rebuilding: tokio::sync::Mutex<()>,
    /// How many times the rows were read (observability and tests).
    reads: AtomicU64,
}

/// The subscription [`Secrets::refresh`] drains.
struct Changes {
    receiver: Receiver<Notification>,
    stale: bool,
}

impl Changes {
    /// Takes every pending notification; whether the secret set must be rebuilt. Clears the mark: a
    /// write committed after this call notifies again.
    fn take_stale(&mut self) -> bool {
        loop {
            match self.receiver.try_recv() {
                Ok(Notification::Credentials | Notification::Resync) | Err(TryRecvError::Lagged(_)) => {
                    self.stale = true;
                }
                Ok(_) => {}
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
        std::mem::take(&mut self.stale)
    }
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
        let changes = Mutex::new(Changes { receiver: store.subscribe(), stale: true });
        let (rebuilding, reads) = (tokio::sync::Mutex::new(()), AtomicU64::new(0));
        Secrets { store, cipher, shared, env_values, embedding_key, changes, rebuilding, reads }
    }

    /// The current redactor (as of the last refresh).
    pub(crate) fn current(&self) -> Arc<Redactor> {
        self.shared.get()
    }

    /// The handle the binary's log writer and the API share.
    pub(crate) fn shared(&self) -> SharedRedactor {
        self.shared.clone()
    }

    /// How many times the credential rows were read since start.
    pub(crate) fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// Rebuilds the redactor when a credential was written since the last build; returns it.
    pub(crate) async fn refresh(&self) -> Result<Arc<Redactor>, StoreError> {
        let _rebuilding = self.rebuilding.lock().await;
        let stale = self.changes.lock().unwrap_or_else(PoisonError::into_inner).take_stale();
        if !stale {
            return Ok(self.shared.get());
        }
        self.rebuild().await.inspect_err(|_| self.mark_stale())
    }

    /// Rebuilds the redactor from the rows now; returns it.
    pub(crate) async fn reload(&self) -> Result<Arc<Redactor>, StoreError> {
        let _rebuilding = self.rebuilding.lock().await;
        self.rebuild().await
    }

    async fn rebuild(&self) -> Result<Arc<Redactor>, StoreError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let rows = self.store.list_credentials().await?;
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
        Ok(self.shared.get())
    }

    /// A failed rebuild is tried again on the next use.
    fn mark_stale(&self) {
        self.changes.lock().unwrap_or_else(PoisonError::into_inner).stale = true;
    }
}
