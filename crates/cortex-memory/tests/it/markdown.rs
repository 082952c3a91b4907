//! Markdown sync (SPEC §9.7) on both engines: files become records, a second sync changes nothing, edits
//! update (and re-embed), removed sections and files delete, human edits win over the API and over
//! extraction, another agent's files never touch this agent, and the watcher picks up live edits.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cortex_core::memory::MemoryType;
use cortex_memory::extract::{Fact, Provenance};
use cortex_memory::markdown::{SyncReport, memory_dir};
use cortex_memory::{MemoryError, SearchQuery};
use cortex_store::memory::MemoryFilter;
use cortex_testkit::fake_embeddings::FakeEmbeddings;
use cortex_testkit::{TestStore, both_engines};
use uuid::Uuid;

use crate::service::memory;

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), text).unwrap();
}

const MEMORY_MD: &str = "# Household\n\nThe family lives in a flat on Rua Augusta in Lisbon.\n\n\
## preference: Mornings\nAna wants coffee before any conversation, strong and black.\n\n\
## Pets\nThe cat is called Miso and must not be fed after eight in the evening.\n";

fn report(created: usize, updated: usize, deleted: usize, unchanged: usize) -> SyncReport {
    SyncReport { created, updated, deleted, unchanged }
}

async fn markdown_records(t: &TestStore, agent: Uuid) -> Vec<cortex_store::memory::MemoryRecord> {
    let filter = MemoryFilter { source: Some("markdown".into()), ..Default::default() };
    t.store.list_memories(agent, &filter, None, 100).await.unwrap().items
}

both_engines!(files_are_the_source_of_truth, |t: TestStore| async move {
    let embeddings = FakeEmbeddings::start().await;
    let memory = memory(&t.store, &embeddings).with_data_dir(t.dir.path().to_path_buf());
    let agent = t.store.get_agent_by_id(t.agent("Housekeeper").await).await.unwrap();
    let other = t.store.get_agent_by_id(t.agent("Neighbour").await).await.unwrap();
    let dir = memory_dir(t.dir.path(), &agent.slug);
    write(&dir, "MEMORY.md", MEMORY_MD);
    write(&dir, "work.md", "## Job\nAna works night shifts at the hospital on weekends.\n");
    write(
        &memory_dir(t.dir.path(), &other.slug),
        "MEMORY.md",
        "## Secret\nThe neighbour hides the spare key under the mat.\n",
    );

    assert_eq!(memory.sync_markdown(agent.id, &agent.slug).await.unwrap(), report(4, 0, 0, 0));
    assert_eq!(memory.sync_markdown(agent.id, &agent.slug).await.unwrap(), report(0, 0, 0, 4), "idempotent");
    let records = markdown_records(&t, agent.id).await;
    assert_eq!(records.len(), 4);
    let mornings = records.iter().find(|record| record.content.contains("coffee")).unwrap();
    assert_eq!((mornings.memory_type.as_str(), mornings.importance, mornings.confidence), ("preference", 4, 1.0));
    assert_eq!(
        mornings.source_ref.as_deref(),
        Some(format!("agents/{}/memory/MEMORY.md:Household/preference: Mornings", agent.slug).as_str())
    );
    assert!(mornings.embedding_model.is_some(), "embedded on the way in");
    assert!(markdown_records(&t, other.id).await.is_empty(), "another agent's files are not this agent's");

    // Search finds them; the other agent's file is invisible.
    let found = memory
        .search(agent.id, &SearchQuery { text: "spare key cat Miso".into(), limit: 10, types: vec![], tags: vec![] })
        .await
        .unwrap();
    assert!(found.items.iter().all(|item| item.record.agent_id == agent.id));
    assert!(found.items.iter().any(|item| item.record.content.contains("Miso")));

    // Human wins: the API and extraction cannot change a markdown record.
    let pets = records.iter().find(|record| record.content.contains("Miso")).unwrap().clone();
    assert!(matches!(memory.delete(agent.id, pets.id).await, Err(MemoryError::ReadOnlySource(_))));
    let fact = Fact {
        content: "The cat Miso may now be fed at nine in the evening.".into(),
        memory_type: MemoryType::Fact,
        confidence: 0.9,
        importance: 3,
        tags: vec![],
        people: vec![],
        projects: vec![],
        source_seq: Some(1),
        supersedes: vec![pets.id],
    };
    let from = Provenance { agent_id: agent.id, session_id: None, job_id: None };
    let summary = memory.apply_facts(from, vec![fact]).await.unwrap();
    assert_eq!(summary.superseded, 0, "{summary:?}");
    assert_eq!(t.store.get_memory(agent.id, pets.id).await.unwrap().superseded_by, None, "the file's record stays");

    // Edits: one section changed, one removed, a file deleted.
    write(
        &dir,
        "MEMORY.md",
        &MEMORY_MD
            .replace("eight in the evening", "seven in the evening")
            .replace("## preference: Mornings\nAna wants coffee before any conversation, strong and black.\n\n", ""),
    );
    std::fs::remove_file(dir.join("work.md")).unwrap();
    assert_eq!(memory.sync_markdown(agent.id, &agent.slug).await.unwrap(), report(0, 1, 2, 1));
    let pets_now = t.store.get_memory(agent.id, pets.id).await.unwrap();
    assert!(pets_now.content.contains("seven in the evening"), "same id, new text: {pets_now:?}");
    assert_eq!(markdown_records(&t, agent.id).await.len(), 2);
    // A section that comes back gets its old id back.
    write(&dir, "MEMORY.md", MEMORY_MD);
    assert_eq!(memory.sync_markdown(agent.id, &agent.slug).await.unwrap(), report(1, 1, 0, 1));
    assert_eq!(t.store.get_memory(agent.id, mornings.id).await.unwrap().content, mornings.content);
});

both_engines!(the_watcher_picks_up_live_edits, |t: TestStore| async move {
    let embeddings = FakeEmbeddings::start().await;
    let memory = Arc::new(memory(&t.store, &embeddings).with_data_dir(t.dir.path().to_path_buf()));
    let agent = t.store.get_agent_by_id(t.agent("Watched").await).await.unwrap();
    let dir = memory_dir(t.dir.path(), &agent.slug);
    write(&dir, "MEMORY.md", "## Plants\nThe fern on the balcony needs water every second day.\n");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let watcher = tokio::spawn(memory.clone().run_markdown_sync(Uuid::now_v7(), shutdown.clone()));
    let until = |needle: &'static str| {
        let t = &t;
        async move {
            // Bounded wait for the background task (debounce 2 s); a timeout fails the test.
            for _ in 0..300 {
                if markdown_records(t, agent.id).await.iter().any(|record| record.content.contains(needle)) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("no markdown record containing {needle:?}");
        }
    };
    until("every second day").await;
    write(&dir, "MEMORY.md", "## Plants\nThe fern on the balcony needs water every third day now.\n");
    until("every third day").await;
    shutdown.cancel();
    watcher.await.unwrap();
});
