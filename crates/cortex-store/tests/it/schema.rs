//! The database enforces the job state machine by itself.

use cortex_core::job::{JobStatus, TRANSITIONS};
use cortex_testkit::{TestStore, both_engines};

use crate::support::{agent_with_limit, enqueue, task};

both_engines!(transition_table_matches_the_code, |t: TestStore| async move {
    let rows = t.query_text("SELECT from_status || '>' || to_status FROM job_transition".into()).await.unwrap();
    let mut in_db: Vec<String> = rows;
    in_db.sort();
    let mut in_code: Vec<String> = TRANSITIONS.iter().map(|(from, to)| format!("{from}>{to}")).collect();
    in_code.sort();
    assert_eq!(in_db, in_code);
});

/// Shortest chain of legal moves from `scheduled` to `target`.
fn path_to(target: JobStatus) -> Vec<JobStatus> {
    let mut queue = std::collections::VecDeque::from([vec![JobStatus::Scheduled]]);
    while let Some(path) = queue.pop_front() {
        let last = *path.last().unwrap();
        if last == target {
            return path;
        }
        for (from, to) in TRANSITIONS {
            if *from == last && !path.contains(to) {
                let mut next = path.clone();
                next.push(*to);
                queue.push_back(next);
            }
        }
    }
    panic!("{target} unreachable")
}

both_engines!(database_accepts_legal_and_rejects_illegal_transitions, |t: TestStore| async move {
    let agent_id = agent_with_limit(&t.store, "guarded", 4).await;
    for from in JobStatus::ALL {
        for to in JobStatus::ALL {
            if from == to {
                continue;
            }
            let job = enqueue(&t.store, task(agent_id)).await;
            let id_literal = match t.store.engine_name() {
                "sqlite" => format!("X'{}'", job.id.simple()),
                _ => format!("'{}'", job.id),
            };
            for step in path_to(*from).windows(2) {
                t.execute_raw(format!("UPDATE job SET status = '{}' WHERE id = {id_literal}", step[1])).await.unwrap();
            }
            let result = t.execute_raw(format!("UPDATE job SET status = '{to}' WHERE id = {id_literal}")).await;
            if from.can_transition_to(*to) {
                assert!(result.is_ok(), "{from} -> {to} should be accepted: {result:?}");
            } else {
                let err = result.expect_err(&format!("{from} -> {to} must be rejected"));
                assert!(err.to_string().contains("illegal job transition"), "{err}");
            }
        }
    }
    let err = t
        .execute_raw(format!(
            "INSERT INTO job (id, agent_id, kind, status, priority, payload, max_attempts, timeout_seconds, run_at, created_at, updated_at) \
             VALUES ({}, {}, 'task', 'running', 0, '{{}}', 3, 300, 0, 0, 0)",
            literal(&t, uuid::Uuid::now_v7()),
            literal(&t, agent_id)
        ))
        .await
        .expect_err("a job cannot be born running");
    assert!(err.to_string().contains("illegal job transition"), "{err}");
});

fn literal(t: &TestStore, id: uuid::Uuid) -> String {
    match t.store.engine_name() {
        "sqlite" => format!("X'{}'", id.simple()),
        _ => format!("'{id}'"),
    }
}

both_engines!(migrations_are_recorded, |t: TestStore| async move {
    assert!(t.store.schema_version().await.unwrap() >= 1);
    t.store.migrate().await.expect("migrating twice is a no-op");
});
