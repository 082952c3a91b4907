//! pgvector (SPEC §9.5): nearest-neighbour search inside PostgreSQL when the `vector` extension can be
//! created. `memory_record.embedding` (f32 bytes) stays the source of truth; `memory_vector` is a copy
//! of the live vectors kept in step per agent by [`Store::pgvector_sync`], with one HNSW cosine index
//! per dimension (a partial expression index, as pgvector documents for mixed dimensions).
//!
//! The table is created at run time by [`Store::pgvector_enable`], not by a migration: the `vector` type
//! exists only where the extension is installed, and the migrations must run on every PostgreSQL.

use uuid::Uuid;

use crate::{Result, Store, StoreError};

/// Serialises the DDL of concurrent processes (`CREATE EXTENSION/TABLE/INDEX IF NOT EXISTS` race on
/// the catalog otherwise).
const DDL_LOCK: i64 = 0x6d65_6d76_6563; // "memvec"
/// pgvector indexes `vector` columns of at most this many dimensions with HNSW; wider ones are scanned.
pub const HNSW_MAX_DIM: usize = 2000;
/// Rows written per statement while syncing.
const SYNC_CHUNK: usize = 500;

/// pgvector's text form of a vector: `[x1,x2,…]` (shortest round-trip decimals, so exact).
fn vector_text(vector: &[f32]) -> String {
    let mut text = String::with_capacity(vector.len() * 12 + 2);
    text.push('[');
    for (i, x) in vector.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push_str(&x.to_string());
    }
    text.push(']');
    text
}

impl Store {
    fn pg_pool(&self) -> Option<&sqlx::PgPool> {
        match &self.inner.engine {
            crate::engine::Engine::Postgres { pool, .. } => Some(pool),
            crate::engine::Engine::Sqlite { .. } => None,
        }
    }

    /// Creates the extension and `memory_vector` if they are missing. `Ok(false)`: not PostgreSQL, or the
    /// extension cannot be created here (not installed, or not allowed) — the reason is logged.
    pub async fn pgvector_enable(&self) -> Result<bool> {
        let Some(pool) = self.pg_pool() else { return Ok(false) };
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(DDL_LOCK).execute(&mut *tx).await?;
        if let Err(err) = sqlx::query("CREATE EXTENSION IF NOT EXISTS vector").execute(&mut *tx).await {
            tracing::info!(error = %err, "pgvector unavailable: CREATE EXTENSION vector failed");
            return Ok(false);
        }
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS memory_vector (\
                 id UUID PRIMARY KEY REFERENCES memory_record (id) ON DELETE CASCADE, \
                 agent_id UUID NOT NULL, \
                 model TEXT NOT NULL, \
                 dim INTEGER NOT NULL, \
                 updated_at BIGINT NOT NULL, \
                 embedding vector NOT NULL)",
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query("CREATE INDEX IF NOT EXISTS memory_vector_agent ON memory_vector (agent_id, model)")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The HNSW index for vectors of `dim` dimensions (created once, by whichever process first needs it).
    async fn pgvector_index(&self, pool: &sqlx::PgPool, dim: usize) -> Result<()> {
        if dim == 0 || dim > HNSW_MAX_DIM {
            return Ok(());
        }
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(DDL_LOCK).execute(&mut *tx).await?;
        // `dim` is a number, not input text: safe to place in the statement.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE INDEX IF NOT EXISTS memory_vector_hnsw_{dim} ON memory_vector \
             USING hnsw ((embedding::vector({dim})) vector_cosine_ops) WHERE dim = {dim}"
        )))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Brings the agent's rows of `memory_vector` in step with its live records: drops rows of deleted,
    /// superseded, re-embedded or changed records, then copies the vectors that are missing. Returns
    /// how many vectors were copied.
    pub async fn pgvector_sync(&self, agent_id: Uuid) -> Result<usize> {
        let Some(pool) = self.pg_pool() else { return Ok(0) };
        sqlx::query(
            "DELETE FROM memory_vector v WHERE v.agent_id = $1 AND NOT EXISTS (\
                 SELECT 1 FROM memory_record r WHERE r.id = v.id AND r.embedding IS NOT NULL \
                 AND r.embedding_model = v.model AND r.updated_at = v.updated_at \
                 AND r.deleted_at IS NULL AND r.superseded_by IS NULL)",
        )
        .bind(agent_id)
        .execute(pool)
        .await?;
        let missing: Vec<(Uuid, String, Vec<u8>, i64)> = sqlx::query_as(
            "SELECT r.id, r.embedding_model, r.embedding, r.updated_at FROM memory_record r \
             WHERE r.agent_id = $1 AND r.embedding IS NOT NULL AND r.embedding_model IS NOT NULL \
             AND r.deleted_at IS NULL AND r.superseded_by IS NULL \
             AND NOT EXISTS (SELECT 1 FROM memory_vector v WHERE v.id = r.id)",
        )
        .bind(agent_id)
        .fetch_all(pool)
        .await?;
        let mut dims = std::collections::BTreeSet::new();
        let mut copied = 0;
        for chunk in missing.chunks(SYNC_CHUNK) {
            let (mut ids, mut models, mut sizes, mut stamps, mut vectors) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for (id, model, bytes, updated_at) in chunk {
                if bytes.is_empty() || !bytes.len().is_multiple_of(4) {
                    tracing::warn!(memory_id = %id, "skipping a stored vector of a broken size");
                    continue;
                }
                let vector: Vec<f32> =
                    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
                dims.insert(vector.len());
                ids.push(*id);
                models.push(model.clone());
                sizes.push(vector.len() as i32);
                stamps.push(*updated_at);
                vectors.push(vector_text(&vector));
            }
            copied += ids.len();
            sqlx::query(
                "INSERT INTO memory_vector (id, agent_id, model, dim, updated_at, embedding) \
                 SELECT u.id, $1, u.model, u.dim, u.updated_at, u.embedding::vector \
                 FROM UNNEST($2::uuid[], $3::text[], $4::int4[], $5::int8[], $6::text[]) \
                 AS u (id, model, dim, updated_at, embedding) ON CONFLICT (id) DO NOTHING",
            )
            .bind(agent_id)
            .bind(&ids)
            .bind(&models)
            .bind(&sizes)
            .bind(&stamps)
            .bind(&vectors)
            .execute(pool)
            .await?;
        }
        for dim in dims {
            self.pgvector_index(pool, dim).await?;
        }
        Ok(copied)
    }

    /// Up to `k` of the agent's synced vectors of `model` nearest to `query` by cosine distance, with
    /// their cosine similarity, nearest first. The HNSW index is approximate; pgvector's iterative scan
    /// keeps filling the `k` when other agents' vectors are near too.
    pub async fn pgvector_search(
        &self,
        agent_id: Uuid,
        model: &str,
        query: &[f32],
        k: usize,
    ) -> Result<Vec<(Uuid, f32)>> {
        let Some(pool) = self.pg_pool() else {
            return Err(StoreError::IllegalTransition("pgvector needs PostgreSQL".into()));
        };
        let dim = query.len();
        if dim == 0 || k == 0 {
            return Ok(Vec::new());
        }
        let mut tx = pool.begin().await?;
        sqlx::query("SET LOCAL hnsw.iterative_scan = relaxed_order").execute(&mut *tx).await?;
        sqlx::query("SELECT set_config('hnsw.ef_search', $1, true)")
            .bind(k.clamp(40, 1000).to_string())
            .execute(&mut *tx)
            .await?;
        // `dim` is a number, not input text; the expression matches the partial index's.
        let hits: Vec<(Uuid, f64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT id, 1 - (embedding::vector({dim}) <=> $1::text::vector({dim})) AS similarity \
             FROM memory_vector WHERE dim = {dim} AND agent_id = $2 AND model = $3 \
             ORDER BY embedding::vector({dim}) <=> $1::text::vector({dim}) LIMIT $4"
        )))
        .bind(vector_text(query))
        .bind(agent_id)
        .bind(model)
        .bind(k as i64)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut hits: Vec<(Uuid, f32)> = hits.into_iter().map(|(id, similarity)| (id, similarity as f32)).collect();
        // A relaxed-order scan may return neighbours slightly out of order.
        hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        Ok(hits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_form_round_trips_exactly() {
        let vector = [0.1f32, -2.5e-8, 1.0 / 3.0];
        let text = vector_text(&vector);
        let parsed: Vec<f32> = text.trim_matches(['[', ']']).split(',').map(|x| x.parse().unwrap()).collect();
        assert_eq!(parsed, vector);
    }
}
