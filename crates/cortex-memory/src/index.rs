//! Vector indexes (SPEC §9.5) behind one trait, and the choice of backend (`CORTEX_VECTOR_BACKEND`,
//! [`open_index`]). The backends: `embedded.rs` (quantised in-process scan, either engine), `qdrant.rs`,
//! `pgvector.rs`. The embedded backend keeps the keyword side in process too (`keyword.rs`); with the
//! others the store's full-text index answers it ([`Indexes`]).

use std::sync::Arc;

use cortex_store::{Store, StoreError};

pub use crate::embedded::{EmbeddedIndex, IndexReads};
pub use crate::keyword::KeywordIndex;
use crate::pgvector::PgVectorIndex;
pub use crate::qdrant::QdrantIndex;
use uuid::Uuid;

/// What a [`Memory`](crate::Memory) searches with: a vector index and, with the embedded backend, the
/// in-process keyword index (`None`: keyword candidates come from the store's full-text index).
#[derive(Clone)]
pub struct Indexes {
    pub vectors: Arc<dyn VectorIndex>,
    pub keywords: Option<Arc<KeywordIndex>>,
}

impl Indexes {
    /// The embedded backend: vectors and keywords in process, caches of the store's rows.
    pub fn embedded(store: &Store) -> Self {
        Self::embedded_with(Arc::new(EmbeddedIndex::new(store.clone())), store)
    }

    /// The embedded backend around an existing vector index (benchmarks and tests that also use it alone).
    pub fn embedded_with(vectors: Arc<EmbeddedIndex>, store: &Store) -> Self {
        Self { vectors, keywords: Some(Arc::new(KeywordIndex::new(store.clone()))) }
    }

    /// A vector backend outside the process; keywords from the store's full-text index.
    pub fn external(vectors: Arc<dyn VectorIndex>) -> Self {
        Self { vectors, keywords: None }
    }
}

/// Why the index could not answer; search then degrades to keyword only.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("vector index unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Nearest-neighbour search over the agents' record vectors. Every call names the agent; an
/// implementation must never return another agent's ids.
#[async_trait::async_trait]
pub trait VectorIndex: Send + Sync {
    /// Backend name for diagnostics (`sqlite`, `pgvector`, `qdrant`).
    fn name(&self) -> &'static str;

    /// Up to `k` live records of the agent with vectors of `model`, nearest to the unit vector `query`
    /// first, with their cosine similarity.
    async fn search(
        &self,
        agent_id: Uuid,
        model: &str,
        query: &[f32],
        k: usize,
    ) -> Result<Vec<(Uuid, f32)>, IndexError>;

    /// A record's vector was stored, replaced or removed in the store (after commit).
    async fn changed(&self, agent_id: Uuid) -> Result<(), IndexError>;
}

/// Which vector backend a process uses (`CORTEX_VECTOR_BACKEND`, SPEC §9.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VectorBackend {
    /// Qdrant when `QDRANT_URL` is set, else pgvector on PostgreSQL when the extension exists, else embedded.
    Auto,
    /// The embedded index over the vectors stored in `memory_record` (either engine).
    Sqlite,
    /// pgvector HNSW in PostgreSQL.
    Pgvector,
    /// Qdrant over its REST API (`QDRANT_URL`).
    Qdrant,
}

impl std::str::FromStr for VectorBackend {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "sqlite" | "embedded" => Ok(Self::Sqlite),
            "pgvector" => Ok(Self::Pgvector),
            "qdrant" => Ok(Self::Qdrant),
            other => Err(format!("`{other}` is not one of auto, sqlite, pgvector, qdrant")),
        }
    }
}

/// Where Qdrant answers (`QDRANT_URL`, `QDRANT_API_KEY`).
#[derive(Clone)]
pub struct QdrantConfig {
    /// REST base URL, e.g. `http://127.0.0.1:6333`.
    pub url: String,
    pub api_key: Option<String>,
}

impl std::fmt::Debug for QdrantConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QdrantConfig").field("url", &self.url).field("api_key", &self.api_key.is_some()).finish()
    }
}

/// The resolved vector settings (parsed from the environment by the runtime).
#[derive(Debug, Clone)]
pub struct VectorConfig {
    pub backend: VectorBackend,
    /// Set when `QDRANT_URL` is.
    pub qdrant: Option<QdrantConfig>,
}

impl Default for VectorConfig {
    fn default() -> Self {
        Self { backend: VectorBackend::Auto, qdrant: None }
    }
}

/// Builds the configured backend. An explicitly chosen backend that cannot work here is an error (the
/// process refuses to start); `auto` falls back to the embedded index.
pub async fn open_index(config: &VectorConfig, store: &Store, http: reqwest::Client) -> Result<Indexes, IndexError> {
    match (config.backend, &config.qdrant) {
        (VectorBackend::Sqlite, _) => Ok(Indexes::embedded(store)),
        (VectorBackend::Pgvector, _) => match PgVectorIndex::open(store.clone()).await? {
            Some(index) => Ok(Indexes::external(Arc::new(index))),
            None => {
                Err(IndexError::Unavailable("`pgvector` needs PostgreSQL where `CREATE EXTENSION vector` works".into()))
            }
        },
        (VectorBackend::Auto, None) => match PgVectorIndex::open(store.clone()).await? {
            Some(index) => {
                tracing::info!("memory vectors: pgvector");
                Ok(Indexes::external(Arc::new(index)))
            }
            None => Ok(Indexes::embedded(store)),
        },
        (VectorBackend::Qdrant, None) => Err(IndexError::Unavailable("`qdrant` needs QDRANT_URL".into())),
        (VectorBackend::Qdrant | VectorBackend::Auto, Some(qdrant)) => {
            Ok(Indexes::external(Arc::new(QdrantIndex::new(store.clone(), http, qdrant))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_parse_by_name() {
        assert_eq!("AUTO".parse::<VectorBackend>(), Ok(VectorBackend::Auto));
        assert_eq!("sqlite".parse::<VectorBackend>(), Ok(VectorBackend::Sqlite));
        assert_eq!("pgvector".parse::<VectorBackend>(), Ok(VectorBackend::Pgvector));
        assert_eq!("qdrant".parse::<VectorBackend>(), Ok(VectorBackend::Qdrant));
        assert!("faiss".parse::<VectorBackend>().is_err());
    }
}
