//! Filing extracted facts (SPEC §9.3) on both engines: low confidence dropped, near-identical facts are
//! duplicates, similar ones supersede with history kept, the model's `supersedes` list is honoured, and
//! every record says why it exists.

use cortex_core::memory::MemoryType;
use cortex_memory::extract::{ExtractionSummary, Fact, Provenance};
use cortex_testkit::fake_embeddings::FakeEmbeddings;
use cortex_testkit::{TestStore, both_engines};
use uuid::Uuid;

use crate::service::memory;

fn fact(content: &str, confidence: f64) -> Fact {
    Fact {
        content: content.into(),
        memory_type: MemoryType::Fact,
        confidence,
        importance: 3,
        tags: vec![],
        people: vec!["Ana".into()],
        projects: vec![],
        source_seq: Some(3),
        supersedes: vec![],
    }
}

both_engines!(extracted_facts_are_filed_under_the_spec_rules, |t: TestStore| async move {
    let embeddings = FakeEmbeddings::start().await;
    let memory = memory(&t.store, &embeddings);
    let agent = t.agent("Extractor").await;
    let (session, job) = (Uuid::now_v7(), Uuid::now_v7());
    let from = Provenance { agent_id: agent, session_id: Some(session), job_id: Some(job) };

    let first = vec![fact("Ana works at the Lisbon office on Mondays.", 0.9), fact("Ana might like jazz, maybe.", 0.4)];
    let summary = memory.apply_facts(from, first).await.unwrap();
    assert_eq!(summary, ExtractionSummary { extracted: 1, dropped_low_confidence: 1, ..Default::default() });
    let stored = t.store.list_memories(agent, &Default::default(), None, 10).await.unwrap().items;
    let office = stored[0].clone();
    assert_eq!((office.source.as_str(), office.session_id, office.job_id), ("extraction", Some(session), Some(job)));
    assert_eq!((office.message_seq, office.people.clone()), (Some(3), vec!["Ana".to_owned()]));
    assert_eq!(office.reason.as_deref(), Some("extraction: new fact"));

    // The same words (cosine 1 with the fake embedder) are a duplicate; most of them supersede.
    let second = vec![
        fact("Ana works at the Lisbon office on Mondays!", 0.9),
        fact("Ana works at the Lisbon office on Mondays and Fridays.", 0.9),
    ];
    let summary = memory.apply_facts(from, second).await.unwrap();
    assert_eq!(summary, ExtractionSummary { duplicates: 1, superseded: 1, ..Default::default() }, "{summary:?}");
    let old = t.store.get_memory(agent, office.id).await.unwrap();
    let newer = old.superseded_by.expect("kept as history, replaced");
    let newer = t.store.get_memory(agent, newer).await.unwrap();
    assert!(newer.reason.as_deref().unwrap().contains("similar to an older memory"), "{newer:?}");

    // A listed `supersedes` wins over similarity; an unknown id leaves a plain new fact.
    let listed = Fact { supersedes: vec![newer.id], ..fact("The Lisbon office closed for good in December.", 0.8) };
    let unknown = Fact { supersedes: vec![Uuid::now_v7()], ..fact("Ana bought a red bicycle for commuting.", 0.8) };
    let summary = memory.apply_facts(from, vec![listed, unknown]).await.unwrap();
    assert_eq!(summary, ExtractionSummary { extracted: 1, superseded: 1, ..Default::default() }, "{summary:?}");
    assert!(t.store.get_memory(agent, newer.id).await.unwrap().superseded_by.is_some());
    let live = t.store.list_memories(agent, &Default::default(), None, 10).await.unwrap().items;
    assert_eq!(live.len(), 2, "{live:?}");
});
