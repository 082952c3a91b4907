//! The embedded vector backend (SPEC §9.5, issue 16 targets): per agent and model, an arena of
//! int8-quantised vectors (one scale per vector), searched in three passes:
//! 1. a scan of every vector's **high nibbles** (the int8 code's top 4 bits, half its bytes) with an
//!    integer dot product (`simd.rs`: AVX2 when the CPU has it), on several threads for large arenas, keeping
//!    the best [`COARSE_PER_CANDIDATE`] × `r` by an estimate of the int8 dot product;
//! 2. the **low nibbles** of those completing their exact int8 dot product, keeping the best `r`
//!    (`k + max(k, 30)`: 40 for the top 10, 60 for a hybrid search's 30 candidates);
//! 3. an exact re-rank of those `r` on the stored f32 vectors.
//!
//! The planes split each int8 code `c` as `c = 16 × (high − 8) + low` (both 0–15), so the two passes together
//! read every byte of an int8 index once for the candidates and half of them for the rest. What is exact:
//! the returned scores are f32 dot products of stored vectors; what is approximate: a vector outside the
//! first pass's candidates is never considered (the bench measures recall@10 against an exact scan).
//!
//! The relational rows are the source of truth. An arena covers the agent's memory change sequence up to
//! some number (see `cortex_store::memory`) and catches up exactly with the rows of a higher sequence; it
//! is persisted as one blob per agent (`memory_vector_index`, with the sequence it covers) after its first
//! build and after enough changes, so a restart loads the blob and applies only the rows written since —
//! none when nothing changed, and then the agent's current sequence (one primary-key row) is all it reads
//! beside the blob.
//!
//! When to catch up: `watch.rs` (the store's notifications; a search whose arena covers the latest
//! sequence heard of reads nothing to know it is current).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use cortex_store::Store;
use cortex_store::memory::{IndexSnapshot, VectorChange};
use uuid::Uuid;

use crate::index::{IndexError, VectorIndex};
use crate::simd;
use crate::watch::{ChangeWatch, Coverage};

/// Quantised candidates re-ranked exactly beyond the `k` asked for: `max(k, this)` more. Each costs one
/// stored f32 vector read from the store, the larger part of a warm search.
const RERANK_EXTRA: usize = 30;

/// How many of the int8 pass's best are re-ranked on their stored f32 vectors for a top `k`.
fn rerank_count(k: usize) -> usize {
    k + k.max(RERANK_EXTRA)
}
/// First-pass (high nibble) candidates re-scored on their int8 codes, per exactly re-ranked candidate.
const COARSE_PER_CANDIDATE: usize = 8;
/// Vectors scored per kernel call of the first pass.
const SCAN_CHUNK: usize = 256;
/// An arena is persisted again after this many applied changes when they are also ≥ 1/8 of its size …
const SAVE_MIN_CHANGES: usize = 64;
/// … and always after this many.
const SAVE_ALWAYS_CHANGES: usize = 4096;
/// Format tag of a persisted arena (`CXVIDX01`, int8 codes in one array, is no longer read: such a blob is
/// rebuilt from the rows once).
const MAGIC: &[u8; 8] = b"CXVIDX02";

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
    /// Bytes of one vector's plane ([`simd::plane_len`] of `dim`).
    stride: usize,
    /// Per vector (`stride` bytes each): the high nibble of every int8 code plus 8 (`(code >> 4) + 8`,
    /// 0–15), packed by [`simd::pack`].
    high: Vec<u8>,
    /// Per vector: the low nibble of every code (`code & 15`), packed the same way.
    low: Vec<u8>,
    /// What of the agent's change sequence it covers.
    coverage: Coverage,
    /// A blob of it is in the store (perhaps older).
    persisted: bool,
    /// Changes applied since it was loaded or saved.
    unsaved: usize,
}

/// Arenas larger than this many vectors are scanned on several threads (one slice each).
const SCAN_SLICE: usize = 32_768;

/// Best score first, then the lower slot (deterministic order among equal scores).
fn by_score(a: &(f32, u32), b: &(f32, u32)) -> std::cmp::Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

/// Cuts `scored` to its best `r`, the `r`-th best last (unordered before it).
fn keep_best(scored: &mut Vec<(f32, u32)>, r: usize) {
    if scored.len() > r {
        scored.select_nth_unstable_by(r - 1, by_score);
        scored.truncate(r);
    }
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

/// The two nibble planes of int8 `codes` into `high` and `low` (`simd::plane_len(codes.len())` bytes each).
fn split_codes(codes: &[i8], high: &mut [u8], low: &mut [u8]) {
    let highs: Vec<u8> = codes.iter().map(|code| ((code >> 4) + 8) as u8).collect();
    let lows: Vec<u8> = codes.iter().map(|code| *code as u8 & 15).collect();
    simd::pack(&highs, high);
    simd::pack(&lows, low);
}

/// A query quantised for the scan.
struct Query {
    /// int8 codes, zero-padded to the planes' width.
    codes: Vec<i8>,
    /// Σ codes (the planes' offsets contribute multiples of it).
    sum: i32,
}

impl Query {
    fn new(query: &[f32], stride: usize) -> Self {
        let mut codes = vec![0_i8; 2 * stride];
        quantise(query, &mut codes[..query.len()]);
        let sum = codes.iter().map(|code| i32::from(*code)).sum();
        Self { codes, sum }
    }
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
            stride: 0,
            high: Vec::new(),
            low: Vec::new(),
            coverage: Coverage::empty(),
            persisted: false,
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
            let (from, to) = (last * self.stride..(last + 1) * self.stride, slot * self.stride);
            self.high.copy_within(from.clone(), to);
            self.low.copy_within(from, to);
            self.slots.insert(moved, slot);
        }
        self.ids.pop();
        self.scales.pop();
        self.high.truncate(last * self.stride);
        self.low.truncate(last * self.stride);
    }

    fn upsert(&mut self, id: Uuid, vector: &[f32]) {
        if self.ids.is_empty() {
            self.dim = vector.len();
            self.stride = simd::plane_len(self.dim);
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
                self.high.resize(self.ids.len() * self.stride, 0);
                self.low.resize(self.ids.len() * self.stride, 0);
                self.slots.insert(id, self.ids.len() - 1);
                self.ids.len() - 1
            }
        };
        let mut codes = vec![0_i8; self.dim];
        self.scales[slot] = quantise(vector, &mut codes);
        let planes = slot * self.stride..(slot + 1) * self.stride;
        split_codes(&codes, &mut self.high[planes.clone()], &mut self.low[planes]);
    }

    /// The int8 dot product of slot `slot`'s codes with `query`'s, from both planes:
    /// `Σ (16 (h − 8) + l) q = 16 Σ h q + Σ l q − 128 Σ q`.
    fn code_dot(&self, slot: usize, query: &Query) -> i32 {
        let planes = slot * self.stride..(slot + 1) * self.stride;
        let (mut high, mut low) = ([0], [0]);
        simd::dots(&self.high[planes.clone()], &query.codes, &mut high);
        simd::dots(&self.low[planes], &query.codes, &mut low);
        16 * high[0] + low[0] - 128 * query.sum
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
            self.coverage.seq = self.coverage.seq.max(change.seq);
        }
        self.unsaved += changes.len();
    }

    /// Persisted after its first build, then after enough changes.
    fn due_for_save(&self) -> bool {
        (!self.persisted && self.unsaved > 0)
            || self.unsaved >= SAVE_ALWAYS_CHANGES
            || (self.unsaved >= SAVE_MIN_CHANGES && self.unsaved * 8 >= self.ids.len())
    }

    /// Up to `r` ids with the best int8 dot product with `query` among the first pass's candidates, best
    /// first. Large arenas are scanned in [`SCAN_SLICE`]-vector slices on as many threads as there are cores.
    fn candidates(&self, query: &[f32], r: usize) -> Vec<Uuid> {
        if self.dim == 0 || query.len() != self.dim || r == 0 {
            return Vec::new();
        }
        let query = Query::new(query, self.stride);
        let coarse = r * COARSE_PER_CANDIDATE;
        let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let slices = self.ids.len().div_ceil(SCAN_SLICE).clamp(1, threads);
        let mut best = if slices == 1 {
            self.coarse_best(&query, 0, self.ids.len(), coarse)
        } else {
            let per = self.ids.len().div_ceil(slices);
            std::thread::scope(|scope| {
                // The first slice on this thread, the others on one spawned thread each.
                let workers: Vec<_> = (1..slices)
                    .map(|n| {
                        let (from, to) = (n * per, ((n + 1) * per).min(self.ids.len()));
                        let query = &query;
                        scope.spawn(move || self.coarse_best(query, from, to, coarse))
                    })
                    .collect();
                let mut best = self.coarse_best(&query, 0, per, coarse);
                // A worker only computes: it panics only on a bug, which is passed on as it is.
                for worker in workers {
                    best.extend(worker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
                }
                best
            })
        };
        keep_best(&mut best, coarse);
        for (score, slot) in &mut best {
            *score = self.code_dot(*slot as usize, &query) as f32 * self.scales[*slot as usize];
        }
        keep_best(&mut best, r);
        best.sort_by(by_score);
        best.into_iter().map(|(_, slot)| self.ids[slot as usize]).collect()
    }

    /// The best `r` (estimate, slot) of slots `from..to` by the high nibbles alone, unordered: a buffer of
    /// `2r` is cut back to the best `r` whenever it fills, and a vector scoring below the `r`-th best so far
    /// is skipped. The estimate takes the low nibble as its mean (7.5): `(16 Σ h q − 120.5 Σ q) × scale`.
    fn coarse_best(&self, query: &Query, from: usize, to: usize, r: usize) -> Vec<(f32, u32)> {
        let mut best: Vec<(f32, u32)> = Vec::with_capacity(2 * r);
        let mut floor = f32::NEG_INFINITY;
        let offset = 120.5 * query.sum as f32;
        let mut dots = [0_i32; SCAN_CHUNK];
        for start in (from..to).step_by(SCAN_CHUNK) {
            let end = (start + SCAN_CHUNK).min(to);
            let dots = &mut dots[..end - start];
            simd::dots(&self.high[start * self.stride..end * self.stride], &query.codes, dots);
            for (slot, (dot, scale)) in (start..).zip(dots.iter().zip(&self.scales[start..end])) {
                let score = (16.0 * *dot as f32 - offset) * scale;
                if score < floor {
                    continue;
                }
                best.push((score, slot as u32));
                if best.len() == 2 * r {
                    keep_best(&mut best, r);
                    floor = best[r - 1].0;
                }
            }
        }
        best
    }

    /// The persisted form: magic, dim and count (u32 LE), ids, scales (f32 LE), high planes, low planes.
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.ids.len() * (20 + 2 * self.stride));
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(self.dim as u32).to_le_bytes());
        out.extend_from_slice(&(self.ids.len() as u32).to_le_bytes());
        for id in &self.ids {
            out.extend_from_slice(id.as_bytes());
        }
        for scale in &self.scales {
            out.extend_from_slice(&scale.to_le_bytes());
        }
        out.extend_from_slice(&self.high);
        out.extend_from_slice(&self.low);
        out
    }

    /// Reads [`Arena::encode`]'s form; `None` when it is not that (the caller rebuilds).
    fn decode(model: &str, seq: i64, bytes: &[u8]) -> Option<Self> {
        let rest = bytes.strip_prefix(MAGIC.as_slice())?;
        let dim = u32::from_le_bytes(rest.get(0..4)?.try_into().ok()?) as usize;
        let count = u32::from_le_bytes(rest.get(4..8)?.try_into().ok()?) as usize;
        let rest = &rest[8..];
        let (ids, rest) = rest.split_at_checked(count.checked_mul(16)?)?;
        let (scales, planes) = rest.split_at_checked(count.checked_mul(4)?)?;
        let stride = simd::plane_len(dim);
        let (high, low) = planes.split_at_checked(count.checked_mul(stride)?)?;
        if low.len() != high.len() {
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
            stride,
            high: high.to_vec(),
            low: low.to_vec(),
            ids,
            coverage: Coverage::loaded(seq),
            persisted: true,
            unsaved: 0,
        })
    }
}

/// What an [`EmbeddedIndex`] read from the store since it was created (observability and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexReads {
    /// Persisted arenas loaded.
    pub snapshots: u64,
    /// Agents' current change sequences read (catch-up checks).
    pub sequence_checks: u64,
    /// Record rows read to catch up or build.
    pub change_rows: u64,
}

/// The embedded backend: quantised arenas cached from (and persisted to) the relational store.
pub struct EmbeddedIndex {
    store: Store,
    arenas: Mutex<HashMap<Uuid, Arc<RwLock<Arena>>>>,
    /// One catch-up at a time; a caller that waited finds the arena current.
    catch_up: tokio::sync::Mutex<()>,
    watch: ChangeWatch,
    snapshots: AtomicU64,
    change_rows: AtomicU64,
}

impl EmbeddedIndex {
    pub fn new(store: Store) -> Self {
        Self {
            watch: ChangeWatch::new(store.clone()),
            store,
            arenas: Mutex::new(HashMap::new()),
            catch_up: tokio::sync::Mutex::new(()),
            snapshots: AtomicU64::new(0),
            change_rows: AtomicU64::new(0),
        }
    }

    /// What this index read from the store so far.
    pub fn reads(&self) -> IndexReads {
        IndexReads {
            snapshots: self.snapshots.load(Ordering::Relaxed),
            sequence_checks: self.watch.sequence_checks(),
            change_rows: self.change_rows.load(Ordering::Relaxed),
        }
    }

    fn cached(&self, agent_id: Uuid, model: &str) -> Option<Arc<RwLock<Arena>>> {
        let arenas = self.arenas.lock().unwrap_or_else(PoisonError::into_inner);
        arenas.get(&agent_id).filter(|arena| read(arena).model == model).cloned()
    }

    /// Whether `arena` is known current without asking the store.
    fn current(&self, arena: &RwLock<Arena>, agent_id: Uuid) -> bool {
        let coverage = read(arena).coverage;
        self.watch.is_current(agent_id, coverage)
    }

    /// The persisted arena when it is readable and of `model`, else an empty one (filled by catching up).
    async fn load(&self, agent_id: Uuid, model: &str) -> Result<Arena, IndexError> {
        let snapshot = self.store.memory_index_snapshot(agent_id).await?;
        self.snapshots.fetch_add(u64::from(snapshot.is_some()), Ordering::Relaxed);
        let loaded = snapshot
            .filter(|snapshot| snapshot.model == model)
            .and_then(|snapshot| Arena::decode(model, snapshot.through_seq, &snapshot.data));
        Ok(loaded.unwrap_or_else(|| Arena::new(model)))
    }

    /// The agent's arena for `model`, caught up with the store.
    async fn arena(&self, agent_id: Uuid, model: &str) -> Result<Arc<RwLock<Arena>>, IndexError> {
        if let Some(arena) = self.cached(agent_id, model)
            && self.current(&arena, agent_id)
        {
            return Ok(arena);
        }
        let _turn = self.catch_up.lock().await;
        let arena = match self.cached(agent_id, model) {
            Some(arena) => arena,
            None => {
                let arena = Arc::new(RwLock::new(self.load(agent_id, model).await?));
                self.arenas.lock().unwrap_or_else(PoisonError::into_inner).insert(agent_id, arena.clone());
                arena
            }
        };
        if self.current(&arena, agent_id) {
            return Ok(arena);
        }
        let committed = self.watch.committed(agent_id).await?;
        let covered = read(&arena).coverage.seq;
        if committed.seq > covered {
            let changes = self.store.memory_vector_changes(agent_id, model, covered).await?;
            self.change_rows.fetch_add(changes.len() as u64, Ordering::Relaxed);
            write(&arena).apply(&changes);
        }
        let snapshot = {
            let mut arena = write(&arena);
            arena.coverage = committed.covered(arena.coverage);
            arena.due_for_save().then(|| IndexSnapshot {
                model: arena.model.clone(),
                through_seq: arena.coverage.seq,
                data: arena.encode(),
            })
        };
        if let Some(snapshot) = snapshot {
            match self.save(agent_id, &snapshot).await {
                Ok(()) => {
                    let mut arena = write(&arena);
                    arena.unsaved = 0;
                    arena.persisted = true;
                }
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
        let candidates = read(&arena).candidates(query, rerank_count(k));
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
        // The commit notified the write; the next search catches up.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(id: u128, vector: Option<&[f32]>, seq: i64) -> VectorChange {
        VectorChange { id: Uuid::from_u128(id), seq, vector: vector.map(crate::embed::to_bytes) }
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
        assert_eq!(arena.coverage.seq, 8);
    }

    /// xorshift64 floats in [−0.5, 0.5): deterministic test vectors.
    fn stream(mut state: u64) -> impl FnMut() -> f32 {
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        }
    }

    fn unit(next: &mut impl FnMut() -> f32, dim: usize) -> Vec<f32> {
        let vector: Vec<f32> = (0..dim).map(|_| next()).collect();
        let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        vector.iter().map(|x| x / norm).collect()
    }

    /// Slot `slot`'s int8 codes, rebuilt from its planes.
    fn codes_of(arena: &Arena, slot: usize) -> Vec<i8> {
        let planes = slot * arena.stride..(slot + 1) * arena.stride;
        (0..arena.dim)
            .map(|dim| {
                let (high, low) =
                    (simd::nibble(&arena.high[planes.clone()], dim), simd::nibble(&arena.low[planes.clone()], dim));
                (16 * (i32::from(high) - 8) + i32::from(low)) as i8
            })
            .collect()
    }

    fn dot_codes(a: &[i8], b: &[i8]) -> i32 {
        a.iter().zip(b).map(|(x, y)| i32::from(*x) * i32::from(*y)).sum()
    }

    #[test]
    fn the_planes_hold_the_int8_codes_and_their_dot_products() {
        let mut next = stream(0x1234_5678_9abc_def1);
        let mut arena = Arena::new("m");
        // 100 dimensions: the last block is padded.
        let mut vectors: Vec<Vec<f32>> = (0..50).map(|_| unit(&mut next, 100)).collect();
        let mut extreme = vec![0.0; 100];
        extreme[0] = -1.0;
        extreme[99] = 1.0;
        vectors.push(extreme);
        arena.apply(&vectors.iter().enumerate().map(|(n, v)| change(n as u128, Some(v), 1)).collect::<Vec<_>>());
        let query_vector = unit(&mut next, 100);
        let query = Query::new(&query_vector, arena.stride);
        let mut query_codes = vec![0_i8; 100];
        quantise(&query_vector, &mut query_codes);
        for (slot, vector) in vectors.iter().enumerate() {
            let mut codes = vec![0_i8; 100];
            quantise(vector, &mut codes);
            assert_eq!(codes_of(&arena, slot), codes, "slot {slot}");
            assert_eq!(arena.code_dot(slot, &query), dot_codes(&codes, &query_codes), "slot {slot}");
        }
        assert_eq!(&codes_of(&arena, 50)[..2], &[-127, 0]);
        assert_eq!(codes_of(&arena, 50)[99], 127);
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
        assert_eq!(codes_of(&arena, arena.slots[&Uuid::from_u128(3)]), vec![95, 127], "the moved slot kept its codes");
        let copy = Arena::decode("m", arena.coverage.seq, &arena.encode()).unwrap();
        assert_eq!(
            (copy.ids.clone(), copy.scales.clone(), copy.high.clone(), copy.low.clone()),
            (arena.ids, arena.scales, arena.high, arena.low)
        );
        assert_eq!(copy.candidates(&[0.6, 0.8], 1), vec![Uuid::from_u128(3)]);
        assert!(Arena::decode("m", 0, b"CXVIDX02\x02\0\0\0\x05\0\0\0").is_none(), "truncated");
        assert!(Arena::decode("m", 0, b"garbage").is_none());
        // The previous format (int8 codes in one array) is not read: the caller rebuilds from the rows.
        let mut old = b"CXVIDX01\x02\0\0\0\x01\0\0\0".to_vec();
        old.extend_from_slice(Uuid::from_u128(7).as_bytes());
        old.extend_from_slice(&(1.0_f32 / 127.0).to_le_bytes());
        old.extend_from_slice(&[127, 0]);
        assert!(Arena::decode("m", 0, &old).is_none(), "a CXVIDX01 blob is rebuilt");
    }

    #[test]
    fn a_large_arena_scanned_in_slices_finds_what_the_plain_passes_find() {
        let mut arena = Arena::new("m");
        let mut next = stream(0x2545_f491_4f6c_dd1d);
        let changes: Vec<VectorChange> =
            (0..(2 * SCAN_SLICE as u128 + 7)).map(|id| change(id, Some(&[next(), next(), next()]), 1)).collect();
        arena.apply(&changes);
        let query_vector = [0.3, -0.5, 0.8];
        let query = Query::new(&query_vector, arena.stride);
        // The passes written out plainly: every slot's high-nibble estimate, the best 8 × 40 of those by
        // their int8 dot product, the best 40.
        let mut coarse: Vec<(f32, u32)> = (0..arena.ids.len())
            .map(|slot| {
                let codes = codes_of(&arena, slot);
                let high: i32 =
                    codes.iter().zip(&query.codes).map(|(c, q)| ((i32::from(*c) >> 4) + 8) * i32::from(*q)).sum();
                ((16.0 * high as f32 - 120.5 * query.sum as f32) * arena.scales[slot], slot as u32)
            })
            .collect();
        coarse.sort_by(by_score);
        let mut fine: Vec<(f32, u32)> = coarse[..40 * COARSE_PER_CANDIDATE]
            .iter()
            .map(|(_, slot)| {
                let codes = codes_of(&arena, *slot as usize);
                (dot_codes(&codes, &query.codes) as f32 * arena.scales[*slot as usize], *slot)
            })
            .collect();
        fine.sort_by(by_score);
        let plain: Vec<Uuid> = fine.iter().take(40).map(|(_, slot)| arena.ids[*slot as usize]).collect();
        assert_eq!(arena.candidates(&query_vector, 40), plain);
    }

    #[test]
    fn the_passes_keep_the_exact_top_ten_of_random_unit_vectors() {
        // The bench's hardest case in small: pseudo-random unit vectors of 384 dimensions, whose best
        // matches are barely better than the rest.
        let mut next = stream(0x0bad_cafe_f00d_d00d);
        let vectors: Vec<Vec<f32>> = (0..20_000).map(|_| unit(&mut next, 384)).collect();
        let mut arena = Arena::new("m");
        arena.apply(&vectors.iter().enumerate().map(|(n, v)| change(n as u128, Some(v), 1)).collect::<Vec<_>>());
        let mut found = 0;
        for _ in 0..20 {
            let query = unit(&mut next, 384);
            let exact_dot: Vec<f32> = vectors.iter().map(|vector| dot_f32(vector, &query)).collect();
            let mut exact: Vec<usize> = (0..vectors.len()).collect();
            exact.sort_by(|a, b| exact_dot[*b].total_cmp(&exact_dot[*a]));
            let mut reranked: Vec<usize> =
                arena.candidates(&query, rerank_count(10)).iter().map(|id| id.as_u128() as usize).collect();
            reranked.sort_by(|a, b| exact_dot[*b].total_cmp(&exact_dot[*a]));
            found += reranked.iter().take(10).filter(|n| exact[..10].contains(n)).count();
        }
        assert!(found >= 195, "recall@10 {found}/200");
    }

    #[test]
    fn exact_dot_matches_the_plain_sum() {
        let a: Vec<f32> = (0..19).map(|i| i as f32 * 0.1).collect();
        let b: Vec<f32> = (0..19).map(|i| 1.0 - i as f32 * 0.05).collect();
        let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot_f32(&a, &b) - plain).abs() < 1e-4);
    }
}
