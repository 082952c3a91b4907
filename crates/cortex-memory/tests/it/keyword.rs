//! The keyword candidates of a search (`Store::memory_keyword_hits`) on both engines: records with more of
//! the query's words rank first, only the agent's live records are returned, and the rank is positive.

use std::sync::Arc;

use cortex_core::memory::MemorySource;
use cortex_memory::{EmbeddedIndex, Memory, Remember};
use cortex_testkit::{TestStore, both_engines};
use uuid::Uuid;

both_engines!(more_query_words_rank_first_among_the_agents_live_records, |t: TestStore| async move {
    let memory = Memory::new(t.store.clone(), None, Arc::new(EmbeddedIndex::new(t.store.clone())));
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
