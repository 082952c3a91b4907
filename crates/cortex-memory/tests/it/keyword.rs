//! The keyword candidates of a search on both engines: the store's full-text index
//! (`Store::memory_keyword_hits`: records with more of the query's words rank first, only the agent's live
//! records are returned, and the rank is positive), and the embedded backend's in-process index, which
//! follows every write of this and other processes.

use cortex_core::memory::MemorySource;
use cortex_memory::{Indexes, Memory, MemoryPatch, Remember, SearchMode, SearchQuery};
use cortex_testkit::{TestStore, both_engines};
use uuid::Uuid;

use crate::change_seq::{listening, notified};

both_engines!(more_query_words_rank_first_among_the_agents_live_records, |t: TestStore| async move {
    let memory = Memory::new(t.store.clone(), None, Indexes::embedded(&t.store));
    let (agent, other) = (t.agent("Keywords").await, t.agent("Neighbour").await);
    let mut ids = Vec::new();
    for text in [
        "The kettle in the office is new.",
        "The kettle is blue and shiny.",
        "The office opens at nine.",
        "The garden needs water soon.",
        "A kettle and an office, soon deleted.",
    ] {
        ids.push(memory.remember(Remember::new(agent, text, MemorySource::Api)).await.unwrap().0.id);
    }
    memory.remember(Remember::new(other, "The kettle of the office next door.", MemorySource::Api)).await.unwrap();
    memory.delete(agent, ids[4]).await.unwrap();

    let words = ["kettle".to_owned(), "office".to_owned()];
    let hits = t.store.memory_keyword_hits(agent, &words, 10).await.unwrap();
    let found: Vec<Uuid> = hits.iter().map(|(id, _)| *id).collect();
    assert_eq!(found.first(), Some(&ids[0]), "both words first: {hits:?}");
    let mut rest = found[1..].to_vec();
    rest.sort();
    let mut expected = vec![ids[1], ids[2]];
    expected.sort();
    assert_eq!(rest, expected, "one word each; not the garden, the deleted record or the neighbour's");
    assert!(hits.iter().all(|(_, rank)| *rank > 0.0));
    assert!(hits[0].1 > hits[1].1, "two words rank above one: {hits:?}");
    assert_eq!(t.store.memory_keyword_hits(agent, &words, 1).await.unwrap().len(), 1, "the limit holds");
    assert!(t.store.memory_keyword_hits(agent, &["teapot".to_owned()], 10).await.unwrap().is_empty());
});

/// The words a search found, as the records' contents.
async fn found(memory: &Memory, agent: Uuid, text: &str) -> Vec<String> {
    let query = SearchQuery { text: text.into(), limit: 10, types: vec![], tags: vec![] };
    let results = memory.search(agent, &query).await.unwrap();
    assert_eq!(results.mode, SearchMode::Keyword, "no embedder: keywords only");
    results.items.into_iter().map(|item| item.record.content).collect()
}

both_engines!(
    the_in_process_keyword_index_follows_every_write_here_and_in_other_processes,
    |t: TestStore| async move {
        let mut changes = listening(&t.store).await;
        let here = Memory::new(t.store.clone(), None, Indexes::embedded(&t.store));
        let (agent, other) = (t.agent("Indexed").await, t.agent("Next door").await);
        let remember = |agent: Uuid, text: &str| Remember::new(agent, text, MemorySource::Api);
        let (kettle, _) = here.remember(remember(agent, "The kettles in the office are new.")).await.unwrap();
        let (garden, _) = here.remember(remember(agent, "The garden needs water on Mondays.")).await.unwrap();
        here.remember(remember(other, "The kettle of the office next door.")).await.unwrap();
        assert_eq!(
            found(&here, agent, "kettle").await,
            ["The kettles in the office are new."],
            "stemmed; own records only"
        );
        assert_eq!(found(&here, other, "kettle").await, ["The kettle of the office next door."]);

        // An edit replaces the words, a supersession and a delete remove the record, each seen by the next search.
        let patch =
            MemoryPatch { content: Some("The teapots in the office are new.".into()), ..MemoryPatch::default() };
        here.update(agent, kettle.id, patch).await.unwrap();
        assert!(found(&here, agent, "kettle").await.is_empty(), "the old words are gone");
        assert_eq!(found(&here, agent, "teapot").await, ["The teapots in the office are new."]);
        let mut newer = remember(agent, "The garden needs water on Fridays.");
        newer.supersedes_id = Some(garden.id);
        here.remember(newer).await.unwrap();
        assert_eq!(found(&here, agent, "garden").await, ["The garden needs water on Fridays."]);
        here.delete(agent, kettle.id).await.unwrap();
        assert!(found(&here, agent, "teapots office").await.is_empty());

        // Another process on PostgreSQL (its own connections and listener); on SQLite another handle of the
        // same data dir that bypasses `here`'s index.
        let store = if t.store.is_postgres() { t.reopen().await } else { t.store.clone() };
        let there = Memory::new(store.clone(), None, Indexes::embedded(&store));
        there.remember(remember(agent, "The office printer jams on Mondays.")).await.unwrap();
        notified(&mut changes, agent, store.memory_change_seq(agent).await.unwrap()).await;
        assert_eq!(found(&here, agent, "printer").await, ["The office printer jams on Mondays."]);
        assert_eq!(found(&there, agent, "garden").await, ["The garden needs water on Fridays."], "built from the rows");
    }
);
