//! [`Memory`] over a real store and the fake embeddings server, on each vector backend ([`each_backend!`]:
//! embedded, and Qdrant through the in-process fake of its REST API).

use std::sync::Arc;

use cortex_core::memory::{MemorySource, MemoryType};
use cortex_memory::{
    ApiEmbedder, EmbeddingsConfig, EmbeddingsMode, Indexes, Memory, QdrantConfig, QdrantIndex, Remember, SearchQuery,
};
use cortex_store::Store;
use cortex_store::memory::MemoryFilter;
use cortex_testkit::fake_embeddings::FakeEmbeddings;
use cortex_testkit::fake_qdrant::FakeQdrant;
use cortex_testkit::{TestStore, both_engines};
use uuid::Uuid;

/// The API key the fake Qdrant demands.
pub(crate) const QDRANT_KEY: &str = "qdrant-test-key";

/// A vector backend under test.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Backend {
    Embedded,
    Qdrant,
}

/// The vector side of a test: nothing for the embedded backend, a fake Qdrant (shared by every
/// [`Memory`] built from it, like one server shared by processes) otherwise.
pub(crate) struct Vectors {
    pub qdrant: Option<FakeQdrant>,
}

impl Vectors {
    pub(crate) async fn start(backend: Backend) -> Self {
        let qdrant = match backend {
            Backend::Embedded => None,
            Backend::Qdrant => Some(FakeQdrant::start(Some(QDRANT_KEY)).await),
        };
        Self { qdrant }
    }

    pub(crate) fn index(&self, store: &Store, api_key: &str) -> Indexes {
        match &self.qdrant {
            None => Indexes::embedded(store),
            Some(qdrant) => {
                let config = QdrantConfig { url: qdrant.url().to_owned(), api_key: Some(api_key.to_owned()) };
                Indexes::external(Arc::new(QdrantIndex::new(store.clone(), reqwest::Client::new(), &config)))
            }
        }
    }

    pub(crate) fn memory(&self, store: &Store, embeddings: &FakeEmbeddings) -> Memory {
        Memory::new(store.clone(), Some(embedder(embeddings)), self.index(store, QDRANT_KEY))
    }
}

fn embedder(embeddings: &FakeEmbeddings) -> Arc<ApiEmbedder> {
    embedder_of(embeddings, "fake-64")
}

/// An embedder asking the fake server for `model` (it embeds every model the same way).
pub(crate) fn embedder_of(embeddings: &FakeEmbeddings, model: &str) -> Arc<ApiEmbedder> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = EmbeddingsConfig {
        mode: EmbeddingsMode::Api,
        base_url: embeddings.base_url().to_owned(),
        api_key: None,
        model: model.into(),
        local_dir: None,
        auto_local: false,
    };
    Arc::new(ApiEmbedder::new(reqwest::Client::new(), &config))
}

/// A [`Memory`] on the embedded backend.
pub(crate) fn memory(store: &Store, embeddings: &FakeEmbeddings) -> Memory {
    memory_with(store, embeddings, Indexes::embedded(store))
}

/// [`memory`] over other indexes.
pub(crate) fn memory_with(store: &Store, embeddings: &FakeEmbeddings, indexes: Indexes) -> Memory {
    Memory::new(store.clone(), Some(embedder(embeddings)), indexes)
}

fn query(text: &str, limit: usize) -> SearchQuery {
    SearchQuery { text: text.into(), limit, types: vec![], tags: vec![] }
}

async fn ids(memory: &Memory, agent: Uuid, text: &str) -> Vec<Uuid> {
    memory.search(agent, &query(text, 10)).await.unwrap().items.iter().map(|item| item.record.id).collect()
}

each_backend!(superseded_records_leave_search_but_keep_their_history, |t: TestStore, backend| async move {
    let embeddings = FakeEmbeddings::start().await;
    let memory = Vectors::start(backend).await.memory(&t.store, &embeddings);
    let agent = t.agent("Historian").await;
    let (old, _) =
        memory.remember(Remember::new(agent, "Ana lives in Lisbon near the river.", MemorySource::Api)).await.unwrap();
    let newer = Remember {
        supersedes_id: Some(old.id),
        reason: Some("moved".into()),
        ..Remember::new(agent, "Ana lives in Porto since March.", MemorySource::Extraction)
    };
    let (new, created) = memory.remember(newer).await.unwrap();
    assert!(created);
    assert_eq!(new.supersedes_id, Some(old.id));
    assert_eq!(ids(&memory, agent, "where does Ana live").await, vec![new.id], "only the live record is found");
    let history = t.store.get_memory(agent, old.id).await.unwrap();
    assert_eq!(history.superseded_by, Some(new.id));
    let filter = MemoryFilter { include_superseded: true, ..MemoryFilter::default() };
    assert_eq!(t.store.list_memories(agent, &filter, None, 10).await.unwrap().items.len(), 2);
    assert_eq!(t.store.list_memories(agent, &MemoryFilter::default(), None, 10).await.unwrap().items.len(), 1);

    // Superseding something that is not this agent's live record fails and writes nothing.
    let stranger = t.agent("Stranger").await;
    let bad = Remember {
        supersedes_id: Some(new.id),
        ..Remember::new(stranger, "Ana lives on the moon now.", MemorySource::Api)
    };
    assert!(memory.remember(bad).await.is_err());
    assert!(t.store.list_memories(stranger, &MemoryFilter::default(), None, 10).await.unwrap().items.is_empty());
});

each_backend!(recalls_raise_utility_and_recency_follows_the_type, |t: TestStore, backend| async move {
    let embeddings = FakeEmbeddings::start().await;
    let memory = Vectors::start(backend).await.memory(&t.store, &embeddings);
    let agent = t.agent("Recaller").await;
    let event = Remember {
        memory_type: MemoryType::Event,
        ..Remember::new(agent, "The team offsite happened in Sintra.", MemorySource::Api)
    };
    let rule = Remember {
        memory_type: MemoryType::SystemRule,
        ..Remember::new(agent, "Never book offsite venues without a budget.", MemorySource::Api)
    };
    let (event, _) = memory.remember(event).await.unwrap();
    let (rule, _) = memory.remember(rule).await.unwrap();
    t.clock.advance(chrono::TimeDelta::days(14));
    let results = memory.search(agent, &query("offsite", 10)).await.unwrap();
    let part = |id: Uuid| results.items.iter().find(|item| item.record.id == id).unwrap().parts;
    assert!((part(event.id).recency - 0.5).abs() < 1e-6, "one event half-life: {:?}", part(event.id));
    assert_eq!(part(rule.id).recency, 1.0, "rules never fade");
    assert_eq!(part(event.id).utility, 0.0);

    for _ in 0..9 {
        memory.recalled(agent, vec![event.id]).await.unwrap();
    }
    let record = t.store.get_memory(agent, event.id).await.unwrap();
    assert_eq!(record.access_count, 9);
    assert!(record.last_accessed_at.is_some());
    let results = memory.search(agent, &query("offsite", 10)).await.unwrap();
    let utility = results.items.iter().find(|item| item.record.id == event.id).unwrap().parts.utility;
    assert!((utility - 1.0 / 3.0).abs() < 1e-9, "log10(10)/3: {utility}");
    // Recalls of another agent's ids change nothing.
    let other = t.agent("Other").await;
    memory.recalled(other, vec![rule.id]).await.unwrap();
    assert_eq!(t.store.get_memory(agent, rule.id).await.unwrap().access_count, 0);
});

each_backend!(no_query_returns_another_agents_records, |t: TestStore, backend| async move {
    let embeddings = FakeEmbeddings::start().await;
    let memory = Vectors::start(backend).await.memory(&t.store, &embeddings);
    let agents = [t.agent("One").await, t.agent("Two").await, t.agent("Three").await];
    let words = ["apple", "river", "garden", "engine", "violin", "harbour"];
    for (n, agent) in agents.iter().enumerate() {
        for word in &words {
            let content = format!("Agent number {n} remembers the {word} clearly.");
            memory.remember(Remember::new(*agent, content, MemorySource::Tool)).await.unwrap();
        }
    }
    for (n, agent) in agents.iter().enumerate() {
        for text in ["apple river garden", "agent number remembers", "violin", "clearly", "zzz"] {
            let results = memory.search(*agent, &query(text, 50)).await.unwrap();
            assert!(results.items.iter().all(|item| item.record.agent_id == *agent), "{text}: leaked to agent {n}");
            assert!(results.items.iter().all(|item| item.record.content.contains(&format!("number {n} "))));
        }
    }
});

each_backend!(the_index_sees_writes_of_another_process, |t: TestStore, backend| async move {
    let embeddings = FakeEmbeddings::start().await;
    let vectors = Vectors::start(backend).await;
    let mut changes = crate::change_seq::listening(&t.store).await;
    let here = vectors.memory(&t.store, &embeddings);
    let agent = t.agent("Shared").await;
    here.remember(Remember::new(agent, "The printer on floor two is broken.", MemorySource::Api)).await.unwrap();
    assert_eq!(ids(&here, agent, "printer").await.len(), 1, "the index is loaded now");
    // Another process (on SQLite: another writer in this process that bypassed `here`).
    let other_store = if t.store.is_postgres() { t.reopen().await } else { t.store.clone() };
    let there = vectors.memory(&other_store, &embeddings);
    let (added, _) = there
        .remember(Remember::new(agent, "The printer on floor three works fine.", MemorySource::Api))
        .await
        .unwrap();
    // The embedded index learns of other processes' writes from their notification.
    let seq = other_store.memory_change_seq(agent).await.unwrap();
    crate::change_seq::notified(&mut changes, agent, seq).await;
    let found = here.search(agent, &query("printer floor", 10)).await.unwrap();
    assert_eq!(found.items.len(), 2);
    assert_eq!(found.mode, cortex_memory::SearchMode::Hybrid);
    let cosine_of_added = found.items.iter().find(|item| item.record.id == added.id).unwrap().parts.similarity;
    assert!(cosine_of_added > 0.3, "the new record came through the vector index too: {cosine_of_added}");
});

each_backend!(deletes_edits_and_restarts_reach_the_vector_index, |t: TestStore, backend| async move {
    let embeddings = FakeEmbeddings::start().await;
    let vectors = Vectors::start(backend).await;
    let memory = vectors.memory(&t.store, &embeddings);
    let agent = t.agent("Editor").await;
    let mut kept = Vec::new();
    // Enough records that the embedded index persists itself after its first build.
    for n in 0..70 {
        let content = format!("Inventory note {n}: crate of bolts number {n}.");
        kept.push(memory.remember(Remember::new(agent, content, MemorySource::Api)).await.unwrap().0);
    }
    let (violin, _) =
        memory.remember(Remember::new(agent, "The violin lesson is on Friday.", MemorySource::Api)).await.unwrap();
    assert_eq!(vector_ids(&memory, agent, "violin lesson friday").await.first(), Some(&violin.id));
    if backend_is_embedded(&vectors) {
        assert!(t.store.memory_index_snapshot(agent).await.unwrap().is_some(), "persisted after the first build");
    }
    let patch =
        cortex_memory::MemoryPatch { content: Some("The cello lesson moved to Monday.".into()), ..Default::default() };
    memory.update(agent, violin.id, patch).await.unwrap();
    memory.delete(agent, kept[3].id).await.unwrap();
    assert!(!vector_ids(&memory, agent, "violin friday").await.contains(&violin.id), "the old vector is gone");
    assert_eq!(vector_ids(&memory, agent, "cello monday").await.first(), Some(&violin.id), "the new vector is found");

    // A restarted process (a fresh index) agrees with the rows: the edit and the delete stay applied.
    let restarted = vectors.memory(&t.store, &embeddings);
    assert_eq!(vector_ids(&restarted, agent, "cello monday").await.first(), Some(&violin.id));
    let bolts = restarted.search(agent, &query("crate of bolts number 3", 50)).await.unwrap();
    assert!(bolts.items.iter().all(|item| item.record.id != kept[3].id), "deleted stays deleted");
    if let Some(qdrant) = &vectors.qdrant {
        let collection = cortex_memory::qdrant::collection_name(agent);
        assert_eq!(collection, format!("cortex_mem_{}", agent.simple()));
        assert_eq!(qdrant.quantization(&collection)["scalar"]["type"], "int8");
        let points = qdrant.point_ids(&collection);
        assert_eq!(points.len(), 70, "70 live records: 71 written, one deleted");
        assert!(!points.contains(&kept[3].id.to_string()));
    }
});

/// Records of a hybrid search for `text` that the vectors found (cosine part above noise), best first.
async fn vector_ids(memory: &Memory, agent: Uuid, text: &str) -> Vec<Uuid> {
    let results = memory.search(agent, &query(text, 5)).await.unwrap();
    assert_eq!(results.mode, cortex_memory::SearchMode::Hybrid, "{text}");
    results.items.iter().filter(|item| item.parts.similarity > 0.2).map(|item| item.record.id).collect()
}

fn backend_is_embedded(vectors: &Vectors) -> bool {
    vectors.qdrant.is_none()
}

both_engines!(a_refused_qdrant_degrades_search_to_keywords, |t: TestStore| async move {
    let embeddings = FakeEmbeddings::start().await;
    let vectors = Vectors::start(Backend::Qdrant).await;
    let agent = t.agent("Locked out").await;
    let wrong = Memory::new(t.store.clone(), Some(embedder(&embeddings)), vectors.index(&t.store, "wrong-key"));
    wrong.remember(Remember::new(agent, "The harbour opens at six.", MemorySource::Api)).await.unwrap();
    let results = wrong.search(agent, &query("harbour", 5)).await.unwrap();
    assert_eq!((results.mode, results.degraded), (cortex_memory::SearchMode::Keyword, true));
    assert_eq!(results.items.len(), 1, "keywords still answer");
    assert!(vectors.qdrant.as_ref().unwrap().collections().is_empty(), "nothing was written without the key");
    let right = vectors.memory(&t.store, &embeddings);
    let results = right.search(agent, &query("harbour", 5)).await.unwrap();
    assert_eq!((results.mode, results.degraded), (cortex_memory::SearchMode::Hybrid, false));
});

each_backend!(a_new_embedding_model_re_embeds_every_record_through_the_backfill, |t: TestStore, backend| async move {
    let embeddings = FakeEmbeddings::start().await;
    let vectors = Vectors::start(backend).await;
    let before = vectors.memory(&t.store, &embeddings);
    let agent = t.agent("Migrating").await;
    let mut stored = Vec::new();
    for text in ["The violin lesson is on Friday.", "The printer on floor two is broken.", "Rui likes green tea."] {
        stored.push(before.remember(Remember::new(agent, text, MemorySource::Api)).await.unwrap().0);
    }
    // The operator switches the embedding model: every stored vector is of the old one.
    let indexes = vectors.index(&t.store, QDRANT_KEY);
    let after = Memory::new(t.store.clone(), Some(embedder_of(&embeddings, "fake-64-v2")), indexes.clone());
    let violin =
        cortex_memory::embed::normalised(cortex_testkit::fake_embeddings::embed("violin lesson friday")).unwrap();
    let nearest = || indexes.vectors.search(agent, "fake-64-v2", &violin, 3);
    assert!(nearest().await.unwrap().is_empty(), "no vector of the new model yet");

    assert_eq!(after.backfill(64).await.unwrap(), 3, "every record re-embedded");
    assert_eq!(after.backfill(64).await.unwrap(), 0, "nothing left to do");
    for record in &stored {
        let now = t.store.get_memory(agent, record.id).await.unwrap();
        assert_eq!(now.embedding_model.as_deref(), Some("fake-64-v2"));
    }
    let hits = nearest().await.unwrap();
    assert_eq!(hits.first().map(|(id, _)| *id), Some(stored[0].id), "found through the new model's vectors: {hits:?}");
});
