//! The Qdrant backend (SPEC §9.5) over Qdrant's REST API with our own small client (STACK.md §12: the
//! official client is gRPC only). One collection per agent, `cortex_mem_<agent id without dashes>`,
//! cosine distance, int8 scalar quantisation; points are the records' ids with payload
//! `{agent_id, model}`.
//!
//! The relational rows are the source of truth and the collection a rebuildable copy: the first use of
//! an agent in a process rebuilds its collection from the rows (drop, create, upload), later writes push
//! the rows changed since (upsert live vectors, delete the others). A failed push marks the agent for a
//! catch-up before its next search; a failed search degrades to keyword-only (the service says so).

use std::collections::HashMap;
use std::time::Duration;

use cortex_store::Store;
use cortex_store::memory::VectorChange;
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::index::{IndexError, QdrantConfig, VectorIndex};

/// Per-request timeout.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Points per upsert request.
const UPSERT_BATCH: usize = 256;

/// The collection of an agent (SPEC §9.5, one naming scheme).
pub fn collection_name(agent_id: Uuid) -> String {
    format!("cortex_mem_{}", agent_id.simple())
}

/// What this process has pushed to an agent's collection.
struct Synced {
    model: String,
    /// The agent's memory change sequence pushed (every write up to it).
    through: i64,
    /// Vector size of the collection; 0 while it has none (no collection yet).
    dim: usize,
    /// The agent's change sequence in the store when last caught up (other processes write too).
    stamp: Option<i64>,
    /// A push failed: catch up before the next search.
    dirty: bool,
}

/// The Qdrant backend.
pub struct QdrantIndex {
    store: Store,
    http: reqwest::Client,
    url: String,
    api_key: Option<String>,
    synced: tokio::sync::Mutex<HashMap<Uuid, Synced>>,
}

impl std::fmt::Debug for QdrantIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QdrantIndex").field("url", &self.url).finish_non_exhaustive()
    }
}

fn unavailable(message: impl Into<String>) -> IndexError {
    IndexError::Unavailable(format!("qdrant: {}", message.into()))
}

impl QdrantIndex {
    pub fn new(store: Store, http: reqwest::Client, config: &QdrantConfig) -> Self {
        Self {
            store,
            http,
            url: config.url.trim_end_matches('/').to_owned(),
            api_key: config.api_key.clone(),
            synced: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// One REST call; `Ok(None)` for 404 (no such collection), the `result` otherwise.
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Option<Value>, IndexError> {
        let mut request = self.http.request(method, format!("{}{path}", self.url)).timeout(TIMEOUT);
        if let Some(key) = &self.api_key {
            request = request.header("api-key", key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|err| unavailable(err.without_url().to_string()))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            let detail = response.text().await.unwrap_or_default();
            return Err(unavailable(format!("HTTP {status}: {}", detail.chars().take(200).collect::<String>())));
        }
        let body: Value = response.json().await.map_err(|err| unavailable(err.without_url().to_string()))?;
        Ok(Some(body["result"].clone()))
    }

    async fn upsert(
        &self,
        collection: &str,
        agent_id: Uuid,
        model: &str,
        points: &[(Uuid, Vec<f32>)],
    ) -> Result<(), IndexError> {
        for batch in points.chunks(UPSERT_BATCH) {
            let points: Vec<Value> = batch
                .iter()
                .map(|(id, vector)| json!({"id": id, "vector": vector, "payload": {"agent_id": agent_id, "model": model}}))
                .collect();
            let path = format!("/collections/{collection}/points?wait=true");
            self.call(Method::PUT, &path, Some(json!({"points": points})))
                .await?
                .ok_or_else(|| unavailable(format!("collection {collection} vanished")))?;
        }
        Ok(())
    }

    /// Drops and recreates the agent's collection from every live row of `model`.
    async fn rebuild(&self, agent_id: Uuid, model: &str) -> Result<Synced, IndexError> {
        let collection = collection_name(agent_id);
        let changes = self.store.memory_vector_changes(agent_id, model, -1).await?;
        let through = changes.iter().map(|change| change.seq).max().unwrap_or(-1);
        let points = live_points(&changes);
        self.call(Method::DELETE, &format!("/collections/{collection}"), None).await?;
        let dim = points.first().map_or(0, |(_, vector)| vector.len());
        if dim > 0 {
            let config = json!({
                "vectors": {"size": dim, "distance": "Cosine"},
                "quantization_config": {"scalar": {"type": "int8", "always_ram": true}},
            });
            self.call(Method::PUT, &format!("/collections/{collection}"), Some(config)).await?;
            let points: Vec<(Uuid, Vec<f32>)> = points.into_iter().filter(|(_, vector)| vector.len() == dim).collect();
            self.upsert(&collection, agent_id, model, &points).await?;
        }
        Ok(Synced { model: model.to_owned(), through, dim, stamp: None, dirty: false })
    }

    /// Pushes the rows changed after `synced.through`.
    async fn push(&self, agent_id: Uuid, synced: &mut Synced) -> Result<(), IndexError> {
        let changes = self.store.memory_vector_changes(agent_id, &synced.model, synced.through).await?;
        if changes.is_empty() {
            return Ok(());
        }
        let points = live_points(&changes);
        if synced.dim == 0 || points.iter().any(|(_, vector)| vector.len() != synced.dim) {
            // First vectors (no collection yet) or another size: rebuild.
            *synced = self.rebuild(agent_id, &synced.model.clone()).await?;
            return Ok(());
        }
        let collection = collection_name(agent_id);
        let gone: Vec<Uuid> = changes.iter().filter(|change| change.vector.is_none()).map(|change| change.id).collect();
        if !gone.is_empty() {
            let path = format!("/collections/{collection}/points/delete?wait=true");
            self.call(Method::POST, &path, Some(json!({"points": gone})))
                .await?
                .ok_or_else(|| unavailable(format!("collection {collection} vanished")))?;
        }
        self.upsert(&collection, agent_id, &synced.model, &points).await?;
        synced.through = changes.iter().map(|change| change.seq).fold(synced.through, i64::max);
        Ok(())
    }

    /// The collection's vector size once it is current for `model` (0: no vectors): rebuilt on first use,
    /// caught up when a push failed or the agent's rows changed (in any process) since the last use.
    async fn ready(&self, agent_id: Uuid, model: &str) -> Result<usize, IndexError> {
        let stamp = self.store.memory_change_seq(agent_id).await?;
        let mut synced = self.synced.lock().await;
        let mut state = match synced.remove(&agent_id).filter(|state| state.model == model) {
            Some(mut state) if state.dirty || state.stamp != Some(stamp) => {
                if let Err(err) = self.push(agent_id, &mut state).await {
                    state.dirty = true;
                    synced.insert(agent_id, state);
                    return Err(err);
                }
                state
            }
            Some(state) => state,
            None => self.rebuild(agent_id, model).await?,
        };
        state.dirty = false;
        state.stamp = Some(stamp);
        let dim = state.dim;
        synced.insert(agent_id, state);
        Ok(dim)
    }
}

/// The live vectors among `changes`.
fn live_points(changes: &[VectorChange]) -> Vec<(Uuid, Vec<f32>)> {
    changes
        .iter()
        .filter_map(|change| {
            let vector = crate::embed::from_bytes(change.vector.as_deref()?)?;
            (!vector.is_empty()).then_some((change.id, vector))
        })
        .collect()
}

#[async_trait::async_trait]
impl VectorIndex for QdrantIndex {
    fn name(&self) -> &'static str {
        "qdrant"
    }

    async fn search(
        &self,
        agent_id: Uuid,
        model: &str,
        query: &[f32],
        k: usize,
    ) -> Result<Vec<(Uuid, f32)>, IndexError> {
        let dim = self.ready(agent_id, model).await?;
        if dim == 0 || query.len() != dim || k == 0 {
            return Ok(Vec::new());
        }
        let collection = collection_name(agent_id);
        let body = json!({"query": query, "limit": k, "with_payload": false});
        let Some(result) =
            self.call(Method::POST, &format!("/collections/{collection}/points/query"), Some(body)).await?
        else {
            // Someone removed the collection: rebuild on the next use.
            self.synced.lock().await.remove(&agent_id);
            return Err(unavailable(format!("collection {collection} is missing")));
        };
        let points = result["points"].as_array().ok_or_else(|| unavailable("query answer without points"))?;
        Ok(points
            .iter()
            .filter_map(|point| {
                let id = point["id"].as_str()?.parse::<Uuid>().ok()?;
                Some((id, point["score"].as_f64()? as f32))
            })
            .collect())
    }

    async fn changed(&self, agent_id: Uuid) -> Result<(), IndexError> {
        let mut synced = self.synced.lock().await;
        let Some(state) = synced.get_mut(&agent_id) else {
            // Not used yet in this process: its first search rebuilds the collection.
            return Ok(());
        };
        let result = self.push(agent_id, state).await;
        state.dirty = result.is_err();
        result
    }
}
