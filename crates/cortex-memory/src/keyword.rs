//! The embedded backend's keyword side (SPEC §9.6, issue 16 targets): per agent, an in-process inverted
//! index of the live records' words, ranked by Okapi BM25 (k1 = 1.2, b = 0.75) over every match.
//!
//! Why in process: the database's full-text indexes walk every match of a query to rank it. The records
//! are short notes over an everyday vocabulary, so a few common words match most of an agent's records
//! (the bench's queries match ~70 % of 100 000), and SQLite spent ~20 ms per search there. Here a search
//! adds each query word's postings into one score per record: a sequential pass over a few arrays.
//!
//! - **Words** are split on anything not a letter or digit, lower-cased, stripped of diacritics and
//!   stemmed (Snowball English), as SQLite FTS5's `porter unicode61 remove_diacritics 2` does; the query is
//!   treated the same way.
//! - **Rank**: BM25 with each word's document frequency counted over the index's postings, which include
//!   replaced and deleted versions of records until the next compaction (at most 1/8 of the records plus
//!   [`COMPACT_MIN`]); the search itself skips them. Ties: newer (later written) first.
//! - **Freshness**: the same protocol as the vector index (`watch.rs`): the rows are the source of truth;
//!   the index covers a change sequence and applies the rows written after it
//!   ([`cortex_store::Store::memory_text_changes`]). It is not persisted: the first search after a start
//!   builds it from the rows (measured by `cortex bench memory` as part of the cold start).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use cortex_store::memory::TextChange;
use cortex_store::{Store, StoreError};
use rust_stemmers::{Algorithm, Stemmer};
use unicode_normalization::UnicodeNormalization;
use uuid::Uuid;

use crate::watch::{ChangeWatch, Coverage};

/// BM25's term-frequency saturation.
const K1: f32 = 1.2;
/// BM25's length normalisation.
const B: f32 = 0.75;
/// Dead postings tolerated before a compaction, beyond 1/8 of the records.
const COMPACT_MIN: usize = 1024;

/// The tokens of `text`: runs of letters and digits.
fn tokens(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|token| !token.is_empty())
}

/// A token as the index keys it: lower-cased, without diacritics, stemmed.
fn term_of(token: &str, stemmer: &Stemmer) -> String {
    let lower = token.to_lowercase();
    let plain = if lower.is_ascii() {
        lower
    } else {
        lower.nfd().filter(|c| !unicode_normalization::char::is_combining_mark(*c)).collect()
    };
    stemmer.stem(&plain).into_owned()
}

/// Raw token → term number while a batch of changes is applied: stemming is the costly part of a
/// build and tokens repeat.
type TokenCache = HashMap<String, u32>;

/// One agent's inverted index.
struct Postings {
    coverage: Coverage,
    /// Stemmed word → term number.
    terms: HashMap<Box<str>, u32>,
    /// Per term: (record slot, occurrences in it), in slot order.
    lists: Vec<Vec<(u32, u16)>>,
    /// Per slot: the record, its length in words and whether it is its live version.
    ids: Vec<Uuid>,
    lens: Vec<u32>,
    live: Vec<bool>,
    /// Live record → its slot.
    slots: HashMap<Uuid, u32>,
    /// Words in the live records.
    live_words: u64,
}

impl Postings {
    fn new() -> Self {
        Self {
            coverage: Coverage::empty(),
            terms: HashMap::new(),
            lists: Vec::new(),
            ids: Vec::new(),
            lens: Vec::new(),
            live: Vec::new(),
            slots: HashMap::new(),
            live_words: 0,
        }
    }

    fn remove(&mut self, id: Uuid) {
        if let Some(slot) = self.slots.remove(&id) {
            let slot = slot as usize;
            self.live[slot] = false;
            self.live_words -= u64::from(self.lens[slot]);
        }
    }

    /// The term number of `token`, added when new.
    fn term_number(&mut self, token: &str, stemmer: &Stemmer, cache: &mut TokenCache) -> u32 {
        if let Some(number) = cache.get(token) {
            return *number;
        }
        let next = self.lists.len() as u32;
        let number = *self.terms.entry(term_of(token, stemmer).into()).or_insert(next);
        if number == next {
            self.lists.push(Vec::new());
        }
        cache.insert(token.to_owned(), number);
        number
    }

    fn insert(&mut self, id: Uuid, content: &str, stemmer: &Stemmer, cache: &mut TokenCache) {
        let Ok(slot) = u32::try_from(self.ids.len()) else {
            tracing::warn!(memory_id = %id, "keyword index full; record not indexed");
            return;
        };
        let mut numbers: Vec<u32> = tokens(content).map(|token| self.term_number(token, stemmer, cache)).collect();
        let words = u32::try_from(numbers.len()).unwrap_or(u32::MAX);
        numbers.sort_unstable();
        for run in numbers.chunk_by(|a, b| a == b) {
            let count = u16::try_from(run.len()).unwrap_or(u16::MAX);
            self.lists[run[0] as usize].push((slot, count));
        }
        self.ids.push(id);
        self.lens.push(words);
        self.live.push(true);
        self.slots.insert(id, slot);
        self.live_words += u64::from(words);
    }

    fn apply(&mut self, changes: &[TextChange], stemmer: &Stemmer) {
        let mut cache = TokenCache::new();
        for change in changes {
            self.remove(change.id);
            if let Some(content) = &change.content {
                self.insert(change.id, content, stemmer, &mut cache);
            }
            self.coverage.seq = self.coverage.seq.max(change.seq);
        }
        let dead = self.ids.len() - self.slots.len();
        if dead > COMPACT_MIN + self.slots.len() / 8 {
            self.compact();
        }
    }

    /// Drops the dead slots and renumbers the rest (order kept, so newer stays later).
    fn compact(&mut self) {
        let mut renumbered = vec![u32::MAX; self.ids.len()];
        let mut next = 0_u32;
        for (slot, live) in self.live.iter().enumerate() {
            if *live {
                renumbered[slot] = next;
                next += 1;
            }
        }
        for list in &mut self.lists {
            list.retain_mut(|(slot, _)| {
                *slot = renumbered[*slot as usize];
                *slot != u32::MAX
            });
        }
        let keep = |slot: usize| renumbered[slot] != u32::MAX;
        self.ids = self.ids.iter().enumerate().filter(|(slot, _)| keep(*slot)).map(|(_, id)| *id).collect();
        self.lens = self.lens.iter().enumerate().filter(|(slot, _)| keep(*slot)).map(|(_, len)| *len).collect();
        self.live = vec![true; self.ids.len()];
        self.slots = self.ids.iter().enumerate().map(|(slot, id)| (*id, slot as u32)).collect();
        // Terms left without postings keep their (empty) list: few, and a later record may use them.
    }

    /// The best `k` live records for the query's terms, best first, with their BM25 score.
    fn search(&self, terms: &[String], k: usize) -> Vec<(Uuid, f64)> {
        let live = self.slots.len();
        if live == 0 || k == 0 {
            return Vec::new();
        }
        let mut numbers: Vec<u32> = terms.iter().filter_map(|term| self.terms.get(term.as_str()).copied()).collect();
        numbers.sort_unstable();
        numbers.dedup();
        if numbers.is_empty() {
            return Vec::new();
        }
        let average = self.live_words as f32 / live as f32;
        let mut scores = vec![0_f32; self.ids.len()];
        for number in numbers {
            let list = &self.lists[number as usize];
            let containing = list.len() as f32;
            let idf = (1.0 + (live as f32 - containing + 0.5).max(0.0) / (containing + 0.5)).ln();
            for &(slot, count) in list {
                let count = f32::from(count);
                let norm = K1 * (1.0 - B + B * self.lens[slot as usize] as f32 / average.max(1.0));
                scores[slot as usize] += idf * count * (K1 + 1.0) / (count + norm);
            }
        }
        // The best `k` in a min-heap keyed by (score, slot): positive f32s order like their bits, and
        // among equal scores the later slot (newer write) wins.
        let key = |slot: usize, score: f32| (u64::from(score.to_bits()) << 32) | slot as u64;
        let mut best: BinaryHeap<Reverse<u64>> = BinaryHeap::with_capacity(k + 1);
        for (slot, score) in scores.iter().enumerate() {
            if *score <= 0.0 || !self.live[slot] {
                continue;
            }
            let entry = key(slot, *score);
            if best.len() < k {
                best.push(Reverse(entry));
            } else if best.peek().is_some_and(|Reverse(worst)| entry > *worst) {
                best.pop();
                best.push(Reverse(entry));
            }
        }
        best.into_sorted_vec()
            .into_iter()
            .map(|Reverse(entry)| {
                let slot = (entry & u64::from(u32::MAX)) as usize;
                (self.ids[slot], f64::from(f32::from_bits((entry >> 32) as u32)))
            })
            .collect()
    }
}

/// The in-process keyword index of the embedded backend (see the module header).
pub struct KeywordIndex {
    store: Store,
    stemmer: Stemmer,
    agents: Mutex<HashMap<Uuid, Arc<RwLock<Postings>>>>,
    /// One catch-up at a time; a caller that waited finds the index current.
    catch_up: tokio::sync::Mutex<()>,
    watch: ChangeWatch,
}

impl KeywordIndex {
    pub fn new(store: Store) -> Self {
        Self {
            watch: ChangeWatch::new(store.clone()),
            store,
            stemmer: Stemmer::create(Algorithm::English),
            agents: Mutex::new(HashMap::new()),
            catch_up: tokio::sync::Mutex::new(()),
        }
    }

    /// The query's terms as the index keys them.
    fn terms(&self, words: &[String]) -> Vec<String> {
        words.iter().flat_map(|word| tokens(word)).map(|token| term_of(token, &self.stemmer)).collect()
    }

    fn cached(&self, agent_id: Uuid) -> Option<Arc<RwLock<Postings>>> {
        self.agents.lock().unwrap_or_else(PoisonError::into_inner).get(&agent_id).cloned()
    }

    fn current(&self, postings: &RwLock<Postings>, agent_id: Uuid) -> bool {
        let coverage = read(postings).coverage;
        self.watch.is_current(agent_id, coverage)
    }

    /// The agent's index, caught up with the store.
    async fn postings(&self, agent_id: Uuid) -> Result<Arc<RwLock<Postings>>, StoreError> {
        if let Some(postings) = self.cached(agent_id)
            && self.current(&postings, agent_id)
        {
            return Ok(postings);
        }
        let _turn = self.catch_up.lock().await;
        let postings = self.cached(agent_id).unwrap_or_else(|| {
            let postings = Arc::new(RwLock::new(Postings::new()));
            self.agents.lock().unwrap_or_else(PoisonError::into_inner).insert(agent_id, postings.clone());
            postings
        });
        if self.current(&postings, agent_id) {
            return Ok(postings);
        }
        let committed = self.watch.committed(agent_id).await?;
        let covered = read(&postings).coverage.seq;
        if committed.seq > covered {
            let changes = self.store.memory_text_changes(agent_id, covered).await?;
            write(&postings).apply(&changes, &self.stemmer);
        }
        let mut caught_up = write(&postings);
        caught_up.coverage = committed.covered(caught_up.coverage);
        drop(caught_up);
        Ok(postings)
    }

    /// Up to `k` live records of the agent containing any of `words` (after stemming), best BM25 score
    /// first, with that score (> 0; comparable within one call only).
    pub async fn search(&self, agent_id: Uuid, words: &[String], k: usize) -> Result<Vec<(Uuid, f64)>, StoreError> {
        let terms = self.terms(words);
        if terms.is_empty() || k == 0 {
            return Ok(Vec::new());
        }
        let postings = self.postings(agent_id).await?;
        let hits = read(&postings).search(&terms, k);
        Ok(hits)
    }
}

fn read(postings: &RwLock<Postings>) -> std::sync::RwLockReadGuard<'_, Postings> {
    postings.read().unwrap_or_else(PoisonError::into_inner)
}

fn write(postings: &RwLock<Postings>) -> std::sync::RwLockWriteGuard<'_, Postings> {
    postings.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(id: u128, content: Option<&str>, seq: i64) -> TextChange {
        TextChange { id: Uuid::from_u128(id), seq, content: content.map(str::to_owned) }
    }

    fn terms(words: &[&str]) -> Vec<String> {
        let stemmer = Stemmer::create(Algorithm::English);
        words.iter().flat_map(|word| tokens(word)).map(|token| term_of(token, &stemmer)).collect()
    }

    fn ids(hits: &[(Uuid, f64)]) -> Vec<u128> {
        hits.iter().map(|(id, _)| id.as_u128()).collect()
    }

    #[test]
    fn words_are_stemmed_folded_and_split_like_the_full_text_index() {
        assert_eq!(terms(&["Meetings", "café", "re-deploying"]), ["meet", "cafe", "re", "deploy"]);
    }

    #[test]
    fn rarer_words_repeated_words_and_shorter_records_rank_higher() {
        let stemmer = Stemmer::create(Algorithm::English);
        let mut postings = Postings::new();
        postings.apply(
            &[
                change(1, Some("the kettle is in the office"), 1),
                change(2, Some("the kettle kettle is blue"), 2),
                change(3, Some("the office opens at nine"), 3),
                change(4, Some("the garden needs water"), 4),
                change(5, Some("the office, the garden and the kettle and many other long words here"), 5),
            ],
            &stemmer,
        );
        let hits = postings.search(&terms(&["kettle", "office"]), 10);
        assert_eq!(ids(&hits)[0], 1, "both words in a short record first: {hits:?}");
        assert_eq!(ids(&hits).len(), 4, "every record with one of the words, not the garden alone");
        let kettle = postings.search(&terms(&["kettles"]), 10);
        assert_eq!(ids(&kettle), [2, 1, 5], "twice beats once, short beats long; the plural matches");
        assert!(hits.windows(2).all(|pair| pair[0].1 >= pair[1].1 && pair[1].1 > 0.0));
        assert_eq!(postings.search(&terms(&["kettle"]), 1).len(), 1, "the limit holds");
        assert!(postings.search(&terms(&["teapot"]), 10).is_empty());
    }

    #[test]
    fn replaced_and_removed_records_leave_the_results_and_compaction_keeps_the_rest() {
        let stemmer = Stemmer::create(Algorithm::English);
        let mut postings = Postings::new();
        let many: Vec<TextChange> =
            (0..3000).map(|n| change(n, Some(&format!("note {n} about rivers")), n as i64)).collect();
        postings.apply(&many, &stemmer);
        postings.apply(&[change(7, Some("now about lakes"), 3001), change(8, None, 3002)], &stemmer);
        assert_eq!(ids(&postings.search(&terms(&["lakes"]), 10)), [7]);
        assert!(postings.search(&terms(&["7"]), 10).is_empty(), "the old version of 7 is gone");
        assert!(postings.search(&terms(&["8"]), 10).is_empty(), "8 was deleted");
        assert_eq!(postings.coverage.seq, 3002);
        // Deleting most records compacts; what is left is found as before, newest first among equals.
        let gone: Vec<TextChange> = (0..2900).filter(|n| *n != 7).map(|n| change(n, None, 4000 + n as i64)).collect();
        postings.apply(&gone, &stemmer);
        assert_eq!(postings.ids.len(), postings.slots.len(), "compacted: no dead slots left");
        let rivers = postings.search(&terms(&["rivers"]), 3);
        assert_eq!(ids(&rivers), [2999, 2998, 2997]);
        assert_eq!(ids(&postings.search(&terms(&["lake"]), 10)), [7]);
    }
}
