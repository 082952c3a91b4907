//! Agent rows: unique names and slugs, lookup by id or slug, pagination.

use cortex_store::StoreError;
use cortex_testkit::{TestStore, both_engines};

use crate::support::definition;

both_engines!(agents_are_unique_and_found_by_id_or_slug, |t: TestStore| async move {
    let mut tx = t.store.begin().await.unwrap();
    let id = tx.insert_agent(&definition("Research Bot")).await.unwrap();
    tx.commit().await.unwrap();

    assert_eq!(t.store.get_agent("research-bot").await.unwrap().id, id);
    assert_eq!(t.store.get_agent(&id.to_string()).await.unwrap().name, "Research Bot");
    assert!(matches!(t.store.get_agent("nope").await, Err(StoreError::NotFound { .. })));

    let mut tx = t.store.begin().await.unwrap();
    let err = tx.insert_agent(&definition("Research Bot")).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict { constraint } if constraint.contains("name") || constraint.contains("slug")),
        "{err:?}"
    );
});

both_engines!(agent_pages_are_newest_first_without_gaps, |t: TestStore| async move {
    for n in 0..7 {
        let mut tx = t.store.begin().await.unwrap();
        tx.insert_agent(&definition(&format!("agent {n}"))).await.unwrap();
        tx.commit().await.unwrap();
    }
    let first = t.store.list_agents(None, None, 3).await.unwrap();
    assert_eq!(first.items.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(), ["agent 6", "agent 5", "agent 4"]);
    let second = t.store.list_agents(None, first.next_cursor, 3).await.unwrap();
    let third = t.store.list_agents(None, second.next_cursor, 3).await.unwrap();
    assert_eq!(third.items.len(), 1);
    assert!(third.next_cursor.is_none());
});
