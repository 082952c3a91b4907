//! Agents, jobs and webhook tools for tests of the engine, the runtime and the store, written the way the
//! API writes them, and waits for a job's state on store notifications (never on sleeps) under a guard of
//! minutes: CI runs debug builds on a shared 2-core machine, where a guard of seconds fails healthy runs.

use std::time::Duration;

use cortex_core::job::JobStatus;
use cortex_store::Store;
use cortex_store::agents::AgentDefinition;
use cortex_store::jobs::{Job, NewJob};
use cortex_store::tools::WebhookToolRecord;
use serde_json::{Value, json};
use uuid::Uuid;

/// Longest wait for a job to reach a state before the test fails saying where the job is.
pub const JOB_GUARD: Duration = Duration::from_secs(300);

/// A task job with `payload` and the API's defaults (priority 0, 3 attempts, 300 s); tests change what
/// they need with struct update syntax.
pub fn task_job(agent_id: Uuid, payload: Value) -> NewJob {
    NewJob::task(agent_id, payload)
}

/// [`task_job`] whose payload is `{"prompt": prompt}`.
pub fn prompt_job(agent_id: Uuid, prompt: &str) -> NewJob {
    task_job(agent_id, json!({"prompt": prompt}))
}

/// Inserts `new` in a transaction of its own.
pub async fn insert_job(store: &Store, new: &NewJob) -> Job {
    let mut tx = store.begin().await.expect("begin");
    let (job, _) = tx.insert_job(new).await.expect("insert job");
    tx.commit().await.expect("commit");
    job
}

/// Inserts an agent in a transaction of its own and returns its id.
pub async fn insert_agent(store: &Store, definition: &AgentDefinition) -> Uuid {
    let mut tx = store.begin().await.expect("begin");
    let id = tx.insert_agent(definition).await.expect("insert agent");
    tx.commit().await.expect("commit");
    id
}

/// Waits (on store notifications) until `check` accepts the job; fails after [`JOB_GUARD`] naming `what`
/// and where the job is.
pub async fn wait_for_job(store: &Store, job_id: Uuid, what: &str, check: impl Fn(&Job) -> bool) -> Job {
    let mut notifications = store.subscribe();
    let guard = tokio::time::Instant::now() + JOB_GUARD;
    loop {
        let job = store.get_job(job_id).await.expect("read job");
        if check(&job) {
            return job;
        }
        if tokio::time::timeout_at(guard, notifications.recv()).await.is_err() {
            panic!(
                "job never reached {what} in {JOB_GUARD:?}; last seen {:?}, attempt {}, error {:?}",
                job.status, job.attempt, job.error
            );
        }
    }
}

/// [`wait_for_job`] until the job has `status`.
pub async fn wait_for_status(store: &Store, job_id: Uuid, status: JobStatus) -> Job {
    wait_for_job(store, job_id, status.as_str(), |job| job.status == status).await
}

/// A shared, non-idempotent webhook tool `name` posting to `url` (risk p2, 10 s), whose arguments follow
/// `input_schema`.
pub fn webhook_tool(name: &str, url: String, input_schema: Value) -> WebhookToolRecord {
    WebhookToolRecord {
        id: Uuid::now_v7(),
        agent_id: None,
        name: name.into(),
        description: "Records an item.".into(),
        input_schema,
        url,
        method: "POST".into(),
        headers_enc: None,
        header_keys: vec![],
        timeout_ms: 10_000,
        risk: "p2".into(),
        idempotent: false,
        credential_refs: json!([]),
    }
}

/// Inserts a webhook tool in a transaction of its own.
pub async fn insert_webhook_tool(store: &Store, record: &WebhookToolRecord) {
    let mut tx = store.begin().await.expect("begin");
    tx.insert_webhook_tool(record).await.expect("insert webhook tool");
    tx.commit().await.expect("commit");
}
