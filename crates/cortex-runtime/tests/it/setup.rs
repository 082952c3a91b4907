//! Runtime construction: environment validation, env providers as credentials, the session buffer a run
//! leaves behind.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cortex_core::job::JobStatus;
use cortex_runtime::{RecordType, Runtime, RuntimeConfig, read_buffer};
use cortex_testkit::fake_llm::Reply;
use cortex_testkit::{TestStore, both_engines};

use crate::support::*;

fn config(test: &TestStore, env: BTreeMap<String, String>) -> RuntimeConfig {
    RuntimeConfig {
        data_dir: test.dir.path().to_owned(),
        env,
        cipher: cipher(),
        mcp: Arc::new(cortex_mcp::Pool::new(test.store.clock().clone(), 10, Duration::from_secs(600))),
        http: http(),
        llm_retry: fast_retry(),
        redactor: Default::default(),
    }
}

both_engines!(a_malformed_environment_is_refused_naming_the_variable, |t: TestStore| async move {
    let env = BTreeMap::from([("OPENAI_BASE_URL".to_owned(), "localhost:11434".to_owned())]);
    let err = Runtime::new(t.store.clone(), config(&t, env)).await.err().unwrap();
    assert!(err.to_string().starts_with("OPENAI_BASE_URL:"), "{err}");
});

both_engines!(env_providers_are_materialised_as_credentials, |t: TestStore| async move {
    let env = BTreeMap::from([
        ("OPENAI_API_KEY".to_owned(), "sk-live-1".to_owned()),
        ("ANTHROPIC_API_KEY".to_owned(), "sk-ant-1".to_owned()),
    ]);
    Runtime::new(t.store.clone(), config(&t, env)).await.unwrap();
    let openai = t.store.credential("llm", "openai").await.unwrap().unwrap();
    assert_eq!((openai.source.as_str(), openai.status.as_str()), ("env", "active"));
    assert_eq!(openai.base_url.as_deref(), Some("https://api.openai.com/v1"));
    let secret = openai.secret_enc.unwrap();
    assert!(secret.starts_with("v1:") && !secret.contains("sk-live-1"));

    // A restart without the Anthropic key drops its env credential and keeps the OpenAI row's id.
    let env = BTreeMap::from([("OPENAI_API_KEY".to_owned(), "sk-live-2".to_owned())]);
    Runtime::new(t.store.clone(), config(&t, env)).await.unwrap();
    assert!(t.store.credential("llm", "anthropic").await.unwrap().is_none());
    assert_eq!(t.store.credential("llm", "openai").await.unwrap().unwrap().id, openai.id);
});

both_engines!(a_run_leaves_a_valid_session_buffer, |t: TestStore| async move {
    let world = World::new(t).await;
    let store = world.store().clone();
    let agent = create_agent(&store, definition("gpt-4o-mini")).await;
    world.llm.push(Reply::text("logged"));
    let job = chat(&store, agent.id, None, "hello").await;
    wait_status(&store, job.id, JobStatus::Completed).await;

    let dir = world.runtime.buffer_dir(job.id);
    assert!(dir.join("session-001.jsonl").exists());
    let report = tokio::task::spawn_blocking(move || read_buffer(&dir)).await.unwrap();
    assert!(report.errors.is_empty() && report.skipped_tail.is_empty(), "{report:?}");
    let types: Vec<RecordType> = report.records.iter().map(|record| record.record_type).collect();
    assert_eq!(types.first(), Some(&RecordType::SessionStart));
    assert!(types.contains(&RecordType::LlmRequest) && types.contains(&RecordType::LlmResponse));
    assert!(types.contains(&RecordType::Checkpoint));
    assert_eq!(types.last(), Some(&RecordType::SessionEnd));
    let sequences: Vec<u64> = report.records.iter().map(|record| record.sequence).collect();
    assert_eq!(sequences, (0..sequences.len() as u64).collect::<Vec<_>>());
    assert!(report.records.iter().all(|record| record.job_id == job.id && record.session_id == job.session_id));
    assert_eq!(report.metadata.unwrap()["model"], "gpt-4o-mini");
    world.finish().await;
});
