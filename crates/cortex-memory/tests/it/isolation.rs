//! Per-agent isolation as a property (SPEC §9, issue 16 point 7), on both engines: generated agents,
//! records (written through the API path, the tool path and markdown files) and queries sharing one
//! vocabulary — so every query matches other agents' records too — and no search, read or sync of an
//! agent ever returns or touches another agent's record — on each vector backend.
//!
//! Cases are drawn with proptest's strategies from a deterministic runner (a fixed seed: failures
//! reproduce); each case runs against the engine's store with fresh agents.

use std::collections::{HashMap, HashSet};

use cortex_core::memory::MemorySource;
use cortex_memory::markdown::memory_dir;
use cortex_memory::{MemoryError, Remember, SearchQuery};
use cortex_store::memory::MemoryFilter;
use cortex_testkit::TestStore;
use cortex_testkit::fake_embeddings::FakeEmbeddings;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use uuid::Uuid;

use crate::service::Vectors;

const VOCABULARY: &[&str] =
    &["ana", "lisbon", "coffee", "server", "atlas", "garden", "piano", "budget", "sister", "river", "ticket", "museum"];
const CASES: usize = 8;

/// A record to write: which agent, its words, and whether it goes through a markdown file.
#[derive(Debug, Clone)]
struct Planned {
    agent: usize,
    words: Vec<usize>,
    source: u8,
}

#[derive(Debug, Clone)]
struct Case {
    agents: usize,
    records: Vec<Planned>,
    queries: Vec<Vec<usize>>,
}

fn words() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(0..VOCABULARY.len(), 3..7)
}

fn case() -> impl Strategy<Value = Case> {
    (2usize..5).prop_flat_map(|agents| {
        let record = (0..agents, words(), 0u8..3).prop_map(|(agent, words, source)| Planned { agent, words, source });
        (Just(agents), proptest::collection::vec(record, 1..16), proptest::collection::vec(words(), 1..5))
            .prop_map(|(agents, records, queries)| Case { agents, records, queries })
    })
}

fn text(words: &[usize], salt: usize) -> String {
    let words: Vec<&str> = words.iter().map(|word| VOCABULARY[*word]).collect();
    format!("Record {salt}: {}.", words.join(" "))
}

each_backend!(no_query_read_or_sync_crosses_agents, |t: TestStore, backend| async move {
    let embeddings = FakeEmbeddings::start().await;
    let memory = Vectors::start(backend).await.memory(&t.store, &embeddings).with_data_dir(t.dir.path().to_path_buf());
    let mut runner = TestRunner::deterministic();
    for case_number in 0..CASES {
        let case = case().new_tree(&mut runner).expect("a generated case").current();
        let mut agents = Vec::new();
        for index in 0..case.agents {
            let id = t.agent(&format!("Isolated {case_number} {index}")).await;
            agents.push(t.store.get_agent_by_id(id).await.unwrap());
        }
        let mut owned: HashMap<Uuid, HashSet<Uuid>> = agents.iter().map(|agent| (agent.id, HashSet::new())).collect();
        let mut files: HashMap<usize, String> = HashMap::new();
        for (salt, planned) in case.records.iter().enumerate() {
            let agent = &agents[planned.agent];
            let content = text(&planned.words, salt);
            match planned.source {
                0 | 1 => {
                    let source = if planned.source == 0 { MemorySource::Api } else { MemorySource::Tool };
                    let (record, _) = memory.remember(Remember::new(agent.id, content, source)).await.unwrap();
                    owned.get_mut(&agent.id).unwrap().insert(record.id);
                }
                _ => files.entry(planned.agent).or_default().push_str(&format!("## Section {salt}\n{content}\n\n")),
            }
        }
        for (index, agent) in agents.iter().enumerate() {
            if let Some(text) = files.get(&index) {
                let dir = memory_dir(t.dir.path(), &agent.slug);
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(dir.join("MEMORY.md"), text).unwrap();
            }
            let report = memory.sync_markdown(agent.id, &agent.slug).await.unwrap();
            assert_eq!(report.updated + report.deleted, 0, "a first sync only creates: {report:?}");
            let filter = MemoryFilter { source: Some("markdown".into()), ..Default::default() };
            for record in t.store.list_memories(agent.id, &filter, None, 100).await.unwrap().items {
                owned.get_mut(&agent.id).unwrap().insert(record.id);
            }
        }
        for agent in &agents {
            let mine = &owned[&agent.id];
            let listed = t.store.list_memories(agent.id, &MemoryFilter::default(), None, 200).await.unwrap().items;
            assert!(listed.iter().all(|record| mine.contains(&record.id)), "case {case:?}");
            for query in &case.queries {
                let query = SearchQuery { text: text(query, 0), limit: 50, types: vec![], tags: vec![] };
                let found = memory.search(agent.id, &query).await.unwrap();
                for item in &found.items {
                    assert!(mine.contains(&item.record.id) && item.record.agent_id == agent.id, "case {case:?}");
                }
            }
            for (other, theirs) in owned.iter().filter(|(other, _)| **other != agent.id) {
                for id in theirs {
                    assert!(
                        matches!(memory.get(agent.id, *id).await, Err(MemoryError::Store(_))),
                        "read across: {other}"
                    );
                    assert!(memory.delete(agent.id, *id).await.is_err(), "delete across: {other}");
                }
            }
            // A second sync of this agent changes nothing, here or elsewhere.
            let again = memory.sync_markdown(agent.id, &agent.slug).await.unwrap();
            assert_eq!((again.created, again.updated, again.deleted), (0, 0, 0), "case {case:?}");
        }
        for agent in &agents {
            let count = t.store.list_memories(agent.id, &MemoryFilter::default(), None, 200).await.unwrap().items.len();
            assert_eq!(count, owned[&agent.id].len(), "nothing was deleted or moved by other agents' syncs");
        }
    }
});
