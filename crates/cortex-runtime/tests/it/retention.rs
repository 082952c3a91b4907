//! A retention pass of one process: its session buffers older than the retention period go (each process
//! prunes its own data directory), newer ones stay, and the database sweep runs when the process leads.

use std::time::SystemTime;

use cortex_core::clock::Clock;
use cortex_jobs::retention::{RetentionPolicy, Sweeper};
use cortex_testkit::fake_llm::FakeLlm;
use cortex_testkit::{TestStore, both_engines};
use uuid::Uuid;

use crate::support::*;

/// A buffer file of `job_id` last written `age` before the store clock's now.
fn buffer_written(t: &TestStore, job_id: Uuid, age: chrono::Duration) -> std::path::PathBuf {
    let dir = cortex_runtime::buffer_dir(t.dir.path(), job_id);
    std::fs::create_dir_all(&dir).unwrap();
    let file = std::fs::File::create(dir.join("session-001.jsonl")).unwrap();
    file.set_modified(SystemTime::from(t.clock.now() - age)).unwrap();
    dir
}

both_engines!(a_pass_prunes_old_buffers_and_sweeps_as_leader, |t: TestStore| async move {
    let llm = FakeLlm::start().await;
    let runtime = runtime_with_env(&t, &t.store, env_for(&llm)).await;
    let old = buffer_written(&t, Uuid::now_v7(), chrono::Duration::days(31));
    let recent = buffer_written(&t, Uuid::now_v7(), chrono::Duration::days(29));

    let pass = runtime.retention_pass(&mut Sweeper::new(Uuid::now_v7()), &RetentionPolicy::with_days(30, 365)).await;
    assert_eq!(pass.buffers, 1);
    assert!(pass.database.is_some(), "the only process leads the sweep");
    assert!(!old.exists() && recent.exists());

    let other = runtime.retention_pass(&mut Sweeper::new(Uuid::now_v7()), &RetentionPolicy::with_days(30, 365)).await;
    assert_eq!(other.database, None, "a second process does not sweep the database meanwhile");
    let forever = runtime.retention_pass(&mut Sweeper::new(Uuid::now_v7()), &RetentionPolicy::with_days(0, 0)).await;
    assert_eq!(forever.buffers, 0);
    t.clock.advance(chrono::Duration::days(2));
    let later = runtime.retention_pass(&mut Sweeper::new(Uuid::now_v7()), &RetentionPolicy::with_days(0, 365)).await;
    assert!(recent.exists() && later.buffers == 0, "retention 0 keeps buffers forever");
});
