//! The embedded vector backend (SPEC §9.5, issue 16 targets): per agent and model, an arena of
//! int8-quantised vectors (one scale per vector) scanned with an integer dot product the compiler
//! vectorises, whose best candidates are re-ranked exactly on the stored f32 vectors.
//!
//! The relational rows are the source of truth. An arena catches up with them through the rows changed
//! since the latest `updated_at` it holds (minus [`CATCH_UP_MARGIN_MS`]); it is persisted as one blob per
//! agent (`memory_vector_index`) after a build and after enough changes, so a restart loads the blob and
//! applies the few rows changed since instead of decoding every vector. When to catch up: on SQLite (one
//! process per data dir) only when the store's in-process memory epoch moved; on PostgreSQL when the
//! agent's stamp (row count, latest change) moved — also when another process wrote.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use cortex_store::Store;
use cortex_store::memory::{IndexSnapshot, VectorChange};
use uuid::Uuid;

use crate::index::{IndexError, VectorIndex};

/// Rows changed this long before an arena's latest change are applied again when it catches up, so a
/// transaction that committed late with an older `updated_at` (PostgreSQL, several writers) is not missed.
const CATCH_UP_MARGIN_MS: i64 = 120_000;
/// Quantised candidates re-ranked exactly: this many per requested hit …
const RERANK_PER_HIT: usize = 4;
/// … and at least this many.
const RERANK_MIN: usize = 32;
/// An arena is persisted again after this many applied changes when they are also ≥ 1/8 of its size …
const SAVE_MIN_CHANGES: usize = 64;
/// … and always after this many.
const SAVE_ALWAYS_CHANGES: usize = 4096;
/// Format tag of a persisted arena.
const MAGIC: &[u8; 8] = b"CXVIDX01";

/// One agent's vectors of one model, quantised.
#[derive(Debug)]
struct Arena {
    model: String,
    /// 0 until the first vector.
    dim: usize,
    ids: Vec<Uuid>,
    slots: HashMap<Uuid, usize>,
    /// Per vector: the f32 value of one code step.
    scales: Vec<f32>,
    /// `ids.len() × dim` codes.
    codes: Vec<i8>,
    /// The latest `updated_at` applied (ms).
    through: i64,
    /// The store stamp the arena matches, once caught up.
    stamp: Option<(i64, i64)>,
    /// The store's memory epoch when it was last caught up.
    epoch: Option<u64>,
    /// Changes applied since it was loaded or saved.
    unsaved: usize,
}

/// Symmetric int8 codes of `vector` into `out`; returns the scale (0 for a zero vector).
fn quantise(vector: &[f32], out: &mut [i8]) -> f32 {
    let max = vector.iter().fold(0.0_f32, |max, x| max.max(x.abs()));
    if max == 0.0 || !max.is_finite() {
        out.fill(0);
        return 0.0;
    }
    let scale = max / 127.0;
    for (code, x) in out.iter_mut().zip(vector) {
        *code = (x / scale).round().clamp(-127.0, 127.0) as i8;
    }
    scale
}

/// Integer dot product of two code vectors (vectorised by the compiler: integer sums reassociate).
fn dot_codes(a: &[i8], b: &[i8]) -> i32 {
    a.iter().zip(b).map(|(x, y)| i32::from(*x) * i32::from(*y)).sum()
}

/// Exact dot product with eight independent lanes, so the compiler can keep them in vector registers.
fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0_f32; 8];
    let (a_chunks, b_chunks) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a_chunks.remainder().iter().zip(b_chunks.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        for lane in 0..8 {
            lanes[lane] += x[lane] * y[lane];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

impl Arena {
    fn new(model: &str) -> Self {
        Self {
            model: model.to_owned(),
            dim: 0,
            ids: Vec::new(),
            slots: HashMap::new(),
            scales: Vec::new(),
            codes: Vec::new(),
            through: i64::MIN,
            stamp: None,
            epoch: None,
            unsaved: 0,
        }
    }

    fn remove(&mut self, id: Uuid) {
        let Some(slot) = self.slots.remove(&id) else { return };
        let last = self.ids.len() - 1;
        if slot != last {
            let moved = self.ids[last];
            self.ids.swap(slot, last);
            self.scales.swap(slot, last);
            self.codes.copy_within(last * self.dim..(last + 1) * self.dim, slot * self.dim);
            self.slots.insert(moved, slot);
        }
        self.ids.pop();
        self.scales.pop();
        self.codes.truncate(last * self.dim);
    }

    fn upsert(&mut self, id: Uuid, vector: &[f32]) {
        if self.ids.is_empty() {
            self.dim = vector.len();
        }
        if vector.len() != self.dim || self.dim == 0 {
            tracing::warn!(memory_id = %id, "skipping a stored vector of the wrong size");
            self.remove(id);
            return;
        }
        let slot = match self.slots.get(&id) {
            Some(slot) => *slot,
            None => {
                self.ids.push(id);
                self.scales.push(0.0);
                self.codes.resize(self.ids.len() * self.dim, 0);
                self.slots.insert(id, self.ids.len() - 1);
                self.ids.len() - 1
            }
        };
        self.scales[slot] = quantise(vector, &mut self.codes[slot * self.dim..(slot + 1) * self.dim]);
    }

    fn apply(&mut self, changes: &[VectorChange]) {
        for change in changes {
            match change.vector.as_deref().map(crate::embed::from_bytes) {
                Some(Some(vector)) => self.upsert(change.id, &vector),
                Some(None) => {
                    tracing::warn!(memory_id = %change.id, "skipping a stored vector of the wrong size");
                    self.remove(change.id);
                }
                None => self.remove(change.id),
            }
            self.through = self.through.max(change.updated_at);
        }
        self.unsaved += changes.len();
    }

    fn due_for_save(&self) -> bool {
        self.unsaved >= SAVE_ALWAYS_CHANGES || (self.unsaved >= SAVE_MIN_CHANGES && self.unsaved * 8 >= self.ids.len())
    }

    /// Up to `r` ids with the best quantised dot product with `query`, best first.
    fn candidates(&self, query: &[f32], r: usize) -> Vec<Uuid> {
        if self.dim == 0 || query.len() != self.dim || r == 0 {
            return Vec::new();
        }
        let mut codes = vec![0_i8; self.dim];
        quantise(query, &mut codes);
        let mut scored: Vec<(f32, u32)> = self
            .codes
            .chunks_exact(self.dim)
            .zip(&self.scales)
            .enumerate()
            .map(|(slot, (vector, scale))| (dot_codes(vector, &codes) as f32 * scale, slot as u32))
            .collect();
        let by_score = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
        if scored.len() > r {
            scored.select_nth_unstable_by(r - 1, by_score);
            scored.truncate(r);
        }
        scored.sort_by(by_score);
        scored.into_iter().map(|(_, slot)| self.ids[slot as usize]).collect()
    }

    /// The persisted form: magic, dim and count (u32 LE), ids, scales (f32 LE), codes.
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.ids.len() * (20 + self.dim));
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(self.dim as u32).to_le_bytes());
        out.extend_from_slice(&(self.ids.len() as u32).to_le_bytes());
        for id in &self.ids {
            out.extend_from_slice(id.as_bytes());
        }
        for scale in &self.scales {
            out.extend_from_slice(&scale.to_le_bytes());
        }
        out.extend(self.codes.iter().map(|code| *code as u8));
        out
    }

    /// Reads [`Arena::encode`]'s form; `None` when it is not that (the caller rebuilds).
    fn decode(model: &str, through: i64, bytes: &[u8]) -> Option<Self> {
        let rest = bytes.strip_prefix(MAGIC.as_slice())?;
        let dim = u32::from_le_bytes(rest.get(0..4)?.try_into().ok()?) as usize;
        let count = u32::from_le_bytes(rest.get(4..8)?.try_into().ok()?) as usize;
        let rest = &rest[8..];
        let (ids, rest) = rest.split_at_checked(count.checked_mul(16)?)?;
        let (scales, codes) = rest.split_at_checked(count.checked_mul(4)?)?;
        if codes.len() != count.checked_mul(dim)? {
            return None;
        }
        let ids: Vec<Uuid> = ids.chunks_exact(16).map(|id| Uuid::from_slice(id).unwrap_or_default()).collect();
        let slots: HashMap<Uuid, usize> = ids.iter().enumerate().map(|(slot, id)| (*id, slot)).collect();
        if slots.len() != ids.len() {
            return None;
        }
        Some(Self {
            model: model.to_owned(),
            dim,
            slots,
            scales: scales.chunks_exact(4).map(|s| f32::from_le_bytes([s[0], s[1], s[2], s[3]])).collect(),
            codes: codes.iter().map(|code| *code as i8).collect(),
            ids,
            through,
            stamp: None,
            epoch: None,
            unsaved: 0,
        })
    }
}

/// The embedded backend: quantised arenas cached from (and persisted to) the relational store.
pub struct EmbeddedIndex {
    store: Store,
    arenas: Mutex<HashMap<Uuid, Arc<RwLock<Arena>>>>,
    /// One catch-up at a time; a caller that waited finds the arena current.
    catch_up: tokio::sync::Mutex<()>,
}

impl EmbeddedIndex {
    pub fn new(store: Store) -> Self {
        Self { store, arenas: Mutex::new(HashMap::new()), catch_up: tokio::sync::Mutex::new(()) }
    }

    fn cached(&self, agent_id: Uuid, model: &str) -> Option<Arc<RwLock<Arena>>> {
        let arenas = self.arenas.lock().unwrap_or_else(PoisonError::into_inner);
        arenas.get(&agent_id).filter(|arena| read(arena).model == model).cloned()
    }

    /// The persisted arena when it is readable and of `model`, else an empty one (filled by catching up).
    async fn load(&self, agent_id: Uuid, model: &str) -> Result<Arena, IndexError> {
        let snapshot = self.store.memory_index_snapshot(agent_id).await?;
        let loaded = snapshot
            .filter(|snapshot| snapshot.model == model)
            .and_then(|snapshot| Arena::decode(model, snapshot.through_ms, &snapshot.data));
        Ok(loaded.unwrap_or_else(|| Arena::new(model)))
    }

    /// The agent's arena for `model`, caught up with the store.
    async fn arena(&self, agent_id: Uuid, model: &str) -> Result<Arc<RwLock<Arena>>, IndexError> {
        let epoch = self.store.memory_epoch();
        let sqlite = !self.store.is_postgres();
        if let Some(arena) = self.cached(agent_id, model)
            && sqlite
            && read(&arena).epoch == Some(epoch)
        {
            return Ok(arena);
        }
        let _turn = self.catch_up.lock().await;
        let stamp = self.store.memory_stamp(agent_id).await?;
        let arena = match self.cached(agent_id, model) {
            Some(arena) => arena,
            None => {
                let arena = Arc::new(RwLock::new(self.load(agent_id, model).await?));
                self.arenas.lock().unwrap_or_else(PoisonError::into_inner).insert(agent_id, arena.clone());
                arena
            }
        };
        let (current, through) = {
            let arena = read(&arena);
            (arena.stamp == Some(stamp), arena.through)
        };
        if !current {
            let since = through.saturating_sub(CATCH_UP_MARGIN_MS);
            let changes = self.store.memory_vector_changes(agent_id, model, since).await?;
            let mut arena = write(&arena);
            arena.apply(&changes);
            arena.stamp = Some(stamp);
        }
        let snapshot = {
            let mut arena = write(&arena);
            arena.epoch = Some(epoch);
            arena.due_for_save().then(|| IndexSnapshot {
                model: arena.model.clone(),
                through_ms: arena.through,
                data: arena.encode(),
            })
        };
        if let Some(snapshot) = snapshot {
            match self.save(agent_id, &snapshot).await {
                Ok(()) => write(&arena).unsaved = 0,
                Err(err) => tracing::warn!(error = %err, "memory vector index not persisted; a restart rebuilds more"),
            }
        }
        Ok(arena)
    }

    async fn save(&self, agent_id: Uuid, snapshot: &IndexSnapshot) -> Result<(), IndexError> {
        let mut tx = self.store.begin().await?;
        tx.save_memory_index(agent_id, snapshot).await?;
        tx.commit().await?;
        Ok(())
    }
}

fn read(arena: &RwLock<Arena>) -> std::sync::RwLockReadGuard<'_, Arena> {
    arena.read().unwrap_or_else(PoisonError::into_inner)
}

fn write(arena: &RwLock<Arena>) -> std::sync::RwLockWriteGuard<'_, Arena> {
    arena.write().unwrap_or_else(PoisonError::into_inner)
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
        if k == 0 {
            return Ok(Vec::new());
        }
        let arena = self.arena(agent_id, model).await?;
        let candidates = read(&arena).candidates(query, (k * RERANK_PER_HIT).max(RERANK_MIN));
        let exact = self.store.memory_vectors_of(agent_id, model, &candidates).await?;
        let mut hits: Vec<(Uuid, f32)> = exact
            .into_iter()
            .filter_map(|(id, bytes)| crate::embed::from_bytes(&bytes).map(|vector| (id, vector)))
            .filter(|(_, vector)| vector.len() == query.len())
            .map(|(id, vector)| (id, dot_f32(&vector, query)))
            .collect();
        hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        hits.truncate(k);
        Ok(hits)
    }

    async fn changed(&self, _agent_id: Uuid) -> Result<(), IndexError> {
        // The next search catches up (the memory epoch or the stamp moved).
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(id: u128, vector: Option<&[f32]>, updated_at: i64) -> VectorChange {
        VectorChange { id: Uuid::from_u128(id), updated_at, vector: vector.map(crate::embed::to_bytes) }
    }

    #[test]
    fn quantised_candidates_rank_like_exact_dot_products() {
        let mut arena = Arena::new("m");
        arena.apply(&[
            change(1, Some(&[1.0, 0.0]), 5),
            change(2, Some(&[0.0, 1.0]), 6),
            change(3, Some(&[0.6, 0.8]), 7),
            change(4, Some(&[-1.0, 0.0]), 8),
        ]);
        assert_eq!(arena.candidates(&[0.6, 0.8], 2), vec![Uuid::from_u128(3), Uuid::from_u128(2)]);
        assert_eq!(arena.candidates(&[0.6, 0.8], 10).len(), 4);
        assert!(arena.candidates(&[1.0, 0.0, 0.0], 2).is_empty(), "a query of another dimension matches nothing");
        assert_eq!(arena.through, 8);
    }

    #[test]
    fn changes_replace_and_remove_and_the_blob_round_trips() {
        let mut arena = Arena::new("m");
        arena.apply(&[
            change(1, Some(&[1.0, 0.0]), 1),
            change(2, Some(&[0.0, 1.0]), 2),
            change(3, Some(&[0.6, 0.8]), 3),
        ]);
        arena.apply(&[change(1, None, 4), change(2, Some(&[1.0, 0.0]), 5), change(9, Some(&[1.0, 0.0, 0.0]), 6)]);
        assert_eq!(arena.ids.len(), 2, "1 removed, 2 replaced, 9 of another size skipped");
        assert_eq!(arena.candidates(&[1.0, 0.0], 1), vec![Uuid::from_u128(2)]);
        let copy = Arena::decode("m", arena.through, &arena.encode()).unwrap();
        assert_eq!((copy.ids.clone(), copy.scales.clone(), copy.codes.clone()), (arena.ids, arena.scales, arena.codes));
        assert_eq!(copy.candidates(&[0.6, 0.8], 1), vec![Uuid::from_u128(3)]);
        assert!(Arena::decode("m", 0, b"CXVIDX01\x02\0\0\0\x05\0\0\0").is_none(), "truncated");
        assert!(Arena::decode("m", 0, b"garbage").is_none());
    }

    #[test]
    fn exact_dot_matches_the_plain_sum() {
        let a: Vec<f32> = (0..19).map(|i| i as f32 * 0.1).collect();
        let b: Vec<f32> = (0..19).map(|i| 1.0 - i as f32 * 0.05).collect();
        let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot_f32(&a, &b) - plain).abs() < 1e-4);
        assert_eq!(dot_codes(&[1, -2, 3], &[4, 5, -6]), 4 - 10 - 18);
    }
}
