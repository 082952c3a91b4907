//! Embeddings (SPEC §9.4): the [`Embedder`] trait, the OpenAI-compatible `POST {base}/embeddings` client
//! (OpenAI, Ollama, vLLM, LiteLLM …), the entry point to the in-process model ([`local_embedder`], real
//! only with the `local-embeddings` feature) and the vector byte format stored in `memory_record.embedding`.
//!
//! Vectors are L2-normalised before they leave this module, so cosine similarity is a dot product
//! everywhere else.
//!
//! The client asks for `"encoding_format": "base64"` (little-endian f32s, as OpenAI's own SDKs do): a
//! 1,536-dimension vector as JSON numbers costs about a million instructions to parse, its base64 a few
//! thousand. A server that ignores the field and sends numbers is read as well; one that refuses it (400
//! or 422) is asked again without it, and this client keeps to numbers from then on.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Deserializer};
use serde_json::json;

/// Most inputs per request (SPEC §9.4).
pub const MAX_BATCH: usize = 64;
/// Per-request timeout of the API client.
pub const API_TIMEOUT: Duration = Duration::from_secs(30);
/// The API model when none is configured.
pub const DEFAULT_API_MODEL: &str = "text-embedding-3-small";

/// Whether this build has the in-process embedder (cargo feature `local-embeddings`).
pub const LOCAL_EMBEDDINGS_BUILT: bool = cfg!(feature = "local-embeddings");
/// Where the local model is looked for, relative to the data dir, unless `CORTEX_EMBEDDINGS_MODEL_DIR` says.
pub const DEFAULT_LOCAL_MODEL_DIR: &str = "models/all-MiniLM-L6-v2";

/// Sentences per forward pass of the local model: large enough to amortise the per-call cost, small
/// enough that padding to the longest sentence of a batch wastes little.
pub const LOCAL_BATCH: usize = 32;

/// Whether `dir` holds the files a local model needs (and this build can run it): `auto` picks `local` then.
pub fn local_model_present(dir: &Path) -> bool {
    LOCAL_EMBEDDINGS_BUILT
        && ["config.json", "tokenizer.json", "model.safetensors"].iter().all(|f| dir.join(f).is_file())
}

/// Loads the in-process model in `dir` (blocking: reads the weights). Fails with a reason a person can act
/// on when files are missing or the build lacks the `local-embeddings` feature.
pub fn local_embedder(dir: &Path) -> Result<Arc<dyn Embedder>, EmbedError> {
    #[cfg(feature = "local-embeddings")]
    {
        Ok(Arc::new(crate::local::LocalEmbedder::load(dir)?))
    }
    #[cfg(not(feature = "local-embeddings"))]
    {
        Err(EmbedError::Unavailable(format!(
            "local embeddings (model dir {}) need a binary built with `--features local-embeddings`; \
             use CORTEX_EMBEDDINGS=api or none with this one",
            dir.display()
        )))
    }
}

/// Why texts could not be embedded.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// The embedding service cannot be reached or refused the call; retry later.
    #[error("embedding service unavailable: {0}")]
    Unavailable(String),
    /// The service answered something unusable (wrong count, empty or non-finite vectors).
    #[error("embedding service answered unusably: {0}")]
    Invalid(String),
}

/// Turns texts into unit-length vectors of one fixed model.
#[async_trait::async_trait]
pub trait Embedder: Send + Sync {
    /// The model id stored beside every vector; vectors of different models are never compared.
    fn model(&self) -> &str;

    /// One unit-length vector per text, in order.
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError>;
}

/// Which embedder a process uses (`CORTEX_EMBEDDINGS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbeddingsMode {
    /// The OpenAI-compatible HTTP API.
    Api,
    /// The in-process model of [`local_embedder`].
    Local,
    /// No embeddings: keyword search only.
    None,
}

/// The resolved embedding settings (parsed from the environment by the runtime).
#[derive(Debug, Clone)]
pub struct EmbeddingsConfig {
    pub mode: EmbeddingsMode,
    /// Versioned base URL (`…/v1`); the client appends `/embeddings`.
    pub base_url: String,
    pub api_key: Option<String>,
    pub model: String,
    /// `CORTEX_EMBEDDINGS_MODEL_DIR`: the local model's directory (default: [`DEFAULT_LOCAL_MODEL_DIR`] in
    /// the data dir).
    pub local_dir: Option<std::path::PathBuf>,
    /// `auto` found no API settings: use the local model if its files are present, else none.
    pub auto_local: bool,
}

/// A managed `embedding` credential (name and value), set by the runtime whenever its secret set changes.
#[derive(Clone)]
pub struct ManagedKey {
    pub credential: String,
    pub value: String,
}

/// Where [`ApiEmbedder`] gets its key at call time: the managed `embedding` credential when one is set
/// (so adding, rotating or deleting it through the API applies without a restart), else the key of the
/// configuration (`CORTEX_EMBEDDINGS_API_KEY` / `OPENAI_API_KEY`).
#[derive(Clone, Default)]
pub struct EmbeddingKey(std::sync::Arc<std::sync::RwLock<Option<ManagedKey>>>);

impl EmbeddingKey {
    /// Replaces the managed key (`None`: back to the configured one).
    pub fn set(&self, key: Option<ManagedKey>) {
        *self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = key;
    }

    fn get(&self) -> Option<ManagedKey> {
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// A managed credential's `last_used_at` is written at most this often.
const USE_RECORD_INTERVAL: Duration = Duration::from_secs(60);

/// The OpenAI-compatible embeddings client.
pub struct ApiEmbedder {
    http: reqwest::Client,
    url: String,
    api_key: Option<String>,
    model: String,
    managed: EmbeddingKey,
    /// Records uses of the managed credential (`last_used_at`), when set.
    store: Option<cortex_store::Store>,
    recorded: std::sync::Mutex<Option<(String, std::time::Instant)>>,
    /// Set once the server refused `"encoding_format": "base64"` and answered without it.
    numbers_only: AtomicBool,
}

impl std::fmt::Debug for ApiEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiEmbedder").field("url", &self.url).field("model", &self.model).finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct EmbeddingsResponse {
    data: Vec<EmbeddingItem>,
}

#[derive(Deserialize)]
struct EmbeddingItem {
    index: usize,
    embedding: WireVector,
}

/// One vector as the server sent it: base64 of little-endian f32s, or an array of numbers.
struct WireVector(Vec<f32>);

impl<'de> Deserialize<'de> for WireVector {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = WireVector;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a base64 string of little-endian f32s or an array of numbers")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<WireVector, E> {
                let bytes = BASE64.decode(text).map_err(E::custom)?;
                from_bytes(&bytes).map(WireVector).ok_or_else(|| E::custom("base64 vector is not whole f32s"))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut items: A) -> Result<WireVector, A::Error> {
                let mut vector = Vec::with_capacity(items.size_hint().unwrap_or(0));
                while let Some(item) = items.next_element::<f32>()? {
                    vector.push(item);
                }
                Ok(WireVector(vector))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl ApiEmbedder {
    pub fn new(http: reqwest::Client, config: &EmbeddingsConfig) -> Self {
        Self {
            http,
            url: format!("{}/embeddings", config.base_url.trim_end_matches('/')),
            api_key: config.api_key.clone(),
            model: config.model.clone(),
            managed: EmbeddingKey::default(),
            store: None,
            recorded: std::sync::Mutex::new(None),
            numbers_only: AtomicBool::new(false),
        }
    }

    /// Takes its key from `managed` when set, recording each use on that credential in `store`.
    pub fn with_managed_key(mut self, managed: EmbeddingKey, store: cortex_store::Store) -> Self {
        self.managed = managed;
        self.store = Some(store);
        self
    }

    /// `last_used_at` of the managed credential, at most once per [`USE_RECORD_INTERVAL`].
    async fn record_use(&self, credential: &str) {
        let Some(store) = &self.store else { return };
        {
            let mut recorded = self.recorded.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let due =
                recorded.as_ref().is_none_or(|(name, at)| name != credential || at.elapsed() >= USE_RECORD_INTERVAL);
            if !due {
                return;
            }
            *recorded = Some((credential.to_owned(), std::time::Instant::now()));
        }
        let written = async {
            let mut tx = store.begin().await?;
            tx.record_credential_success("embedding", credential).await?;
            tx.commit().await
        };
        if let Err(err) = written.await {
            tracing::warn!(error = %err, "embedding credential use not recorded");
        }
    }

    /// Sends one request: with `"encoding_format": "base64"` unless `numbers`.
    async fn post(
        &self,
        texts: &[String],
        managed: Option<&ManagedKey>,
        numbers: bool,
    ) -> Result<reqwest::Response, EmbedError> {
        let body = if numbers {
            json!({"model": self.model, "input": texts})
        } else {
            json!({"model": self.model, "input": texts, "encoding_format": "base64"})
        };
        let mut request = self.http.post(&self.url).timeout(API_TIMEOUT).json(&body);
        match (managed, &self.api_key) {
            (Some(managed), _) => request = request.bearer_auth(&managed.value),
            (None, Some(key)) => request = request.bearer_auth(key),
            (None, None) => {}
        }
        request.send().await.map_err(|err| EmbedError::Unavailable(err.without_url().to_string()))
    }

    async fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let managed = self.managed.get();
        let numbers = self.numbers_only.load(Ordering::Relaxed);
        let mut response = self.post(texts, managed.as_ref(), numbers).await?;
        let refused = matches!(response.status().as_u16(), 400 | 422);
        if !numbers && refused {
            // A server that does not know the base64 form: ask for numbers, and keep to them if that works.
            response = self.post(texts, managed.as_ref(), true).await?;
            if response.status().is_success() {
                tracing::info!("the embeddings endpoint refused base64 vectors; asking it for numbers from now on");
                self.numbers_only.store(true, Ordering::Relaxed);
            }
        }
        let status = response.status();
        if !status.is_success() {
            return Err(EmbedError::Unavailable(format!("HTTP {status} from the embeddings endpoint")));
        }
        if let Some(managed) = &managed {
            self.record_use(&managed.credential).await;
        }
        let body: EmbeddingsResponse =
            response.json().await.map_err(|err| EmbedError::Invalid(err.without_url().to_string()))?;
        if body.data.len() != texts.len() {
            return Err(EmbedError::Invalid(format!("{} vectors for {} inputs", body.data.len(), texts.len())));
        }
        let mut vectors: Vec<Option<Vec<f32>>> = vec![None; texts.len()];
        for item in body.data {
            let slot = vectors.get_mut(item.index).ok_or_else(|| EmbedError::Invalid("index out of range".into()))?;
            *slot = Some(normalised(item.embedding.0)?);
        }
        vectors.into_iter().map(|vector| vector.ok_or_else(|| EmbedError::Invalid("missing index".into()))).collect()
    }
}

#[async_trait::async_trait]
impl Embedder for ApiEmbedder {
    fn model(&self) -> &str {
        &self.model
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(MAX_BATCH) {
            out.extend(self.embed_batch(chunk).await?);
        }
        Ok(out)
    }
}

/// Scales a vector to unit length; refuses empty, zero or non-finite ones.
pub fn normalised(mut vector: Vec<f32>) -> Result<Vec<f32>, EmbedError> {
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if vector.is_empty() || !norm.is_finite() || norm == 0.0 {
        return Err(EmbedError::Invalid("empty, zero or non-finite vector".into()));
    }
    vector.iter_mut().for_each(|x| *x /= norm);
    Ok(vector)
}

/// The stored form: f32 little-endian.
pub fn to_bytes(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Reads the stored form; `None` when the length is not a whole number of f32s.
pub fn from_bytes(bytes: &[u8]) -> Option<Vec<f32>> {
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    Some(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_round_trip_and_are_unit_length() {
        let vector = normalised(vec![3.0, 4.0]).unwrap();
        assert_eq!(vector, vec![0.6, 0.8]);
        assert_eq!(from_bytes(&to_bytes(&vector)), Some(vector));
        assert_eq!(from_bytes(&[0, 1, 2]), None);
        assert!(normalised(vec![0.0, 0.0]).is_err());
        assert!(normalised(vec![f32::NAN]).is_err());
    }

    #[test]
    fn a_wire_vector_is_base64_of_little_endian_f32s_or_numbers() {
        let read = |json: &str| serde_json::from_str::<WireVector>(json).map(|vector| vector.0);
        let base64 = format!("\"{}\"", BASE64.encode(to_bytes(&[0.5, -2.0])));
        assert_eq!(read(&base64).unwrap(), vec![0.5, -2.0]);
        assert_eq!(read("[0.5, -2]").unwrap(), vec![0.5, -2.0]);
        assert!(read(&format!("\"{}\"", BASE64.encode([1, 2, 3]))).is_err(), "not whole f32s");
        assert!(read("\"not base64!\"").is_err());
        assert!(read("{}").is_err());
    }
}
