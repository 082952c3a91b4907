//! Small builders shared by the storage tests.

use cortex_core::agent::{AccessMode, AgentStatus, ModelConfig, ResourceLimits};
use cortex_core::job::JobKind;
use cortex_store::Store;
use cortex_store::agents::AgentDefinition;
use cortex_store::jobs::{Job, NewJob};
use serde_json::json;
use uuid::Uuid;

pub fn definition(name: &str) -> AgentDefinition {
    AgentDefinition {
        name: name.to_owned(),
        slug: cortex_core::agent::slugify(name),
        role: String::new(),
        description: String::new(),
        system_prompt: "You are helpful.".into(),
        model_config: ModelConfig {
            provider: "openai".into(),
            model: "gpt-4o-mini".into(),
            temperature: None,
            max_tokens: None,
            fallbacks: vec![],
            extraction_model: None,
            requires_approval: false,
            credential: None,
        },
        resource_limits: ResourceLimits::default(),
        access_mode: AccessMode::BoundChats,
        skills: vec![],
        subagents: vec![],
        status: AgentStatus::Active,
    }
}

pub async fn agent_with_limit(store: &Store, name: &str, max_concurrent_jobs: u32) -> Uuid {
    let mut def = definition(name);
    def.resource_limits.max_concurrent_jobs = max_concurrent_jobs;
    let mut tx = store.begin().await.unwrap();
    let id = tx.insert_agent(&def).await.unwrap();
    tx.commit().await.unwrap();
    id
}

pub fn task(agent_id: Uuid) -> NewJob {
    NewJob {
        agent_id,
        session_id: None,
        kind: JobKind::Task,
        priority: 0,
        payload: json!({"prompt": "do it"}),
        max_attempts: 3,
        timeout_seconds: 300,
        run_at: None,
        parent_job_id: None,
        delegation_depth: 0,
        idempotency_key: None,
        created_by: None,
    }
}

pub async fn enqueue(store: &Store, new: NewJob) -> Job {
    let mut tx = store.begin().await.unwrap();
    let (job, created) = tx.insert_job(&new).await.unwrap();
    assert!(created);
    tx.commit().await.unwrap();
    job
}
