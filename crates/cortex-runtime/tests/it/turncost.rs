//! The statement budget of one chat turn (issue 17): one turn against an instant scripted model (no
//! tools) — the API's creation transaction (session, job, user message), the claim, the agent loop and
//! the completion — may run at most a fixed number of SQL statements and write transactions, on each
//! engine. A change that adds a statement to the turn fails here, with the turn's statements listed.
//! A worker's batch of completions costs the same statements whatever its size.
//!
//! Counting is exact: every statement sqlx runs is logged on target `sqlx::query` (on SQLite from the
//! connection's worker thread), so a global `tracing` layer counts them, and [`Store::transactions_begun`]
//! counts transactions (SQLite's `BEGIN`/`COMMIT` are not in that log, PostgreSQL's are and are left
//! out). A global layer would also see the statements of every other test in this binary, so each
//! budget test runs its body in a child process of this binary that runs that test alone. The engine is
//! stepped with [`JobEngine::run_one`], so no background loop adds statements at its own pace.

use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use cortex_core::job::{JobKind, JobStatus};
use cortex_jobs::JobEngine;
use cortex_store::Store;
use cortex_store::jobs::NewJob;
use cortex_testkit::fake_llm::{FakeLlm, Reply, When};
use cortex_testkit::{Engine as StoreEngine, TestStore};
use serde_json::json;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;

use crate::support::*;

/// Set in the child process that runs a budget test's body.
const CHILD: &str = "CORTEX_TURNCOST_CHILD";

/// The most a turn may cost: statements (without `BEGIN`/`COMMIT`) and write transactions.
struct Budget {
    statements: usize,
    transactions: u64,
}

const SQLITE: Budget = Budget { statements: 32, transactions: 5 };
const POSTGRES: Budget = Budget { statements: 35, transactions: 5 };

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_turn_stays_within_its_statement_budget_sqlite() {
    let test = "turncost::a_chat_turn_stays_within_its_statement_budget_sqlite";
    alone(test, || count_one_turn(StoreEngine::Sqlite, SQLITE)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_turn_stays_within_its_statement_budget_postgres() {
    if cortex_testkit::skip_postgres() {
        eprintln!("skipped: CORTEX_TEST_SKIP_PG=1");
        return;
    }
    let test = "turncost::a_chat_turn_stays_within_its_statement_budget_postgres";
    alone(test, || count_one_turn(StoreEngine::Postgres, POSTGRES)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_completions_costs_the_same_statements_whatever_its_size_sqlite() {
    let test = "turncost::a_batch_of_completions_costs_the_same_statements_whatever_its_size_sqlite";
    alone(test, || count_completion_batches(StoreEngine::Sqlite)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_completions_costs_the_same_statements_whatever_its_size_postgres() {
    if cortex_testkit::skip_postgres() {
        eprintln!("skipped: CORTEX_TEST_SKIP_PG=1");
        return;
    }
    let test = "turncost::a_batch_of_completions_costs_the_same_statements_whatever_its_size_postgres";
    alone(test, || count_completion_batches(StoreEngine::Postgres)).await;
}

/// In the test process: runs `test` alone in a child process and fails with its output if it failed.
/// In the child: runs `body`, which counts statements.
async fn alone<F: std::future::Future<Output = ()>>(test: &str, body: impl FnOnce() -> F) {
    if std::env::var_os(CHILD).is_some() {
        return body().await;
    }
    let exe = std::env::current_exe().unwrap();
    let output = tokio::task::spawn_blocking({
        let test = test.to_owned();
        move || {
            Command::new(exe)
                .args([test.as_str(), "--exact", "--nocapture", "--test-threads=1"])
                .env(CHILD, "1")
                .output()
        }
    })
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{test} failed in its child process:\n{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "the child process did not run {test}:\n{stdout}\n{stderr}");
    eprintln!("{stderr}");
}

/// The statements logged while recording is on, in order.
static RECORDING: AtomicBool = AtomicBool::new(false);
static STATEMENTS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Records the SQL of every `sqlx::query` event while [`RECORDING`] is on.
struct StatementLog;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for StatementLog {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() != "sqlx::query" || !RECORDING.load(Ordering::SeqCst) {
            return;
        }
        let mut visitor = SqlVisitor::default();
        event.record(&mut visitor);
        // `db.statement` is empty when the summary is the whole statement.
        let sql = if visitor.statement.trim().is_empty() { visitor.summary } else { visitor.statement };
        let sql = sql.split_whitespace().collect::<Vec<_>>().join(" ");
        if let Ok(mut statements) = STATEMENTS.lock() {
            statements.push(sql);
        }
    }
}

#[derive(Default)]
struct SqlVisitor {
    summary: String,
    statement: String,
}

impl tracing::field::Visit for SqlVisitor {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        match field.name() {
            "summary" => self.summary = value.to_owned(),
            "db.statement" => self.statement = value.to_owned(),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "summary" => self.summary = format!("{value:?}").trim_matches('"').to_owned(),
            "db.statement" => self.statement = format!("{value:?}").trim_matches('"').replace("\\n", " "),
            _ => {}
        }
    }
}

/// Transaction control (counted by [`Store::transactions_begun`] instead) and the `PRAGMA`s a new SQLite
/// connection runs when the read pool grows (connection set-up, not work of the turn).
fn is_not_counted(sql: &str) -> bool {
    let word = sql.split_whitespace().next().unwrap_or_default().to_ascii_uppercase();
    matches!(word.as_str(), "BEGIN" | "COMMIT" | "ROLLBACK" | "SAVEPOINT" | "RELEASE" | "PRAGMA")
}

/// A runtime and a hand-stepped engine on one store, against a model that answers at once.
struct Stepped {
    _test: TestStore,
    _llm: FakeLlm,
    store: Store,
    engine: JobEngine,
    agent_id: uuid::Uuid,
}

impl Stepped {
    async fn new(engine: StoreEngine) -> Stepped {
        let test = TestStore::new(engine).await;
        let store = test.store.clone();
        let llm = FakeLlm::start().await;
        llm.rule(When::Always, Reply::text("pong").usage(10, 1));
        let runtime = runtime_with_env(&test, &store, env_for(&llm)).await;
        let agent = create_agent(&store, definition("gpt-4o-mini")).await;
        let handler = runtime.handler();
        let engine = JobEngine::new(store.clone(), engine_config(1))
            .with_handler(JobKind::Chat, handler.clone())
            .with_handler(JobKind::Task, handler);
        store.register_worker(engine.worker_id(), "turncost").await.unwrap();
        Stepped { _test: test, _llm: llm, store, engine, agent_id: agent.id }
    }

    /// One chat turn as the API starts it: the creation transaction (session, job, user message), then
    /// the claim, the agent loop and the committed completion.
    async fn turn(&self) -> uuid::Uuid {
        let job = chat(&self.store, self.agent_id, None, "ping").await;
        assert_eq!(self.engine.run_one().await.unwrap(), Some(job.id));
        job.id
    }
}

/// Installs the global statement log (once per child process).
fn log_statements() {
    let filter = tracing_subscriber::filter::Targets::new().with_target("sqlx::query", tracing::Level::TRACE);
    let subscriber = tracing_subscriber::registry().with(StatementLog.with_filter(filter));
    tracing::subscriber::set_global_default(subscriber).unwrap();
}

/// The counted statements `work` runs (transaction control left out).
async fn statements_of<F: std::future::Future>(work: F) -> (Vec<String>, F::Output) {
    STATEMENTS.lock().unwrap().clear();
    RECORDING.store(true, Ordering::SeqCst);
    let output = work.await;
    RECORDING.store(false, Ordering::SeqCst);
    let statements = STATEMENTS.lock().unwrap().iter().filter(|sql| !is_not_counted(sql)).cloned().collect();
    (statements, output)
}

fn breakdown(statements: &[String]) -> String {
    statements.iter().enumerate().map(|(n, sql)| format!("{:>3}. {}\n", n + 1, shorten(sql))).collect()
}

async fn count_one_turn(engine: StoreEngine, budget: Budget) {
    log_statements();
    let world = Stepped::new(engine).await;
    // Warm-up: first-use work (provider and secret caches, prepared statements) is not per turn.
    for _ in 0..2 {
        world.turn().await;
    }
    let transactions_before = world.store.transactions_begun();
    let (statements, job_id) = statements_of(world.turn()).await;
    let transactions = world.store.transactions_begun() - transactions_before;
    assert_eq!(world.store.get_job(job_id).await.unwrap().status, JobStatus::Completed);

    let breakdown = breakdown(&statements);
    eprintln!(
        "{engine:?}: one chat turn ran {} statements in {transactions} transactions:\n{breakdown}",
        statements.len()
    );
    assert!(
        statements.len() <= budget.statements && transactions <= budget.transactions,
        "{engine:?}: one chat turn ran {} statements (budget {}) in {transactions} transactions (budget {}):\n{breakdown}",
        statements.len(),
        budget.statements,
        budget.transactions
    );
}

/// A worker's batch of completions (`Tx::complete_attempts`, what the engine commits when several jobs
/// end together) costs the same statements for 2 jobs as for 12: none per job, two in all.
async fn count_completion_batches(engine: StoreEngine) {
    log_statements();
    let test = TestStore::new(engine).await;
    let store = &test.store;
    let mut agent = definition("gpt-4o-mini");
    agent.resource_limits.max_concurrent_jobs = 14;
    let agent = create_agent(store, agent).await;
    let worker = uuid::Uuid::now_v7();
    let jobs: Vec<NewJob> = (0..14).map(|n| NewJob::task(agent.id, json!({"prompt": format!("job {n}")}))).collect();
    let mut tx = store.begin().await.unwrap();
    tx.insert_jobs(&jobs).await.unwrap();
    tx.commit().await.unwrap();
    let claimed = store.claim_batch(worker, jobs.len(), false).await.unwrap();
    assert_eq!(claimed.len(), jobs.len());

    let mut counts = Vec::new();
    for batch in [&claimed[..2], &claimed[2..]] {
        let done: Vec<(uuid::Uuid, serde_json::Value)> =
            batch.iter().map(|job| (job.id, json!({"response": job.id.to_string()}))).collect();
        let (statements, ended) = statements_of(async {
            let mut tx = store.begin().await.unwrap();
            let ended = tx.complete_attempts(worker, &done).await.unwrap();
            tx.commit().await.unwrap();
            ended
        })
        .await;
        assert!(ended.iter().all(|job| job.status == JobStatus::Completed));
        eprintln!("{engine:?}: {} completions ran:\n{}", batch.len(), breakdown(&statements));
        counts.push(statements);
    }
    assert_eq!(
        counts[0].len(),
        counts[1].len(),
        "{engine:?}: 12 completions cost more statements than 2:\n{}",
        breakdown(&counts[1])
    );
    // The guarded `UPDATE` and the events' insert (on PostgreSQL with the `NOTIFY`s): nothing else while
    // no job holds an open budget reservation.
    assert_eq!(counts[0].len(), 2, "{engine:?}: a batch of completions ran:\n{}", breakdown(&counts[0]));
}

/// Chat turns for `scripts/instructions.sh`: `CORTEX_INSTRUCTION_ROUNDS` turns (default 10) stepped as in
/// the budget tests, on SQLite, after the same warm-up. The script runs two sizes under callgrind and
/// divides the difference by the difference in turns.
#[tokio::test(flavor = "current_thread")]
#[ignore = "run by scripts/instructions.sh"]
async fn instructions_chat_turns() {
    let rounds: usize = std::env::var("CORTEX_INSTRUCTION_ROUNDS").ok().and_then(|n| n.parse().ok()).unwrap_or(10);
    let world = Stepped::new(StoreEngine::Sqlite).await;
    for _ in 0..2 + rounds {
        world.turn().await;
    }
}

/// A statement cut to a readable length for the breakdown.
fn shorten(sql: &str) -> String {
    const MAX: usize = 160;
    match sql.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{} …", &sql[..cut]),
        None => sql.to_owned(),
    }
}
