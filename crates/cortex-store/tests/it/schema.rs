//! The database enforces the job state machine by itself, its job indexes hold only the states their
//! queries name, and SQLite checks a row's constraints without building temporary tables.

use cortex_core::job::{JobStatus, TRANSITIONS};
use cortex_store::DatabaseConfig;
use cortex_testkit::{Engine, TestStore, both_engines};
use sqlx::{AssertSqlSafe, Connection, PgConnection, Row, SqliteConnection};

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

// The claim's index holds waiting jobs only, so a claim or a completion adds nothing to it and its ordered
// scan never passes an ended job; on PostgreSQL the per-state index `job_live` likewise holds unfinished jobs
// only (docs/PERFORMANCE.md section 19).
both_engines!(claim_index_holds_scheduled_jobs_only, |t: TestStore| async move {
    let definition = |name: &str| match t.store.engine_name() {
        "sqlite" => format!("SELECT sql FROM sqlite_schema WHERE type = 'index' AND name = '{name}'"),
        _ => format!("SELECT pg_get_indexdef('{name}'::regclass)"),
    };
    let claim = t.query_text(definition("job_claim")).await.unwrap().concat();
    let live = t.query_text(definition("job_live")).await.unwrap().concat();
    if t.store.engine_name() == "sqlite" {
        assert!(claim.ends_with("(priority DESC, run_at, id) WHERE status = 'scheduled'"), "{claim}");
        assert!(live.ends_with("(status, agent_id)"), "{live}");
    } else {
        assert!(claim.ends_with("(priority DESC, run_at, id) WHERE (status = 'scheduled'::text)"), "{claim}");
        assert!(live.contains("(status, agent_id) WHERE (status = ANY (ARRAY['pending'::text, 'scheduled'::text, 'running'::text, 'waiting_for_approval'::text, 'retrying'::text]))"), "{live}");
    }
    let unfinished: Vec<&str> = JobStatus::ALL.iter().filter(|s| !s.is_terminal()).map(|s| s.as_str()).collect();
    assert_eq!(
        unfinished,
        ["pending", "scheduled", "running", "waiting_for_approval", "retrying"],
        "job_live's states"
    );
});

/// PostgreSQL's guard calls its PL/pgSQL function only for a change of state it may refuse: the two every
/// job makes (scheduled → running, running → completed) pass on the trigger's condition alone, any other
/// still goes through the function, and an illegal one is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_guard_skips_the_transitions_every_job_makes() {
    let Some(t) = TestStore::postgres_unless_skipped().await else { return };
    let agent_id = agent_with_limit(&t.store, "hot", 4).await;
    let (first, second) = (enqueue(&t.store, task(agent_id)).await.id, enqueue(&t.store, task(agent_id)).await.id);
    let DatabaseConfig::Postgres { url, .. } = &t.config else { unreachable!("a PostgreSQL store") };
    let mut conn = PgConnection::connect(url).await.unwrap();
    sqlx::raw_sql("SET track_functions = 'pl'; BEGIN").execute(&mut conn).await.unwrap();
    let mut set = async |id: uuid::Uuid, status: &str| {
        sqlx::query("UPDATE job SET status = $2 WHERE id = $1").bind(id).bind(status).execute(&mut conn).await?;
        sqlx::query_scalar::<_, Option<i64>>("SELECT pg_stat_get_xact_function_calls('job_status_guard'::regproc)")
            .fetch_one(&mut conn)
            .await
            .map(Option::unwrap_or_default)
    };
    assert_eq!(set(first, "running").await.unwrap(), 0);
    assert_eq!(set(first, "completed").await.unwrap(), 0);
    assert_eq!(set(second, "running").await.unwrap(), 0);
    assert_eq!(set(second, "failed").await.unwrap(), 1, "running -> failed is checked by the function");
    let err = set(first, "running").await.expect_err("completed -> running is illegal");
    assert!(err.to_string().contains("illegal job transition"), "{err}");
}

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

/// SQLite evaluates an `IN` list of more than two constants by building a temporary B-tree of the list,
/// and a CHECK evaluates its expression for every row it checks. Migration 0044 turned such lists into
/// comparisons joined by `OR`: no table's insert may build one again, and the constraints still refuse
/// what they refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_constraints_build_no_temporary_tables() {
    let t = TestStore::new(Engine::Sqlite).await;
    let DatabaseConfig::Sqlite { path } = &t.config else { unreachable!("a SQLite store") };
    let mut conn = SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND sql NOT LIKE 'CREATE VIRTUAL%' \
         AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(tables.len() > 30, "found too few tables: {tables:?}");
    let mut building = Vec::new();
    for table in &tables {
        let program = sqlx::query(AssertSqlSafe(format!("EXPLAIN INSERT INTO \"{table}\" DEFAULT VALUES")))
            .fetch_all(&mut conn)
            .await
            .unwrap();
        if program.iter().any(|op| op.get::<String, _>("opcode") == "OpenEphemeral") {
            building.push(table.clone());
        }
    }
    assert_eq!(building, Vec::<String>::new(), "tables whose insert builds a temporary B-tree");

    // The constraint alone: no agent row behind the session.
    sqlx::query("PRAGMA foreign_keys = OFF").execute(&mut conn).await.unwrap();
    let insert = |status: &'static str| {
        sqlx::query(
            "INSERT INTO session (id, agent_id, origin, status, last_activity_at, created_at, updated_at) \
             VALUES (randomblob(16), randomblob(16), 'api', $1, 0, 0, 0)",
        )
        .bind(status)
    };
    insert("idle").execute(&mut conn).await.expect("a listed value passes");
    let err = insert("paused").execute(&mut conn).await.expect_err("a value outside the list is refused");
    assert!(err.to_string().contains("CHECK constraint failed"), "{err}");
}
