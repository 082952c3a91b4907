//! `cortex bench memory`: the memory store and its embedded vector index at scale (SPEC §9.5–§9.6,
//! issue 16 targets: p99 < 5 ms and recall@10 ≥ 0.95 at 100,000 records of 384 dimensions, index ready
//! < 1 s after a restart).
//!
//! Records are written through [`Memory::remember`] (validation, embedding, row, keyword index) with an
//! in-process embedder that turns each text into a pseudo-random unit vector of `--dim` components (seeded
//! by the text, so no network and no model: the figures measure the store and the index, not an
//! embedding service). It reports:
//! - **insert rate** (records/s, one transaction per record as the API writes them), over the first
//!   `--remembered` records; the rest are bulk-loaded ([`cortex_store::Tx::insert_memories`], 5 000 per
//!   transaction, same rows and keyword index) so that 1 000 000 records load in minutes — its rate is
//!   reported too;
//! - **index build**: the first vector search of a fresh index with nothing persisted (decodes every
//!   stored vector, then persists the quantised index);
//! - **index cold start**: the first hybrid search of fresh indexes, as after a restart (the vector index
//!   loads its persisted copy and applies the rows changed since; the in-process keyword index is built
//!   from the rows);
//! - **vector search** p50/p99 (top 10 from the index) and **recall@10** against an exact scan computed
//!   here; **keyword search** p50/p99 (top 30 from the in-process keyword index, as a hybrid search asks);
//! - **hybrid search** p50/p99: the full `Memory::search` (keyword + vector candidates, fusion, scoring);
//! - the process's resident set after the index is loaded, and the machine's load average around the
//!   searches.
//!
//! Cold start and the search percentiles are measured in `--rounds` rounds (each on a fresh index) and
//! reported as min / median / max of the rounds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use cortex_core::clock::SystemClock;
use cortex_core::memory::MemorySource;
use cortex_memory::{
    EmbedError, EmbeddedIndex, Embedder, Indexes, KeywordIndex, Memory, Remember, SearchQuery, VectorIndex,
};
use cortex_store::Store;
use cortex_store::memory::{NewMemory, StoredEmbedding};
use uuid::Uuid;

use super::{Report, Scratch, ScratchArgs, millis, percentile, rate};

/// Words the record texts are drawn from (so keyword search has work to do).
const WORDS: &[&str] = &[
    "ana",
    "lisbon",
    "coffee",
    "release",
    "train",
    "server",
    "atlas",
    "invoice",
    "tuesday",
    "garden",
    "piano",
    "backup",
    "deploy",
    "budget",
    "sister",
    "office",
    "meeting",
    "ticket",
    "printer",
    "holiday",
    "project",
    "kernel",
    "database",
    "migration",
    "window",
    "cat",
    "bicycle",
    "museum",
    "river",
    "contract",
];
/// The embedding model name stored with the bench vectors.
const MODEL: &str = "bench-random";
/// Records per bulk-load transaction.
const BULK_BATCH: u64 = 5000;

/// Options of `cortex bench memory`.
#[derive(Debug, Args)]
pub struct MemoryArgs {
    #[command(flatten)]
    pub scratch: ScratchArgs,
    /// Records stored for one agent.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(100..=2_000_000))]
    pub records: u32,
    /// Vector dimensions.
    #[arg(long, default_value_t = 384, value_parser = clap::value_parser!(u32).range(8..=4096))]
    pub dim: u32,
    /// Searches measured (each figure is over this many).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(10..=100_000))]
    pub queries: u32,
    /// Records written through `Memory::remember` (the measured insert rate); the rest are bulk-loaded.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..=2_000_000))]
    pub remembered: u32,
    /// Rounds of searches, each on a freshly started index (min, median and max of the rounds are reported).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub rounds: u32,
}

/// A deterministic stand-in for an embedding model: a unit vector seeded by the text.
struct RandomEmbedder {
    dim: usize,
}

fn seed_of(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

/// A unit vector from a xorshift stream seeded by `seed`.
fn random_unit(seed: u64, dim: usize) -> Vec<f32> {
    let mut state = seed | 1;
    let mut vector: Vec<f32> = (0..dim)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt().max(f32::EPSILON);
    vector.iter_mut().for_each(|x| *x /= norm);
    vector
}

#[async_trait::async_trait]
impl Embedder for RandomEmbedder {
    fn model(&self) -> &str {
        MODEL
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        Ok(texts.iter().map(|text| random_unit(seed_of(text), self.dim)).collect())
    }
}

/// Hybrid search number `n`: six vocabulary words and a number, like a record's text.
fn hybrid_query(n: u64) -> SearchQuery {
    let text = record_text(n.wrapping_mul(7919).wrapping_add(13)).replace("Note", "about");
    SearchQuery { text, limit: 10, types: Vec::new(), tags: Vec::new() }
}

/// Record number `n`'s text: a few vocabulary words and the number (unique content).
fn record_text(n: u64) -> String {
    let mut state = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut words = Vec::new();
    for _ in 0..6 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        words.push(WORDS[(state % WORDS.len() as u64) as usize]);
    }
    format!("Note {n}: {}.", words.join(" "))
}

fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                line.strip_prefix("VmRSS:").and_then(|rest| rest.trim().trim_end_matches(" kB").trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

/// The exact top 10 ids for `query` over `vectors`.
fn exact_top10(vectors: &[(Uuid, Vec<f32>)], query: &[f32]) -> Vec<Uuid> {
    let mut scored: Vec<(f32, Uuid)> =
        vectors.iter().map(|(id, vector)| (vector.iter().zip(query).map(|(a, b)| a * b).sum(), *id)).collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored.into_iter().take(10).map(|(_, id)| id).collect()
}

pub(crate) async fn measure(scratch: &Scratch, args: &MemoryArgs) -> anyhow::Result<Report> {
    let store = Store::open(&scratch.database, Arc::new(SystemClock)).await.context("opening the scratch store")?;
    store.migrate().await.context("migrating the scratch store")?;
    let agent = super::queue::bench_agent(&store).await?;
    let dim = args.dim as usize;
    let embedder = Arc::new(RandomEmbedder { dim });
    let memory = Memory::new(store.clone(), Some(embedder.clone()), Indexes::embedded(&store));
    let records = u64::from(args.records);

    let remembered = records.min(u64::from(args.remembered));
    let started = Instant::now();
    for n in 0..remembered {
        memory
            .remember(Remember::new(agent, record_text(n), MemorySource::Api))
            .await
            .with_context(|| format!("storing record {n}"))?;
    }
    let insert_elapsed = started.elapsed();
    let bulk = Instant::now();
    for first in (remembered..records).step_by(BULK_BATCH as usize) {
        let batch: Vec<NewMemory> = (first..records.min(first + BULK_BATCH))
            .map(|n| {
                let content = record_text(n);
                let vector = random_unit(seed_of(&content), dim);
                NewMemory {
                    agent_id: agent,
                    memory_type: "fact".into(),
                    importance: 3,
                    confidence: 1.0,
                    source: MemorySource::Api.db_name().into(),
                    embedding: Some(StoredEmbedding {
                        model: MODEL.into(),
                        bytes: cortex_memory::embed::to_bytes(&vector),
                    }),
                    content,
                    ..NewMemory::default()
                }
            })
            .collect();
        let mut tx = store.begin().await?;
        tx.insert_memories(&batch).await.with_context(|| format!("bulk-loading records from {first}"))?;
        tx.commit().await?;
    }
    let bulk_elapsed = bulk.elapsed();

    // The first search of a fresh index builds it from the rows and persists it; each round then starts
    // another fresh index, as a restarted process does: it loads the persisted copy.
    let query_vectors: Vec<Vec<f32>> =
        (0..args.queries).map(|n| random_unit(seed_of(&format!("query {n}")), dim)).collect();
    let build = Instant::now();
    EmbeddedIndex::new(store.clone()).search(agent, MODEL, &query_vectors[0], 10).await.context("first build")?;
    let build_elapsed = build.elapsed();

    let stored: Vec<(Uuid, Vec<f32>)> = store
        .memory_vector_changes(agent, MODEL, -1)
        .await?
        .into_iter()
        .filter_map(|change| {
            cortex_memory::embed::from_bytes(change.vector.as_deref()?).map(|vector| (change.id, vector))
        })
        .collect();
    let exact: Vec<Vec<Uuid>> = query_vectors.iter().map(|query| exact_top10(&stored, query)).collect();
    drop(stored);

    let load_before = load_average();
    let mut rounds = Vec::with_capacity(args.rounds as usize);
    let mut found = 0usize;
    let mut rss_kib = 0;
    for round in 0..args.rounds {
        let index = Arc::new(EmbeddedIndex::new(store.clone()));
        let keywords = Arc::new(KeywordIndex::new(store.clone()));
        let indexes = Indexes { vectors: index.clone(), keywords: Some(keywords.clone()) };
        let memory = Memory::new(store.clone(), Some(embedder.clone()), indexes);
        let cold = Instant::now();
        memory.search(agent, &hybrid_query(u64::MAX)).await.context("first hybrid search")?;
        let cold_start = cold.elapsed();
        rss_kib = rss_kib.max(resident_kib());
        let mut vector_times = Vec::with_capacity(query_vectors.len());
        for (query, exact) in query_vectors.iter().zip(&exact) {
            let start = Instant::now();
            let hits = index.search(agent, MODEL, query, 10).await?;
            vector_times.push(start.elapsed());
            if round == 0 {
                found += hits.iter().filter(|(id, _)| exact.contains(id)).count();
            }
        }
        vector_times.sort();
        let mut keyword_times = Vec::with_capacity(query_vectors.len());
        for n in 0..u64::from(args.queries) {
            let words: Vec<String> = hybrid_query(n).text.split_whitespace().map(str::to_owned).collect();
            let start = Instant::now();
            keywords.search(agent, &words, 30).await?;
            keyword_times.push(start.elapsed());
        }
        keyword_times.sort();
        let mut hybrid_times: Vec<Duration> = Vec::with_capacity(query_vectors.len());
        for n in 0..u64::from(args.queries) {
            let query = hybrid_query(n);
            let start = Instant::now();
            memory.search(agent, &query).await?;
            hybrid_times.push(start.elapsed());
        }
        hybrid_times.sort();
        rounds.push([
            cold_start,
            percentile(&vector_times, 0.5),
            percentile(&vector_times, 0.99),
            percentile(&keyword_times, 0.5),
            percentile(&keyword_times, 0.99),
            percentile(&hybrid_times, 0.5),
            percentile(&hybrid_times, 0.99),
        ]);
    }
    let recall = found as f64 / (10 * query_vectors.len()).max(1) as f64;
    let load_after = load_average();
    store.close().await;

    let mut report = Report::new(
        "memory",
        store.engine_name(),
        format!(
            "{records} records of {dim} dimensions for one agent, {} searches each in {} rounds",
            args.queries, args.rounds
        ),
    );
    report.figure(
        "insert_records_per_second",
        "insert (Memory::remember, one tx each)",
        rate(remembered as usize, insert_elapsed),
        "records/s",
    );
    if records > remembered {
        report.figure(
            "bulk_load_records_per_second",
            "bulk load (multi-row inserts, 5 000 per tx)",
            rate((records - remembered) as usize, bulk_elapsed),
            "records/s",
        );
    }
    report.figure(
        "index_build_ms",
        "index build from the rows (first search, nothing persisted)",
        millis(build_elapsed),
        "ms",
    );
    let measured = [
        ("index_cold_start_ms", "index cold start (first hybrid search after restart)"),
        ("vector_search_p50_ms", "vector search top 10, p50"),
        ("vector_search_p99_ms", "vector search top 10, p99"),
        ("keyword_search_p50_ms", "keyword search top 30 (in-process index), p50"),
        ("keyword_search_p99_ms", "keyword search top 30 (in-process index), p99"),
        ("hybrid_search_p50_ms", "hybrid search (Memory::search), p50"),
        ("hybrid_search_p99_ms", "hybrid search (Memory::search), p99"),
    ];
    for (column, (name, label)) in measured.into_iter().enumerate() {
        let mut values: Vec<Duration> = rounds.iter().map(|round| round[column]).collect();
        values.sort();
        let (min, median, max) = (values[0], values[values.len() / 2], values[values.len() - 1]);
        report.figure(format!("{name}_min"), format!("{label}, min of rounds"), millis(min), "ms");
        report.figure(format!("{name}_median"), format!("{label}, median of rounds"), millis(median), "ms");
        report.figure(format!("{name}_max"), format!("{label}, max of rounds"), millis(max), "ms");
    }
    report.figure("recall_at_10", "recall@10 against an exact scan", recall, "");
    report.figure("rss_mib", "process RSS with the index loaded", rss_kib as f64 / 1024.0, "MiB");
    report.figure("load_average_before", "machine load average (1 min) before the searches", load_before, "");
    report.figure("load_average_after", "machine load average (1 min) after the searches", load_after, "");
    super::local_embed::figures(&mut report, record_text).await?;
    Ok(report)
}

/// The machine's 1-minute load average (0 when unreadable): figures from a busy machine say so.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().and_then(|load| load.parse().ok()))
        .unwrap_or(0.0)
}
