//! Vector indexes (SPEC §9.5) behind one trait. The embedded backend keeps each agent's vectors in one
//! contiguous in-memory arena, loaded from `memory_record` on first use and reloaded when the store's
//! stamp for the agent (record count, latest change) moves — also when another process wrote — and
//! answers by an exact dot-product scan with a bounded top-k.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cortex_store::{Store, StoreError};
use uuid::Uuid;

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

/// One agent's vectors of one model.
struct Arena {
    model: String,
    stamp: (i64, i64),
    /// The store's memory epoch when the arena was read.
    epoch: u64,
    dim: usize,
    ids: Vec<Uuid>,
    /// `ids.len() × dim` unit-length components.
    data: Vec<f32>,
}

/// The embedded backend: exact scan over vectors cached from the relational store.
pub struct EmbeddedIndex {
    store: Store,
    arenas: Mutex<HashMap<Uuid, Arc<Arena>>>,
}

impl EmbeddedIndex {
    pub fn new(store: Store) -> Self {
        Self { store, arenas: Mutex::new(HashMap::new()) }
    }

    fn cached(&self, agent_id: Uuid) -> Option<Arc<Arena>> {
        self.arenas.lock().ok().and_then(|arenas| arenas.get(&agent_id).cloned())
    }

    async fn arena(&self, agent_id: Uuid, model: &str) -> Result<Arc<Arena>, IndexError> {
        // SQLite: one process per data dir (the store's lock file), so an unchanged memory epoch means no
        // record changed and the cached arena is current without a query. PostgreSQL: other processes
        // write too, so the stamp decides.
        let epoch = self.store.memory_epoch();
        if !self.store.is_postgres()
            && let Some(arena) = self.cached(agent_id).filter(|arena| arena.model == model && arena.epoch == epoch)
        {
            return Ok(arena);
        }
        let stamp = self.store.memory_stamp(agent_id).await?;
        if let Some(arena) = self.cached(agent_id).filter(|arena| arena.model == model && arena.stamp == stamp) {
            return Ok(arena);
        }
        let rows = self.store.memory_vectors(agent_id, model).await?;
        let dim = rows.first().map_or(0, |(_, bytes)| bytes.len() / 4);
        let mut ids = Vec::with_capacity(rows.len());
        let mut data = Vec::with_capacity(rows.len() * dim);
        for (id, bytes) in rows {
            match crate::embed::from_bytes(&bytes) {
                Some(vector) if vector.len() == dim => {
                    ids.push(id);
                    data.extend(vector);
                }
                _ => tracing::warn!(memory_id = %id, "skipping a stored vector of the wrong size"),
            }
        }
        let arena = Arc::new(Arena { model: model.to_owned(), stamp, epoch, dim, ids, data });
        if let Ok(mut arenas) = self.arenas.lock() {
            arenas.insert(agent_id, arena.clone());
        }
        Ok(arena)
    }
}

/// The `k` best (index, dot product) pairs of the arena for `query`, best first.
fn top_k(arena: &Arena, query: &[f32], k: usize) -> Vec<(usize, f32)> {
    if arena.dim == 0 || query.len() != arena.dim || k == 0 {
        return Vec::new();
    }
    let mut scored: Vec<(usize, f32)> = arena
        .data
        .chunks_exact(arena.dim)
        .enumerate()
        .map(|(index, vector)| (index, vector.iter().zip(query).map(|(a, b)| a * b).sum::<f32>()))
        .collect();
    let by_score = |a: &(usize, f32), b: &(usize, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if scored.len() > k {
        scored.select_nth_unstable_by(k - 1, by_score);
        scored.truncate(k);
    }
    scored.sort_by(by_score);
    scored
}

#[async_trait::async_trait]
impl VectorIndex for EmbeddedIndex {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    async fn search(
        &self,
        agent_id: Uuid,
        model: &str,
        query: &[f32],
        k: usize,
    ) -> Result<Vec<(Uuid, f32)>, IndexError> {
        let arena = self.arena(agent_id, model).await?;
        Ok(top_k(&arena, query, k).into_iter().map(|(index, score)| (arena.ids[index], score)).collect())
    }

    async fn changed(&self, agent_id: Uuid) -> Result<(), IndexError> {
        if let Ok(mut arenas) = self.arenas.lock() {
            arenas.remove(&agent_id);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_is_exact_and_ordered() {
        let arena = Arena {
            model: "m".into(),
            stamp: (0, 0),
            epoch: 0,
            dim: 2,
            ids: vec![Uuid::nil(); 4],
            data: vec![1.0, 0.0, 0.0, 1.0, 0.6, 0.8, -1.0, 0.0],
        };
        let hits = top_k(&arena, &[0.6, 0.8], 2);
        assert_eq!(hits.iter().map(|(index, _)| *index).collect::<Vec<_>>(), vec![2, 1]);
        assert_eq!(top_k(&arena, &[0.6, 0.8], 10).len(), 4);
        assert!(top_k(&arena, &[1.0, 0.0, 0.0], 2).is_empty(), "a query of another dimension matches nothing");
    }
}
