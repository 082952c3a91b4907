//! Many messages sent at once to one session: they run one at a time, and each turn's model context is
//! the conversation as it stood when the turn started — earlier questions with their answers, never a
//! later question. The real agent runtime runs the turns against the fake model, which records them.

use std::sync::Arc;

use cortex_core::job::{JobKind, JobStatus};
use cortex_jobs::{EngineConfig, JobEngine};
use cortex_runtime::{Runtime, RuntimeConfig};
use cortex_store::Store;
use cortex_testkit::fake_llm::{FakeLlm, Reply, When};
use cortex_testkit::{TestStore, both_engines};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::app::TestApp;

const MESSAGES: usize = 20;

fn question(n: usize) -> String {
    format!("question {n:02}")
}

fn answer_to(question: &str) -> String {
    question.replace("question", "answer")
}

/// A job engine running the agent runtime against `llm`.
async fn start_agents(app: &TestApp, llm: &FakeLlm) -> CancellationToken {
    let store = app.test.store.clone();
    let env = [("OPENAI_API_KEY", "sk-test".to_owned()), ("OPENAI_BASE_URL", llm.openai_base_url())]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect();
    let cipher =
        Arc::new(cortex_store::secrets::Cipher::new(cortex_store::secrets::MasterKey::from_bytes([7; 32]), Vec::new()));
    let runtime = Runtime::new(
        store.clone(),
        RuntimeConfig {
            data_dir: app.test.dir.path().to_path_buf(),
            env,
            cipher,
            mcp: Arc::new(cortex_mcp::Pool::new(store.clock().clone(), 10, std::time::Duration::from_secs(600))),
            http: reqwest::Client::new(),
            llm_retry: Default::default(),
            redactor: Default::default(),
        },
    )
    .await
    .unwrap();
    let engine = JobEngine::new(store, EngineConfig { concurrency: 8, ..EngineConfig::with_name("conversation-test") })
        .with_handler(JobKind::Chat, runtime.handler());
    let stop = CancellationToken::new();
    let signal = stop.clone();
    tokio::spawn(engine.run(async move { signal.cancelled().await }));
    stop
}

/// Waits (on store notifications) until the job completed; fails on a final failure or after two minutes.
async fn wait_completed(store: &Store, job_id: Uuid) {
    let mut notifications = store.subscribe();
    let guard = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let job = store.get_job(job_id).await.unwrap();
        match job.status {
            JobStatus::Completed => return,
            JobStatus::Failed | JobStatus::DeadLetter => panic!("job {job_id} failed: {:?}", job.error),
            _ => {}
        }
        if tokio::time::timeout_at(guard, notifications.recv()).await.is_err() {
            panic!("job {job_id} never completed; last seen {:?}", job.status);
        }
    }
}

both_engines!(parallel_messages_see_earlier_turns_with_their_answers, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    let llm = FakeLlm::start().await;
    for n in 1..=MESSAGES {
        llm.rule(When::LastUserContains(question(n)), Reply::text(answer_to(&question(n))));
    }
    let _engine = start_agents(&app, &llm).await.drop_guard();
    let agent = app.create_agent("Listener").await;
    let path = format!("/agents/{}/chat", agent["id"].as_str().unwrap());

    let first: Value = app.post(&path, &app.admin, json!({"text": question(1)})).await.json().await.unwrap();
    let session = first["session_id"].as_str().unwrap().to_owned();
    let sends =
        (2..=MESSAGES).map(|n| app.post(&path, &app.admin, json!({"text": question(n), "session_id": session})));
    let mut jobs = vec![first["job_id"].as_str().unwrap().to_owned()];
    for response in futures::future::join_all(sends).await {
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, 202, "{body}");
        jobs.push(body["job_id"].as_str().unwrap().to_owned());
    }
    for job in &jobs {
        wait_completed(&app.test.store, job.parse().unwrap()).await;
    }

    // Turns ran one at a time: each saw every earlier turn, question then answer, and then its own question.
    let mut conversation: Vec<String> = Vec::new();
    for request in llm.requests() {
        let seen: Vec<String> = request.messages().into_iter().filter(|m| m.role != "system").map(|m| m.text).collect();
        let current = seen.last().cloned().unwrap();
        let mut expected = conversation.clone();
        expected.push(current.clone());
        assert_eq!(seen, expected, "the context of the turn for `{current}`");
        conversation.push(current.clone());
        conversation.push(answer_to(&current));
    }
    assert_eq!(conversation.len(), 2 * MESSAGES);
});
