//! Agent memory (SPEC §9): what an agent remembers across sessions and how it recalls it.
//!
//! # Layout
//! - [`Memory`] (`service.rs`): the one entry point for writes and searches — validation, embedding on
//!   write, hybrid retrieval (keyword + vector, fused by reciprocal rank fusion, then scored), recall
//!   statistics. The API routes and the `memory_*` tools both go through it.
//! - [`scoring`]: the pure ranking rules (recency half-lives, utility, the 0.5/0.3/0.2 score, RRF).
//! - [`embed`]: the [`Embedder`] trait, the OpenAI-compatible `/v1/embeddings` client and the
//!   `CORTEX_EMBEDDINGS` configuration.
//! - `local.rs` + `bert.rs` (feature `local-embeddings`): the in-process MiniLM-class embedder — candle on
//!   the CPU, a vendored BERT encoder, weights from a local directory, never downloaded.
//! - [`extract`]: the extraction contract (SPEC §9.3): prompt, answer parsing, and the filter that files
//!   facts (drop, duplicate, supersede, insert) with the reason for each.
//! - [`injection`]: the scan that refuses instruction-like text written by agents and extractions.
//! - [`markdown`]: markdown files as authoritative records (SPEC §9.7): chunking, UUIDv5 ids, SHA-256 change
//!   detection, `Memory::sync_markdown`; `markdown_watch.rs`: startup sync and the file watcher (2 s debounce,
//!   under a lease on PostgreSQL).
//! - [`index`]: the [`VectorIndex`] trait and the backend choice (`CORTEX_VECTOR_BACKEND`, [`open_index`]);
//!   `embedded.rs`: the embedded backend (int8-quantised in-memory index split in two 4-bit planes: a scan of
//!   the high nibbles, int8 re-scoring of the best, exact re-rank; persisted per agent in
//!   `memory_vector_index`); `simd.rs`: its dot-product kernel (AVX2 with a scalar fallback — the crate's
//!   only `unsafe`); [`qdrant`]: Qdrant over REST, one collection per agent;
//!   [`pgvector`]: the PostgreSQL backend (HNSW cosine inside the database, over `cortex-store`'s
//!   `memory_vector` copy, synced per agent before a search when the agent changed); [`Indexes`]: what a
//!   search uses — with the embedded backend also `keyword.rs`, an in-process BM25 inverted index (the
//!   other backends take keyword candidates from the store's FTS5 / `tsvector` index); `watch.rs`: when
//!   an in-process cache of an agent is current (the store's notifications and change sequence).
//!
//! Architecture invariants:
//! - No SQL here: rows, the full-text index and stored vectors are `cortex-store`'s. The relational row is
//!   the source of truth; every vector or keyword index is a cache that can be rebuilt from it.
//! - Every operation takes the agent id and passes it down to every store and index call: one agent's
//!   query can never see another agent's records.
//! - No HTTP status codes: failures are [`MemoryError`] variants the API maps.

#[cfg(feature = "local-embeddings")]
mod bert;
pub mod embed;
mod embedded;
mod error;
pub mod extract;
pub mod index;
pub mod injection;
mod keyword;
#[cfg(feature = "local-embeddings")]
pub mod local;
pub mod markdown;
mod markdown_watch;
pub mod pgvector;
pub mod qdrant;
pub mod scoring;
mod service;
mod simd;
mod watch;

pub use embed::{ApiEmbedder, EmbedError, Embedder, EmbeddingKey, EmbeddingsConfig, EmbeddingsMode, ManagedKey};
pub use error::MemoryError;
pub use index::{
    EmbeddedIndex, IndexError, IndexReads, Indexes, KeywordIndex, QdrantConfig, QdrantIndex, VectorBackend,
    VectorConfig, VectorIndex, open_index,
};
pub use pgvector::PgVectorIndex;
pub use service::{Memory, MemoryPatch, Remember, ScoreParts, ScoredMemory, SearchMode, SearchQuery, SearchResults};
