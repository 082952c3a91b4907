//! Memory service conformance on both engines: supersession, recall statistics, per-agent isolation and
//! an index that notices writes made by another process, and the filing of extracted facts; with the
//! `local-embeddings` feature, the in-process embedder on the real MiniLM weights; the pgvector backend
//! when a PostgreSQL with the extension is configured. The vector backend cases run on each backend
//! ([`each_backend!`]).

/// A test body `|t: TestStore, backend: Backend|` run on both engines with each vector backend: the
/// embedded index and Qdrant (an in-process fake of its REST API: no Qdrant server installs here).
macro_rules! each_backend {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            cortex_testkit::both_engines!(embedded, |t: TestStore| async move {
                ($body)(t, crate::service::Backend::Embedded).await
            });
            cortex_testkit::both_engines!(qdrant, |t: TestStore| async move {
                ($body)(t, crate::service::Backend::Qdrant).await
            });
        }
    };
}

mod api_embedder;
mod change_seq;
mod extract;
mod isolation;
mod keyword;
#[cfg(feature = "local-embeddings")]
mod local_embed;
mod markdown;
mod pgvector;
mod service;
