//! The pgvector backend (SPEC §9.5): nearest neighbours from PostgreSQL's `vector` extension (HNSW,
//! cosine) over `cortex-store`'s `memory_vector` copy of the agents' vectors. Before a search the agent's
//! copy is brought in step when the agent's memory change sequence in the store moved —
//! also when another process wrote — so the relational row stays the source of truth.

use std::collections::HashMap;
use std::sync::Mutex;

use cortex_store::Store;
use uuid::Uuid;

use crate::index::{IndexError, VectorIndex};

/// Vector search inside PostgreSQL.
pub struct PgVectorIndex {
    store: Store,
    /// The change sequence each agent's copy was last synced at.
    synced: Mutex<HashMap<Uuid, i64>>,
}

impl PgVectorIndex {
    /// The backend on `store` when it is PostgreSQL and `CREATE EXTENSION vector` works; `None` otherwise
    /// (the reason is logged).
    pub async fn open(store: Store) -> Result<Option<Self>, IndexError> {
        if !store.pgvector_enable().await? {
            return Ok(None);
        }
        Ok(Some(Self { store, synced: Mutex::new(HashMap::new()) }))
    }

    fn synced_at(&self, agent_id: Uuid) -> Option<i64> {
        self.synced.lock().ok().and_then(|synced| synced.get(&agent_id).copied())
    }
}

#[async_trait::async_trait]
impl VectorIndex for PgVectorIndex {
    fn name(&self) -> &'static str {
        "pgvector"
    }

    async fn search(
        &self,
        agent_id: Uuid,
        model: &str,
        query: &[f32],
        k: usize,
    ) -> Result<Vec<(Uuid, f32)>, IndexError> {
        // The stamp is read before syncing: a write that lands during the sync moves it again, so the
        // next search syncs once more.
        let stamp = self.store.memory_change_seq(agent_id).await?;
        if self.synced_at(agent_id) != Some(stamp) {
            self.store.pgvector_sync(agent_id).await?;
            if let Ok(mut synced) = self.synced.lock() {
                synced.insert(agent_id, stamp);
            }
        }
        Ok(self.store.pgvector_search(agent_id, model, query, k).await?)
    }

    async fn changed(&self, agent_id: Uuid) -> Result<(), IndexError> {
        if let Ok(mut synced) = self.synced.lock() {
            synced.remove(&agent_id);
        }
        Ok(())
    }
}
