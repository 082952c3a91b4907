//! The two engines' schemas stay in step, and migrations upgrade databases that hold data.
//!
//! The shape test introspects both databases after all migrations (tables, columns with nullability and
//! type family, primary keys, unique constraints, named indexes) and fails on any difference, so a
//! column or index added to one engine only is caught whatever migration adds it.

use std::collections::{BTreeMap, BTreeSet};

use cortex_store::DatabaseConfig;
use cortex_testkit::{Engine, TestStore, both_engines};
use sqlx::{Connection, PgConnection, SqliteConnection};
use uuid::Uuid;

/// How a column stores its values, across the engines' type names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Family {
    Integer,
    Real,
    Text,
    Bytes,
    Other(String),
}

fn family(type_name: &str) -> Family {
    match type_name.to_ascii_lowercase().as_str() {
        "integer" | "bigint" | "smallint" | "boolean" => Family::Integer,
        "real" | "double precision" => Family::Real,
        "text" | "jsonb" | "json" | "character varying" => Family::Text,
        "blob" | "uuid" | "bytea" => Family::Bytes,
        other => Family::Other(other.to_owned()),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Column {
    family: Family,
    not_null: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Index {
    table: String,
    unique: bool,
    columns: Vec<String>,
}

/// What must be the same on both engines.
#[derive(Debug, Default)]
struct Shape {
    /// `table` → column → definition.
    columns: BTreeMap<String, BTreeMap<String, Column>>,
    /// `table` → primary key columns in order.
    primary_keys: BTreeMap<String, Vec<String>>,
    /// `table` → column lists of its unique constraints (not indexes created by name).
    unique_constraints: BTreeMap<String, BTreeSet<Vec<String>>>,
    /// Indexes created by name (`CREATE [UNIQUE] INDEX name …`).
    indexes: BTreeMap<String, Index>,
}

const MIGRATION_TABLE: &str = "_sqlx_migrations";

/// Full-text search is built differently per engine (SQLite: an FTS5 virtual table and its shadow tables;
/// PostgreSQL: an expression GIN index); such structures carry `_fts` in their names and are not compared.
fn is_full_text(name: &str) -> bool {
    name.ends_with("_fts") || name.contains("_fts_")
}

async fn sqlite_shape(conn: &mut SqliteConnection) -> Shape {
    let mut shape = Shape::default();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name <> $1",
    )
    .bind(MIGRATION_TABLE)
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    for table in tables.into_iter().filter(|table| !is_full_text(table)) {
        let columns: Vec<(String, String, bool, i64)> =
            sqlx::query_as("SELECT name, type, \"notnull\", pk FROM pragma_table_info($1) ORDER BY cid")
                .bind(&table)
                .fetch_all(&mut *conn)
                .await
                .unwrap();
        let mut primary_key: Vec<(i64, String)> = Vec::new();
        for (name, type_name, not_null, pk) in columns {
            if pk > 0 {
                primary_key.push((pk, name.clone()));
            }
            // SQLite lets non-integer primary keys hold NULL for historical reasons; the store never writes one.
            let column = Column { family: family(&type_name), not_null: not_null || pk > 0 };
            shape.columns.entry(table.clone()).or_default().insert(name, column);
        }
        primary_key.sort();
        shape.primary_keys.insert(table.clone(), primary_key.into_iter().map(|(_, name)| name).collect());

        let indexes: Vec<(String, bool, String)> =
            sqlx::query_as("SELECT name, \"unique\", origin FROM pragma_index_list($1)")
                .bind(&table)
                .fetch_all(&mut *conn)
                .await
                .unwrap();
        for (index, unique, origin) in indexes {
            let columns: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_index_info($1) ORDER BY seqno")
                .bind(&index)
                .fetch_all(&mut *conn)
                .await
                .unwrap();
            match origin.as_str() {
                "c" => {
                    shape.indexes.insert(index, Index { table: table.clone(), unique, columns });
                }
                "u" => {
                    shape.unique_constraints.entry(table.clone()).or_default().insert(columns);
                }
                _ => {} // the primary key, compared above
            }
        }
    }
    shape
}

/// Index name, table, unique, columns, kind of the constraint owning it.
type PgIndexRow = (String, String, bool, Vec<String>, Option<String>);

async fn postgres_shape(conn: &mut PgConnection) -> Shape {
    let mut shape = Shape::default();
    let columns: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text, data_type::text, is_nullable::text FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name <> $1 ORDER BY table_name, ordinal_position",
    )
    .bind(MIGRATION_TABLE)
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    for (table, name, type_name, nullable) in columns {
        let column = Column { family: family(&type_name), not_null: nullable == "NO" };
        shape.columns.entry(table).or_default().insert(name, column);
    }
    // Every index of the schema with its columns in order; `constraint_kind` is `p`/`u` when a constraint owns it.
    let indexes: Vec<PgIndexRow> = sqlx::query_as(
        "SELECT i.relname::text, t.relname::text, x.indisunique, \
                ARRAY(SELECT a.attname::text FROM unnest(x.indkey) WITH ORDINALITY AS k(attnum, ord) \
                      JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum ORDER BY k.ord), \
                (SELECT c.contype::text FROM pg_constraint c WHERE c.conindid = x.indexrelid AND c.contype IN ('p', 'u')) \
         FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid \
         JOIN pg_namespace n ON n.oid = t.relnamespace \
         WHERE n.nspname = current_schema() AND t.relname <> $1",
    )
    .bind(MIGRATION_TABLE)
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    for (index, table, unique, columns, constraint_kind) in indexes {
        if is_full_text(&index) {
            continue;
        }
        match constraint_kind.as_deref() {
            Some("p") => {
                shape.primary_keys.insert(table, columns);
            }
            Some(_) => {
                shape.unique_constraints.entry(table).or_default().insert(columns);
            }
            None => {
                shape.indexes.insert(index, Index { table, unique, columns });
            }
        }
    }
    for table in shape.columns.keys() {
        shape.primary_keys.entry(table.clone()).or_default();
    }
    shape
}

/// Every difference between two maps, as readable lines.
fn differences<V: std::fmt::Debug + PartialEq>(
    what: &str,
    sqlite: &BTreeMap<String, V>,
    postgres: &BTreeMap<String, V>,
) -> Vec<String> {
    let names: BTreeSet<&String> = sqlite.keys().chain(postgres.keys()).collect();
    names
        .into_iter()
        .filter_map(|name| match (sqlite.get(name), postgres.get(name)) {
            (Some(a), Some(b)) if a == b => None,
            (Some(a), Some(b)) => Some(format!("{what} {name}: sqlite {a:?} / postgres {b:?}")),
            (Some(_), None) => Some(format!("{what} {name}: only on sqlite")),
            (None, _) => Some(format!("{what} {name}: only on postgres")),
        })
        .collect()
}

/// The columns of every table keyed `table.column`, so one missing column is one line.
fn flat_columns(shape: &Shape) -> BTreeMap<String, Column> {
    let mut flat = BTreeMap::new();
    for (table, columns) in &shape.columns {
        for (name, column) in columns {
            flat.insert(format!("{table}.{name}"), column.clone());
        }
    }
    flat
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_engines_have_the_same_schema() {
    if cortex_testkit::skip_postgres() {
        eprintln!("skipped: CORTEX_TEST_SKIP_PG=1 (the comparison needs both engines)");
        return;
    }
    let sqlite = TestStore::new(Engine::Sqlite).await;
    let postgres = TestStore::new(Engine::Postgres).await;
    let (DatabaseConfig::Sqlite { path }, DatabaseConfig::Postgres { url, .. }) = (&sqlite.config, &postgres.config)
    else {
        unreachable!("one store per engine")
    };
    let mut sqlite_conn = SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.unwrap();
    let mut postgres_conn = PgConnection::connect(url).await.unwrap();
    let (a, b) = (sqlite_shape(&mut sqlite_conn).await, postgres_shape(&mut postgres_conn).await);

    let tables_a: BTreeMap<String, ()> = a.columns.keys().map(|t| (t.clone(), ())).collect();
    let tables_b: BTreeMap<String, ()> = b.columns.keys().map(|t| (t.clone(), ())).collect();
    let mut diff = differences("table", &tables_a, &tables_b);
    diff.extend(differences("column", &flat_columns(&a), &flat_columns(&b)));
    diff.extend(differences("primary key of", &a.primary_keys, &b.primary_keys));
    diff.extend(differences("unique constraints of", &a.unique_constraints, &b.unique_constraints));
    diff.extend(differences("index", &a.indexes, &b.indexes));
    assert!(diff.is_empty(), "the schemas drifted apart:\n{}", diff.join("\n"));
    assert!(a.columns.len() > 20 && a.indexes.len() > 20, "introspection found too little: {a:?}");
}

#[test]
fn both_engines_have_the_same_migrations() {
    let names = |engine: &str| -> Vec<String> {
        let dir = format!("{}/migrations/{engine}", env!("CARGO_MANIFEST_DIR"));
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|entry| entry.unwrap().file_name().to_string_lossy().into()).collect();
        names.sort();
        names
    };
    assert_eq!(names("sqlite"), names("postgres"));
}

/// An id as an SQL literal of the store's engine.
fn literal(t: &TestStore, id: Uuid) -> String {
    match t.store.engine_name() {
        "sqlite" => format!("X'{}'", id.simple()),
        _ => format!("'{id}'"),
    }
}

both_engines!(new_job_kinds_and_event_types_need_no_schema_change, |t: TestStore| async move {
    let agent = crate::support::agent_with_limit(&t.store, "future", 4).await;
    let (job, agent) = (Uuid::now_v7(), literal(&t, agent));
    t.execute_raw(format!(
        "INSERT INTO job (id, agent_id, kind, status, priority, payload, max_attempts, timeout_seconds, run_at, created_at, updated_at) \
         VALUES ({}, {agent}, 'a_kind_from_the_future', 'scheduled', 0, '{{}}', 3, 300, 0, 0, 0)",
        literal(&t, job)
    ))
    .await
    .expect("any kind is stored");
    t.execute_raw(format!(
        "INSERT INTO agent_event (agent_id, type, payload, actor, created_at) VALUES ({agent}, 'future.event', '{{}}', 'system', 0)"
    ))
    .await
    .expect("any event type is stored");
    let unreadable = t.store.get_job(job).await.expect_err("this version validates kinds in code");
    assert!(unreadable.to_string().contains("job.kind"), "{unreadable}");

    let err = t
        .execute_raw(format!(
            "INSERT INTO job (id, agent_id, kind, status, priority, payload, max_attempts, timeout_seconds, run_at, created_at, updated_at) \
             VALUES ({}, {agent}, 'task', 'scheduled', 500, '{{}}', 3, 300, 0, 0, 0)",
            literal(&t, Uuid::now_v7())
        ))
        .await
        .expect_err("the other checks stay");
    assert!(err.to_string().to_lowercase().contains("check"), "{err}");
});

/// Applies the migrations up to `version` on a connection of the test's database.
async fn migrate_to(t: &TestStore, version: i64) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations").join(t.store.engine_name());
    let mut migrator = sqlx::migrate::Migrator::new(dir).await.unwrap();
    migrator.migrations = migrator.migrations.iter().filter(|m| m.version <= version).cloned().collect();
    match &t.config {
        DatabaseConfig::Sqlite { path } => {
            let mut conn = SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.unwrap();
            migrator.run(&mut conn).await.unwrap();
        }
        DatabaseConfig::Postgres { url, .. } => {
            let mut conn = PgConnection::connect(url).await.unwrap();
            migrator.run(&mut conn).await.unwrap();
        }
    }
}

async fn count(t: &TestStore, table: &str) -> i64 {
    let counted = t.query_text(format!("SELECT CAST(COUNT(*) AS TEXT) FROM {table}")).await.unwrap();
    counted[0].parse().unwrap()
}

/// Migration 0006 rebuilds `job` and `agent_event` on SQLite: rows, links between tables, foreign-key
/// actions and event ids must come through (on both engines, from a database at version 5).
mod the_schema_growth_migration_keeps_data_and_links {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        upgrade_with_data(TestStore::unmigrated(Engine::Sqlite).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        if cortex_testkit::skip_postgres() {
            eprintln!("skipped: CORTEX_TEST_SKIP_PG=1");
            return;
        }
        upgrade_with_data(TestStore::unmigrated(Engine::Postgres).await).await;
    }
}

async fn upgrade_with_data(t: TestStore) {
    migrate_to(&t, 5).await;
    let [agent, session, parent, child, call, approval] = [(); 6].map(|()| Uuid::now_v7());
    let [agent, session, parent_id, child_id, call, approval] =
        [agent, session, parent, child, call, approval].map(|id| literal(&t, id));
    let job_columns = "id, agent_id, session_id, kind, status, priority, payload, max_attempts, timeout_seconds, run_at, \
                       parent_job_id, created_at, updated_at";
    for sql in [
        format!(
            "INSERT INTO agent (id, name, slug, role, description, system_prompt, model_config, resource_limits, \
             max_concurrent_jobs, access_mode, skills, subagents, status, health_state, created_at, updated_at) \
             VALUES ({agent}, 'Old', 'old', '', '', '', '{{}}', '{{}}', 4, 'open', '[]', '[]', 'active', 'healthy', 1, 1)"
        ),
        format!(
            "INSERT INTO session (id, agent_id, origin, status, last_activity_at, created_at, updated_at) \
             VALUES ({session}, {agent}, 'rest', 'active', 1, 1, 1)"
        ),
        format!(
            "INSERT INTO job ({job_columns}) VALUES ({parent_id}, {agent}, {session}, 'chat', 'scheduled', 0, '{{}}', 3, 300, 1, NULL, 1, 1)"
        ),
        format!(
            "INSERT INTO job ({job_columns}) VALUES ({child_id}, {agent}, NULL, 'subagent', 'scheduled', 0, '{{}}', 3, 300, 1, {parent_id}, 2, 2)"
        ),
        format!(
            "INSERT INTO session_message (id, session_id, seq, role, content, job_id, created_at) \
             VALUES ({}, {session}, 1, 'user', 'hello', {parent_id}, 1)",
            literal(&t, Uuid::now_v7())
        ),
        format!(
            "INSERT INTO tool_call (id, job_id, agent_id, call_id, turn, tool_ref, input, input_hash, state, idempotent, created_at, updated_at) \
             VALUES ({call}, {child_id}, {agent}, 'c1', 1, 'echo', '{{}}', 'h', 'completed', TRUE, 1, 1)"
        ),
        format!(
            "INSERT INTO approval_request (id, job_id, tool_call_id, agent_id, action_type, action_summary, action_detail, risk, \
             token_hash, status, requested_at, expires_at, created_at, updated_at) \
             VALUES ({approval}, {child_id}, {call}, {agent}, 'tool', 'echo', '{{}}', 'p2', 't', 'pending', 1, 9, 1, 1)"
        ),
    ] {
        t.execute_raw(sql).await.unwrap();
    }
    for n in 0..3 {
        t.execute_raw(format!(
            "INSERT INTO agent_event (agent_id, job_id, type, payload, actor, created_at) VALUES ({agent}, {parent_id}, 'job.state', '{{}}', 'system', {n})"
        ))
        .await
        .unwrap();
    }
    let newest = "SELECT CAST(MAX(seq) AS TEXT) FROM agent_event";
    let deleted: i64 = t.query_text(newest.into()).await.unwrap()[0].parse().unwrap();
    t.execute_raw(format!("DELETE FROM agent_event WHERE seq = {deleted}")).await.unwrap();

    t.store.migrate().await.expect("migrating a database that holds data");
    for (table, rows) in
        [("job", 2), ("session_message", 1), ("tool_call", 1), ("approval_request", 1), ("agent_event", 2)]
    {
        assert_eq!(count(&t, table).await, rows, "{table} after the upgrade");
    }
    assert_eq!(t.store.get_job(child).await.unwrap().parent_job_id, Some(parent));
    assert_eq!(t.store.message_of_job(parent, "user").await.unwrap().unwrap().content, "hello");
    if t.store.engine_name() == "sqlite" {
        let broken = t.query_text("SELECT \"table\" FROM pragma_foreign_key_check".into()).await.unwrap();
        assert!(broken.is_empty(), "{broken:?}");
    }
    t.execute_raw(format!(
        "INSERT INTO agent_event (agent_id, type, payload, actor, created_at) VALUES ({agent}, 'job.state', '{{}}', 'system', 9)"
    ))
    .await
    .unwrap();
    let next: i64 = t.query_text(newest.into()).await.unwrap()[0].parse().unwrap();
    assert!(next > deleted, "event id {next} handed out again (a deleted event had {deleted})");

    // The store's own connection enforces foreign keys again, and the rebuilt tables' links still act.
    let orphan = crate::support::task(Uuid::now_v7());
    let mut tx = t.store.begin().await.unwrap();
    assert!(tx.insert_job(&orphan).await.is_err(), "a job of a missing agent is refused");
    drop(tx);
    t.execute_raw(format!("DELETE FROM agent WHERE id = {agent}")).await.unwrap();
    for table in ["job", "session_message", "tool_call", "approval_request"] {
        assert_eq!(count(&t, table).await, 0, "{table} rows outlived their agent");
    }
}

/// Migration 0013 indexes memories written before it: an old record is found by keyword search and
/// carries empty provenance afterwards (on both engines, from a database at version 12).
mod the_memory_migration_indexes_existing_records {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        memory_upgrade(TestStore::unmigrated(Engine::Sqlite).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        if cortex_testkit::skip_postgres() {
            eprintln!("skipped: CORTEX_TEST_SKIP_PG=1");
            return;
        }
        memory_upgrade(TestStore::unmigrated(Engine::Postgres).await).await;
    }
}

async fn memory_upgrade(t: TestStore) {
    migrate_to(&t, 12).await;
    let (agent_id, memory_id) = (Uuid::now_v7(), Uuid::now_v7());
    let (agent, memory) = (literal(&t, agent_id), literal(&t, memory_id));
    for sql in [
        format!(
            "INSERT INTO agent (id, name, slug, role, description, system_prompt, model_config, resource_limits, \
             max_concurrent_jobs, access_mode, skills, subagents, status, health_state, created_at, updated_at) \
             VALUES ({agent}, 'Old', 'old', '', '', '', '{{}}', '{{}}', 4, 'open', '[]', '[]', 'active', 'healthy', 1, 1)"
        ),
        format!(
            "INSERT INTO memory_record (id, agent_id, type, content, tags, importance, confidence, source, content_hash, \
             created_at, updated_at) VALUES ({memory}, {agent}, 'fact', 'The old gateway runs on port 8443.', '[]', 3, 1.0, \
             'tool', 'h', 1, 1)"
        ),
    ] {
        t.execute_raw(sql).await.unwrap();
    }
    t.store.migrate().await.unwrap();
    let hits = t.store.memory_keyword_hits(agent_id, &["gateway".into()], 10).await.unwrap();
    assert_eq!(hits.iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![memory_id]);
    let record = t.store.get_memory(agent_id, memory_id).await.unwrap();
    assert_eq!((record.people.len(), record.session_id, record.embedding_model), (0, None, None));
}
