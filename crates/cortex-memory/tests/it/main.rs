//! Memory service conformance on both engines: supersession, recall statistics, per-agent isolation and
//! an index that notices writes made by another process, and the filing of extracted facts; with the
//! `local-embeddings` feature, the in-process embedder on the real MiniLM weights; the pgvector backend
//! when a PostgreSQL with the extension is configured.

mod extract;
mod isolation;
#[cfg(feature = "local-embeddings")]
mod local_embed;
mod markdown;
mod pgvector;
mod service;
