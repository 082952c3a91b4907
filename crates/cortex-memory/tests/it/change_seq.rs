//! The embedded index and the memory change sequence (migration 0036) on both engines: a search reads
//! nothing to know it is current, a write of another store handle (PostgreSQL: another process) reaches
//! the next search once its notification arrived, catching up reads exactly the rows written since, and a
//! restart with nothing changed reads the persisted blob and the agent's sequence only.

use std::sync::Arc;
use std::time::Duration;

use cortex_core::memory::MemorySource;
use cortex_memory::{EmbeddedIndex, IndexReads, Indexes, Memory, Remember, SearchQuery};
use cortex_store::memory::IndexSnapshot;
use cortex_store::{Notification, Store};
use cortex_testkit::fake_embeddings::FakeEmbeddings;
use cortex_testkit::{TestStore, both_engines};
use tokio::sync::broadcast::Receiver;
use uuid::Uuid;

use crate::service::memory_with;

fn query(text: &str) -> SearchQuery {
    SearchQuery { text: text.into(), limit: 10, types: vec![], tags: vec![] }
}

/// A [`Memory`] over its own embedded index, and that index (to read its counters).
fn embedded(store: &Store, embeddings: &FakeEmbeddings) -> (Memory, Arc<EmbeddedIndex>) {
    let index = Arc::new(EmbeddedIndex::new(store.clone()));
    (memory_with(store, embeddings, Indexes::embedded_with(index.clone(), store)), index)
}

/// The first subscription of `store`, once it is live: on PostgreSQL that subscription starts the
/// process's `LISTEN`, which announces itself with a `Resync` (so later notifications are not missed, and
/// that `Resync` does not reach subscribers made after this).
pub(crate) async fn listening(store: &Store) -> Receiver<Notification> {
    let mut changes = store.subscribe();
    if store.is_postgres() {
        let wait = async { while !matches!(changes.recv().await, Ok(Notification::Resync)) {} };
        tokio::time::timeout(Duration::from_secs(20), wait).await.expect("the listener starts");
    }
    changes
}

/// Waits until `changes` delivers the agent's memory notification of sequence `seq` or later (the
/// timeout only turns a missing notification into a failure).
pub(crate) async fn notified(changes: &mut Receiver<Notification>, agent: Uuid, seq: i64) {
    let wait = async {
        loop {
            match changes.recv().await {
                Ok(Notification::Memory { agent_id, seq: got }) if agent_id == agent && got >= seq => return,
                Ok(_) => {}
                Err(err) => panic!("notifications ended: {err}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), wait).await.expect("the memory notification arrives");
}

both_engines!(a_write_of_another_handle_reaches_the_next_search_after_its_notification, |t: TestStore| async move {
    let embeddings = FakeEmbeddings::start().await;
    let mut changes = listening(&t.store).await;
    let (here, index) = embedded(&t.store, &embeddings);
    let agent = t.agent("Listener").await;
    here.remember(Remember::new(agent, "The kettle in the kitchen is new.", MemorySource::Api)).await.unwrap();
    assert_eq!(here.search(agent, &query("kettle")).await.unwrap().items.len(), 1);
    let loaded = index.reads();
    assert_eq!(loaded.change_rows, 1, "the first search built the arena from the one row");
    here.search(agent, &query("kitchen kettle")).await.unwrap();
    assert_eq!(index.reads(), loaded, "nothing changed: the search read nothing to know it");

    // Another process on PostgreSQL (its own connections and listener); on SQLite, one process per data
    // dir, another handle of it that bypasses `here`.
    let other = if t.store.is_postgres() { t.reopen().await } else { t.store.clone() };
    let (there, _) = embedded(&other, &embeddings);
    there.remember(Remember::new(agent, "The kettle in the office leaks.", MemorySource::Api)).await.unwrap();
    let seq = other.memory_change_seq(agent).await.unwrap();
    assert_eq!(seq, 2, "one sequence per write transaction");
    notified(&mut changes, agent, seq).await;

    let found = here.search(agent, &query("kettle office")).await.unwrap();
    assert_eq!(found.items.len(), 2);
    assert_eq!(found.mode, cortex_memory::SearchMode::Hybrid);
    let added = found.items.iter().find(|item| item.record.content.contains("office")).unwrap();
    assert!(added.parts.similarity > 0.3, "found through the vectors too: {:?}", added.parts);
    let caught_up = index.reads();
    assert_eq!(caught_up.change_rows - loaded.change_rows, 1, "exactly the row written since");
    assert_eq!(caught_up.sequence_checks - loaded.sequence_checks, 1);
    here.search(agent, &query("kettle")).await.unwrap();
    assert_eq!(index.reads(), caught_up, "current again: nothing read");
});

both_engines!(a_restart_with_no_changes_reads_the_blob_and_the_sequence_only, |t: TestStore| async move {
    let embeddings = FakeEmbeddings::start().await;
    let (memory, index) = embedded(&t.store, &embeddings);
    let agent = t.agent("Sleeper").await;
    let (first, _) =
        memory.remember(Remember::new(agent, "The boat leaves at nine.", MemorySource::Api)).await.unwrap();
    for text in ["The harbour master is Rui.", "Tickets cost twelve euros.", "The ferry skips Mondays."] {
        memory.remember(Remember::new(agent, text, MemorySource::Api)).await.unwrap();
    }
    memory.delete(agent, first.id).await.unwrap();
    memory.search(agent, &query("boat harbour")).await.unwrap();
    assert_eq!(index.reads().change_rows, 4, "the build read every row (the deleted one too)");
    let snapshot = t.store.memory_index_snapshot(agent).await.unwrap().expect("persisted after the first build");
    assert_eq!(snapshot.through_seq, 5, "four inserts and a delete");

    // A restart: on PostgreSQL a new store (a new process); on SQLite the index is the only state.
    let store = if t.store.is_postgres() { t.reopen().await } else { t.store.clone() };
    let _live = if store.is_postgres() { Some(listening(&store).await) } else { None };
    let (restarted, index) = embedded(&store, &embeddings);
    let found = restarted.search(agent, &query("ferry mondays")).await.unwrap();
    assert_eq!(found.items.first().map(|item| item.record.content.as_str()), Some("The ferry skips Mondays."));
    assert!(found.items.iter().all(|item| item.record.id != first.id), "deleted stays deleted");
    assert_eq!(
        index.reads(),
        IndexReads { snapshots: 1, sequence_checks: 1, change_rows: 0 },
        "the blob and the agent's sequence, no record row"
    );

    // A write after the restart is caught up exactly.
    restarted.remember(Remember::new(agent, "The ferry café sells pastries.", MemorySource::Api)).await.unwrap();
    restarted.search(agent, &query("ferry pastries")).await.unwrap();
    assert_eq!(index.reads(), IndexReads { snapshots: 1, sequence_checks: 2, change_rows: 1 });
});

both_engines!(a_blob_of_the_previous_format_is_rebuilt_from_the_rows, |t: TestStore| async move {
    let embeddings = FakeEmbeddings::start().await;
    let (memory, index) = embedded(&t.store, &embeddings);
    let agent = t.agent("Upgraded").await;
    for text in ["The lighthouse keeper is Ines.", "The lighthouse lamp turns twice a minute."] {
        memory.remember(Remember::new(agent, text, MemorySource::Api)).await.unwrap();
    }
    // What the previous release persisted (format `CXVIDX01`: int8 codes in one array), here an empty
    // index claiming to cover every write: read as current, it would hide both records from the vectors.
    let mut old = b"CXVIDX01".to_vec();
    old.extend_from_slice(&[0; 8]);
    let snapshot = IndexSnapshot {
        model: memory.embedding_model().unwrap().to_owned(),
        through_seq: t.store.memory_change_seq(agent).await.unwrap(),
        data: old,
    };
    let mut tx = t.store.begin().await.unwrap();
    tx.save_memory_index(agent, &snapshot).await.unwrap();
    tx.commit().await.unwrap();

    let found = memory.search(agent, &query("Who keeps the lighthouse?")).await.unwrap();
    assert_eq!(found.mode, cortex_memory::SearchMode::Hybrid);
    assert_eq!(found.items.len(), 2);
    assert_eq!(index.reads().snapshots, 1, "the old blob was read …");
    assert_eq!(index.reads().change_rows, 2, "… and the arena rebuilt from every row");
    let saved = t.store.memory_index_snapshot(agent).await.unwrap().unwrap();
    assert!(saved.data.starts_with(b"CXVIDX02"), "persisted again in the current format");
});
