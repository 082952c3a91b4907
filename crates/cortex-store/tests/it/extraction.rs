//! Live-extraction bookkeeping (SPEC §9.2): one `memory_extract` job per session, moved by activity,
//! due at once after N messages or a close, never holding up the chat, and re-planned when it finishes;
//! none for an agent whose memory switches say not to extract.

use std::time::Duration;

use cortex_core::agent::MemorySettings;
use cortex_core::clock::Clock;
use cortex_core::job::{JobKind, JobStatus};
use cortex_store::Store;
use cortex_store::extraction::{EXTRACTION_PRIORITY, ExtractionPolicy};
use cortex_store::jobs::{Job, JobFilter};
use cortex_testkit::{TestStore, both_engines};
use uuid::Uuid;

async fn say(store: &Store, session_id: Uuid, text: &str) {
    let mut tx = store.begin().await.unwrap();
    tx.append_message(session_id, "user", text, None, None).await.unwrap();
    tx.commit().await.unwrap();
}

async fn extraction_jobs(store: &Store, agent_id: Uuid) -> Vec<Job> {
    let filter = JobFilter { agent_id: Some(agent_id), kind: Some(JobKind::MemoryExtract), ..Default::default() };
    store.list_jobs(&filter, None, 50).await.unwrap().items
}

both_engines!(sessions_plan_one_extraction_job_moved_by_activity, |t: TestStore| async move {
    let agent = t.agent("Rememberer").await;
    let mut tx = t.store.begin().await.unwrap();
    let session = tx.insert_session(agent, None, "api").await.unwrap().id;
    tx.commit().await.unwrap();
    say(&t.store, session, "before extraction is on").await;
    assert!(extraction_jobs(&t.store, agent).await.is_empty(), "off unless the process enables it");

    let idle = Duration::from_secs(30 * 60);
    assert!(t.store.enable_memory_extraction(ExtractionPolicy { every_messages: 4, idle, ..Default::default() }));
    say(&t.store, session, "my sister Ana lives in Lisbon").await;
    let jobs = extraction_jobs(&t.store, agent).await;
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    assert_eq!((job.status, job.priority, job.session_id), (JobStatus::Scheduled, EXTRACTION_PRIORITY, None));
    assert_eq!(job.payload["session_id"], session.to_string());
    assert_eq!(job.run_at, t.clock.now() + chrono::Duration::minutes(30), "due when the session goes quiet");
    assert!(t.store.claim_next(Uuid::now_v7(), false).await.unwrap().is_none(), "an idle session costs nothing");

    t.clock.advance(chrono::Duration::minutes(10));
    say(&t.store, session, "and she works as a nurse").await;
    let jobs = extraction_jobs(&t.store, agent).await;
    assert_eq!(jobs.len(), 1, "triggers coalesce into the one job");
    assert_eq!(jobs[0].run_at, t.clock.now() + chrono::Duration::minutes(30), "activity pushes it back");

    say(&t.store, session, "the fourth message makes it due").await;
    let job = extraction_jobs(&t.store, agent).await.remove(0);
    assert_eq!(job.run_at, t.clock.now(), "4 unextracted messages: due now");
    let worker = Uuid::now_v7();
    let claimed = t.store.claim_next(worker, false).await.unwrap().unwrap();
    assert_eq!(claimed.id, job.id);

    say(&t.store, session, "a message while it runs").await;
    assert_eq!(extraction_jobs(&t.store, agent).await.len(), 1, "a running extraction absorbs triggers");
    let state = t.store.extraction_state(session).await.unwrap();
    assert_eq!((state.message_count, state.extracted_through_seq, state.extraction_job_id), (5, 0, Some(job.id)));

    let mut tx = t.store.begin().await.unwrap();
    tx.finish_extraction(session, job.id, 4).await.unwrap();
    tx.commit().await.unwrap();
    let state = t.store.extraction_state(session).await.unwrap();
    assert_eq!(state.extracted_through_seq, 4);
    let next = state.extraction_job_id.expect("the fifth message gets its own job");
    assert_ne!(next, job.id);
    let follow_up = t.store.get_job(next).await.unwrap();
    assert_eq!(follow_up.run_at, t.clock.now() + chrono::Duration::minutes(30));

    let mut tx = t.store.begin().await.unwrap();
    tx.close_session(session, false).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(t.store.get_job(next).await.unwrap().run_at, t.clock.now(), "closing makes it due");

    let mut tx = t.store.begin().await.unwrap();
    tx.finish_extraction(session, next, 5).await.unwrap();
    tx.commit().await.unwrap();
    let state = t.store.extraction_state(session).await.unwrap();
    assert_eq!((state.extracted_through_seq, state.extraction_job_id), (5, None), "nothing left: no job");
    assert_eq!(extraction_jobs(&t.store, agent).await.len(), 2);
});

both_engines!(a_quiet_session_is_marked_idle_after_its_extraction, |t: TestStore| async move {
    let agent = t.agent("Quiet").await;
    t.store.enable_memory_extraction(ExtractionPolicy::default());
    let mut tx = t.store.begin().await.unwrap();
    let session = tx.insert_session(agent, None, "api").await.unwrap().id;
    tx.commit().await.unwrap();
    say(&t.store, session, "remember that the build server is called atlas").await;
    assert!(t.store.claim_next(Uuid::now_v7(), false).await.unwrap().is_none());
    t.clock.advance(chrono::Duration::minutes(30));
    let job = t.store.claim_next(Uuid::now_v7(), false).await.unwrap().expect("due after 30 quiet minutes");
    assert_eq!(job.kind, JobKind::MemoryExtract);
    let mut tx = t.store.begin().await.unwrap();
    tx.finish_extraction(session, job.id, 1).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(t.store.get_session(session).await.unwrap().status, "idle");
    say(&t.store, session, "back again with another thought").await;
    assert_eq!(t.store.get_session(session).await.unwrap().status, "active");
});

both_engines!(agents_with_memory_switches_off_get_no_extraction_job, |t: TestStore| async move {
    t.store.enable_memory_extraction(ExtractionPolicy::default());
    let mut agents = Vec::new();
    for (name, memory) in [
        ("No Extract", MemorySettings { enabled: true, auto_extract: false }),
        ("No Memory", MemorySettings { enabled: false, auto_extract: true }),
        ("Extracts", MemorySettings::default()),
    ] {
        let def = cortex_store::agents::AgentDefinition { memory, ..cortex_testkit::agent_definition(name) };
        let agent = cortex_testkit::jobs::insert_agent(&t.store, &def).await;
        assert_eq!(t.store.get_agent_by_id(agent).await.unwrap().memory, memory, "stored as given");
        let mut tx = t.store.begin().await.unwrap();
        let session = tx.insert_session(agent, None, "api").await.unwrap().id;
        tx.commit().await.unwrap();
        say(&t.store, session, "my sister Ana lives in Lisbon").await;
        let mut tx = t.store.begin().await.unwrap();
        tx.close_session(session, false).await.unwrap();
        tx.commit().await.unwrap();
        agents.push((name, agent, session));
    }
    for (name, agent, session) in agents {
        let jobs = extraction_jobs(&t.store, agent).await;
        let state = t.store.extraction_state(session).await.unwrap();
        if name == "Extracts" {
            assert_eq!(jobs.len(), 1, "{name}: the control agent is extracted");
            assert_eq!(state.extraction_job_id, Some(jobs[0].id));
        } else {
            assert!(jobs.is_empty(), "{name}: no extraction job, got {jobs:?}");
            assert_eq!((state.extraction_job_id, state.extracted_through_seq), (None, 0), "{name}");
        }
    }
});
