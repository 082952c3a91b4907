//! Small builders shared by the storage tests.

use cortex_store::Store;
use cortex_store::agents::AgentDefinition;
use cortex_store::jobs::{Job, NewJob};
use uuid::Uuid;

pub fn definition(name: &str) -> AgentDefinition {
    cortex_testkit::agent_definition(name)
}

pub async fn agent_with_limit(store: &Store, name: &str, max_concurrent_jobs: u32) -> Uuid {
    let mut def = definition(name);
    def.resource_limits.max_concurrent_jobs = max_concurrent_jobs;
    cortex_testkit::jobs::insert_agent(store, &def).await
}

pub fn task(agent_id: Uuid) -> NewJob {
    cortex_testkit::jobs::prompt_job(agent_id, "do it")
}

pub async fn enqueue(store: &Store, new: NewJob) -> Job {
    let mut tx = store.begin().await.unwrap();
    let (job, created) = tx.insert_job(&new).await.unwrap();
    assert!(created);
    tx.commit().await.unwrap();
    job
}
