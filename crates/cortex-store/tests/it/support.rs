//! Small builders shared by the storage tests.

use cortex_store::Store;
use cortex_store::agents::AgentDefinition;
use cortex_store::budgets::SPEND_SHARDS;
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

/// A job id whose model calls add to spend row `shard` (of [`SPEND_SHARDS`]); budget and credential spend
/// take any id, the job need not exist.
pub fn job_on_shard(shard: u8) -> Uuid {
    assert!(shard < SPEND_SHARDS, "there are {SPEND_SHARDS} spend rows");
    Uuid::from_u128(((Uuid::now_v7().as_u128() >> 8) << 8) + u128::from(shard))
}
