//! The embedded vector backend (SPEC §9.5, issue 16 targets): per agent and model, an arena of
//! int8-quantised vectors (one scale per vector) scanned with an integer dot product the compiler
//! vectorises, whose best candidates are re-ranked exactly on the stored f32 vectors.
//!
//! The relational rows are the source of truth. An arena covers the agent's memory change sequence up to
//! some number (see `cortex_store::memory`) and catches up exactly with the rows of a higher sequence; it
//! is persisted as one blob per agent (`memory_vector_index`, with the sequence it covers) after its first
//! build and after enough changes, so a restart loads the blob and applies only the rows written since —
//! none when nothing changed, and then the agent's current sequence (one primary-key row) is all it reads
//! beside the blob.
//!
//! When to catch up: the index subscribes to the store's notifications. Every committed memory write
//! notifies its agent and sequence (in-process at once for this process's writes; through `LISTEN` from
//! other PostgreSQL processes), so a search whose arena covers the latest sequence it heard of reads
//! nothing to know it is current. A `Resync` (listener reconnected) or a lagging subscription may have lost
//! notifications: every arena then checks the store once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use cortex_store::memory::{IndexSnapshot, VectorChange};
use cortex_store::{Notification, Store};
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::TryRecvError;
use uuid::Uuid;

use crate::index::{IndexError, VectorIndex};
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
    /// The agent's change sequence it covers (-1: nothing yet).
    seq: i64,
    /// The resync generation ([`Changes::resyncs`]) it was last checked against the store in; `None`
    /// until its first catch-up.
    checked: Option<u64>,
    /// A blob of it is in the store (perhaps older).
    persisted: bool,
    /// Changes applied since it was loaded or saved.
    unsaved: usize,
}

/// Arenas larger than this many vectors are scanned on several threads (one slice each).
const SCAN_SLICE: usize = 100_000;

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
            seq: -1,
            checked: None,
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
            self.seq = self.seq.max(change.seq);
        }
        self.unsaved += changes.len();
    }

    /// Persisted after its first build, then after enough changes.
    fn due_for_save(&self) -> bool {
        (!self.persisted && self.unsaved > 0)
            || self.unsaved >= SAVE_ALWAYS_CHANGES
            || (self.unsaved >= SAVE_MIN_CHANGES && self.unsaved * 8 >= self.ids.len())
    }

    /// Up to `r` ids with the best quantised dot product with `query`, best first. Large arenas are
    /// scanned in [`SCAN_SLICE`]-vector slices on as many threads as there are cores.
    fn candidates(&self, query: &[f32], r: usize) -> Vec<Uuid> {
        if self.dim == 0 || query.len() != self.dim || r == 0 {
            return Vec::new();
        }
        let mut codes = vec![0_i8; self.dim];
        quantise(query, &mut codes);
        let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let slices = self.ids.len().div_ceil(SCAN_SLICE).clamp(1, threads);
        let mut best = if slices == 1 {
            self.best_of(&codes, 0, self.ids.len(), r)
        } else {
            let per = self.ids.len().div_ceil(slices);
            std::thread::scope(|scope| {
                let workers: Vec<_> = (0..slices)
                    .map(|n| {
                        let (from, to) = (n * per, ((n + 1) * per).min(self.ids.len()));
                        let codes = &codes;
                        scope.spawn(move || self.best_of(codes, from, to, r))
                    })
                    .collect();
                // A worker only computes: it panics only on a bug, which is passed on as it is.
                workers
                    .into_iter()
                    .flat_map(|worker| worker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
                    .collect()
            })
        };
        keep_best(&mut best, r);
        best.sort_by(by_score);
        best.into_iter().map(|(_, slot)| self.ids[slot as usize]).collect()
    }

    /// The best `r` (score, slot) of slots `from..to`, unordered: a buffer of `2r` is cut back to the best
    /// `r` whenever it fills, and a vector scoring below the `r`-th best so far is skipped.
    fn best_of(&self, codes: &[i8], from: usize, to: usize, r: usize) -> Vec<(f32, u32)> {
        let mut best: Vec<(f32, u32)> = Vec::with_capacity(2 * r);
        let mut floor = f32::NEG_INFINITY;
        let vectors = self.codes[from * self.dim..to * self.dim].chunks_exact(self.dim);
        for (slot, (vector, scale)) in (from..).zip(vectors.zip(&self.scales[from..to])) {
            let score = dot_codes(vector, codes) as f32 * scale;
            if score < floor {
                continue;
            }
            best.push((score, slot as u32));
            if best.len() == 2 * r {
                keep_best(&mut best, r);
                floor = best[r - 1].0;
            }
        }
        best
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
    fn decode(model: &str, seq: i64, bytes: &[u8]) -> Option<Self> {
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
            seq,
            checked: None,
            persisted: true,
            unsaved: 0,
        })
    }
}

/// The index's subscription to the store's notifications and what it learnt from them.
struct Changes {
    receiver: Receiver<Notification>,
    /// Per agent, the highest change sequence notified.
    latest: HashMap<Uuid, i64>,
    /// Bumped on every `Resync` or lag: each arena then checks the store once.
    resyncs: u64,
}

impl Changes {
    /// Takes every pending notification.
    fn drain(&mut self) {
        loop {
            match self.receiver.try_recv() {
                Ok(Notification::Memory { agent_id, seq }) => {
                    let latest = self.latest.entry(agent_id).or_insert(seq);
                    *latest = (*latest).max(seq);
                }
                Ok(Notification::Resync) | Err(TryRecvError::Lagged(_)) => self.resyncs += 1,
                Ok(_) => {}
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
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
    /// Subscribed at the first search (a store that never searches holds no listener).
    changes: Mutex<Option<Changes>>,
    snapshots: AtomicU64,
    sequence_checks: AtomicU64,
    change_rows: AtomicU64,
}

impl EmbeddedIndex {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            arenas: Mutex::new(HashMap::new()),
            catch_up: tokio::sync::Mutex::new(()),
            changes: Mutex::new(None),
            snapshots: AtomicU64::new(0),
            sequence_checks: AtomicU64::new(0),
            change_rows: AtomicU64::new(0),
        }
    }

    /// What this index read from the store so far.
    pub fn reads(&self) -> IndexReads {
        IndexReads {
            snapshots: self.snapshots.load(Ordering::Relaxed),
            sequence_checks: self.sequence_checks.load(Ordering::Relaxed),
            change_rows: self.change_rows.load(Ordering::Relaxed),
        }
    }

    fn cached(&self, agent_id: Uuid, model: &str) -> Option<Arc<RwLock<Arena>>> {
        let arenas = self.arenas.lock().unwrap_or_else(PoisonError::into_inner);
        arenas.get(&agent_id).filter(|arena| read(arena).model == model).cloned()
    }

    /// Drains the notifications (subscribing first if needed); the highest sequence heard of for the
    /// agent and the resync generation.
    fn heard(&self, agent_id: Uuid) -> (Option<i64>, u64) {
        let mut changes = self.changes.lock().unwrap_or_else(PoisonError::into_inner);
        let changes = changes.get_or_insert_with(|| Changes {
            receiver: self.store.subscribe(),
            latest: HashMap::new(),
            resyncs: 0,
        });
        changes.drain();
        (changes.latest.get(&agent_id).copied(), changes.resyncs)
    }

    /// Whether `arena` is known current without asking the store.
    fn current(&self, arena: &RwLock<Arena>, agent_id: Uuid) -> bool {
        let (latest, resyncs) = self.heard(agent_id);
        let arena = read(arena);
        arena.checked == Some(resyncs) && latest.is_none_or(|latest| latest <= arena.seq)
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
        // Taken before the store is read: a write notified later is caught up by a later search.
        let (_, resyncs) = self.heard(agent_id);
        // The sequence first, the rows after: every write up to it has committed, so the rows read next
        // include them all (and maybe later ones, whose sequences are then covered too).
        let seq = self.store.memory_change_seq(agent_id).await?;
        self.sequence_checks.fetch_add(1, Ordering::Relaxed);
        let covered = read(&arena).seq;
        if seq > covered {
            let changes = self.store.memory_vector_changes(agent_id, model, covered).await?;
            self.change_rows.fetch_add(changes.len() as u64, Ordering::Relaxed);
            write(&arena).apply(&changes);
        }
        let snapshot = {
            let mut arena = write(&arena);
            arena.seq = arena.seq.max(seq);
            arena.checked = Some(resyncs);
            arena.due_for_save().then(|| IndexSnapshot {
                model: arena.model.clone(),
                through_seq: arena.seq,
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
        assert_eq!(arena.seq, 8);
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
        let copy = Arena::decode("m", arena.seq, &arena.encode()).unwrap();
        assert_eq!((copy.ids.clone(), copy.scales.clone(), copy.codes.clone()), (arena.ids, arena.scales, arena.codes));
        assert_eq!(copy.candidates(&[0.6, 0.8], 1), vec![Uuid::from_u128(3)]);
        assert!(Arena::decode("m", 0, b"CXVIDX01\x02\0\0\0\x05\0\0\0").is_none(), "truncated");
        assert!(Arena::decode("m", 0, b"garbage").is_none());
    }

    #[test]
    fn a_large_arena_scanned_in_slices_finds_the_plain_best() {
        let mut arena = Arena::new("m");
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        let changes: Vec<VectorChange> =
            (0..(2 * SCAN_SLICE as u128 + 7)).map(|id| change(id, Some(&[next(), next(), next()]), 1)).collect();
        arena.apply(&changes);
        let query = [0.3, -0.5, 0.8];
        let mut codes = vec![0_i8; 3];
        quantise(&query, &mut codes);
        let mut plain: Vec<(f32, u32)> = arena
            .codes
            .chunks_exact(3)
            .zip(&arena.scales)
            .enumerate()
            .map(|(slot, (vector, scale))| (dot_codes(vector, &codes) as f32 * scale, slot as u32))
            .collect();
        plain.sort_by(by_score);
        let plain: Vec<Uuid> = plain.iter().take(40).map(|(_, slot)| arena.ids[*slot as usize]).collect();
        assert_eq!(arena.candidates(&query, 40), plain);
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
