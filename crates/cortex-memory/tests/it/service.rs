//! [`Memory`] over a real store and the fake embeddings server.

use std::sync::Arc;

use cortex_core::memory::{MemorySource, MemoryType};
use cortex_memory::{
    ApiEmbedder, EmbeddedIndex, EmbeddingsConfig, EmbeddingsMode, Memory, Remember, SearchQuery, VectorIndex,
};
use cortex_store::Store;
use cortex_store::memory::MemoryFilter;
use cortex_testkit::fake_embeddings::FakeEmbeddings;
use cortex_testkit::{TestStore, both_engines};
use uuid::Uuid;

pub(crate) fn memory(store: &Store, embeddings: &FakeEmbeddings) -> Memory {
    memory_with(store, embeddings, Arc::new(EmbeddedIndex::new(store.clone())))
}

/// [`memory`] over another vector index.
pub(crate) fn memory_with(store: &Store, embeddings: &FakeEmbeddings, index: Arc<dyn VectorIndex>) -> Memory {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = EmbeddingsConfig {
        mode: EmbeddingsMode::Api,
        base_url: embeddings.base_url().to_owned(),
        api_key: None,
        model: "fake-64".into(),
        local_dir: None,
        auto_local: false,
    };
    let embedder = Arc::new(ApiEmbedder::new(reqwest::Client::new(), &config));
    Memory::new(store.clone(), Some(embedder), index)
}

fn query(text: &str, limit: usize) -> SearchQuery {
    SearchQuery { text: text.into(), limit, types: vec![], tags: vec![] }
}

async fn ids(memory: &Memory, agent: Uuid, text: &str) -> Vec<Uuid> {
    memory.search(agent, &query(text, 10)).await.unwrap().items.iter().map(|item| item.record.id).collect()
}

both_engines!(superseded_records_leave_search_but_keep_their_history, |t: TestStore| async move {
    let embeddings = FakeEmbeddings::start().await;
    let memory = memory(&t.store, &embeddings);
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

both_engines!(recalls_raise_utility_and_recency_follows_the_type, |t: TestStore| async move {
    let embeddings = FakeEmbeddings::start().await;
    let memory = memory(&t.store, &embeddings);
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

both_engines!(no_query_returns_another_agents_records, |t: TestStore| async move {
    let embeddings = FakeEmbeddings::start().await;
    let memory = memory(&t.store, &embeddings);
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

both_engines!(the_index_sees_writes_of_another_process, |t: TestStore| async move {
    let embeddings = FakeEmbeddings::start().await;
    let here = memory(&t.store, &embeddings);
    let agent = t.agent("Shared").await;
    here.remember(Remember::new(agent, "The printer on floor two is broken.", MemorySource::Api)).await.unwrap();
    assert_eq!(ids(&here, agent, "printer").await.len(), 1, "the index is loaded now");
    // Another process (on SQLite: another writer in this process that bypassed `here`).
    let other_store = if t.store.is_postgres() { t.reopen().await } else { t.store.clone() };
    let there = memory(&other_store, &embeddings);
    let (added, _) = there
        .remember(Remember::new(agent, "The printer on floor three works fine.", MemorySource::Api))
        .await
        .unwrap();
    let found = here.search(agent, &query("printer floor", 10)).await.unwrap();
    assert_eq!(found.items.len(), 2);
    assert_eq!(found.mode, cortex_memory::SearchMode::Hybrid);
    let cosine_of_added = found.items.iter().find(|item| item.record.id == added.id).unwrap().parts.similarity;
    assert!(cosine_of_added > 0.3, "the new record came through the vector index too: {cosine_of_added}");
});
